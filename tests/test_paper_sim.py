"""The paper's grid in simulation (experiments.py's paper_sim preset) and the switch it needs:
--virtual-model-bytes (transfers counted and timed as ResNet-20's while the MLP trains).

The end-to-end test runs a 2-run slice of the preset, cut to a few iterations, through
experiments.py (runs forked from the test's process) and checks the report it writes; one of
those runs is then repeated as a fresh `python simulate.py` and must give the same event logs."""
import json
import os
import subprocess
import sys

import pytest

from core import config
from tasks import cifar10_files
from analysis import experiments
from core import run_records
from conftest import event_files, seeds_by_cell, simulate_run

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = experiments.PRESETS["paper_sim"]
ALGORITHMS = ["mw1", "mw5", "mw10", "mw15", *experiments.GOSSIP_RATES]


def test_paper_sim_is_the_papers_grid_on_the_simulator():
    runs_ = experiments.expand(PRESET)
    grid = [run for run in runs_ if run["nodes"] == 20]
    assert len(grid) == 3 * 3 * 7 * 5 == 315
    assert len(runs_) == 315 + 2 * 5  # and gossip on complete graphs of 5 and 10 nodes, for claim 3's V axis
    assert {run["flags"]["graph"] for run in grid} == {
        os.path.relpath(experiments.PAPER_GRAPHS[kind]) for kind in ("cycle", "complete", "erdos_renyi")}
    assert {run["flags"]["alpha"] for run in grid} == {10.0, 1.0, 0.1}
    assert {run["flags"]["seed"] for run in runs_} == {0, 1, 2, 3, 4}
    assert sorted({run["name"].split("-", 3)[3].rsplit("-s", 1)[0] for run in grid}) == sorted(ALGORITHMS)
    for run in runs_:
        flags = run["flags"]
        assert flags["tau"] == 5 and flags["virtual_model_bytes"] == 272_474 * 4 == 1_089_896
        assert flags["compute_time_dist"] == "exponential" and flags["max_iterations"] > 0
        cfg = config.parse_config(experiments.argv_of(flags))
        assert cfg["walks"] <= run["nodes"]
        out = f"runs/paper_sim/{run['name']}"
        command = experiments.command_of(run, out, PRESET, "mpirun")
        assert command[:4] == [sys.executable, experiments.SIMULATE, "--nodes", str(run["nodes"])]
        assert command[-2:] == ["--out", out] and "mpirun" not in command
    mw1, gossip = (next(r for r in grid if r["name"] == f"cycle-V20-a1-{a}-s0") for a in ("mw1", "gossip"))
    # about evals_per_run evaluations over the budget: MW-1 makes one update per update + hop, gossip V at once
    evals = PRESET["evals_per_run"]
    assert mw1["flags"]["eval_interval"] == pytest.approx(3000 * (0.025 + 1_089_896 / 1.25e8 + 1e-4) / evals, rel=1e-4)
    assert gossip["flags"]["eval_interval"] == pytest.approx(3000 * 0.025 / 20 / evals, rel=1e-4)
    for name in ("cpu", "paper", "smoke"):  # the MPI presets still launch main.py under mpirun
        run = experiments.expand(experiments.PRESETS[name])[0]
        assert experiments.command_of(run, "x", experiments.PRESETS[name], "mpirun")[0] == "mpirun"


