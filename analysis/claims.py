"""
The four claims of SEMANTICS.md §8 tested with statistics. report.py (MPI runs) and many_nodes.py
(simulated runs) use these rules and tables and no others.

Measures, one value per run (seed):
- X to target: X (iterations, bytes or seconds, all nodes) at the first evaluation of node 0's
  model whose METRIC reaches the target (>= for accuracies, <= for losses). A run that never
  reaches it is censored: it enters with X at its last evaluation, a lower bound (written ">= X").
- updates/s: local updates of all nodes per second, first to last update.

Per curve (one algorithm in one setting): the mean over seeds with a percentile bootstrap 95%
interval (10,000 resamples of the seeds, numpy's generator seeded with 0, so reruns agree).

Comparison "A needs less than B" (claims 1, 2, 4): ratio = mean(A) / mean(B); its interval
comes from resampling A's seeds and B's seeds independently.
    supported      the interval lies below 1 and every seed of A reached the target
    contradicted   the interval lies above 1 and every seed of B reached the target
    inconclusive   otherwise, and whenever a side has fewer than 2 seeds
A censored value understates what its run needs, which can only favour its side; so a side
must have reached the target in every seed to win. On the losing side it only narrows the gap.

Scaling "about linear" (claim 3): speed-up = mean rate(x) / mean rate(base) with its interval
(rates of x and of the base resampled independently); ideal = x / base.
    supported      the interval lies at or above LINEAR x ideal at every point of the series
    contradicted   the interval lies below LINEAR x ideal at some point, and also below LINEAR x
                   what the machine's cores allow (MPI runs: min(x, cores) / min(base, cores))
    inconclusive   otherwise (a series below linear but not below the core bound is core-bound)

A claim made of several comparisons holds when every one is supported, is contradicted when
any one is contradicted, and is inconclusive otherwise (claim 2 has its own rule, below).
"""
import numpy as np

import graphs
from core import run_records as runs_lib

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
MIN_SEEDS = 2
LINEAR = 0.8             # "about linear": at least 80% of the ideal speed-up
SMALL_DIAMETER = 2       # claim 4's exception: diameter <= 2 ...
EXTREME_ALPHA = 0.1      # ... and Dirichlet alpha <= 0.1
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
UNITS = dict(iterations=(1, 0, "iterations"), bytes=(1e6, 2, "MB"), time=(1, 2, "s"))  # scale, digits, unit


# -----------------------------------------------------------------------------
# measures

def check_metric(metric):
    if metric not in runs_lib.METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(runs_lib.METRICS)}")


def reaches(metric, values, target):
    values = np.asarray(values, dtype=float)
    return values <= target if metric.endswith("loss") else values >= target


def to_target(run, measure, metric, target):
    """(X at the first evaluation reaching the target, False) or (X at the last evaluation, True) if censored."""
    curve = run["curve"]
    if metric not in curve:
        logged = ", ".join(m for m in runs_lib.METRICS if m in curve) or "no metric"
        raise ValueError(f"run {run['name']} logs no {metric} in its eval events (it logs {logged})")
    if not len(curve["time"]):
        return 0.0, True
    hits = np.flatnonzero(reaches(metric, curve[metric], target))
    return (float(curve[measure][hits[0]]), False) if len(hits) else (float(curve[measure][-1]), True)


# -----------------------------------------------------------------------------
# bootstrap and verdicts

def resampled_means(values, rng):
    values = np.asarray(values, dtype=float)
    return values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)


def percentile_interval(samples):
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(values):
    """(mean, low, high): the mean over seeds and its bootstrap interval."""
    return (float(np.mean(values)), *percentile_interval(resampled_means(values, np.random.default_rng(BOOTSTRAP_SEED))))


