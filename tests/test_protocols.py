"""The protocols (protocols.py) are the algorithms, written once: the simulator and real mpirun
run the same code. Checked here: deterministic simulation testing of the real protocol code on
the virtual clock under many randomized schedules; agreement of the two transports on a failure
run; and a third algorithm added as one protocol, run on both transports."""
import json
import os
from collections import Counter

import numpy as np
import pytest
import torch

from core import algorithms
import graphs
from core import config
import models
import protocols
import simulate
from core.events import EventLog, read_events
from conftest import REPO, read_summary, run_main, simulate_run

pytestmark = pytest.mark.usefixtures("one_thread")  # the simulated runs

MODEL_PARAMS = 4  # the protocol is what is under test: no SGD, a tiny flat model


def random_schedule(rng):
    """One randomized configuration: algorithm, graph, V, R, delays, failures, budget."""
    algorithm = str(rng.choice(["mw", "gossip"]))
    num_nodes = int(rng.integers(2, 9))
    graph = str(rng.choice(["cycle", "complete", "er"]))
    if algorithm == "gossip" and graph == "cycle" and num_nodes % 2:
        graph = "complete"  # an odd cycle has no bipartite split with every node in it
    failures = sorted(rng.uniform(0, 0.8, size=int(rng.integers(0, num_nodes)))) if rng.random() < 0.4 else []
    failures = [round(t, 6) for t in failures]
    if any(a >= b for a, b in zip(failures, failures[1:])):
        failures = []
    by_time = rng.random() < 0.5
    return dict(config.config, algorithm=algorithm, nodes=num_nodes, graph=graph, er_p=0.6,
                walks=int(rng.integers(1, num_nodes + 1)), seed=int(rng.integers(1000)),
                gossip_mode=str(rng.choice(["free", "per_update"])),
                gossip_coupling=str(rng.choice(["authors", "immediate"])), count_relays=bool(rng.random() < 0.5),
                gossip_interval=float(rng.choice([0.0, 0.02])),
                compute_time_dist=str(rng.choice(["fixed", "exponential"])),
                compute_time_mean=float(rng.uniform(0.005, 0.05)), bandwidth=float(10 ** rng.uniform(3, 7)),
                latency=float(rng.uniform(0, 0.01)), failure_times=failures, emulate_params=MODEL_PARAMS,
                laziness=float(rng.choice([0.0, 0.3])), train_time=float(rng.uniform(0.1, 1)) if by_time else 1e9,
                max_iterations=0 if by_time else int(rng.integers(1, 60)), eval_interval=1e9, out="")


def simulate_protocols(cfg, folder):
    """The simulator's drivers and the real protocols, with flat 4-value models and no data."""
    graph = graphs.build_graph(cfg["graph"], cfg["nodes"], er_p=cfg["er_p"], seed=cfg["seed"])
    run = dict(graph=graph, gossip=graphs.gossip_graph(graph, cfg["graph"]) if cfg["algorithm"] == "gossip" else None)
    nodes = [algorithms.Node(v, models.FlatBuffer(MODEL_PARAMS), None, None, None, torch.device("cpu"), emulate_compute=0.0)
             for v in range(cfg["nodes"])]
    clock = simulate.VirtualClock()
    os.makedirs(folder, exist_ok=True)
    net = simulate.Network(dict(cfg, out=str(folder)), run, clock, nodes.__getitem__)
    simulate.DRIVERS[net.protocols[0].driver](net)
    clock.run(lambda: None, cfg["eval_interval"])
    for log in net.logs.built.values():
        log.close()
    return net


