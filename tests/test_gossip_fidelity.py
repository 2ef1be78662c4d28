"""The gossip switches of FIDELITY.md on both transports: exchange pacing (--gossip-interval),
the authors' coupling of compute to exchanges (--gossip-coupling), and the gossip rate that
every run's summary.json reports."""
import pytest

from core.events import read_events
from conftest import read_summary, run_main, simulate_run

pytestmark = pytest.mark.usefixtures("one_thread")

FLAGS = ["--algorithm", "gossip", "--graph", "complete", "--task", "synthetic", "--synthetic-samples", "600",
         "--eval-interval", "600"]


def per_node(out, kind):
    counts = {}
    for e in read_events(out):
        if e["type"] == kind:
            counts[e["rank"]] = counts.get(e["rank"], 0) + 1
    return counts


@pytest.mark.slow
def test_pacing_bounds_each_active_node_exchange_starts(tmp_path):
    train_time, interval = 2.0, 0.1
    summary = simulate_run(tmp_path, *FLAGS, "--nodes", "8", "--train-time", str(train_time), "--gossip-interval",
                           str(interval), "--compute-time-dist", "fixed", "--compute-time-mean", "0.02")
    exchanges = per_node(tmp_path, "exchange")
    assert set(exchanges) == {0, 1, 2, 3}  # K_{4,4}: nodes 0..3 are active
    assert all(n <= train_time / interval + 1 for n in exchanges.values())
    starts = sorted(e["t"] for e in read_events(tmp_path) if e["type"] == "exchange" and e["rank"] == 0)
    assert min(b - a for a, b in zip(starts, starts[1:])) >= interval - 1e-9
    back_to_back = simulate_run(tmp_path / "b2b", *FLAGS, "--nodes", "8", "--train-time", str(train_time),
                                "--gossip-interval", "0", "--compute-time-dist", "fixed", "--compute-time-mean", "0.02")
    assert back_to_back["exchanges"] > 2 * summary["exchanges"]
    for s in (summary, back_to_back):
        assert s["exchanges_per_update"] == pytest.approx(s["exchanges"] / s["iterations"])
        assert s["exchanges_per_active_update"] >= s["exchanges_per_update"]


@pytest.mark.slow
def test_authors_coupling_ties_passive_updates_to_served_exchanges(tmp_path):
    """Under the authors' coupling a passive node's compute waits for its delta to be consumed,
    which only a served exchange does: at most two updates ahead of the exchanges it served.
    With immediate coupling it computes freely, far more often than it exchanges."""
    flags = ["--nodes", "8", "--train-time", "2", "--gossip-interval", "0.2", "--compute-time-dist", "fixed",
             "--compute-time-mean", "0.01"]
    simulate_run(tmp_path / "authors", *FLAGS, *flags)
    simulate_run(tmp_path / "immediate", *FLAGS, *flags, "--gossip-coupling", "immediate")
    for coupling, bound_holds in (("authors", True), ("immediate", False)):
        updates, served = per_node(tmp_path / coupling, "update"), per_node(tmp_path / coupling, "transfer")
        passive = range(4, 8)
        assert all(updates[v] <= served.get(v, 0) + 2 for v in passive) == bound_holds


@pytest.mark.mpi
def test_pacing_and_coupling_hold_on_mpi_and_are_recorded(tmp_path):
    out = tmp_path / "mpi"
    real = run_main(4, ["--algorithm", "gossip", "--graph", "complete", "--train-time", "3", "--gossip-interval",
                        "0.05", "--eval-interval", "600", "--out", out], timeout=240)
    assert real.returncode == 0, real.stderr[-2000:]
    summary = read_summary(out)
    assert summary["gossip_coupling"] == "authors" and summary["gossip_interval"] == 0.05
    updates, served = per_node(out, "update"), per_node(out, "transfer")
    assert all(updates.get(v, 0) <= served.get(v, 0) + 2 for v in (2, 3))  # K_{2,2}: nodes 2, 3 are passive
    exchanges = per_node(out, "exchange")
    assert all(n <= 3 / 0.05 + 1 for n in exchanges.values())
