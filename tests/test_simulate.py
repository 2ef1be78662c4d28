"""The virtual-clock simulator: determinism, agreement with the MPI engine, and the
exponential-delay scaling laws time(T iterations) = T m / R (MW) and T m / V (gossip)."""
from collections import Counter

import numpy as np
import pytest

from core import run_records
import simulate
from core.events import read_events
from conftest import event_files, run_main, simulate_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("algorithm", ["mw", "gossip"])
def test_one_seed_gives_byte_identical_event_logs(tmp_path, algorithm):
    flags = ["--algorithm", algorithm, "--nodes", "6", "--walks", "3", "--graph", "er", "--task", "synthetic",
             "--synthetic-samples", "600", "--max-iterations", "60", "--eval-interval", "0.05"]
    simulate_run(tmp_path / "a", *flags, "--seed", "5")
    simulate_run(tmp_path / "b", *flags, "--seed", "5")
    simulate_run(tmp_path / "c", *flags, "--seed", "6")
    first, again, other = (event_files(tmp_path / name) for name in "abc")
    assert len(first) == 6 and sum(map(len, first.values())) > 0
    assert first == again
    assert first != other


def per_walk(out):
    """Each walk's route (visit -> node) and counters, from a run's events."""
    routes, counters = {}, Counter()
    for e in read_events(out):
        if e["type"] == "update":
            routes.setdefault(e["walk"], {})[e["visit"]] = e["rank"]
        if e["type"] in ("update", "transfer", "self_loop"):
            counters[e["walk"], e["type"]] += 1
        if e["type"] == "retire":
            counters[e["walk"], "retired_after"] += e["visits"]
    return routes, counters


@pytest.mark.mpi
@pytest.mark.parametrize("graph", [pytest.param("cycle", marks=pytest.mark.long), "er"])
def test_routes_and_counters_match_the_mpi_engine(tmp_path, graph):
    flags = ["--walks", "2", "--graph", graph, "--task", "digits", "--max-iterations", "40", "--train-time", "600",
             "--eval-interval", "600", "--seed", "3"]
    real = run_main(4, [*flags, "--out", tmp_path / "mpi"], timeout=240)
    assert real.returncode == 0, real.stderr[-2000:]
    simulate_run(tmp_path / "sim", *flags, "--nodes", "4")
    real_routes, real_counters = per_walk(tmp_path / "mpi")
    sim_routes, sim_counters = per_walk(tmp_path / "sim")
    assert sorted(real_routes) == [0, 1]
    assert all(sorted(route) == list(range(20)) for route in real_routes.values())  # 40 visits split over 2 walks
    assert sim_routes == real_routes
    assert sim_counters == real_counters
    if graph == "er":  # the ER draw has unequal degrees, so MH rejections: visits without a transfer
        assert sum(n for (_, kind), n in real_counters.items() if kind == "self_loop") > 0


def time_to_iterations(out, iterations):
    """Virtual time at which the network finished its `iterations`-th local update."""
    times = sorted(e["t"] for e in read_events(out) if e["type"] == "update")
    return times[iterations - 1]


# the closed forms below are the algorithms' own: on the ideal engine (the authors' adds its polls)
TIMING_ONLY = ["--emulate-params", "4", "--compute-time-dist", "exponential", "--compute-time-mean", "0.02",
               "--bandwidth", "1e15", "--latency", "0", "--train-time", "1e9", "--eval-interval", "1e9",
               "--engine-timing", "ideal"]


@pytest.mark.parametrize("walks", [1, 2, 4])
def test_mw_time_to_t_iterations_is_t_m_over_r(tmp_path, walks):
    # complete graph on 100 nodes: walks rarely queue behind each other, so the model's T m / R should hold
    target = 4000
    simulate_run(tmp_path, *TIMING_ONLY, "--nodes", "100", "--graph", "complete", "--walks", str(walks),
                 "--max-iterations", str(2 * target))
    assert time_to_iterations(tmp_path, target) / (target * 0.02 / walks) == pytest.approx(1, abs=0.1)


@pytest.mark.parametrize("nodes", [10, 20, 40])
def test_gossip_time_to_t_iterations_is_t_m_over_v(tmp_path, nodes):
    target = 4000
    simulate_run(tmp_path, *TIMING_ONLY, "--algorithm", "gossip", "--gossip-mode", "per_update", "--nodes", str(nodes),
                 "--gossip-coupling", "immediate",  # textbook AD-PSGD: nothing holds a node's compute back
                 "--graph", "complete", "--max-iterations", str(2 * target))
    assert time_to_iterations(tmp_path, target) / (target * 0.02 / nodes) == pytest.approx(1, abs=0.1)


