"""
REPORT.md from finished runs: the four claims of SPEC §8, the measured figures
that test each one, and a verdict computed from those figures by the rules
written into the report (never typed in by hand).

    python report.py runs/cpu --target 0.9 --out reports/cpu

Every number comes from the runs' event logs (plots.run_curve) and summary.json;
the report's last table lists every run directory with its own numbers.
"""
import argparse
import datetime
import os
import sys

import numpy as np

import plots

LINEAR_EFFICIENCY = 0.75      # "about linear": speed-up at least 75% of ideal
SMALL_DIAMETER = 2            # claim 4's exception: diameter <= 2 ...
EXTREME_ALPHA = 0.1           # ... and Dirichlet alpha <= 0.1


# -----------------------------------------------------------------------------
# per-run measures

def run_measures(run, target):
    """Where node 0's evaluated model first reaches `target` accuracy (None if never), and throughput."""
    curve, summary = run["curve"], run["summary"]
    hit = np.flatnonzero(curve["accuracy"] >= target)
    first = int(hit[0]) if len(hit) else None
    updates = curve["update_times"]
    span = updates[-1] - updates[0] if len(updates) > 1 else 0.0
    launch = run["launch"] or {}
    return dict(
        iterations_to_target=None if first is None else int(curve["iterations"][first]),
        bytes_to_target=None if first is None else int(curve["bytes"][first]),
        time_to_target=None if first is None else float(curve["time"][first]),
        updates_per_s=(len(updates) - 1) / span if span > 0 else None,
        mean_update_s=summary["compute_time"] / summary["iterations"] if summary["iterations"] else None,
        cores=launch.get("cores"), load_before=launch.get("load_before"))


def seed_values(runs, key):
    return [run["measures"][key] for run in runs]


def mean(values):
    return float(np.mean(values))


def beats(a, b):
    """a needs less than b in every pair of seeds (ranges do not overlap); never reaching is infinite."""
    a = [np.inf if v is None else v for v in a]
    b = [np.inf if v is None else v for v in b]
    return max(a) < min(b)


def order(a, b):
    return "<" if beats(a, b) else ">" if beats(b, a) else "~"


def fmt_values(values, scale=1.0, digits=0):
    """'mean ± std (seed values)' over the seeds that reached the target."""
    reached = [v / scale for v in values if v is not None]
    if not reached:
        return f"not reached ({len(values)} seed{'s' * (len(values) > 1)})"
    text = f"{np.mean(reached):.{digits}f}"
    if len(reached) > 1:
        text += f" ± {np.std(reached):.{digits}f}"
    if len(reached) < len(values):
        text += f" (reached in {len(reached)}/{len(values)} seeds)"
    return text


def is_gossip(label):
    return not label.startswith("MW-")


def walks(label):
    return int(label[3:])


# -----------------------------------------------------------------------------
# the claims; each returns (measured text, verdict, markdown details)

def comparison_table(groups, settings, metric, scale, digits, unit):
    if not settings:
        return "(the grid has no runs for this claim)"
    lines = [f"| setting | algorithm | {unit} to target (mean ± std over seeds) | per seed | vs gossip |",
             "|---|---|---|---|---|"]
    for key in settings:
        gossips = [label for label in groups[key] if is_gossip(label)]
        for label, runs in groups[key].items():
            values = seed_values(runs, metric)
            versus = "" if is_gossip(label) else ", ".join(
                f"{order(values, seed_values(groups[key][g], metric))} {g}" for g in gossips)
            per_seed = ", ".join("—" if v is None else f"{v / scale:.{digits}f}" for v in values)
            lines.append(f"| {plots.setting_title(key)} | {label} | {fmt_values(values, scale, digits)} | "
                         f"{per_seed} | {versus} |")
    return "\n".join(lines)


def mw_versus_gossip(groups, settings, metric):
    """[(setting, MW label, gossip label, '<' | '>' | '~')] for every MW-R and gossip curve of each setting."""
    pairs = []
    for key in settings:
        for label, runs in groups[key].items():
            if not is_gossip(label):
                for g in (g for g in groups[key] if is_gossip(g)):
                    pairs.append((key, label, g, order(seed_values(runs, metric), seed_values(groups[key][g], metric))))
    return pairs


def short(key):
    kind, nodes, split, _ = key
    return f"{kind} V={nodes} {split}"


