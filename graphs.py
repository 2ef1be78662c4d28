"""
Topologies for Multi-Walk (MW) and asynchronous gossip (SEMANTICS.md sections 1-3).

- build_graph / load_graph_json: cycle, complete, Erdos-Renyi or a JSON edge list
  {"num_nodes": V, "edges": [[u, v], ...]}; nodes are 0..V-1, always connected.
- transition_matrix / mh_next_node: the Metropolis-Hastings walk the MW walks take; HopRng: a
  hop's draws, those of np.random.default_rng([seed, walk, hop]), made cheaply.
- gossip_graph: the active/passive bipartite subgraph gossip runs on.
- graph_stats: diameter, degrees, spectral gap and exact moments of the return
  time to node 0, the numbers the paper reports per graph.
Graphs are held sparse (networkx adjacency, scipy.sparse transitions), so a simulated graph of
100,000 nodes costs memory in its edges, not V^2; the statistics that need V^2 work (diameter,
spectrum, return-time moments) are computed up to EXACT_STATS_MAX_NODES nodes.

Run `python graphs.py --graph cycle --nodes 20` for a table, add --json for one JSON object.
"""
import argparse
import json
import os
import sys

import networkx as nx
import numpy as np
import scipy.sparse

GENERATED_GRAPHS = ("cycle", "complete", "er")
PAPER_VERSIONS = ("v1", "v2")  # the paper's arXiv versions; the last is the current one
MAX_ER_DRAWS = 1000  # redraws of G(n, p) before we call p too small to be connected
# Above this many nodes: G(n, p) is drawn by networkx's O(V + E) generator (the O(V^2) one it has always
# used below, so every smaller graph stays what it was for its seed), and graph_stats leaves out what
# costs V^2 or more
EXACT_STATS_MAX_NODES = 5000


class GraphError(ValueError):
    """A bad graph input; the message is one line naming the bad value and what is allowed."""

# -----------------------------------------------------------------------------
# building and loading graphs

def _is_json_path(name):
    return name not in GENERATED_GRAPHS and (name.endswith(".json") or os.path.isfile(name))

