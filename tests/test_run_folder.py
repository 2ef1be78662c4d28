"""A run folder belongs to one run (real mpirun): another run's files are refused unless
--overwrite true, a second concurrent run into the folder refuses at once, and an unusable
--out is one line and exit 2 on every rank."""
import time

import pytest

from conftest import read_summary, run_main, start_main

pytestmark = pytest.mark.mpi

TINY = ["--walks", 1, "--max-iterations", 20, "--train-time", 30, "--eval-interval", 30, "--warmup-time", 0]


def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_folder_of_another_run_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "events-rank0.jsonl").write_text("")
    line = one_error_line(run_main(2, [*TINY, "--out", tmp_path], timeout=60))
    assert f"--out {tmp_path} holds another run (config.json, events-rank0.jsonl); pass --overwrite true" in line


def test_overwrite_removes_the_other_runs_files(tmp_path):
    (tmp_path / "events-rank5.jsonl").write_text('{"type": "update"}\n')  # a rank this run does not have
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "notes.txt").write_text("mine")  # not a run's file: kept
    result = run_main(2, [*TINY, "--out", tmp_path, "--overwrite", "true"], timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"[start] MPI up: 2 ranks; flags and --out {tmp_path} checked (")
    assert "\n[start] data loaded: digits, 1438 train / 359 test, graph cycle (" in result.stdout
    assert "\n[start] model built: " in result.stdout and " parameters on cpu (" in result.stdout
    assert "\n[start] first local update done: " in result.stdout
    assert read_summary(tmp_path)["complete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock", "config.json", "events-rank0.jsonl", "events-rank1.jsonl", "notes.txt", "summary.json"]


def test_second_concurrent_run_into_the_folder_refuses_at_once(tmp_path):
    first = start_main(2, [*TINY, "--max-iterations", 0, "--train-time", 5, "--out", tmp_path])
    try:
        lock, deadline = tmp_path / ".lock", time.time() + 60
        while not (lock.exists() and lock.read_text()):  # the first run's rank 0 holds the folder
            assert time.time() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.1)
        line = one_error_line(run_main(2, [*TINY, "--out", tmp_path, "--overwrite", "true"], timeout=60))
        assert f"--out {tmp_path} is in use by another run (pid " in line
        assert first.wait(timeout=120) == 0, first.communicate()
    finally:
        first.kill()
    assert read_summary(tmp_path)["complete"]


@pytest.mark.parametrize("out,message", [
    ("", "--out is empty"),
    ("README.md", "--out README.md is a file, not a folder"),
    ("/proc/no-such-run", "--out /proc/no-such-run is not a writable folder"),
])
def test_unusable_out_is_one_line_and_exit_2(out, message):
    assert message in one_error_line(run_main(2, ["--out", out], timeout=60))
