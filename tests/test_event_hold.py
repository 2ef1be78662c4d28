"""The event log's held lines (core/events.py, EventLog with hold): hot-path lines wait in memory,
every other line is written at once after them, and every way out writes them."""
import json
import os
import signal
import subprocess
import sys
import time

from core.events import HELD_KINDS, EventLog, flush_all

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lines(path):
    with open(path) as f:
        return [json.loads(line)["type"] for line in f]


def test_without_hold_every_line_is_on_disk_at_once(tmp_path):
    log = EventLog(tmp_path / "e.jsonl", time.monotonic)
    log.update(0.1, walk=0)
    log.transfer(1, 8, walk=0)
    assert lines(tmp_path / "e.jsonl") == ["update", "transfer"]
    log.close()


def test_held_lines_wait_and_an_immediate_line_writes_them_first(tmp_path):
    log = EventLog(tmp_path / "e.jsonl", time.monotonic, hold=3600.0)  # the writer thread never comes first
    log.update(0.1, walk=0)
    log.transfer(1, 8, walk=0)
    assert lines(tmp_path / "e.jsonl") == []
    log.write("retire", walk=0)
    assert lines(tmp_path / "e.jsonl") == ["update", "transfer", "retire"]
    assert log.counters["iterations"] == 1 and log.counters["transfers"] == 1
    log.self_loop(walk=0)
    assert log.offset() == os.path.getsize(tmp_path / "e.jsonl")  # a checkpoint's offset counts every line
    assert lines(tmp_path / "e.jsonl")[-1] == "self_loop"
    log.relay(1, 16, walk=0)
    log.close()
    assert lines(tmp_path / "e.jsonl")[-1] == "relay"


def test_the_writer_thread_writes_held_lines_after_the_hold(tmp_path):
    log = EventLog(tmp_path / "e.jsonl", time.monotonic, hold=0.05)
    for kind in sorted(HELD_KINDS):
        log.write(kind)
    deadline = time.monotonic() + 30  # only catches a hang
    while len(lines(tmp_path / "e.jsonl")) < len(HELD_KINDS) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lines(tmp_path / "e.jsonl") == sorted(HELD_KINDS)
    log.close()


def test_flush_all_writes_every_open_log(tmp_path):
    logs = [EventLog(tmp_path / f"e{k}.jsonl", time.monotonic, hold=3600.0) for k in range(2)]
    for log in logs:
        log.update(0.1)
    flush_all()
    assert [lines(tmp_path / f"e{k}.jsonl") for k in range(2)] == [["update"], ["update"]]
    for log in logs:
        log.close()


def test_flush_all_goes_past_a_full_disk(tmp_path):
    """A fault's exit path flushes first: a log it cannot write (/dev/full) must not stop it, nor the other logs."""
    full = EventLog("/dev/full", time.monotonic, hold=3600.0)
    kept = EventLog(tmp_path / "e.jsonl", time.monotonic, hold=3600.0)
    full.update(0.1)
    kept.update(0.1)
    flush_all()
    assert lines(tmp_path / "e.jsonl") == ["update"]
    kept.close()
    full.held.clear()  # what the disk refused stays held; dropped so that close() can end the log
    full.close()


def test_a_sigkill_loses_only_held_lines(tmp_path):
    """A process killed outright: every line written at once is there, and at most the held ones are lost."""
    path = tmp_path / "e.jsonl"
    script = (f"import sys, time; sys.path.insert(0, {REPO!r}); from core.events import EventLog\n"
              f"log = EventLog({str(path)!r}, time.monotonic, hold=3600.0)\n"
              "log.update(0.1); log.write('eval'); log.update(0.2); print('ready', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert lines(path) == ["update", "eval"]
