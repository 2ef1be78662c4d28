"""
A deterministic discrete-event simulator of Multi-Walk and Asynchronous Gossip:
V virtual nodes in one process, for graphs and delay models a real cluster (or a
2-core laptop) cannot run as V MPI ranks.

It runs the SAME rules as the MPI engine (the functions of algorithms.py) and
writes the same outputs (config.json, events-rank{v}.jsonl, summary.json), so
plots and reports read simulated and real runs alike. Only time is virtual:
  - a local update takes a duration drawn from compute_time_dist: fixed,
    exponential with mean compute_time_mean (the paper's wall-clock model), or
    measured (the wall time the real update took; not deterministic),
  - a model transfer takes model_bytes / bandwidth + latency,
  - every node has one compute queue.
Time-based settings (train_time, LR schedule, eval_interval) use virtual time;
evaluations at node 0 take none.
One seed gives byte-identical event logs (fixed and exponential durations).

    python simulate.py --nodes 50 --graph cycle --walks 5 --task synthetic --max-iterations 2000 --seed 7 --out runs/sim
    python simulate.py --nodes 100 --algorithm gossip --graph complete --max-iterations 3000 --out runs/sim_gossip
Every flag of main.py works here; --nodes V is required.
"""
import glob
import heapq
import json
import os
import sys
import time
from collections import deque

import numpy as np
import torch

import algorithms
import main
import models
from events import EventLog, write_final_summary


class VirtualClock:
    """The event heap. Events run in (time, order of scheduling) order, so ties never depend on anything but the seed."""
    def __init__(self):
        self.now, self.heap, self.scheduled = 0.0, [], 0

    def at(self, when, action, *args):
        heapq.heappush(self.heap, (when, self.scheduled, action, args))
        self.scheduled += 1

    def after(self, delay, action, *args):
        self.at(self.now + delay, action, *args)

    def run(self, evaluate, interval):
        """Run every event, and evaluate() at virtual times 0, interval, 2 interval, ... while any remain."""
        evaluations = 0
        while self.heap:
            when, _, action, args = heapq.heappop(self.heap)
            while evaluations * interval <= when:
                self.now = evaluations * interval
                evaluate()
                evaluations += 1
            self.now = when
            action(*args)


class Network:
    """What both algorithms share: the nodes, their logs, the clock, and what updates and transfers cost."""
    def __init__(self, cfg, run, nodes, logs, clock):
        self.cfg, self.run, self.nodes, self.logs, self.clock = cfg, run, nodes, logs, clock
        self.x0 = models.flatten_params(nodes[0].model)
        self.model_bytes = 4 * self.x0.numel()
        self.transfer_time = self.model_bytes / cfg["bandwidth"] + cfg["latency"]
        # one stream per node: durations never depend on the order in which the simulator visits nodes
        self.duration_rngs = [np.random.default_rng([cfg["seed"], 2, v]) for v in range(len(nodes))]

    def update(self, v, params):
        """Node v's local update on `params` (skipped for pure timing studies), computed now;
        returns (loss, virtual duration)."""
        cfg, loss, started = self.cfg, None, time.perf_counter()
        if not cfg["skip_updates"]:
            lr = algorithms.lr_at(self.clock.now, cfg)
            loss = round(algorithms.local_update(self.nodes[v], params, cfg["tau"], lr), 6)
        if cfg["compute_time_dist"] == "fixed":
            return loss, cfg["compute_time_mean"]
        if cfg["compute_time_dist"] == "exponential":
            return loss, float(self.duration_rngs[v].exponential(cfg["compute_time_mean"]))
        return loss, time.perf_counter() - started  # measured


# -----------------------------------------------------------------------------
# Multi-Walk: distributed_training.run_mw, event for event

