"""The simulator at scale: nodes built when first needed (so MW at V = 100,000 builds only the
nodes its walks reach), event logs sharing a bounded pool of open files, and the memory
estimate: a run that will not fit is refused before anything is written, and the estimate is
within a factor 2 of the peak resident memory measured. Small runs stay byte-identical to the
eager simulator (test_sim_digest.py, MW with a failure and gossip)."""
import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from core.events import EventLog, OpenFiles, read_events

ESTIMATE_FACTOR = 2  # estimate / measured peak RSS lies within [1/2, 2]


def simulate(out, *args, timeout=900):
    done = subprocess.run([sys.executable, "simulate.py", "--task", "synthetic", *args, "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    return done


def test_logs_sharing_two_open_files_write_what_each_logged(tmp_path):
    files = OpenFiles(limit=2)
    logs = [EventLog(str(tmp_path / f"events-rank{v}.jsonl"), lambda: 1.0, files=files) for v in range(5)]
    for step in range(4):
        for v in (0, 3, 1, 3, 4):  # node 2 never logs: it gets no file
            logs[v].update(0.5, step=step)
    assert len(files.files) == 2
    for log in logs:
        log.close()
    assert sorted(os.listdir(tmp_path)) == [f"events-rank{v}.jsonl" for v in (0, 1, 3, 4)]
    counts = {}
    for event in read_events(str(tmp_path)):
        counts[event["rank"]] = counts.get(event["rank"], 0) + 1
    assert counts == {0: 4, 1: 4, 3: 8, 4: 4}
    assert [log.counters["iterations"] for log in logs] == [4, 4, 0, 8, 4]


@pytest.mark.slow
def test_a_run_that_will_not_fit_is_refused_before_anything_is_written(tmp_path):
    # gossip builds every node, each with (among others) its live model: 2,000 x 100 MB is far more than any machine here
    out = tmp_path / "big_gossip"
    done = simulate(out, "--nodes", "2000", "--algorithm", "gossip", "--emulate-params", "25000000",
                    "--max-iterations", "100", timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this run needs an estimated "), done.stderr
    assert "GB (MemAvailable)" in lines[0] or "cgroup" in lines[0]
    assert "Traceback" not in done.stderr
    assert not os.path.exists(out / "config.json") and not glob.glob(str(out / "events-rank*.jsonl"))


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("flags", [["--nodes", "1000", "--graph", "er", "--er-p", "0.012"],
                                   ["--nodes", "10000", "--graph", "er", "--er-p", "0.0012"],
                                   ["--nodes", "1000", "--algorithm", "gossip"]])
def test_the_memory_estimate_is_within_a_factor_2_of_the_peak(tmp_path, flags):
    """Where the run builds as many nodes as the estimate counts: MW on a well-mixing graph (about
    one new node per update) and gossip (every node). On a cycle the walks revisit their nodes and
    build far fewer than one per update: there the estimate is a bound, several times the peak."""
    out = tmp_path / "run"
    done = simulate(out, *flags, "--synthetic-samples", "200000", "--max-iterations", "10000")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    ratio = summary["memory_estimate_bytes"] / summary["peak_rss_bytes"]
    assert 1 / ESTIMATE_FACTOR <= ratio <= ESTIMATE_FACTOR, summary


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(1800)
def test_multi_walk_on_100000_nodes_builds_only_the_nodes_it_reaches(tmp_path):
    # 2,000 iterations: every walk well away from its start, a few hundred nodes reached on the cycle
    out = tmp_path / "v100000"
    done = simulate(out, "--nodes", "100000", "--synthetic-samples", "200000", "--max-iterations", "2000")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nodes"] == 100000 and summary["iterations"] == 2000 and summary["complete"]
    assert summary["peak_rss_bytes"] < 2e9
    logged = glob.glob(str(out / "events-rank*.jsonl"))
    assert 4 <= len(logged) <= 2000 + 4  # a file per node that logged: at most one per update, plus the walks' starts
