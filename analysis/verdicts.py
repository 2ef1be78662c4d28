"""
The verdicts of docs/analysis_plan.md: each claim's primary tests, judged with inference.py (paired by
seed, Holm within the claim, equivalence, censoring), per measure (three targets and the error area), and
the front table a reader of the paper can use. claims.py's unpaired analysis stays as the secondary
"previous report" comparison.

groups = run_records.group_runs(runs): {setting key (kind, V, split, task): {label: [runs over seeds]}}.
A measure is a target (X to target, censored when never reached) or AREA (mean error over X up to the
pair's common horizon, X = iterations or bytes).
"""
import json

import numpy as np
from scipy import stats

from analysis import claims
from analysis import inference
from core import run_records as runs_lib

AREA = "area"
PRIMARY_GOSSIP = "authors-like"   # the gossip rate of the primary tests (run_records.gossip_rate)
SUPPORTED, CONTRADICTED, NO_DIFFERENCE, INCONCLUSIVE = "supported", "contradicted", "no difference", "inconclusive"
TARGET_DEPENDENT = "target-dependent"
EXCEPTION_DIAMETER, EXCEPTION_ALPHA = 2, 0.1


def measure_name(measure):
    return "error area" if measure == AREA else f"to {measure:g}"


def by_seed(runs):
    return {run["config"]["seed"]: run for run in runs}


def with_curve(run, model):
    """The run as judged on `model`: node 0's curve, or gossip's network average (secondary)."""
    if model == "network_average" and run.get("average_curve") is not None:
        return dict(run, curve=run["average_curve"])
    return run


def pair_values(a_runs, b_runs, axis, measure, metric):
    """([(value, censored)] for A, the same for B) over the seeds both have, in seed order."""
    a, b = by_seed(a_runs), by_seed(b_runs)
    seeds = sorted(set(a) & set(b))
    if measure != AREA:
        return ([claims.to_target(a[s], axis, metric, measure) for s in seeds],
                [claims.to_target(b[s], axis, metric, measure) for s in seeds], seeds)
    out_a, out_b = [], []
    for s in seeds:
        horizon = min(a[s]["curve"][axis][-1], b[s]["curve"][axis][-1])
        out_a.append((inference.error_area(a[s]["curve"][axis], a[s]["curve"][metric], horizon), False))
        out_b.append((inference.error_area(b[s]["curve"][axis], b[s]["curve"][metric], horizon), False))
    return out_a, out_b, seeds


def comparison(groups, key, a_label, b_label, axis, measure, metric, role="", model="node0"):
    a_runs = [with_curve(r, model) for r in groups[key][a_label]]
    b_runs = [with_curve(r, model) for r in groups[key][b_label]]
    a, b, seeds = pair_values(a_runs, b_runs, axis, measure, metric)
    return dict(key=key, a_label=a_label, b_label=b_label, axis=axis, measure=measure, role=role, seeds=seeds,
                a=a, b=b, **inference.compare(a, b))


def primary_gossip(algos):
    labels = [label for label, runs in algos.items()
              if runs_lib.is_gossip(label) and runs_lib.gossip_rate(runs[0]["config"]) == PRIMARY_GOSSIP]
    return labels[0] if labels else None


def summarize(per_measure):
    """A claim's summary over its measures (plan: agree everywhere, or target-dependent)."""
    values = list(per_measure.values())
    if values and len(set(values)) == 1:
        return values[0]
    return TARGET_DEPENDENT if {SUPPORTED, CONTRADICTED, NO_DIFFERENCE} & set(values) else INCONCLUSIVE


def all_better(comps):
    v = [c["verdict"] for c in comps]
    if not v:
        return INCONCLUSIVE
    if all(x == inference.A_BETTER for x in v):
        return SUPPORTED
    if inference.B_BETTER in v:
        return CONTRADICTED
    if all(x == inference.EQUIVALENT for x in v):
        return NO_DIFFERENCE
    return INCONCLUSIVE


def claim_cycle(groups, measures, metric, model="node0"):
    """1. MW-1 vs gossip, iterations, on every cycle setting."""
    comps = [comparison(groups, key, "MW-1", primary_gossip(algos), "iterations", m, metric, model=model)
             for key, algos in groups.items() if key[0] == "cycle" and "MW-1" in algos and primary_gossip(algos)
             for m in measures]
    inference.judge_family(comps)
    per = {m: all_better([c for c in comps if c["measure"] == m]) for m in measures}
    return dict(comparisons=comps, per_measure=per, verdict=summarize(per) if comps else INCONCLUSIVE)


