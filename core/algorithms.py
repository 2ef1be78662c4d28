"""
The learning rules of Multi-Walk and Asynchronous Gossip (SEMANTICS.md §1, §2), as plain
functions of tensors and state. The MPI engine (distributed_training.py) and the
simulator call exactly these; they know nothing about transport or time.
"""
import math
import sys
import time

import numpy as np
import scipy.stats
import torch

import data
import graphs
import models
import tasks
from core.events import Diverged


# -----------------------------------------------------------------------------
# a node: its model (BatchNorm statistics live here), optimizer state and shard

class Node:
    def __init__(self, node_id, model, optimizer, batches, loss_fn, device, emulate_compute=None):
        self.node_id = node_id
        self.model = model
        self.optimizer = optimizer
        self.batches = batches
        self.loss_fn = loss_fn
        self.device = device
        self.emulate_compute = emulate_compute  # seconds: a local update is a sleep (bench.py)


def make_node(cfg, run, node_id, device):
    """Build node `node_id` with its task's model, optimizer and loss: every node starts from the
    same seeded model x0."""
    task, task_data = tasks.get(cfg["task"]), run["task_data"]
    if cfg["emulate_params"]:
        model = models.FlatBuffer(cfg["emulate_params"]).to(device)
    else:
        torch.manual_seed(cfg["seed"])  # so every rank builds the same x0 (mnli's is the checkpoint)
        model = task.build_model(cfg, task_data).to(device)
    optimizer = task.make_optimizer(cfg, models.weight_decay_groups(model, cfg["weight_decay"], cfg["weight_decay_scope"]))
    # each node's batch order is its own, and a pure function of (seed, node)
    batches = data.ShardBatches(task_data.train_x, task_data.train_y, run["shards"][node_id],
                                cfg["batch_size"], seed=cfg["seed"] * 100_003 + node_id,
                                augment=task_data.augment)
    return Node(node_id, model, optimizer, batches, task.make_loss(cfg), device,
                emulate_compute=cfg["emulate_compute"] if cfg["emulate_params"] else None)


def make_evaluate(cfg, run, node):
    """The metrics of the evaluated model, as its task computes them: a function model -> dict with keys
    - train_loss, train_accuracy: on a fixed seeded subset of the training set, half of it as the
      authors' train_eval_frac = 0.5, at most cfg["eval_train_samples"] examples when that is > 0
      (data.evaluation_train_subset; the paper's v1 figures plot these);
    - test_loss, test_accuracy: on the test split (later figures plot test accuracy).
    Classification (tasks/classification.py): mean cross-entropy and accuracy; with
    cfg["bn_recalibrate"] = k > 0, every call first refreshes the BatchNorm statistics of a copy of
    the model on k batches of this node's shard, and the node's own statistics, which training
    uses, are never changed. MNLI (tasks/mnli.py): LM loss and label accuracy, train_accuracy nan."""
    return tasks.get(cfg["task"]).make_evaluate(cfg, run, node)


def divergence_seen(cfg, run, metrics, now):
    """The divergence guard's rule at an evaluation (rank 0's Evaluator and the simulator's call it):
    what it saw, in words, or None. A non-finite test loss (a model with NaN or infinite parameters
    gives one), or, from three evaluation periods past the warm-up (an untrained model is at chance,
    and a run evaluated often, as a simulated one, is still near it at its second and third evaluation),
    test accuracy at chance: no more correct answers than
    1/num_classes guessing gives at the 99.9th percentile of its binomial over the test examples.
    A timing-only run (--emulate-params) trains no model, and its evaluations are nan by design: never."""
    if cfg["emulate_params"]:
        return None
    if not math.isfinite(metrics["test_loss"]):
        return f"test loss {metrics['test_loss']}"
    task_data = run["task_data"]
    tested = len(task_data.test_y)
    chance = 1 / task_data.num_classes
    if now >= cfg["warmup_time"] + 3 * cfg["eval_interval"] and metrics["test_accuracy"] * tested <= scipy.stats.binom.ppf(0.999, tested, chance):
        return f"test accuracy {metrics['test_accuracy']:.4f}, chance {chance:.4f} over {tested} test examples"
    return None


