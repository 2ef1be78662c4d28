"""
The paper's panels from event logs: test loss and test accuracy of the evaluated
model against wall-clock time, iterations (local updates over all nodes),
communication (GB sent over all nodes, log scale) and cumulative compute time,
mean and a +-std band over seeds, one curve per algorithm (SPEC §5).

    python plots.py runs/cpu --out figures          # every setting found under runs/cpu
    python plots.py runs/cpu/cycle-V8-a1-mw4-s0      # one run

A run is any directory with config.json, events-rank*.jsonl and summary.json
(real MPI runs and simulated runs alike). Runs that differ only in seed are one
curve; runs that share graph, V, data split and task are one figure (a "setting").
Beside every PNG a CSV holds the plotted mean/std curves.
"""
import argparse
import csv
import json
import os
import sys

import numpy as np

from events import read_events

# x-axes of the panels: key in a curve, axis label, log scale
X_AXES = (("time", "wall-clock time (s)", False),
          ("iterations", "iterations (local updates, all nodes)", False),
          ("gigabytes", "communication (GB sent, all nodes)", True),
          ("compute", "cumulative compute time (s, all nodes)", False))
Y_AXES = (("loss", "test loss"), ("accuracy", "test accuracy"))
GRID_POINTS = 100


# -----------------------------------------------------------------------------
# one run: its config, summary and evaluation curve

def is_run_dir(path):
    return os.path.isfile(os.path.join(path, "config.json"))


def is_complete(path):
    """A run counts as finished when its summary.json says complete=true."""
    try:
        with open(os.path.join(path, "summary.json")) as f:
            return json.load(f).get("complete") is True
    except (OSError, ValueError):
        return False


def run_curve(events):
    """The evaluated model's curve, merged over ranks: for each eval of "node0" at rank 0,
    its time, and the updates, bytes and compute seconds of all ranks with t <= that time.
    Ranks share one time origin (rank 0's clock, broadcast at start), so the merge is exact."""
    updates = sorted((e["t"], e["duration"]) for e in events if e["type"] == "update")
    transfers = sorted((e["t"], e["bytes"]) for e in events if e["type"] == "transfer")
    evals = [e for e in events if e["type"] == "eval" and e["rank"] == 0 and e["model"] == "node0"]
    update_t = np.array([t for t, _ in updates], dtype=float)
    update_s = np.cumsum([0.0] + [d for _, d in updates])
    transfer_t = np.array([t for t, _ in transfers], dtype=float)
    transfer_b = np.cumsum([0] + [b for _, b in transfers])
    t = np.array([e["t"] for e in evals], dtype=float)
    n_updates = np.searchsorted(update_t, t, side="right")  # "right": events at the eval's own t count
    n_transfers = np.searchsorted(transfer_t, t, side="right")
    return dict(time=t, iterations=n_updates.astype(float), bytes=transfer_b[n_transfers].astype(float),
                gigabytes=transfer_b[n_transfers] / 1e9, compute=update_s[n_updates],
                loss=np.array([e["test_loss"] for e in evals], dtype=float),
                accuracy=np.array([e["test_accuracy"] for e in evals], dtype=float),
                update_times=update_t)


def load_run(path):
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(path, "summary.json")) as f:
        summary = json.load(f)
    launch = None
    if os.path.isfile(os.path.join(path, "launch.json")):  # written by experiments.py around mpirun
        with open(os.path.join(path, "launch.json")) as f:
            launch = json.load(f)
    return dict(dir=path, name=os.path.basename(os.path.normpath(path)), config=cfg, summary=summary,
                launch=launch, curve=run_curve(read_events(path)))


def find_runs(paths):
    """Finished runs in the given run directories or directories of runs, sorted by name."""
    found = []
    for path in paths:
        candidates = [path] if is_run_dir(path) else [os.path.join(path, d) for d in sorted(os.listdir(path))]
        found += [p for p in candidates if is_run_dir(p) and is_complete(p)]
    return [load_run(p) for p in found]


# -----------------------------------------------------------------------------
# names: which curve (algorithm) and which figure (setting) a run belongs to

def graph_kind(graph):
    """cycle / complete / er for generated graphs and for the paper's edge-list files."""
    base = os.path.basename(graph).lower()
    for kind, prefix in (("cycle", "cycle"), ("complete", "complete"), ("er", "erdos"), ("er", "er")):
        if base.startswith(prefix):
            return kind
    return os.path.splitext(base)[0]


def algorithm_label(cfg):
    if cfg["algorithm"] == "mw":
        return f"MW-{cfg['walks']}"
    return "gossip" if cfg.get("gossip_mode", "free") == "free" else f"gossip ({cfg['gossip_mode']})"


def algorithm_order(label):
    """MW-1, MW-2, ..., then gossip: the legend order of the paper."""
    return (0, int(label[3:])) if label.startswith("MW-") else (1, label)


def split_label(cfg):
    return "iid" if cfg["partition"] == "iid" else f"alpha={cfg['alpha']:g}"