def check_invariants(cfg, net, folder):
    totals = Counter()
    for log in net.logs:
        totals.update(log.counters)
    assert totals["bytes_sent"] == totals["transfers"] * net.model_bytes
    events = read_events(folder)
    kinds = Counter(e["type"] for e in events)
    assert (kinds["update"], kinds["transfer"]) == (totals["iterations"], totals["transfers"])
    if cfg["algorithm"] == "mw":
        # every hop is a send or a self-loop; every update and every relay makes one hop; a relay's send
        # is a counted transfer only with --count-relays (the authors' v2 does not count it), and
        # relay_bytes holds what relays sent either way
        relayed_uncounted = 0 if cfg["count_relays"] else totals["relay_transfers"]
        assert totals["transfers"] + relayed_uncounted + totals["self_loops"] == totals["iterations"] + totals["relays"]
        assert totals["relay_bytes"] == totals["relay_transfers"] * net.model_bytes
        assert kinds["relay"] == totals["relays"]
        retired = Counter(e["walk"] for e in events if e["type"] == "retire")
        assert retired == Counter(range(cfg["walks"]))  # no walk lost, none duplicated
        visits = {e["walk"]: e["visits"] for e in events if e["type"] == "retire"}
        assert sum(visits.values()) == totals["iterations"]
        if cfg["max_iterations"]:
            assert totals["iterations"] == cfg["max_iterations"]
        assert net.protocols[0].retired == cfg["walks"]
    else:
        assert totals["transfers"] == 2 * totals["exchanges"]
        assert not any(e["type"] == "exchange" and not net.protocols[e["rank"]].active for e in events)
        if cfg["max_iterations"] and not cfg["failure_times"]:
            assert totals["iterations"] == cfg["max_iterations"]
        # the authors' coupling: while exchanges go on, a node's deltas wait for them, so it is at most
        # two updates ahead (time-bounded runs: every node's exchanges go on to the end)
        if cfg["gossip_coupling"] == "authors" and not cfg["max_iterations"] and not cfg["failure_times"]:
            for v, protocol in enumerate(net.protocols):
                served = sum(e["type"] == "transfer" and e["rank"] == v for e in events)
                assert net.logs[v].counters["iterations"] <= served + 2
        assert all(p.serving_over() for p in net.protocols)


