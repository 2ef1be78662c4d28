"""
The statistics of docs/analysis_plan.md, done with scipy.stats and statsmodels: paired comparisons of two
algorithms over seeds, equivalence, censored time-to-target, Holm within a claim, speed-up against linear.

A comparison of A against B takes one (value, censored) per seed for each, in seed order (a seed fixes the
split, the initial model, the batches, the routes and the compute times, so runs pair by seed). Lower
values are better (iterations, bytes, error area), so an effect A/B < 1 favours A.

- No censored run: d = log A - log B per seed; effect exp(mean d), a 95% t interval on d, the paired t
  test's two-sided p, the TOST p for equivalence within MARGIN, and a BCa paired bootstrap interval beside
  them as a check (the t interval decides).
- Some censored run (it never reached the target: its value is where it stopped, a lower bound): the
  ratio of restricted means (Kaplan-Meier, up to the largest value of an arm with a censored run, the
  smaller such where both have one), a BCa paired
  bootstrap interval over seeds, and the p of the log-rank test stratified by seed. No equivalence test.

verdict() turns Holm-adjusted p-values into A_BETTER / B_BETTER / EQUIVALENT / INCONCLUSIVE.
"""
import numpy as np
from scipy import stats
from statsmodels.duration.survfunc import SurvfuncRight, survdiff
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

ALPHA = 0.05                # family-wise, within a claim (Holm)
CONFIDENCE = 0.95
MARGIN = (0.8, 1.25)        # equivalence: the ratio's 90% interval inside this (TOST at ALPHA)
MIN_SEEDS = 5               # fewer seeds on a side: inconclusive whatever the numbers (the cpu preset's 2)
RESAMPLES = 4999            # bootstrap resamples (odd, so BCa's quantiles fall on resamples)
BOOTSTRAP_SEED = 0
A_BETTER, B_BETTER, EQUIVALENT, INCONCLUSIVE = "A better", "B better", "no difference", "inconclusive"


def _split(pairs):
    values = np.array([v for v, _ in pairs], dtype=float)
    censored = np.array([c for _, c in pairs], dtype=bool)
    return values, censored


