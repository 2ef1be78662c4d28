"""
The large-V study: the four claims of SEMANTICS.md §8 at V = 20, 50, 100 nodes on cycle,
Erdos-Renyi and complete graphs, on the virtual clock of simulate.py, 5 seeds per run,
judged by docs/analysis_plan.md's rules (verdicts.py: paired by seed, Holm within a claim,
equivalence, censoring; three targets and the error area), per V.

    python analysis/many_nodes.py --report reports/many_nodes.md --figures reports/many_nodes   # the committed section
    python analysis/many_nodes.py                  # the same study into runs/many_nodes/ (report.md, PNGs, results.json)
    python analysis/many_nodes.py --report-only    # redraw from results.json without simulating

Writes the report section (a table per claim), small PNGs and results.json (every
run's config, summary and evaluated curve) beside it, and the runs' event logs
under runs/many_nodes/runs/.

Setting: digits, tau = 5, batch 32, constant lr 0.05 (runs are bounded by
iterations, so no warm-up or decay), Dirichlet non-iid split, compute time
exponential with mean 25 ms per local update, one model transfer 8.7 ms (what
ResNet-20's 1.09 MB takes at 1 Gbit/s, applied to the small model so that
compute and communication keep the paper's proportions), gossip at the authors'
rate (the simulator's default pacing, as in paper_verdicts). The seed drives data split, walks, compute times and, for ER,
the graph itself.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import json
import multiprocessing
import time

import numpy as np

from analysis import claims
from analysis import plots
from analysis import scaling as scaling_lib
from analysis import verdicts
from core import run_records as runs_lib

NODES = (20, 50, 100)
SEEDS = (0, 1, 2, 3, 4)   # inference.MIN_SEEDS: fewer carry no verdict
COMPUTE_MEAN = 0.025     # s per local update (mean of the exponential)
TRANSFER_TIME = 0.0087   # s per model transfer
# "a given accuracy" of claims 1, 2 and 4, at three targets spanning the curves' useful range
# (docs/analysis_plan.md, Large graphs: chosen from the one-seed study of 2026-11-30, whose final accuracies were 0.87-0.97)
METRIC, TARGETS = "test_accuracy", (0.75, 0.80, 0.85)
BUDGET = {20: 2500, 50: 3000, 100: 4000}  # iterations per training run
EVALS_PER_RUN = 40
TIMING_ITERATIONS = 3000  # iterations per timing-only run (claim 3)
SPEEDUP_WALKS = (1, 2, 5, 10)
SETTINGS = (("cycle", 1.0), ("er", 1.0), ("complete", 1.0), ("complete", 0.1))  # (graph, alpha) of the training runs
GRAPHS = ("cycle", "er", "complete")


def er_p(nodes):
    """ER edge probability: the paper's 0.3 at V = 20, then mean degree ~6 so larger graphs stay sparse."""
    return round(min(0.3, 6 / nodes), 4)