def bootstrap_ratio(a, b):
    """(mean(a) / mean(b), low, high), a's and b's seeds resampled independently."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero mean gives inf or nan: never decisive
        samples = resampled_means(a, rng) / resampled_means(b, rng)
        ratio = float(np.mean(a) / np.mean(b))
    return (ratio, *percentile_interval(samples))


def compare(a, b):
    """Does A need less than B? a, b: [(value, censored)] over seeds. dict(ratio, low, high, verdict)."""
    ratio, low, high = bootstrap_ratio([v for v, _ in a], [v for v, _ in b])
    if min(len(a), len(b)) < MIN_SEEDS:
        verdict = INCONCLUSIVE
    elif high < 1 and not any(c for _, c in a):
        verdict = SUPPORTED
    elif low > 1 and not any(c for _, c in b):
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return dict(ratio=ratio, low=low, high=high, verdict=verdict)


def scaling(base_rates, rates, ideal, core_bound=None):
    """Speed-up of `rates` over `base_rates` against the ideal. dict(speedup, low, high, ideal, core_bound, verdict)."""
    speedup, low, high = bootstrap_ratio(rates, base_rates)
    if min(len(rates), len(base_rates)) < MIN_SEEDS:
        verdict = INCONCLUSIVE
    elif low >= LINEAR * ideal:
        verdict = SUPPORTED
    elif high < LINEAR * ideal and (core_bound is None or high < LINEAR * core_bound):
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return dict(speedup=speedup, low=low, high=high, ideal=ideal, core_bound=core_bound, verdict=verdict)


def all_of(verdicts):
    """Every part supported: supported; any contradicted: contradicted; else (or no parts) inconclusive."""
    verdicts = list(verdicts)
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return CONTRADICTED if CONTRADICTED in verdicts else INCONCLUSIVE


# -----------------------------------------------------------------------------
# the claims; groups = runs.group_runs(runs): {setting key: {label: [runs over seeds]}}

def pair(key, a_label, b_label, groups, measure, metric, target, role=""):
    a = [to_target(run, measure, metric, target) for run in groups[key][a_label]]
    b = [to_target(run, measure, metric, target) for run in groups[key][b_label]]
    return dict(key=key, a_label=a_label, b_label=b_label, a=a, b=b, role=role, measure=measure,
                **compare(a, b))


def mw_gossip_pairs(groups, keys, measure, metric, target):
    return [pair(key, mw, g, groups, measure, metric, target)
            for key in keys for mw in groups[key] if not runs_lib.is_gossip(mw)
            for g in groups[key] if runs_lib.is_gossip(g)]


def claim_cycle(groups, metric, target):
    """1. On a cycle, MW-R needs fewer iterations to the target than gossip, for every R."""
    pairs = mw_gossip_pairs(groups, [k for k in groups if k[0] == "cycle"], "iterations", metric, target)
    return dict(verdict=all_of(p["verdict"] for p in pairs), pairs=pairs,
                note="" if pairs else "no cycle setting with both MW and gossip runs")


def claim_complete(groups, metric, target):
    """2. On a complete graph the ordering depends on R and alpha. Supported when MW is significantly
    faster (iterations) in some pair and gossip is significantly faster in a pair with the largest R or
    at the smallest alpha of the complete settings; contradicted when one side is significantly faster
    in every pair (at least two); inconclusive otherwise."""
    keys = [k for k in groups if k[0] == "complete"]
    pairs = mw_gossip_pairs(groups, keys, "iterations", metric, target)
    if not pairs:
        return dict(verdict=INCONCLUSIVE, pairs=pairs, note="no complete-graph setting with both MW and gossip runs")
    max_walks = max(runs_lib.walks_of(p["a_label"]) for p in pairs)
    min_alpha = min(runs_lib.split_alpha(k[2]) for k in keys)
    for p in pairs:
        p["role"] = "largest R or smallest alpha" if (runs_lib.walks_of(p["a_label"]) == max_walks or
                                                       runs_lib.split_alpha(p["key"][2]) == min_alpha) else ""
    verdicts = [p["verdict"] for p in pairs]
    if SUPPORTED in verdicts and any(p["verdict"] == CONTRADICTED and p["role"] for p in pairs):
        verdict = SUPPORTED
    elif len(pairs) > 1 and len(set(verdicts)) == 1 and verdicts[0] != INCONCLUSIVE:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return dict(verdict=verdict, pairs=pairs, note="")


def setting_diameter(group):
    """Diameter of a setting's graph, from its first run's config (ER graphs are drawn from the seed)."""
    cfg = next(iter(group.values()))[0]["config"]
    return graphs.graph_stats(graphs.build_graph(cfg["graph"], cfg["nodes"], er_p=cfg["er_p"], seed=cfg["seed"]))["diameter"]


def claim_bytes(groups, metric, target, diameters):
    """4. MW-R needs fewer bytes to the target than gossip, except where diameter <= 2 and alpha <= 0.1,
    and MW-1 needs fewer than every other curve (gossip outside the exception). Judged once per
    gossip rate: {rate: dict(verdict, pairs)}, the MW-1-vs-MW-R pairs in each."""
    exception = {k for k in groups if diameters[k] <= SMALL_DIAMETER and runs_lib.split_alpha(k[2]) <= EXTREME_ALPHA}
    mw1_vs_mw = [pair(k, "MW-1", label, groups, "bytes", metric, target, "MW-1 fewest")
                 for k in groups if "MW-1" in groups[k] for label in groups[k]
                 if label != "MW-1" and not runs_lib.is_gossip(label)]
    by_rate = {}
    for key in groups:
        for g in groups[key]:
            if runs_lib.is_gossip(g):
                rate = runs_lib.gossip_rate(groups[key][g][0]["config"])
                role = "exception (not counted)" if key in exception else ""
                by_rate.setdefault(rate, []).extend(
                    pair(key, mw, g, groups, "bytes", metric, target, role) for mw in groups[key] if not runs_lib.is_gossip(mw))
    return {rate: dict(verdict=all_of(p["verdict"] for p in pairs + mw1_vs_mw if not p["role"].startswith("exception")),
                       pairs=pairs + mw1_vs_mw)
            for rate, pairs in by_rate.items()}, exception


def scaling_series(groups):
    """[(name, "R" or "V", [(x, runs)])]: MW over R within a setting; each gossip curve over V within a
    graph kind, split and task."""
    series, by_kind = [], {}
    for key, algos in groups.items():
        mw = sorted((runs_lib.walks_of(label), rs) for label, rs in algos.items() if not runs_lib.is_gossip(label))
        if len(mw) > 1:
            series.append((f"MW-R on {runs_lib.setting_title(key)}", "R", mw))
        for label, rs in algos.items():
            if runs_lib.is_gossip(label):
                by_kind.setdefault((key[0], key[2], key[3], label), []).append((key[1], rs))
    for (kind, split, task, label), points in by_kind.items():
        if len(points) > 1:
            series.append((f"{label} on {kind}, {split}, {task}, V varies", "V", sorted(points, key=lambda p: p[0])))
    return series


def claim_scaling(groups, cores=None):
    """3. Updates/s grows about linearly in R (MW) and in V (gossip). cores: the machine's, for MPI runs."""
    rows, verdicts, plotted = [], [], []
    for name, axis, points in scaling_series(groups):
        rates = [(x, [r["updates_per_s"] for r in rs if r["updates_per_s"]], rs) for x, rs in points]
        rates = [(x, rs, runs) for x, rs, runs in rates if rs]
        if len(rates) < 2:
            continue
        base_x, base_rates, _ = rates[0]
        simulated = all(runs_lib.is_simulated(r) for _, _, rs in rates for r in rs)
        bound = None if simulated or not cores else (lambda x: min(x, cores))
        points_out = []
        for x, rs, run_list in rates[1:]:
            point = scaling(base_rates, rs, x / base_x, bound and bound(x) / bound(base_x))
            points_out.append(point)
            rows.append(dict(series=name, axis=axis, x=x, base_x=base_x, seeds=len(rs), rates=rs,
                             mean_update_s=np.mean([r["summary"]["compute_time"] / r["summary"]["iterations"]
                                                    for r in run_list if r["summary"]["iterations"]]), **point))
        verdicts.append(all_of(p["verdict"] for p in points_out))
        plotted.append(dict(name=name, axis=axis, points=[(x, bootstrap_mean(rs)) for x, rs, _ in rates],
                            cores=None if simulated else cores))
    axes = {s["axis"] for s in plotted}
    note = "" if axes == {"R", "V"} else f"the runs do not vary {' and '.join(sorted({'R', 'V'} - axes))}"
    return dict(verdict=all_of(verdicts + [INCONCLUSIVE] * bool(note)), rows=rows, series=plotted, note=note)


