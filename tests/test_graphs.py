"""Tests of graphs.py: topologies, the MH walk, the gossip split, exact return-time moments, the CLI."""
import json
import os
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graphs import (GraphError, HopRng, build_graph, gossip_graph, graph_stats, load_graph_json, main, mh_next_node,
                    transition_matrix)

PAPER = os.path.join(ROOT, "configs", "paper")
PAPER_GRAPHS = {name: os.path.join(PAPER, f"{name}_graph_20_nodes.json") for name in ("cycle", "complete", "erdos_renyi")}
PAPER_E_H2 = {"cycle": 2680.0, "complete": 742.0, "erdos_renyi": 851.2}


def lollipop():
    """Triangle 0-1-2 with a tail 2-3: degrees 2, 2, 3, 1, so MH rejects some proposals."""
    return nx.Graph([(0, 1), (0, 2), (1, 2), (2, 3)])


def write_json(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(path)

# -----------------------------------------------------------------------------
# hand-computed stats


def test_cycle_of_four_by_hand():
    G = build_graph("cycle", 4)
    P = transition_matrix(G).toarray()
    assert np.allclose(P, [[0, .5, 0, .5], [.5, 0, .5, 0], [0, .5, 0, .5], [.5, 0, .5, 0]])
    stats = graph_stats(G)
    # From 0 the walk steps to 1 or 3; from there it returns w.p. 1/2, else goes to 2 and comes
    # back to distance 1 two steps later. So H = 2 + 2K with K ~ Geometric failures, p = 1/2:
    # E[K] = 1, E[K^2] = 3, E[H] = 4, E[H^2] = 4 + 8 E[K] + 4 E[K^2] = 24.
    assert stats["E_H"] == pytest.approx(4)
    assert stats["E_H2"] == pytest.approx(24)
    assert (stats["nodes"], stats["edges"], stats["diameter"], stats["degree_min"], stats["degree_max"]) == (4, 4, 2, 2, 2)
    assert stats["absolute_spectral_gap"] == pytest.approx(0)  # bipartite, period 2: eigenvalue -1
    assert stats["spectral_gap"] == pytest.approx(1)  # eigenvalues 1, 0, 0, -1


def test_complete_of_three_by_hand():
    stats = graph_stats(build_graph("complete", 3))
    # Leave 0, then each step returns w.p. 1/2: H = 1 + G, G ~ Geometric(1/2) on {1, 2, ...},
    # E[G] = 2, E[G^2] = (2 - p)/p^2 = 6, so E[H] = 3 and E[H^2] = 1 + 2*2 + 6 = 11.
    assert stats["E_H"] == pytest.approx(3)
    assert stats["E_H2"] == pytest.approx(11)
    assert stats["diameter"] == 1
    assert stats["absolute_spectral_gap"] == pytest.approx(0.5)  # eigenvalues 1, -1/2, -1/2
    assert stats["spectral_gap"] == pytest.approx(1.5)


def test_path_of_three_by_hand():
    G = nx.path_graph(3)  # degrees 1, 2, 1: P = [[1/2, 1/2, 0], [1/2, 0, 1/2], [0, 1/2, 1/2]]
    assert np.allclose(transition_matrix(G).toarray(), [[.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
    # Hitting 0: h1 = 1 + h2/2, h2 = 1 + h1/2 + h2/2 -> h1 = 4, h2 = 6.
    # Second moments m = E[T^2]: m1 = 1 + 2(h2/2) + m2/2, m2 = 1 + 2(h1/2 + h2/2) + m1/2 + m2/2
    # -> m1 = 36, m2 = 58. H = 1 w.p. 1/2 (stay), else 1 + T_1:
    # E[H] = 1/2 + 1/2 (1 + 4) = 3, E[H^2] = 1/2 + 1/2 (1 + 2*4 + 36) = 23.
    stats = graph_stats(G)
    assert stats["E_H"] == pytest.approx(3)
    assert stats["E_H2"] == pytest.approx(23)


def test_return_time_moments_match_the_distribution_of_H():
    # independent check: sum t P(H = t) and t^2 P(H = t) from the taboo chain, truncated far out
    G = load_graph_json(PAPER_GRAPHS["erdos_renyi"])
    for laziness in (0.0, 0.3):
        P = transition_matrix(G, laziness).toarray()
        t = np.arange(1, 20001)
        probabilities = [P[0, 0]]
        away = P[0, 1:].copy()  # mass of walks that left 0 and have not come back
        for _ in t[1:]:
            probabilities.append(away @ P[1:, 0])
            away = away @ P[1:, 1:]
        probabilities = np.array(probabilities)
        stats = graph_stats(G, laziness)
        assert probabilities.sum() == pytest.approx(1, abs=1e-9)
        assert stats["E_H"] == pytest.approx(t @ probabilities, rel=1e-9)
        assert stats["E_H2"] == pytest.approx((t ** 2) @ probabilities, rel=1e-9)


def test_stats_are_plain_json_types():
    stats = graph_stats(build_graph("er", 12, 0.4, seed=1))
    assert json.loads(json.dumps(stats)) == stats
    assert all(type(stats[k]) is int for k in ("nodes", "edges", "diameter", "degree_min", "degree_max"))
    assert all(type(stats[k]) is float for k in ("spectral_gap", "E_H", "E_H2"))

# -----------------------------------------------------------------------------
# the paper's 20-node graphs


@pytest.mark.parametrize("name", PAPER_GRAPHS)
def test_paper_graphs_reference_values(name):
    G = load_graph_json(PAPER_GRAPHS[name])
    stats = graph_stats(G)
    assert stats["nodes"] == 20
    assert stats["E_H"] == pytest.approx(20, abs=1e-6)  # Kac: 1 / (uniform stationary mass)
    assert stats["E_H2"] == pytest.approx(PAPER_E_H2[name], abs=0.5)


def test_paper_graph_details():
    cycle, complete, er = (graph_stats(load_graph_json(PAPER_GRAPHS[n])) for n in PAPER_GRAPHS)
    assert (cycle["edges"], cycle["diameter"]) == (20, 10)
    assert (complete["edges"], complete["diameter"]) == (190, 1)
    assert (er["edges"], er["diameter"], er["degree_min"], er["degree_max"]) == (52, 4, 1, 11)
    assert complete["absolute_spectral_gap"] == pytest.approx(1 - 1 / 19)  # P = (J - I)/19: eigenvalues 1 and -1/19


def test_build_graph_takes_a_json_path():
    assert nx.utils.graphs_equal(build_graph(PAPER_GRAPHS["cycle"], 20), nx.cycle_graph(20))

# -----------------------------------------------------------------------------
# the MH walk


def some_graphs():
    return [build_graph("cycle", 5), build_graph("complete", 6), build_graph("er", 15, 0.3, seed=2),
            lollipop(), nx.star_graph(4), load_graph_json(PAPER_GRAPHS["erdos_renyi"])]


@pytest.mark.parametrize("laziness", [0.0, 0.25, 0.9])
def test_transition_matrix_is_symmetric_stochastic_with_uniform_stationary(laziness):
    for G in some_graphs():
        P = transition_matrix(G, laziness).toarray()
        V = len(G)
        assert np.allclose(P, P.T)
        assert np.allclose(P.sum(axis=1), 1)
        assert (P >= -1e-15).all()
        assert np.allclose(np.full(V, 1 / V) @ P, np.full(V, 1 / V))
        assert (np.diag(P) >= laziness - 1e-12).all()


def test_transition_matrix_entries_are_metropolis_hastings():
    P = transition_matrix(lollipop()).toarray()
    assert P[0, 1] == pytest.approx(1 / 2) and P[0, 2] == pytest.approx(1 / 3) and P[2, 3] == pytest.approx(1 / 3)
    assert P[3, 3] == pytest.approx(2 / 3)  # degree-1 node proposes 2 and is accepted w.p. 1/3
    assert P[0, 0] == pytest.approx(1 / 6)
    lazy = transition_matrix(lollipop(), laziness=0.5).toarray()
    assert np.allclose(lazy, 0.5 * np.eye(4) + 0.5 * P)


@pytest.mark.parametrize("laziness", [0.0, 0.3])
def test_mh_next_node_frequencies_match_P(laziness):
    G = lollipop()
    P = transition_matrix(G, laziness).toarray()
    rng = np.random.default_rng(1234)
    samples = 20000
    for i in G:
        counts = np.bincount([mh_next_node(G, i, rng, laziness=laziness) for _ in range(samples)], minlength=4)
        assert np.allclose(counts / samples, P[i], atol=0.015), (i, counts / samples, P[i])


def test_mh_next_node_uses_exactly_two_draws_in_order():
    G = lollipop()
    for current in G:
        rng, replay = np.random.default_rng(7), np.random.default_rng(7)
        nxt = mh_next_node(G, current, rng)
        neighbors = sorted(G[current])
        proposal = neighbors[replay.integers(len(neighbors))]
        accepted = replay.random() < len(neighbors) / G.degree(proposal)
        assert nxt == (proposal if accepted else current)
        assert rng.random() == replay.random()  # both generators consumed the same draws


def test_mh_next_node_accepts_a_neighbor_mapping():
    G = build_graph("er", 12, 0.4, seed=3)
    adjacency = {v: list(G[v])[::-1] for v in G}  # order must not matter: neighbours are sorted
    for hop in range(200):
        v = hop % 12
        assert mh_next_node(G, v, np.random.default_rng([5, 1, hop])) == \
            mh_next_node(adjacency, v, np.random.default_rng([5, 1, hop]))


def route(G, seed, walk, hops, laziness=0.0):
    node, nodes = walk, [walk]
    for hop in range(hops):
        node = mh_next_node(G, node, np.random.default_rng([seed, walk, hop]), laziness=laziness)
        nodes.append(node)
    return nodes


def test_routes_are_a_function_of_seed_walk_hop():
    G = load_graph_json(PAPER_GRAPHS["erdos_renyi"])
    first = route(G, seed=0, walk=3, hops=300)
    assert first == route(G, seed=0, walk=3, hops=300)
    assert first != route(G, seed=1, walk=3, hops=300)
    assert route(G, 0, 2, 300) != route(G, 0, 3, 300)
    assert all(b == a or G.has_edge(a, b) for a, b in zip(first, first[1:]))
    assert route(G, 0, 3, 300, laziness=0.5) == route(G, 0, 3, 300, laziness=0.5)

def test_hop_rng_draws_what_default_rng_draws():
    # seeds of one to seven uint32 words, hops past 2**32, and bounds whose Lemire draw is often
    # rejected (3 * 2**30: a quarter of draws) so that the redraw takes the kept upper half
    draws = np.random.default_rng(11)
    for case in range(600):
        seed = int(draws.choice([0, 1, 2**32 - 1, 2**32, int(draws.integers(2**62)) << int(draws.integers(150))]))
        walk, hop = int(draws.integers(300)), int(draws.choice([int(draws.integers(10**7)), 2**32 + case]))
        numpy_rng, ours = np.random.default_rng([seed, walk, hop]), HopRng(seed, walk, hop)
        for n in draws.choice([1, 2, 3, 7, 1000, 3 * 2**30, 2**32 - 5], size=6):
            assert ours.integers(int(n)) == numpy_rng.integers(int(n)), (seed, walk, hop, n)
            assert ours.random() == numpy_rng.random(), (seed, walk, hop)


def test_routes_with_hop_rng_are_default_rngs_routes():
    G = load_graph_json(PAPER_GRAPHS["erdos_renyi"])
    for laziness in (0.0, 0.3):
        node = 3
        for hop in range(300):
            expected = mh_next_node(G, node, np.random.default_rng([7, 3, hop]), laziness=laziness)
            node = mh_next_node(G, node, HopRng(7, 3, hop), laziness=laziness)
            assert node == expected

# -----------------------------------------------------------------------------
# the gossip split


def check_split(G, B, active, edges_from_G=True, holds_node0=True):
    V = len(G)
    assert sorted(B.nodes) == list(range(V))
    assert (0 in active) == holds_node0 and active == sorted(active)
    sides = set(active)
    assert all((u in sides) != (v in sides) for u, v in B.edges), "edge inside a side"
    assert all(B.degree(v) > 0 for v in range(V))
    assert nx.is_connected(B)
    if edges_from_G:
        assert all(G.has_edge(u, v) for u, v in B.edges)


def test_gossip_even_cycle_is_the_cycle_with_even_nodes_active():
    G = build_graph("cycle", 20)
    B, active = gossip_graph(G, "cycle")
    check_split(G, B, active)
    assert active == list(range(0, 20, 2)) and B.number_of_edges() == 20


def test_gossip_complete_is_complete_bipartite():
    for V in (8, 7):
        G = build_graph("complete", V)
        B, active = gossip_graph(G, "complete")
        check_split(G, B, active)
        assert active == list(range(V // 2)) and B.number_of_edges() == (V // 2) * (V - V // 2)


def test_gossip_other_graphs_use_an_independent_active_side():
    graphs = [build_graph("cycle", 7), lollipop(), load_graph_json(PAPER_GRAPHS["erdos_renyi"])]
    graphs += [build_graph("er", 20, p, seed=s) for p in (0.15, 0.3, 0.6) for s in range(5)]
    # two triangles joined by an edge: a careless independent set ({0, 4}) cuts it in two
    graphs.append(nx.Graph([(0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (3, 5), (4, 5)]))
    for G in graphs:
        B, active = gossip_graph(G, "er")
        check_split(G, B, active)
        assert not any(G.has_edge(u, v) for u in active for v in active)
    assert gossip_graph(build_graph("cycle", 7), "cycle")[1] == [0, 2, 4]


@pytest.mark.parametrize("name", PAPER_GRAPHS)
def test_gossip_paper_files_are_loaded_as_given(name):
    G = load_graph_json(PAPER_GRAPHS[name])
    B, active = gossip_graph(G, PAPER_GRAPHS[name])
    # the paper's ER split has an edge (2, 11) outside its graph, and its active "top_nodes" omit node 0
    check_split(G, B, active, edges_from_G=False, holds_node0=name != "erdos_renyi")
    expected = load_graph_json(os.path.join(PAPER, f"bipartite_{name}_graph_20_nodes.json"))
    assert nx.utils.edges_equal(B.edges, expected.edges)
    assert active == {"cycle": list(range(0, 20, 2)), "complete": list(range(10)),
                      "erdos_renyi": [1, 2, 3, 5, 8, 15, 18, 19]}[name]

# -----------------------------------------------------------------------------
# Erdos-Renyi draws


def test_er_is_seeded_connected_and_redrawn_deterministically():
    for seed in range(20):
        G = build_graph("er", 10, 0.2, seed=seed)
        assert nx.is_connected(G) and sorted(G) == list(range(10))
        assert nx.utils.graphs_equal(G, build_graph("er", 10, 0.2, seed=seed))
        first_connected = next(s for s in range(seed, seed + 1000)
                               if nx.is_connected(nx.gnp_random_graph(10, 0.2, seed=s)))
        assert nx.utils.graphs_equal(G, nx.gnp_random_graph(10, 0.2, seed=first_connected))
    assert not nx.utils.graphs_equal(build_graph("er", 20, 0.3, seed=0), build_graph("er", 20, 0.3, seed=1))


def test_small_graphs():
    assert list(build_graph("cycle", 2).edges) == [(0, 1)]  # a cycle on 2 nodes is one edge
    assert build_graph("cycle", 3).number_of_edges() == 3
    stats = graph_stats(build_graph("complete", 2))  # the walk alternates, so H = 2 always
    assert (stats["E_H"], stats["E_H2"]) == (pytest.approx(2), pytest.approx(4))

# -----------------------------------------------------------------------------
# bad input: GraphError with one line naming the bad value


def raises(match, fn, *args, **kwargs):
    with pytest.raises(GraphError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_names_sizes_and_parameters():
    raises(r"graph 'foo' is not one of cycle, complete, er, or a JSON edge-list file", build_graph, "foo", 8)
    raises(r"num_nodes=1 is too small", build_graph, "cycle", 1)
    raises(r"num_nodes=0 is too small", build_graph, "complete", 0)
    raises(r"er graph with p=0.0 on 8 nodes is never connected; use p > 0", build_graph, "er", 8, 0.0)
    raises(r"er_p=1.5 is not a probability", build_graph, "er", 8, 1.5)
    raises(r"er_p=-0.1 is not a probability", build_graph, "er", 8, -0.1)
    raises(r"disconnected in 1000 draws .*use a larger p", build_graph, "er", 30, 0.01)
    raises(r"laziness=1.0 is not allowed; use 0 <= laziness < 1", transition_matrix, lollipop(), 1.0)
    raises(r"laziness=-0.5 is not allowed", graph_stats, lollipop(), -0.5)
    raises(r"laziness=2 is not allowed", mh_next_node, lollipop(), 0, np.random.default_rng(0), laziness=2)
    raises(r"graph nodes must be 0..2", transition_matrix, nx.path_graph([1, 2, 3]))


def test_json_size_must_match_the_run():
    raises(r"graph .*cycle_graph_20_nodes.json has 20 nodes but the run has 8 ranks; launch with mpirun -n 20",
           build_graph, PAPER_GRAPHS["cycle"], 8)


@pytest.mark.parametrize("content, match", [
    ("{not json", r"is not valid JSON: "),
    ('{"edges": [[0, 1]]}', r'needs an object with keys "num_nodes" and "edges"'),
    ('{"num_nodes": 3}', r'needs an object with keys "num_nodes" and "edges"'),
    ("[[0, 1]]", r'needs an object with keys "num_nodes" and "edges"'),
    ('{"num_nodes": "3", "edges": [[0, 1], [1, 2]]}', r"num_nodes='3' must be an integer >= 2"),
    ('{"num_nodes": 1, "edges": []}', r"num_nodes=1 must be an integer >= 2"),
    ('{"num_nodes": 3, "edges": {"0": 1}}', r"edges must be a list of \[u, v\] pairs, got dict"),
    ('{"num_nodes": 20, "edges": [[0, 1], [3, 25]]}', r"edge \[3, 25\] names node 25 but num_nodes is 20"),
    ('{"num_nodes": 3, "edges": [[0, -1]]}', r"edge \[0, -1\] names node -1 but num_nodes is 3"),
    ('{"num_nodes": 3, "edges": [[0, 1], [2, 2]]}', r"edge \[2, 2\] is a self-loop"),
    ('{"num_nodes": 3, "edges": [[0, 1.5]]}', r"edge \[0, 1.5\] must be a pair \[u, v\] of integer node ids"),
    ('{"num_nodes": 3, "edges": [[0, "1"]]}', r"must be a pair \[u, v\] of integer node ids"),
    ('{"num_nodes": 3, "edges": [[0, 1, 2]]}', r"must be a pair \[u, v\] of integer node ids"),
    ('{"num_nodes": 5, "edges": [[0, 1], [2, 3]]}', r"is disconnected \(3 components\); MW and gossip need a connected graph"),
])
def test_bad_json_files(tmp_path, content, match):
    path = write_json(tmp_path / "x.json", content)
    raises(match, load_graph_json, path)
    raises(match, build_graph, path, 20)


def test_missing_json_file(tmp_path):
    raises(r"graph JSON .*nope.json does not exist", build_graph, str(tmp_path / "nope.json"), 8)


def test_bad_paper_style_bipartite_files(tmp_path):
    square = {"num_nodes": 4, "edges": [[0, 1], [1, 2], [2, 3], [3, 0], [0, 2]]}
    cases = [
        ({"num_nodes": 4, "edges": [[0, 1], [1, 2], [2, 0], [2, 3]]}, r"bipartite_g.json is not bipartite"),
        ({"num_nodes": 4, "edges": [[0, 1], [1, 2]]}, r"gossip cannot reach node 3: it has no edge to the other side"),
        ({"num_nodes": 4, "edges": [[0, 1], [2, 3]]}, r"gossip graph from .*bipartite_g.json is disconnected \(2 components\)"),
        ({"num_nodes": 3, "edges": [[0, 1], [1, 2]]}, r"gossip graph .*bipartite_g.json has 3 nodes but the graph has 4"),
        ('{"num_nodes": 4, "edges": [[0, 9]]}', r"edge \[0, 9\] names node 9 but num_nodes is 4"),
    ]
    graph_path = write_json(tmp_path / "g.json", square)
    for bipartite, match in cases:
        write_json(tmp_path / "bipartite_g.json", bipartite)
        raises(match, gossip_graph, load_graph_json(graph_path), graph_path)
    write_json(tmp_path / "bipartite_g.json", {"num_nodes": 4, "edges": [[1, 0], [1, 2], [3, 2], [3, 0]]})
    B, active = gossip_graph(load_graph_json(graph_path), graph_path)
    assert active == [0, 2] and B.number_of_edges() == 4


def test_gossip_without_a_paper_file_splits_the_json_graph(tmp_path):
    path = write_json(tmp_path / "g.json", {"num_nodes": 5, "edges": [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]]})
    B, active = gossip_graph(load_graph_json(path), path)
    assert active == [0, 2]

# -----------------------------------------------------------------------------
# command line


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "graphs.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_cli_json_on_the_paper_cycle():
    result = run_cli("--graph", "configs/paper/cycle_graph_20_nodes.json", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["graph"] == "configs/paper/cycle_graph_20_nodes.json"
    assert stats["E_H2"] == pytest.approx(2680, abs=0.5) and stats["E_H"] == pytest.approx(20)
    assert set(stats) == {"graph", "nodes", "edges", "diameter", "degree_min", "degree_max",
                          "spectral_gap", "absolute_spectral_gap", "E_H", "E_H2"}


def test_cli_bad_graph_name_exits_2_with_one_line():
    result = run_cli("--graph", "foo", "--nodes", "8")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "error: graph 'foo' is not one of cycle, complete, er, or a JSON edge-list file\n"


def test_cli_generated_graph_and_table(capsys):
    main(["--graph", "er", "--nodes", "12", "--er-p", "0.4", "--seed", "3", "--laziness", "0.2", "--json"])
    assert json.loads(capsys.readouterr().out) == {"graph": "er", **graph_stats(build_graph("er", 12, 0.4, seed=3), 0.2)}
    main(["--graph", "complete", "--nodes", "6"])
    table = capsys.readouterr().out
    assert "E_H2" in table and "gossip active   [0, 1, 2] (3 of 6)" in table and "gossip edges    9" in table


@pytest.mark.parametrize("args, message", [
    (["--graph", "foo"], "error: graph 'foo' is not one of cycle, complete, er"),
    (["--graph", "cycle"], "error: graph 'cycle' needs --nodes"),
    (["--graph", "cycle", "--nodes", "1"], "error: num_nodes=1 is too small"),
    (["--graph", "cycle", "--nodes", "5", "--laziness", "1"], "error: laziness=1.0 is not allowed"),
    (["--graph", "configs/paper/cycle_graph_20_nodes.json", "--nodes", "8"], "launch with mpirun -n 20"),
])
def test_cli_bad_input_exits_2_with_one_line(capsys, monkeypatch, args, message):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error:")
    assert message in err


@pytest.mark.slow
@pytest.mark.parametrize("name,p", [("cycle", 0.0), ("er", 12 / 100_000)])  # ER: mean degree 12, just above ln V, so a draw is connected about half the time
def test_graphs_of_100000_nodes_stay_sparse(name, p):
    """A V = 100,000 graph, its walk's transitions and its statistics in memory linear in V + E (the
    dense V x V transition matrix alone would take 80 GB)."""
    G = build_graph(name, 100_000, er_p=p or 0.3, seed=0)
    P = transition_matrix(G)
    assert P.shape == (100_000, 100_000) and P.nnz == 100_000 + 2 * G.number_of_edges()
    assert np.allclose(P.sum(axis=1), 1) and abs(P - P.T).max() < 1e-12  # stochastic, symmetric: uniform stationary
    stats = graph_stats(G)
    assert stats["nodes"] == 100_000 and stats["diameter"] is None and stats["E_H2"] is None
    if name == "er":
        assert 11 < 2 * stats["edges"] / stats["nodes"] < 13
