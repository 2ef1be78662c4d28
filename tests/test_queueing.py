"""analysis/queueing.py against answers known in closed form, and the paper_sim figures of issue #26."""
import numpy as np
import pytest

import graphs
from analysis import queueing


def test_one_walk_alternates_an_update_and_a_hop():
    P = graphs.transition_matrix(graphs.build_graph("cycle", 10))
    moves = float(np.mean(1 - P.diagonal()))
    x = queueing.mw_throughput(P, 1, compute_s=0.025, hop_s=0.01, visit_delay_s=0.002)[0]
    assert x == pytest.approx(1 / (0.025 + moves * 0.01 + 0.002))


def test_a_balanced_network_without_delay_has_the_textbook_throughput():
    # K identical single servers of total demand D, no delay: X(n) = n / (D (K + n - 1) / K)
    K, D = 8, 0.04
    x = queueing.mva_throughput([D / K] * K, 0.0, 12)
    assert x == pytest.approx([n / (D * (K + n - 1) / K) for n in range(1, 13)])


def test_one_customer_per_station_or_a_pure_delay_network():
    assert queueing.mva_throughput([0.0, 0.0], 0.5, 3) == pytest.approx([2.0, 4.0, 6.0])  # linear: nothing queues
    assert queueing.mva_throughput([0.1], 0.0, 5) == pytest.approx([10.0] * 5)             # one server saturated


def test_the_stationary_distribution_of_metropolis_hastings_is_uniform():
    P = graphs.transition_matrix(graphs.build_graph("configs/paper/erdos_renyi_graph_20_nodes.json", 20)).toarray()
    assert queueing.stationary(P) == pytest.approx(np.full(20, 1 / 20))


def test_paper_sim_constants_give_the_issues_efficiencies():
    # issue #26: 79% / 70% of linear at R = 10 / 15 for 25 ms updates and 1 Gbit/s links; 98% at 100 Mbit/s
    # and 70% at 10 Gbit/s for R = 10 (ResNet-20's 1,089,896 B, 0.1 ms latency, the paper's complete graph)
    def efficiency(walks, bandwidth):
        rates = queueing.predict("configs/paper/complete_graph_20_nodes.json", 20, [1, walks], 0.025, 1_089_896,
                                 bandwidth, 1e-4)
        return rates[walks] / rates[1] / walks
    assert efficiency(10, 1.25e8) == pytest.approx(0.79, abs=0.005)
    assert efficiency(15, 1.25e8) == pytest.approx(0.70, abs=0.005)
    assert efficiency(10, 1.25e7) == pytest.approx(0.98, abs=0.005)
    assert efficiency(10, 1.25e9) == pytest.approx(0.70, abs=0.005)


def test_the_cli_rejects_a_walk_count_below_one(capsys):
    assert queueing.main(["--walks", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --walks 0")