def setting_key(cfg):
    """(graph kind, V, split, task): the runs of one figure."""
    return (graph_kind(cfg["graph"]), cfg["nodes"], split_label(cfg), cfg["task"])


def setting_title(key):
    kind, nodes, split, task = key
    return f"{kind}, V={nodes}, {split}, {task}"


def setting_slug(key):
    kind, nodes, split, task = key
    return f"{task}-{kind}-V{nodes}-{split.replace('alpha=', 'a')}"


def group_runs(runs):
    """{setting key: {algorithm label: [runs over seeds]}}, settings and algorithms in a stable order."""
    groups = {}
    for run in runs:
        groups.setdefault(setting_key(run["config"]), {}).setdefault(algorithm_label(run["config"]), []).append(run)
    return {key: dict(sorted(algos.items(), key=lambda kv: algorithm_order(kv[0])))
            for key, algos in sorted(groups.items(), key=lambda kv: (kv[0][3], kv[0][0], kv[0][1], kv[0][2]))}


# -----------------------------------------------------------------------------
# mean and spread over seeds on a common x-grid

def mean_curve(curves, x_key, y_key):
    """(grid, mean, std) of y against x over seeds, on the x-range every seed covers
    (geometric grid from the first positive x for the log-scale axis)."""
    xs = [c[x_key] for c in curves if len(c[x_key])]
    if not xs:
        return np.array([]), np.array([]), np.array([])
    log = x_key == "gigabytes"
    low = max((x[x > 0].min() if (x > 0).any() else np.inf) if log else x.min() for x in xs)
    high = min(x.max() for x in xs)
    if not np.isfinite(low) or high <= low:
        return np.array([]), np.array([]), np.array([])
    grid = np.geomspace(low, high, GRID_POINTS) if log else np.linspace(low, high, GRID_POINTS)
    # x is non-decreasing along a run; np.interp needs that
    ys = np.array([np.interp(grid, c[x_key], c[y_key]) for c in curves if len(c[x_key])])
    return grid, ys.mean(axis=0), ys.std(axis=0)


def save_small_png(fig, path):
    """A 64-colour PNG: a quarter of matplotlib's size, the same to read; figures are committed."""
    import io
    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=70)
    Image.open(buffer).convert("RGB").quantize(colors=64).save(path, optimize=True)


def draw_setting(key, algos, png_path, csv_path):
    """One figure: rows loss and accuracy, columns the four x-axes; and its CSV."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(Y_AXES), len(X_AXES), figsize=(17, 7.5))
    rows = []
    for label, runs in algos.items():
        curves = [run["curve"] for run in runs]
        for col, (x_key, x_label, log) in enumerate(X_AXES):
            columns = {}
            for row, (y_key, y_label) in enumerate(Y_AXES):
                grid, mean, std = mean_curve(curves, x_key, y_key)
                columns[y_key] = (mean, std)
                ax = axes[row, col]
                if len(grid):
                    line, = ax.plot(grid, mean, label=f"{label} ({len(curves)} seed{'s' * (len(curves) > 1)})")
                    ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
                ax.set_xlabel(x_label)
                ax.set_ylabel(y_label)
                if log:
                    ax.set_xscale("log")
                ax.grid(alpha=0.3)
            (loss, loss_std), (accuracy, accuracy_std) = columns["loss"], columns["accuracy"]
            rows += [[label, len(curves), x_key, f"{x:.6g}", f"{a:.5f}", f"{b:.5f}", f"{c:.5f}", f"{d:.5f}"]
                     for x, a, b, c, d in zip(grid, loss, loss_std, accuracy, accuracy_std)]
    for ax in axes[1]:
        ax.set_ylim(top=1.0)
    axes[0, 0].legend()
    fig.suptitle(f"{setting_title(key)}: the evaluated model (node 0), mean and +-std over seeds")
    fig.tight_layout()
    save_small_png(fig, png_path)
    plt.close(fig)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["algorithm", "seeds", "x_axis", "x", "loss_mean", "loss_std", "accuracy_mean", "accuracy_std"])
        writer.writerows(rows)


def draw_all(runs, out_dir):
    """A PNG and a CSV per setting in out_dir; returns {setting key: PNG path}."""
    os.makedirs(out_dir, exist_ok=True)
    figures = {}
    for key, algos in group_runs(runs).items():
        png = os.path.join(out_dir, setting_slug(key) + ".png")
        draw_setting(key, algos, png, png[:-4] + ".csv")
        figures[key] = png
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run directories, or directories holding run directories")
    parser.add_argument("--out", default="figures", help="where the PNG and CSV files go")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not os.path.isdir(p)]
    if missing:
        print(f"error: {missing[0]} is not a directory", file=sys.stderr)
        return 2
    runs = find_runs(args.paths)
    if not runs:
        print(f"error: no finished runs (config.json + summary.json with complete=true) under {' '.join(args.paths)}",
              file=sys.stderr)
        return 2
    for key, png in draw_all(runs, args.out).items():
        print(f"{png}  ({setting_title(key)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
