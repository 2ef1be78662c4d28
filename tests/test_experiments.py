"""The experiment runner, the curve merge, the report's numbers and verdicts.

The pipeline test runs the `smoke` preset (2 runs of 3 s on 4 ranks) through
experiments.py in a temporary directory and recomputes the report's numbers
straight from the raw event files, without the project's own parsing code."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from analysis import experiments
from analysis import plots
from core import run_records
from core.events import read_events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def experiments_cli(*args, timeout=600):
    return subprocess.run([sys.executable, os.path.join(REPO, "analysis", "experiments.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def write_events(path, rank, events):
    with open(os.path.join(path, f"events-rank{rank}.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in events)


def test_run_curve_counts_every_rank_up_to_each_evaluation(tmp_path):
    def update(t, d):
        return dict(t=t, type="update", duration=d)

    def transfer(t, b):
        return dict(t=t, type="transfer", to=1, bytes=b)

    def evaluation(t, acc, model="node0"):
        return dict(t=t, type="eval", model=model, test_loss=1 - acc, test_accuracy=acc)

    write_events(tmp_path, 0, [evaluation(0.0, 0.1), update(0.5, 0.2), transfer(0.5, 100), evaluation(1.0, 0.5),
                               update(2.0, 0.3), evaluation(2.0, 0.8), evaluation(2.5, 0.2, model="network_average")])
    # rank 1 logs an update at exactly t=1.0 (counts for the eval at 1.0) and one after the last eval
    write_events(tmp_path, 1, [update(1.0, 0.25), transfer(1.0, 40), transfer(1.5, 40), update(3.0, 1.0),
                               evaluation(1.2, 0.99)])  # an eval at another rank is not node 0's curve
    curve, _ = run_records.eval_curve(read_events(tmp_path))
    assert curve["time"].tolist() == [0.0, 1.0, 2.0]
    assert curve["iterations"].tolist() == [0, 2, 3]
    assert curve["bytes"].tolist() == [0, 140, 180]
    assert np.allclose(curve["compute"], [0.0, 0.45, 0.75])
    assert curve["test_accuracy"].tolist() == [0.1, 0.5, 0.8]


def test_mean_curve_interpolates_on_the_range_every_seed_covers():
    a = dict(iterations=np.array([0.0, 10.0]), accuracy=np.array([0.0, 1.0]))
    b = dict(iterations=np.array([0.0, 20.0]), accuracy=np.array([0.0, 0.5]))
    grid, mean, std = plots.mean_curve([a, b], "iterations", "accuracy")
    assert grid[0] == 0 and grid[-1] == 10
    assert np.allclose(mean, grid * (0.1 + 0.025) / 2)
    assert np.allclose(std, grid * (0.1 - 0.025) / 2)


@pytest.mark.slow
def test_paper_preset_fails_fast_without_cifar(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()  # a folder without the CIFAR-10 batches: main's path check passes, the data check does not
    result = experiments_cli("paper", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(empty), timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(empty) in lines[0]
    with pytest.raises(SystemExit) as exit_info:  # no folder at all: config.parse_config's ConfigError
        experiments.main(["paper", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1 and str(tmp_path / "missing") in err
    assert not (tmp_path / "runs").exists()  # nothing was launched


@pytest.mark.slow
def test_every_preset_expands_to_valid_main_flags():
    from core import config
    for name, preset in experiments.PRESETS.items():
        runs = experiments.expand(preset)
        assert len({run["name"] for run in runs}) == len(runs), name
        for run in runs:
            cfg = config.parse_config(experiments.argv_of(run["flags"]), check_paths=False)
            assert cfg["walks"] <= run["nodes"]
    assert len(experiments.expand(experiments.PRESETS["paper"])) == 3 * 3 * (4 + len(experiments.GOSSIP_RATES)) * 3


def recompute_to_target(run_dir, target):
    """(iterations, bytes) at node 0's first evaluation reaching `target`, read straight from the JSON lines."""
    events = []
    for path in glob.glob(os.path.join(run_dir, "events-rank*.jsonl")):
        rank = int(path.rsplit("rank", 1)[1].split(".")[0])
        with open(path) as f:
            events += [dict(json.loads(line), rank=rank) for line in f if line.strip()]
    evals = sorted((e["t"], e["test_accuracy"]) for e in events
                   if e["type"] == "eval" and e["rank"] == 0 and e["model"] == "node0")
    hit = next((t for t, acc in evals if acc >= target), None)
    if hit is None:
        return None, None
    return (sum(1 for e in events if e["type"] == "update" and e["t"] <= hit),
            sum(e["bytes"] for e in events if e["type"] == "transfer" and e["t"] <= hit))


