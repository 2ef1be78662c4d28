"""Every fault ends the job or stops it cleanly, names itself in one line and keeps what was written
(faults.py, supervisor.py), under real mpirun with real faults where they are cheap."""
import json
import os
import pickle
import signal
import subprocess
import time

import numpy as np
import pytest

import data
from core.events import EventLog, read_events
from tasks import cifar10_files
from conftest import FAST, counters_from_events, kill_job, read_summary, run_main, start_main, write_cifar_folder


def wait_for_updates(job, out, rank=1, updates=3, timeout=120):
    """Until `rank` has logged some updates and rank 0 its first summary; returns the rank's pid."""
    log, deadline = out / f"events-rank{rank}.jsonl", time.time() + timeout
    while time.time() < deadline and job.poll() is None:
        lines = log.read_text().splitlines() if log.exists() else []
        if sum('"update"' in line for line in lines) >= updates and (out / "summary.json").exists():
            return json.loads(lines[0])["pid"]
        time.sleep(0.2)
    pytest.fail(f"the job never started training: {job.communicate()}")


def ended_within(job, bound):
    """(seconds from now to the job's end, stdout, stderr); fails if the job outlives `bound`."""
    started = time.time()
    try:
        stdout, stderr = job.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        kill_job(job)
        pytest.fail(f"the job hung: still running {bound} s after the fault; {job.communicate()}")
    return time.time() - started, stdout, stderr


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# ----------------------------------------------------------------------------- an operator's stop

# to: mpirun alone (kill PID, a scheduler), or its whole process group (a terminal's Ctrl-C reaches
# mpirun, the launcher's proxy, every supervisor and every rank at once)
@pytest.mark.mpi
@pytest.mark.parametrize("stop,to", [(signal.SIGINT, "mpirun"), (signal.SIGTERM, "mpirun"), (signal.SIGINT, "group")],
                         ids=["SIGINT", "SIGTERM", "SIGINT-group"])
def test_interrupt_stops_every_rank_and_keeps_the_counters(tmp_path, stop, to):
    job = start_main(4, ["--train-time", 300, "--out", tmp_path, *FAST])
    wait_for_updates(job, tmp_path)
    if to == "group":
        os.killpg(job.pid, stop)  # start_main gives the job its own process group
    else:
        job.send_signal(stop)
    took, stdout, stderr = ended_within(job, 60)
    print(f"{stop.name} to {to}: job ended {took:.2f} s after the signal, exit {job.returncode}")
    # the launcher saw every rank end on purpose: the signal's exit code, no crash banner (supervisor.release_launcher)
    assert job.returncode == 128 + stop, (job.returncode, stdout[-2000:], stderr)
    assert "BAD TERMINATION" not in stdout + stderr and "Killed" not in stdout + stderr, (stdout[-2000:], stderr)
    assert f"interrupted: {stop.name} stopped the run" in stderr and not error_lines(stderr), stderr
    assert "killed by" not in stderr and "Traceback" not in stderr, stderr
    summary = read_summary(tmp_path)
    assert summary["complete"] is False
    assert summary["stopped"]["cause"] == "signal" and summary["stopped"]["detail"] == stop.name
    assert summary["stopped"]["rank"] is None and summary["stopped"]["host"] and summary["stopped"]["time"]
    for key, value in counters_from_events(tmp_path).items():  # every rank's counters, as logged
        assert summary[key] == value, key


# ----------------------------------------------------------------------------- an exception in a thread

# rank 1's compute fails at its 60th update, late enough that the test sees training under way (rank 3's
# update lines wait up to 50 ms in memory, and a rank the launcher kills loses them)
@pytest.mark.parametrize("rank,thread,count", [(2, "mpi", 300), (1, "compute", 60), (0, "mpi", 300)],
                         ids=["rank2-mpi", "rank1-compute", "rank0-mpi"])