def guard_divergence(cfg, run, metrics, now, diverged):
    """The divergence guard at one evaluation: returns summary.json's `diverged` record,
    {reason, time, lr}, `diverged` itself once set (None while nothing is seen). The first time it
    sees divergence it prints one warning naming the lr, or with --stop-on-divergence true raises
    Diverged, which ends the run. Without a stop a model with NaN parameters keeps training, as the
    authors' would: NaN spreads through merges and averages, and the evaluations show it."""
    if diverged is not None:
        return diverged
    seen = divergence_seen(cfg, run, metrics, now)
    if seen is None:
        return None
    line = f"the run diverged at t = {now:.1f}s with --lr {cfg['lr']:g}: {seen}"
    if cfg["stop_on_divergence"]:
        raise Diverged(line)
    print(f"warning: {line}", file=sys.stderr, flush=True)
    return dict(reason=seen, time=round(now, 3), lr=cfg["lr"])


def lr_at(elapsed, cfg):
    """Wall-clock schedule: linear warm-up over warmup_time, then x0.1 at each decay fraction of
    train_time. Warm-up starts from 0 (warmup_start "zero", the authors' lr * min(t / W, 1)) or
    from lr/10 (warmup_start "tenth")."""
    lr = cfg["lr"]
    if cfg["warmup_time"] > 0 and elapsed < cfg["warmup_time"]:
        start = 0.0 if cfg["warmup_start"] == "zero" else 0.1
        lr *= start + (1 - start) * elapsed / cfg["warmup_time"]
    for fraction in cfg["decay_fractions"]:
        if elapsed >= fraction * cfg["train_time"]:
            lr *= 0.1
    return lr


def local_update(node, params, tau, lr):
    """tau local SGD steps at `node` starting from the flat vector `params`, which
    is overwritten with the result. The node's optimizer state carries over."""
    if node.emulate_compute is not None:
        # emulated compute: the sleep uses no CPU, so a benchmark sees only the engine's own cost
        if node.emulate_compute > 0:  # sleep(0) would still yield the core
            time.sleep(node.emulate_compute)
        params.add_(lr)
        return None  # no loss: nothing was learned
    models.load_flat_params(node.model, params)
    for group in node.optimizer.param_groups:
        group["lr"] = lr
    node.model.train()
    total_loss = torch.zeros((), device=node.device)
    for _ in range(tau):
        bx, by = node.batches.next_batch()
        loss = node.loss_fn(node.model, bx.to(node.device, non_blocking=True), by.to(node.device, non_blocking=True))
        node.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        node.optimizer.step()
        total_loss += loss.detach()
    models.flatten_params(node.model, out=params)
    return total_loss.item() / tau


# -----------------------------------------------------------------------------
# Multi-Walk

class Aggregator:
    """The aggregator's state: the global model x and, per walk, the snapshot s_r it left with.
    `joined` holds the walks whose snapshot is valid here: all of them at node 0 (every walk
    starts from x0), none at a node that takes the role over after a failure (SEMANTICS.md §6)."""
    def __init__(self, x0, num_walks, joined=None):
        self.global_model = x0.detach().clone()
        self.snapshots = [x0.detach().clone() for _ in range(num_walks)]
        self.num_walks = num_walks
        self.joined = set(range(num_walks)) if joined is None else set(joined)


