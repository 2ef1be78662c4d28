"""
REPORT.md from finished runs: the four claims of SEMANTICS.md §8, the per-seed measures
that test each one, their means with bootstrap 95% intervals, and a verdict
computed from the intervals by the rules of claims.py, stated in the report.

    python report.py runs/cpu --target 0.9 --out runs/cpu/report
    python report.py runs/cpu --metric test_loss --target 0.3 --out runs/cpu/report-loss

Every number comes from the runs' folders (runs.read_run); the report's last
table lists every run folder with its own numbers.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import datetime
import json

from analysis import claims
from analysis import inference
from analysis import plots
from analysis import verdicts
from core import run_records as runs_lib



def short(key):
    kind, nodes, split, _ = key
    return f"{kind} V={nodes} {split}"


MAX_LISTED = 8  # a claim of more comparisons than this is summarised in its row; its section lists them all


def verdict_counts(verdicts):
    """'20 supported, 4 inconclusive' (the verdicts that occur, in the rules' order)."""
    verdicts = list(verdicts)
    return ", ".join(f"{verdicts.count(v)} {v}" for v in (claims.SUPPORTED, claims.CONTRADICTED, claims.INCONCLUSIVE)
                     if v in verdicts)


def pairs_text(pairs):
    """'A/B on setting: ratio [low, high] verdict' for each comparison, or a count of verdicts when there are many."""
    if len(pairs) > MAX_LISTED:
        return f"{len(pairs)} comparisons: {verdict_counts(p['verdict'] for p in pairs)} (each in its section below)"
    return "; ".join(f"{p['a_label']}/{p['b_label']} on {short(p['key'])}: {p['ratio']:.2f} "
                     f"[{p['low']:.2f}, {p['high']:.2f}] {p['verdict']}" for p in pairs) or "no comparison"


def scaling_text(scaling):
    rows = scaling["rows"]
    if len(rows) > MAX_LISTED:
        listed = [f"{len(rows)} points of {len(scaling['series'])} series: {verdict_counts(r['verdict'] for r in rows)} "
                  "(each in its section below)"]
    else:
        listed = [f"{r['series']}: {r['speedup']:.2f} [{r['low']:.2f}, {r['high']:.2f}] at {r['axis']}={r['x']} "
                  f"(ideal {r['ideal']:.2f}) {r['verdict']}" for r in rows]
    return "; ".join(listed + [scaling["note"]] * bool(scaling["note"]))


def mean_of(values, fmt="{:.3g}"):
    """'mean (min-max)' of a list of numbers, or the one value."""
    low, high = min(values), max(values)
    if low == high:
        return fmt.format(low)
    return f"{fmt.format(sum(values) / len(values))} ({fmt.format(low)}-{fmt.format(high)})"


def distinct(runs, key):
    return sorted({run["config"][key] for run in runs})


def simulation_section(runs, metric, target):
    """The virtual clock of simulated runs, read from their configs and summaries: what an update and a
    transfer cost, the bytes counted, how often gossip exchanged, how far each curve got, and the cost of
    the simulations themselves."""
    cfgs = [run["config"] for run in runs]
    means = distinct(runs, "compute_time_mean")
    dists = distinct(runs, "compute_time_dist")
    bytes_counted = sorted({run["summary"]["model_bytes"] for run in runs})
    bandwidths, latencies = distinct(runs, "bandwidth"), distinct(runs, "latency")
    lines = ["## The virtual clock (simulated runs)", "",
             f"Every run is `simulate.py`: all nodes in one process on a virtual clock, the same protocol code as the "
             f"MPI engine. A local update takes {'an' if dists[0][0] in 'aeiou' else 'a'} {'/'.join(dists)} time of mean "
             f"{'/'.join(f'{m * 1e3:g}' for m in means)} ms (`--compute-time-dist`, `--compute-time-mean`; drawn per node "
             f"from the seed). A model transfer takes bytes / bandwidth + latency = "
             + "; ".join(f"{b:,} B / {w * 8 / 1e9:g} Gbit/s + {lat * 1e3:g} ms = {(b / w + lat) * 1e3:.2f} ms"
                         for b in bytes_counted for w in bandwidths for lat in latencies)
             + f", and counts {' or '.join(f'{b:,}' for b in bytes_counted)} bytes"
             + (" (`--virtual-model-bytes`: the bytes of the model named there, whatever the model trained)"
                if any(c.get("virtual_model_bytes") for c in cfgs) else "")
             + ". Time, updates/s and the learning-rate schedule are virtual; iterations and bytes are counted as "
               "on a real run.", ""]
    groups = runs_lib.group_runs(runs)
    several_v = len({key[1] for key in groups}) > 1
    rows = {}
    for key, algos in groups.items():
        for label, group in algos.items():
            rows.setdefault((label, key[1] if several_v else None), []).extend(group)
    lines += ["| curve | runs | local updates | virtual s per run | updates per virtual s | exchanges per active-node "
              "update | simulation wall s per run |", "|---|---|---|---|---|---|---|"]
    for (label, nodes), group in sorted(rows.items(), key=lambda kv: (runs_lib.algorithm_order(kv[0][0]), kv[0][1])):
        label += f", V={nodes}" if nodes else ""
        exchanges = [r["summary"]["exchanges_per_active_update"] for r in group
                     if "exchanges_per_active_update" in r["summary"]]
        walls = [r["launch"]["seconds"] for r in group if r["launch"]]
        lines.append(f"| {label} | {len(group)} | {mean_of([r['summary']['iterations'] for r in group], '{:.0f}')} | "
                     f"{mean_of([r['summary']['wall_time_s'] for r in group])} | "
                     f"{mean_of([r['updates_per_s'] for r in group if r['updates_per_s']], '{:.0f}')} | "
                     f"{mean_of(exchanges, '{:.2f}') if exchanges else '—'} | {mean_of(walls, '{:.1f}') if walls else '—'} |")
    best = []
    for key, algos in groups.items():
        reached = {label: [claims.to_target(r, "iterations", metric, target) for r in group] for label, group in algos.items()}
        reached = {label: v for label, v in reached.items() if not any(c for _, c in v)}
        if reached:
            label = min(reached, key=lambda lab: sum(v for v, _ in reached[lab]))
            best.append(f"{short(key)}: {label}, {claims.fmt_mean(reached[label], 'iterations')}")
    lines += ["", "Iterations to the target of the curve that needs the fewest (among those that reached it in every "
              "seed), mean [95% CI]: " + ("; ".join(best) or "none reached it in every seed") + ".", ""]
    return lines


def cell(value, fmt="{}"):
    return "—" if value is None else fmt.format(value)


def grid_span_text(launches):
    """Runs that went side by side (experiments.py --jobs): the time during which at least one ran (a
    grid resumed later does not count the pause)."""
    intervals = sorted((launch["started"], launch["started"] + launch["seconds"]) for launch in launches
                       if "started" in launch)
    jobs = max((launch.get("jobs", 1) for launch in launches), default=1)
    if jobs < 2 or not intervals:
        return ""
    busy, (begin, end) = 0.0, intervals[0]
    for start, stop in intervals[1:]:
        if start > end:
            busy, begin = busy + end - begin, start
        end = max(end, stop)
    busy += end - begin
    return f"; {jobs} at a time, {busy / 60:.1f} min of wall time"


def few_seeds_lines(seeds):
    """The opening warning of a report whose runs have fewer seeds than docs/analysis_plan.md needs."""
    return [f"**{seeds} seed{'s' * (seeds != 1)} carr{'ies' if seeds == 1 else 'y'} no verdict.** The analysis plan "
            f"(docs/analysis_plan.md) needs at least {inference.MIN_SEEDS} seeds per curve, 10 for its primary tests; "
            "the verdicts below, by the earlier unpaired rules, show that the pipeline runs end to end, not "
            "evidence for or against a claim. The pre-registered verdicts are in reports/paper_verdicts/REPORT.md.", ""]


def missing_lines(names):
    """'**Planned runs not finished (N).** cycle-V20-a10-mw1: seeds 5, 6; ...' from run names '<setting>-s<seed>'."""
    seeds = {}
    for name in names:
        setting, seed = name.rsplit("-s", 1)
        seeds.setdefault(setting, []).append(int(seed))
    return [f"**Planned runs not finished ({len(names)}); the verdicts rest on the others.** "
            + "; ".join(f"{setting}: seed{'s' * (len(s) > 1)} {', '.join(map(str, sorted(s)))}"
                        for setting, s in seeds.items()), ""]


def write_report(runs, metric, target, out_dir, title, command, notes=(), targets=None, missing=()):
    """REPORT.md and figures/ in out_dir; returns {claim number: verdict}. notes: markdown lines on
    the setting (a preset's), written after the opening paragraph. targets: the analysis plan's targets
    (docs/analysis_plan.md): its verdicts (verdicts.py) come first, with every number they rest on in
    verdicts.json, and the unpaired analysis at `target` follows as the secondary "previous report"
    comparison. missing: the names of the preset's runs not finished, listed after the opening paragraph."""
    claims.check_metric(metric)
    groups = runs_lib.group_runs(runs)
    figures = plots.draw_all(runs, os.path.join(out_dir, "figures"), targets or ())
    diameters = {key: claims.setting_diameter(algos) for key, algos in groups.items()}
    launches = [r["launch"] for r in runs if r["launch"]]
    simulated = all(runs_lib.is_simulated(r) for r in runs)
    cores = max((launch["cores"] for launch in launches), default=None)
    cycle, complete = claims.claim_cycle(groups, metric, target), claims.claim_complete(groups, metric, target)
    scaling = claims.claim_scaling(groups, cores)
    by_rate, exception = claims.claim_bytes(groups, metric, target, diameters)
    bytes_verdict = (next(iter(by_rate.values()))["verdict"] if len(by_rate) == 1 else
                     "; ".join(f"gossip {rate}: {c['verdict']}" for rate, c in by_rate.items()) or claims.INCONCLUSIVE)
    rows = [
        ("On a cycle, MW reaches the target in fewer iterations than gossip.",
         cycle["note"] or pairs_text(cycle["pairs"]), cycle["verdict"]),
        ("On a complete graph the ordering depends on R and heterogeneity; gossip can win with many walks "
         "or extreme non-iid data (alpha = 0.1).", complete["note"] or pairs_text(complete["pairs"]), complete["verdict"]),
        ("Wall-clock: MW speeds up about linearly in R; gossip about linearly in V."
         + (" (Simulated runs: on the virtual clock.)" if simulated else ""), scaling_text(scaling), scaling["verdict"]),
        ("Communication: MW needs fewer bytes than gossip to reach the target, except on small-diameter graphs "
         "with extreme heterogeneity; MW-1 needs the fewest.",
         "; ".join(f"gossip {rate}: {sum(p['verdict'] == claims.SUPPORTED for p in c['pairs'] if not p['role'].startswith('exception'))}"
                   f" of {sum(not p['role'].startswith('exception') for p in c['pairs'])} comparisons supported"
                   for rate, c in by_rate.items()) or "no MW/gossip pairs", bytes_verdict),
    ]
    plan_lines = []
    if targets:
        scaling_json = os.path.join(out_dir, "scaling", "scaling.json")  # claim 3's own runs (analysis/scaling.py)
        timing_series = verdicts.load_series(scaling_json) if os.path.exists(scaling_json) else None
        plan_lines, plan_verdicts, plan_results = verdicts.report_section(groups, [*targets, verdicts.AREA], metric,
                                                                           diameters, timing_series)
        with open(os.path.join(out_dir, "verdicts.json"), "w") as f:  # every number of the verdict section
            json.dump(verdicts.plain(dict(metric=metric, targets=list(targets), claims=plan_results)), f, indent=1)
        plan_lines += ["The sections after the setting are the previous report's unpaired analysis at the single target "
                       f"{target:g}, kept as a secondary comparison (the plan's verdicts above decide).", ""]
    throughput_png = os.path.join(out_dir, "figures", "throughput.png")
    if scaling["series"]:
        plots.draw_throughput(scaling["series"], throughput_png)
    loads = [launch["load_before"] for launch in launches]
    seconds = [launch["seconds"] for launch in launches]
    cpu = [launch["cpu_s"] for launch in launches if "cpu_s" in launch]
    seeds = sorted({r["config"]["seed"] for r in runs})
    md = [f"# {title}", "",
          f"Written on {datetime.date.today().isoformat()} from {len(runs)} finished runs ({len(seeds)} seed"
          f"{'s' * (len(seeds) > 1)}: {', '.join(map(str, seeds))}); `{command}` rewrites it from the runs on disk."
          + (f" The {len(seconds)} {'simulate.py runs' if simulated else 'mpirun launches'} took "
             f"{sum(seconds) / 60:.1f} min in all, start-up included"
             + (f", {sum(cpu) / 60:.1f} min of CPU" + (f" in the {len(cpu)} that record it" if len(cpu) < len(seconds) else "")
                if cpu else "")
             + (grid_span_text(launches) if simulated else "")
             + " (launch.json of each run)." if seconds else "")
          + (f" Machine: {cores} cores; 1-minute load average before each run {min(loads):.1f}..{max(loads):.1f}."
             " A load average above the core count means other processes shared the cores: wall-clock and "
             "throughput figures are then lower than the machine can do, iteration and byte counts are not affected."
             if cores and loads else ""), "",
          *(missing_lines(missing) if missing else []),
          *(few_seeds_lines(len(seeds)) if len(seeds) < inference.MIN_SEEDS else []),
          *(plan_lines if targets else []),
          *(["## Setting", "", *notes, ""] if notes else []),
          *(simulation_section(runs, metric, target) if simulated else []),
          "How the numbers are computed (runs.eval_curve, claims.to_target): all ranks' event logs are merged on "
          "one clock; at each evaluation of node 0's model, *iterations* = update events of all ranks up to that time, "
          "*bytes* = bytes of all transfer events up to that time. *X to target* is X at the first evaluation that "
          "reaches the target (so its resolution is the evaluation interval). *updates/s* = (update events - 1) / "
          "(time of the last - time of the first).", "",
          "Verdict rules (claims.py): " + claims.rules_text(metric, target), "",
          "## Claims", "",
          "| # | claim (SEMANTICS.md §8) | measured: A/B ratio of means [95% CI] | verdict |", "|---|---|---|---|"]
    md += [f"| {i} | {claim} | {measured} | **{verdict}** |" for i, (claim, measured, verdict) in enumerate(rows, 1)]
    md += ["", "## 1. Cycle: iterations to target", "", cycle["note"] or claims.pair_table(cycle["pairs"]),
           "", "## 2. Complete graph: iterations to target", "", complete["note"] or claims.pair_table(complete["pairs"]),
           "", "## 3. Wall-clock: throughput against R and V", "", claims.scaling_table(scaling["rows"])]
    if scaling["series"]:
        md += ["", f"![throughput](figures/{os.path.basename(throughput_png)})"]
    md += ["", "## 4. Communication: bytes to target", "",
           f"Settings in the exception: {', '.join(short(k) for k in sorted(exception)) or 'none'}."]
    for rate, c in by_rate.items():
        md += ["", f"### gossip {rate}: **{c['verdict']}**", "", claims.pair_table(c["pairs"])]
    md += ["", "## Figures", "",
           "Test loss and accuracy of the evaluated model against time, iterations, GB sent (log scale) and "
           "cumulative compute time; the title gives the seeds per curve. The plotted curves are in the CSV beside each PNG."]
    for key, png in figures.items():
        md += ["", f"### {runs_lib.setting_title(key)} (diameter {diameters[key]})", "",
               f"![{runs_lib.setting_title(key)}](figures/{os.path.basename(png)})"]
    many_nodes = os.path.join(REPO, "reports", "many_nodes.md")
    if os.path.exists(many_nodes):  # the simulator's study of the same claims on graphs of 20 to 100 nodes
        link = os.path.relpath(many_nodes, out_dir)
        md += ["", "## Large graphs (simulated)", "",
               f"The same four claims at V = 20, 50 and 100, on the simulator's virtual clock: [{link}]({link})."]
    md += ["", "## Runs", "",
           "Every run folder and its own numbers; the tables above are built from these.", "",
           f"| run | algorithm | setting | seed | iterations | bytes sent | wall s | final acc | iterations to target "
           "| bytes to target | s to target | updates/s | load before |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: r["dir"]):
        s, cfg = run["summary"], run["config"]
        to = {m: claims.to_target(run, m, metric, target) for m in ("iterations", "bytes", "time")}
        md.append(f"| `{run['dir']}` | {runs_lib.algorithm_label(cfg)} | {runs_lib.setting_title(runs_lib.setting_key(cfg))} | "
                  f"{cfg['seed']} | {s['iterations']} | {s['bytes_sent']} | {s['wall_time_s']:.1f} | "
                  f"{s['final_test_accuracy']:.4f} | " + " | ".join(
                      ("≥" if censored else "") + (f"{value:.2f}" if m == "time" else f"{value:.0f}")
                      for m, (value, censored) in to.items())
                  + f" | {cell(run['updates_per_s'], '{:.1f}')} | {cell((run['launch'] or {}).get('load_before'), '{:.1f}')} |")
    with open(os.path.join(out_dir, "REPORT.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    return plan_verdicts if targets else {i: verdict for i, (_, _, verdict) in enumerate(rows, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run directories, or directories holding run directories")
    parser.add_argument("--metric", default="test_accuracy", choices=runs_lib.METRICS,
                        help="the evaluated metric the target is on (losses: reaching means <=)")
    parser.add_argument("--target", type=float, default=0.9, help="the value of --metric the claims measure against")
    parser.add_argument("--out", required=True, help="folder for REPORT.md and figures/ (e.g. runs/<name>/report)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not os.path.isdir(p)]
    if missing:
        print(f"error: {missing[0]} is not a folder", file=sys.stderr)
        return 2
    runs = runs_lib.find_runs(args.paths)
    if not runs:
        print(f"error: no finished runs under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    try:
        verdicts = write_report(runs, args.metric, args.target, args.out, "Reproduction report",
                                "python " + " ".join(sys.argv))
    except ValueError as e:  # a metric the runs do not log
        print(f"error: {e}", file=sys.stderr)
        return 2
    for number, verdict in verdicts.items():
        print(f"claim {number}: {verdict}")
    print(f"wrote {os.path.join(args.out, 'REPORT.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
