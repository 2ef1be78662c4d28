"""A run folder belongs to one run, whichever writer (core/run_folder.py's gate; real mpirun and the
real simulator): another run's files are refused unless --overwrite true, a live run's folder is
refused always and by every rank with the same reason, and an unusable --out is one line and exit 2
on every rank."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, read_summary, run_main, start_main
from core import run_folder
from core.config import ConfigError

TINY = ["--walks", 1, "--max-iterations", 20, "--train-time", 30, "--eval-interval", 30, "--warmup-time", 0]


def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.mark.mpi
def test_folder_of_another_run_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "events-rank0.jsonl").write_text("")
    line = one_error_line(run_main(2, [*TINY, "--out", tmp_path], timeout=60))
    assert f"--out {tmp_path} holds another run (config.json, events-rank0.jsonl); pass --overwrite true" in line


@pytest.mark.mpi
def test_overwrite_removes_the_other_runs_files(tmp_path):
    (tmp_path / "events-rank5.jsonl").write_text('{"type": "update"}\n')  # a rank this run does not have
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "notes.txt").write_text("mine")  # not a run's file: kept
    # an earlier run whose end was never written (a full disk): the overwrite says so in one line
    (tmp_path / "summary.json").write_text(json.dumps(dict(complete=False, iterations=7)))
    result = run_main(2, [*TINY, "--out", tmp_path, "--overwrite", "true"], timeout=180)
    assert result.returncode == 0, result.stderr
    stale = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert stale == [f"note: {tmp_path}/summary.json is stale: the earlier run's end was never written there "
                     "(complete: false, no `stopped` cause; a full disk or a job killed whole)"], result.stdout
    stopped = read_summary(tmp_path)["stopped"]
    assert stopped["cause"] == "finished" and stopped["rank"] is None and stopped["host"] == os.uname().nodename
    assert result.stdout.startswith(f"[start] MPI up: 2 ranks; flags and --out {tmp_path} checked (")
    assert "\n[start] data loaded: digits, 1438 train / 359 test, graph cycle (" in result.stdout
    assert "\n[start] model built: " in result.stdout and " parameters on cpu (" in result.stdout
    assert "\n[start] first local update done: " in result.stdout
    assert read_summary(tmp_path)["complete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock", "config.json", "events-rank0.jsonl", "events-rank1.jsonl", "notes.txt", "summary.json"]


@pytest.mark.mpi
def test_second_concurrent_run_into_the_folder_refuses_at_once(tmp_path):
    first = start_main(2, [*TINY, "--max-iterations", 0, "--train-time", 5, "--out", tmp_path])
    try:
        lock, deadline = tmp_path / ".lock", time.time() + 60
        while not (lock.exists() and lock.read_text()):  # the first run's rank 0 holds the folder
            assert time.time() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.1)
        line = one_error_line(run_main(2, [*TINY, "--out", tmp_path, "--overwrite", "true"], timeout=60))
        assert f"--out {tmp_path} is in use by a live run (pid " in line and "(rank" not in line  # every rank says so
        assert first.wait(timeout=120) == 0, first.communicate()
    finally:
        first.kill()
    assert read_summary(tmp_path)["complete"]


@pytest.mark.parametrize("out,message", [
    ("", "--out is empty"),
    ("README.md", "--out README.md is a file, not a folder"),
    ("/proc/no-such-run", "--out /proc/no-such-run is not a writable folder"),
])
@pytest.mark.mpi
def test_unusable_out_is_one_line_and_exit_2(out, message):
    assert message in one_error_line(run_main(2, ["--out", out], timeout=60))


def simulate(*args):
    return subprocess.run([sys.executable, "simulate.py", "--nodes", "2", "--walks", "2", "--max-iterations", "20",
                           "--eval-interval", "30", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.mpi
def test_simulator_never_writes_into_a_live_runs_folder(tmp_path):
    live = start_main(2, [*TINY, "--max-iterations", 0, "--train-time", 600, "--out", tmp_path])
    try:  # the live run trains until it is stopped, however long the simulator takes to start
        lock, deadline = tmp_path / ".lock", time.time() + 60
        while not (lock.exists() and lock.read_text()):
            assert time.time() < deadline and live.poll() is None, live.communicate()
            time.sleep(0.1)
        for overwrite in ("false", "true"):
            line = one_error_line(simulate("--out", tmp_path, "--overwrite", overwrite))
            assert f"--out {tmp_path} is in use by a live run (pid " in line
        assert live.poll() is None
        live.send_signal(signal.SIGINT)
        live.wait(timeout=120)
    finally:
        live.kill()
    assert json.loads((tmp_path / "config.json").read_text())["transport"] == "mpi"
    assert sorted(p.name for p in tmp_path.glob("events-rank*.jsonl")) == ["events-rank0.jsonl", "events-rank1.jsonl"]


@pytest.mark.slow
def test_simulator_replaces_a_finished_run_only_with_overwrite(tmp_path):
    assert simulate("--out", tmp_path).returncode == 0
    first = (tmp_path / "events-rank0.jsonl").read_text()
    line = one_error_line(simulate("--out", tmp_path, "--seed", 1))
    assert f"--out {tmp_path} holds another run (config.json, events-rank0.jsonl, events-rank1.jsonl, summary.json); " \
           "pass --overwrite true to replace it, or choose another --out" in line  # no --resume: nothing to resume
    assert (tmp_path / "events-rank0.jsonl").read_text() == first
    replaced = simulate("--out", tmp_path, "--seed", 1, "--overwrite", "true")
    assert replaced.returncode == 0, replaced.stderr
    assert (tmp_path / "events-rank0.jsonl").read_text() != first
    assert json.loads((tmp_path / "config.json").read_text())["transport"] == "simulated"
    assert read_summary(tmp_path)["transport"] == "simulated"


def test_resume_is_offered_only_where_a_checkpoint_exists(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ConfigError) as without:
        run_folder.refuse_previous_run(str(tmp_path))
    assert "--resume" not in str(without.value)
    assert "it has no checkpoint, so it cannot be continued (a run writes checkpoints with --checkpoint-every" \
        in str(without.value)
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(ConfigError) as with_checkpoint:
        run_folder.refuse_previous_run(str(tmp_path))
    assert f"--resume {tmp_path} to continue it" in str(with_checkpoint.value)


def test_a_lock_held_by_another_process_is_a_live_run(tmp_path):
    """What every writer's gate sees (the experiment grid's too): the lock taken in another process."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # holds the folder like a live run, until the parent is done looking
        held = run_folder.lock(str(tmp_path))  # noqa: F841  the open file holds the lock
        os.write(write_end, b"x")
        time.sleep(60)
        os._exit(0)
    try:
        assert os.read(read_end, 1) == b"x"
        with pytest.raises(ConfigError, match=f"is in use by a live run \\(pid {child} on "):
            run_folder.check_not_live(str(tmp_path))
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
    run_folder.check_not_live(str(tmp_path))  # a dead holder leaves no lock behind
    with open(tmp_path / ".lock") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