def setting_alpha(key):
    split = key[2]
    return float(split.split("=")[1]) if split.startswith("alpha=") else np.inf


def every_pair_verdict(outcomes):
    """Claims of the form 'A beats B in every pair'."""
    return "holds" if all(o == "<" for o in outcomes) else "does not hold" if ">" in outcomes else "inconclusive"


def iterations_on(groups, kind):
    """The settings on one graph kind, their MW/gossip pairs by iterations to target, and the table."""
    settings = [k for k in groups if k[0] == kind]
    return (settings, mw_versus_gossip(groups, settings, "iterations_to_target"),
            comparison_table(groups, settings, "iterations_to_target", 1, 0, "iterations"))


def claim_cycle(groups):
    settings, pairs, table = iterations_on(groups, "cycle")
    if not pairs:
        return "no cycle setting with both MW and gossip runs", "inconclusive", table
    verdict = every_pair_verdict([o for *_, o in pairs])
    measured = "; ".join(f"{short(key)}: " + ", ".join(
        f"{label} {fmt_values(seed_values(runs, 'iterations_to_target'))}" for label, runs in groups[key].items())
        for key in settings)
    return measured + " iterations to target", verdict, table


def claim_complete(groups):
    settings, pairs, table = iterations_on(groups, "complete")
    if not pairs:
        return "no complete-graph setting with both MW and gossip runs", "inconclusive", table
    max_walks = max(walks(label) for _, label, _, _ in pairs)
    min_alpha = min(setting_alpha(key) for key in settings)
    gossip_wins = [(key, label) for key, label, _, o in pairs if o == ">"]
    mw_wins = [(key, label) for key, label, _, o in pairs if o == "<"]
    gossip_wins_where_expected = [(key, label) for key, label in gossip_wins
                                  if walks(label) == max_walks or setting_alpha(key) == min_alpha]
    if gossip_wins_where_expected and mw_wins:
        verdict = "holds"
    elif not gossip_wins and all(o == "<" for *_, o in pairs):
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    measured = (f"gossip needs fewer iterations than {', '.join(f'{l} ({short(k)})' for k, l in gossip_wins) or 'no MW-R'}; "
                f"MW needs fewer in {', '.join(f'{l} ({short(k)})' for k, l in mw_wins) or 'no case'}; "
                f"{sum(o == '~' for *_, o in pairs)} of {len(pairs)} comparisons are ties")
    return measured, verdict, table


def scaling_verdict(points, ideal_of, bound_of):
    """points: [(x, mean rate)] with the base first. 'holds' if every speed-up is >= 75% of ideal;
    'inconclusive' if it is only >= 75% of what the machine's cores allow; else 'does not hold'."""
    if len(points) < 2:
        return "inconclusive", "only one value in the grid"
    base_x, base_rate = points[0]
    speedups = [(x, rate / base_rate) for x, rate in points[1:]]
    if all(s >= LINEAR_EFFICIENCY * ideal_of(base_x, x) for x, s in speedups):
        return "holds", ""
    if all(s >= LINEAR_EFFICIENCY * bound_of(base_x, x) for x, s in speedups):
        return "inconclusive", "the speed-up reaches what the cores allow, so linear scaling cannot be tested beyond them"
    return "does not hold", ""