def _is_node_id(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

def _read_edge_list(path):
    """The graph a JSON edge-list file describes, format-checked but not yet checked for connectivity."""
    if not os.path.isfile(path):
        raise GraphError(f"graph JSON {path} does not exist")
    try:
        with open(path) as f:
            spec = json.load(f)
    except json.JSONDecodeError as e:
        raise GraphError(f"graph JSON {path} is not valid JSON: {e}") from None
    if not isinstance(spec, dict) or "num_nodes" not in spec or "edges" not in spec:
        raise GraphError(f'graph JSON {path} needs an object with keys "num_nodes" and "edges" ([[u, v], ...])')
    num_nodes, edges = spec["num_nodes"], spec["edges"]
    if not _is_node_id(num_nodes) or num_nodes < 2:
        raise GraphError(f"graph JSON {path}: num_nodes={num_nodes!r} must be an integer >= 2")
    if not isinstance(edges, list):
        raise GraphError(f"graph JSON {path}: edges must be a list of [u, v] pairs, got {type(edges).__name__}")
    G = nx.Graph()
    G.add_nodes_from(range(num_nodes))
    for edge in edges:
        if not isinstance(edge, list) or len(edge) != 2 or not all(_is_node_id(u) for u in edge):
            raise GraphError(f"graph JSON {path}: edge {edge!r} must be a pair [u, v] of integer node ids")
        u, v = edge
        for node in (u, v):
            if not 0 <= node < num_nodes:
                raise GraphError(f"graph JSON {path}: edge {edge} names node {node} but num_nodes is {num_nodes}")
        if u == v:
            raise GraphError(f"graph JSON {path}: edge {edge} is a self-loop; edges must join two distinct nodes")
        G.add_edge(int(u), int(v))
    return G

def _require_connected(G, source):
    if not nx.is_connected(G):
        components = nx.number_connected_components(G)
        raise GraphError(f"graph from {source} is disconnected ({components} components); "
                         "MW and gossip need a connected graph")

def load_graph_json(path):
    path = os.fspath(path)
    G = _read_edge_list(path)
    _require_connected(G, path)
    return G

def build_graph(name, num_nodes, er_p=0.3, seed=0):
    """A connected graph on nodes 0..num_nodes-1. A cycle on 2 nodes is the single edge 0-1."""
    if name not in GENERATED_GRAPHS and not _is_json_path(name):
        raise GraphError(f"graph {name!r} is not one of cycle, complete, er, or a JSON edge-list file")
    if not _is_node_id(num_nodes) or num_nodes < 2:
        raise GraphError(f"num_nodes={num_nodes!r} is too small; a graph needs an integer >= 2 nodes")
    if name == "cycle":
        return nx.cycle_graph(num_nodes)
    if name == "complete":
        return nx.complete_graph(num_nodes)
    if name == "er":
        if not 0 < er_p <= 1:  # also rejects nan
            if er_p == 0:
                raise GraphError(f"er graph with p={er_p} on {num_nodes} nodes is never connected; use p > 0")
            raise GraphError(f"er_p={er_p} is not a probability; use 0 < p <= 1")
        # redraw with seed+1, seed+2, ... so the result is a pure function of (num_nodes, p, seed)
        generate = nx.gnp_random_graph if num_nodes <= EXACT_STATS_MAX_NODES else nx.fast_gnp_random_graph
        for draw in range(MAX_ER_DRAWS):
            G = generate(num_nodes, er_p, seed=seed + draw)
            if nx.is_connected(G):
                return G
        raise GraphError(f"er graph with p={er_p} on {num_nodes} nodes was disconnected in {MAX_ER_DRAWS} draws "
                         f"(seeds {seed}..{seed + MAX_ER_DRAWS - 1}); use a larger p")
    G = load_graph_json(name)
    if G.number_of_nodes() != num_nodes:
        raise GraphError(f"graph {name} has {G.number_of_nodes()} nodes but the run has {num_nodes} ranks; "
                         f"launch with mpirun -n {G.number_of_nodes()}")
    return G

# -----------------------------------------------------------------------------
# the Metropolis-Hastings walk: P_ij = min(1/d_i, 1/d_j), uniform stationary distribution

def _check_laziness(laziness):
    if not 0 <= laziness < 1:
        raise GraphError(f"laziness={laziness} is not allowed; use 0 <= laziness < 1 (1 would never move)")

def transition_matrix(G, laziness=0.0):
    """The walk's V x V transition matrix, sparse (scipy.sparse CSR): V + 2E entries."""
    _check_laziness(laziness)
    V = G.number_of_nodes()
    if set(G.nodes) != set(range(V)):
        raise GraphError(f"graph nodes must be 0..{V - 1}, got {sorted(G.nodes)[:5]}...")
    edges = np.array(G.edges, dtype=np.int64).reshape(-1, 2)
    degree = np.array([G.degree(v) for v in range(V)], dtype=float)
    rows, cols = np.concatenate([edges[:, 0], edges[:, 1]]), np.concatenate([edges[:, 1], edges[:, 0]])
    moves = (1 - laziness) * np.minimum(1 / degree[rows], 1 / degree[cols])
    stay = 1 - np.bincount(rows, weights=moves, minlength=V)  # rejected proposals (and laziness) stay put
    diagonal = np.arange(V)
    return scipy.sparse.csr_array((np.concatenate([moves, stay]), (np.concatenate([rows, diagonal]),
                                                                  np.concatenate([cols, diagonal]))), shape=(V, V))

class HopRng:
    """The numbers np.random.default_rng([seed, walk, hop]) draws for one hop (`integers(n)`,
    `random()`), computed in plain Python: numpy's SeedSequence (mix_entropy, generate_state),
    PCG64's seeding and its XSL-RR output, and Generator's Lemire draw, step by step. The same
    numbers (tests/test_graphs.py compares them with numpy's), without building the three numpy
    objects a hop would otherwise make: about half of default_rng's cost (docs/performance.md)."""
    __slots__ = ("state", "inc", "half")
    M32, M64, M128 = (1 << 32) - 1, (1 << 64) - 1, (1 << 128) - 1
    PCG64_MULT = 0x2360ed051fc65da44385df649fccf645
    schedules = {}  # number of entropy words -> SeedSequence's mixing steps, with their hash constants

    @classmethod
    def schedule(cls, words):
        """SeedSequence's steps for `words` words of entropy (pool size 4): (the words' initial hashes'
        constants, the mixing steps (src, src is an entropy word, dst, constants), generate_state's constants).
        A hash constant's sequence does not depend on the data, so each step's pair is fixed."""
        if words not in cls.schedules:
            def constants(h, multiplier):
                while True:
                    yield h, h * multiplier & cls.M32
                    h = h * multiplier & cls.M32
            mixing = constants(0x43b0d7e5, 0x931e8875)
            initial = [next(mixing) for _ in range(4)]
            steps = [(src, False, dst, *next(mixing)) for src in range(4) for dst in range(4) if src != dst]
            steps += [(src, True, dst, *next(mixing)) for src in range(4, words) for dst in range(4)]
            state = constants(0x8b51f9dd, 0x58f38ded)
            cls.schedules[words] = initial, steps, [next(state) for _ in range(8)]
        return cls.schedules[words]

    def __init__(self, seed, walk, hop):
        M32 = self.M32
        entropy = []  # numpy's uint32 words of each value, lowest first; 0 is one word
        for value in (seed, walk, hop):
            entropy.append(value & M32)
            while value > M32:
                value >>= 32
                entropy.append(value & M32)
        initial, steps, state = self.schedule(len(entropy))
        pool = []
        for value, (x, y) in zip(entropy + [0] * (4 - len(entropy)), initial):
            value = (value ^ x) * y & M32
            pool.append(value ^ (value >> 16))
        for src, from_entropy, dst, x, y in steps:
            value = ((entropy[src] if from_entropy else pool[src]) ^ x) * y & M32
            mixed = (0xca01f9dd * pool[dst] - 0x4973f715 * (value ^ (value >> 16))) & M32
            pool[dst] = mixed ^ (mixed >> 16)
        words = []
        for i, (x, y) in enumerate(state):
            value = (pool[i & 3] ^ x) * y & M32
            words.append(value ^ (value >> 16))
        initstate = (words[1] << 96) | (words[0] << 64) | (words[3] << 32) | words[2]
        self.inc = ((words[5] << 97) | (words[4] << 65) | (words[7] << 33) | (words[6] << 1) | 1) & self.M128
        self.state = ((self.inc + initstate) * self.PCG64_MULT + self.inc) & self.M128  # pcg64_set_seed
        self.half = None  # the upper 32 bits of the last 64-bit output, which PCG64's next_uint32 keeps

    def next64(self):
        self.state = (self.state * self.PCG64_MULT + self.inc) & self.M128
        high, low = self.state >> 64, self.state & self.M64
        x, rotation = high ^ low, high >> 58
        return ((x >> rotation) | (x << (-rotation & 63))) & self.M64

    def next32(self):
        if self.half is not None:
            half, self.half = self.half, None
            return half
        value = self.next64()
        self.half = value >> 32
        return value & self.M32

    def random(self):
        return (self.next64() >> 11) * (1.0 / 9007199254740992.0)

    def integers(self, n):
        """Generator.integers(n) for 1 <= n < 2**32: Lemire's method, drawing nothing for n = 1."""
        if n == 1:
            return 0
        product = self.next32() * n
        if product & self.M32 < n:
            threshold = (self.M32 + 1 - n) % n
            while product & self.M32 < threshold:
                product = self.next32() * n
        return product >> 32


def mh_next_node(G_or_neighbors, current, rng, laziness=0.0):
    """
    One MH hop from `current`. G_or_neighbors is a graph or any mapping node -> neighbours.
    The draws are fixed so a route is a pure function of the rng's seed: with laziness > 0 one
    random() to decide whether to stay, then integers() for the proposal and random() to accept.
    """
    _check_laziness(laziness)
    if laziness > 0 and rng.random() < laziness:
        return int(current)
    neighbors = sorted(G_or_neighbors[current])  # sorted: the proposal must not depend on insertion order
    proposal = neighbors[rng.integers(len(neighbors))]
    accept = rng.random() < len(neighbors) / len(G_or_neighbors[proposal])  # min(1, d_i/d_j)
    return int(proposal if accept else current)

# -----------------------------------------------------------------------------
# the bipartite active/passive split for asynchronous gossip (SEMANTICS.md section 2)

def _connected_independent_set(G):
    """
    A large independent set holding node 0 whose cut edges still connect the graph: grow it from
    node 0, each time adding the frontier node with the fewest undecided neighbours (the classic
    greedy for large independent sets). Every node added touches an already-connected passive node
    and every passive node touches an active one, so the cut stays connected.
    """
    active, passive = {0}, set(G[0])

    def undecided_neighbors(v):
        return sum(1 for u in G[v] if u not in active and u not in passive)

    while len(active) + len(passive) < len(G):
        frontier = {v for u in passive for v in G[u]} - active - passive
        node = min(frontier, key=lambda v: (undecided_neighbors(v), v))
        active.add(node)
        passive |= set(G[node]) - active
    return active

def _cut_graph(G, active):
    B = nx.Graph()
    B.add_nodes_from(range(G.number_of_nodes()))
    B.add_edges_from((u, v) for u, v in G.edges if (u in active) != (v in active))
    return B

def paper_gossip_file(name, paper_version="v2"):
    """The authors' bipartite file for the graph file `name`: bipartite_<name> beside it, or for
    paper_version v1 the one in its v1/ folder where the split changed (only ER's: v2 added 2-11)."""
    folder, base = os.path.dirname(name), "bipartite_" + os.path.basename(name)
    if paper_version not in PAPER_VERSIONS:
        raise GraphError(f"paper_version {paper_version!r} is not one of {', '.join(PAPER_VERSIONS)}")
    older = os.path.join(folder, paper_version, base)
    return older if paper_version != PAPER_VERSIONS[-1] and os.path.isfile(older) else os.path.join(folder, base)

def gossip_graph(G, name, paper_version="v2"):
    """The bipartite graph gossip runs on and its sorted active nodes: the file's "top_nodes" for the
    paper's bipartite files (as of paper_version), otherwise the side holding node 0."""
    V = G.number_of_nodes()
    paper_file = paper_gossip_file(name, paper_version)
    if _is_json_path(name) and os.path.isfile(paper_file):
        # the authors' own split, taken as given (their v2 ER one even has an edge, 2-11, outside the graph)
        source = paper_file
        B = _read_edge_list(paper_file)
        if B.number_of_nodes() != V:
            raise GraphError(f"gossip graph {paper_file} has {B.number_of_nodes()} nodes but the graph has {V}")
        if not nx.is_bipartite(B):
            raise GraphError(f"gossip graph {paper_file} is not bipartite; every edge must join the two sides")
        with open(paper_file) as f:
            top_nodes = json.load(f).get("top_nodes")
        if top_nodes is not None:  # the authors' files name their active side "top_nodes"
            active = {int(v) for v in top_nodes}
            if any(not 0 <= v < V for v in active) or any((u in active) == (v in active) for u, v in B.edges):
                raise GraphError(f"gossip graph {paper_file}: top_nodes must be one side of every edge")
        else:
            colour = nx.bipartite.color(B)
            active = {v for v in B if colour[v] == colour[0]}
    else:
        source = f"graph {name!r}"
        if G.number_of_edges() == V * (V - 1) // 2:
            active = set(range(V // 2))  # complete: K_{V/2,V/2}, the smaller half active when V is odd
        elif nx.is_bipartite(G):
            colour = nx.bipartite.color(G)  # even cycles: the even nodes
            active = {v for v in G if colour[v] == colour[0]}
        else:
            active = _connected_independent_set(G)
        B = _cut_graph(G, active)
    for v in range(V):
        if B.degree(v) == 0:
            raise GraphError(f"gossip cannot reach node {v}: it has no edge to the other side in {source}")
    if not nx.is_connected(B):
        raise GraphError(f"gossip graph from {source} is disconnected ({nx.number_connected_components(B)} "
                         "components); averaging could never mix the models across them")
    return B, sorted(int(v) for v in active)

# -----------------------------------------------------------------------------
# statistics: spectral gap and exact moments of the first-return time to node 0

def return_time_moments(P):
    """
    E[H] and E[H^2] of the first-return time H to node 0, solved exactly from the chain.
    T_i = hitting time of 0 from i (T_0 = 0); for i != 0, T_i = 1 + T_J with J ~ P[i], so over the
    states != 0 (Q = P without node 0): h = 1 + Q h and m = E[T^2] = 1 + 2 Q h + Q m.
    H = 1 + T_J with J ~ P[0], so E[H] = 1 + P[0] h and E[H^2] = P[0] (1 + 2 h + m).
    """
    V = P.shape[0]
    Q = P[1:, 1:]
    I_minus_Q = np.eye(V - 1) - Q
    h = np.linalg.solve(I_minus_Q, np.ones(V - 1))
    m = np.linalg.solve(I_minus_Q, 1 + 2 * Q @ h)
    h, m = np.concatenate([[0.0], h]), np.concatenate([[0.0], m])
    return float(1 + P[0] @ h), float(P[0] @ (1 + 2 * h + m))

def graph_stats(G, laziness=0.0):
    """The graph's statistics; above EXACT_STATS_MAX_NODES nodes only its size and degrees (the
    others are None: the diameter costs V x E, the spectrum and the moments V^3)."""
    degrees = [d for _, d in G.degree]
    size = {"nodes": G.number_of_nodes(), "edges": G.number_of_edges(), "degree_min": min(degrees),
            "degree_max": max(degrees)}
    if G.number_of_nodes() > EXACT_STATS_MAX_NODES:
        return dict(size, diameter=None, spectral_gap=None, absolute_spectral_gap=None, E_H=None, E_H2=None)
    P = transition_matrix(G, laziness).toarray()
    eigenvalues = np.linalg.eigvalsh(P)  # ascending, the last one is 1
    second_largest_modulus = max(abs(eigenvalues[0]), abs(eigenvalues[-2]))
    E_H, E_H2 = return_time_moments(P)
    return {
        **size,
        "diameter": nx.diameter(G),
        # 1 - lambda_2 governs how fast walks forget their start; the absolute gap also sees
        # periodicity (an even cycle has eigenvalue -1, so its absolute gap is 0)
        "spectral_gap": float(1 - eigenvalues[-2]),
        "absolute_spectral_gap": max(0.0, float(1 - second_largest_modulus)),  # rounding can dip below 0
        "E_H": E_H,
        "E_H2": E_H2,
    }

# -----------------------------------------------------------------------------
# command line

def main(argv=None):
    parser = argparse.ArgumentParser(description="Statistics of an MW / gossip topology.")
    parser.add_argument("--graph", required=True, help="cycle, complete, er, or a JSON edge-list file")
    parser.add_argument("--nodes", type=int, default=None, help="number of nodes (a JSON file knows its own)")
    parser.add_argument("--er-p", type=float, default=0.3, help="edge probability of the er graph")
    parser.add_argument("--seed", type=int, default=0, help="seed of the er graph")
    parser.add_argument("--laziness", type=float, default=0.0, help="stay probability of the MH walk")
    parser.add_argument("--paper-version", default="v2", help="v1 or v2: the authors' gossip split of a paper graph")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    try:
        if args.nodes is not None:
            G = build_graph(args.graph, args.nodes, args.er_p, args.seed)
        elif _is_json_path(args.graph):
            G = load_graph_json(args.graph)
        elif args.graph in GENERATED_GRAPHS:
            raise GraphError(f"graph {args.graph!r} needs --nodes; only a JSON file carries its own size")
        else:
            raise GraphError(f"graph {args.graph!r} is not one of cycle, complete, er, or a JSON edge-list file")
        stats = {"graph": args.graph, **graph_stats(G, args.laziness)}
        B, active = gossip_graph(G, args.graph, args.paper_version)
    except GraphError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        print(json.dumps(stats))
        return
    for key, value in stats.items():
        print(f"{key:<16}{value:.6g}" if isinstance(value, float) else f"{key:<16}{value}")
    print(f"{'gossip active':<16}{active} ({len(active)} of {G.number_of_nodes()})")
    print(f"{'gossip edges':<16}{B.number_of_edges()}")

if __name__ == "__main__":
    main()