def crossover(key_runs, walks, metric, measure):
    """R* on one setting: where the least-squares line of mean log(MW-R/gossip) in log R crosses 0, with a
    paired bootstrap (percentile) interval over seeds; None when a cell is censored or the line is flat."""
    cells = []
    for r in walks:
        a, b, seeds = pair_values(key_runs[f"MW-{r}"], key_runs["gossip"], "iterations", measure, metric)
        if any(c for _, c in a + b):
            return None
        cells.append(dict(zip(seeds, np.log([v for v, _ in a]) - np.log([v for v, _ in b]))))
    seeds = sorted(set.intersection(*(set(c) for c in cells)))
    if len(seeds) < 3:
        return None
    data = np.array([[c[s] for s in seeds] for c in cells])  # walks x seeds
    x = np.log(walks)

    def r_star(*per_walk):
        slope, intercept = np.polyfit(x, [np.mean(v) for v in per_walk], 1)
        return float(np.exp(-intercept / slope)) if slope != 0 else np.nan

    estimate = r_star(*data)
    boot = stats.bootstrap(tuple(data), r_star, paired=True, vectorized=False, method="percentile",
                           n_resamples=inference.RESAMPLES, random_state=np.random.default_rng(inference.BOOTSTRAP_SEED))
    low, high = boot.confidence_interval
    return dict(r_star=estimate, low=float(low), high=float(high),
                within=bool(np.isfinite(estimate) and min(walks) <= estimate <= max(walks)))


def claim_complete(groups, measures, metric, model="node0"):
    """2. On the complete graph: (i) MW-Rmax vs MW-1 per alpha; (ii) the double ratio of MW-R/gossip between the
    smallest and the largest alpha, for R = 1 and Rmax. R* per alpha beside it."""
    keys = [k for k, algos in groups.items() if k[0] == "complete" and "MW-1" in algos and primary_gossip(algos)]
    if not keys:
        return dict(comparisons=[], per_measure={}, verdict=INCONCLUSIVE, crossovers={})
    walks = sorted({runs_lib.walks_of(l) for k in keys for l in groups[k] if not runs_lib.is_gossip(l)})
    r_max = max(walks)
    by_alpha = sorted(keys, key=lambda k: runs_lib.split_alpha(k[2]))
    comps = []
    for m in measures:
        if r_max > 1:
            comps += [comparison(groups, k, f"MW-{r_max}", "MW-1", "iterations", m, metric, "R moves it", model)
                      for k in keys if f"MW-{r_max}" in groups[k]]
        if len(by_alpha) > 1:
            low, high = by_alpha[0], by_alpha[-1]
            for r in sorted({1, r_max}):
                label = f"MW-{r}"
                if label in groups[low] and label in groups[high]:
                    g_low, g_high = primary_gossip(groups[low]), primary_gossip(groups[high])
                    a1, b1, s1 = pair_values([with_curve(x, model) for x in groups[low][label]],
                                             [with_curve(x, model) for x in groups[low][g_low]], "iterations", m, metric)
                    a2, b2, s2 = pair_values([with_curve(x, model) for x in groups[high][label]],
                                             [with_curve(x, model) for x in groups[high][g_high]], "iterations", m, metric)
                    common = sorted(set(s1) & set(s2))
                    pick = lambda vals, seeds: [vals[seeds.index(s)] for s in common]
                    result = inference.double_ratio(pick(a1, s1), pick(b1, s1), pick(a2, s2), pick(b2, s2))
                    comps.append(dict(key=(low, high), a_label=f"{label}/gossip at {low[2]}",
                                      b_label=f"{label}/gossip at {high[2]}", axis="iterations", measure=m,
                                      role="heterogeneity moves it", seeds=common,
                                      **(result or dict(n=len(common), effect=float("nan"), low=float("nan"),
                                                        high=float("nan"), p=None, tost_p=None,
                                                        method="not computable: a censored cell"))))
    inference.judge_family(comps)
    per = {}
    for m in measures:
        mine = [c for c in comps if c["measure"] == m]
        moved = {role: any(c["verdict"] in (inference.A_BETTER, inference.B_BETTER) for c in mine if c["role"] == role)
                 for role in ("R moves it", "heterogeneity moves it")}
        if all(moved.values()):
            per[m] = SUPPORTED
        elif mine and all(c["verdict"] == inference.EQUIVALENT for c in mine):
            per[m] = CONTRADICTED
        else:
            per[m] = INCONCLUSIVE
    crossovers = {}
    for k in by_alpha:
        runs = {label: rs for label, rs in groups[k].items() if not runs_lib.is_gossip(label)}
        runs["gossip"] = groups[k][primary_gossip(groups[k])]
        crossovers[k] = {m: crossover(runs, [w for w in walks if f"MW-{w}" in runs], metric, m)
                         for m in measures} if len(runs) > 2 else {}
    return dict(comparisons=comps, per_measure=per, verdict=summarize(per), crossovers=crossovers)


