"""
Run folders, run names and run launches: the one reader, the one set of labels and
the one mpirun command line that plots.py, report.py, many_nodes.py, experiments.py,
plot_failures.py and bench.py share.

A run folder holds config.json and summary.json (both say its "transport": "mpi" or "simulated"),
events-rank<k>.jsonl (events.py) and, when experiments.py launched it, launch.json.
"""
import json
import os
import sys

import numpy as np

from core.config import SOFTWARE_KEY, TRANSPORT_KEY
from core.events import EVAL_METRICS, read_events

# What an eval event may carry; older runs log the test pair only. "Reaching" a target
# means >= for accuracies and <= for losses.
METRICS = EVAL_METRICS  # what an eval event carries and a claim can target
# CPU ranks share few cores: one BLAS/OpenMP thread per rank, whoever launches them


# -----------------------------------------------------------------------------
# reading a run folder

def read_json(path):
    with open(path) as f:
        return json.load(f)


def is_run_dir(path):
    return os.path.isfile(os.path.join(path, "config.json"))


def is_complete(path):
    """A run counts as finished when its summary.json says complete=true."""
    try:
        return read_json(os.path.join(path, "summary.json")).get("complete") is True
    except (OSError, ValueError):
        return False


def eval_curve(events, model="node0"):
    """The evaluated model's curve, merged over ranks: for each eval of `model` ("node0", or gossip's
    "network_average" with --eval-network-average) logged at rank 0
    (after a failure another node evaluates it, still logged at rank 0), its time, the metrics
    every eval carries, and the updates, bytes and compute seconds of all ranks with t <= that time.
    Ranks share one time origin (rank 0's clock, broadcast at start), so the merge is exact."""
    updates = sorted((e["t"], e["duration"]) for e in events if e["type"] == "update")
    transfers = sorted((e["t"], e["bytes"]) for e in events if e["type"] == "transfer")
    evals = [e for e in events if e["type"] == "eval" and e["rank"] == 0 and e["model"] == model]
    update_t = np.array([t for t, _ in updates], dtype=float)
    update_s = np.cumsum([0.0] + [d for _, d in updates])
    transfer_b = np.cumsum([0] + [b for _, b in transfers])
    t = np.array([e["t"] for e in evals], dtype=float)
    n_updates = np.searchsorted(update_t, t, side="right")  # "right": events at the eval's own t count
    n_transfers = np.searchsorted(np.array([t for t, _ in transfers], dtype=float), t, side="right")
    curve = dict(time=t, iterations=n_updates.astype(float), bytes=transfer_b[n_transfers].astype(float),
                 gigabytes=transfer_b[n_transfers] / 1e9, compute=update_s[n_updates])
    for metric in METRICS:
        if all(metric in e for e in evals):
            curve[metric] = np.array([e[metric] for e in evals], dtype=float)
    return curve, update_t


def updates_per_s(update_times):
    """Local updates per second over all ranks, first to last update; None with fewer than two."""
    span = update_times[-1] - update_times[0] if len(update_times) > 1 else 0.0
    return (len(update_times) - 1) / span if span > 0 else None


def read_run(path):
    """One run folder: dict(dir, name, config, summary, launch (None if absent), curve, updates_per_s,
    average_curve: gossip's network average at every evaluation (--eval-network-average), else None)."""
    events = read_events(path)
    curve, update_times = eval_curve(events)
    average_curve = eval_curve(events, "network_average")[0]
    launch = os.path.join(path, "launch.json")
    return dict(dir=str(path), name=os.path.basename(os.path.normpath(path)),
                config=read_json(os.path.join(path, "config.json")),
                summary=read_json(os.path.join(path, "summary.json")),
                launch=read_json(launch) if os.path.isfile(launch) else None,
                curve=curve, updates_per_s=updates_per_s(update_times),
                average_curve=average_curve if len(average_curve["time"]) > 1 else None)  # more than the final one


def find_runs(paths):
    """Finished runs in the given run folders or folders of run folders, sorted by name in each."""
    found = []
    for path in paths:
        candidates = [path] if is_run_dir(path) else [os.path.join(path, d) for d in sorted(os.listdir(path))]
        found += [p for p in candidates if is_run_dir(p) and is_complete(p)]
    return [read_run(p) for p in found]


