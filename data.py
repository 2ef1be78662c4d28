"""
What every task's data is (TaskData), the non-iid split into V equal node shards, and
per-node batch streams. How each task loads its data is its record's (tasks/).

    python data.py --task digits --nodes 8 --partition dirichlet --alpha 0.1 --seed 0
prints how non-iid the split is (partition_stats) and the class histogram of the nodes' shards.
"""

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

PARTITIONS = ("dirichlet", "dirichlet_plain", "iid")  # the first is the authors' partitioner
AUXILIARY_WORKERS = 10  # the authors' partitioner balances groups of this many nodes
CLI_NODES_SHOWN = 8  # histogram rows the CLI prints unless --all-nodes
MAX_DIRICHLET_DRAWS = 10_000  # redraws of one group before a split is called impossible


class DataError(ValueError):
    """Bad data input; the message is one line naming the bad value and what is allowed."""


@dataclass
class TaskData:
    train_x: torch.Tensor  # float32
    train_y: torch.Tensor  # long
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    partition_labels: np.ndarray  # one label per train sample that the non-iid split is over
    augment: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None


# ----------------------------------------------------------------------------- task data

def make_task_data(train_x, train_y, test_x, test_y, num_classes, augment=None):
    return TaskData(train_x=torch.as_tensor(train_x, dtype=torch.float32),
                    train_y=torch.as_tensor(train_y, dtype=torch.long),
                    test_x=torch.as_tensor(test_x, dtype=torch.float32),
                    test_y=torch.as_tensor(test_y, dtype=torch.long),
                    num_classes=num_classes, partition_labels=np.asarray(train_y, dtype=np.int64),
                    augment=augment)


def subset_test_split(task_data, count, seed):
    """The same task with only `count` test examples, a fixed seeded choice (every test_* field
    is cut alike): evaluation of a large model on the whole test split can cost more than training."""
    n = len(task_data.test_x)
    if count >= n:
        return task_data
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(n)[:count]))
    return dataclasses.replace(task_data, **{f.name: getattr(task_data, f.name)[keep]
                                            for f in dataclasses.fields(task_data) if f.name.startswith("test_")})


EVAL_TRAIN_STREAM = 85  # the authors offset their train-evaluation split's seed by 85


def evaluation_train_subset(num_train, cap, seed):
    """Sorted indices of the training examples evaluated: a fixed seeded half (the authors'
    train_eval_frac = 0.5), cut to `cap` examples if cap > 0."""
    count = num_train // 2 if not cap else min(cap, num_train // 2)
    # a stream of its own: the same seed also drives the partition
    return torch.from_numpy(np.sort(np.random.default_rng([seed, EVAL_TRAIN_STREAM]).permutation(num_train)[:count]))


# ----------------------------------------------------------------------------- partition

def partition_indices(partition_labels, num_nodes, partition="dirichlet", alpha=1.0, seed=0):
    """Split sample indices into num_nodes EQUAL shards (the remainder N mod V is dropped).

    Equal shards keep the walk's uniform stationary distribution meaningful.
    - 'dirichlet': the authors' partitioner (Tao Lin's, see dirichlet_buckets), re-chunked.
    - 'dirichlet_plain': each class is split over all nodes by one Dirichlet(alpha) draw, no
      balancing; the nodes' lists are concatenated and re-chunked the same way.
    - 'iid': a seeded permutation.
    Re-chunking: the nodes' lists are concatenated in node order and cut into V equal
    consecutive pieces, as the authors do.
    """
    labels = np.asarray(partition_labels)
    n = len(labels)
    if partition not in PARTITIONS:
        raise DataError(f"unknown partition {partition!r}; allowed: {', '.join(PARTITIONS)}")
    if not 1 <= num_nodes <= n:
        raise DataError(f"num_nodes {num_nodes} is not allowed for {n} samples; allowed: 1..{n}")
    if partition != "iid" and not alpha > 0:
        raise DataError(f"dirichlet alpha {alpha} is not allowed; allowed: alpha > 0")
    rng = np.random.default_rng(seed)
    if partition == "iid":
        order = rng.permutation(n)
    elif partition == "dirichlet":
        order = np.concatenate(dirichlet_buckets(labels, num_nodes, alpha, rng))
    else:
        per_node = [[] for _ in range(num_nodes)]
        for c in np.unique(labels):
            class_indices = rng.permutation(np.flatnonzero(labels == c))
            proportions = rng.dirichlet(alpha * np.ones(num_nodes))
            cuts = (np.cumsum(proportions)[:-1] * len(class_indices)).astype(int)
            for node, part in enumerate(np.split(class_indices, cuts)):
                per_node[node].append(part)
        order = np.concatenate([np.concatenate(parts) for parts in per_node])
    shard_size = n // num_nodes
    return [order[v * shard_size:(v + 1) * shard_size].astype(np.int64) for v in range(num_nodes)]