def claim_wall_clock(groups, cores):
    """Updates/s against R (MW, per setting) and against V (gossip, same graph kind and split)."""
    def bound(n):
        return min(n, cores) if cores else n
    lines = ["| series | x | runs | updates/s (mean ± std) | speed-up | ideal | allowed by cores | mean wall time of an update (s) |",
             "|---|---|---|---|---|---|---|---|"]
    series = []  # (name, "R" or "V", [(x, runs over seeds)])
    for key, algos in groups.items():
        mw = sorted(((walks(label), runs) for label, runs in algos.items() if not is_gossip(label)), key=lambda p: p[0])
        if len(mw) > 1:
            series.append((f"MW-R on {short(key)}", "R", mw))
    by_kind = {}
    for key, algos in groups.items():
        for label, runs in algos.items():
            if is_gossip(label):
                by_kind.setdefault((key[0], key[2], key[3], label), []).append((key[1], runs))
    for (kind, split, task, label), points in by_kind.items():
        if len(points) > 1:
            series.append((f"{label} on {kind} {split}, V varies", "V", sorted(points, key=lambda p: p[0])))
    def update_s_of(runs):
        return mean([u for u in seed_values(runs, "mean_update_s") if u is not None])
    verdicts, measured, plot_series, update_times = [], [], [], []
    for name, axis, points in series:
        rates = [(x, [r for r in seed_values(runs, "updates_per_s") if r is not None], runs) for x, runs in points]
        rates = [(x, rs, runs) for x, rs, runs in rates if rs]
        if len(rates) < 2:
            continue
        base_x, base_rates, _ = rates[0]
        for x, rs, runs in rates:
            speedup = mean(rs) / mean(base_rates)
            update_s = update_s_of(runs)
            lines.append(f"| {name} | {axis}={x} | {', '.join(r['name'] for r in runs)} | {mean(rs):.1f} ± {np.std(rs):.1f} | "
                         f"{speedup:.2f} | {x / base_x:.2f} | {bound(x) / bound(base_x):.2f} | {update_s:.4f} |")
        verdict, why = scaling_verdict([(x, mean(rs)) for x, rs, _ in rates], lambda b, x: x / b,
                                       lambda b, x: bound(x) / bound(b))
        verdicts.append(verdict)
        measured.append(f"{name}: speed-up {mean(rates[-1][1]) / mean(base_rates):.2f} at {axis}={rates[-1][0]} "
                        f"vs {axis}={base_x} (ideal {rates[-1][0] / base_x:.0f}) → {verdict}" + (f" ({why})" if why else ""))
        plot_series.append((name, axis, [(x, mean(rs), np.std(rs)) for x, rs, _ in rates]))
        update_times.append(f"{update_s_of(rates[0][2]):.4f} s at {axis}={base_x} to "
                            f"{update_s_of(rates[-1][2]):.4f} s at {axis}={rates[-1][0]} ({name})")
    has_mw = any(axis == "R" for _, axis, _ in plot_series)
    has_gossip = any(axis == "V" for _, axis, _ in plot_series)
    if not (has_mw and has_gossip):
        missing = "R (MW)" if not has_mw else "V (gossip)"
        measured.append(f"the grid does not vary {missing}")
        verdicts.append("inconclusive")
    verdict = ("does not hold" if "does not hold" in verdicts else
               "holds" if all(v == "holds" for v in verdicts) else "inconclusive")
    table = "\n".join(lines) if series else "(the grid varies neither R nor V)"
    if cores and any(x > cores for _, _, points in plot_series for x, _, _ in points):
        table += (f"\n\nThis machine has {cores} cores, fewer than the busy ranks of the larger R and V, so those "
                  f"ranks time-share the cores: the wall time of one local update goes from "
                  f"{'; from '.join(update_times)}. Throughput can then grow at most about "
                  f"min(R, cores)-fold, and linear speed-up beyond {cores} cannot show on this machine.")
    return "; ".join(measured), verdict, table, plot_series


def claim_bytes(groups, diameters):
    exception = {key for key in groups if diameters[key] <= SMALL_DIAMETER and setting_alpha(key) <= EXTREME_ALPHA}
    pairs = mw_versus_gossip(groups, [k for k in groups if k not in exception], "bytes_to_target")
    mw1_pairs = []  # MW-1 against every other curve (gossip only outside the exception)
    for key, algos in groups.items():
        if "MW-1" in algos:
            for label, runs in algos.items():
                if label != "MW-1" and not (is_gossip(label) and key in exception):
                    mw1_pairs.append((key, label, order(seed_values(algos["MW-1"], "bytes_to_target"),
                                                        seed_values(runs, "bytes_to_target"))))
    table = comparison_table(groups, list(groups), "bytes_to_target", 1e6, 2, "MB")
    if not pairs or not mw1_pairs:
        return "the grid lacks MW/gossip pairs or MW-1 runs outside the exception", "inconclusive", table
    verdict = every_pair_verdict([o for *_, o in pairs] + [o for *_, o in mw1_pairs])
    fewer = sum(o == "<" for *_, o in pairs)
    measured = (f"MW needs fewer bytes than gossip in {fewer} of {len(pairs)} MW/gossip pairs outside the exception "
                f"(diameter <= {SMALL_DIAMETER} and alpha <= {EXTREME_ALPHA}: "
                f"{', '.join(short(k) for k in sorted(exception)) or 'none in grid'}); "
                f"MW-1 needs fewer than {sum(o == '<' for *_, o in mw1_pairs)} of {len(mw1_pairs)} other curves"
                + "".join(f"; {g} needs fewer than {label} on {short(key)}" for key, label, g, o in pairs if o == ">")
                + "".join(f"; {label} needs fewer than MW-1 on {short(key)}" for key, label, o in mw1_pairs if o == ">"))
    return measured, verdict, table


