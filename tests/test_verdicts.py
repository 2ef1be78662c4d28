"""analysis/verdicts.py on synthetic runs whose verdicts are known: accuracy curves 1 - 0.9 exp(-x / scale)
with a chosen scale per algorithm and setting, a shared seed effect (runs pair by seed) and a little noise."""
import numpy as np
import pytest

from analysis import verdicts
from core import run_records as runs_lib

ITERATIONS = np.linspace(0, 3000, 101)
MEASURES = [0.9, 0.93, verdicts.AREA]


def fake_run(kind, alpha, algorithm, seed, scale, bytes_per_update=1.0):
    rng = np.random.default_rng([seed, int(scale)])
    scale = scale * np.exp(0.3 * np.random.default_rng(seed).normal() + 0.03 * rng.normal())  # seed effect + noise
    accuracy = 1 - 0.9 * np.exp(-ITERATIONS / scale)
    walks = int(algorithm[2:]) if algorithm.startswith("mw") else 1
    cfg = dict(seed=seed, algorithm="mw" if walks and algorithm.startswith("mw") else "gossip", walks=walks,
               graph=kind, nodes=20, partition="dirichlet", alpha=alpha, task="digits",
               gossip_mode="free", gossip_interval=0.045)
    curve = dict(time=ITERATIONS / 100, iterations=ITERATIONS, bytes=ITERATIONS * bytes_per_update * 1e6,
                 test_accuracy=accuracy)
    return dict(config=cfg, curve=curve, name=f"{kind}-{alpha}-{algorithm}-{seed}", average_curve=None)


def groups_of(spec, seeds=10):
    """spec: {(kind, alpha, algorithm): (scale, bytes per update)}."""
    runs = [fake_run(kind, alpha, algo, s, scale, bpu) for (kind, alpha, algo), (scale, bpu) in spec.items()
            for s in range(seeds)]
    return runs_lib.group_runs(runs)


@pytest.mark.slow  # censored comparisons: a Kaplan-Meier curve per bootstrap resample
def test_claim_1_supported_when_mw1_is_faster_at_every_alpha_and_contradicted_when_gossip_wins_one():
    spec = {("cycle", a, algo): ((150, 1.0) if algo == "mw1" else (900, 1.05)) for a in (10.0, 1.0, 0.1)
            for algo in ("mw1", "gossip")}
    result = verdicts.claim_cycle(groups_of(spec), MEASURES, "test_accuracy")
    assert result["verdict"] == verdicts.SUPPORTED and len(result["comparisons"]) == 9
    spec[("cycle", 1.0, "mw1")] = (2000, 1.0)  # gossip wins at alpha 1
    assert verdicts.claim_cycle(groups_of(spec), MEASURES, "test_accuracy")["verdict"] == verdicts.CONTRADICTED


@pytest.mark.slow
def test_claim_1_equal_curves_are_no_difference_not_inconclusive():
    spec = {("cycle", a, algo): (400, 1.0) for a in (10.0, 1.0) for algo in ("mw1", "gossip")}
    result = verdicts.claim_cycle(groups_of(spec), MEASURES, "test_accuracy")
    assert result["per_measure"][0.9] == verdicts.NO_DIFFERENCE


@pytest.mark.slow
def test_claim_2_dependence_on_r_and_alpha_and_the_crossover():
    # MW-R/gossip = R/5 at alpha 10 (crossover at R = 5), R/2 at alpha 0.1 (crossover at R = 2)
    spec = {}
    for alpha, cross in ((10.0, 5), (0.1, 2)):
        spec[("complete", alpha, "gossip")] = (60, 1.0)
        for r in (1, 5, 15):
            spec[("complete", alpha, f"mw{r}")] = (60 * r / cross, 1.0)  # every run reaches 0.9
    result = verdicts.claim_complete(groups_of(spec), MEASURES, "test_accuracy")
    assert result["per_measure"][0.9] == verdicts.SUPPORTED
    ten = next(k for k in result["crossovers"] if k[2] == "alpha=10")
    tenth = next(k for k in result["crossovers"] if k[2] == "alpha=0.1")
    assert result["crossovers"][ten][0.9]["r_star"] == pytest.approx(5, rel=0.25)
    assert result["crossovers"][tenth][0.9]["r_star"] == pytest.approx(2, rel=0.25)


