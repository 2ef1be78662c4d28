"""claims.py on synthetic numbers: the bootstrap, the verdict rules, censoring, the target metric,
and each claim's rule over runs shaped as run_records.read_run returns them."""
import numpy as np
import pytest

from analysis import claims
from core import run_records

S, C, I = claims.SUPPORTED, claims.CONTRADICTED, claims.INCONCLUSIVE


def test_bootstrap_is_seeded_and_matches_the_textbook_interval():
    values = np.arange(100.0)
    mean, low, high = claims.bootstrap_mean(values)
    assert (mean, low, high) == claims.bootstrap_mean(values)  # seeded: reruns agree
    assert mean == 49.5 and low < mean < high
    half_width = 1.96 * values.std() / np.sqrt(len(values))  # normal approximation of the mean's interval
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    assert claims.bootstrap_mean([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    assert claims.bootstrap_mean([0.0, 10.0]) == (5.0, 0.0, 10.0)  # two seeds: the interval spans both


def test_ratio_interval_resamples_both_sides():
    assert claims.bootstrap_ratio([1.0, 1.0], [2.0, 2.0]) == (0.5, 0.5, 0.5)
    ratio, low, high = claims.bootstrap_ratio([1.0, 3.0], [4.0, 4.0])
    assert ratio == 0.5 and (low, high) == (0.25, 0.75)


def reached(*values):
    return [(float(v), False) for v in values]


def test_compare_verdicts_follow_the_interval_and_censoring():
    assert claims.compare(reached(10, 12, 11), reached(20, 22, 21))["verdict"] == S
    assert claims.compare(reached(20, 22, 21), reached(10, 12, 11))["verdict"] == C
    assert claims.compare(reached(10, 25, 11), reached(20, 22, 12))["verdict"] == I  # the intervals overlap 1
    assert claims.compare(reached(10), reached(20))["verdict"] == I  # one seed decides nothing
    # A censored on one seed: its value is only a lower bound, so A cannot be said to need less
    assert claims.compare([(10.0, False), (11.0, True)], reached(20, 21))["verdict"] == I
    # B censored: its true values are larger still, so A needing less stands
    assert claims.compare(reached(10, 11), [(20.0, True), (21.0, True)])["verdict"] == S
    # B censored below A: it cannot be said to need less either
    assert claims.compare(reached(30, 31), [(20.0, True), (21.0, False)])["verdict"] == I
    assert claims.compare(reached(0, 0), reached(0, 0))["verdict"] == I  # 0/0: no decision


def test_scaling_verdict_separates_linear_core_bound_and_sublinear():
    base = [10.0, 10.5, 9.5]
    assert claims.scaling(base, [39.0, 40.0, 41.0], ideal=4)["verdict"] == S
    assert claims.scaling(base, [20.0, 20.5, 19.5], ideal=4)["verdict"] == C
    # only what 2 cores allow: below linear, but not below the machine's bound
    assert claims.scaling(base, [20.0, 20.5, 19.5], ideal=4, core_bound=2)["verdict"] == I
    assert claims.scaling(base, [11.0, 12.0, 11.5], ideal=4, core_bound=2)["verdict"] == C
    assert claims.scaling([10.0], [40.0], ideal=4)["verdict"] == I


def test_all_of():
    assert claims.all_of([S, S]) == S
    assert claims.all_of([S, I]) == I
    assert claims.all_of([S, I, C]) == C
    assert claims.all_of([]) == I


def run(graph="cycle", algorithm="mw", walks=1, seed=0, alpha=1.0, reach_at=None, nodes=8, rate=None,
        gossip_mode="free", gossip_interval=0.0, per_iteration_bytes=100, backend="sim"):
    """A run whose accuracy jumps from 0.1 to 0.95 at iteration `reach_at` (never if None), 10 evals."""
    iterations = np.linspace(0, 1000, 11)
    accuracy = np.where(iterations >= (reach_at if reach_at is not None else np.inf), 0.95, 0.1)
    config = dict(algorithm=algorithm, walks=walks, graph=graph, nodes=nodes, partition="dirichlet", alpha=alpha,
                  task="digits", seed=seed, er_p=0.3, gossip_mode=gossip_mode, gossip_interval=gossip_interval)
    curve = dict(time=iterations / 100, iterations=iterations, bytes=iterations * per_iteration_bytes,
                 test_accuracy=accuracy, test_loss=1 - accuracy)
    return dict(name=f"{graph}-{algorithm}{walks}-s{seed}", config=config, curve=curve, updates_per_s=rate,
                launch=None, summary=dict(backend=backend, compute_time=10.0, iterations=1000))


def test_target_metric_direction_censoring_and_missing_metric():
    r = run(reach_at=300)
    assert claims.to_target(r, "iterations", "test_accuracy", 0.9) == (300.0, False)
    assert claims.to_target(r, "bytes", "test_loss", 0.1) == (30000.0, False)  # a loss reaches downwards
    assert claims.to_target(run(), "iterations", "test_accuracy", 0.9) == (1000.0, True)
    with pytest.raises(ValueError, match="logs no train_accuracy in its eval events .it logs test_loss, test_accuracy"):
        claims.to_target(r, "iterations", "train_accuracy", 0.9)
    with pytest.raises(ValueError, match="unknown metric"):
        claims.check_metric("accuracy")


def test_eval_curve_takes_the_metrics_every_eval_carries():
    old = dict(type="eval", rank=0, model="node0", test_loss=0.5, test_accuracy=0.8)
    new = dict(old, train_loss=0.4, train_accuracy=0.85)
    curve, _ = run_records.eval_curve([dict(old, t=1.0), dict(new, t=2.0)])
    assert sorted(m for m in run_records.METRICS if m in curve) == ["test_accuracy", "test_loss"]
    curve, _ = run_records.eval_curve([dict(new, t=1.0), dict(new, t=2.0)])
    assert curve["train_accuracy"].tolist() == [0.85, 0.85]


def seeds(n=3, **kw):
    return [run(seed=s, **kw) for s in range(n)]


def test_claim_cycle_needs_every_mw_to_beat_gossip():
    grid = seeds(walks=1, reach_at=200) + seeds(walks=4, reach_at=300) + seeds(algorithm="gossip", reach_at=500)
    assert claims.claim_cycle(run_records.group_runs(grid), "test_accuracy", 0.9)["verdict"] == S
    grid = seeds(walks=1, reach_at=200) + seeds(walks=4, reach_at=700) + seeds(algorithm="gossip", reach_at=500)
    assert claims.claim_cycle(run_records.group_runs(grid), "test_accuracy", 0.9)["verdict"] == C
    # MW-4 never got there: at least 1000 iterations, more than gossip's 500
    grid = seeds(walks=1, reach_at=200) + seeds(walks=4) + seeds(algorithm="gossip", reach_at=500)
    assert claims.claim_cycle(run_records.group_runs(grid), "test_accuracy", 0.9)["verdict"] == C
    grid = seeds(walks=1, reach_at=200) + seeds(walks=4) + seeds(algorithm="gossip")  # nor did gossip
    assert claims.claim_cycle(run_records.group_runs(grid), "test_accuracy", 0.9)["verdict"] == I


def complete_grid(gossip_at):
    return [r for alpha in (1.0, 0.1) for r in
            seeds(graph="complete", walks=1, alpha=alpha, reach_at=200) + seeds(graph="complete", walks=8, alpha=alpha,
                                                                                 reach_at=800)
            + seeds(graph="complete", algorithm="gossip", alpha=alpha, reach_at=gossip_at)]


def test_claim_complete_needs_both_orderings():
    assert claims.claim_complete(run_records.group_runs(complete_grid(500)), "test_accuracy", 0.9)["verdict"] == S
    assert claims.claim_complete(run_records.group_runs(complete_grid(900)), "test_accuracy", 0.9)["verdict"] == C
    assert claims.claim_complete(run_records.group_runs(complete_grid(100)), "test_accuracy", 0.9)["verdict"] == C


def test_claim_bytes_is_judged_per_gossip_rate_with_the_exception():
    grid = (seeds(walks=1, reach_at=200, per_iteration_bytes=10) + seeds(walks=4, reach_at=200, per_iteration_bytes=40)
            + seeds(algorithm="gossip", reach_at=500, per_iteration_bytes=100)
            + seeds(algorithm="gossip", reach_at=500, per_iteration_bytes=1, gossip_interval=0.5)
            + seeds(graph="complete", alpha=0.1, walks=1, reach_at=200, per_iteration_bytes=10)
            + seeds(graph="complete", alpha=0.1, algorithm="gossip", reach_at=100, per_iteration_bytes=1))
    groups = run_records.group_runs(grid)
    by_rate, exception = claims.claim_bytes(groups, "test_accuracy", 0.9, {key: 1 if key[0] == "complete" else 4
                                                                          for key in groups})
    assert exception == {("complete", 8, "alpha=0.1", "digits")}
    assert by_rate["back to back"]["verdict"] == S  # gossip wins only in the exception, which does not count
    assert by_rate["authors-like"]["verdict"] == C  # a slow gossip sends so little that it needs fewer bytes
    assert "gossip (authors-like, 0.5 s)" in {p["b_label"] for p in by_rate["authors-like"]["pairs"]}


def test_claim_scaling_over_r_and_v_with_the_core_bound():
    grid = [run(walks=r, seed=s, rate=10.0 * r + s, backend="mpi") for r in (1, 2, 4) for s in range(3)]
    grid += [run(algorithm="gossip", nodes=v, seed=s, rate=5.0 * v + s, backend="mpi") for v in (4, 8) for s in range(3)]
    result = claims.claim_scaling(run_records.group_runs(grid), cores=2)
    assert result["verdict"] == S and {s["axis"] for s in result["series"]} == {"R", "V"}
    flat = [run(walks=r, seed=s, rate=20.0 + s, backend="mpi") for r in (1, 2, 4) for s in range(3)]
    result = claims.claim_scaling(run_records.group_runs(flat), cores=2)
    assert result["verdict"] == C and "do not vary V" in result["note"]
    capped = [run(walks=r, seed=s, rate=10.0 * min(r, 2) + s / 10, backend="mpi") for r in (1, 2, 4) for s in range(3)]
    rows = claims.claim_scaling(run_records.group_runs(capped), cores=2)["rows"]
    assert [r["verdict"] for r in rows] == [S, I]  # R = 4 is below linear but at what 2 cores allow
