"""Failures (SEMANTICS.md §6), crashes, checkpoint/resume and bad input, under real mpirun."""
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from core import algorithms
from core import config
from core import mpirun_command
from core.events import read_events
from conftest import (FAST, REPO, counters_from_events, read_summary, refuse_unless_marked_mpi, run_main,
                      write_cifar_folder, write_jsonl)


# ----------------------------------------------------------------------------- the rules, by hand

def test_failure_schedule_is_a_function_of_time():
    times = [10.0, 20.0]
    assert [algorithms.aggregator_at(t, times) for t in (0, 9.99, 10, 15, 20, 99)] == [0, 0, 1, 1, 2, 2]
    assert not algorithms.is_failed(0, 9.9, times) and algorithms.is_failed(0, 10.0, times)
    assert not algorithms.is_failed(1, 19.9, times) and algorithms.is_failed(1, 20.0, times)
    assert not algorithms.is_failed(2, 1e9, times)
    assert algorithms.aggregator_at(5.0, []) == 0


def test_new_aggregator_adopts_each_first_arrival_then_merges():
    agg = algorithms.Aggregator(torch.tensor([9.0, 9.0]), num_walks=2, joined=())
    walk0 = torch.tensor([1.0, 2.0])
    algorithms.aggregate(agg, 0, walk0)  # first arrival of walk 0: adopted, no merge
    assert torch.equal(agg.global_model, walk0) and torch.equal(agg.snapshots[0], walk0)
    walk1 = torch.tensor([3.0, 4.0])
    algorithms.aggregate(agg, 1, walk1)  # first arrival of walk 1: adopted as well
    assert torch.equal(agg.global_model, torch.tensor([3.0, 4.0])) and torch.equal(walk1, torch.tensor([3.0, 4.0]))
    walk0 = torch.tensor([3.0, 6.0])  # walk 0 again: moved by (2, 4) since its snapshot: merged
    algorithms.aggregate(agg, 0, walk0)
    assert torch.equal(agg.global_model, torch.tensor([4.0, 6.0]))  # x + (u - s) / R
    assert torch.equal(walk0, agg.global_model) and agg.joined == {0, 1}


# ----------------------------------------------------------------------------- failures

DIGITS_TEST_IMAGES = 359  # the digits task's test split (the "[start] data loaded" line says so)

def evals_of(events):
    return [e for e in events if e["type"] == "eval" and e["rank"] == 0 and e["model"] == "node0"]


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ["mw", "gossip"])
def test_two_failures_on_six_ranks(tmp_path, algorithm):
    """MW-4 loses its aggregator twice, gossip loses nodes 0 and 1: both finish, keep learning
    after each failure, evaluate where SEMANTICS.md §6 says, and every rank logs both failures."""
    failure_times, train_time = [3.0, 6.0], 9.0
    result = run_main(6, ["--algorithm", algorithm, "--walks", 4, "--graph", "cycle", "--train-time", train_time,
                          "--failure-times", *failure_times, "--out", tmp_path, *FAST, "--eval-interval", 0.5],
                      timeout=240)
    assert result.returncode == 0, result.stderr
    summary, events = read_summary(tmp_path), read_events(tmp_path)
    assert summary["complete"] and summary["evaluated_node"] == 2
    for key, value in counters_from_events(tmp_path).items():
        assert summary[key] == value, key

    failures = [e for e in events if e["type"] == "failure"]
    assert sorted((e["rank"], e["node"]) for e in failures) == [(r, n) for r in range(6) for n in (0, 1)]
    assert all(abs(e["t"] - failure_times[e["node"]]) < 1.0 for e in failures)

    evals = evals_of(events)
    boundaries = [0.0, *failure_times, float("inf")]
    for i, (begin, end) in enumerate(zip(boundaries, boundaries[1:])):  # evaluation follows the failures
        assert {e.get("node", 0) for e in evals if begin + 0.5 < e["t"] < end} == {i}, evals
    before = [e["test_accuracy"] for e in evals if e["t"] < failure_times[-1]][-1]
    # recovered, within noise: two models scored on digits' 359 test images differ by chance by up to
    # about 3 binomial standard errors (0.03 at 0.96)
    noise = 3 * math.sqrt(before * (1 - before) / DIGITS_TEST_IMAGES)
    assert summary["final_test_accuracy"] >= before - noise, (before, noise, summary)
    for begin, end in zip(failure_times, boundaries[2:]):  # still learning: updates after each failure
        assert sum(begin < e["t"] < end for e in events if e["type"] == "update") > 10

    updates = [e for e in events if e["type"] == "update"]
    if algorithm == "mw":  # a failed aggregator relays walks and computes nothing more
        relays = [e for e in events if e["type"] == "relay"]
        assert relays and summary["relays"] == len(relays)
        assert all(e["rank"] < algorithms.aggregator_at(e["t"], failure_times) for e in relays)
        # every update and every relay makes one hop: a send or a self-loop; a relay's send is counted
        # in relay_transfers, not transfers (the authors' v2 counting, --count-relays false)
        assert summary["relay_transfers"] > 0 and summary["relay_bytes"] == summary["relay_transfers"] * summary["model_bytes"]
        assert (summary["transfers"] + summary["relay_transfers"] + summary["self_loops"]
                == summary["iterations"] + summary["relays"])
    else:
        assert summary["transfers"] == 2 * summary["exchanges"]
    for node, failed_at in enumerate(failure_times):  # nothing starts at a failed node
        assert all(e["t"] - e["duration"] < failed_at for e in updates if e["rank"] == node)