def is_simulated(run):
    summary = run["summary"]  # runs written before "transport" said "backend": "sim"
    return summary.get("transport", summary.get("backend")) in ("simulated", "sim")


# -----------------------------------------------------------------------------
# names: which curve (algorithm) and which figure (setting) a run belongs to

def gossip_rate(cfg):
    """How often gossip nodes exchange: back to back (free, no pause), authors-like (free, at the
    authors' rate: gossip_pacing authors, or, in runs from before that key, a pause of gossip_interval
    seconds between exchanges) or per update (one exchange per local update)."""
    if cfg.get("gossip_mode", "free") == "per_update":
        return "per update"
    if cfg.get("gossip_pacing") == "authors":
        return "authors-like"
    return "authors-like" if cfg.get("gossip_interval", 0) > 0 else "back to back"


def algorithm_label(cfg):
    """MW-R, or gossip with its exchange rate: the curve a run belongs to."""
    if cfg["algorithm"] == "mw":
        return f"MW-{cfg['walks']}"
    rate = gossip_rate(cfg)
    if rate == "authors-like" and cfg.get("gossip_pacing") != "authors":  # a chosen interval: say which
        return f"gossip ({rate}, {cfg['gossip_interval']:g} s)"
    return f"gossip ({rate})"


def is_gossip(label):
    return label.startswith("gossip")


def walks_of(label):
    return int(label[len("MW-"):])


def algorithm_order(label):
    """MW-1, MW-2, ..., then gossip: the legend order of the paper."""
    return (1, 0, label) if is_gossip(label) else (0, walks_of(label), label)


def graph_kind(graph):
    """cycle / complete / er for generated graphs and for the paper's edge-list files."""
    base = os.path.basename(graph).lower()
    for kind, prefix in (("cycle", "cycle"), ("complete", "complete"), ("er", "erdos"), ("er", "er")):
        if base.startswith(prefix):
            return kind
    return os.path.splitext(base)[0]


def split_label(cfg):
    return "iid" if cfg["partition"] == "iid" else f"alpha={cfg['alpha']:g}"


def split_alpha(split):
    """Dirichlet alpha of a split label; iid counts as infinitely homogeneous."""
    return float(split.split("=")[1]) if split.startswith("alpha=") else np.inf


def setting_key(cfg):
    """(graph kind, V, split, task): the runs of one figure."""
    return (graph_kind(cfg["graph"]), cfg["nodes"], split_label(cfg), cfg["task"])


def setting_title(key):
    kind, nodes, split, task = key
    return f"{kind}, V={nodes}, {split}, {task}"


def group_runs(runs):
    """{setting key: {algorithm label: [runs over seeds]}}, settings and algorithms in a stable order."""
    groups = {}
    for run in runs:
        groups.setdefault(setting_key(run["config"]), {}).setdefault(algorithm_label(run["config"]), []).append(run)
    return {key: dict(sorted(algos.items(), key=lambda kv: algorithm_order(kv[0])))
            for key, algos in sorted(groups.items(), key=lambda kv: (kv[0][3], kv[0][0], kv[0][1], kv[0][2]))}


# -----------------------------------------------------------------------------
# launching ranks and recording what ran

def write_config(cfg, transport):
    """OUT/config.json: the run's config, the transport that runs it ("mpi" or "simulated"), and under
    SOFTWARE_KEY the versions that produced it."""
    with open(os.path.join(cfg["out"], "config.json"), "w") as f:
        json.dump(dict(cfg, **{TRANSPORT_KEY: transport, SOFTWARE_KEY: software_versions()}), f, indent=2)


def software_versions():
    """Versions of what a run's numbers depend on, for its config.json: torch, numpy, mpi4py, the MPI
    library (first line of its version string), transformers (None if not installed) and the CUDA
    runtime (None without a GPU)."""
    import importlib.metadata
    import mpi4py
    import torch
    from mpi4py import MPI
    try:  # its metadata, not the module: importing transformers takes seconds
        transformers_version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        transformers_version = None
    return dict(python=sys.version.split()[0], torch=torch.__version__, numpy=np.__version__,
                mpi4py=mpi4py.__version__, mpi_library=MPI.Get_library_version().strip().splitlines()[0],
                transformers=transformers_version,
                cuda=torch.version.cuda if torch.cuda.is_available() else None)
