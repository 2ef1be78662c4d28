"""The large-V study's verdicts are computed from the figures: change a figure, the verdict changes."""
import large_v


def training(graph, algorithm, walks=1, alpha=1.0, iterations=None, nbytes=None, nodes=20):
    reached = None if iterations is None else dict(iterations=iterations, bytes=nbytes or iterations, time=1.0)
    return dict(kind="training", nodes=nodes, graph=graph, alpha=alpha, algorithm=algorithm, walks=walks,
                to_target=reached)


def test_claim1_needs_every_walk_count_to_beat_gossip():
    results = [training("cycle", "mw", 1, iterations=50), training("cycle", "mw", 2, iterations=80),
               training("cycle", "gossip", iterations=100)]
    assert large_v.claim1(results, 20)
    results[2]["to_target"]["iterations"] = 60
    assert not large_v.claim1(results, 20)
    results[2]["to_target"] = None  # gossip never reached the target
    assert large_v.claim1(results, 20)
    results[0]["to_target"] = None  # neither did MW-1
    assert not large_v.claim1(results, 20)


def complete_grid(gossip_iterations):
    return [training("complete", "mw", walks, alpha, iterations=its)
            for alpha in (1.0, 0.1) for walks, its in ((1, 40), (2, 90), (10, None))] + \
           [training("complete", "gossip", alpha=alpha, iterations=gossip_iterations[alpha]) for alpha in (1.0, 0.1)]


def test_claim2_needs_mw_to_win_somewhere_and_gossip_where_expected():
    winners, holds = large_v.claim2(complete_grid({1.0: 100, 0.1: 120}), 20)
    assert holds and winners[1.0, 10] == "gossip" and winners[0.1, 1] == "MW"
    winners, holds = large_v.claim2(complete_grid({1.0: 30, 0.1: 30}), 20)  # gossip wins everywhere
    assert not holds and set(winners.values()) == {"gossip"}
    winners, holds = large_v.claim2(complete_grid({1.0: None, 0.1: None}), 20)  # MW wins or nobody reaches
    assert not holds and set(winners.values()) == {"MW", "neither"}


def test_claim4_compares_bytes_and_finds_the_cheapest_run():
    results = [training("er", "mw", 1, iterations=50, nbytes=10), training("er", "mw", 2, iterations=40, nbytes=30),
               training("er", "gossip", iterations=30, nbytes=20)]
    winners, mw1_fewest = large_v.claim4(results, 20, "er", 1.0)
    assert winners == {1: "MW", 2: "gossip"} and mw1_fewest
    results[0]["to_target"]["bytes"] = 25
    winners, mw1_fewest = large_v.claim4(results, 20, "er", 1.0)
    assert winners == {1: "gossip", 2: "gossip"} and not mw1_fewest


def test_claim3_compares_measured_speed_up_with_the_ideal(monkeypatch):
    monkeypatch.setattr(large_v, "NODES", (20, 40))
    def timing(algorithm, nodes, graph, walks, rate):
        return dict(kind="timing", algorithm=algorithm, nodes=nodes, graph=graph, walks=walks, rate=rate, model_rate=rate)
    results = [timing("mw", nodes, graph, walks, rate=30.0 * walks * (0.8 if (nodes, walks) == (20, 10) else 1))
               for nodes in (20, 40) for graph in ("cycle", "er", "complete") for walks in (1, 2, 5, 10)]
    results += [timing("gossip", nodes, graph, 1, rate=nodes * 40.0 * (0.95 if nodes == 40 else 1))
                for nodes in (20, 40) for graph in ("cycle", "er", "complete")]
    mw, gossip = large_v.claim3(results)
    assert mw[20][:2] == (0.8, 10) and mw[40][0] == 1.0
    assert gossip[:2] == (0.95, 40)