# ----------------------------------------------------------------------------- a real crash

@pytest.mark.mpi
def test_killed_rank_ends_the_job_and_is_named(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    job = subprocess.Popen(["mpirun", "-n", "4", sys.executable, "main.py", "--train-time", "120", "--out",
                            str(tmp_path), *map(str, FAST)], cwd=REPO, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log, deadline = tmp_path / "events-rank2.jsonl", time.time() + 120
    while time.time() < deadline and job.poll() is None:  # until rank 2 has done some work
        lines = log.read_text().splitlines() if log.exists() else []
        if sum('"update"' in line for line in lines) >= 3 and (tmp_path / "summary.json").exists():
            break
        time.sleep(0.2)
    assert job.poll() is None, job.communicate()
    pid = json.loads(lines[0])["pid"]  # the "start" event
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    try:
        stdout, stderr = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail("the job outlived a killed rank by 60 s")
    took = time.time() - killed
    print(f"crash detected and job ended {took:.2f} s after SIGKILL")
    assert job.returncode != 0
    assert f"error: rank 2 (pid {pid} on " in stderr and "killed by SIGKILL" in stderr, stderr
    summary = read_summary(tmp_path)
    assert summary["complete"] is False  # what was written so far stays readable
    assert summary["stopped"]["cause"] == "killed" and summary["stopped"]["rank"] == 2, summary
    assert summary["stopped"]["detail"] == "SIGKILL"
    assert sum(e["type"] == "update" for e in read_events(tmp_path)) >= 3


# ----------------------------------------------------------------------------- checkpoint and resume

def run_stopped_and_resumed(tmp_path, ranks, flags, first_part, every):
    """Run with checkpoints until `first_part` seconds, then resume from the last one to the end of the
    budget. Returns the folder, the checkpoint's metadata and the local updates done by the checkpoint."""
    out = tmp_path / "resumed"
    first = run_main(ranks, [*flags, "--train-time", first_part, "--checkpoint-every", every, "--out", out])
    assert first.returncode == 0, first.stderr
    latest = json.loads((out / "checkpoint" / "latest.json").read_text())
    second = run_main(ranks, ["--resume", out, "--train-time", 600], timeout=240)
    assert second.returncode == 0, second.stderr
    events = read_events(out)  # cut back to the checkpoint, then the resumed run's
    done_by_checkpoint = sum(e["type"] == "update" and e["t"] <= latest["elapsed"] for e in events)
    starts = [e.get("resumed_at") for e in events if e["type"] == "start"]
    assert starts == [None] * ranks + [latest["elapsed"]] * ranks
    return out, latest, done_by_checkpoint


@pytest.mark.mpi
def test_resumed_mw_run_reaches_the_uninterrupted_counters(tmp_path):
    walks, budget = 3, 1200
    flags = ["--walks", walks, "--graph", "er", "--er-p", 0.5, "--seed", 1, "--tau", 1, "--max-iterations", budget,
             *FAST]
    whole = run_main(4, [*flags, "--train-time", 600, "--out", tmp_path / "whole"], timeout=240)
    assert whole.returncode == 0, whole.stderr
    out, latest, done_by_checkpoint = run_stopped_and_resumed(tmp_path, 4, flags, first_part=1.0, every=0.5)
    # the one round a 1 s run has room for, cut at or after its time, with work on both sides of it
    assert latest["round"] == 0 and latest["elapsed"] >= 0.5 and 0 < done_by_checkpoint < budget
    a, b = read_summary(tmp_path / "whole"), read_summary(out)
    assert b["complete"] and a["iterations"] == b["iterations"] == budget
    for key in ("transfers", "self_loops"):  # routes are a function of (seed, walk, hop): the same hops
        assert abs(a[key] - b[key]) <= walks, key
    for key, value in counters_from_events(out).items():  # the log was cut back to the checkpoint
        assert b[key] == value, key


@pytest.mark.mpi
@pytest.mark.long
@pytest.mark.timeout(900)
def test_resumed_gossip_run_reaches_the_iteration_budget(tmp_path):
    budget = 800
    flags = ["--algorithm", "gossip", "--graph", "cycle", "--seed", 2, "--max-iterations", budget, *FAST]
    out, latest, done_by_checkpoint = run_stopped_and_resumed(tmp_path, 4, flags, first_part=1.5, every=0.5)
    summary = read_summary(out)
    assert 0 < done_by_checkpoint < budget and summary["complete"] and summary["iterations"] == budget
    for key, value in counters_from_events(out).items():
        assert summary[key] == value, key
    assert summary["transfers"] == 2 * summary["exchanges"]


def test_resume_may_change_only_the_run_length(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(config.config, nodes=4, out="elsewhere")))
    cfg = config.parse_config(["--resume", str(tmp_path), "--train-time", "99"], check_paths=False)
    assert cfg["train_time"] == 99.0 and cfg["out"] == str(tmp_path) and cfg["nodes"] == 4
    with pytest.raises(config.ConfigError, match="--walks cannot change on --resume"):
        config.parse_config(["--resume", str(tmp_path), "--walks", "2"], check_paths=False)
    with pytest.raises(config.ConfigError, match="--out cannot be given with --resume"):
        config.parse_config(["--resume", str(tmp_path), "--out", "x"], check_paths=False)


# ----------------------------------------------------------------------------- bad input: one line, exit 2

def truncated_cifar(tmp_path):
    folder = tmp_path / "cifar"
    write_cifar_folder(str(folder))
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    return ["--task", "cifar10", "--data-dir", folder]


def malformed_graph(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"num_nodes": 2, "edges": [[0, 1],')
    return ["--graph", path]


def model_dir_without_weights(tmp_path):
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "config.json").write_text("{}")
    return ["--task", "mnli", "--data-dir", tmp_path, "--model-dir", tmp_path / "opt"]


def resume_without_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text('{"walks": 1}')
    return ["--resume", tmp_path]


def resume_with_wrong_type(tmp_path):
    (tmp_path / "config.json").write_text('{"walks": "four"}')
    return ["--resume", tmp_path]


def resume_with_corrupt_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text('{"walks": 1}')
    (tmp_path / "checkpoint" / "round3").mkdir(parents=True)
    (tmp_path / "checkpoint" / "latest.json").write_text('{"round": 3, "elapsed": 1.0}')
    for rank in range(2):
        (tmp_path / "checkpoint" / "round3" / f"rank{rank}.pt").write_bytes(b"PK\x03\x04 cut short")
    return ["--resume", tmp_path]


BAD_INPUTS = [  # (ranks, arguments or a function of tmp_path that makes them, the message); one walk fits any size
    (2, malformed_graph, "is not valid JSON"),
    (4, ["--graph", "configs/paper/cycle_graph_20_nodes.json"], "has 20 nodes but the run has 4 ranks"),
    (2, truncated_cifar, "data_batch_3 is truncated or not a CIFAR pickle"),
    (2, model_dir_without_weights, "has none of model.safetensors, pytorch_model.bin"),
    (2, ["--train-time", "soon"], "--train-time must be float, got 'soon'"),
    (2, resume_with_wrong_type, "config.json: walks must be int, got 'four'"),
    (2, ["--failure-times", "-5"], "failure_times must be >= 0 seconds, got [-5.0]"),
    (2, ["--failure-times", "5", "2"], "failure_times must increase"),
    (3, ["--failure-times", "1", "2", "3"], "failure_times lists 3 failures but 3 nodes allow at most 2"),
    (2, resume_without_checkpoint, "no checkpoint there"),
    (2, ["--resume", "/nonexistent/run"], "/nonexistent/run/config.json does not exist"),
    (2, resume_with_corrupt_checkpoint, "checkpoint/round3/rank<N>.pt of rank N is unreadable (truncated or not"),
]


@pytest.mark.mpi
@pytest.mark.parametrize("ranks,args,message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(tmp_path, ranks, args, message):
    args = args(tmp_path) if callable(args) else args
    if "--resume" not in args:
        args = ["--walks", 1, *args]
    result = run_main(ranks, args, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.mpi
def test_mnli_file_not_utf8_is_one_line_naming_file_and_line_on_every_rank(tmp_path, tiny):
    """A data error found while every rank reads the data (not by the early flag checks): the same one line
    and exit code 2 as any bad input, from every rank (Hydra's -print-all-exitcodes: 512 is exit 2)."""
    jsonl = tmp_path / "multinli_1.0"
    jsonl.mkdir()
    write_jsonl(jsonl / "multinli_1.0_dev_matched.jsonl", tiny["dev"], [])
    write_jsonl(jsonl / "multinli_1.0_train.jsonl", tiny["train"][:2], [])
    with open(jsonl / "multinli_1.0_train.jsonl", "ab") as f:  # line 3: a premise in Latin-1, not UTF-8
        f.write(b'{"sentence1": "caf\xe9", "sentence2": "a", "gold_label": "neutral", "genre": "fiction"}\n')
    refuse_unless_marked_mpi()
    result = subprocess.run(
        mpirun_command.command(2, "main.py", ["--walks", 1, "--task", "mnli", "--data-dir", tmp_path,
                                              "--model-dir", tiny["model"], "--out", tmp_path / "out"],
                               launcher="mpirun -print-all-exitcodes"),
        cwd=REPO, capture_output=True, text=True, timeout=120, env=mpirun_command.environment())
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert f"{jsonl / 'multinli_1.0_train.jsonl'} line 3 is not a MultiNLI row (UnicodeDecodeError: " in lines[0], lines
    assert "Traceback" not in result.stdout + result.stderr
    assert re.search(r"Exit codes: \[[^]]+\] 512,512$", result.stdout, re.M), result.stdout


# ----------------------------------------------------------------------------- soak

def run_until_complete(flags, out, run_limit, teardown_limit):
    """One run on 4 ranks; returns the seconds until its summary said complete. A run that is not
    complete within `run_limit` (launch included: a loaded machine starts slowly) is a slow or hung run;
    one that is complete but has not exited `teardown_limit` seconds later hangs in its teardown."""
    job = subprocess.Popen(["mpirun", "-n", "4", sys.executable, "main.py", *map(str, flags)], cwd=REPO, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started, summary = time.time(), out / "summary.json"
    try:
        while job.poll() is None and time.time() - started < run_limit:
            if summary.exists() and read_summary(out).get("complete"):
                break
            time.sleep(0.2)
        took = time.time() - started
        if job.poll() is None and not (summary.exists() and read_summary(out).get("complete")):
            pytest.fail(f"{flags}: not complete after {run_limit} s (slow or hung in training)")
        stdout, stderr = job.communicate(timeout=teardown_limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{flags}: complete, but still running {teardown_limit} s later (hung in teardown)")
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0 and read_summary(out)["complete"], (flags, stderr)
    return took


@pytest.mark.mpi
@pytest.mark.long
@pytest.mark.timeout(7200)  # 30 launches of 4 ranks: minutes on 2 cores, more when it is loaded
def test_soak_randomized_short_runs_never_hang(tmp_path):
    """30 short runs over graph x algorithm x R x alpha x seed (with failures and checkpoints
    now and then), each under a timeout: every one must end cleanly."""
    rng, finished, started = random.Random(2024), 0, time.time()
    for i in range(30):
        algorithm = rng.choice(["mw", "gossip"])
        flags = ["--algorithm", algorithm, "--graph", rng.choice(["cycle", "complete", "er"]), "--er-p", 0.6,
                 "--walks", rng.randint(1, 4), "--alpha", rng.choice([0.1, 1.0, 10.0]), "--seed", rng.randint(0, 999),
                 "--gossip-mode", rng.choice(["free", "per_update"]), "--train-time", 2.0,
                 "--out", tmp_path / str(i), *FAST, "--eval-interval", 0.5]
        if rng.random() < 0.4:
            flags += ["--failure-times", *sorted(rng.sample([0.3, 0.7, 1.1, 1.5], rng.randint(1, 3)))]
        if rng.random() < 0.4:
            flags += ["--checkpoint-every", rng.choice([0.4, 0.9])]
        took = run_until_complete(flags, tmp_path / str(i), run_limit=300, teardown_limit=120)
        print(f"run {i}: complete in {took:.1f} s")
        finished += 1
    print(f"soak: {finished} of 30 randomized runs finished cleanly in {time.time() - started:.0f} s")
    assert finished == 30
