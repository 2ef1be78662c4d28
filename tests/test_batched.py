"""Batched local updates (batched.py) give what the sequential path (algorithms.local_update)
gives: losses, parameters, momentum buffers and BatchNorm statistics within float rounding,
and, in the simulator, the same events."""

import numpy as np
import pytest
import torch

from core import algorithms
from simulation import batched
import data
from core import config
from core import build_run
import models
from tasks import cifar10_files
import simulate
from core.events import read_events
from conftest import simulate_run

pytestmark = pytest.mark.usefixtures("one_thread")


def twin_nodes(cfg, run):
    """Two identical sets of the run's nodes: one for each path."""
    return [[algorithms.make_node(cfg, run, v, torch.device("cpu")) for v in range(cfg["nodes"])] for _ in range(2)]


def run_both(cfg, run, rounds, lrs=(0.05, 0.1), seed=0, min_batch=1):
    """`rounds` rounds in which a seeded random subset of nodes each runs one update from its last
    result at its own lr: sequentially on one set of nodes, as one batch per round on the other
    (rounds of fewer than min_batch updates one at a time there too)."""
    sequential, batch_nodes = twin_nodes(cfg, run)
    updates = batched.BatchedUpdates(batch_nodes, cfg["tau"], min_batch=min_batch)
    x0 = models.flatten_params(sequential[0].model)
    seq_params = [x0.clone() for _ in sequential]
    bat_params = [x0.clone() for _ in batch_nodes]
    rng = np.random.default_rng(seed)
    seq_losses, bat_losses = [], []
    for _ in range(rounds):
        chosen = sorted(rng.choice(len(sequential), size=rng.integers(1, len(sequential) + 1), replace=False))
        lr = {v: float(rng.choice(lrs)) for v in chosen}
        with batched.aten_kernels():  # the exact reference: see aten_kernels
            seq_losses += [algorithms.local_update(sequential[v], seq_params[v], cfg["tau"], lr[v]) for v in chosen]
        pending = [updates.submit(v, bat_params[v], lr[v]) for v in chosen]
        bat_losses += [update.loss() for update in pending]
    return sequential, batch_nodes, seq_params, bat_params, seq_losses, bat_losses


def assert_same_nodes(sequential, batch_nodes, seq_params, bat_params, atol, momentum_atol=None):
    """Parameters, buffers and momentum within atol; momentum_atol="relative": each momentum buffer
    within half its norm and the median buffer within 1e-4 of its norm (see the ResNet-20 test)."""
    momentum_errors = []
    for seq_node, bat_node, seq, bat in zip(sequential, batch_nodes, seq_params, bat_params):
        torch.testing.assert_close(bat, seq, rtol=0, atol=atol)
        torch.testing.assert_close(models.flatten_params(bat_node.model), seq, rtol=0, atol=atol)
        for seq_buffer, bat_buffer in zip(seq_node.model.buffers(), bat_node.model.buffers()):
            torch.testing.assert_close(bat_buffer, seq_buffer, rtol=0, atol=atol)
        for seq_param, bat_param in zip(seq_node.model.parameters(), bat_node.model.parameters()):
            seq_state, bat_state = seq_node.optimizer.state[seq_param], bat_node.optimizer.state[bat_param]
            assert seq_state.keys() == bat_state.keys()
            if "momentum_buffer" not in seq_state:
                continue
            seq_momentum, bat_momentum = seq_state["momentum_buffer"], bat_state["momentum_buffer"]
            if momentum_atol == "relative":
                momentum_errors.append(((bat_momentum - seq_momentum).norm() / seq_momentum.norm()).item())
            else:
                torch.testing.assert_close(bat_momentum, seq_momentum, rtol=0, atol=momentum_atol or atol)
    if momentum_errors:
        assert max(momentum_errors) < 0.5 and float(np.median(momentum_errors)) < 1e-4, momentum_errors


@pytest.mark.slow
def test_mlp_updates_match_the_sequential_path(tmp_path):
    cfg = config.parse_config(["--task", "digits", "--nodes", "5", "--out", str(tmp_path)])
    run = build_run.build_run(cfg, cfg["nodes"])
    *state, seq_losses, bat_losses = run_both(cfg, run, rounds=70)
    assert len(seq_losses) >= 200
    np.testing.assert_allclose(bat_losses, seq_losses, rtol=0, atol=1e-5)
    assert_same_nodes(*state, atol=1e-5)


@pytest.mark.slow
def test_small_flushes_run_one_at_a_time_on_the_nodes_bank_rows(tmp_path):
    """Flushes below min_batch go through algorithms.local_update on the node itself; mixed with
    vmapped ones, every node's parameters, momentum and results still equal the sequential path's."""
    cfg = config.parse_config(["--task", "digits", "--nodes", "5", "--out", str(tmp_path)])
    run = build_run.build_run(cfg, cfg["nodes"])
    *state, seq_losses, bat_losses = run_both(cfg, run, rounds=40, min_batch=3, seed=1)
    np.testing.assert_allclose(bat_losses, seq_losses, rtol=0, atol=1e-5)
    assert_same_nodes(*state, atol=1e-5)
    assert batched.BatchedUpdates(state[1], cfg["tau"]).min_batch == batched.CPU_MIN_BATCH


