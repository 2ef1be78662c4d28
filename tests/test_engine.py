"""The MPI engine under real mpirun: equivalences, exact counters, clean ends, learning."""
import os

import pytest
import torch

from core import algorithms
from core import config
from core import build_run
from core.events import read_events
from conftest import FAST, counters_from_events, read_summary, run_main

pytestmark = pytest.mark.mpi


def test_mw_with_one_walk_is_single_random_walk_sgd(tmp_path):
    """The MPI run's walk equals a sequential replay of the same route in one process."""
    visits, tau, seed = 30, 2, 4
    flags = ["--walks", 1, "--graph", "er", "--er-p", 0.5, "--tau", tau, "--seed", seed, "--max-iterations", visits,
             "--train-time", 600, "--save-models", "true", "--out", tmp_path, *FAST]
    result = run_main(4, flags)
    assert result.returncode == 0, result.stderr

    cfg = config.parse_config(list(map(str, flags)))
    run = build_run.build_run(cfg, 4)
    torch.set_num_threads(1)  # as each rank does: the same reduction order, so the same floats
    nodes = [algorithms.make_node(cfg, run, v, torch.device("cpu")) for v in range(4)]
    walk = torch.nn.utils.parameters_to_vector(nodes[0].model.parameters()).detach().clone()
    aggregator = algorithms.Aggregator(walk, num_walks=1)
    sgd = walk.clone()
    route = algorithms.walk_route(run["graph"], 0, visits, seed)
    for v in route:
        lr = algorithms.lr_at(0.0, cfg)  # no warm-up, no decay within the budget: constant lr
        algorithms.local_update(nodes[v], walk, tau, lr)
        if v == 0:
            algorithms.merge_at_aggregator(aggregator, 0, walk)
    nodes = [algorithms.make_node(cfg, run, v, torch.device("cpu")) for v in range(4)]
    for v in route:  # single random-walk SGD: no merge at all
        algorithms.local_update(nodes[v], sgd, tau, algorithms.lr_at(0.0, cfg))

    ranks = [e["rank"] for e in read_events(tmp_path) if e["type"] == "update"]
    assert ranks == route
    mpi_walk = torch.load(os.path.join(tmp_path, "walk0.pt"))
    assert torch.equal(mpi_walk, walk)
    assert torch.equal(torch.load(os.path.join(tmp_path, "model.pt")), aggregator.global_model)
    assert torch.equal(mpi_walk, sgd)  # with R = 1 the merge sets x = u exactly


@pytest.mark.parametrize("algorithm,graph", [("mw", "er"), ("gossip", "er"), ("gossip", "cycle")])
def test_counters_match_events_and_formulas(tmp_path, algorithm, graph):
    result = run_main(4, ["--algorithm", algorithm, "--graph", graph, "--er-p", 0.5, "--walks", 3, "--seed", 1,
                          "--train-time", 6, "--out", tmp_path, *FAST])
    assert result.returncode == 0, result.stderr
    summary, counted = read_summary(tmp_path), counters_from_events(tmp_path)
    for key, value in counted.items():
        assert summary[key] == value, key
    assert summary["iterations"] > 0
    assert summary["bytes_sent"] == summary["transfers"] * summary["model_bytes"]
    assert summary["model_bytes"] == 4 * 9610  # the digits MLP: 64*128+128 + 128*10+10 fp32 parameters
    if algorithm == "mw":
        assert summary["transfers"] == summary["iterations"] - summary["self_loops"]
        assert summary["self_loops"] > 0  # the ER graph is irregular: MH rejections happen
    else:
        assert summary["transfers"] == 2 * summary["exchanges"] > 0


def test_both_algorithms_learn_digits(tmp_path):
    """Learning happens: > 80% test accuracy within 10 s of training on 4 ranks."""
    for algorithm in ("mw", "gossip"):
        out = tmp_path / algorithm
        result = run_main(4, ["--algorithm", algorithm, "--graph", "cycle", "--train-time", 10, "--out", out,
                              "--task", "digits", "--eval-interval", 5])
        assert result.returncode == 0, result.stderr
        summary = read_summary(out)
        assert summary["final_test_accuracy"] > 0.8, (algorithm, summary)
        assert "test acc" in result.stdout and (out / "config.json").exists()


TAKE_UP_SLACK = 0.05  # s from the protocol's decision to take an update up to its compute's first step


def assert_no_update_starts_past(out, train_time):
    """Every rank stops taking up work at the budget: no local update in any log began after it
    (the run's timeout, not a wall-clock bound, catches a rank that never stops). An update taken
    up just before the budget starts computing a moment later (the lock released, gossip's copy of
    the model made): TAKE_UP_SLACK; a rank that ignored the budget would go on updating until the run ends."""
    late = [e for e in read_events(out)
            if e["type"] == "update" and e["t"] - e["duration"] > train_time + TAKE_UP_SLACK]
    assert not late, late[:3]


@pytest.mark.parametrize("algorithm", ["mw", "gossip"])
@pytest.mark.parametrize("graph", ["cycle", "complete", "er"])
def test_runs_end_cleanly_within_budget(tmp_path, algorithm, graph):
    result = run_main(4, ["--algorithm", algorithm, "--graph", graph, "--walks", 2, "--train-time", 4,
                          "--gossip-mode", "per_update" if graph == "complete" else "free",
                          "--out", tmp_path, *FAST], timeout=90)
    assert result.returncode == 0, result.stderr
    assert read_summary(tmp_path)["complete"]
    assert_no_update_starts_past(tmp_path, 4)


@pytest.mark.long
def test_no_deadlock_across_seeds_and_eight_ranks(tmp_path):
    for seed in range(6):
        algorithm, graph = ["mw", "gossip"][seed % 2], ["cycle", "complete", "er"][seed % 3]
        out = tmp_path / str(seed)
        result = run_main(8, ["--algorithm", algorithm, "--graph", graph, "--walks", 1 + seed, "--seed", seed,
                              "--train-time", 3, "--out", out, *FAST], timeout=120)
        assert result.returncode == 0, (seed, result.stderr)
        assert read_summary(out)["complete"]
        assert_no_update_starts_past(out, 3)


BAD_CONFIGS = [
    (["--bogus", "1"], "unknown flag --bogus"),
    (["--walks", "9"], "walks 9 exceeds the 2 nodes"),
    (["--alpha", "0"], "alpha must be > 0, got 0.0"),
    (["--tau", "0"], "tau must be >= 1, got 0"),
    (["--algorithm", "sgd"], "algorithm 'sgd' is not one of mw, gossip"),
    (["--graph", "star"], "graph 'star' is not one of cycle, complete, er"),
    (["--task", "imagenet"], "task 'imagenet' is not one of"),
    (["--walks", "two"], "--walks must be int, got 'two'"),
    (["--task", "cifar10", "--data-dir", "/nonexistent"], "data_dir '/nonexistent' does not exist (task cifar10 reads the CIFAR-10 python batches from it)"),
]


@pytest.mark.parametrize("args,message", BAD_CONFIGS)
def test_bad_config_is_one_line_and_exit_2(args, message):
    result = run_main(2, args, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_disconnected_graph_json_is_rejected(tmp_path):
    path = tmp_path / "two_pieces.json"
    path.write_text('{"num_nodes": 4, "edges": [[0, 1], [2, 3]]}')
    result = run_main(4, ["--graph", path], timeout=60)
    assert result.returncode == 2 and "disconnected" in result.stderr and "Traceback" not in result.stderr