def dirichlet_buckets(labels, num_nodes, alpha, rng, group_size=AUXILIARY_WORKERS):
    """The authors' non-iid split (Tao Lin's partitioner), before re-chunking: one index list per node.

    The shuffled samples are cut into groups of `group_size` nodes (V = 20: two halves of 10),
    each group getting group_size / V of the samples (the last group the rest). Within a
    group of k nodes holding m samples, every class in turn is split by a Dirichlet(alpha)
    draw in which a node already holding m / k samples gets probability 0; the whole group
    is redrawn until every node holds at least half the mean, m / (2k).
    """
    order = rng.permutation(len(labels))
    num_groups = -(-num_nodes // group_size)
    group_samples = int(group_size / num_nodes * len(labels))
    buckets = []
    for g in range(num_groups):
        members = order[g * group_samples:] if g == num_groups - 1 else order[g * group_samples:(g + 1) * group_samples]
        nodes = group_size if g < num_groups - 1 else num_nodes - group_size * (num_groups - 1)
        buckets += _balanced_dirichlet_group(members, labels[members], nodes, alpha, rng)
    return buckets


def _balanced_dirichlet_group(members, member_labels, nodes, alpha, rng):
    full, least = len(members) / nodes, int(0.5 * len(members) / nodes)
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts = [[] for _ in range(nodes)]
        sizes = np.zeros(nodes, dtype=np.int64)
        for c in np.unique(member_labels):
            in_class = members[member_labels == c]
            weights = rng.dirichlet(np.full(nodes, alpha)) * (sizes < full)
            if weights.sum() == 0:  # every node with room drew exactly 0 (tiny alpha): redraw the group
                break
            cuts = (np.cumsum(weights / weights.sum()) * len(in_class)).astype(int)[:-1]
            for node, piece in enumerate(np.split(in_class, cuts)):
                parts[node].append(piece)
                sizes[node] += len(piece)
        else:
            if sizes.min() >= least:
                return [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts]
    raise DataError(f"dirichlet alpha {alpha} left a node below half the mean shard in {MAX_DIRICHLET_DRAWS} draws "
                    f"of {len(members)} samples over {nodes} nodes; allowed: a larger alpha or fewer nodes")


def partition_stats(partition_labels, shards, num_classes):
    """How non-iid a split is, averaged over shards: the top class's share, the number of classes
    holding at least 5% of the shard, and the KL divergence (nats) of the class mix from uniform."""
    hist = class_histogram(partition_labels, shards, num_classes).astype(np.float64)
    share = hist / hist.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(share > 0, share * np.log(share * share.shape[1]), 0.0).sum(1)
    return dict(max_class_fraction=float(share.max(1).mean()), classes_over_5pct=float((share >= 0.05).sum(1).mean()),
                kl_from_uniform=float(kl.mean()))


def class_histogram(partition_labels, shards, num_classes):
    """(V, C) array: how many samples of each class every node holds (C grows to cover every
    partition label: MNLI splits over its genres, not over its 3 classes)."""
    labels = np.asarray(partition_labels)
    num_classes = max(num_classes, int(labels.max()) + 1)
    return np.stack([np.bincount(labels[shard], minlength=num_classes) for shard in shards])


def format_histogram(hist):
    """A printable table: one row per node, one column per class, plus total and top-class share."""
    num_classes = hist.shape[1]
    width = max(5, len(str(hist.max())) + 1)
    header = "node" + "".join(f"{'c' + str(c):>{width}}" for c in range(num_classes)) + f"{'total':>8}{'max%':>7}"
    rows = [header]
    for node, counts in enumerate(hist):
        total = counts.sum()
        top_share = 100.0 * counts.max() / total if total else 0.0
        rows.append(f"{node:>4}" + "".join(f"{count:>{width}}" for count in counts) + f"{total:>8}{top_share:>7.1f}")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- batches

class ShardBatches:
    """Endless, seeded mini-batches from one node's shard.

    Every epoch is a fresh permutation of the shard; the last partial batch of an
    epoch is dropped (drop_last), so every batch has exactly batch_size samples
    (or the whole shard, if the shard is smaller than batch_size).
    """

    def __init__(self, x, y, indices, batch_size, seed, augment=None):
        if len(indices) == 0:
            raise DataError("ShardBatches got an empty shard; every node needs at least one sample")
        self.x, self.y, self.augment = x, y, augment
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.batch_size = min(batch_size, len(self.indices))
        self.shuffle_rng = torch.Generator().manual_seed(seed)
        # its own stream, so augmenting or not never changes the batch order
        self.augment_rng = torch.Generator().manual_seed(seed + (1 << 32))
        self.epoch = 0
        self.position = 0
        self.order = torch.randperm(len(self.indices), generator=self.shuffle_rng)

    def next_indices(self):
        """The rows of x and y in the next batch (next_batch without the gather and augmentation)."""
        if self.position + self.batch_size > len(self.order):
            self.epoch += 1
            self.position = 0
            self.order = torch.randperm(len(self.indices), generator=self.shuffle_rng)
        picked = self.indices[self.order[self.position:self.position + self.batch_size]]
        self.position += self.batch_size
        return picked

    def next_batch(self):
        picked = self.next_indices()
        bx, by = self.x[picked], self.y[picked]
        if self.augment is not None:
            bx = self.augment(bx, self.augment_rng)
        return bx, by

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position, "order": self.order.clone(),
                "shuffle_rng": self.shuffle_rng.get_state(), "augment_rng": self.augment_rng.get_state()}

    def load_state_dict(self, state):
        self.epoch = state["epoch"]
        self.position = state["position"]
        self.order = state["order"].clone()
        self.shuffle_rng.set_state(state["shuffle_rng"])
        self.augment_rng.set_state(state["augment_rng"])