# -----------------------------------------------------------------------------
# the report

def draw_scaling(plot_series, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, axis in zip(axes, ("R", "V")):
        for name, series_axis, points in plot_series:
            if series_axis == axis:
                xs, means, stds = zip(*points)
                line = ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)[0]
                ax.plot(xs, [means[0] * x / xs[0] for x in xs], ls=":", color=line.get_color())
        ax.set_xlabel("walks R (MW)" if axis == "R" else "nodes V (gossip)")
        ax.set_ylabel("local updates per second (all nodes)")
        ax.set_title(f"throughput vs {axis} (dotted: linear speed-up)")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    plots.save_small_png(fig, path)
    plt.close(fig)


def graph_diameter(cfg):
    import graphs
    return graphs.graph_stats(graphs.build_graph(cfg["graph"], cfg["nodes"], er_p=cfg["er_p"], seed=cfg["seed"]))["diameter"]


def cell(value, fmt="{}"):
    return "—" if value is None else fmt.format(value)


def write_report(runs, target, out_dir, title, command):
    """REPORT.md and figures/ in out_dir; returns {claim number: verdict}."""
    for run in runs:
        run["measures"] = run_measures(run, target)
    groups = plots.group_runs(runs)
    figures = plots.draw_all(runs, os.path.join(out_dir, "figures"))
    diameters = {key: graph_diameter(next(iter(algos.values()))[0]["config"]) for key, algos in groups.items()}
    cores = max((r["measures"]["cores"] for r in runs if r["measures"]["cores"]), default=None)
    wall_clock = claim_wall_clock(groups, cores)
    claims = [
        ("On a cycle, MW reaches the target accuracy in fewer iterations than gossip.", *claim_cycle(groups)),
        ("On a complete graph the ordering depends on R and heterogeneity; gossip can win with many walks "
         "or extreme non-iid data (alpha = 0.1).", *claim_complete(groups)),
        ("Wall-clock: MW speeds up about linearly in R; gossip about linearly in V.", *wall_clock[:3]),
        ("Communication: MW needs fewer bytes than gossip to reach the target, except on small-diameter graphs "
         "with extreme heterogeneity; MW-1 needs the fewest.", *claim_bytes(groups, diameters)),
    ]
    scaling_png = os.path.join(out_dir, "figures", "throughput.png")
    if wall_clock[3]:
        draw_scaling(wall_clock[3], scaling_png)
    loads = [r["measures"]["load_before"] for r in runs if r["measures"]["load_before"] is not None]

    seconds = [r["launch"]["seconds"] for r in runs if r["launch"]]
    md = [f"# {title}", "",
          f"Written on {datetime.date.today().isoformat()} from {len(runs)} finished runs; `{command}` rewrites it "
          f"from the runs on disk."
          + (f" The {len(seconds)} mpirun launches took {sum(seconds) / 60:.1f} min in all, start-up included "
             f"(launch.json of each run)." if seconds else "") + " "
          f"Target: test accuracy **{target:g}** of the evaluated model (MW: node 0's global model x; gossip: node 0's "
          f"local model)."
          + (f" Machine: {cores} cores; 1-minute load average before each run {min(loads):.1f}..{max(loads):.1f}."
             " A load average above the core count means other processes shared the cores: wall-clock and "
             "throughput figures are then lower than the machine can do, iteration and byte counts are not affected."
             if cores and loads else ""), "",
          "How the numbers are computed (plots.run_curve, report.run_measures): all ranks' event logs are merged on "
          "one clock; at each evaluation of node 0's model, *iterations* = update events of all ranks up to that time, "
          "*bytes* = bytes of all transfer events up to that time. *X to target* is X at the first evaluation whose "
          "accuracy is at least the target (so its resolution is the evaluation interval); a run that never gets "
          "there counts as infinite. *updates/s* = (update events - 1) / (time of the last - time of the first).", "",
          "Verdict rules: algorithm A *beats* B when every seed of A needs less than every seed of B (the seed "
          "ranges do not overlap); otherwise the pair is a tie (~). Claims 1 and 4 *hold* when A beats B in every "
          "pair the claim names, *do not hold* when B beats A in any, and are *inconclusive* otherwise. Claim 2 holds "
          "when gossip beats MW-R for the largest R or at the smallest alpha on a complete graph and some MW-R beats "
          "gossip elsewhere there; it does not hold when MW beats gossip everywhere. Claim 3 holds when every "
          f"speed-up is at least {LINEAR_EFFICIENCY:.0%} of linear; it is inconclusive when the speed-up is only at "
          f"least {LINEAR_EFFICIENCY:.0%} of what the machine's cores allow (R or V busy ranks cannot run faster than "
          f"min(R, cores) ranks at once), and does not hold otherwise. Claim 4's exception: diameter <= "
          f"{SMALL_DIAMETER} and alpha <= {EXTREME_ALPHA}.", "",
          "## Claims", "",
          "| # | claim (SPEC §8) | measured | verdict |", "|---|---|---|---|"]
    md += [f"| {i} | {claim} | {measured} | **{verdict}** |" for i, (claim, measured, verdict, _) in enumerate(claims, 1)]
    headings = ["Cycle: iterations to target", "Complete graph: iterations to target",
                "Wall-clock: throughput against R and V", "Communication: bytes to target"]
    for i, ((_, _, _, details), heading) in enumerate(zip(claims, headings), 1):
        md += ["", f"## {i}. {heading}", "", details]
        if i == 3 and wall_clock[3]:
            md += ["", f"![throughput](figures/{os.path.basename(scaling_png)})"]
    md += ["", "## Figures", "",
           "Test loss and accuracy of the evaluated model against wall-clock time, iterations, GB sent (log scale) "
           "and cumulative compute time; mean and ±std band over seeds. The plotted curves are in the CSV beside each PNG."]
    for key, png in figures.items():
        md += ["", f"### {plots.setting_title(key)} (diameter {diameters[key]})", "",
               f"![{plots.setting_title(key)}](figures/{os.path.basename(png)})"]
    large_v = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reports", "large_v.md")
    if os.path.exists(large_v):  # the simulator's study of the same claims on graphs of 20 to 100 nodes
        md += ["", "## Large graphs (simulated)", "",
               f"The same four claims at V = 20, 50 and 100, on the simulator's virtual clock: "
               f"[{os.path.relpath(large_v, out_dir)}]({os.path.relpath(large_v, out_dir)}) "
               "(`python large_v.py` regenerates it)."]
    md += ["", "## Runs", "",
           "Every run directory and its own numbers; the tables above are means over these.", "",
           "| run | algorithm | setting | seed | iterations | bytes sent | wall s | final acc | iterations to target "
           "| bytes to target | s to target | updates/s | load before |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: r["dir"]):
        s, m, cfg = run["summary"], run["measures"], run["config"]
        md.append(f"| `{run['dir']}` | {plots.algorithm_label(cfg)} | {plots.setting_title(plots.setting_key(cfg))} | "
                  f"{cfg['seed']} | {s['iterations']} | {s['bytes_sent']} | {s['wall_time_s']:.1f} | "
                  f"{s['final_test_accuracy']:.4f} | {cell(m['iterations_to_target'])} | {cell(m['bytes_to_target'])} | "
                  f"{cell(m['time_to_target'], '{:.2f}')} | {cell(m['updates_per_s'], '{:.1f}')} | "
                  f"{cell(m['load_before'], '{:.1f}')} |")
    with open(os.path.join(out_dir, "REPORT.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    return {i: verdict for i, (_, _, verdict, _) in enumerate(claims, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run directories, or directories holding run directories")
    parser.add_argument("--target", type=float, default=0.9, help="test accuracy the claims measure against")
    parser.add_argument("--out", default=".", help="directory for REPORT.md and figures/")
    args = parser.parse_args(argv)
    runs = plots.find_runs([p for p in args.paths if os.path.isdir(p)])
    if not runs:
        print(f"error: no finished runs under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    verdicts = write_report(runs, args.target, args.out, "Reproduction report", "python " + " ".join(sys.argv))
    for number, verdict in verdicts.items():
        print(f"claim {number}: {verdict}")
    print(f"wrote {os.path.join(args.out, 'REPORT.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
