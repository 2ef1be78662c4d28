"""The authors' behaviour by default, the cleaner variant behind a switch (FIDELITY.md)."""
import json

import networkx as nx
import numpy as np
import pytest
import torch

from core import algorithms
import data
import graphs
from core import config
from core import build_run
from tasks import cifar10_files, multinli
import models
from conftest import REPO

PAPER = "configs/paper/"
ER = PAPER + "erdos_renyi_graph_20_nodes.json"


def cifar_like_run(num_nodes=2, per_class=8, seed=0):
    """A run dict with random 32x32 images, as build_run makes it for cifar10 (no files needed)."""
    generator = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(10), per_class)
    task_data = data.make_task_data(torch.randn(len(labels), 3, 32, 32, generator=generator), labels,
                                    torch.randn(20, 3, 32, 32, generator=generator), np.arange(20) % 10,
                                    num_classes=10, augment=cifar10_files.augment_cifar_batch)
    return dict(task_data=task_data, shards=data.partition_indices(labels, num_nodes, "iid", seed=seed))


def cifar_cfg(**changes):
    cfg = dict(config.config, task="cifar10", batch_size=8, **changes)
    config.validate_config(cfg, check_paths=False)
    return cfg


# ----------------------------------------------------------------------------- 1. learning rate

def test_warmup_starts_from_zero_by_default_and_from_a_tenth_on_request():
    cfg = dict(config.config, lr=0.1, warmup_time=10.0, train_time=100.0, decay_fractions=[0.75, 0.9])
    assert algorithms.lr_at(0.0, cfg) == 0.0
    assert algorithms.lr_at(5.0, cfg) == pytest.approx(0.05)  # lr * min(t / W, 1)
    assert algorithms.lr_at(10.0, cfg) == pytest.approx(0.1)
    assert algorithms.lr_at(80.0, cfg) == pytest.approx(0.01)
    assert algorithms.lr_at(95.0, cfg) == pytest.approx(0.001)
    tenth = dict(cfg, warmup_start="tenth")
    assert algorithms.lr_at(0.0, tenth) == pytest.approx(0.01)
    assert algorithms.lr_at(5.0, tenth) == pytest.approx(0.055)


# ----------------------------------------------------------------------------- 2. weight decay

def test_in_block_batchnorm_is_not_decayed_the_rest_is():
    cfg = cifar_cfg(lr=0.1, momentum=0.0, weight_decay=0.5)
    node = algorithms.make_node(cfg, cifar_like_run(), 0, torch.device("cpu"))
    names = {id(p): name for name, p in node.model.named_parameters()}
    exempt = {names[id(p)] for g in node.optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    in_block = {n for n in names.values() if n.startswith("blocks.") and (".bn1." in n or ".bn2." in n)}
    assert exempt == in_block and len(in_block) == 9 * 2 * 2  # 9 blocks, bn1 and bn2, weight and bias
    assert {"bn.weight", "bn.bias", "blocks.3.shortcut.1.weight", "fc.weight"}.isdisjoint(exempt)
    # a step from all-ones parameters with zero gradients: only weight decay moves them
    with torch.no_grad():
        for p in node.model.parameters():
            p.fill_(1.0)
            p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in node.model.named_parameters()}
    node.optimizer.step()
    for name, p in node.model.named_parameters():
        assert torch.equal(p, before[name]) == (name in in_block), name


def test_scope_all_decays_every_parameter():
    node = algorithms.make_node(cifar_cfg(weight_decay_scope="all"), cifar_like_run(), 0, torch.device("cpu"))
    assert [g["weight_decay"] for g in node.optimizer.param_groups] == [1e-4]


# ----------------------------------------------------------------------------- 3. partition

