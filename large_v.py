"""
The large-V study: the four claims of SPEC §8 at V = 20, 50, 100 nodes on cycle,
Erdos-Renyi and complete graphs, run on the virtual clock of simulate.py, plus
MW's speed-up in R and gossip's speed-up in V against the exponential-delay model.

    python large_v.py                  # ~10 minutes on 2 cores
    python large_v.py --report-only    # redraw the section from reports/large_v/results.json

Writes reports/large_v.md (the report section: a table per claim, every verdict
computed from the measured figures by the rule stated next to it), small PNGs and
results.json under reports/large_v/, and the runs' event logs under runs/large_v/.

Setting (one seed per run): digits, tau = 5, batch 32, constant lr 0.05 (runs are
bounded by iterations, so no warm-up or decay), Dirichlet non-iid split, compute
time exponential with mean 25 ms per local update, one model transfer 8.7 ms
(what ResNet-20's 1.09 MB takes at 1 Gbit/s, applied to the small model so that
compute and communication keep the paper's proportions), gossip in free mode.
"""
import argparse
import json
import multiprocessing
import os
import sys
import time

import numpy as np

NODES = (20, 50, 100)
COMPUTE_MEAN = 0.025     # s per local update (mean of the exponential)
TRANSFER_TIME = 0.0087   # s per model transfer
TARGET_ACCURACY = 0.80   # "a given accuracy" of claims 1, 2 and 4
BUDGET = {20: 2500, 50: 3000, 100: 4000}  # iterations per training run
EVALS_PER_RUN = 40
TIMING_ITERATIONS = 3000  # iterations per timing-only run (claim 3)
SPEEDUP_WALKS = (1, 2, 5, 10)
LINEAR = 0.9              # claim 3: "about linear" = at least 90% of the ideal speed-up at every point
SETTINGS = (("cycle", 1.0), ("er", 1.0), ("complete", 1.0), ("complete", 0.1))  # (graph, alpha) of the training runs
SEED = 0


def er_p(nodes):
    """ER edge probability: the paper's 0.3 at V = 20, then mean degree ~6 so larger graphs stay sparse."""
    return round(min(0.3, 6 / nodes), 4)