def claim_bytes(groups, measures, metric, diameters, model="node0"):
    """4. (a) MW-1 vs gossip outside the exception, (b) inside it (MW-1 must not win); (c) MW-1 vs MW-R, its own verdict."""
    main, fewest = [], []
    for key, algos in groups.items():
        gossip = primary_gossip(algos)
        if key[0] not in ("cycle", "complete") or "MW-1" not in algos:
            continue
        exception = diameters[key] <= EXCEPTION_DIAMETER and runs_lib.split_alpha(key[2]) <= EXCEPTION_ALPHA
        for m in measures:
            if gossip:
                main.append(comparison(groups, key, "MW-1", gossip, "bytes", m, metric,
                                       "exception" if exception else "", model))
            if key[0] == "complete":
                fewest += [comparison(groups, key, "MW-1", label, "bytes", m, metric, "MW-1 fewest")
                           for label in algos if label != "MW-1" and not runs_lib.is_gossip(label)]
    inference.judge_family(main)
    inference.judge_family(fewest)
    per = {}
    for m in measures:
        outside = [c for c in main if c["measure"] == m and c["role"] != "exception"]
        inside = [c for c in main if c["measure"] == m and c["role"] == "exception"]
        if any(c["verdict"] == inference.B_BETTER for c in outside) or any(c["verdict"] == inference.A_BETTER for c in inside):
            per[m] = CONTRADICTED
        elif outside and all(c["verdict"] == inference.A_BETTER for c in outside):
            per[m] = SUPPORTED
        else:
            per[m] = INCONCLUSIVE
    per_fewest = {m: all_better([c for c in fewest if c["measure"] == m]) for m in measures}
    return dict(comparisons=main, per_measure=per, verdict=summarize(per) if main else INCONCLUSIVE,
                fewest=dict(comparisons=fewest, per_measure=per_fewest,
                            verdict=summarize(per_fewest) if fewest else INCONCLUSIVE))


def load_series(path):
    """scaling.json's series with its keys as numbers again: {name: {x: {seed: rate}}}."""
    with open(path) as f:
        series = json.load(f)["series"]
    return {name: {int(x): {int(s): rate for s, rate in by_seed.items()} for x, by_seed in by_x.items()}
            for name, by_x in series.items()}


def claim_scaling(series, linear=0.8):
    """3. series: {name: {x: {seed: rate}}}; each series' largest x against its smallest, paired by seed, against
    linear x ideal; Holm over the series (one-sided tests both ways)."""
    points = []
    for name, by_x in series.items():
        xs = sorted(by_x)
        if len(xs) < 2:
            continue
        base, top = by_x[xs[0]], by_x[xs[-1]]
        seeds = sorted(set(base) & set(top))
        s = inference.speedup([base[k] for k in seeds], [top[k] for k in seeds], ideal=xs[-1] / xs[0], linear=linear)
        points.append(dict(series=name, x=xs[-1], base_x=xs[0], seeds=seeds, **s))
    up = inference.holm([p["p_linear"] for p in points])
    down = inference.holm([p["p_sublinear"] for p in points])
    for p, u, d in zip(points, up, down):
        p["verdict"] = ("about linear" if len(p["seeds"]) >= inference.MIN_SEEDS and u < inference.ALPHA else
                        "below linear" if len(p["seeds"]) >= inference.MIN_SEEDS and d < inference.ALPHA else INCONCLUSIVE)
    verdicts = [p["verdict"] for p in points]
    verdict = (SUPPORTED if verdicts and all(v == "about linear" for v in verdicts) else
               CONTRADICTED if "below linear" in verdicts else INCONCLUSIVE)
    return dict(points=points, verdict=verdict)


