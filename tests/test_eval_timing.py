"""When an evaluation is logged (--eval-logged-at, FIDELITY.md): the authors plot an evaluation at
its start, so by default rank 0 logs it at the time its snapshot was taken, with the counters of
that moment; `end` logs it when the result is in. Real mpirun, two ranks, a concurrent evaluation
long enough (42,000 examples) that training logs updates while it runs."""
import json
import os

import pytest

from conftest import run_main

pytestmark = pytest.mark.mpi


def logged(out, rank):
    with open(os.path.join(out, f"events-rank{rank}.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("logged_at", ["snapshot", "end"])
def test_an_evaluation_is_logged_at_its_snapshot_or_at_its_end(tmp_path, logged_at):
    out = tmp_path / logged_at
    done = run_main(2, ["--algorithm", "gossip", "--task", "synthetic", "--synthetic-samples", "60000",
                        "--train-time", "4", "--eval-interval", "0.5", "--eval-logged-at", logged_at, "--out", out],
                    timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    events = logged(out, 0)
    updates = sorted(e["t"] for rank in (0, 1) for e in logged(out, rank) if e["type"] == "update")
    periodic = [i for i, e in enumerate(events) if e["type"] == "eval" and e["model"] == "node0"][:-1]  # not the final
    assert len(periodic) >= 2
    # written after updates that came later than its time: only a snapshot's time precedes them
    late = [i for i in periodic if events[i]["t"] < max(e["t"] for e in events[:i])]
    # at its end, an evaluation is never earlier than a line before it; at its snapshot, one that ran while
    # updates went on is (how many did depends on the machine's load: at least one)
    assert late if logged_at == "snapshot" else not late
    for i in periodic:  # the network's counters then: no update logged after the eval's time is in them
        assert events[i]["iterations_seen"] <= sum(t <= events[i]["t"] for t in updates)