CIFAR_LABELS = np.repeat(np.arange(10), 5000)
# (mean top-class share, mean classes with >= 5% of a shard, mean KL from uniform) bounds, V = 20, seed 0;
# measured over seeds 0..7: alpha 0.1 0.51..0.63, 2.7..3.6, 1.19..1.37; alpha 1 0.28..0.36, 5.3..6.5,
# 0.38..0.60; alpha 10 0.15..0.17, 9.35..9.6, 0.05..0.08 (the plain split lies in the same ranges)
STAT_BOUNDS = {0.1: ((0.45, 0.70), (2.3, 4.0), (1.05, 1.55)),
               1.0: ((0.24, 0.42), (4.8, 7.0), (0.30, 0.70)),
               10.0: ((0.13, 0.19), (9.1, 9.8), (0.03, 0.10))}


@pytest.mark.parametrize("partition", ["dirichlet", "dirichlet_plain"])
@pytest.mark.parametrize("alpha", sorted(STAT_BOUNDS))
def test_partition_statistics_on_cifar_sized_labels(partition, alpha):
    shards = data.partition_indices(CIFAR_LABELS, 20, partition, alpha, seed=0)
    assert {len(s) for s in shards} == {2500}
    assert len(np.unique(np.concatenate(shards))) == 50_000
    stats = data.partition_stats(CIFAR_LABELS, shards, 10)
    for value, (low, high) in zip(stats.values(), STAT_BOUNDS[alpha]):
        assert low <= value <= high, (stats, STAT_BOUNDS[alpha])


@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_authors_partitioner_balances_two_halves_of_ten(alpha):
    buckets = data.dirichlet_buckets(CIFAR_LABELS, 20, alpha, np.random.default_rng(0))
    sizes = np.array([len(b) for b in buckets])
    assert len(buckets) == 20 and sizes[:10].sum() == sizes[10:].sum() == 25_000
    assert sizes.min() >= 1250  # at least half the mean of its group


def test_plain_split_does_not_balance_at_small_alpha():
    rng = np.random.default_rng(0)
    smallest = []
    for _ in range(5):  # the plain split's per-node lists, before re-chunking
        sizes = np.zeros(20)
        for c in range(10):
            sizes += np.floor(rng.dirichlet(0.1 * np.ones(20)) * 5000)
        smallest.append(sizes.min())
    assert min(smallest) < 1250  # what the authors' redraw rules out