def log_bytes(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.mark.slow
def test_randomized_schedules_keep_the_invariants(tmp_path):
    """Deterministic simulation testing: 1,000 randomized schedules of the real protocol code; the
    invariants hold after each, and every 10th schedule rerun from its seed gives identical logs."""
    rng = np.random.default_rng(2026)
    kinds = Counter()
    for i in range(1000):
        cfg = random_schedule(rng)
        folder = tmp_path / f"s{i}"
        net = simulate_protocols(cfg, folder)
        check_invariants(cfg, net, folder)
        kinds[cfg["algorithm"], bool(cfg["failure_times"])] += 1
        if i % 10 == 0:
            simulate_protocols(cfg, tmp_path / f"again{i}")
            assert log_bytes(tmp_path / f"again{i}") == log_bytes(folder)
    assert min(kinds.values()) > 50  # each algorithm, with and without failures, was exercised


def gossip_node(tmp_path, v, **settings):
    """Node v of the path 0-1-2 with nodes 0 and 2 active, under the authors' coupling."""
    graph = graphs.build_graph("cycle", 3)
    graph.remove_edge(0, 2)
    cfg = dict(config.config, algorithm="gossip", nodes=3, gossip_coupling="authors", gossip_interval=0.0,
               train_time=100.0, **settings)
    log = EventLog(str(tmp_path / f"events-rank{v}.jsonl"), lambda: 0.0)
    return protocols.GossipNode(v, cfg, dict(graph=graph, gossip=(graph, [0, 2])), torch.zeros(4), 16, log)


def two_updates(node, now):
    """Two local updates: the first delta waits for an exchange (pending), the second behind it."""
    for t in (now, now + 0.1):
        start = node.begin_update(t)
        node.after_update(start.model, start.model + 1, 0.5, 0.1, t)
    return node.begin_update(now + 0.2)


def test_the_protocol_says_which_events_free_a_blocked_compute(tmp_path):
    """A compute blocked behind an unpublished delta goes on exactly after the events that report
    frees_compute, once each: an exchange started or served, the last active neighbour's notice,
    the failure that leaves an active node no partner."""
    passive = gossip_node(tmp_path, 1)
    assert two_updates(passive, 0.1) is protocols.BLOCKED
    assert passive.neighbour_over(0, 0.4) is False  # node 2 may still exchange
    assert passive.passive_average(2, passive.model_to_send(), torch.ones(4), 0.5) is True
    assert passive.frees_compute(0.5) is False      # reported once
    assert isinstance(passive.begin_update(0.6), protocols.Start)
    passive.after_update(torch.zeros(4), torch.ones(4), 0.5, 0.1, 0.6)
    assert passive.begin_update(0.7) is protocols.BLOCKED
    assert passive.neighbour_over(2, 0.8) is True   # no exchange can come: it folds its deltas in itself
    assert isinstance(passive.begin_update(0.8), protocols.Start)

    active = gossip_node(tmp_path, 0)
    assert two_updates(active, 0.1) is protocols.BLOCKED
    assert active.next_exchange(0.4) == protocols.Exchange(1, frees_compute=True)
    assert active.next_exchange(0.5) == protocols.Exchange(1, frees_compute=False)  # not blocked any more

    failing = gossip_node(tmp_path, 2, failure_times=[1.0, 2.0])
    assert two_updates(failing, 0.1) is protocols.BLOCKED
    assert failing.pass_failures(1.0) == protocols.Failures([0], frees_compute=False)  # not its partner
    assert failing.pass_failures(2.0) == protocols.Failures([1], frees_compute=True)   # its only partner
    assert isinstance(failing.begin_update(2.0), protocols.Start)


# -----------------------------------------------------------------------------
# a third algorithm, as one protocol

class IndependentWalks(protocols.MultiWalkNode):
    """R walks that never merge: each is plain random-walk SGD; node 0 keeps the model of the
    last walk that visited it, for evaluation."""
    def aggregate(self, walk):
        if self.aggregator is None:
            self.aggregator = algorithms.Aggregator(walk.params, self.num_walks)
        self.aggregator.global_model.copy_(walk.params)


protocols.register("independent", IndependentWalks)  # the one line that makes it --algorithm independent

# every MPI rank imports this module, so the registration above runs there too
LAUNCHER = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import main
import test_protocols  # registers IndependentWalks
from engine import supervisor
supervisor.supervise_rank()
sys.exit(main.main(sys.argv[1:]))
"""


def per_walk(out):
    """Each walk's route (visit -> node), its relays, and its counters, from a run's events."""
    routes, counters = {}, Counter()
    for e in read_events(out):
        if e["type"] == "update":
            routes.setdefault(e["walk"], {})[e["visit"]] = e["rank"]
        if e["type"] in ("update", "transfer", "self_loop", "relay"):
            counters[e["walk"], e["type"], e["rank"]] += 1
        if e["type"] == "retire":
            counters[e["walk"], "retired_after"] += e["visits"]
    return routes, counters


@pytest.mark.mpi
def test_independent_walks_is_one_protocol_on_both_transports(tmp_path):
    launcher = tmp_path / "independent.py"
    launcher.write_text(LAUNCHER.format(repo=REPO, tests=os.path.join(REPO, "tests")))
    flags = ["--algorithm", "independent", "--walks", "2", "--graph", "er", "--max-iterations", "30",
             "--train-time", "600", "--eval-interval", "600", "--seed", "4"]
    real = run_main(4, [*flags, "--out", tmp_path / "mpi"], timeout=240, script=str(launcher))
    assert real.returncode == 0, real.stderr[-2000:]
    simulate_run(tmp_path / "sim", *flags, "--nodes", "4")
    assert per_walk(tmp_path / "sim") == per_walk(tmp_path / "mpi")
    # the same routes as MW (they depend on the seed alone), but no merge: another final model
    simulate_run(tmp_path / "mw", *flags, "--nodes", "4", "--algorithm", "mw", "--save-models", "true")
    simulate_run(tmp_path / "again", *flags, "--nodes", "4", "--save-models", "true")
    assert per_walk(tmp_path / "mw")[0] == per_walk(tmp_path / "sim")[0]
    assert not torch.equal(torch.load(tmp_path / "mw" / "model.pt"), torch.load(tmp_path / "again" / "model.pt"))


@pytest.mark.mpi
def test_failure_run_routes_relays_and_counters_match_mpirun(tmp_path):
    """Node 0 fails at time 0: every visit it gets is a relay, node 1 adopts then merges; the
    routes, relays and counters are then a function of the seed alone, on both transports."""
    flags = ["--walks", "2", "--graph", "er", "--task", "digits", "--max-iterations", "40", "--train-time", "600",
             "--eval-interval", "600", "--seed", "3", "--failure-times", "0"]
    real = run_main(4, [*flags, "--out", tmp_path / "mpi"], timeout=240)
    assert real.returncode == 0, real.stderr[-2000:]
    simulate_run(tmp_path / "sim", *flags, "--nodes", "4")
    real_routes, real_counters = per_walk(tmp_path / "mpi")
    assert per_walk(tmp_path / "sim") == (real_routes, real_counters)
    assert sum(n for key, n in real_counters.items() if key[1:] == ("relay", 0)) > 0
    assert not any(rank == 0 for route in real_routes.values() for rank in route.values())
    # both transports count the relays' sends the same way: outside transfers/bytes_sent (the authors' v2)
    counted = ("iterations", "transfers", "bytes_sent", "self_loops", "relays", "relay_transfers", "relay_bytes")
    real, sim = read_summary(tmp_path / "mpi"), read_summary(tmp_path / "sim")
    assert {k: real[k] for k in counted} == {k: sim[k] for k in counted} and real["relay_bytes"] > 0


def test_relay_sends_count_as_transfers_only_with_count_relays(tmp_path):
    """The authors' v2 logs no communication for a model a failed node forwards; --count-relays true
    counts it. Either way the walks go the same routes and relay_bytes holds what relays sent."""
    flags = ["--walks", "2", "--graph", "cycle", "--nodes", "5", "--max-iterations", "60", "--train-time", "1e9",
             "--eval-interval", "1e9", "--seed", "3", "--failure-times", "0", "--emulate-params", "16"]
    authors = simulate_run(tmp_path / "authors", *flags)
    counting = simulate_run(tmp_path / "counting", *flags, "--count-relays", "true")
    assert per_walk(tmp_path / "authors")[0] == per_walk(tmp_path / "counting")[0]
    assert authors["relay_transfers"] > 0 and authors["relay_bytes"] == authors["relay_transfers"] * authors["model_bytes"]
    for key in ("iterations", "relays", "relay_transfers", "relay_bytes"):
        assert authors[key] == counting[key], key
    assert counting["transfers"] == authors["transfers"] + authors["relay_transfers"]
    assert counting["bytes_sent"] == authors["bytes_sent"] + authors["relay_bytes"]
    assert authors["transfers"] + authors["relay_transfers"] == authors["iterations"] + authors["relays"]  # no self-loops on a cycle
    for folder, recorded in (("authors", False), ("counting", True)):
        with open(tmp_path / folder / "config.json") as f:
            assert json.load(f)["count_relays"] is recorded


def test_a_non_finite_loss_stops_the_run_with_one_line(tmp_path, monkeypatch, capsys):
    """With --stop-on-divergence true; without it (the default) the run goes on (tests/test_divergence.py)."""
    monkeypatch.setattr(simulate, "BATCHED", False)  # the one-at-a-time path calls algorithms.local_update
    monkeypatch.setattr(algorithms, "local_update", lambda node, params, tau, lr: float("nan"))
    code = simulate.simulate_main(["--nodes", "4", "--max-iterations", "20", "--stop-on-divergence", "true",
                                   "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: the run diverged at t = ") and err.count("\n") == 1
    assert "gave loss nan" in err and "--lr" in err