def training_walks(nodes, graph):
    """MW-1, MW-V/10 everywhere; on the complete graph also many walks, MW-V/2 (claim 2)."""
    return (1, nodes // 10, nodes // 2) if graph == "complete" else (1, nodes // 10)


def digits_model_bytes():
    """The fp32 bytes of the digits task's MLP (64 pixels in, 10 classes out)."""
    import models
    return 4 * models.num_params(models.DigitsMLP(64, num_classes=10))


def run_flags(job, model_bytes):
    return ["--algorithm", job["algorithm"], "--walks", str(job["walks"]), "--nodes", str(job["nodes"]),
            "--graph", job["graph"], "--er-p", str(er_p(job["nodes"])), "--alpha", str(job["alpha"]),
            "--task", "digits", "--warmup-time", "0", "--train-time", str(job["train_time"]),
            "--max-iterations", str(job["max_iterations"]), "--eval-interval", str(job["eval_interval"]),
            "--compute-time-dist", "exponential", "--compute-time-mean", str(COMPUTE_MEAN),
            "--bandwidth", str(model_bytes / TRANSFER_TIME), "--latency", "0",
            # timing jobs run no SGD: a flat model of the MLP's size, so the bytes stay the same
            "--emulate-params", str(model_bytes // 4 if job["kind"] == "timing" else 0), "--seed", str(job["seed"]), "--out", job["out"],
            "--overwrite", "true"]  # the study's own run folders: each study replaces the last one's


def iteration_rate(job):
    """Iterations per virtual second, roughly (it only sizes the evaluation interval and a timing run's
    length): a walk alternates an update (mean m) with a hop (one transfer unless the MH walk stays,
    probability trace(P)/V); gossip nodes compute back to back."""
    if job["algorithm"] == "gossip":
        return job["nodes"] / COMPUTE_MEAN
    import graphs
    P = graphs.transition_matrix(graphs.build_graph(job["graph"], job["nodes"], er_p(job["nodes"]), job["seed"]))
    stay = P.diagonal().sum() / job["nodes"]
    return job["walks"] / (COMPUTE_MEAN + (1 - stay) * TRANSFER_TIME)


def make_jobs(runs_dir, seeds):
    jobs = []

    def add(kind, algorithm, nodes, graph, seed, alpha=1.0, walks=1):
        name = f"{kind}_V{nodes}_{graph}_a{alpha:g}_" + (f"mw{walks}" if algorithm == "mw" else "gossip") + f"_s{seed}"
        job = dict(kind=kind, algorithm=algorithm, nodes=nodes, graph=graph, alpha=alpha, walks=walks, seed=seed,
                   out=os.path.join(runs_dir, name))
        job["model_rate"] = iteration_rate(job)
        if kind == "training":  # bounded by iterations, evaluated EVALS_PER_RUN times on the way
            job.update(max_iterations=BUDGET[nodes], train_time=1e9,
                       eval_interval=BUDGET[nodes] / job["model_rate"] / EVALS_PER_RUN)
        else:  # bounded by the virtual time the model gives for TIMING_ITERATIONS
            job.update(max_iterations=0, train_time=TIMING_ITERATIONS / job["model_rate"], eval_interval=1e9)
        jobs.append(job)

    for seed in seeds:
        for nodes in NODES:
            for graph, alpha in SETTINGS:
                for walks in training_walks(nodes, graph):
                    add("training", "mw", nodes, graph, seed, alpha, walks)
                add("training", "gossip", nodes, graph, seed, alpha)
            for graph in GRAPHS:
                for walks in SPEEDUP_WALKS:
                    add("timing", "mw", nodes, graph, seed, walks=walks)
                add("timing", "gossip", nodes, graph, seed)
    return jobs


def run_job(job, model_bytes):
    """Simulate one job; returns its run as runs.read_run gives it, in JSON-ready form, plus its kind."""
    import torch
    torch.set_num_threads(1)  # one process per core, tiny models
    from core import config
    from core import build_run
    import simulate
    started = time.process_time()
    cfg = config.parse_config(run_flags(job, model_bytes), prog="many_nodes.py")
    simulate.simulate(cfg, build_run.build_run(cfg, cfg["nodes"]), verbose=False)
    run = runs_lib.read_run(job["out"])
    return dict(run, kind=job["kind"], curve={k: v.tolist() for k, v in run["curve"].items()},
                cpu_seconds=round(time.process_time() - started, 2))


def run_all(jobs, workers):
    model_bytes = digits_model_bytes()
    # the longest runs first, so the pool's workers finish together
    order = sorted(jobs, key=lambda j: (j["kind"] != "training", -j["nodes"] * (j["algorithm"] == "gossip"), -j["nodes"]))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.starmap(run_job, [(job, model_bytes) for job in order], chunksize=1)


def load_results(path):
    with open(path) as f:
        saved = json.load(f)
    if not all("config" in run for run in saved["results"]):
        raise ValueError(f"{path} was written by an older many_nodes.py (one seed, no run configs); rerun the study")
    for run in saved["results"]:
        run["curve"] = {k: np.array(v, dtype=float) for k, v in run["curve"].items()}
    return saved["results"], saved["runtime"]


# -----------------------------------------------------------------------------
# the report section: docs/analysis_plan.md's rules (verdicts.py) per V

def of_kind(results, kind, nodes=None):
    return [r for r in results if r["kind"] == kind and (nodes is None or r["config"]["nodes"] == nodes)]


def timing_series(results):
    """Claim 3's series for verdicts.claim_scaling: MW-R in R per (graph, V), gossip in V per graph;
    {name: {x: {seed: updates per virtual second}}}."""
    series = {}
    for r in of_kind(results, "timing"):
        cfg = r["config"]
        name = (f"MW-R, {cfg['graph']}, V = {cfg['nodes']}" if cfg["algorithm"] == "mw" else f"gossip, {cfg['graph']}, in V")
        x = cfg["walks"] if cfg["algorithm"] == "mw" else cfg["nodes"]
        series.setdefault(name, {}).setdefault(x, {})[cfg["seed"]] = r["updates_per_s"]
    return series


def write_report(results, report_path, figure_dir, runtime, metric, targets):
    import graphs
    rel = os.path.relpath(figure_dir, os.path.dirname(report_path) or ".")
    seeds = sorted({r["config"]["seed"] for r in results})
    measures = [*targets, verdicts.AREA]
    lines = ["## Large graphs: the claims at V = 20, 50, 100 (simulated)", "",
             "Produced by `python analysis/many_nodes.py` on the virtual clock of `simulate.py`, which runs the MPI "
             "engine's protocols (protocols.py) with simulated time: every local update takes an exponential time of mean "
             f"{COMPUTE_MEAN * 1e3:g} ms, every model transfer {TRANSFER_TIME * 1e3:g} ms (ResNet-20's 1.09 MB at "
             "1 Gbit/s; the model trained is the digits MLP, so the study is cheap but compute and communication keep "
             f"the paper's proportions), with the simulator's default engine timing (the authors' polls). Digits, "
             "tau = 5, constant lr 0.05; gossip at the authors' rate. "
             f"{len(seeds)} seeds per run ({', '.join(map(str, seeds))}); the seed drives the data split, the walks, "
             f"the compute times and, for ER, the graph. Budget per training run: "
             f"{', '.join(f'{BUDGET[v]} iterations at V = {v}' for v in NODES)}, evaluated {EVALS_PER_RUN} times. ER "
             f"uses p = {', '.join(f'{er_p(v)} (V = {v})' for v in NODES)}. The whole study took {runtime}.", "",
             "Verdicts by [docs/analysis_plan.md](../docs/analysis_plan.md)'s rules (analysis/verdicts.py), judged "
             f"separately at each V: {metric} targets {', '.join(f'{t:g}' for t in targets)} and the error area; "
             "paired by seed, Holm within a claim, equivalence margin 0.8-1.25, runs that never reach a target "
             "censored. The settings differ from paper_verdicts' (no ER split files at V > 20, R = V/10 and V/2 "
             "for the many-walk cells), so these are a secondary analysis: they show whether each verdict holds "
             "as V grows.", ""]
    if len(seeds) < 5:
        lines += [f"**{len(seeds)} seeds carry no verdict** (the plan needs 5): every verdict below is inconclusive by rule.", ""]
    lines += ["| V | graph | diameter | spectral gap | E[H^2] |", "|---|---|---|---|---|"]
    for nodes in NODES:
        for graph in GRAPHS:
            stats = graphs.graph_stats(graphs.build_graph(graph, nodes, er_p(nodes), seeds[0]))
            lines.append(f"| {nodes} | {graph} | {stats['diameter']} | {stats['spectral_gap']:.4f} | {stats['E_H2']:.0f} |")
    lines += ["", f"(ER: the graph of seed {seeds[0]}; claim 4's exception uses each setting's first run.)", ""]

    summary = []
    for nodes in NODES:
        groups = runs_lib.group_runs(of_kind(results, "training", nodes))
        diameters = {key: claims.setting_diameter(algos) for key, algos in groups.items()}
        found = {1: verdicts.claim_cycle(groups, measures, metric), 2: verdicts.claim_complete(groups, measures, metric),
                 4: verdicts.claim_bytes(groups, measures, metric, diameters)}
        found["4c"] = found[4]["fewest"]
        summary.append((nodes, {number: result["verdict"] for number, result in found.items()}))
        lines += [f"### V = {nodes}", "", verdicts.front_table(found, measures), ""]
        for number, title in ((1, "Claim 1: MW-1 vs gossip on the cycle, iterations"),
                              (2, "Claim 2: the complete graph, iterations"),
                              (4, "Claim 4: MW-1 vs gossip, bytes"), ("4c", "MW-1 fewest: MW-1 vs MW-R, bytes")):
            lines += [f"#### V = {nodes}, {title}: **{found[number]['verdict']}**", "",
                      verdicts.comparison_table(found[number]["comparisons"]), ""]

    series = timing_series(results)
    scaling = verdicts.claim_scaling(series)
    lines += ["### Claim 3: MW speeds up about linearly in R, gossip about linearly in V", "",
              f"Timing-only runs (about {TIMING_ITERATIONS} iterations of virtual time, no SGD), updates per virtual "
              "second; each series' largest x against its smallest, paired by seed, against 0.8 x linear, Holm over "
              "the series.", "",
              "| series | x vs base | speed-up [95% CI] | of linear | verdict |", "|---|---|---|---|---|",
              *[f"| {p['series']} | {p['x']} vs {p['base_x']} | {p['speedup']:.2f} [{p['low']:.2f}, {p['high']:.2f}] "
                f"| {p['efficiency']:.0%} | {p['verdict']} |" for p in scaling["points"]], "",
              f"Verdict: **{scaling['verdict']}**", "", f"![speed-up]({rel}/speedup.png)", ""]
    lines += ["### Summary", "", "| V | claim 1 | claim 2 | claim 4 | MW-1 fewest |", "|---|---|---|---|---|",
              *[f"| {nodes} | {v[1]} | {v[2]} | {v[4]} | {v['4c']} |" for nodes, v in summary],
              "", f"Claim 3 over all V: **{scaling['verdict']}**.", "",
              f"![accuracy against iterations and bytes at V = {NODES[-1]}]({rel}/curves.png)", ""]
    with open(report_path, "w") as f:
        f.write("\n".join(lines))
    return series


def draw_curves(results, figure_dir, metric, targets):
    """The evaluated metric against iterations and bytes at the largest V, mean over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    settings = [("cycle", "alpha=1"), ("complete", "alpha=0.1")]
    groups = runs_lib.group_runs(of_kind(results, "training", NODES[-1]))
    fig, axes = plt.subplots(len(settings), 2, figsize=(12, 8))
    for row, (graph, split) in zip(axes, settings):
        algos = groups[(graph, NODES[-1], split, "digits")]
        for label, group in algos.items():
            for ax, x_key in zip(row, ("iterations", "gigabytes")):
                grid, mean, _ = plots.mean_curve([r["curve"] for r in group], x_key, metric)
                ax.plot(grid, mean, label=label)
        for ax, xlabel in zip(row, ("iterations (all nodes)", "GB sent (all nodes)")):
            for target in targets:
                ax.axhline(target, color="k", ls=":", lw=1)
            ax.set(title=f"V={NODES[-1]}, {graph}, {split}: mean over {len(group)} seeds", xlabel=xlabel, ylabel=metric)
        row[1].set_xscale("log")
        for ax in row:
            plots.readable_ticks(ax)
            ax.legend(fontsize=plots.LEGEND_SIZE - 2)
    fig.tight_layout()
    plots.save_small_png(fig, os.path.join(figure_dir, "curves.png"))
    plt.close(fig)


def main(argv):
    parser = argparse.ArgumentParser(description="Simulate SEMANTICS.md §8's claims at V = 20, 50, 100.")
    parser.add_argument("--report", default="runs/many_nodes/report.md", help="the markdown section to write")
    parser.add_argument("--figures", default="runs/many_nodes", help="folder of the PNGs and results.json")
    parser.add_argument("--runs", default="runs/many_nodes/runs", help="folder of the simulated runs' outputs")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds of every run")
    parser.add_argument("--metric", default=METRIC, choices=runs_lib.METRICS, help="the metric of the target")
    parser.add_argument("--targets", type=float, nargs=3, default=list(TARGETS),
                        help="claims 1, 2, 4: three values of --metric to reach")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="simulations in parallel")
    parser.add_argument("--report-only", action="store_true", help="redraw from results.json without simulating")
    args = parser.parse_args(argv)
    os.makedirs(args.figures, exist_ok=True)
    results_path = os.path.join(args.figures, "results.json")
    if args.report_only:
        if not os.path.isfile(results_path):
            print(f"error: {results_path} does not exist; run many_nodes.py without --report-only first", file=sys.stderr)
            return 2
        try:
            results, runtime = load_results(results_path)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        started = time.time()
        jobs = make_jobs(args.runs, args.seeds)
        print(f"{len(jobs)} simulations on {args.workers} workers", flush=True)
        results = run_all(jobs, args.workers)
        cpu = sum(r["cpu_seconds"] for r in results)
        runtime = (f"{(time.time() - started) / 60:.1f} minutes on {args.workers} workers "
                   f"({cpu / 60:.1f} CPU minutes in the simulations)")
        with open(results_path, "w") as f:
            json.dump(dict(runtime=runtime, results=results), f)
        results, runtime = load_results(results_path)
    try:
        series = write_report(results, args.report, args.figures, runtime, args.metric, args.targets)
    except ValueError as e:  # a metric the runs do not log
        print(f"error: {e}", file=sys.stderr)
        return 2
    scaling_lib.draw(dict(series=series, model=[]), os.path.join(args.figures, "speedup.png"))
    draw_curves(results, args.figures, args.metric, args.targets)
    print(f"wrote {args.report} and {args.figures}/ ({runtime})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