# -----------------------------------------------------------------------------
# tables (markdown)

def fmt_value(value, measure, censored=False):
    scale, digits, _ = UNITS[measure]
    return ("≥" if censored else "") + f"{value / scale:.{digits}f}"


def fmt_seeds(seeds, measure):
    return ", ".join(fmt_value(v, measure, c) for v, c in seeds)


def fmt_mean(seeds, measure):
    mean, low, high = bootstrap_mean([v for v, _ in seeds])
    return f"{fmt_value(mean, measure)} [{fmt_value(low, measure)}, {fmt_value(high, measure)}]"


def pair_table(pairs):
    if not pairs:
        return "(no runs for this claim)"
    unit = UNITS[pairs[0]["measure"]][2]
    lines = [f"| setting | A | B | A: {unit} per seed | B: {unit} per seed | A: mean [95% CI] | B: mean [95% CI] "
             "| A/B [95% CI] | A needs less | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        m = p["measure"]
        lines.append(f"| {runs_lib.setting_title(p['key'])} | {p['a_label']} | {p['b_label']} | {fmt_seeds(p['a'], m)} | "
                     f"{fmt_seeds(p['b'], m)} | {fmt_mean(p['a'], m)} | {fmt_mean(p['b'], m)} | "
                     f"{p['ratio']:.2f} [{p['low']:.2f}, {p['high']:.2f}] | {p['verdict']} | {p['role']} |")
    return "\n".join(lines)


def scaling_table(rows):
    if not rows:
        return "(the runs vary neither R nor V)"
    lines = ["| series | point | seeds | updates/s per seed | speed-up [95% CI] | ideal | allowed by cores "
             "| mean s per update | about linear |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bound = "—" if r["core_bound"] is None else f"{r['core_bound']:.2f}"
        lines.append(f"| {r['series']} | {r['axis']}={r['x']} vs {r['base_x']} | {r['seeds']} | "
                     f"{', '.join(f'{v:.1f}' for v in r['rates'])} | {r['speedup']:.2f} [{r['low']:.2f}, {r['high']:.2f}] | "
                     f"{r['ideal']:.2f} | {bound} | {r['mean_update_s']:.4f} | {r['verdict']} |")
    return "\n".join(lines)


def rules_text(metric, target):
    """The verdict rules, as the reports state them."""
    direction = "<=" if metric.endswith("loss") else ">="
    return (f"Target: {metric} {direction} {target:g} of the evaluated model (node 0's). Every interval is a "
            f"percentile bootstrap {CONFIDENCE:.0%} interval ({RESAMPLES:,} resamples of the seeds, seed "
            f"{BOOTSTRAP_SEED}). *A needs less than B* compares mean(A)/mean(B): **supported** when its interval "
            f"lies below 1 and every seed of A reached the target, **contradicted** when it lies above 1 and every "
            f"seed of B reached it, **inconclusive** otherwise or with fewer than {MIN_SEEDS} seeds on a side. A run "
            "that never reaches the target is censored: it enters with its value at its last evaluation "
            "(\"≥ X\", a lower bound), so it can never win a comparison. *About linear*: the speed-up's interval "
            f"lies at or above {LINEAR:.0%} of the ideal (supported) or below it and below {LINEAR:.0%} of what "
            "the machine's cores allow (contradicted). A claim of several comparisons is supported when all are, "
            "contradicted when any is. Claim 2 is supported when MW wins some pair and gossip wins a pair with the "
            "largest R or the smallest alpha, contradicted when the same side wins every pair. Claim 4's "
            f"exception: diameter <= {SMALL_DIAMETER} and alpha <= {EXTREME_ALPHA}; it is judged per gossip rate.")