def training_walks(nodes, graph):
    """MW-1, MW-V/10 everywhere; on the complete graph also many walks, MW-V/2 (claim 2)."""
    return (1, nodes // 10, nodes // 2) if graph == "complete" else (1, nodes // 10)


def digits_model_bytes():
    import models
    return 4 * models.num_params(models.build_model("digits", 10, in_features=64))


def run_flags(job, model_bytes):
    return ["--algorithm", job["algorithm"], "--walks", str(job["walks"]), "--nodes", str(job["nodes"]),
            "--graph", job["graph"], "--er-p", str(er_p(job["nodes"])), "--alpha", str(job["alpha"]),
            "--task", "digits", "--warmup-time", "0", "--train-time", str(job["train_time"]),
            "--max-iterations", str(job["max_iterations"]), "--eval-interval", str(job["eval_interval"]),
            "--compute-time-dist", "exponential", "--compute-time-mean", str(COMPUTE_MEAN),
            "--bandwidth", str(model_bytes / TRANSFER_TIME), "--latency", "0", "--gossip-mode", "free",
            "--skip-updates", str(job["kind"] == "timing").lower(), "--seed", str(SEED), "--out", job["out"]]


def iteration_rate(job):
    """Iterations per virtual second the exponential-delay model predicts: a walk alternates an update
    (mean m) with a hop (one transfer unless the MH walk stays, probability trace(P)/V); gossip nodes
    compute back to back, never waiting for the network."""
    if job["algorithm"] == "gossip":
        return job["nodes"] / COMPUTE_MEAN
    import graphs
    P = graphs.transition_matrix(graphs.build_graph(job["graph"], job["nodes"], er_p(job["nodes"]), SEED))
    stay = np.trace(P) / job["nodes"]
    return job["walks"] / (COMPUTE_MEAN + (1 - stay) * TRANSFER_TIME)


def make_jobs(runs_dir):
    jobs = []

    def add(kind, algorithm, nodes, graph, alpha=1.0, walks=1):
        name = f"{kind}_V{nodes}_{graph}_a{alpha:g}_" + (f"mw{walks}" if algorithm == "mw" else "gossip")
        job = dict(kind=kind, algorithm=algorithm, nodes=nodes, graph=graph, alpha=alpha, walks=walks,
                   out=os.path.join(runs_dir, name))
        job["model_rate"] = iteration_rate(job)
        if kind == "training":  # bounded by iterations, evaluated EVALS_PER_RUN times on the way
            job.update(max_iterations=BUDGET[nodes], train_time=1e9,
                       eval_interval=BUDGET[nodes] / job["model_rate"] / EVALS_PER_RUN)
        else:  # bounded by the virtual time the model gives for TIMING_ITERATIONS
            job.update(max_iterations=0, train_time=TIMING_ITERATIONS / job["model_rate"], eval_interval=1e9)
        jobs.append(job)

    for nodes in NODES:
        for graph, alpha in SETTINGS:
            for walks in training_walks(nodes, graph):
                add("training", "mw", nodes, graph, alpha, walks)
            add("training", "gossip", nodes, graph, alpha)
        for graph in ("cycle", "er", "complete"):
            for walks in SPEEDUP_WALKS:
                add("timing", "mw", nodes, graph, walks=walks)
            add("timing", "gossip", nodes, graph)
    return jobs


def run_job(job, model_bytes):
    """Simulate one job and reduce its event logs to the figures the claims need."""
    import torch
    torch.set_num_threads(1)  # one process per core, tiny models
    import main
    import simulate
    from events import read_events
    started = time.process_time()
    cfg = main.parse_config(run_flags(job, model_bytes))
    summary = simulate.simulate(cfg, main.build_run(cfg, cfg["nodes"]), verbose=False)
    events = read_events(job["out"])
    result = dict(job, cpu_seconds=None, iterations=summary["iterations"], bytes_sent=summary["bytes_sent"],
                  virtual_time=summary["wall_time_s"], final_test_accuracy=summary["final_test_accuracy"])
    if job["kind"] == "timing":
        done = sum(e["type"] == "update" and e["t"] <= job["train_time"] for e in events)
        result["rate"] = done / job["train_time"]
    else:
        evals = [e for e in events if e["type"] == "eval" and e["model"] == "node0"]
        result["curve"] = [(e["t"], e["iterations_seen"], e["bytes_seen"], round(e["test_accuracy"], 4)) for e in evals]
        reached = next((e for e in evals if e["test_accuracy"] >= TARGET_ACCURACY), None)
        result["to_target"] = None if reached is None else dict(
            time=reached["t"], iterations=reached["iterations_seen"], bytes=reached["bytes_seen"])
    result["cpu_seconds"] = round(time.process_time() - started, 2)
    return result


def run_all(jobs, workers):
    model_bytes = digits_model_bytes()
    # the longest runs first, so the pool's workers finish together
    order = sorted(jobs, key=lambda j: (j["kind"] != "training", -j["nodes"] * (j["algorithm"] == "gossip"), -j["nodes"]))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = {r["out"]: r for r in pool.starmap(run_job, [(job, model_bytes) for job in order], chunksize=1)}
    return [results[job["out"]] for job in jobs]


# -----------------------------------------------------------------------------
# verdicts: pure functions of the results, so a test can flip a figure and watch the verdict flip

def find(results, **match):
    return [r for r in results if all(r[k] == v for k, v in match.items())]


def to_target(run, key):
    return None if run["to_target"] is None else run["to_target"][key]


def fewer(a, b):
    """Does `a` reach the target with less of something than `b`? None = not reached within the budget."""
    if a is None:
        return False
    return b is None or a < b


def claim1(results, nodes):
    """Cycle: every MW-R reaches the target in fewer iterations than gossip."""
    runs = find(results, kind="training", nodes=nodes, graph="cycle")
    gossip = find(runs, algorithm="gossip")[0]
    return all(fewer(to_target(r, "iterations"), to_target(gossip, "iterations"))
               for r in find(runs, algorithm="mw"))


def claim2(results, nodes):
    """Complete: which of MW-R and gossip needs fewer iterations depends on R and alpha, and gossip wins
    somewhere with many walks (R = V/2) or extreme heterogeneity (alpha = 0.1)."""
    winners = {}
    for alpha in (1.0, 0.1):
        runs = find(results, kind="training", nodes=nodes, graph="complete", alpha=alpha)
        gossip = find(runs, algorithm="gossip")[0]
        for r in find(runs, algorithm="mw"):
            mw_its, gossip_its = to_target(r, "iterations"), to_target(gossip, "iterations")
            winners[alpha, r["walks"]] = ("MW" if fewer(mw_its, gossip_its) else
                                          "gossip" if fewer(gossip_its, mw_its) else "neither")
    gossip_wins_where_expected = any(w == "gossip" and (alpha == 0.1 or walks == nodes // 2)
                                     for (alpha, walks), w in winners.items())
    return winners, "MW" in winners.values() and gossip_wins_where_expected


def speedups(results, nodes, graph):
    """MW: measured and model iteration rate per R, speed-up over MW-1."""
    runs = sorted(find(results, kind="timing", algorithm="mw", nodes=nodes, graph=graph), key=lambda r: r["walks"])
    base = runs[0]["rate"]
    return [(r["walks"], r["rate"], r["model_rate"], r["rate"] / base) for r in runs]


def gossip_speedups(results, graph):
    runs = sorted(find(results, kind="timing", algorithm="gossip", graph=graph), key=lambda r: r["nodes"])
    base = runs[0]
    return [(r["nodes"], r["rate"], r["model_rate"], r["rate"] / base["rate"], r["nodes"] / base["nodes"]) for r in runs]


def claim3(results):
    """Worst measured speed-up as a fraction of the ideal: per V for MW (over R, graphs) as (fraction, R, graph),
    and for gossip (over V, graphs) as (fraction, V, graph). Linear when the fraction is >= LINEAR."""
    mw = {nodes: min((s / walks, walks, graph) for graph in ("cycle", "er", "complete")
                     for walks, _, _, s in speedups(results, nodes, graph)) for nodes in NODES}
    gossip = min((s / ideal, nodes, graph) for graph in ("cycle", "er", "complete")
                 for nodes, _, _, s, ideal in gossip_speedups(results, graph))
    return mw, gossip


def claim4(results, nodes, graph, alpha):
    """Bytes to target: the winner of MW-1 vs gossip and of MW-V/10 vs gossip, and whether MW-1 needs
    fewer bytes than every other run of the setting."""
    runs = find(results, kind="training", nodes=nodes, graph=graph, alpha=alpha)
    gossip_bytes = to_target(find(runs, algorithm="gossip")[0], "bytes")
    mw1 = find(runs, algorithm="mw", walks=1)[0]
    winners = {}
    for walks in (1, nodes // 10):
        mw_bytes = to_target(find(runs, algorithm="mw", walks=walks)[0], "bytes")
        winners[walks] = ("MW" if fewer(mw_bytes, gossip_bytes) else "gossip" if fewer(gossip_bytes, mw_bytes)
                          else "neither")
    mw1_fewest = all(r is mw1 or fewer(to_target(mw1, "bytes"), to_target(r, "bytes")) for r in runs)
    return winners, mw1_fewest


# -----------------------------------------------------------------------------
# the report section

def fmt(value, unit=""):
    if value is None:
        return "not reached"
    if unit == "MB":
        return f"{value / 1e6:.1f}"
    if unit == "s":
        return f"{value:.2f}"
    return f"{value:d}"


def yes(flag):
    return "**yes**" if flag else "no"


def write_report(results, report_path, figure_dir, runtime):
    import graphs
    name = lambda r: f"MW-{r['walks']}" if r["algorithm"] == "mw" else "gossip"  # noqa: E731
    rel = os.path.relpath(figure_dir, os.path.dirname(report_path))
    lines = ["## Large graphs: the claims at V = 20, 50, 100 (simulated)", "",
             "Produced by `python large_v.py` on the virtual clock of `simulate.py`, which runs the MPI engine's rules "
             "(algorithms.py) with simulated time: every local update takes an exponential time of mean "
             f"{COMPUTE_MEAN * 1e3:g} ms, every model transfer {TRANSFER_TIME * 1e3:g} ms (ResNet-20's 1.09 MB at "
             "1 Gbit/s; the model trained is the digits MLP, so the study is cheap but compute and communication keep "
             f"the paper's proportions). Digits, tau = 5, constant lr 0.05, one seed; gossip in free mode. Budget per "
             f"training run: {', '.join(f'{BUDGET[v]} iterations at V = {v}' for v in NODES)}. ER uses p = "
             f"{', '.join(f'{er_p(v)} (V = {v})' for v in NODES)}. Target accuracy for claims 1, 2 and 4: "
             f"{TARGET_ACCURACY:.0%} test accuracy of the evaluated model (node 0's model), checked {EVALS_PER_RUN} "
             "times per run; \"not reached\" means not within the budget. Verdicts are computed from the figures by "
             f"the rule stated with each table. The whole study took {runtime}.", ""]

    lines += ["| V | graph | diameter | spectral gap | E[H^2] |", "|---|---|---|---|---|"]
    for nodes in NODES:
        for graph in ("cycle", "er", "complete"):
            stats = graphs.graph_stats(graphs.build_graph(graph, nodes, er_p(nodes), SEED))
            lines.append(f"| {nodes} | {graph} | {stats['diameter']} | {stats['spectral_gap']:.4f} | {stats['E_H2']:.0f} |")

    lines += ["", "### Claim 1: on the cycle, MW reaches the target in fewer iterations than gossip", "",
              "Rule: holds at V when every MW-R run reaches the target in fewer iterations than gossip.", "",
              "| V | run | iterations to target | virtual s to target | final accuracy |", "|---|---|---|---|---|"]
    for nodes in NODES:
        for r in find(results, kind="training", nodes=nodes, graph="cycle"):
            lines.append(f"| {nodes} | {name(r)} | {fmt(to_target(r, 'iterations'))} | {fmt(to_target(r, 'time'), 's')} "
                         f"| {r['final_test_accuracy']:.3f} |")
    held = [nodes for nodes in NODES if claim1(results, nodes)]
    lines += ["", "Verdict: " + ", ".join(f"V = {v}: {'holds' if v in held else 'does not hold'}" for v in NODES) + ".",
              ""]

    lines += ["### Claim 2: on the complete graph the ordering depends on R and heterogeneity", "",
              "Rule: holds at V when MW wins some cell and gossip wins a cell with many walks (R = V/2) or "
              "alpha = 0.1 (winner = fewer iterations to target).", "",
              "| V | alpha | run | iterations to target | winner vs gossip |", "|---|---|---|---|---|"]
    for nodes in NODES:
        winners, holds = claim2(results, nodes)
        for alpha in (1.0, 0.1):
            for r in find(results, kind="training", nodes=nodes, graph="complete", alpha=alpha):
                winner = winners[alpha, r["walks"]] if r["algorithm"] == "mw" else ""
                lines.append(f"| {nodes} | {alpha:g} | {name(r)} | {fmt(to_target(r, 'iterations'))} | {winner} |")
    lines += ["", "Verdict: " + ", ".join(f"V = {v}: {'holds' if claim2(results, v)[1] else 'does not hold'}"
                                          for v in NODES) + ".", ""]

    mw_worst, gossip_worst = claim3(results)
    lines += ["### Claim 3: MW speeds up about linearly in R, gossip about linearly in V", "",
              f"Timing-only runs ({TIMING_ITERATIONS} iterations, no SGD): iterations per virtual second, measured "
              "and as the exponential-delay model predicts (MW: R / (m + (1 - s) t) with m the mean compute time, "
              "t the transfer time and s = trace(P)/V the walk's stay probability; gossip: V / m). "
              f"Rule: linear when the measured speed-up (over MW-1, resp. over gossip at V = {NODES[0]}) is at least "
              f"{LINEAR:.0%} of the ideal (R, resp. V/{NODES[0]}) at every point; judged per V for MW.", "",
              "| V | graph | " + " | ".join(f"MW-{w} it/s (model)" for w in SPEEDUP_WALKS) + " | speed-up at R = "
              f"{SPEEDUP_WALKS[-1]} |", "|---|---|" + "---|" * (len(SPEEDUP_WALKS) + 1)]
    for nodes in NODES:
        for graph in ("cycle", "er", "complete"):
            rows = speedups(results, nodes, graph)
            lines.append(f"| {nodes} | {graph} | " + " | ".join(f"{rate:.1f} ({model:.1f})" for _, rate, model, _ in rows)
                         + f" | {rows[-1][3]:.2f}x |")
    lines += ["", "| graph | " + " | ".join(f"gossip V = {v} it/s (model)" for v in NODES) + " | speed-up V = "
              f"{NODES[0]} -> {NODES[-1]} (ideal {NODES[-1] / NODES[0]:g}x) |", "|---|" + "---|" * (len(NODES) + 1)]
    for graph in ("cycle", "er", "complete"):
        rows = gossip_speedups(results, graph)
        lines.append(f"| {graph} | " + " | ".join(f"{rate:.0f} ({model:.0f})" for _, rate, model, _, _ in rows)
                     + f" | {rows[-1][3]:.2f}x |")
    mw_verdicts = [f"V = {nodes}: {'linear' if worst >= LINEAR else 'not linear'} (worst {worst:.0%} of R, at "
                   f"R = {walks} on {graph})" for nodes, (worst, walks, graph) in mw_worst.items()]
    worst, nodes, graph = gossip_worst
    lines += ["", f"Verdict: MW's speed-up in R: {'; '.join(mw_verdicts)}. Gossip's speed-up in V: "
              f"{'linear' if worst >= LINEAR else 'not linear'} (worst {worst:.0%} of V/{NODES[0]}, at V = {nodes} on "
              f"{graph}).", "",
              f"![speed-up]({rel}/speedup.png)", ""]

    lines += ["### Claim 4: MW needs fewer bytes than gossip to reach the target; MW-1 the fewest", "",
              "Rule: per setting, the winner (fewer bytes sent when the target is first reached) of MW-1 vs gossip "
              "and of MW-V/10 vs gossip, and whether MW-1 needs fewer bytes than every other run. The claim expects "
              "MW to win except on small-diameter graphs with extreme heterogeneity (here: complete, alpha = 0.1), "
              "and MW-1 to need the fewest.", "",
              "| V | graph | alpha | MB to target: MW-1 | MW-V/10 | MW-V/2 | gossip | winner MW-1 / MW-V/10 vs gossip "
              "| MW-1 fewest |", "|---|---|---|---|---|---|---|---|---|"]
    mw_wins, exceptions, mw1_fewest = [], [], []
    for nodes in NODES:
        for graph, alpha in SETTINGS:
            runs = find(results, kind="training", nodes=nodes, graph=graph, alpha=alpha)
            by_walks = {r["walks"]: r for r in runs if r["algorithm"] == "mw"}
            cells = [fmt(to_target(by_walks[w], "bytes"), "MB") if w in by_walks else "" for w in
                     (1, nodes // 10, nodes // 2)]
            winners, fewest = claim4(results, nodes, graph, alpha)
            if (graph, alpha) == ("complete", 0.1):
                exceptions.append("gossip" in winners.values())
            else:
                mw_wins.append(all(w == "MW" for w in winners.values()))
            mw1_fewest.append(fewest)
            lines.append(f"| {nodes} | {graph} | {alpha:g} | " + " | ".join(cells)
                         + f" | {fmt(to_target(find(runs, algorithm='gossip')[0], 'bytes'), 'MB')} | "
                           f"{' / '.join(winners.values())} | {yes(fewest)} |")
    lines += ["", f"Verdict: MW (both R) needs fewer bytes than gossip in {sum(mw_wins)} of {len(mw_wins)} settings "
              f"outside the exception; on complete with alpha = 0.1 gossip beats some MW in {sum(exceptions)} of "
              f"{len(exceptions)} (the exception); MW-1 needs the fewest bytes in {sum(mw1_fewest)} of "
              f"{len(mw1_fewest)} settings.", "",
              f"![accuracy against iterations and bytes at V = {NODES[-1]}]({rel}/curves.png)", ""]
    with open(report_path, "w") as f:
        f.write("\n".join(lines))


def draw_figures(results, figure_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    graphs_ = ("cycle", "er", "complete")
    fig, axes = plt.subplots(1, len(graphs_) + 1, figsize=(13, 3.2))
    for ax, graph in zip(axes, graphs_):
        for nodes in NODES:
            rows = speedups(results, nodes, graph)
            ax.plot([w for w, *_ in rows], [s for *_, s in rows], "o-", label=f"MW, V={nodes}")
        ax.plot(SPEEDUP_WALKS, SPEEDUP_WALKS, "k--", lw=1, label="linear")
        ax.set(title=f"MW speed-up, {graph}", xlabel="walks R", ylabel="rate / rate(R=1)")
    ax = axes[-1]
    for graph in graphs_:
        rows = gossip_speedups(results, graph)
        ax.plot([v for v, *_ in rows], [s for _, _, _, s, _ in rows], "o-", label=graph)
    ax.plot(NODES, [v / NODES[0] for v in NODES], "k--", lw=1, label="linear")
    ax.set(title="gossip speed-up", xlabel="nodes V", ylabel=f"rate / rate(V={NODES[0]})")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(figure_dir, "speedup.png"), dpi=80)
    plt.close(fig)

    settings = [("cycle", 1.0), ("complete", 0.1)]
    fig, axes = plt.subplots(len(settings), 2, figsize=(10, 6.4))
    for row, (graph, alpha) in zip(axes, settings):
        for r in find(results, kind="training", nodes=NODES[-1], graph=graph, alpha=alpha):
            label = f"MW-{r['walks']}" if r["algorithm"] == "mw" else "gossip"
            curve = np.array(r["curve"], dtype=float)
            row[0].plot(curve[:, 1], curve[:, 3], label=label)
            row[1].plot(curve[:, 2] / 1e6, curve[:, 3], label=label)
        for ax, xlabel in zip(row, ("iterations", "MB sent")):
            ax.axhline(TARGET_ACCURACY, color="k", ls=":", lw=1)
            ax.set(title=f"V={NODES[-1]}, {graph}, alpha={alpha:g}", xlabel=xlabel, ylabel="test accuracy")
            ax.legend(fontsize=7)
    axes[0][1].set_xscale("log")
    axes[1][1].set_xscale("log")
    fig.tight_layout()
    fig.savefig(os.path.join(figure_dir, "curves.png"), dpi=80)
    plt.close(fig)


def main(argv):
    parser = argparse.ArgumentParser(description="Simulate SPEC §8's claims at V = 20, 50, 100.")
    parser.add_argument("--report", default="reports/large_v.md", help="the markdown section to write")
    parser.add_argument("--figures", default="reports/large_v", help="folder of the PNGs and results.json")
    parser.add_argument("--runs", default="runs/large_v", help="folder of the simulated runs' outputs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="simulations in parallel")
    parser.add_argument("--report-only", action="store_true", help="redraw from results.json without simulating")
    args = parser.parse_args(argv)
    os.makedirs(args.figures, exist_ok=True)
    results_path = os.path.join(args.figures, "results.json")
    if args.report_only:
        with open(results_path) as f:
            saved = json.load(f)
        results, runtime = saved["results"], saved["runtime"]
    else:
        started = time.time()
        jobs = make_jobs(args.runs)
        print(f"{len(jobs)} simulations on {args.workers} workers", flush=True)
        results = run_all(jobs, args.workers)
        cpu = sum(r["cpu_seconds"] for r in results)
        runtime = (f"{(time.time() - started) / 60:.1f} minutes on {args.workers} workers "
                   f"({cpu / 60:.1f} CPU minutes in the simulations)")
        with open(results_path, "w") as f:
            json.dump(dict(runtime=runtime, results=results), f)
    draw_figures(results, args.figures)
    write_report(results, args.report, args.figures, runtime)
    print(f"wrote {args.report} and {args.figures}/ ({runtime})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
