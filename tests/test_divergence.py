"""The divergence guard (issue #27): a non-finite test loss, or test accuracy at chance after the
warm-up, prints one warning naming the lr and records summary.json's `diverged`; the run goes on as
the authors' does unless --stop-on-divergence true ends it (exit 1, stopped cause diverged)."""
import math
import re
import subprocess
import textwrap

import pytest

import simulate
from conftest import FAST, REPO, read_summary, refuse_unless_marked_mpi, run_main
from core import algorithms, build_run, config, mpirun_command

pytestmark = pytest.mark.usefixtures("one_thread")

DIVERGING = ["--nodes", "4", "--walks", "2", "--train-time", "6", "--lr", "10", *FAST]


def test_lr_10_is_recorded_as_diverged_and_the_run_completes(tmp_path, capsys):
    assert simulate.simulate_main([*DIVERGING, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: the run diverged") == 1 and "--lr 10" in err and "test accuracy" in err
    summary = read_summary(tmp_path)
    assert summary["complete"] is True and summary["stopped"]["cause"] == "finished"
    assert summary["diverged"]["lr"] == 10 and summary["diverged"]["time"] > 0
    assert "chance 0.1000" in summary["diverged"]["reason"]


def test_stop_on_divergence_ends_the_run(tmp_path, capsys):
    assert simulate.simulate_main([*DIVERGING, "--stop-on-divergence", "true", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the run diverged") and "--lr 10" in err and err.count("\n") == 1
    summary = read_summary(tmp_path)
    assert summary["complete"] is False and summary["stopped"]["cause"] == "diverged"


def test_a_run_that_learns_is_not_diverged(tmp_path, capsys):
    assert simulate.simulate_main([*DIVERGING, "--lr", "0.05", "--out", str(tmp_path)]) == 0
    assert "diverged" not in capsys.readouterr().err
    assert read_summary(tmp_path)["diverged"] is None


def test_the_rule(tmp_path):
    cfg = config.parse_config(["--task", "digits", "--warmup-time", "5", "--eval-interval", "0.25",
                               "--out", str(tmp_path)])
    run = build_run.build_run(cfg, 4)
    at_chance = dict(test_loss=2.3, test_accuracy=0.1)
    assert algorithms.divergence_seen(cfg, run, at_chance, 4.9) is None  # still warming up
    assert algorithms.divergence_seen(cfg, run, at_chance, 5.5) is None  # two evaluation periods past it
    assert "test accuracy" in algorithms.divergence_seen(cfg, run, at_chance, 6.0)
    assert algorithms.divergence_seen(cfg, run, dict(test_loss=0.5, test_accuracy=0.2), 6.0) is None
    no_warmup = dict(cfg, warmup_time=0.0)
    assert algorithms.divergence_seen(no_warmup, run, at_chance, 0.01) is None  # the first evaluation: untrained
    assert algorithms.divergence_seen(no_warmup, run, at_chance, 0.5) is None  # the third: still near chance
    assert "nan" in algorithms.divergence_seen(cfg, run, dict(test_loss=math.nan, test_accuracy=0.9), 1.0)
    # a timing-only run has no model to judge: its nan evaluations are not a divergence
    timing_only = dict(cfg, emulate_params=4)
    assert algorithms.divergence_seen(timing_only, run, dict(test_loss=math.nan, test_accuracy=math.nan), 10.0) is None


def test_a_timing_only_run_is_not_diverged(tmp_path, capsys):
    assert simulate.simulate_main(["--nodes", "4", "--walks", "2", "--emulate-params", "1000", "--train-time", "2",
                                   "--eval-interval", "0.5", "--out", str(tmp_path)]) == 0
    assert "diverged" not in capsys.readouterr().err
    assert read_summary(tmp_path)["diverged"] is None


@pytest.mark.mpi
def test_mpi_run_warns_and_records_or_stops(tmp_path):
    flags = ["--walks", 2, "--train-time", 6, "--lr", 10, *FAST]
    result = run_main(4, [*flags, "--out", tmp_path / "on"])
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: the run diverged") == 1 and "--lr 10" in result.stderr
    summary = read_summary(tmp_path / "on")
    assert summary["complete"] is True and summary["diverged"]["lr"] == 10
    result = run_main(4, [*flags, "--stop-on-divergence", "true", "--out", tmp_path / "stopped"])
    assert result.returncode != 0 and "the run diverged" in result.stderr
    summary = read_summary(tmp_path / "stopped")
    assert summary["complete"] is False and summary["stopped"]["cause"] == "diverged"


# rank 0's Evaluator records from its eval thread and its communication thread (evaluations measured
# elsewhere, after failures): four results of a NaN model arrive at once, and the warning line is
# slow to write (a stderr that takes 50 ms per warning, so the threads overlap inside the guard)
RACING_EVALUATIONS = textwrap.dedent("""
    import sys, threading, time
    from mpi4py import MPI
    import torch
    from core import algorithms, build_run, config
    from core.events import EventLog
    from engine.evaluator import Evaluator
    from engine.progress import Progress
    from engine.waker import Waker

    class SlowWarnings:
        def __init__(self, stream):
            self.stream = stream
        def write(self, text):
            if text.startswith("warning:"):
                time.sleep(0.05)
            return self.stream.write(text)
        def flush(self):
            self.stream.flush()

    out = sys.argv[1]
    cfg = config.parse_config(["--task", "digits", "--walks", "1", "--warmup-time", "0", "--out", out])
    run = build_run.build_run(cfg, 2)
    start = time.time()
    clock = lambda: time.time() - start
    log = EventLog(out + "/events-rank0.jsonl", clock)
    comm = MPI.COMM_WORLD
    evaluator = Evaluator(cfg, run, algorithms.make_node(cfg, run, 0, torch.device("cpu")), log,
                          Progress(comm, log, Waker(comm), cfg), clock)
    nan = dict(train_loss=float("nan"), train_accuracy=0.1, test_loss=float("nan"), test_accuracy=0.1)
    sys.stderr = SlowWarnings(sys.stderr)
    together = threading.Barrier(4)
    def evaluation_arrives():
        together.wait()
        evaluator.record(nan)
    threads = [threading.Thread(target=evaluation_arrives) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("diverged:", evaluator.diverged["reason"], flush=True)
""")


@pytest.mark.mpi
def test_evaluations_that_race_warn_once(tmp_path):
    refuse_unless_marked_mpi()
    done = subprocess.run(mpirun_command.command(1, "-c", [RACING_EVALUATIONS, tmp_path]), cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(mpirun_command.environment(), PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # one progress row per evaluation; the four threads' prints may share a line (a row and its newline are
    # two writes), so rows are counted by their opening time column, not by lines
    rows = re.findall(r"\d+\.\ds \|", done.stdout)
    assert "diverged: test loss nan" in done.stdout and len(rows) == 4, done.stdout  # all four recorded
    assert done.stderr.count("warning: the run diverged") == 1, done.stderr
