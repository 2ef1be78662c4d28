"""
Test accuracy against time for runs with failures (SEMANTICS.md §6), a dashed line at each
failure; runs of the same algorithm without failures are drawn dotted, for reference.

    mpirun -n 6 python main.py --walks 4 --train-time 30 --eval-interval 1 --failure-times 10 20 --out runs/fail-mw
    mpirun -n 6 python main.py --algorithm gossip --train-time 30 --eval-interval 1 --failure-times 10 20 --out runs/fail-gossip
    mpirun -n 6 python main.py --walks 4 --train-time 30 --eval-interval 1 --out runs/nofail-mw
    mpirun -n 6 python main.py --algorithm gossip --train-time 30 --eval-interval 1 --out runs/nofail-gossip
    python plot_failures.py runs/fail-mw runs/fail-gossip runs/nofail-mw runs/nofail-gossip --ymin 0.85

writes runs/failures.png (--out figures/failures.png replaces the figure of docs/failures.md). It also prints, for every failure, the accuracy evaluated last before it, first after
it (at the node evaluation moved to) and at the end of the run.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis import plots  # noqa: E402
from core import run_records as runs_lib  # noqa: E402
from core.events import read_events  # noqa: E402


def failure_curve(out_dir):
    """(config, [(t, accuracy, evaluating node)], [(failed node, time)]) of one run."""
    cfg = runs_lib.read_json(os.path.join(out_dir, "config.json"))
    events = read_events(out_dir)
    evals = [(e["t"], e["test_accuracy"], e.get("node", 0)) for e in events
             if e["type"] == "eval" and e["rank"] == 0 and e["model"] == "node0"]
    failures = sorted({(e["node"], e["scheduled"]) for e in events if e["type"] == "failure"})
    return cfg, evals, failures


def around_failures(evals, failures):
    """Rows (failed node, time, accuracy last before, first after, final)."""
    rows = []
    for node, t in failures:
        before = [acc for time, acc, _ in evals if time < t]
        after = [acc for time, acc, _ in evals if time >= t]
        rows.append((node, t, before[-1] if before else None, after[0] if after else None, evals[-1][1]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="out folders of runs (with and without --failure-times)")
    parser.add_argument("--out", default="runs/failures.png", help="the PNG to write")
    parser.add_argument("--ymin", type=float, default=None, help="lower end of the accuracy axis (to zoom in)")
    args = parser.parse_args(argv)
    missing = [run for run in args.runs if not runs_lib.is_run_dir(run)]
    if missing:
        print(f"error: {missing[0]} is not a run folder (no config.json); make it with the mpirun line in "
              "plot_failures.py's docstring", file=sys.stderr)
        return 2
    curves = [failure_curve(run) for run in args.runs]
    algorithms = sorted({cfg["algorithm"] for cfg, _, _ in curves}, key=["mw", "gossip"].index)
    fig, axes = plt.subplots(1, len(algorithms), figsize=(5.5 * len(algorithms), 4), sharey=True, squeeze=False)
    for ax, algorithm in zip(axes[0], algorithms):
        mine = [(curve, run) for curve, run in zip(curves, args.runs) if curve[0]["algorithm"] == algorithm]
        first = mine[0][0][0]
        ax.set_title(f"{'MW' if algorithm == 'mw' else 'gossip'}: {first['nodes']} nodes, {first['graph']}, "
                     f"{first['task']}")
        for (cfg, evals, failures), run in mine:
            t, acc = [e[0] for e in evals], [e[1] for e in evals]
            label = runs_lib.algorithm_label(cfg) + (f", {len(failures)} failures" if failures else ", no failures")
            ax.plot(t, acc, ":" if not failures else "-", marker="." if failures else None, label=label)
            for node, when in failures:
                what = f"aggregator {node} -> {node + 1}" if algorithm == "mw" else f"node {node} stops"
                ax.axvline(when, color="gray", linestyle="--", linewidth=1)
                ax.text(when, 0.25, " " + what, rotation=90, va="bottom", fontsize=8, color="gray",
                        transform=ax.get_xaxis_transform())
            for node, when, before, after, final in around_failures(evals, failures):
                before, after = ("none" if acc is None else f"{acc:.4f}" for acc in (before, after))  # no eval there
                print(f"{run}: {runs_lib.algorithm_label(cfg)} failure of node {node} at {when:g}s: accuracy "
                      f"{before} before, {after} first after, {final:.4f} at the end")
            if not failures:
                print(f"{run}: {runs_lib.algorithm_label(cfg)} without failures: final accuracy {acc[-1]:.4f}")
        ax.set_xlabel("time (s)")
        ax.set_ylim(bottom=args.ymin)
        ax.grid(alpha=0.3)
        plots.readable_ticks(ax)
        ax.legend(loc="lower right", fontsize=plots.LEGEND_SIZE)
    axes[0][0].set_ylabel("test accuracy (evaluated model)")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