@pytest.mark.mpi
def test_exception_in_a_thread_ends_the_job_in_one_line(tmp_path, rank, thread, count):
    job = start_main(4, ["--train-time", 300, "--out", tmp_path, *FAST], MULTIWALK_FAULT=f"{rank}:{thread}:{count}:raise")
    wait_for_updates(job, tmp_path, rank=3)
    took, stdout, stderr = ended_within(job, 60)
    print(f"fault in rank {rank}'s {thread} thread: job ended {took:.2f} s after it had trained, exit {job.returncode}")
    headline = f"error: rank {rank}, thread {thread}: InjectedFault: MULTIWALK_FAULT={rank}:{thread}:{count}:raise"
    assert job.returncode != 0 and error_lines(stderr) == [headline], stderr
    assert "Traceback" not in stderr
    summary = read_summary(tmp_path)
    assert summary["complete"] is False and summary["error"] == headline[len("error: "):]
    assert summary["stopped"]["cause"] == "exception" and summary["stopped"]["rank"] == rank
    assert sum(e["type"] == "update" for e in read_events(tmp_path)) >= 3


# ----------------------------------------------------------------------------- stalls

@pytest.mark.mpi
def test_stopped_rank_is_named_by_the_watchdog(tmp_path):
    job = start_main(4, ["--train-time", 300, "--stall-timeout", 5, "--out", tmp_path, *FAST])
    pid = wait_for_updates(job, tmp_path, rank=2)
    os.kill(pid, signal.SIGSTOP)
    took, stdout, stderr = ended_within(job, 60)
    print(f"SIGSTOP of rank 2: named and the job ended {took:.2f} s later (stall timeout 5 s), exit {job.returncode}")
    lines = error_lines(stderr)
    assert job.returncode != 0 and lines and lines[0].startswith(f"error: rank 2 (pid {pid} on "), stderr
    assert "stalled: its communication thread made no progress" in lines[0]
    assert took >= 5  # not before the stall timeout; ended_within catches a watchdog that never fires
    summary = read_summary(tmp_path)
    assert summary["complete"] is False and read_events(tmp_path)
    assert summary["stopped"]["cause"] == "stalled" and summary["stopped"]["rank"] == 2, summary


@pytest.mark.mpi
def test_hung_local_update_is_named_by_the_watchdog(tmp_path):
    job = start_main(4, ["--train-time", 300, "--stall-timeout", 5, "--out", tmp_path, *FAST],
                 MULTIWALK_FAULT="1:compute:20:hang")
    wait_for_updates(job, tmp_path, rank=3)
    took, stdout, stderr = ended_within(job, 60)
    lines = error_lines(stderr)
    assert job.returncode != 0 and lines and lines[0].startswith("error: rank 1 ("), stderr
    assert "stalled: a local update has run 5 s past the longest one before it" in lines[0]


# ----------------------------------------------------------------------------- a full disk

@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)])


@pytest.mark.mpi
def test_full_disk_ends_the_job_in_one_line_and_leaves_no_stray_files(small_disk):
    job = start_main(4, ["--train-time", 300, "--out", small_disk, *FAST, "--eval-interval", 0.5])
    took, stdout, stderr = ended_within(job, 120)
    lines = error_lines(stderr)
    print(f"full disk: job ended {took:.2f} s after launch, exit {job.returncode}: {lines}")
    assert job.returncode != 0 and len(lines) == 1 and "No space left on device" in lines[0], stderr
    assert "Traceback" not in stderr
    # the cause reached summary.json, or the one line says summary.json is stale
    stopped = read_summary(small_disk).get("stopped")
    assert (stopped and stopped["cause"] == "disk_full") or "summary.json is stale" in lines[0], (stopped, lines)
    assert not [f for f in os.listdir(small_disk) if f.endswith(".tmp")]
    for name in os.listdir(small_disk):
        if name.startswith("events-rank"):  # whole lines only: nothing cut off to be misread
            text = (small_disk / name).read_text()
            assert not text or text.endswith("\n"), name
    assert read_events(small_disk)


