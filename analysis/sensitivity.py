"""
Claims 3 and 4 against the constants they assume (docs/analysis_plan.md, Sensitivity): timing-only
simulator runs (--emulate-params: no SGD, the same virtual clock) across compute time, link bandwidth,
gossip exchanges per update and (where the simulator has it) the engine timing model, then a table of
where each verdict flips, beside the queueing model's prediction (queueing.py).

    python analysis/sensitivity.py                                  # the plan's grid (phase 2), --jobs per core
    python analysis/sensitivity.py --compute 0.025 --bandwidth 1.25e8 --walks 1 15 --exchanges 1 --seeds 2 \\
        --iterations 600 --out runs/sensitivity-tiny                # a tiny grid

Per cell (compute, bandwidth, engine timing): MW-R on the complete graph (V = 20) for each R, and gossip on the
same graph for each exchange rate k (free pacing every compute/k seconds, the immediate coupling so that k
and not the coupling sets the rate; the measured exchanges per active-node update are reported). A run's
rate is its *steady* rate: local updates per virtual second until the first walk (MW) or node (gossip) has
made its last update, since the budget's end leaves fewer workers. Claim 3 in a cell: MW's speed-up at the
largest R over R = 1 against 0.8 x linear (one-sided t tests on the seeds' log-ratios, at 0.05, not
corrected: a sensitivity map, not a verdict). Claim 4 in a cell: MW-1's bytes over gossip's = (iterations
ratio, --iteration-ratio, from the primary runs) x (models sent per update, MW-1 over gossip), which assumes
iterations to target do not depend on these constants. Writes RUNS/sensitivity.md, sensitivity.json and
sensitivity.png (where each verdict flips).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import json
import time

import numpy as np

from analysis import experiments
from analysis import inference
from analysis import queueing
from core import config
from core import run_records
from core.events import read_events
from simulation import engine_timing

GRAPH = experiments.PAPER_GRAPHS["complete"]
NODES = 20
LINEAR = 0.8
FLAGS = dict(task="digits", tau=5, warmup_time=0.0, train_time=1e9, compute_time_dist="exponential",
             latency=experiments.LINK_LATENCY_S, virtual_model_bytes=experiments.RESNET20_BYTES,
             emulate_params=4, eval_interval=1e9, graph=os.path.relpath(GRAPH, REPO))


def cell_name(compute, bandwidth, timing):
    return f"c{compute * 1e3:g}ms-b{bandwidth * 8 / 1e9:g}G" + (f"-{timing}" if timing else "")


def grid(args):
    """The runs: [dict(name, nodes, flags, cell, algorithm, x)], x = R or k."""
    runs = []
    for compute in args.compute:
        for bandwidth in args.bandwidth:
            for timing in args.engine_timing or [None]:
                cell = cell_name(compute, bandwidth, timing)
                base = dict(FLAGS, compute_time_mean=compute, bandwidth=bandwidth, max_iterations=args.iterations,
                            **(dict(engine_timing=timing) if timing else {}))
                algos = [("mw", r, dict(algorithm="mw", walks=r)) for r in args.walks]
                algos += [("gossip", k, dict(algorithm="gossip", gossip_mode="free", gossip_pacing="interval", gossip_interval=compute / k,
                                             gossip_coupling="immediate")) for k in args.exchanges]
                for algorithm, x, flags in algos:
                    for seed in range(args.seeds):
                        label = f"mw{x}" if algorithm == "mw" else f"gossip-k{x:g}"
                        runs.append(dict(name=f"{cell}-{label}-s{seed}", nodes=NODES, cell=cell, algorithm=algorithm,
                                         x=x, flags=dict(base, **flags, seed=seed)))
    return runs


def steady_rate(events):
    """Updates per virtual second from the first update until the first worker (walk or node) made its last."""
    updates = [e for e in events if e["type"] == "update"]
    last = {}
    for e in updates:
        worker = e.get("walk", e["rank"])
        last[worker] = max(last.get(worker, 0.0), e["t"])
    times = np.sort([e["t"] for e in updates])
    end = min(last.values())
    done = np.searchsorted(times, end, side="right")
    return (done - 1) / (end - times[0]) if end > times[0] else None


def measure(run, out):
    events = read_events(out)
    summary = run_records.read_json(os.path.join(out, "summary.json"))
    return dict(run, rate=steady_rate(events), models_per_update=summary["transfers"] / summary["iterations"],
                exchanges_per_update=summary.get("exchanges_per_active_update"))


def cell_rows(results, args):
    """Per cell: MW's efficiency at the largest R (measured, predicted), gossip's models per update per k,
    and the two verdicts."""
    rows = []
    for cell in dict.fromkeys(r["cell"] for r in results):
        mine = [r for r in results if r["cell"] == cell]
        flags = mine[0]["flags"]
        row = dict(cell=cell, compute=flags["compute_time_mean"], bandwidth=flags["bandwidth"],
                   engine_timing=flags.get("engine_timing"))
        mw = {x: [r for r in mine if r["algorithm"] == "mw" and r["x"] == x] for x in args.walks}
        # the authors' engine timing (the simulator's default) adds its polls and copies to every visit:
        # the model takes them as a pure delay per visit (analysis/queueing.py)
        timing = flags.get("engine_timing") or config.config["engine_timing"]
        predicted = queueing.predict(GRAPH, NODES, args.walks, flags["compute_time_mean"],
                                     flags["virtual_model_bytes"], flags["bandwidth"], flags["latency"],
                                     visit_delay_s=engine_timing.AUTHORS_VISIT_DELAY if timing == "authors" else 0.0)
        row["mw"] = {x: dict(rate=float(np.mean([r["rate"] for r in rs])), predicted=predicted[x],
                             models_per_update=float(np.mean([r["models_per_update"] for r in rs])))
                     for x, rs in mw.items() if rs}
        top, one = max(args.walks), min(args.walks)
        if top > one and mw[top] and mw[one]:
            s = inference.speedup([r["rate"] for r in mw[one]], [r["rate"] for r in mw[top]], ideal=top / one,
                                  linear=LINEAR)
            row["claim3"] = dict(s, predicted_efficiency=predicted[top] / predicted[one] / (top / one),
                                 verdict=("linear" if s["p_linear"] < inference.ALPHA else
                                          "sub-linear" if s["p_sublinear"] < inference.ALPHA else "unclear"))
        gossip = {x: [r for r in mine if r["algorithm"] == "gossip" and r["x"] == x] for x in args.exchanges}
        row["gossip"] = {x: dict(rate=float(np.mean([r["rate"] for r in rs])),
                                 models_per_update=float(np.mean([r["models_per_update"] for r in rs])),
                                 exchanges_per_update=float(np.mean([r["exchanges_per_update"] for r in rs])))
                         for x, rs in gossip.items() if rs}
        if 1 in row["mw"]:
            row["claim4"] = {x: dict(bytes_ratio=args.iteration_ratio * row["mw"][1]["models_per_update"]
                                     / g["models_per_update"]) for x, g in row["gossip"].items()}
            for x, c in row["claim4"].items():
                c["verdict"] = "MW-1 fewer" if c["bytes_ratio"] < 1 else "gossip fewer"
        rows.append(row)
    return rows


def table(rows, args):
    lines = [f"MW-R on the paper's complete graph (V = {NODES}); claim 3 at R = {max(args.walks)} against "
             f"{LINEAR:.0%} of linear; claim 4 as MW-1/gossip bytes with an iterations ratio of "
             f"{args.iteration_ratio:g}.", "",
             "| compute | bandwidth | engine timing | MW-R updates/s measured (predicted) | claim 3: efficiency "
             "[95% CI] (predicted) | claim 3 | gossip k: exchanges/update, models/update | claim 4: MW-1/gossip "
             "bytes per k |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        mw = "; ".join(f"R={x}: {m['rate']:.1f} ({m['predicted']:.1f})" for x, m in row["mw"].items())
        c3 = row.get("claim3")
        eff = (f"{c3['efficiency']:.2f} [{c3['low'] / c3['ideal']:.2f}, {c3['high'] / c3['ideal']:.2f}] "
               f"({c3['predicted_efficiency']:.2f})") if c3 else "—"
        g = "; ".join(f"k={x:g}: {v['exchanges_per_update']:.2f}, {v['models_per_update']:.2f}"
                      for x, v in row["gossip"].items()) or "—"
        c4 = "; ".join(f"k={x:g}: {v['bytes_ratio']:.2f} {v['verdict']}" for x, v in row.get("claim4", {}).items()) or "—"
        lines.append(f"| {row['compute'] * 1e3:g} ms | {row['bandwidth'] * 8 / 1e9:g} Gbit/s | "
                     f"{row['engine_timing'] or 'simulator default'} | {mw} | {eff} | {c3['verdict'] if c3 else '—'} "
                     f"| {g} | {c4} |")
    return "\n".join(lines)


def draw(rows, path):
    """Where each verdict flips: claim 3's efficiency at the largest R (measured with its interval, predicted
    dashed) against bandwidth, and claim 4's MW-1/gossip bytes ratio against gossip's exchanges per update;
    one line per compute time and engine timing, the thresholds (0.8, 1) drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from analysis import plots
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for n, line in enumerate(dict.fromkeys((r["compute"], r["engine_timing"]) for r in rows)):
        mine = sorted((r for r in rows if (r["compute"], r["engine_timing"]) == line and "claim3" in r),
                      key=lambda r: r["bandwidth"])
        label = f"{line[0] * 1e3:g} ms, {line[1] or 'default'} timing"
        color = f"C{n}"
        if mine:
            x = [r["bandwidth"] * 8 / 1e9 for r in mine]
            c3 = [r["claim3"] for r in mine]
            left.errorbar(x, [c["efficiency"] for c in c3], yerr=[[c["efficiency"] - c["low"] / c["ideal"] for c in c3],
                                                                 [c["high"] / c["ideal"] - c["efficiency"] for c in c3]],
                          color=color, marker="o", capsize=3, label=label)
            left.plot(x, [c["predicted_efficiency"] for c in c3], color=color, linestyle="--")
        at_1g = [r for r in rows if (r["compute"], r["engine_timing"]) == line and r.get("claim4")
                 and np.isclose(r["bandwidth"], 1.25e8)]
        for r in at_1g:
            ks = sorted(r["gossip"])
            right.plot([r["gossip"][k]["exchanges_per_update"] for k in ks], [r["claim4"][k]["bytes_ratio"] for k in ks],
                       color=color, marker="o", label=label)
    left.axhline(LINEAR, color="black", linewidth=0.8)
    left.set(xscale="log", xlabel="link bandwidth (Gbit/s)", ylabel="MW speed-up at the largest R / linear",
             title="claim 3: efficiency (dashed: queueing model)")
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set(xscale="log", xlabel="gossip exchanges per active-node update (measured)",
              ylabel="MW-1 / gossip bytes to target (predicted)", title="claim 4 at 1 Gbit/s")
    for ax in (left, right):
        plots.readable_ticks(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    plots.save_small_png(fig, path)
    plt.close(fig)


def run_grid(runs, out_dir, jobs):
    """The timing-only runs not yet done, `jobs` at a time (experiments.launch_forked); a failed run's stderr is
    printed and the others go on. Returns (every run that did not fail, measured; runs run now, wall seconds,
    1-minute load before, failed names)."""
    os.makedirs(out_dir, exist_ok=True)
    preset = dict(runner="simulate", timeout=900)
    todo = [r for r in runs if not experiments.is_done(r, os.path.join(out_dir, r["name"]))]
    started, load_before, failed = time.time(), os.getloadavg()[0], []

    def finished(run, code, seconds):
        if code != 0:
            failed.append(run["name"])
            print(f"{run['name']}: FAILED ({code})\n{experiments.stderr_tail(os.path.join(out_dir, run['name']))}",
                  flush=True)

    if todo:
        experiments.warm_simulator()
        experiments.launch_forked(todo, out_dir, preset, min(jobs, len(todo)), finished)
    wall = time.time() - started
    results = [measure(r, os.path.join(out_dir, r["name"])) for r in runs if r["name"] not in failed]
    return results, todo, wall, load_before, failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--compute", type=float, nargs="+", default=[0.005, 0.025, 0.1], help="mean s per update")
    parser.add_argument("--bandwidth", type=float, nargs="+", default=[1.25e7, 1.25e8, 1.25e9], help="bytes/s")
    parser.add_argument("--exchanges", type=float, nargs="+", default=[0.5, 1, 2, 4],
                        help="gossip exchanges per active-node update aimed at (pacing compute/k)")
    parser.add_argument("--walks", type=int, nargs="+", default=[1, 5, 10, 15])
    parser.add_argument("--engine-timing", nargs="+", default=None,
                        help="values of simulate.py's --engine-timing to cross (default: its default only)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=6000, help="local updates per run")
    parser.add_argument("--iteration-ratio", type=float, default=0.15,
                        help="MW-1/gossip iterations to target from the primary runs (the last report: 0.15)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", default="runs/sensitivity")
    args = parser.parse_args(argv)
    bad = ([f"--compute {v:g} (must be > 0)" for v in args.compute if v <= 0]
           + [f"--bandwidth {v:g} (must be > 0)" for v in args.bandwidth if v <= 0]
           + [f"--exchanges {v:g} (must be > 0)" for v in args.exchanges if v <= 0]
           + [f"--walks {v} (must be 1..{NODES})" for v in args.walks if not 1 <= v <= NODES]
           + [f"--{k} {getattr(args, k)} (must be >= 1)" for k in ("seeds", "iterations", "jobs") if getattr(args, k) < 1])
    if bad:
        print(f"error: {bad[0]}", file=sys.stderr)
        return 2
    runs = grid(args)
    error = experiments.check_runs(runs, None)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results, todo, wall, load_before, failed = run_grid(runs, args.out, args.jobs)
    rows = cell_rows(results, args)
    text = (f"# Sensitivity of claims 3 and 4 to the assumed constants\n\n`python analysis/sensitivity.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`: {len(runs)} timing-only runs ({len(todo)} run "
            f"now in {wall / 60:.1f} min of wall time, {args.jobs} at a time, 1-minute load {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after).\n\n{table(rows, args)}\n")
    with open(os.path.join(args.out, "sensitivity.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "sensitivity.json"), "w") as f:
        json.dump(rows, f, indent=1, default=float)
    draw(rows, os.path.join(args.out, "sensitivity.png"))
    print(text, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