def cifar_shaped_run(cfg, samples=48):
    """Random CIFAR-shaped images, with CIFAR's augmentation, split over the nodes."""
    generator = torch.Generator().manual_seed(cfg["seed"])
    images = torch.randn(samples, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (samples,), generator=generator)
    task_data = data.make_task_data(images, labels, images[:8], labels[:8], num_classes=10,
                                    augment=cifar10_files.augment_cifar_batch)
    shards = data.partition_indices(task_data.partition_labels, cfg["nodes"], seed=cfg["seed"])
    return dict(task_data=task_data, shards=shards)


@pytest.mark.slow
def test_resnet20_updates_match_the_sequential_path_batchnorm_included(tmp_path):
    cfg = config.parse_config(["--task", "cifar10", "--data-dir", str(tmp_path), "--nodes", "3", "--tau", "2", "--batch-size", "8",
                             "--out", str(tmp_path)])
    # small steps and few: float rounding grows fast through BatchNorm on batches of 8 random images
    # (4e-5 in the losses after 4 rounds at lr 0.01, 5e-2 at lr 0.1; 2e-5 after these 2 rounds on one
    # Intel Xeon, under 1e-5 on an AMD EPYC: the kernels' summation order differs by CPU); a wrong
    # convolution, BatchNorm statistic or momentum shows at 1e-2 and more, and the optimizer's
    # exactness is the MLP test's
    *state, seq_losses, bat_losses = run_both(cfg, cifar_shaped_run(cfg), rounds=2, lrs=(0.005, 0.01))
    np.testing.assert_allclose(bat_losses, seq_losses, rtol=0, atol=1e-4)
    # the rounding grows on the way back through the 19 BatchNorm layers: on one Intel Xeon (AVX-512)
    # the first convolution differs by 9e-4 (the last layer by 7e-6), under 1e-4 everywhere on an AMD
    # EPYC; momentum buffers are gradient-sized (the parameters see them times lr): the first layers'
    # differ by up to 15% of their norm on that Xeon, the median buffer by 2e-6, while a wrong momentum
    # rule moves them all
    assert_same_nodes(*state, atol=2e-3, momentum_atol="relative")
    sequential, batch_nodes = state[:2]
    bn = [node.model.bn for node in batch_nodes]
    assert all(m.num_batches_tracked.item() > 0 for m in bn)  # BatchNorm statistics were updated, and differ by node
    assert not torch.equal(bn[0].running_mean, bn[1].running_mean)


FLOAT_FIELDS = {"loss": 1e-5, "test_loss": 1e-5, "test_accuracy": 0.0}  # absolute tolerances


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["mw", "gossip"])
def test_batched_event_logs_equal_the_sequential_ones_up_to_rounding(tmp_path, monkeypatch, algorithm):
    flags = ["--algorithm", algorithm, "--nodes", "8", "--walks", "3", "--task", "digits", "--max-iterations", "200",
             "--eval-interval", "0.2", "--seed", "4"]
    monkeypatch.setattr(simulate, "BATCHED", False)
    simulate_run(tmp_path / "sequential", *flags)
    monkeypatch.setattr(simulate, "BATCHED", True)
    simulate_run(tmp_path / "batched", *flags)
    simulate_run(tmp_path / "again", *flags)
    for rank in range(8):
        name = f"events-rank{rank}.jsonl"
        with open(tmp_path / "batched" / name, "rb") as first, open(tmp_path / "again" / name, "rb") as again:
            assert first.read() == again.read()
    sequential, batch = read_events(tmp_path / "sequential"), read_events(tmp_path / "batched")
    assert len(sequential) == len(batch) and sum(e["type"] == "eval" for e in batch) > 3
    for seq_event, bat_event in zip(sequential, batch):
        assert {k: v for k, v in seq_event.items() if k not in FLOAT_FIELDS} == \
               {k: v for k, v in bat_event.items() if k not in FLOAT_FIELDS}
        for field, tolerance in FLOAT_FIELDS.items():
            if field in seq_event:
                assert abs(seq_event[field] - bat_event[field]) <= tolerance + 1e-12, (field, seq_event, bat_event)


@pytest.mark.parametrize("flags", [["--emulate-params", "4"], ["--compute-time-dist", "measured"]])
def test_what_cannot_be_batched_runs_sequentially(tmp_path, flags):
    cfg = config.parse_config(["--nodes", "4", "--walks", "2", "--task", "digits", "--max-iterations", "8",
                             *flags, "--out", str(tmp_path)])
    run = build_run.build_run(cfg, cfg["nodes"])
    nodes = [algorithms.make_node(cfg, run, v, torch.device("cpu")) for v in range(4)]
    assert simulate.Network(cfg, run, simulate.VirtualClock(), nodes.__getitem__).batch is None
    assert simulate_run(tmp_path / "run", *flags, "--nodes", "4", "--walks", "2", "--task", "digits",
                        "--max-iterations", "8")["iterations"] == 8


def test_adam_nodes_are_left_to_the_sequential_path(tmp_path):
    cfg = config.parse_config(["--task", "digits", "--nodes", "2", "--walks", "1", "--out", str(tmp_path)])
    node = algorithms.make_node(cfg, build_run.build_run(cfg, 2), 0, torch.device("cpu"))
    assert batched.can_batch(node)
    node.optimizer = torch.optim.Adam(node.model.parameters())
    assert not batched.can_batch(node)
