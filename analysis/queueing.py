"""
MW-R's throughput predicted by a closed queueing network (claim 3's model, docs/analysis_plan.md).

R walks circulate for ever. Each node is a single-server station (it serves one walk at a time; a local
update takes an exponential time of mean `compute_s`); after an update the walk takes its next hop on the
graph's Metropolis-Hastings chain: a hop to another node is a pure delay of `hop_s` (bytes / bandwidth +
latency; links never contend, as in simulate.py), a self-loop none. An engine timing model's delay per
visit (`visit_delay_s`: the authors' sleep-polls, issue #24) is another pure delay. The network is then
product-form (exponential single servers + infinite-server delays; walks differ only by their id, and
serving the lowest id first changes no count), so exact mean-value analysis gives its throughput:

    for n = 1 .. R:  W_v(n) = D_v (1 + Q_v(n-1)),  X(n) = n / (Z + sum_v W_v(n)),  Q_v(n) = X(n) W_v(n)

per local update (the unit of work): D_v = pi_v x compute_s (pi: the chain's stationary distribution, the
share of updates node v makes) and Z = P(move) x hop_s + visit_delay_s (P(move) = sum_v pi_v (1 - P_vv)).
X(R) is local updates per second over all nodes. R = 1 gives 1 / (compute_s + Z).

    python analysis/queueing.py --graph configs/paper/complete_graph_20_nodes.json --nodes 20 --walks 1 5 10 15
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse

import numpy as np

import graphs


def stationary(P):
    """The stationary distribution of a transition matrix (the eigenvector of eigenvalue 1)."""
    values, vectors = np.linalg.eig(P.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    return pi / pi.sum()


def mva_throughput(demands, delay, customers):
    """Exact mean-value analysis of a closed single-class network: single-server stations of service
    demands `demands` (s per unit of work) and a pure delay `delay` (s per unit of work). Returns
    [X(1), ..., X(customers)], units of work per second."""
    demands = np.asarray(demands, dtype=float)
    queue = np.zeros_like(demands)
    throughput = []
    for n in range(1, customers + 1):
        residence = demands * (1 + queue)
        x = n / (delay + residence.sum())
        queue = x * residence
        throughput.append(float(x))
    return throughput


def mw_throughput(P, walks, compute_s, hop_s, visit_delay_s=0.0):
    """Local updates per second of MW-R for R = 1 .. walks on transition matrix P (dense, or graphs.py's
    sparse one; made dense here: V up to a few thousand): [X(1), ..., X(walks)]."""
    P = P.toarray() if hasattr(P, "toarray") else np.asarray(P, dtype=float)
    pi = stationary(P)
    moves = float(np.sum(pi * (1 - np.diag(P))))
    return mw_from_shares(pi, moves, walks, compute_s, hop_s, visit_delay_s)


def mw_from_shares(pi, moves, walks, compute_s, hop_s, visit_delay_s=0.0):
    return mva_throughput(np.asarray(pi) * compute_s, moves * hop_s + visit_delay_s, walks)


def predict(graph, nodes, walks, compute_s, model_bytes, bandwidth, latency, laziness=0.0, visit_delay_s=0.0):
    """MW-R's updates/s on a graph as simulate.py builds it (a name or a JSON file), for each R in walks."""
    P = graphs.transition_matrix(graphs.build_graph(graph, nodes), laziness)
    curve = mw_throughput(P, max(walks), compute_s, model_bytes / bandwidth + latency, visit_delay_s)
    return {r: curve[r - 1] for r in walks}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--graph", default="complete")
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--walks", type=int, nargs="+", default=[1, 5, 10, 15])
    parser.add_argument("--compute", type=float, default=0.025, help="mean s per local update")
    parser.add_argument("--model-bytes", type=int, default=272_474 * 4)
    parser.add_argument("--bandwidth", type=float, default=1.25e8, help="bytes/s")
    parser.add_argument("--latency", type=float, default=1e-4)
    parser.add_argument("--visit-delay", type=float, default=0.0, help="s per visit (an engine timing model's)")
    args = parser.parse_args(argv)
    if min(args.walks) < 1:
        print(f"error: --walks {min(args.walks)}: walks must be >= 1", file=sys.stderr)
        return 2
    rates = predict(args.graph, args.nodes, args.walks, args.compute, args.model_bytes, args.bandwidth,
                    args.latency, visit_delay_s=args.visit_delay)
    one = rates.get(1) or predict(args.graph, args.nodes, [1], args.compute, args.model_bytes, args.bandwidth,
                                  args.latency, visit_delay_s=args.visit_delay)[1]
    print("| R | updates/s | speed-up | of linear |\n|---|---|---|---|")
    for r, x in rates.items():
        print(f"| {r} | {x:.1f} | {x / one:.2f} | {x / one / r:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