def markdown_rows(text, first_cell_prefix):
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| " + first_cell_prefix)]


@pytest.mark.mpi
def test_smoke_grid_runs_resumes_and_reports_numbers_from_the_logs(tmp_path, capsys):
    runs_dir, report_dir = tmp_path / "runs", tmp_path / "report"
    args = ("smoke", "--runs-dir", str(runs_dir), "--report-dir", str(report_dir))
    result = experiments_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    preset = experiments.PRESETS["smoke"]
    names = [run["name"] for run in experiments.expand(preset)]
    assert len(names) == 2
    for name in names:
        assert run_records.is_complete(runs_dir / "smoke" / name)
        assert any(line.startswith("[") and name in line and "updates" in line for line in result.stdout.splitlines())

    text = (report_dir / "REPORT.md").read_text()
    assert "**1 seed carries no verdict.**" in text  # the smoke preset's one seed: the report says so first
    rows = {os.path.basename(row[0].strip("`")): row for row in markdown_rows(text, "`")}
    assert sorted(rows) == sorted(names)
    recomputed = {}
    for name, row in rows.items():
        iterations, nbytes = recompute_to_target(runs_dir / "smoke" / name, preset["target"])
        assert iterations is not None, f"{name} never reached {preset['target']}; the smoke test would check nothing"
        assert row[8] == str(iterations) and row[9] == str(nbytes), (name, row)
        with open(runs_dir / "smoke" / name / "summary.json") as f:
            assert row[4] == str(json.load(f)["iterations"])
        recomputed[name.split("-")[3]] = iterations
    # claim 1 (cycle, iterations): the comparison is built from the two recomputed numbers; one seed
    # per curve decides nothing under the interval rule
    claim1 = markdown_rows(text, "1 ")[0]
    assert claim1[-1] == "**inconclusive**"
    ratio = recomputed["mw2"] / recomputed["gossip"]
    assert f"MW-2/gossip (authors-like) on cycle V=4 alpha=1: {ratio:.2f} [{ratio:.2f}, {ratio:.2f}]" in claim1[2]
    pair_row = markdown_rows(text, "cycle, V=4")[0]
    assert pair_row[1:5] == ["MW-2", "gossip (authors-like)", str(recomputed["mw2"]), str(recomputed["gossip"])]
    for png in glob.glob(str(report_dir / "figures" / "*.png")):
        assert os.path.isfile(png[:-4] + ".csv") or png.endswith("throughput.png")
    assert glob.glob(str(report_dir / "figures" / "digits-cycle-V4-a1.png"))

    # resume: finished runs are skipped, nothing is launched again
    launched = {name: os.path.getmtime(runs_dir / "smoke" / name / "launch.json") for name in names}
    capsys.readouterr()
    assert experiments.main(list(args)) == 0
    assert capsys.readouterr().out.count("done, skipped") == 2
    assert launched == {name: os.path.getmtime(runs_dir / "smoke" / name / "launch.json") for name in names}
    # a run without a complete summary.json (interrupted) is to be run again
    os.remove(runs_dir / "smoke" / names[0] / "summary.json")
    assert experiments.main(["list", *args]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["todo", "done"]


def test_a_finished_folder_counts_only_if_its_config_is_this_runs(tmp_path):
    run = experiments.expand(experiments.PRESETS["smoke"])[0]
    out = tmp_path / run["name"]
    out.mkdir()
    (out / "summary.json").write_text(json.dumps(dict(complete=True)))
    (out / "config.json").write_text(json.dumps(dict(run["flags"], nodes=run["nodes"], software={})))
    assert experiments.is_done(run, str(out))
    (out / "config.json").write_text(json.dumps(dict(run["flags"], nodes=run["nodes"], lr=0.5)))
    assert not experiments.is_done(run, str(out))  # another run's folder: run it again
    (out / "summary.json").write_text(json.dumps(dict(complete=False)))
    (out / "config.json").write_text(json.dumps(dict(run["flags"], nodes=run["nodes"])))
    assert not experiments.is_done(run, str(out))
