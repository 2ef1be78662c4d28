"""
Claim 3's own runs (docs/analysis_plan.md, Claim 3): timing-only simulator runs (--emulate-params: no SGD,
the same virtual clock) at paper_sim's constants, the speed-up of each series against linear, and MW's
measured rates against the queueing model (queueing.py).

    python analysis/scaling.py                                   # the plan's 140 runs, --jobs per core
    python analysis/scaling.py --seeds 2 --iterations 600 --out runs/scaling-tiny    # a tiny version

Series: MW-R for R = 1, 2, 5, 10, 15 on the paper's complete graph and on its cycle (V = 20); gossip at the
authors' rate on complete graphs of V = 5, 10, 20, 40 (simulate.py's generated complete graph and split,
so that the four sizes share one construction). A run's rate is its steady rate (sensitivity.steady_rate).
The verdict is verdicts.claim_scaling's: the largest x of each series against its smallest, paired by seed,
t interval on log S, against 0.8 x linear, Holm over the three series. The model check: at every MW point,
the seeds' log(measured / predicted) against the margin [0.95, 1.05] by two one-sided t tests (TOST at 0.05).
Writes OUT/scaling.md, scaling.json (the series and the checks; analysis/report.py reads it from the report
folder's scaling/) and scaling.png.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import json

import numpy as np
from scipy import stats

from analysis import experiments
from analysis import inference
from analysis import queueing
from analysis import sensitivity
from analysis import verdicts
from core import config
from simulation import engine_timing

WALKS = (1, 2, 5, 10, 15)
GOSSIP_NODES = (5, 10, 20, 40)
MODEL_MARGIN = (0.95, 1.05)  # measured / predicted, the plan's 5%
FLAGS = dict(sensitivity.FLAGS, compute_time_mean=experiments.GPU_UPDATE_S, bandwidth=experiments.LINK_BYTES_PER_S)


def grid(args):
    """The runs: [dict(name, nodes, flags, series, x)]."""
    runs = []
    for kind in ("complete", "cycle"):
        graph = os.path.relpath(experiments.PAPER_GRAPHS[kind], REPO)
        for r in args.walks:
            for seed in range(args.seeds):
                runs.append(dict(name=f"mw-{kind}-R{r}-s{seed}", nodes=20, series=f"MW-R, {kind} (V = 20)", x=r,
                                 graph=graph, flags=dict(FLAGS, graph=graph, algorithm="mw", walks=r, seed=seed,
                                                         max_iterations=args.iterations)))
    for nodes in args.gossip_nodes:
        for seed in range(args.seeds):
            # the same work per node at every V: a run's length grows with V
            runs.append(dict(name=f"gossip-complete-V{nodes}-s{seed}", nodes=nodes, series="gossip, complete, in V",
                             x=nodes, flags=dict(FLAGS, graph="complete", algorithm="gossip", seed=seed,
                                                 max_iterations=args.iterations * nodes // 20)))
    return runs


def model_check(rates, predicted):
    """Measured/predicted over the seeds: ratio, 95% t interval, and TOST against MODEL_MARGIN."""
    d = np.log(np.asarray(rates, dtype=float) / predicted)
    mean, sem = float(d.mean()), float(stats.sem(d))
    low, high = stats.t.interval(inference.CONFIDENCE, len(d) - 1, loc=mean, scale=sem) if sem > 0 else (mean, mean)
    lower = stats.ttest_1samp(d, np.log(MODEL_MARGIN[0]), alternative="greater").pvalue if sem > 0 else float(mean <= np.log(MODEL_MARGIN[0]))
    upper = stats.ttest_1samp(d, np.log(MODEL_MARGIN[1]), alternative="less").pvalue if sem > 0 else float(mean >= np.log(MODEL_MARGIN[1]))
    p = float(max(lower, upper))
    return dict(ratio=float(np.exp(mean)), low=float(np.exp(low)), high=float(np.exp(high)), p_tost=p,
                within=bool(p < inference.ALPHA))


def analyse(results):
    """The series {name: {x: {seed: rate}}}, claim 3's verdict and the model checks."""
    series = {}
    for r in results:
        series.setdefault(r["series"], {}).setdefault(r["x"], {})[r["flags"]["seed"]] = r["rate"]
    timing = config.config["engine_timing"]  # the simulator's default, which these runs use
    delay = engine_timing.AUTHORS_VISIT_DELAY if timing == "authors" else 0.0
    checks = []
    for kind in ("complete", "cycle"):
        name = f"MW-R, {kind} (V = 20)"
        if name not in series:
            continue
        predicted = queueing.predict(experiments.PAPER_GRAPHS[kind], 20, sorted(series[name]), FLAGS["compute_time_mean"],
                                     FLAGS["virtual_model_bytes"], FLAGS["bandwidth"], FLAGS["latency"],
                                     visit_delay_s=delay)
        for x, by_seed in sorted(series[name].items()):
            checks.append(dict(series=name, x=x, predicted=predicted[x], measured=float(np.mean(list(by_seed.values()))),
                               **model_check(list(by_seed.values()), predicted[x])))
    return dict(series=series, claim3=verdicts.claim_scaling(series), model=checks, engine_timing=timing)


