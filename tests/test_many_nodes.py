"""The large-V study: its jobs, and a report section whose verdicts come from verdicts.py (the analysis
plan's rules): change a figure of the synthetic runs, the verdict changes."""
import numpy as np

from analysis import many_nodes
from core import config
from core import build_run


def test_jobs_repeat_every_run_for_every_seed_with_valid_flags():
    jobs = many_nodes.make_jobs("runs/x", seeds=(0, 1))
    assert len({job["out"] for job in jobs}) == len(jobs)
    assert sum(job["seed"] == 0 for job in jobs) == sum(job["seed"] == 1 for job in jobs) == len(jobs) // 2
    for job in jobs[:: len(jobs) // 7]:
        cfg = config.parse_config(many_nodes.run_flags(job, model_bytes=1000), check_paths=False)
        assert cfg["seed"] == job["seed"] and cfg["nodes"] == job["nodes"]


def training(graph, algorithm, seed, walks=1, alpha=1.0, reach_at=None, bytes_per_iteration=10):
    iterations = np.linspace(0, 1000, 101)
    accuracy = np.where(iterations >= (np.inf if reach_at is None else reach_at), 0.9, 0.1)
    config = dict(algorithm=algorithm, walks=walks, graph=graph, nodes=20, partition="dirichlet", alpha=alpha,
                  task="digits", seed=seed, er_p=0.3, gossip_pacing="authors")
    return dict(kind="training", name=f"{graph}-{algorithm}{walks}-s{seed}", config=config, launch=None,
                summary=dict(backend="sim", compute_time=1.0, iterations=1000), updates_per_s=None,
                curve=dict(time=iterations, iterations=iterations, bytes=iterations * bytes_per_iteration,
                           gigabytes=iterations * bytes_per_iteration / 1e9, test_accuracy=accuracy,
                           test_loss=1 - accuracy))


def timing(algorithm, nodes, graph, walks, seed, rate):
    config = dict(algorithm=algorithm, walks=walks, graph=graph, nodes=nodes, partition="dirichlet", alpha=1.0,
                  task="digits", seed=seed, er_p=0.3, gossip_pacing="authors")
    return dict(kind="timing", name="t", config=config, launch=None, updates_per_s=rate,
                summary=dict(backend="sim", compute_time=1.0, iterations=100), curve={})


def synthetic_results(gossip_cycle_at, seeds=(0, 1, 2, 3, 4)):
    """Runs whose figures vary a little by seed, as real ones do (a paired test needs a spread)."""
    results = []
    for seed in seeds:
        for graph, alpha in many_nodes.SETTINGS:
            results += [training(graph, "mw", seed, walks, alpha, reach_at=200 + 30 * walks + 10 * seed)
                        for walks in many_nodes.training_walks(20, graph)]
            results.append(training(graph, "gossip", seed, alpha=alpha, bytes_per_iteration=50,
                                    reach_at=(gossip_cycle_at if graph == "cycle" else 500) + 20 * seed))
        for graph in many_nodes.GRAPHS:
            results += [timing("mw", 20, graph, walks, seed, rate=30.0 * walks + seed) for walks in (1, 2)]
            results += [timing("gossip", nodes, graph, 1, seed, rate=40.0 * nodes + seed) for nodes in (20, 40)]
    return results


def claim1_verdict(text):
    return text.split("Claim 1: MW-1 vs gossip on the cycle, iterations: **")[1].split("**")[0]


def test_report_verdicts_follow_the_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(many_nodes, "NODES", (20,))
    report = tmp_path / "many_nodes.md"
    write = lambda results: many_nodes.write_report(results, str(report), str(tmp_path), "1 minute", "test_accuracy",
                                                    (0.75, 0.8, 0.85))
    write(synthetic_results(gossip_cycle_at=800))
    text = report.read_text()
    assert claim1_verdict(text) == "supported"
    assert "| cycle, V=20, alpha=1, digits | MW-1 | gossip (authors-like) | iterations to 0.8 | 5 |" in text
    assert "Verdict: **supported**" in text.split("### Claim 3")[1]  # 2x the walks, 2x the rate
    write(synthetic_results(gossip_cycle_at=100))
    assert claim1_verdict(report.read_text()) == "contradicted"
    write(synthetic_results(gossip_cycle_at=800, seeds=(0, 1)))
    text = report.read_text()
    assert claim1_verdict(text) == "inconclusive" and "**2 seeds carry no verdict**" in text


def test_report_only_refuses_old_results_in_one_line(tmp_path, capsys):
    (tmp_path / "results.json").write_text('{"runtime": "1 minute", "results": [{"kind": "training", "curve": []}]}')
    assert many_nodes.main(["--report-only", "--figures", str(tmp_path), "--report", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "older many_nodes.py" in err and err.count("\n") == 1