# -----------------------------------------------------------------------------
# the front table

WORDS = {
    1: "MW has better convergence in terms of iterations as compared to Asynchronous Gossip in graphs with large "
       "diameters (e.g., cycles)",
    2: "its relative performance, as compared to Asynchronous Gossip, depends on the number of walks and the data "
       "heterogeneity in graphs with small diameters (e.g., complete graphs)",
    3: "we observe a linear speed-up with the number of walks and nodes in MW and Asynchronous Gossip, respectively",
    4: "MW outperforms Asynchronous Gossip in communication overhead, except in small-diameter topologies with "
       "extreme data heterogeneity",
    "4c": "MW-1 needs the fewest bytes (SEMANTICS.md §8's reading of the figures, not the abstract's words)",
}
TESTS = {
    1: "MW-1 vs gossip, iterations, cycle, each alpha; paired, Holm",
    2: "MW-Rmax vs MW-1 per alpha; (MW-R/gossip) between alphas for R = 1, Rmax; paired, Holm",
    3: "speed-up at the largest R / V against 0.8 x linear; paired, Holm",
    4: "MW-1 vs gossip, bytes, cycle + complete outside the exception; inside it MW-1 must not win",
    "4c": "MW-1 vs MW-R, bytes, complete, each alpha",
}
DEPENDS = {1: "gossip's exchange rate (primary: the authors')", 2: "gossip's exchange rate",
           3: "compute time, link bandwidth, engine timing (sensitivity table)",
           4: "gossip's exchanges per update, bytes per model (sensitivity table)", "4c": "none (MW only)"}


def effect_text(comps, measure):
    mine = [c for c in comps if c["measure"] == measure]
    return "; ".join(f"{c['a_label']}/{c['b_label']} {c['key'][2] if isinstance(c['key'][0], str) else ''}: "
                     f"{c['effect']:.2f} [{c['low']:.2f}, {c['high']:.2f}]" for c in mine) or "—"


def front_table(results, measures):
    """Markdown: one row per claim with the paper's words, the test, the effect per measure, the verdicts."""
    lines = ["| # | the paper's words | primary test | effect A/B [95% CI] per measure | verdict per measure "
             "| holds at every measure | depends on |", "|---|---|---|---|---|---|---|"]
    for number, result in results.items():
        if number == 3:
            effect = "; ".join(f"{p['series']}: {p['speedup']:.2f} [{p['low']:.2f}, {p['high']:.2f}] of ideal "
                               f"{p['ideal']:g}" for p in result["points"]) or "—"
            per = result["verdict"]
            holds = "—"
        else:
            effect = "<br>".join(f"{measure_name(m)}: {effect_text(result['comparisons'], m)}" for m in measures)
            per = "<br>".join(f"{measure_name(m)}: {v}" for m, v in result["per_measure"].items())
            holds = "yes" if len(set(result["per_measure"].values())) == 1 else "no"
        lines.append(f"| {number} | \"{WORDS[number]}\" | {TESTS[number]} | {effect} | {per} (**{result['verdict']}**) "
                     f"| {holds} | {DEPENDS[number]} |")
    return "\n".join(lines)


