"""analysis/inference.py on synthetic numbers whose right answer is known."""
import numpy as np
import pytest

from analysis import inference as st


def uncensored(values):
    return [(float(v), False) for v in values]


def test_a_paired_ratio_recovers_the_true_ratio_and_says_a_is_better():
    rng = np.random.default_rng(1)
    b = rng.uniform(500, 3000, size=10)               # seeds differ a lot ...
    a = b * 0.5 * np.exp(rng.normal(0, 0.05, 10))     # ... but A is half of B in each seed
    c = st.judge_family([st.compare(uncensored(a), uncensored(b))])[0]
    assert c["low"] < 0.5 < c["high"] and c["high"] < 0.6
    assert c["boot_low"] < 0.5 < c["boot_high"]
    assert c["verdict"] == st.A_BETTER


def test_pairing_finds_a_small_effect_that_the_seed_spread_hides():
    rng = np.random.default_rng(2)
    b = rng.uniform(300, 3000, size=10)
    a = b * 0.9 * np.exp(rng.normal(0, 0.01, 10))
    c = st.compare(uncensored(a), uncensored(b))
    assert c["p"] < 1e-6 and 0.85 < c["low"] < c["high"] < 0.95
    from scipy import stats
    assert stats.ttest_ind(np.log(a), np.log(b)).pvalue > 0.05  # unpaired: nothing to see


def test_equal_algorithms_are_no_difference_and_noisy_ones_inconclusive():
    rng = np.random.default_rng(3)
    b = rng.uniform(500, 3000, size=10)
    same = st.judge_family([st.compare(uncensored(b * np.exp(rng.normal(0, 0.03, 10))), uncensored(b))])[0]
    assert same["verdict"] == st.EQUIVALENT
    noisy = st.judge_family([st.compare(uncensored(b[:5] * np.exp(rng.normal(0, 0.6, 5))), uncensored(b[:5]))])[0]
    assert noisy["verdict"] == st.INCONCLUSIVE


def test_fewer_seeds_than_the_minimum_carry_no_verdict():
    c = st.judge_family([st.compare(uncensored([100, 110]), uncensored([1000, 1100]))])[0]
    assert c["effect"] == pytest.approx(0.1)
    assert c["verdict"] == st.INCONCLUSIVE


@pytest.mark.slow
def test_the_t_interval_on_log_ratios_covers_about_95_percent():
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(400):
        b = rng.uniform(500, 3000, size=10)
        a = b * 0.7 * np.exp(rng.normal(0, 0.3, 10))
        c = st.paired_log_ratio(a, b)
        covered += c["low"] <= 0.7 <= c["high"]
    assert 0.91 <= covered / 400 <= 0.98


def test_holm_matches_the_textbook_example():
    adjusted = st.holm([0.01, 0.04, 0.03, None])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and adjusted[3] is None


def test_holm_can_take_away_a_verdict_an_uncorrected_test_would_give():
    rng = np.random.default_rng(5)
    b = rng.uniform(500, 3000, size=10)
    family = [st.compare(uncensored(b * np.exp(rng.normal(-0.1, 0.15, 10))), uncensored(b)) for _ in range(12)]
    raw = sum(c["p"] < st.ALPHA for c in family)
    judged = st.judge_family(family)
    assert sum(c["verdict"] == st.A_BETTER for c in judged) <= raw
    assert all(c["p_adj"] >= c["p"] for c in judged)


def test_restricted_mean_is_the_mean_of_min_t_tau_under_censoring_at_the_horizon():
    values = np.array([1.0, 2.0, 3.0, 10.0])
    censored = np.array([False, False, False, True])
    assert st.restricted_mean(values, censored, 10.0) == pytest.approx(4.0)
    assert st.restricted_mean(values, np.zeros(4, bool), 2.5) == pytest.approx(np.mean(np.minimum(values, 2.5)))


def test_censored_runs_are_compared_by_survival_not_entered_at_the_budget():
    rng = np.random.default_rng(6)
    a = [(float(v), False) for v in rng.uniform(250, 400, 10)]
    b = [(2990.0, True)] * 7 + [(float(v), False) for v in (2400, 2600, 2800)]
    c = st.judge_family([st.compare(a, b)])[0]
    assert c["method"].startswith("restricted mean") and c["tost_p"] is None
    assert c["censored_b"] == 7 and c["effect"] < 0.2 and c["high"] < 1
    assert c["verdict"] == st.A_BETTER


def test_both_sides_never_reaching_the_target_is_inconclusive():
    c = st.judge_family([st.compare([(3000.0, True)] * 10, [(3000.0, True)] * 10)])[0]
    assert c["p"] == 1.0 and c["verdict"] == st.INCONCLUSIVE


def test_double_ratio_recovers_a_change_of_ordering_between_settings():
    rng = np.random.default_rng(7)
    b1, b2 = rng.uniform(500, 900, 10), rng.uniform(500, 900, 10)
    a1 = b1 * 2.0 * np.exp(rng.normal(0, 0.05, 10))  # A needs twice B's in setting 1 ...
    a2 = b2 * 1.0 * np.exp(rng.normal(0, 0.05, 10))  # ... as many in setting 2
    c = st.double_ratio(uncensored(a1), uncensored(b1), uncensored(a2), uncensored(b2))
    assert c["low"] < 2.0 < c["high"] and c["p"] < 1e-6
    assert st.double_ratio([(1.0, True)] * 10, uncensored(b1), uncensored(a2), uncensored(b2)) is None


def test_speedup_against_linear():
    rng = np.random.default_rng(8)
    base = rng.uniform(38, 42, 10)
    near = st.speedup(base, base * 9.5 * np.exp(rng.normal(0, 0.01, 10)), ideal=10)
    assert near["efficiency"] == pytest.approx(0.95, abs=0.01) and near["p_linear"] < 1e-6
    far = st.speedup(base, base * 6.0 * np.exp(rng.normal(0, 0.01, 10)), ideal=10)
    assert far["p_sublinear"] < 1e-6 and far["p_linear"] > 0.5


def test_error_area():
    x = np.array([0.0, 1000, 2000, 3000])
    assert st.error_area(x, [0.9] * 4, 3000) == pytest.approx(0.1)
    assert st.error_area(x, [0.0, 1.0, 1.0, 1.0], 3000) == pytest.approx(0.5 / 3)   # triangle of area 500
    assert st.error_area(x, [0.0, 1.0, 1.0, 1.0], 1500) == pytest.approx(0.5 / 1.5)
    assert st.error_area(x[:2], [0.0, 1.0], 3000) == pytest.approx(0.5 / 3)          # held flat past its end
