"""The MW and gossip rules on hand-made tensors: no MPI."""
import numpy as np
import pytest
import torch

from core import algorithms
import graphs
from core import config
from core import build_run


def test_merge_at_aggregator_by_hand():
    agg = algorithms.Aggregator(torch.tensor([1.0, 1.0]), num_walks=2)
    walk = torch.tensor([3.0, 5.0])  # walk 0 moved by (2, 4) since it last left node 0
    algorithms.merge_at_aggregator(agg, 0, walk)
    assert torch.equal(agg.global_model, torch.tensor([2.0, 3.0]))  # x + (u - s) / R
    assert torch.equal(agg.snapshots[0], agg.global_model)  # s_0 <- x
    assert torch.equal(walk, agg.global_model)  # the walk leaves with the global model
    assert torch.equal(agg.snapshots[1], torch.tensor([1.0, 1.0]))  # other walks' snapshots untouched
    walk1 = torch.tensor([0.0, 1.0])  # walk 1 moved by (-1, 0) from its old snapshot
    algorithms.merge_at_aggregator(agg, 1, walk1)
    assert torch.equal(agg.global_model, torch.tensor([1.5, 3.0]))
    assert torch.equal(walk1, agg.global_model)


def test_merge_with_one_walk_is_plain_sgd():
    x0 = torch.randn(100, generator=torch.Generator().manual_seed(0))
    agg = algorithms.Aggregator(x0, num_walks=1)
    walk = x0 + torch.randn(100, generator=torch.Generator().manual_seed(1))
    expected = walk.clone()
    algorithms.merge_at_aggregator(agg, 0, walk)
    assert torch.equal(agg.global_model, expected)  # x = u exactly when R = 1
    assert torch.equal(walk, agg.global_model)
    assert torch.equal(agg.snapshots[0], expected)  # s_0 <- x
    # a walk that travels in bf16 (--transfer-dtype): the fp32 global model is its value exactly, as the
    # four-pass rule (x - s) + u would give; the walk leaves unchanged
    walk16 = (expected + 1).to(torch.bfloat16)
    algorithms.merge_at_aggregator(agg, 0, walk16)
    assert agg.global_model.dtype == torch.float32
    assert torch.equal(agg.global_model, walk16.float()) and torch.equal(agg.snapshots[0], walk16.float())


def test_gossip_average_keeps_the_delta_that_landed_meanwhile():
    sent, received = torch.tensor([2.0, 0.0]), torch.tensor([4.0, 2.0])
    live = sent.clone()
    algorithms.gossip_average(live, sent, received)
    assert torch.equal(live, torch.tensor([3.0, 1.0]))  # plain pairwise average
    live = sent + torch.tensor([1.0, -1.0])  # a local update landed between send and receive
    algorithms.gossip_average(live, sent, received)
    assert torch.equal(live, torch.tensor([4.0, 0.0]))  # average plus the whole delta


def test_apply_delta_adds_the_stale_update():
    live = torch.tensor([10.0, 10.0])  # averaged since the compute started from `before`
    algorithms.apply_delta(live, before=torch.tensor([1.0, 2.0]), after=torch.tensor([0.5, 3.0]))
    assert torch.equal(live, torch.tensor([9.5, 11.0]))


def test_lr_schedule_on_wall_clock():
    cfg = dict(config.config, lr=0.1, warmup_time=10.0, train_time=100.0, decay_fractions=[0.75, 0.9], warmup_start="tenth")
    assert algorithms.lr_at(0.0, cfg) == pytest.approx(0.01)
    assert algorithms.lr_at(5.0, cfg) == pytest.approx(0.055)
    assert algorithms.lr_at(50.0, cfg) == pytest.approx(0.1)
    assert algorithms.lr_at(80.0, cfg) == pytest.approx(0.01)
    assert algorithms.lr_at(95.0, cfg) == pytest.approx(0.001)


def test_budget_shares_sum_to_the_total():
    for total, walkers in [(10, 3), (7, 7), (3, 5), (1000, 8)]:
        shares = [algorithms.walk_budget(total, walkers, i) for i in range(walkers)]
        assert sum(shares) == total and max(shares) - min(shares) <= 1
    assert algorithms.walk_budget(0, 4, 0) is None


def test_walk_routes_are_reproducible_and_follow_edges():
    G = graphs.build_graph("er", 10, er_p=0.3, seed=3)
    route = algorithms.walk_route(G, 2, 200, seed=5)
    assert route[0] == 2 and route == algorithms.walk_route(G, 2, 200, seed=5)
    assert route != algorithms.walk_route(G, 2, 200, seed=6)
    assert all(u == v or G.has_edge(u, v) for u, v in zip(route, route[1:]))
    assert any(u == v for u, v in zip(route, route[1:]))  # MH rejections: self-loops on an irregular graph
    # hop k depends on (seed, walk, k) only: the same hop from the same node always goes the same way
    hops = {algorithms.next_node(G, 4, 5, 1, 7) for _ in range(5)}
    assert len(hops) == 1


@pytest.mark.slow
def test_local_update_moves_the_params_and_keeps_optimizer_state():
    cfg = config.parse_config(["--nodes", "4", "--partition", "iid"])
    run = build_run.build_run(cfg, 4)
    node = algorithms.make_node(cfg, run, 1, torch.device("cpu"))
    params = torch.zeros(sum(p.numel() for p in node.model.parameters()))
    start = params.clone()
    loss = algorithms.local_update(node, params, tau=3, lr=0.05)
    assert np.isfinite(loss) and not torch.equal(params, start)
    assert len(node.optimizer.state) > 0  # momentum buffers persist for the next visit