def test_train_time_and_evaluations_run_on_virtual_time(tmp_path):
    summary = simulate_run(tmp_path, "--nodes", "8", "--walks", "3", "--task", "synthetic", "--synthetic-samples", "600",
                           "--compute-time-dist", "fixed", "--compute-time-mean", "0.1", "--train-time", "2",
                           "--eval-interval", "0.5")
    events = read_events(tmp_path)
    updates = [e for e in events if e["type"] == "update"]
    assert all(e["duration"] == 0.1 for e in updates)
    assert max(e["t"] for e in updates) <= 2 + 0.1 + 1e-9  # an update started before train_time may finish after it
    retired = [e for e in events if e["type"] == "retire"]
    assert sorted(e["walk"] for e in retired) == [0, 1, 2] and all(e["t"] >= 2 for e in retired)
    evals = [e["t"] for e in events if e["type"] == "eval"]
    assert evals[:5] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert summary["transport"] == "simulated" and summary["iterations"] == len(updates)
    assert summary["stopped"]["cause"] == "finished" and summary["stopped"]["rank"] is None
    assert summary["wall_time_s"] == pytest.approx(max(e["t"] for e in retired), abs=1e-6)


def test_per_update_gossip_exchanges_once_per_local_update(tmp_path):
    simulate_run(tmp_path, "--algorithm", "gossip", "--gossip-mode", "per_update", "--nodes", "8", "--graph", "complete",
                 "--task", "synthetic", "--synthetic-samples", "600", "--max-iterations", "80",
                 "--engine-timing", "ideal")  # the rule itself: the authors' hand-offs leave the last exchanges unpaid
    events = read_events(tmp_path)
    for node in range(4):  # K_{4,4}: nodes 0..3 are active
        updates = sum(e["type"] == "update" and e["rank"] == node for e in events)
        exchanges = sum(e["type"] == "exchange" and e["rank"] == node for e in events)
        assert updates - 1 <= exchanges <= updates
    assert not any(e["type"] == "exchange" and e["rank"] >= 4 for e in events)


@pytest.mark.parametrize("flags, message", [
    (["--walks", "2"], "needs --nodes"),
    (["--nodes", "4", "--compute-time-dist", "gamma"], "compute_time_dist"),
    (["--nodes", "4", "--bandwidth", "0"], "bandwidth must be > 0"),
    (["--nodes", "4", "--emulate-params", "4", "--compute-time-dist", "measured"], "cannot be combined"),
    (["--nodes", "4", "--emulate-params", "4", "--emulate-compute", "0.1"], "compute-time-mean"),
    (["--nodes", "4", "--checkpoint-every", "5"], "takes no checkpoints"),
    (["--nodes", "4", "--walks", "5"], "exceeds the 4 nodes"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, flags, message):
    assert simulate.simulate_main([*flags, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_network_average_is_evaluated_beside_node_0_without_changing_the_run(tmp_path):
    flags = ["--algorithm", "gossip", "--nodes", "6", "--graph", "complete", "--task", "synthetic",
             "--synthetic-samples", "600", "--max-iterations", "120", "--eval-interval", "0.05", "--seed", "2"]
    simulate_run(tmp_path / "plain", *flags)
    simulate_run(tmp_path / "both", *flags, "--eval-network-average", "true")
    plain, both = read_events(tmp_path / "plain"), read_events(tmp_path / "both")
    averages = [e for e in both if e["type"] == "eval" and e["model"] == "network_average"]
    node0 = [e for e in both if e["type"] == "eval" and e["model"] == "node0"]
    assert len(averages) == len(node0) > 3  # one per evaluation, the final one included
    def without_averages(events):
        return [e for e in events if e.get("model") != "network_average"]
    assert without_averages(both) == without_averages(plain)  # the run itself is the same
    run = run_records.read_run(str(tmp_path / "both"))
    assert run["average_curve"] is not None and len(run["average_curve"]["time"]) == len(averages)
    assert not np.allclose(run["average_curve"]["test_accuracy"], run["curve"]["test_accuracy"])
    assert run_records.read_run(str(tmp_path / "plain"))["average_curve"] is None


def test_shared_links_split_a_link_between_the_transfers_using_it():
    clock, arrived = simulate.VirtualClock(), {}
    links = simulate.SharedLinks(clock, bandwidth=100.0, latency=0.5)
    record = lambda name: arrived.setdefault(name, round(clock.now, 9))  # noqa: E731
    links.start(0, 1, 100, record, ("alone",))  # 1 s on the wire, then the latency
    clock.run(lambda: None, 1e9)
    assert arrived == {"alone": 1.5}
    # two leave node 2 at once and share its outgoing link; 5 -> 6 shares nothing with them
    links.start(2, 3, 100, record, ("2->3",))
    links.start(2, 4, 100, record, ("2->4",))
    links.start(5, 6, 100, record, ("5->6",))
    # 7 -> 8 runs alone for 0.5 s, then shares node 8's incoming link with 9 -> 8 until it ends
    links.start(7, 8, 100, record, ("7->8",))
    clock.after(0.5, links.start, 9, 8, 100, record, ("9->8",))
    clock.run(lambda: None, 1e9)
    assert arrived == {"alone": 1.5, "5->6": 3.0, "2->3": 4.0, "2->4": 4.0, "7->8": 3.5, "9->8": 4.0}