def tables(analysis):
    claim = analysis["claim3"]
    lines = [f"**Claim 3: {claim['verdict']}** (each series' largest x against its smallest, paired by seed, "
             "against 0.8 x linear, Holm over the series).", "",
             "| series | x vs base | speed-up [95% CI] | ideal | of linear | verdict |", "|---|---|---|---|---|---|"]
    lines += [f"| {p['series']} | {p['x']} vs {p['base_x']} | {p['speedup']:.2f} [{p['low']:.2f}, {p['high']:.2f}] | "
              f"{p['ideal']:.0f} | {p['efficiency']:.0%} | {p['verdict']} |" for p in claim["points"]]
    lines += ["", "Updates per virtual second, mean over seeds, each point's seeds:", "",
              "| series | " + " | ".join(["x", "updates/s", "speed-up", "of linear"]) + " |", "|---|---|---|---|---|"]
    for name, by_x in analysis["series"].items():
        base_x = min(by_x)
        base = np.mean(list(by_x[base_x].values()))
        for x, by_seed in sorted(by_x.items()):
            rate = np.mean(list(by_seed.values()))
            lines.append(f"| {name} | {x} | {rate:.1f} | {rate / base:.2f} | {rate / base / (x / base_x):.0%} |")
    lines += ["", f"The queueing model (analysis/queueing.py, engine timing `{analysis['engine_timing']}`) against "
              f"the measured MW rates: measured / predicted with its 95% interval; *within 5%* by TOST on "
              f"[{MODEL_MARGIN[0]}, {MODEL_MARGIN[1]}] at 0.05.", "",
              "| series | R | predicted | measured | measured / predicted [95% CI] | TOST p | within 5% |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {c['series']} | {c['x']} | {c['predicted']:.1f} | {c['measured']:.1f} | {c['ratio']:.3f} "
              f"[{c['low']:.3f}, {c['high']:.3f}] | {c['p_tost']:.3g} | {'yes' if c['within'] else 'no'} |"
              for c in analysis["model"]]
    return "\n".join(lines)


def draw(analysis, path):
    """Speed-up against x per series with its seeds' spread, linear and 0.8 x linear drawn, the model dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from analysis import plots
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = "osD^v"  # with more series than colours, a colour comes back with another marker
    for n, (name, by_x) in enumerate(analysis["series"].items()):
        xs = sorted(by_x)
        base = np.mean(list(by_x[xs[0]].values()))
        ax.plot([x / xs[0] for x in xs], [np.mean(list(by_x[x].values())) / base for x in xs],
                marker=markers[n // 10 % len(markers)], color=f"C{n % 10}", label=name)
        model = [c for c in analysis["model"] if c["series"] == name]
        if model:
            ax.plot([c["x"] / xs[0] for c in model], [c["predicted"] / model[0]["predicted"] for c in model],
                    color=f"C{n % 10}", linestyle="--", linewidth=1)
    top = max(max(by_x) / min(by_x) for by_x in analysis["series"].values())
    ax.plot([1, top], [1, top], color="black", linewidth=0.8, label="linear")
    ax.plot([1, top], [0.8, 0.8 * top], color="gray", linewidth=0.8, linestyle=":", label="0.8 x linear")
    ax.set(xlabel="x / base (walks, or nodes)", ylabel="speed-up (updates/s over the base's)",
           title="claim 3: speed-up" + (" (dashed: queueing model)" if analysis["model"] else ""))
    plots.readable_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plots.save_small_png(fig, path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--walks", type=int, nargs="+", default=list(WALKS))
    parser.add_argument("--gossip-nodes", type=int, nargs="+", default=list(GOSSIP_NODES))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=3000, help="local updates per run at V = 20 (gossip: scaled with V)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", default="runs/scaling")
    args = parser.parse_args(argv)
    bad = ([f"--walks {v} (must be 1..20)" for v in args.walks if not 1 <= v <= 20]
           + [f"--gossip-nodes {v} (must be >= 2)" for v in args.gossip_nodes if v < 2]
           + [f"--{k} {getattr(args, k)} (must be >= 1)" for k in ("seeds", "iterations", "jobs") if getattr(args, k) < 1])
    if bad:
        print(f"error: {bad[0]}", file=sys.stderr)
        return 2
    runs = grid(args)
    error = experiments.check_runs(runs, None)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results, todo, wall, load_before, failed = sensitivity.run_grid(runs, args.out, args.jobs)
    analysis = analyse(results)
    text = (f"# Claim 3: speed-up in R and in V\n\n`python analysis/scaling.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`: {len(runs)} timing-only runs at paper_sim's "
            f"constants ({FLAGS['compute_time_mean'] * 1e3:g} ms mean update, {FLAGS['bandwidth'] * 8 / 1e9:g} Gbit/s, "
            f"{FLAGS['virtual_model_bytes']:,} B per model; {len(todo)} run now in {wall / 60:.1f} min of wall time, "
            f"{args.jobs} at a time, 1-minute load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after).\n\n"
            f"{tables(analysis)}\n\n![speed-up](scaling.png)\n")
    with open(os.path.join(args.out, "scaling.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump(verdicts.plain(analysis), f, indent=1)
    draw(analysis, os.path.join(args.out, "scaling.png"))
    print(text, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