class MultiWalk:
    def __init__(self, net):
        self.net, cfg = net, net.cfg
        num_nodes, self.num_walks = len(net.nodes), cfg["walks"]
        self.aggregator = algorithms.Aggregator(net.x0, self.num_walks)
        self.waiting = [[] for _ in range(num_nodes)]  # per node a heap of (walk, visits, model): lowest walk first
        self.busy = [False] * num_nodes
        self.final_walks = {}
        for walk_id in range(self.num_walks):  # walk r starts at node r, carrying x0
            net.clock.at(0.0, self.arrive, walk_id, walk_id, 0, net.x0.clone())

    def evaluated_model(self):
        return self.aggregator.global_model

    def arrive(self, v, walk_id, visits, params):
        heapq.heappush(self.waiting[v], (walk_id, visits, params))
        if not self.busy[v]:
            self.serve(v)

    def serve(self, v):
        """Node v takes the lowest waiting walk; the walk retires here if time or its share of the budget is up."""
        cfg, clock = self.net.cfg, self.net.clock
        while self.waiting[v]:
            walk_id, visits, params = heapq.heappop(self.waiting[v])
            budget = algorithms.walk_budget(cfg["max_iterations"], self.num_walks, walk_id)
            if clock.now >= cfg["train_time"] or (budget is not None and visits >= budget):
                self.net.logs[v].write("retire", walk=walk_id, visits=visits)
                self.final_walks[walk_id] = params
                continue
            # computed now, seen at the end: v serves one walk at a time, so nothing else touches its state meanwhile
            loss, duration = self.net.update(v, params)
            self.busy[v] = True
            clock.after(duration, self.finish_visit, v, walk_id, visits, params, loss, duration)
            return

    def finish_visit(self, v, walk_id, visits, params, loss, duration):
        net, cfg = self.net, self.net.cfg
        if v == 0:
            algorithms.merge_at_aggregator(self.aggregator, walk_id, params)
        net.logs[v].update(duration, walk=walk_id, visit=visits, loss=loss)
        nxt = algorithms.next_node(net.run["graph"], v, cfg["seed"], walk_id, visits, cfg["laziness"])
        self.busy[v] = False
        if nxt == v:
            net.logs[v].self_loop(walk=walk_id)
            self.arrive(v, walk_id, visits + 1, params)
        else:
            net.logs[v].transfer(nxt, net.model_bytes, walk=walk_id)
            net.clock.after(net.transfer_time, self.arrive, nxt, walk_id, visits + 1, params)
            self.serve(v)


# -----------------------------------------------------------------------------
# Asynchronous Gossip: distributed_training.run_gossip and gossip_communication

class Gossip:
    def __init__(self, net):
        self.net, cfg = net, net.cfg
        num_nodes = len(net.nodes)
        graph, active = net.run["gossip"]
        self.active = set(active)
        self.neighbors = [sorted(graph.neighbors(v)) for v in range(num_nodes)]
        self.partner_rngs = {v: np.random.default_rng([cfg["seed"], 1, v]) for v in active}  # as the engine's
        self.free = cfg["gossip_mode"] == "free"
        self.live = [net.x0.clone() for _ in range(num_nodes)]
        self.budgets = [algorithms.walk_budget(cfg["max_iterations"], num_nodes, v) for v in range(num_nodes)]
        self.updates = [0] * num_nodes
        self.computing = [True] * num_nodes
        self.credits = [0] * num_nodes            # per_update: finished updates not yet paid for by an exchange
        self.exchanging = [False] * num_nodes     # active node: an exchange in flight
        self.serving = [False] * num_nodes        # passive node: answering an exchange
        self.requests = [deque() for _ in range(num_nodes)]  # passive node: exchanges waiting to be served
        for v in range(num_nodes):
            net.clock.at(0.0, self.start_update, v)
        if self.free:
            for v in active:
                net.clock.at(0.0, self.start_exchange, v)

    def evaluated_model(self):
        return self.live[0]

    def start_update(self, v):
        cfg = self.net.cfg
        if self.net.clock.now >= cfg["train_time"] or (self.budgets[v] is not None and self.updates[v] >= self.budgets[v]):
            self.computing[v] = False
            return
        before = self.live[v].clone()
        after = before.clone()
        loss, duration = self.net.update(v, after)
        self.net.clock.after(duration, self.finish_update, v, before, after, loss, duration)

    def finish_update(self, v, before, after, loss, duration):
        # stale-gradient AD-PSGD: the delta from the snapshot lands on whatever averaging did meanwhile
        algorithms.apply_delta(self.live[v], before, after)
        self.net.logs[v].update(duration, loss=loss)
        self.updates[v] += 1
        self.credits[v] += 1
        if not self.free and v in self.active and not self.exchanging[v]:
            self.next_exchange(v)  # the waiting exchanger takes the credit at once
        self.start_update(v)

    def next_exchange(self, v):
        """free: back to back while v computes; per_update: one exchange per finished local update."""
        if self.computing[v] and (self.free or self.credits[v] > 0):
            self.start_exchange(v)

    def start_exchange(self, v):
        """Active node v sends its model to a uniform passive neighbour."""
        if not self.free:
            self.credits[v] -= 1
        self.exchanging[v] = True
        partner = algorithms.gossip_partner(self.neighbors[v], self.partner_rngs[v])
        self.net.clock.after(self.net.transfer_time, self.receive_request, partner, v, self.live[v].clone())

    def receive_request(self, p, v, model):
        self.requests[p].append((v, model))
        if not self.serving[p]:
            self.serve_exchange(p)

    def serve_exchange(self, p):
        """Passive node p serves one exchange at a time: it replies with its model, then both average."""
        v, received = self.requests[p].popleft()
        self.serving[p] = True
        self.net.clock.after(self.net.transfer_time, self.finish_exchange, p, v, received, self.live[p].clone())

    def finish_exchange(self, p, v, sent_by_v, sent_by_p):
        net = self.net
        algorithms.gossip_average(self.live[p], sent_by_p, sent_by_v)
        algorithms.gossip_average(self.live[v], sent_by_v, sent_by_p)
        net.logs[v].exchange(p)
        net.logs[v].transfer(p, net.model_bytes)
        net.logs[p].transfer(v, net.model_bytes)
        self.serving[p] = self.exchanging[v] = False
        if self.requests[p]:
            self.serve_exchange(p)
        self.next_exchange(v)


