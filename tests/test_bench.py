"""bench.py and its emulated-compute hook. Speed is measured by the benchmark itself, never
asserted here: these tests check the output's structure and that the counters are exact."""
import argparse
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from core import algorithms
from bench import bench
from core import config
from core import build_run
import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.mpi
@pytest.mark.timeout(1800)  # only catches a hang: on a loaded machine the five mpirun start-ups alone take minutes
def test_reduced_bench_prints_the_table_then_a_json_line_with_exact_counters(tmp_path):
    # a rank's log left over from an earlier, larger run in the same place must not be counted
    os.makedirs(tmp_path / "gossip")
    (tmp_path / "gossip" / "events-rank5.jsonl").write_text('{"t": 1.0, "type": "transfer", "to": 0, "bytes": 4}\n')
    # the work is bounded (2 ranks, 2 s runs, tiny model); bench.py's own per-launch timeout catches a hang
    done = subprocess.run([sys.executable, "bench/bench.py", "--nodes", "2", "--walks", "2", "--train-time", "2",
                           "--hop-time", "1", "--hop-pairs", "2", "--trim", "0.25", "--params", "1000", "--real", "mlp",
                           "--real-walks", "1", "--real-time", "2", "--idle-time", "3", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert sorted(k for k in result if "efficiency" in k) == [
        "gossip_efficiency", "gossip_ideal_pacing_efficiency", "mlp_gossip_real_compute_efficiency",
        "mlp_mw1_real_compute_efficiency",
        "mw2_efficiency", "mw2_engine_efficiency"]
    assert sorted(k for k in result if "hop" in k) == ["hop_gap_over_pingpong", "hop_over_pingpong", "hop_overhead"]
    assert sorted(k for k in result if "rotation" in k) == ["mlp_mw1_over_rotation"]
    idle = result.pop("idle_cores")  # a few ticks of CPU time over 1.75 s: may round to 0
    assert math.isfinite(idle) and 0 <= idle < 2  # the whole job on this 2-core machine
    assert all(math.isfinite(v) and v > 0 for v in result.values())
    counters = {k: v for k, v in result.items() if k.startswith("counter_")}
    assert counters == dict.fromkeys(["counter_mw_transfers", "counter_mw_bytes", "counter_gossip_transfers",
                                      "counter_gossip_bytes", "counter_summary"], 1.0)
    table = "\n".join(lines[:-1])
    for row in ("MW-2 efficiency", "MW-2 engine efficiency", "gossip efficiency", "hop overhead", "hop gap",
                "mlp MW-1 real compute", "mlp gossip real compute", "idle cost",
                "MW transfers", "gossip bytes", "summary.json totals"):
        assert f"| {row} " in table
    assert "waiting: sleeps until woken (1 same-host peers can)" in table  # the idle run's start event
    assert "the work handed between 2 processes" in table


def test_the_real_runs_window_starts_once_every_rank_is_warm():
    update = lambda rank, t: dict(type="update", rank=rank, t=t)  # noqa: E731
    events = [update(0, 0.5), update(1, 3.0), dict(type="transfer", rank=1, t=3.5), update(0, 4.0), update(1, 5.0)]
    assert bench.warm_from(events, trim=1.0, train_time=20.0) == 3.0  # rank 1's first update ends at 3 s
    assert bench.warm_from(events[:1], trim=1.0, train_time=20.0) == 1.0  # warm before the trim ends
    late = [update(0, 0.5), update(1, 12.0)]
    assert bench.warm_from(late, trim=1.0, train_time=20.0) == 1.0  # past half the run: the trim alone


def write_run(out, events, summary):
    os.makedirs(out)
    with open(os.path.join(out, "events-rank0.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in events)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f)


def test_counter_check_catches_a_missing_transfer(tmp_path):
    # an MW run of 3 visits: one self loop, so 2 transfers of 8 bytes; the log lost one of them
    events = [dict(t=0.1, type="update"), dict(t=0.2, type="transfer", to=1, bytes=8),
              dict(t=0.3, type="update"), dict(t=0.4, type="self_loop"), dict(t=0.5, type="update")]
    summary = dict(algorithm="mw", model_bytes=8, iterations=3, transfers=2, bytes_sent=16, self_loops=1,
                   exchanges=0)
    write_run(tmp_path / "mw", events, summary)
    transfers, nbytes, agreement = bench.counter_check(tmp_path / "mw")
    assert transfers == (1, 2) and nbytes == (8, 16)
    assert bench.worst_ratio([transfers]) == 0.5
    assert bench.worst_ratio(agreement) == 2.0  # the summary counted 2 transfers, the events 1


def test_contention_free_rate_is_r_over_t_when_walks_never_meet():
    args = argparse.Namespace(nodes=2, seed=0, compute=0.1, train_time=10.0, trim=1.0)
    # on the single edge of 2 nodes both walks swap ends every round, so neither ever waits
    assert bench.contention_free_rate(args, 2) == pytest.approx(2 / 0.1)
    args.nodes = 8  # 8 walks on 8 nodes do meet: the queueing ceiling is below R/t
    assert bench.contention_free_rate(args, 8) < 8 / 0.1


def test_emulated_update_sleeps_and_changes_the_flat_params_deterministically():
    cfg = config.parse_config(["--emulate-params", "5", "--emulate-compute", "0.01", "--walks", "1"], check_paths=False)
    run = build_run.build_run(cfg, 2)
    node = algorithms.make_node(cfg, run, 0, torch.device("cpu"))
    assert isinstance(node.model, models.FlatBuffer) and models.num_params(node.model) == 5
    params = models.flatten_params(node.model)
    assert algorithms.local_update(node, params, tau=5, lr=0.5) is None
    assert torch.equal(params, torch.full((5,), 0.5))
    loss, accuracy = models.evaluate(node.model, run["task_data"].test_x, run["task_data"].test_y)
    assert math.isnan(loss) and math.isnan(accuracy)


def test_emulate_compute_needs_a_model_size():
    with pytest.raises(config.ConfigError, match="emulate_compute needs emulate_params > 0"):
        config.parse_config(["--emulate-compute", "0.1"], check_paths=False)
    with pytest.raises(config.ConfigError, match="emulate_params must be >= 0"):
        config.parse_config(["--emulate-params", "-1"], check_paths=False)


@pytest.mark.mpi
def test_trace_hop_stamps_every_step_of_a_hop_in_order(tmp_path):
    # MW-1 on 2 ranks with a tiny model: the engine runs unchanged, its hop's functions stamped
    done = subprocess.run([sys.executable, "bench/trace_hop.py", "--train-time", "3", "--trim", "0.5",
                           "--params", "1000", "--out", str(tmp_path / "trace")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = {}  # (hops from node 0 or not) -> [step, ...] in the order of their median offsets
    for line in done.stdout.splitlines():
        if line.startswith("hops from"):
            group = steps.setdefault(line.split(":")[0], [])
        elif line.strip().endswith("of hops)"):
            group.append(line.split(" us  ")[1].rsplit("  (", 1)[0])
    assert set(steps) == {"hops from node 0 (merge first)", "hops from other nodes"}, done.stdout
    for group, order in steps.items():
        # whatever the timing: the sender logs the hop before its Isend, so before the receiver takes the walk in,
        # queues it and starts its update, in that order on one thread; the sender notes every hop it sends
        for first, then in (("update line (sender)", "transfer line (sender)"), ("transfer line (sender)", "received (receiver)"),
                            ("received (receiver)", "queued (receiver)"), ("queued (receiver)", "update start (receiver)")):
            assert order.index(first) < order.index(then), (group, order)
        assert "sent note (sender)" in order, (group, order)
    assert "merged (sender)" in steps["hops from node 0 (merge first)"]
    assert "merged (sender)" not in steps["hops from other nodes"]