def test_a_cut_off_line_is_never_left_in_the_log(tmp_path):
    log = EventLog(str(tmp_path / "events-rank0.jsonl"), lambda: 1.0)
    log.write("start")

    class FullDisk:  # takes 10 bytes of a line, then refuses, like a disk that fills up
        def __init__(self, file):
            self.file = file

        def write(self, data):
            if len(data) > 10:
                return self.file.write(data[:10])
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.file, name)
    log.file = FullDisk(log.file)
    with pytest.raises(OSError, match="No space left on device.*events-rank0.jsonl"):
        log.write("update", duration=1.0)
    assert (tmp_path / "events-rank0.jsonl").read_text() == '{"t": 1.0, "type": "start"}\n'


# ----------------------------------------------------------------------------- resume of a finished run

@pytest.mark.mpi
def test_resume_of_a_complete_run_is_refused_unless_the_budget_grows(tmp_path):
    first = run_main(2, ["--walks", 1, "--train-time", 2.5, "--checkpoint-every", 1, "--out", tmp_path, *FAST])
    assert first.returncode == 0, first.stderr
    finished = (tmp_path / "summary.json").read_text()
    again = run_main(2, ["--resume", tmp_path])
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: --resume {tmp_path}: the run there is complete; raise --train-time or --max-iterations to continue it"]
    assert (tmp_path / "summary.json").read_text() == finished
    longer = run_main(2, ["--resume", tmp_path, "--train-time", 3.5])
    assert longer.returncode == 0, longer.stderr
    summary = read_summary(tmp_path)
    assert summary["complete"] and summary["wall_time_s"] >= 3.5


@pytest.mark.mpi
@pytest.mark.long
@pytest.mark.timeout(900)
def test_mw_killed_late_and_resumed_matches_the_uninterrupted_counters(tmp_path):
    """The retired-walk count is in the checkpoint: a resume after walks have retired still ends
    at the budget with the same counters."""
    flags = ["--walks", 4, "--graph", "er", "--er-p", 0.5, "--max-iterations", 3000, "--checkpoint-every", 3,
             "--train-time", 600, *FAST]
    whole = run_main(4, [*flags, "--out", tmp_path / "whole"], timeout=600)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    job = start_main(4, [*flags, "--out", out])
    pid = wait_for_updates(job, out)
    while job.poll() is None:  # late: after a checkpoint taken when most of the budget is spent
        latest = out / "checkpoint" / "latest.json"
        if latest.exists() and sum(e["type"] == "update" for e in read_events(out)) > 2400:
            break
        time.sleep(0.5)
    assert job.poll() is None, "the run ended before it could be killed late"
    os.kill(pid, signal.SIGKILL)  # a real crash; the supervisor ends the job
    ended_within(job, 60)
    resumed = run_main(4, ["--resume", out], timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_summary(tmp_path / "whole"), read_summary(out)
    assert b["complete"] and a["iterations"] == b["iterations"] == 3000
    for key, value in counters_from_events(out).items():
        assert b[key] == value, key


# ----------------------------------------------------------------------------- files that run code

def test_cifar_batches_are_unpickled_without_running_code(tmp_path):
    write_cifar_folder(str(tmp_path / "cifar"))
    images, labels = cifar10_files.read_cifar_batch(str(tmp_path / "cifar" / "data_batch_1"))
    assert images.shape[1:] == (3, 32, 32) and len(labels) == len(images)
    for protocol in (2, 5):  # numpy writes other globals at protocol 5
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, protocol=protocol))
        assert cifar10_files.read_cifar_batch(str(path))[0].shape == (2, 3, 32, 32)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}))
    with pytest.raises(data.DataError, match="names posix.system, which a CIFAR-10 batch never does"):
        cifar10_files.read_cifar_batch(str(tmp_path / "evil"))
    assert not marker.exists()
