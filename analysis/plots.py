"""
The paper's panels from event logs: test loss and test accuracy of the evaluated
model against time, iterations (local updates over all nodes), communication
(GB sent over all nodes, log scale) and cumulative compute time, the mean and a
+-std band over seeds, one curve per algorithm (SEMANTICS.md §5); and the throughput
figure of claim 3.

    python plots.py runs/cpu --out runs/cpu/figures       # every setting found under runs/cpu
    python plots.py runs/cpu/cycle-V8-a1-mw4-s0           # one run -> runs/figures/

A run is any folder with config.json, events-rank*.jsonl and summary.json (real
MPI runs and simulated runs alike; simulated runs are plotted against virtual
time). Runs that differ only in seed are one curve; runs that share graph, V,
data split and task are one figure (a "setting"). Beside every PNG a CSV holds
the plotted mean/std curves. Figures go under runs/ unless --out says otherwise.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import csv

import numpy as np

from core import run_records as runs_lib

# x-axes of the panels: key in a curve, axis label, log scale
X_AXES = (("time", "time (s)", True),  # log: MW-1 runs 10-20 times longer than gossip on one budget
          ("iterations", "iterations (local updates, all nodes)", False),
          ("gigabytes", "communication (GB sent, all nodes)", True),
          ("compute", "cumulative compute time (s, all nodes)", False))
Y_AXES = (("test_loss", "test loss"), ("test_accuracy", "test accuracy"))
GRID_POINTS = 100
MAX_TICKS = 6            # per axis: labels stay apart at the panel sizes below
LEGEND_SIZE = 11


def setting_slug(key):
    kind, nodes, split, task = key
    return f"{task}-{kind}-V{nodes}-{split.replace('alpha=', 'a')}"


def compact_number(value, _position=None):
    """12000 -> 12k, 3500000 -> 3.5M: short tick labels for large counts and byte totals."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def readable_ticks(ax):
    """At most about MAX_TICKS labelled ticks per axis, with compact plain labels (0.05, 20k, 3G).
    A log axis is labelled at 1, 2, 5 x 10^k over two decades or less, else at powers of ten
    (every second or third one over a wide span)."""
    from matplotlib import ticker
    for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() == "log":
            low, high = sorted(limits)
            subs = (1.0, 2.0, 5.0) if high <= 100 * low else (1.0,)
            axis.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=MAX_TICKS))
            axis.set_minor_formatter(ticker.NullFormatter())
        else:
            axis.set_major_locator(ticker.MaxNLocator(nbins=MAX_TICKS - 1, steps=[1, 2, 2.5, 5, 10]))
        axis.set_major_formatter(ticker.FuncFormatter(compact_number))


def seeds_text(counts):
    """'3 seeds' (or '1 seed') when every curve has that many, else 'seeds per curve in the legend'."""
    counts = set(counts)
    if len(counts) > 1:
        return "seeds per curve in the legend"
    n = counts.pop()
    return f"mean and ±std over {n} seeds" if n > 1 else "1 seed"


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