def comparison_table(comps):
    """Markdown: every comparison of a family with its seeds, effect, interval, p-values and verdict."""
    if not comps:
        return "(no runs for these comparisons)"
    lines = ["| setting | A | B | measure | seeds | censored A/B | A/B [95% CI] | BCa bootstrap | p (Holm) "
             "| TOST p (Holm) | verdict | method |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comps:
        setting = (runs_lib.setting_title(c["key"]) if isinstance(c["key"][0], str)
                   else " vs ".join(runs_lib.setting_title(k) for k in c["key"]))
        p = "—" if c.get("p_adj") is None else f"{c['p_adj']:.3g}"
        tost = "—" if c.get("tost_adj") is None else f"{c['tost_adj']:.3g}"
        lines.append(f"| {setting} | {c['a_label']} | {c['b_label']} | {c['axis']} {measure_name(c['measure'])} | "
                     f"{c['n']} | {c.get('censored_a', 0)}/{c.get('censored_b', 0)} | {c['effect']:.2f} "
                     f"[{c['low']:.2f}, {c['high']:.2f}] | [{c.get('boot_low', float('nan')):.2f}, "
                     f"{c.get('boot_high', float('nan')):.2f}] | {p} | {tost} | {c['verdict']} | {c['method']} |")
    return "\n".join(lines)


def report_section(groups, measures, metric, diameters, timing_series=None):
    """The report's front section: the front table, then each claim's comparisons, then the secondary analysis
    of gossip's network average (where the runs logged it). Returns (markdown lines, {claim: verdict}, the
    results the verdicts come from: {claim: dict of comparisons, per-measure verdicts, verdict})."""
    seeds = min((len(rs) for algos in groups.values() for rs in algos.values()), default=0)
    results = {1: claim_cycle(groups, measures, metric), 2: claim_complete(groups, measures, metric)}
    if timing_series:
        results[3] = claim_scaling(timing_series)
    results[4] = claim_bytes(groups, measures, metric, diameters)
    results["4c"] = results[4]["fewest"]
    lines = ["## Verdicts (docs/analysis_plan.md)", ""]
    if seeds < inference.MIN_SEEDS:
        lines += [f"**{seeds} seed{'s' * (seeds != 1)} per curve carr{'ies' if seeds == 1 else 'y'} no verdict**: the plan needs at least "
                  f"{inference.MIN_SEEDS} (10 for the primary tests), so every verdict below is inconclusive by rule "
                  "and the effects are shown only as a check of the pipeline.", ""]
    lines += [front_table(results, measures), ""]
    if 3 not in results:
        lines += ["Claim 3 is judged on its own timing-only runs (`analysis/scaling.py`, whose scaling.json in this "
                  "report's scaling/ folder puts it in this table), not on these.", ""]
    else:
        lines += ["### Claim 3: speed-up in R and V (timing-only runs, [scaling/scaling.md](scaling/scaling.md)): "
                  f"**{results[3]['verdict']}**", "",
                  "| series | x vs base | speed-up [95% CI] | of linear | verdict |", "|---|---|---|---|---|",
                  *[f"| {p['series']} | {p['x']} vs {p['base_x']} | {p['speedup']:.2f} [{p['low']:.2f}, {p['high']:.2f}] "
                    f"| {p['efficiency']:.0%} | {p['verdict']} |" for p in results[3]["points"]], ""]
    for number, title in ((1, "Claim 1: MW-1 vs gossip on the cycle, iterations"),
                          (2, "Claim 2: the complete graph, iterations"),
                          (4, "Claim 4: MW-1 vs gossip, bytes"), ("4c", "MW-1 fewest: MW-1 vs MW-R, bytes")):
        lines += [f"### {title}: **{results[number]['verdict']}**", "", comparison_table(results[number]["comparisons"]), ""]
        if number == 2:
            for key, by_measure in results[2]["crossovers"].items():
                text = "; ".join(f"{measure_name(m)}: " + ("not computable (a censored cell)" if x is None else
                                 f"{x['r_star']:.1f} [{x['low']:.1f}, {x['high']:.1f}]" + ("" if x["within"] else
                                                                                          " (outside the R tested)"))
                                 for m, x in by_measure.items())
                lines += [f"- R* on {runs_lib.setting_title(key)}: {text}"]
            lines += [""]
    averaged = any(r.get("average_curve") is not None for algos in groups.values() for rs in algos.values() for r in rs)
    if averaged:
        secondary = claim_cycle(groups, measures, metric, model="network_average")
        lines += ["### Secondary: claim 1 with gossip's network average (not a verdict)", "",
                  f"Summary by the claim-1 rule: {secondary['verdict']}.", "", comparison_table(secondary["comparisons"]), ""]
    return lines, {number: result["verdict"] for number, result in results.items()}, results


def plain(value):
    """The results as JSON can hold them: setting keys as their titles, numpy numbers as Python's, NaN as None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple) and len(value) == 4 and isinstance(value[0], str):
        return runs_lib.setting_title(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value