@pytest.mark.slow  # censored comparisons: a Kaplan-Meier curve per bootstrap resample
def test_claim_4_exception_and_mw1_fewest():
    spec = {("cycle", 1.0, "mw1"): (150, 1.0), ("cycle", 1.0, "gossip"): (900, 1.05),
            ("complete", 1.0, "mw1"): (150, 1.0), ("complete", 1.0, "gossip"): (400, 1.05),
            ("complete", 1.0, "mw15"): (600, 1.0),
            ("complete", 0.1, "mw1"): (500, 1.0), ("complete", 0.1, "gossip"): (250, 1.05),
            ("complete", 0.1, "mw15"): (900, 1.0)}
    groups = groups_of(spec)
    diameters = {key: 10 if key[0] == "cycle" else 1 for key in groups}
    result = verdicts.claim_bytes(groups, MEASURES, "test_accuracy", diameters)
    assert result["verdict"] == verdicts.SUPPORTED
    assert {c["role"] for c in result["comparisons"]} == {"", "exception"}
    assert result["fewest"]["verdict"] == verdicts.SUPPORTED
    spec[("complete", 0.1, "mw1")] = (100, 1.0)  # MW-1 wins inside the exception: the claim's except-clause fails
    result = verdicts.claim_bytes(groups_of(spec), MEASURES, "test_accuracy", diameters)
    assert result["verdict"] == verdicts.CONTRADICTED


@pytest.mark.slow
def test_censored_runs_enter_by_survival():
    spec = {("cycle", 1.0, "mw1"): (150, 1.0), ("cycle", 1.0, "gossip"): (4000, 1.0)}  # gossip rarely reaches 0.93
    result = verdicts.claim_cycle(groups_of(spec), [0.93], "test_accuracy")
    (c,) = result["comparisons"]
    assert c["censored_b"] > 0 and c["method"].startswith("restricted mean")
    assert result["verdict"] == verdicts.SUPPORTED


@pytest.mark.slow
def test_claim_3_against_linear():
    rng = np.random.default_rng(0)
    series = {"MW-R": {1: {s: 30 * rng.uniform(0.98, 1.02) for s in range(10)},
                       15: {s: 30 * 15 * 0.9 * rng.uniform(0.98, 1.02) for s in range(10)}},
              "gossip V": {5: {s: 90.0 + s for s in range(10)},
                           40: {s: (90.0 + s) * 8 * 0.5 * rng.uniform(0.98, 1.02) for s in range(10)}}}
    result = verdicts.claim_scaling(series)
    assert [p["verdict"] for p in result["points"]] == ["about linear", "below linear"]
    assert result["verdict"] == verdicts.CONTRADICTED


@pytest.mark.slow
def test_the_front_table_has_a_row_per_claim_with_the_papers_words():
    spec = {("cycle", 1.0, "mw1"): (150, 1.0), ("cycle", 1.0, "gossip"): (300, 1.0)}  # nothing censored: fast
    groups = groups_of(spec)
    table = verdicts.front_table({1: verdicts.claim_cycle(groups, MEASURES, "test_accuracy")}, MEASURES)
    assert "graphs with large diameters" in table and "to 0.93:" in table and "error area:" in table


@pytest.mark.slow
def test_a_report_from_real_simulated_runs_leads_with_the_plans_verdicts(tmp_path):
    import torch
    import simulate
    from analysis import report
    torch.set_num_threads(1)  # as simulate.py's main: the nodes compute one after another
    from core import build_run, config
    for algorithm in ("mw", "gossip"):
        for seed in (0, 1):
            out = tmp_path / "runs" / f"{algorithm}-s{seed}"
            cfg = config.parse_config(["--nodes", "6", "--graph", "cycle", "--algorithm", algorithm, "--walks", "1",
                                       "--task", "synthetic", "--synthetic-samples", "600",
                                       "--max-iterations", "240", "--eval-interval", "0.1", "--seed", str(seed),
                                       "--partition", "dirichlet", "--alpha", "1", "--eval-network-average", "true",
                                       "--out", str(out)])
            simulate.simulate(cfg, build_run.build_run(cfg, 6), verbose=False)
    runs = runs_lib.find_runs([str(tmp_path / "runs")])
    found = report.write_report(runs, "test_accuracy", 0.5, str(tmp_path / "report"), "t", "c", targets=[0.4, 0.5])
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert text.index("## Verdicts (docs/analysis_plan.md)") < text.index("## Claims")
    assert "2 seeds per curve carry no verdict" in text and "graphs with large diameters" in text
    assert "Secondary: claim 1 with gossip's network average" in text
    assert found[1] == verdicts.INCONCLUSIVE  # 2 seeds: inconclusive by rule, whatever the numbers
