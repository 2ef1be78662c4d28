"""Task digits_bn (the CNN with BatchNorm on digits): it trains on the simulator (one update at a time:
the record is not batchable) and on real ranks, and its BatchNorm statistics follow the rule ResNet-20's do
(SEMANTICS.md §1-2): they stay at each node, only the node's own local steps move them, and a model is
evaluated with the statistics of the node that evaluates it."""
import glob
import json
import os

import pytest
import torch

import models
from analysis import experiments
from core import algorithms, build_run, config
from core.events import read_events
from conftest import read_summary, run_main, seeds_by_cell, simulate_run

pytestmark = pytest.mark.usefixtures("one_thread")
TAU = 5


def batchnorm_layers(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_the_model_has_38k_parameters_and_batchnorm_buffers_outside_them():
    model = models.DigitsCNN()
    assert models.num_params(model) == 38_330 and len(batchnorm_layers(model)) == 2
    assert models.flatten_params(model).numel() == 38_330  # what a walk carries: no running statistics


def test_the_bn_standin_preset_is_the_plans_grid():
    preset = experiments.PRESETS["bn_standin"]
    runs = experiments.expand(preset)
    cells = seeds_by_cell(runs)
    assert cells.keys() == {f"{kind}-V20-a{alpha:g}-{algo}" for kind in ("cycle", "complete") for alpha in (1, 0.1)
                            for algo in ("mw1", "mw10", "gossip")}
    assert all(seeds == set(range(5)) for seeds in cells.values()) and len(runs) == 60
    for run in runs:  # paper_verdicts' simulated hardware and learning settings, the task and budget its own
        changed = {k for k, v in experiments.PAPER_SIM_FLAGS.items() if run["flags"][k] != v}
        assert changed == {"task", "max_iterations"} and run["flags"]["task"] == "digits_bn"
        assert run["flags"]["eval_network_average"]
    assert preset["targets"] == (0.80, 0.85, 0.90)
    assert any("38,330 parameters" in line for line in experiments.bn_standin_notes(preset))


def updates_per_node(out):
    counts = {}
    for event in read_events(out):
        if event["type"] == "update":
            counts[event["rank"]] = counts.get(event["rank"], 0) + 1
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["mw", "gossip"])
def test_simulated_batchnorm_statistics_stay_at_each_node(tmp_path, monkeypatch, algorithm):
    built = {}

    def make_node(cfg, run, v, device, make=algorithms.make_node):
        built[v] = make(cfg, run, v, device)
        return built[v]
    monkeypatch.setattr(algorithms, "make_node", make_node)
    out = tmp_path / algorithm
    summary = simulate_run(out, "--task", "digits_bn", "--algorithm", algorithm, "--walks", "2", "--nodes", "6",
                           "--tau", str(TAU), "--max-iterations", "120", "--eval-interval", "0.5", "--partition",
                           "dirichlet", "--alpha", "0.1", "--save-models", "true")
    assert summary["iterations"] == 120 and summary["final_test_accuracy"] > 0.3  # it learns
    # a node's statistics moved with its own local steps alone: a walk or an exchange that carried them
    # would hand on the steps counted elsewhere
    counts = updates_per_node(out)
    assert len(counts) >= 3
    for v, node in built.items():
        assert [m.num_batches_tracked.item() for m in batchnorm_layers(node.model)] == [TAU * counts.get(v, 0)] * 2
    trained = [v for v in built if counts.get(v)]
    means = [batchnorm_layers(built[v].model)[0].running_mean for v in trained]
    assert all(not torch.equal(means[0], other) for other in means[1:])  # each node's own data, its own statistics
    # the final model is evaluated with node 0's statistics; another node's give another loss
    final = torch.load(out / "model.pt")
    task_data = build_run.build_run(config.parse_config(["--task", "digits_bn"]), 6)["task_data"]

    def test_metrics(v):
        model = models.DigitsCNN()
        models.load_flat_params(model, final)
        for name, buffer in built[v].model.named_buffers():
            model.get_buffer(name).copy_(buffer)
        return models.evaluate(model, task_data.test_x, task_data.test_y)
    loss, accuracy = test_metrics(0)
    assert accuracy == summary["final_test_accuracy"] and loss == pytest.approx(summary["final_test_loss"], abs=1e-6)
    other = next(v for v in trained if v != 0)
    assert test_metrics(other)[0] != pytest.approx(loss, abs=1e-6)


@pytest.mark.mpi
def test_trains_on_two_ranks_with_statistics_at_each_rank(tmp_path):
    out = tmp_path / "run"
    result = run_main(2, ["--task", "digits_bn", "--walks", "1", "--tau", str(TAU), "--train-time", "1.5",
                          "--warmup-time", "0", "--eval-interval", "0.5", "--checkpoint-every", "1", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-2000:]
    summary = read_summary(out)
    assert summary["iterations"] > 0 and 0 <= summary["final_test_accuracy"] <= 1
    # the checkpoint holds each rank's model with its buffers and its counters, taken while compute paused
    with open(out / "checkpoint" / "latest.json") as f:
        round_dir = out / "checkpoint" / f"round{json.load(f)['round']}"
    saved = [torch.load(path, weights_only=False) for path in sorted(glob.glob(str(round_dir / "rank*.pt")))]
    assert len(saved) == 2
    for state in saved:
        tracked = [value.item() for name, value in state["model"].items() if name.endswith("num_batches_tracked")]
        assert tracked == [TAU * state["counters"]["iterations"]] * 2 and tracked[0] > 0
    assert not torch.equal(saved[0]["model"]["bn1.running_mean"], saved[1]["model"]["bn1.running_mean"])