# -----------------------------------------------------------------------------

def simulate(cfg, run, verbose=True):
    """One simulated run of cfg on run (main.build_run(cfg, V)); writes the outputs to cfg["out"] and returns the summary."""
    num_nodes = cfg["nodes"]
    device = torch.device("cuda" if cfg["device"] == "cuda" or (cfg["device"] == "auto" and torch.cuda.is_available())
                          else "cpu")
    os.makedirs(cfg["out"], exist_ok=True)
    for path in glob.glob(os.path.join(cfg["out"], "events-rank*.jsonl")):
        os.remove(path)  # an earlier run here may have had more nodes; read_events would merge its logs in
    with open(os.path.join(cfg["out"], "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if verbose:
        print(main.plan_text(cfg, run) + f"\nsimulated: {cfg['compute_time_dist']} compute times, mean "
              f"{cfg['compute_time_mean']:g}s; bandwidth {cfg['bandwidth']:g} B/s, latency {cfg['latency']:g}s", flush=True)
    nodes = [algorithms.make_node(cfg, run, v, device) for v in range(num_nodes)]
    clock = VirtualClock()
    logs = [EventLog(os.path.join(cfg["out"], f"events-rank{v}.jsonl"), lambda: clock.now) for v in range(num_nodes)]
    net = Network(cfg, run, nodes, logs, clock)
    algorithm = MultiWalk(net) if cfg["algorithm"] == "mw" else Gossip(net)
    test_x, test_y = run["task_data"].test_x.to(device), run["task_data"].test_y.to(device)

    def evaluate(params, model="node0"):
        """Test loss and accuracy at node 0, logged like the engine's Evaluator."""
        models.load_flat_params(nodes[0].model, params)
        loss, accuracy = models.evaluate(nodes[0].model, test_x, test_y)
        iterations = sum(log.counters["iterations"] for log in logs)
        nbytes = sum(log.counters["bytes_sent"] for log in logs)
        logs[0].write("eval", model=model, test_loss=loss, test_accuracy=accuracy, iterations_seen=iterations,
                      bytes_seen=nbytes)
        if verbose:
            print(f"t {clock.now:7.2f}s | iterations {iterations:7d} | sent {nbytes / 1e6:9.1f} MB | "
                  f"test loss {loss:.4f} | test acc {accuracy:.4f}" + ("" if model == "node0" else f" ({model})"),
                  flush=True)
        return loss, accuracy

    started = time.perf_counter()
    clock.run(lambda: evaluate(algorithm.evaluated_model()), cfg["eval_interval"])
    average_accuracy = None
    if cfg["algorithm"] == "gossip":
        average_accuracy = evaluate(torch.stack(algorithm.live).mean(dim=0), model="network_average")[1]
    loss, accuracy = evaluate(algorithm.evaluated_model())
    if cfg["save_models"]:
        for walk_id, params in getattr(algorithm, "final_walks", {}).items():
            torch.save(params, os.path.join(cfg["out"], f"walk{walk_id}.pt"))
        torch.save(algorithm.evaluated_model().cpu(), os.path.join(cfg["out"], "model.pt"))
    for log in logs:
        log.close()
    if verbose:
        print(f"simulated {clock.now:.2f}s of virtual time in {time.perf_counter() - started:.1f}s", flush=True)
    return write_final_summary(cfg["out"], cfg, [log.counters for log in logs], "sim", net.model_bytes, clock.now,
                               accuracy, loss, average_accuracy)


def simulate_main(argv):
    try:
        cfg = main.parse_config(argv)
        if not cfg["nodes"]:
            raise main.ConfigError("simulate.py needs --nodes V, the number of virtual nodes")
        run = main.build_run(cfg, cfg["nodes"])
    except ValueError as e:  # ConfigError, GraphError, DataError: one-line messages
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr, flush=True)
        return 2
    simulate(cfg, run)
    print(f"results in {cfg['out']}/ (summary.json, events-rank*.jsonl, config.json)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(simulate_main(sys.argv[1:]))
