"""
What a config becomes before training: the graph, the data and its partition
(build_run), and the one-paragraph plan rank 0 prints (plan_text). Identical on
every rank from the seed alone; main.py and simulate.py both use it. graphs, data and
protocols (torch) are imported here, after the flags have been checked; the algorithm is checked
here, against the protocols' registry, and the task's record (tasks/) loads its data.
"""
import numpy as np

import data
import graphs
import protocols
import tasks
from core import run_records
from core.config import ConfigError

MAX_HISTOGRAM_NODES = 8  # beyond this, plan_text summarises the per-node class histogram in one line


def build_run(cfg, num_nodes):
    """Graph, data partition and plan: identical on every rank, from the seed alone."""
    if cfg["nodes"] and cfg["nodes"] != num_nodes:
        raise ConfigError(f"nodes {cfg['nodes']} differs from the {num_nodes} MPI ranks; launch with mpirun -n {cfg['nodes']}")
    cfg["nodes"] = num_nodes
    if cfg["device"] == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("device cuda: this host has no usable CUDA GPU (torch.cuda.is_available() is False); "
                              "use --device auto or cpu")
    if cfg["algorithm"] not in protocols.PROTOCOLS:  # the registry of algorithms
        raise ConfigError(f"algorithm {cfg['algorithm']!r} is not one of {', '.join(protocols.PROTOCOLS)}")
    protocol = protocols.PROTOCOLS[cfg["algorithm"]]
    protocol.check_run(cfg, num_nodes)
    if len(cfg["failure_times"]) > num_nodes - 1:
        raise ConfigError(f"failure_times lists {len(cfg['failure_times'])} failures but {num_nodes} nodes "
                          f"allow at most {num_nodes - 1} (one node must survive)")
    graph = graphs.build_graph(cfg["graph"], num_nodes, er_p=cfg["er_p"], seed=cfg["seed"])
    gossip = protocol.gossip_split(cfg, graph)
    task_data = tasks.get(cfg["task"]).load_data(cfg)
    if cfg["eval_samples"]:
        task_data = data.subset_test_split(task_data, cfg["eval_samples"], cfg["seed"])
    shards = data.partition_indices(task_data.partition_labels, num_nodes, cfg["partition"], cfg["alpha"], cfg["seed"])
    return dict(graph=graph, gossip=gossip, task_data=task_data, shards=shards)


def plan_text(cfg, run):
    stats = graphs.graph_stats(run["graph"], cfg["laziness"])
    what = run_records.algorithm_label(cfg) + (f", {cfg['gossip_coupling']} coupling" if cfg["algorithm"] == "gossip" else "")
    hist = data.class_histogram(run["task_data"].partition_labels, run["shards"], run["task_data"].num_classes)
    shape = (f"diameter {stats['diameter']}, spectral gap {stats['spectral_gap']:.4f}, E[H^2]={stats['E_H2']:.1f}"
             if stats["diameter"] is not None else
             f"degrees {stats['degree_min']}-{stats['degree_max']}; diameter and spectrum not computed above "
             f"{graphs.EXACT_STATS_MAX_NODES:,} nodes")
    return (f"{what} on {cfg['graph']} (V={stats['nodes']}, {stats['edges']} edges, {shape}), task {cfg['task']}, "
            f"{cfg['partition']} alpha={cfg['alpha']}, tau={cfg['tau']}, budget {cfg['train_time']:g}s"
            + (f" / {cfg['max_iterations']} iterations" if cfg["max_iterations"] else "")
            + "\n" + shard_classes_text(cfg, hist))


def shard_classes_text(cfg, hist):
    """The per-node class histogram as a table, or one summary line when there are many nodes."""
    if len(hist) <= MAX_HISTOGRAM_NODES:
        return f"per-node shard classes:\n{data.format_histogram(hist)}"
    held, sizes = (hist > 0).sum(axis=1), hist.sum(axis=1)
    top_share = hist.max(axis=1) / np.maximum(sizes, 1)
    size = f"{sizes.min()}" if sizes.min() == sizes.max() else f"{sizes.min()}-{sizes.max()}"  # equal shards (SEMANTICS.md §4): one number
    return (f"shards: {len(hist)} nodes x {size} samples; "
            f"classes held per node {held.min()}-{held.max()} of {hist.shape[1]}; top class share "
            f"{top_share.min():.0%}-{top_share.max():.0%} (median {np.median(top_share):.0%}); "
            f"the table: python data.py --task {cfg['task']} --nodes {len(hist)} --partition {cfg['partition']} "
            f"--alpha {cfg['alpha']} --seed {cfg['seed']}")