# ----------------------------------------------------------------------------- CLI

def main(argv=None):
    import tasks
    from core.config import config
    parser = argparse.ArgumentParser(description="Print every node's class histogram for a data split.")
    parser.add_argument("--task", default="digits", help=f"one of {', '.join(tasks.TASKS)}")
    parser.add_argument("--data-dir", default=None, help="folder with the CIFAR-10 python batches or MultiNLI")
    parser.add_argument("--model-dir", default=None, help="local OPT checkpoint (task mnli)")
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--partition", default="dirichlet", help=f"one of {', '.join(PARTITIONS)}")
    parser.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration (> 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-nodes", action="store_true", help=f"print every node, not only the first {CLI_NODES_SHOWN}")
    args = parser.parse_args(argv)
    try:
        # the task's other settings are the run's defaults (core/config.py)
        cfg = dict(config, task=args.task, data_dir=args.data_dir, model_dir=args.model_dir, seed=args.seed)
        data = tasks.get(args.task).load_data(cfg)
        shards = partition_indices(data.partition_labels, args.nodes, args.partition, args.alpha, args.seed)
    except ValueError as e:  # an unknown task, DataError: one line (run as a script, this module is not `data`)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    hist = class_histogram(data.partition_labels, shards, data.num_classes)
    stats = partition_stats(data.partition_labels, shards, data.num_classes)
    print(f"task={args.task} nodes={args.nodes} partition={args.partition} alpha={args.alpha} seed={args.seed} "
          f"shard_size={len(shards[0])} | mean over shards: top class {stats['max_class_fraction']:.3f}, "
          f"classes with >=5% {stats['classes_over_5pct']:.2f}, KL from uniform {stats['kl_from_uniform']:.3f}")
    shown = len(hist) if args.all_nodes else min(len(hist), CLI_NODES_SHOWN)
    print(format_histogram(hist[:shown]))
    if shown < len(hist):
        print(f"... {len(hist) - shown} more nodes (--all-nodes shows them)")

if __name__ == "__main__":
    main()