def test_partition_is_seeded_and_unknown_ones_are_named():
    a = data.partition_indices(CIFAR_LABELS, 20, "dirichlet", 0.1, seed=3)
    b = data.partition_indices(CIFAR_LABELS, 20, "dirichlet", 0.1, seed=3)
    c = data.partition_indices(CIFAR_LABELS, 20, "dirichlet", 0.1, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    with pytest.raises(data.DataError, match="'zipf'.*dirichlet, dirichlet_plain, iid"):
        data.partition_indices(CIFAR_LABELS, 20, "zipf")


def test_cli_prints_statistics_and_at_most_8_nodes():
    import subprocess
    import sys
    from conftest import REPO
    out = subprocess.run([sys.executable, "data.py", "--nodes", "20", "--alpha", "0.1"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    lines = out.stdout.strip().splitlines()
    assert "KL from uniform" in lines[0] and "top class" in lines[0]
    assert len(lines) == 1 + 1 + 8 + 1 and lines[-1].startswith("... 12 more nodes")


# ----------------------------------------------------------------------------- 4. gossip graphs

def edge_set(G):
    return {tuple(sorted(e)) for e in G.edges}


def test_paper_er_split_v1_is_30_er_edges_v2_adds_2_11():
    G = graphs.build_graph(ER, 20)
    v1, active_v1 = graphs.gossip_graph(G, ER, paper_version="v1")
    v2, active_v2 = graphs.gossip_graph(G, ER)  # v2 is the default
    assert v1.number_of_edges() == 30 and edge_set(v1) <= edge_set(G)
    assert edge_set(v2) == edge_set(v1) | {(2, 11)} and (2, 11) not in edge_set(G)
    assert active_v1 == active_v2 == [1, 2, 3, 5, 8, 15, 18, 19] and 0 not in active_v1  # node 0 passive
    assert nx.is_connected(v1)


def test_v1_and_v2_agree_on_cycle_and_complete():
    for name in ("cycle_graph_20_nodes.json", "complete_graph_20_nodes.json"):
        G = graphs.build_graph(PAPER + name, 20)
        assert edge_set(graphs.gossip_graph(G, PAPER + name, "v1")[0]) == \
            edge_set(graphs.gossip_graph(G, PAPER + name, "v2")[0])


def test_v1_file_is_the_authors_json_format():
    with open(PAPER + "v1/bipartite_erdos_renyi_graph_20_nodes.json") as f:
        spec = json.load(f)
    assert spec["num_nodes"] == 20 and len(spec["edges"]) == 30


# ----------------------------------------------------------------------------- 5. MNLI text and loss

def test_authors_text_ends_with_the_literal_string(tiny, tokenizer):
    task = multinli.load_mnli(tiny["hf"], tiny["model"], style="authors")
    premise, hypothesis, label, _ = tiny["train"][0]
    length = int((task.train_y[0] != multinli.IGNORE).sum())
    text = tokenizer.decode(task.train_x[0, :length], skip_special_tokens=True)
    assert text.endswith(f" {multinli.LABEL_WORDS[label]}<|endoftext|>")
    assert task.train_x[0, length - 1] != tokenizer.eos_token_id
    masked = multinli.load_mnli(tiny["hf"], tiny["model"], style="masked")
    assert masked.train_x[0, int((masked.train_y[0] != multinli.IGNORE).sum()) - 1] == tokenizer.eos_token_id


def test_authors_loss_scores_padding_masked_loss_does_not(tiny, model):
    task = tiny["task"]
    lengths = (task.train_y != multinli.IGNORE).sum(1)
    i, j = int(lengths.argmin()), int(lengths.argmax())
    ids, labels = task.train_x[[i, j]], task.train_y[[i, j]]
    width = int(lengths[j])
    with torch.no_grad():
        mask = (labels[:, :width] != multinli.IGNORE).long()
        logits = model(input_ids=ids[:, :width], attention_mask=mask).logits
        by_hand = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:width].flatten())
        authors = multinli.lm_loss_with_padding(model, ids, labels)
        masked = multinli.lm_loss(model, ids, labels)
    assert authors == pytest.approx(float(by_hand), rel=1e-5)
    # a random tiny model scores padding about like text, so compare what each counts
    real = labels[:, 1:width] != multinli.IGNORE
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(model(input_ids=ids[:, :width]).logits[:, :-1].flatten(0, 1),
                                                labels[:, 1:width].flatten(), ignore_index=multinli.IGNORE,
                                                reduction="sum")
    assert masked == pytest.approx(float(nll / real.sum()), rel=1e-5)
    positions = multinli.summed_nll(model, ids, labels, include_padding=True)[1]
    assert positions == 2 * (width - 1) > multinli.summed_nll(model, ids, labels)[1] == int(real.sum())


def test_node_loss_follows_mnli_style(tiny):
    cfg = dict(config.config, task="mnli", model_dir=tiny["model"])
    run = dict(task_data=tiny["task"], shards=[np.arange(10)])
    assert algorithms.make_node(cfg, run, 0, torch.device("cpu")).loss_fn is multinli.lm_loss_with_padding
    masked = algorithms.make_node(dict(cfg, mnli_style="masked"), run, 0, torch.device("cpu"))
    assert masked.loss_fn is multinli.lm_loss


@pytest.mark.slow
def test_mnli_evaluate_gives_train_and_test_metrics(tiny):
    cfg = dict(config.config, task="mnli", model_dir=tiny["model"], eval_train_samples=64)  # one authors' batch
    run = dict(task_data=tiny["task"], shards=[np.arange(10)])
    node = algorithms.make_node(cfg, run, 0, torch.device("cpu"))
    metrics = algorithms.make_evaluate(cfg, run, node)(node.model)
    assert set(metrics) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert np.isfinite(metrics["train_loss"]) and np.isnan(metrics["train_accuracy"])
    masked = algorithms.make_evaluate(dict(cfg, mnli_style="masked"), run, node)(node.model)
    assert masked["test_accuracy"] == metrics["test_accuracy"] and masked["test_loss"] != metrics["test_loss"]


# ----------------------------------------------------------------------------- 6. BatchNorm recalibration

@pytest.mark.slow
def test_bn_recalibration_uses_a_copy_and_averages_the_node_batches():
    cfg = cifar_cfg(bn_recalibrate=3)
    run = cifar_like_run()
    node = algorithms.make_node(cfg, run, 1, torch.device("cpu"))
    stored = {k: v.clone() for k, v in node.model.state_dict().items()}
    position = node.batches.position
    metrics = algorithms.make_evaluate(cfg, run, node)(node.model)
    assert all(torch.equal(v, stored[k]) for k, v in node.model.state_dict().items())  # node's stats untouched
    assert node.batches.position == position  # and its training batch stream too
    plain = algorithms.make_evaluate(dict(cfg, bn_recalibrate=0), run, node)(node.model)
    assert metrics["test_loss"] != plain["test_loss"]
    # the copy's stem statistics are the mean of the k batches' means
    batches = data.ShardBatches(run["task_data"].train_x, run["task_data"].train_y, run["shards"][1], 8, seed=5,
                                augment=cifar10_files.augment_cifar_batch)
    copy = models.recalibrated_batchnorm(node.model, batches, 3)
    replay = data.ShardBatches(run["task_data"].train_x, run["task_data"].train_y, run["shards"][1], 8, seed=5,
                               augment=cifar10_files.augment_cifar_batch)
    with torch.no_grad():
        means = [node.model.conv(replay.next_batch()[0]).mean((0, 2, 3)) for _ in range(3)]
    assert torch.allclose(copy.bn.running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert not copy.training and node.model.bn.momentum == 0.1


# ----------------------------------------------------------------------------- 7. evaluation

def test_evaluate_reports_a_fixed_half_of_the_training_set_and_the_test_split():
    cfg = config.parse_config(["--nodes", "4", "--partition", "iid"])
    run = build_run.build_run(cfg, 4)
    node = algorithms.make_node(cfg, run, 0, torch.device("cpu"))
    metrics = algorithms.make_evaluate(cfg, run, node)(node.model)
    task_data = run["task_data"]
    half = data.evaluation_train_subset(len(task_data.train_x), 0, cfg["seed"])
    assert len(half) == len(task_data.train_x) // 2 and torch.equal(half, data.evaluation_train_subset(
        len(task_data.train_x), 0, cfg["seed"]))
    assert (metrics["train_loss"], metrics["train_accuracy"]) == models.evaluate(
        node.model, task_data.train_x[half], task_data.train_y[half])
    assert (metrics["test_loss"], metrics["test_accuracy"]) == models.evaluate(node.model, task_data.test_x,
                                                                               task_data.test_y)
    capped = data.evaluation_train_subset(len(task_data.train_x), 50, cfg["seed"])
    assert len(capped) == 50 and not torch.equal(capped, data.evaluation_train_subset(len(task_data.train_x), 50, 1))


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("flag, value, allowed", [
    ("--warmup-start", "half", "zero, tenth"), ("--weight-decay-scope", "none", "authors, all"),
    ("--paper-version", "v3", "v1, v2"), ("--mnli-style", "eos", "authors, masked"),
    ("--bn-recalibrate", "-1", ">= 0"), ("--eval-train-samples", "-5", ">= 0"),
    ("--bn-recalibrate", "2", "task digits_bn or cifar10")])
def test_bad_fidelity_switches_give_one_line(flag, value, allowed):
    with pytest.raises(config.ConfigError) as error:
        config.parse_config([flag, value], check_paths=False)
    assert allowed in str(error.value) and "\n" not in str(error.value)