def merge_at_aggregator(agg, walk_id, walk_model):
    """After node 0's own tau steps on walk r: x <- x + (u_r - s_r)/R, then s_r <- x
    and u_r <- x, so every walk leaves node 0 carrying the latest global model."""
    x, snapshot = agg.global_model, agg.snapshots[walk_id]
    if agg.num_walks == 1:
        # R = 1: x == s bitwise (they are only ever set together), so (x - s) + u is u exactly (plain
        # SGD): two copies, not the four passes over the model below (a hop's largest cost at node 0)
        x.copy_(walk_model)
        snapshot.copy_(walk_model)
        return
    # computed as (x - s/R) + u/R
    x.sub_(snapshot, alpha=1.0 / agg.num_walks).add_(walk_model.to(x.device, x.dtype), alpha=1.0 / agg.num_walks)
    snapshot.copy_(x)
    walk_model.copy_(x)


def adopt_at_aggregator(agg, walk_id, walk_model):
    """A walk's first arrival at a new aggregator (SEMANTICS.md §6): its model becomes the global model
    and its snapshot, with no merge; the walk leaves with it unchanged. This is the authors'
    rule: with no snapshot of the walk here, its progress has nothing to be measured against."""
    agg.global_model.copy_(walk_model)
    agg.snapshots[walk_id].copy_(walk_model)
    agg.joined.add(walk_id)


def aggregate(agg, walk_id, walk_model):
    """What the aggregator does after its own tau steps on a walk: adopt the walk's first
    arrival since the node took the role over, merge every later one."""
    if walk_id in agg.joined:
        merge_at_aggregator(agg, walk_id, walk_model)
    else:
        adopt_at_aggregator(agg, walk_id, walk_model)


def next_node(graph, node, seed, walk_id, hop, laziness=0.0):
    """Hop `hop` of walk `walk_id` leaving `node`: a pure function of (seed, walk, hop), never of timing."""
    return graphs.mh_next_node(graph, node, graphs.HopRng(seed, walk_id, hop), laziness=laziness)  # default_rng's draws


def walk_route(graph, walk_id, num_visits, seed, laziness=0.0):
    """The nodes walk `walk_id` visits, in order; walk r starts at node r."""
    route = [walk_id]
    for hop in range(num_visits - 1):
        route.append(next_node(graph, route[-1], seed, walk_id, hop, laziness))
    return route


def walk_budget(max_iterations, num_walkers, walker):
    """Share of an iteration budget for one walk (MW) or node (gossip); None if unbounded."""
    if not max_iterations:
        return None
    return max_iterations // num_walkers + (walker < max_iterations % num_walkers)


# -----------------------------------------------------------------------------
# Asynchronous Gossip

def gossip_partner(passive_neighbors, rng):
    """An active node's uniform choice among its passive neighbours."""
    return passive_neighbors[int(rng.integers(len(passive_neighbors)))]


def gossip_average(live, sent, received):
    """Pairwise averaging: live <- live + (received - sent)/2. `sent` is the model this
    node sent (its host send buffer, maybe bf16; the sum runs in live's dtype and device);
    any local delta added to `live` since then is kept, so the result is (x_i + x_j)/2
    plus the deltas that landed meanwhile."""
    live.add_(received.to(live.device, live.dtype) - sent.to(live.device, live.dtype), alpha=0.5)


def apply_delta(live, before, after):
    """Add a local update computed from the stale copy `before` to the live model
    (AD-PSGD: the delta lands after whatever averaging happened meanwhile)."""
    live.add_(after - before)


# -----------------------------------------------------------------------------
# Failures (SEMANTICS.md §6): a schedule of times that every rank knows, so no message announces them

def failures_by(t, failure_times):
    """How many failures have happened by time t. The i-th failure time (0-based) fails node i:
    in MW the aggregator role moves from node i to node i + 1 (node i then only relays walks),
    in gossip node i stops. So this count is also the node that holds the MW aggregator role,
    and the node gossip evaluates, at time t."""
    return sum(t >= f for f in failure_times)


def aggregator_at(t, failure_times):
    """The MW aggregator at time t: node 0, then node i + 1 from the i-th failure time on."""
    return failures_by(t, failure_times)


def is_failed(node, t, failure_times):
    """Whether `node` has failed by time t: node i fails at the i-th failure time."""
    return node < failures_by(t, failure_times)