def draw_setting(key, algos, png_path, csv_path, targets=()):
    """One figure: rows loss and accuracy, columns the four x-axes; and its CSV. targets: drawn as
    lines on the accuracy panels, which then zoom to the band from just below the lowest target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(Y_AXES), len(X_AXES), figsize=(17, 7.5))
    runs = [run for group in algos.values() for run in group]
    simulated = [runs_lib.is_simulated(run) for run in runs]
    clock = "virtual time (s)" if all(simulated) else "time (s; virtual for simulated runs)" if any(simulated) else \
        "wall-clock time (s)"
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
                ax.set_xlabel(clock if x_key == "time" else x_label)
                ax.set_ylabel(y_label)
                if log:
                    ax.set_xscale("log")
                ax.grid(alpha=0.3)
            (loss, loss_std), (accuracy, accuracy_std) = columns["test_loss"], columns["test_accuracy"]
            rows += [[label, len(curves), x_key, f"{x:.6g}", f"{a:.5f}", f"{b:.5f}", f"{c:.5f}", f"{d:.5f}"]
                     for x, a, b, c, d in zip(grid, loss, loss_std, accuracy, accuracy_std)]
    for ax in axes[1]:
        ax.set_ylim(top=1.0)
        for target in targets:
            ax.axhline(target, color="grey", ls="--", lw=0.8)
        if targets:  # the band where the verdicts are made, not 0-1
            ax.set_ylim(bottom=min(targets) - 0.1)
    for ax in axes.flat:
        readable_ticks(ax)
    # below the panels, not on one: with 7 curves an inside legend hid the first panel's curves
    handles, labels = axes[0, 0].get_legend_handles_labels()
    columns = min(len(labels), 4) or 1
    legend_rows = -(-len(labels) // columns)
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=LEGEND_SIZE, frameon=False)
    fig.suptitle(f"{runs_lib.setting_title(key)}: the evaluated model (node 0), "
                 f"{seeds_text(len(group) for group in algos.values())}", fontsize=13)
    fig.tight_layout(rect=(0, 0.035 * legend_rows, 1, 1))
    save_small_png(fig, png_path)
    plt.close(fig)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["algorithm", "seeds", "x_axis", "x", "loss_mean", "loss_std", "accuracy_mean", "accuracy_std"])
        writer.writerows(rows)


def draw_all(runs, out_dir, targets=()):
    """A PNG and a CSV per setting in out_dir; returns {setting key: PNG path}."""
    os.makedirs(out_dir, exist_ok=True)
    figures = {}
    for key, algos in runs_lib.group_runs(runs).items():
        png = os.path.join(out_dir, setting_slug(key) + ".png")
        draw_setting(key, algos, png, png[:-4] + ".csv", targets)
        figures[key] = png
    return figures


def draw_throughput(series, path):
    """Claim 3's figure: updates/s against R (MW) and V (gossip), mean and 95% interval over seeds,
    dotted: linear speed-up from the first point, dashed: what the machine's cores allow (MPI runs).
    series: claims.claim_scaling(...)["series"]."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    distinct = {}  # one line per distinct measurement: series with the same points share it and its label
    for s in series:
        distinct.setdefault((s["axis"], repr(s["points"])), []).append(s)
    series = [dict(same[0], name=" = ".join(x["name"] for x in same)) for same in distinct.values()]
    for ax, axis in zip(axes, ("R", "V")):
        for s in (s for s in series if s["axis"] == axis):
            xs = np.array([x for x, _ in s["points"]], dtype=float)
            means, lows, highs = (np.array(v) for v in zip(*(stats for _, stats in s["points"])))
            line = ax.errorbar(xs, means, yerr=[means - lows, highs - means], marker="o", capsize=3,
                               label=s["name"])[0]
            ax.plot(xs, means[0] * xs / xs[0], ls=":", color=line.get_color())
            if s["cores"]:
                bound = np.minimum(xs, s["cores"]) / min(xs[0], s["cores"])
                ax.plot(xs, means[0] * bound, ls="--", color=line.get_color(), lw=1,
                        label=f"limit of {s['cores']} cores")
        ax.set_xlabel("walks R (MW)" if axis == "R" else "nodes V (gossip)")
        ax.set_ylabel("local updates per second (all nodes)")
        ax.set_title(f"throughput vs {axis}; bars: 95% CI over seeds, dotted: linear")
        ax.grid(alpha=0.3)
        readable_ticks(ax)
        if ax.has_data():
            ax.legend(fontsize=LEGEND_SIZE - 2)
    fig.tight_layout()
    save_small_png(fig, path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run directories, or directories holding run directories")
    parser.add_argument("--out", default="runs/figures", help="where the PNG and CSV files go")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not os.path.isdir(p)]
    if missing:
        print(f"error: {missing[0]} is not a directory", file=sys.stderr)
        return 2
    runs = runs_lib.find_runs(args.paths)
    if not runs:
        print(f"error: no finished runs (config.json + summary.json with complete=true) under {' '.join(args.paths)}",
              file=sys.stderr)
        return 2
    for key, png in draw_all(runs, args.out).items():
        print(f"{png}  ({runs_lib.setting_title(key)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