def paired_log_ratio(a, b):
    """A/B from uncensored positive values paired by seed: dict(effect, low, high, p, tost_p, boot_low,
    boot_high, method)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.any(a <= 0) or np.any(b <= 0):
        raise ValueError("paired_log_ratio needs positive values (a log-ratio of zero is undefined)")
    d = np.log(a) - np.log(b)
    n = len(d)
    mean, sem = float(d.mean()), float(stats.sem(d))
    if sem == 0:  # every seed gives the same ratio: the interval is that point, the test exact
        low = high = mean
        p = 0.0 if mean != 0 else 1.0
        tost_p = 0.0 if np.log(MARGIN[0]) < mean < np.log(MARGIN[1]) else 1.0
        boot_low = boot_high = mean
    else:
        low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=sem)
        p = float(stats.ttest_rel(np.log(a), np.log(b)).pvalue)
        tost_p = float(ttost_paired(np.log(a), np.log(b), np.log(MARGIN[0]), np.log(MARGIN[1]))[0])
        boot = stats.bootstrap((d,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="BCa",
                               random_state=np.random.default_rng(BOOTSTRAP_SEED))
        boot_low, boot_high = boot.confidence_interval
    return dict(effect=float(np.exp(mean)), low=float(np.exp(low)), high=float(np.exp(high)), p=p, tost_p=tost_p,
                boot_low=float(np.exp(boot_low)), boot_high=float(np.exp(boot_high)), method="paired t on log-ratios")


def restricted_mean(values, censored, horizon):
    """The restricted mean of a time-to-target up to `horizon`: the area under the Kaplan-Meier curve."""
    if not np.any(~censored):  # nothing reached it: every run lasted past its own end
        return float(min(horizon, values.min()) if len(values) else horizon)
    km = SurvfuncRight(values, (~censored).astype(int))
    times = np.clip(np.r_[0.0, km.surv_times], None, horizon)
    survival = np.r_[1.0, km.surv_prob]
    steps = np.diff(np.r_[times, horizon])  # survival[i] holds from times[i] to the next time
    return float(np.sum(survival * steps))


def censored_ratio(a, a_censored, b, b_censored):
    """A/B when some run is censored: dict(effect, low, high, p, tost_p=None, method)."""
    # an arm's curve is known up to its largest value, or for ever once every run reached the target
    horizon = min(v.max() if c.any() else np.inf for v, c in ((a, a_censored), (b, b_censored)))

    def ratio(a_v, a_c, b_v, b_c):  # the bootstrap hands the censoring flags back as floats
        return restricted_mean(a_v, a_c.astype(bool), horizon) / restricted_mean(b_v, b_c.astype(bool), horizon)

    effect = ratio(a, a_censored, b, b_censored)
    if a_censored.all() and b_censored.all():  # neither side reached it: nothing to compare
        return dict(effect=float(effect), low=float("nan"), high=float("nan"), p=1.0, tost_p=None,
                    boot_low=float("nan"), boot_high=float("nan"), method="no run reached the target")
    if len(a) < 2:  # one seed: no bootstrap and no test (inconclusive by the seed rule anyway)
        return dict(effect=float(effect), low=float("nan"), high=float("nan"), p=1.0, tost_p=None,
                    boot_low=float("nan"), boot_high=float("nan"), method="one seed: no interval")
    boot = stats.bootstrap((a, a_censored, b, b_censored), ratio, paired=True, vectorized=False,
                           confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="BCa",
                           random_state=np.random.default_rng(BOOTSTRAP_SEED))
    low, high = boot.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa undefined (a degenerate jackknife): percentile
        low, high = np.percentile(boot.bootstrap_distribution, [2.5, 97.5])
    n = len(a)
    times = np.r_[a, b]
    reached = np.r_[~a_censored, ~b_censored].astype(int)
    p = float(survdiff(times, reached, np.r_[np.zeros(n), np.ones(n)], strata=np.r_[np.arange(n), np.arange(n)])[1])
    return dict(effect=float(effect), low=float(low), high=float(high), p=p, tost_p=None,
                boot_low=float(low), boot_high=float(high),
                method="restricted mean (Kaplan-Meier) ratio, BCa paired bootstrap, log-rank stratified by seed")


def compare(a, b):
    """A against B, each [(value, censored)] over the same seeds in the same order. The effect with its
    interval and raw p-values (adjust with holm() over the claim's family, then verdict())."""
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs the same seeds on both sides ({len(a)} vs {len(b)})")
    a_values, a_censored = _split(a)
    b_values, b_censored = _split(b)
    out = dict(n=len(a), censored_a=int(a_censored.sum()), censored_b=int(b_censored.sum()))
    if len(a) < 2:
        return dict(out, effect=float("nan"), low=float("nan"), high=float("nan"), p=1.0, tost_p=None,
                    boot_low=float("nan"), boot_high=float("nan"), method="fewer than 2 seeds")
    if a_censored.any() or b_censored.any():
        return dict(out, **censored_ratio(a_values, a_censored, b_values, b_censored))
    return dict(out, **paired_log_ratio(a_values, b_values))


def holm(pvalues):
    """Holm-adjusted p-values of one family (None entries stay None: not tested)."""
    present = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted = [None] * len(pvalues)
    if present:
        corrected = multipletests([pvalues[i] for i in present], alpha=ALPHA, method="holm")[1]
        for i, p in zip(present, corrected):
            adjusted[i] = float(p)
    return adjusted


def verdict(comparison, p_adjusted, tost_adjusted):
    """A comparison's verdict from its Holm-adjusted p-values."""
    if comparison["n"] < MIN_SEEDS:
        return INCONCLUSIVE
    if p_adjusted is not None and p_adjusted < ALPHA:
        return A_BETTER if comparison["effect"] < 1 else B_BETTER
    if tost_adjusted is not None and tost_adjusted < ALPHA:
        return EQUIVALENT
    return INCONCLUSIVE


def judge_family(comparisons):
    """Holm over a claim's family of compare() results (both its difference and its TOST p-values);
    adds p_adj, tost_adj and verdict to each, in place; returns them."""
    p_adj = holm([c["p"] for c in comparisons])
    tost_adj = holm([c["tost_p"] for c in comparisons])
    for c, p, t in zip(comparisons, p_adj, tost_adj):
        c.update(p_adj=p, tost_adj=t, verdict=verdict(c, p, t))
    return comparisons


def double_ratio(a1, b1, a2, b2):
    """(A1/B1) / (A2/B2) paired by seed, uncensored values: does the ordering of A and B move between two
    settings? None when any value is censored (not computable: the caller reports it inconclusive)."""
    groups = [_split(x) for x in (a1, b1, a2, b2)]
    if any(c.any() for _, c in groups):
        return None
    (v1, _), (w1, _), (v2, _), (w2, _) = groups
    return dict(n=len(v1), censored_a=0, censored_b=0, **paired_log_ratio(v1 / w1, v2 / w2))


def speedup(base_rates, rates, ideal, linear=0.8):
    """Speed-up rate/base paired by seed (t interval on log-ratios) against `linear` x ideal:
    dict(speedup, low, high, efficiency, p_below (one-sided: speed-up <= linear x ideal), p_above)."""
    d = np.log(np.asarray(rates, dtype=float)) - np.log(np.asarray(base_rates, dtype=float))
    mean, sem = float(d.mean()), float(stats.sem(d)) if len(d) > 1 else float("nan")
    low, high = stats.t.interval(CONFIDENCE, len(d) - 1, loc=mean, scale=sem) if sem > 0 else (mean, mean)
    threshold = np.log(linear * ideal)
    greater = stats.ttest_1samp(d, threshold, alternative="greater").pvalue if sem > 0 else float(mean <= threshold)
    less = stats.ttest_1samp(d, threshold, alternative="less").pvalue if sem > 0 else float(mean >= threshold)
    return dict(speedup=float(np.exp(mean)), low=float(np.exp(low)), high=float(np.exp(high)), ideal=ideal,
                efficiency=float(np.exp(mean) / ideal), p_linear=float(greater), p_sublinear=float(less))


def error_area(x, accuracy, upto):
    """Mean error (1 - accuracy) over x in [0, upto], trapezoid rule, the curve held flat past its last point
    (lower is better: the area above the accuracy curve, per unit of x)."""
    x, error = np.asarray(x, dtype=float), 1 - np.asarray(accuracy, dtype=float)
    keep = x <= upto
    xs, es = x[keep], error[keep]
    if not len(xs):
        raise ValueError("error_area: no evaluation at or below the horizon")
    if xs[-1] < upto:  # to the horizon: interpolated if a later point exists, else held
        later = np.flatnonzero(~keep)
        end = np.interp(upto, x, error) if len(later) else es[-1]
        xs, es = np.r_[xs, upto], np.r_[es, end]
    return float(np.trapezoid(es, xs) / (upto - xs[0])) if upto > xs[0] else float(es[0])