def test_paper_sim_with_a_data_dir_is_resnet20_on_cifar10(tmp_path, capsys):
    runs_ = experiments.expand(PRESET, data_dir=str(tmp_path))
    assert len(runs_) == 325 and all(r["flags"]["task"] == "cifar10" and r["flags"]["data_dir"] == str(tmp_path)
                                     for r in runs_)
    assert experiments.with_data_dir(PRESET, str(tmp_path))["target"] == PRESET["with_data_dir"]["target"]
    assert experiments.main(["list", "paper_sim", "--only", "cycle-V20-a1-mw5-s0", "--data-dir", str(tmp_path),
                             "--runs-dir", str(tmp_path / "runs")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("todo  cycle-V20-a1-mw5-s0: python simulate.py --nodes 20 --task cifar10")


def test_paper_sim_starts_on_cifar10(tmp_path):
    """ResNet-20 on (random, tiny) CIFAR-10 batches: the preset's first run, cut to 2 updates, starts and ends."""
    folder = tmp_path / "cifar"
    cifar10_files.write_cifar_folder(folder, images_per_batch=8)
    run = experiments.expand(PRESET, data_dir=str(folder), only="cycle-V20-a1-mw1-s0")[0]
    flags = dict(run["flags"], max_iterations=2, eval_interval=1e6)
    summary = simulate_run(tmp_path / "out", "--nodes", "20", *experiments.argv_of(flags))
    assert summary["task"] == "cifar10" and summary["iterations"] == 2 and summary["model_bytes"] == 1_089_896


def test_virtual_model_bytes_are_counted_and_timed(tmp_path):
    """MW-1 on a 4-cycle, fixed 0.1 s updates, 1000-byte transfers at 1000 B/s: every hop takes 1 s + latency
    (on the ideal engine: the authors' engine timing would add its polls)."""
    summary = simulate_run(tmp_path / "run", "--nodes", "4", "--walks", "1", "--max-iterations", "10", "--engine-timing", "ideal",
                           "--compute-time-dist", "fixed", "--compute-time-mean", "0.1", "--bandwidth", "1000",
                           "--latency", "0.001", "--virtual-model-bytes", "1000", "--train-time", "1e6")
    assert summary["model_bytes"] == 1000 and summary["bytes_sent"] == 1000 * summary["transfers"]
    assert summary["transfers"] == 10  # a cycle's walk never stays; it retires where the last hop takes it
    assert summary["wall_time_s"] == pytest.approx(10 * (0.1 + 1.001))
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["virtual_model_bytes"] == 1000


@pytest.mark.parametrize("value", ["-1", "1.5", "x"])
def test_virtual_model_bytes_must_be_a_count(value):
    with pytest.raises(config.ConfigError, match="virtual.model.bytes"):
        config.parse_config(["--virtual-model-bytes", value])


def test_main_refuses_virtual_model_bytes():
    """A real run sends its own model: the simulator's switch is refused in one line, before torch."""
    result = subprocess.run([sys.executable, "main.py", "--virtual-model-bytes", "1089896", "--out", "unused"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: virtual_model_bytes is the simulator's (simulate.py): a real run sends and counts its own model's bytes"]


@pytest.mark.slow
def test_a_slice_of_paper_sim_runs_through_experiments_and_reports(tmp_path, monkeypatch, capsys):
    small = dict(PRESET, flags=dict(PRESET["flags"], max_iterations=60), evals_per_run=10, seeds=(0, 1),
                 grid=[(20, experiments.PAPER_GRAPHS["cycle"], 1.0, ["mw5", "gossip"])])
    monkeypatch.setitem(experiments.PRESETS, "paper_sim", small)
    runs_dir, report_dir = tmp_path / "runs", tmp_path / "report"
    args = ["paper_sim", "--only=-s0", "--runs-dir", str(runs_dir), "--report-dir", str(report_dir), "--jobs", "2"]
    assert experiments.main(args) == 0
    out = capsys.readouterr().out
    assert "2 to run, 2 at a time" in out
    names = ["cycle-V20-a1-mw5-s0", "cycle-V20-a1-gossip-s0"]
    first, second = (run_records.read_json(runs_dir / "paper_sim" / name / "launch.json") for name in names)
    assert first["jobs"] == 2 and first["cpu_s"] > 0 and second["cpu_s"] > 0
    assert second["started"] < first["started"] + first["seconds"]  # side by side
    for name in names:
        folder = runs_dir / "paper_sim" / name
        assert run_records.is_complete(folder) and f"{name}: " in out
        summary = run_records.read_json(folder / "summary.json")
        assert summary["transport"] == "simulated" and summary["iterations"] == 60 and summary["model_bytes"] == 1_089_896
        launch = run_records.read_json(folder / "launch.json")
        assert launch["exit_code"] == 0 and launch["command"].split()[1:4] == [experiments.SIMULATE, "--nodes", "20"]
        assert "--virtual-model-bytes 1089896" in launch["command"]
        assert "results in" in (folder / "stdout.log").read_text()
    report = (report_dir / "REPORT.md").read_text()
    assert "The 2 simulate.py runs took" in report and "2 at a time" in report and "## The virtual clock (simulated runs)" in report
    assert "1,089,896 B / 1 Gbit/s + 0.1 ms = 8.82 ms" in report and "## Setting" in report
    assert "(Simulated runs: on the virtual clock.)" in report
    assert (report_dir / "figures" / "digits-cycle-V20-a1.png").is_file()

    # resumable: done runs are skipped
    assert experiments.main(args) == 0
    assert capsys.readouterr().out.count("done, skipped") == 2
    # the forked run is the run `python simulate.py ...` makes: the same event logs, byte for byte
    fresh = tmp_path / "fresh"
    command = run_records.read_json(runs_dir / "paper_sim" / names[1] / "launch.json")["command"].split()
    command[command.index("--out") + 1] = str(fresh)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert event_files(fresh) == event_files(runs_dir / "paper_sim" / names[1])


@pytest.mark.slow
def test_a_run_past_the_timeout_is_killed_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    small = dict(PRESET, flags=dict(PRESET["flags"], max_iterations=60), evals_per_run=10, seeds=(0,), timeout=30,
                 grid=[(20, experiments.PAPER_GRAPHS["cycle"], 1.0, ["mw1", "gossip"])])
    # the timeout leaves a loaded machine room for 60 updates; 10**7 updates take hours
    slow = dict(small, flags=dict(small["flags"], max_iterations=10**7))
    monkeypatch.setitem(experiments.PRESETS, "paper_sim", small)
    runs_dir = tmp_path / "runs"
    todo = [experiments.expand(slow)[0], experiments.expand(small)[1]]
    ended = {}
    experiments.warm_simulator()
    experiments.launch_forked(todo, str(runs_dir), small, 2, lambda run, code, seconds: ended.update({run["name"]: code}))
    assert ended == {"cycle-V20-a1-mw1-s0": "timeout", "cycle-V20-a1-gossip-s0": 0}
    assert run_records.read_json(runs_dir / "cycle-V20-a1-mw1-s0" / "launch.json")["exit_code"] == "timeout"


def test_jobs_are_for_simulated_presets(capsys):
    assert experiments.main(["cpu", "--jobs", "2"]) == 2
    assert "--jobs 2: preset cpu runs mpirun" in capsys.readouterr().err


def test_paper_verdicts_is_the_analysis_plans_grid():
    preset = experiments.PRESETS["paper_verdicts"]
    runs = experiments.expand(preset)
    seeds = seeds_by_cell(runs)
    primary = {name for name, s in seeds.items() if s == set(range(10))}
    assert primary == {f"{kind}-V20-a{alpha:g}-{algo}" for alpha in (10, 1, 0.1)
                       for kind, algos in (("cycle", ("mw1", "gossip")),
                                           ("complete", ("mw1", "mw5", "mw10", "mw15", "gossip"))) for algo in algos}
    assert all(s == set(range(5)) for name, s in seeds.items() if name not in primary)
    assert len(runs) == 305 and preset["targets"] == (0.90, 0.93, 0.95)
    assert all(run["flags"]["eval_network_average"] for run in runs)
    assert experiments.with_data_dir(preset, "/data")["targets"] == (0.6, 0.7, 0.75)
