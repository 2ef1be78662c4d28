"""
A deterministic discrete-event simulator of Multi-Walk and Asynchronous Gossip:
V virtual nodes in one process, for graphs and delay models a real cluster (or a
2-core laptop) cannot run as V MPI ranks.

It drives the SAME protocols as the MPI engine (protocols.py: every rule of an
algorithm, from a walk's arrival to the end of the run) and writes the same
outputs (config.json, events-rank{v}.jsonl, summary.json), so plots and reports
read simulated and real runs alike. A node is built (model, optimizer, batches,
protocol, log) when it is first needed, and its log file at its first event (a
node that logs nothing has none), so MW on V = 100,000 nodes builds only the nodes
its walks reach; the memory a run will need is estimated first, and a run that
will not fit is refused before anything is written. Only time is virtual:
  - a local update takes a duration drawn from compute_time_dist: fixed,
    exponential with mean compute_time_mean (the paper's wall-clock model), or
    measured (the wall time the real update took; not deterministic),
  - with --engine-timing authors (the default) the authors' engine's own delays come on top:
    their sleep-polls and hand-offs between processes (simulation/engine_timing.py),
  - a model transfer takes model_bytes / bandwidth + latency, model_bytes being the trained
    model's (itemsize x parameters) or --virtual-model-bytes (the bytes of the paper's
    ResNet-20, say, counted and timed while a small model is trained); with --links shared
    transfers that overlap share their nodes' links instead (SharedLinks),
  - every node has one compute queue.
Time-based settings (train_time, LR schedule, eval_interval) use virtual time;
evaluations at node 0 take none.
One seed gives byte-identical event logs (fixed and exponential durations).

    python simulate.py --nodes 50 --graph cycle --walks 5 --task synthetic --max-iterations 2000 --seed 7 --out runs/sim
    python simulate.py --nodes 100 --algorithm gossip --graph complete --max-iterations 3000 --out runs/sim_gossip
Every flag of main.py works here; --nodes V is required.
"""
import heapq
import math
import os
import resource
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core import algorithms
from simulation import batched
from simulation import engine_timing
from simulation.engine_timing import EngineTiming
from core import config
from core import build_run
import models
import protocols
import tasks
from core import run_folder
from core import run_records
from core.events import (COUNTERS, PROGRESS_HEADER, Diverged, EventLog, OpenFiles, amend_summary, progress_line,
                         record_eval, stopped_record, write_final_summary)

# compute the local updates in flight together (batched.py) where the task allows; tests flip it
BATCHED = True


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


class LazyNodes:
    """Per-node state, built when first asked for: node v's entry is build(v), the same whenever
    that happens (every random choice in it comes from the seed and v), so a walk over V = 100,000
    nodes builds only the nodes it reaches. A node not built yet has had no event: it holds no walk,
    no model of the network's, nothing to log. Iterating builds every node (gossip's drivers do)."""
    def __init__(self, count, build):
        self.count, self.build, self.built = count, build, {}

    def __len__(self):
        return self.count

    def __getitem__(self, v):
        if v not in self.built:
            self.built[v] = self.build(v)
        return self.built[v]

    def __iter__(self):
        return (self[v] for v in range(self.count))

    def built_items(self):
        """(node, entry) for the nodes built so far, in node order."""
        return sorted(self.built.items())


@dataclass
class Flow:
    """One transfer under way on SharedLinks; `version` marks its latest finish event."""
    src: int
    dst: int
    bytes_left: float
    action: Callable
    args: tuple
    rate: float = 0.0
    version: int = 0


class SharedLinks:
    """--links shared: every node has a link of `bandwidth` bytes/s each way, shared by the transfers
    using it as TCP shares a host's NIC: a transfer's rate is bandwidth over the larger of its
    sender's outgoing and its receiver's incoming transfer counts, set again whenever a transfer
    starts or ends; it arrives `latency` after its last byte."""
    def __init__(self, clock, bandwidth, latency):
        self.clock, self.bandwidth, self.latency = clock, bandwidth, latency
        self.flows = {}  # id: Flow
        self.outgoing, self.incoming = Counter(), Counter()
        self.started, self.updated = 0, 0.0

    def start(self, src, dst, nbytes, action, args):
        self.drain()
        self.flows[self.started] = Flow(src, dst, float(nbytes), action, args)
        self.started += 1
        self.outgoing[src] += 1
        self.incoming[dst] += 1
        self.reschedule()

    def drain(self):
        """Every transfer's bytes left, now."""
        elapsed, self.updated = self.clock.now - self.updated, self.clock.now
        for flow in self.flows.values():
            flow.bytes_left -= flow.rate * elapsed

    def reschedule(self):
        for flow_id, flow in self.flows.items():
            rate = self.bandwidth / max(self.outgoing[flow.src], self.incoming[flow.dst])
            if rate != flow.rate:  # a finish event of an earlier rate is stale: its version is old
                flow.rate, flow.version = rate, flow.version + 1
                self.clock.after(max(flow.bytes_left, 0.0) / rate, self.finish, flow_id, flow.version)

    def finish(self, flow_id, version):
        flow = self.flows.get(flow_id)
        if flow is None or flow.version != version:
            return
        self.drain()
        del self.flows[flow_id]
        self.outgoing[flow.src] -= 1
        self.incoming[flow.dst] -= 1
        self.reschedule()
        self.clock.after(self.latency, flow.action, *flow.args)


class Network:
    """What every driver shares: the nodes (their models, optimizers and batches), their protocols and
    logs, the clock, and what updates and transfers cost. All are built a node at a time, when first
    needed (LazyNodes): build_node(v) makes node v (algorithms.make_node), node 0 (x0) at once. Nothing
    is written until a node logs its first event (into cfg["out"])."""
    def __init__(self, cfg, run, clock, build_node):
        self.cfg, self.run, self.clock, self.build_node = cfg, run, clock, build_node
        self.nodes = LazyNodes(cfg["nodes"], self.make_node)
        first = self.nodes.built[0] = build_node(0)  # it seeds torch's global generator, as it always did
        x0 = models.flatten_params(first.model)
        files = OpenFiles()
        self.dtype, self.model_bytes = protocols.transfer_format(cfg, x0.numel())
        # the paper's model on the wire (its bytes counted and timed) while a smaller one is trained
        self.model_bytes = cfg["virtual_model_bytes"] or self.model_bytes
        self.logs = LazyNodes(cfg["nodes"], lambda v: EventLog(os.path.join(cfg["out"], f"events-rank{v}.jsonl"),
                                                               lambda: clock.now, files=files))
        self.protocols = LazyNodes(cfg["nodes"], lambda v: protocols.make_protocol(cfg, v, run, x0, self.model_bytes,
                                                                                   self.logs[v]))
        self.transfer_time = self.model_bytes / cfg["bandwidth"] + cfg["latency"]
        self.links = SharedLinks(clock, cfg["bandwidth"], cfg["latency"]) if cfg["links"] == "shared" else None
        self.timing = EngineTiming(cfg)
        # one stream per node: durations never depend on the order in which the simulator visits nodes
        self.duration_rngs = LazyNodes(cfg["nodes"], lambda v: np.random.default_rng([cfg["seed"], 2, v]))
        # a measured duration is the wall time of the update itself, so it cannot wait for a batch;
        # every node is built alike, so node 0 says whether all can be batched
        self.batch = (batched.BatchedUpdates([first], cfg["tau"]) if BATCHED and cfg["compute_time_dist"] != "measured"
                      and tasks.get(cfg["task"]).batchable and batched.can_batch(first) else None)

    def send(self, src, dst, leave, action, *args):
        """A model leaves src `leave` seconds from now; action(*args) runs when it has arrived at dst."""
        if self.links is None:
            self.clock.after(leave + self.transfer_time, action, *args)
        else:
            self.clock.after(leave, self.links.start, src, dst, self.model_bytes, action, args)

    def make_node(self, v):
        # make_node seeds torch's global generator (so every node starts from x0); a node built
        # mid-run must leave the generator as it found it, as building them all at the start did
        with torch.random.fork_rng(devices=[]):
            node = self.build_node(v)
        if self.batch is not None:
            self.batch.add(node)
        return node

    def carry(self, params):
        """A model as a message carries it: a copy in the transfer dtype."""
        return params.to(self.dtype, copy=True)

    def at_failure_times(self, action):
        """Run action() at each failure time (before any other event of that time)."""
        for when in self.cfg["failure_times"]:
            self.clock.at(when, action)

    def pass_failures(self):
        """Every node logs the failures whose time has come; returns the nodes whose blocked compute that frees."""
        return [v for v, protocol in enumerate(self.protocols) if protocol.pass_failures(self.clock.now).frees_compute]

    def counters(self):
        """Every node's counters, in node order (a node never built counted nothing)."""
        nothing = dict.fromkeys(COUNTERS, 0)
        return [self.logs.built[v].counters if v in self.logs.built else nothing for v in range(self.cfg["nodes"])]

    def update(self, v, params, lr):
        """Node v's local update on `params` (no SGD with --emulate-params: pure timing studies);
        returns (outcome, virtual duration). The outcome is the loss, computed now, or with batching
        a batched.PendingUpdate: `loss(outcome)` computes it (and `params`) when the clock needs it."""
        cfg, started = self.cfg, time.perf_counter()
        node = self.nodes[v]  # built (and given its batch rows) at its first update
        if self.batch is not None:
            outcome = self.batch.submit(v, params, lr)
        else:
            outcome = algorithms.local_update(node, params, cfg["tau"], lr)
        if cfg["compute_time_dist"] == "fixed":
            return outcome, cfg["compute_time_mean"]
        if cfg["compute_time_dist"] == "exponential":
            return outcome, float(self.duration_rngs[v].exponential(cfg["compute_time_mean"]))
        return outcome, time.perf_counter() - started  # measured

    @staticmethod
    def loss(outcome):
        """The loss of a finished update (update's outcome); its params hold the result from then on."""
        return outcome.loss() if isinstance(outcome, batched.PendingUpdate) else outcome

    def settle(self):
        """Compute the updates in flight: a node's BatchNorm statistics are read as the sequential path leaves them."""
        if self.batch is not None:
            self.batch.flush()


# -----------------------------------------------------------------------------
# walk protocols (Multi-Walk): what distributed_training.run_walks does with threads and messages

class WalkDriver:
    """Every node serves one walk at a time; a sent walk arrives a transfer later (authors' timing:
    an idle node finds an arriving walk at its next poll, and a walk leaves after a poll and a hand-off)."""
    def __init__(self, net):
        self.net = net
        net.at_failure_times(net.pass_failures)  # every node logs a failure: all are built then
        self.busy = [False] * len(net.nodes)
        for v in type(net.protocols[0]).start_nodes(net.cfg):
            for walk in net.protocols[v].walks_here():
                walk.params = net.carry(walk.params)
            net.clock.at(0.0, self.serve, v)

    def arrive(self, v, walk):
        self.net.protocols[v].arrive(walk)
        if not self.busy[v]:
            self.serve(v, pickup=self.net.timing.poll(v))

    def serve(self, v, pickup=0.0):
        net = self.net
        while True:
            step = net.protocols[v].next_visit(net.clock.now)
            if step is None:
                return
            if isinstance(step, protocols.Retire):
                net.protocols[0].walk_retired()
            elif isinstance(step, protocols.Send):
                net.send(v, step.dest, 0.0, self.arrive, step.dest, step.walk)
            else:  # Compute; v serves one walk at a time, so nothing else touches its state
                outcome, duration = net.update(v, step.walk.params, step.lr)
                self.busy[v] = True
                net.clock.after(pickup + duration + net.timing.visit_overhead(), self.finish_visit, v, step.walk, outcome,
                                duration)
                return

    def finish_visit(self, v, walk, outcome, duration):
        net = self.net
        self.busy[v] = False
        step = net.protocols[v].after_update(walk, net.loss(outcome), duration, net.clock.now)
        if step is not None:  # Send
            leave = net.timing.poll(v) + net.timing.walk_handoff()
            net.send(v, step.dest, leave, self.arrive, step.dest, step.walk)
        self.serve(v)


# -----------------------------------------------------------------------------
# gossip protocols: what distributed_training.run_gossip and gossip_communication do

class GossipDriver:
    """Every node computes back to back (unless its delta waits for an exchange: the authors'
    coupling; the protocol says which events free it); an active node runs one exchange at a
    time (request, then reply, each a transfer); a passive node serves one exchange at a time.
    Authors' timing: the polls and hand-offs of engine_timing.py around each step."""
    def __init__(self, net):
        self.net = net
        net.at_failure_times(self.pass_failures)
        num_nodes = len(net.nodes)
        self.exchanging = [False] * num_nodes     # active node: an exchange in flight, or its part over
        self.serving = [False] * num_nodes        # passive node: answering an exchange
        self.retry_at = [None] * num_nodes        # active node: the pacing time a retry is scheduled for
        self.requests = [deque() for _ in range(num_nodes)]  # passive node: exchanges waiting to be served
        for v in range(num_nodes):
            net.clock.at(0.0, self.start_update, v)
        for v, protocol in enumerate(net.protocols):
            if protocol.active:
                net.clock.at(0.0, self.next_exchange, v)

    def start_update(self, v):
        net = self.net
        start = net.protocols[v].begin_update(net.clock.now)
        if isinstance(start, protocols.Blocked):  # an event the protocol reports as freeing it starts it again
            return
        if start is None:
            self.next_exchange(v)  # an active node's part may be over now
            return
        before = start.model
        after = before.clone()
        outcome, duration = net.update(v, after, start.lr)
        net.clock.after(duration + net.timing.gossip_update_overhead(), self.finish_update, v, before, after, outcome,
                        duration)

    def finish_update(self, v, before, after, outcome, duration):
        self.net.protocols[v].after_update(before, after, self.net.loss(outcome), duration, self.net.clock.now)
        self.next_exchange(v)  # a waiting exchanger may go on
        self.start_update(v)

    def resume(self, v):
        """A blocked compute goes on: at once (ideal timing), or when its poll of the delta slot sees
        the event that freed it (authors' timing)."""
        self.net.timing.later(self.net.clock, self.net.timing.poll(v), self.start_update, v)

    def pass_failures(self):
        for v in self.net.pass_failures():
            self.resume(v)

    def next_exchange(self, v):
        net, protocol = self.net, self.net.protocols[v]
        if not protocol.active or self.exchanging[v]:
            return
        step = protocol.next_exchange(net.clock.now)
        if isinstance(step, protocols.Over):
            self.exchanging[v] = True  # for good
            for j in step.neighbours:
                net.clock.after(net.cfg["latency"], self.neighbour_over, j, v)
        elif isinstance(step, protocols.Wait):
            if step.until is not None and self.retry_at[v] != step.until:
                self.retry_at[v] = step.until
                net.clock.at(step.until, self.next_exchange, v)
        else:  # Exchange
            self.exchanging[v] = True
            net.send(v, step.partner, net.timing.exchange_handoff(), self.receive_request, step.partner, v,
                     net.carry(protocol.model_to_send()))
            if step.frees_compute:
                self.resume(v)

    def neighbour_over(self, p, v):
        if self.net.protocols[p].neighbour_over(v, self.net.clock.now):
            self.resume(p)

    def receive_request(self, p, v, model):
        self.requests[p].append((v, model))
        if not self.serving[p]:
            self.serving[p] = True  # from now on: its receive process found the request
            self.net.timing.later(self.net.clock, self.net.timing.poll(p), self.serve_exchange, p)

    def serve_exchange(self, p):
        v, received = self.requests[p].popleft()
        self.serving[p] = True
        reply = self.net.carry(self.net.protocols[p].model_to_send())
        timing = self.net.timing
        self.net.send(p, v, timing.poll(p) + timing.exchange_handoff(), self.finish_exchange, p, v, received, reply)

    def finish_exchange(self, p, v, sent_by_v, sent_by_p):
        frees_compute = self.net.protocols[p].passive_average(v, sent_by_p, sent_by_v, self.net.clock.now)
        self.net.protocols[v].active_average(p, sent_by_v, sent_by_p)
        timing, clock = self.net.timing, self.net.clock
        timing.later(clock, timing.poll(p), self.passive_free, p, frees_compute)  # its receive process polls for the send's end
        timing.later(clock, timing.poll(v) + timing.exchange_handoff(), self.active_free, v)  # its send process polls for the reply

    def passive_free(self, p, frees_compute):
        self.serving[p] = False
        if frees_compute:
            self.resume(p)
        if self.requests[p]:
            self.serve_exchange(p)

    def active_free(self, v):
        self.exchanging[v] = False
        self.next_exchange(v)


DRIVERS = dict(walks=WalkDriver, gossip=GossipDriver)


# -----------------------------------------------------------------------------
# memory: what a run will need, before anything is built or written

# Python's share of one built node beside its tensors: the node's module, optimizer, batch stream,
# protocol and log objects (the DigitsMLP under SGD measured about 25 kB at V = 10^3 and 10^4)
NODE_OBJECT_BYTES = 32_000


def nodes_built(cfg):
    """How many nodes a run builds (LazyNodes): all of them in gossip (every node computes), at most one
    per local update plus the walks' start nodes in MW, the updates bounded by --max-iterations or,
    with fixed or exponential durations, by train_time / compute_time_mean per walk (twice that for
    exponential ones: a margin for short draws); with measured durations, all of them."""
    num_nodes, walks = cfg["nodes"], cfg["walks"]
    if protocols.PROTOCOLS[cfg["algorithm"]].driver == "gossip" or cfg["compute_time_dist"] == "measured":
        return num_nodes
    updates = cfg["max_iterations"] or walks * math.ceil(
        cfg["train_time"] / cfg["compute_time_mean"] * (2 if cfg["compute_time_dist"] == "exponential" else 1))
    return min(num_nodes, walks + updates)


def memory_estimate(cfg, first):
    """(bytes, what they are) the run will need at its peak: what this process holds now (the
    interpreter, torch, the data, the graph, node 0), plus per built node its model's tensors (twice
    with batching: a bank doubles as it grows), its momentum and NODE_OBJECT_BYTES, plus the models
    the protocols hold (gossip: a node's live model, pending and waiting deltas, an exchange's two
    copies; MW: the walks in flight, the aggregator's model and a snapshot per walk)."""
    model = sum(t.numel() * t.element_size() for t in [*first.model.parameters(), *first.model.buffers()])
    momentum = sum(p.numel() * p.element_size() for group in first.optimizer.param_groups
                   if group.get("momentum") for p in group["params"])
    batching = BATCHED and tasks.get(cfg["task"]).batchable and batched.can_batch(first)
    per_node = model * (2 if batching else 1) + momentum + NODE_OBJECT_BYTES
    built = nodes_built(cfg)
    if protocols.PROTOCOLS[cfg["algorithm"]].driver == "gossip":
        held = cfg["nodes"] * 5 * model
    else:
        held = (2 * cfg["walks"] + 1) * model
    now = resident_bytes()
    total = now + built * per_node + held
    return total, (f"{now / 1e9:.2f} GB now (data, graph, interpreter) + {built:,} nodes built x "
                   f"{per_node / 1e6:.2f} MB + {held / 1e9:.2f} GB of models held")


def resident_bytes():
    """This process's resident memory now (VmRSS)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def peak_resident_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB


def machine_memory():
    """(bytes this process may use, where that figure comes from): MemAvailable (/proc/meminfo) plus
    what the process holds already, or less where a cgroup (v2 memory.max, v1 limit_in_bytes) limits it."""
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    usable, source = available + resident_bytes(), "MemAvailable"
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_path) as f, open(usage_path) as g:
                limit, usage = f.read().strip(), int(g.read())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) - usage + resident_bytes() < usable:
            usable, source = int(limit) - usage + resident_bytes(), f"the cgroup limit ({limit_path})"
        break
    return usable, source


# -----------------------------------------------------------------------------

def simulate(cfg, run, verbose=True):
    """One simulated run of cfg on run (build_run.build_run(cfg, V)); writes the outputs to cfg["out"] and returns the summary."""
    # gossip_pacing authors: the authors' polls pace the exchanges here (engine_timing.py); recorded in config.json
    cfg = dict(cfg, gossip_interval=engine_timing.simulated_gossip_interval(cfg))
    device = torch.device("cuda" if cfg["device"] == "cuda" or (cfg["device"] == "auto" and torch.cuda.is_available())
                          else "cpu")
    clock = VirtualClock()
    net = Network(cfg, run, clock, lambda v: algorithms.make_node(cfg, run, v, device))
    estimate, parts = memory_estimate(cfg, net.nodes[0])
    usable, source = machine_memory()
    if estimate > usable:
        raise config.ConfigError(f"this run needs an estimated {estimate / 1e9:.1f} GB ({parts}) but the machine "
                                 f"has {usable / 1e9:.1f} GB ({source}); use fewer nodes, a smaller model, or "
                                 f"walks with an iteration budget (--max-iterations)")
    # the run folder's gate: a live run's folder is refused, a finished one's unless --overwrite true
    out_lock = run_folder.claim(cfg["out"], cfg["overwrite"])
    run_records.write_config(cfg, "simulated")
    if verbose:
        print(build_run.plan_text(cfg, run) + f"\nsimulated: {cfg['compute_time_dist']} compute times, mean "
              f"{cfg['compute_time_mean']:g}s; bandwidth {cfg['bandwidth']:g} B/s, latency {cfg['latency']:g}s"
              + (f"; transfers of {cfg['virtual_model_bytes']} B (--virtual-model-bytes)" if cfg["virtual_model_bytes"] else "")
              + f"\nmemory: an estimated {estimate / 1e9:.2f} GB ({parts}) of {usable / 1e9:.1f} GB ({source})",
              flush=True)
    nodes, logs = net.nodes, net.logs
    DRIVERS[net.protocols[0].driver](net)  # schedules the first events; the clock runs them
    measures = {}  # node -> its evaluation function (the node's own BatchNorm statistics)
    guard = dict(diverged=None)  # summary.json's `diverged`, once the guard has seen it

    def evaluate(v, params, model="node0"):
        """The EVAL_METRICS of `params` at node v, logged at node 0 like the engine's Evaluator."""
        net.settle()
        if v not in measures:
            measures[v] = algorithms.make_evaluate(cfg, run, nodes[v])
        models.load_flat_params(nodes[v].model, params)
        metrics = measures[v](nodes[v].model)
        iterations = sum(log.counters["iterations"] for log in logs.built.values())
        nbytes = sum(log.counters["bytes_sent"] for log in logs.built.values())
        record_eval(logs[0], metrics, iterations, nbytes, model, v)
        if verbose:
            print(progress_line(clock.now, iterations, nbytes, metrics, model, v), flush=True)
        guard["diverged"] = algorithms.guard_divergence(cfg, run, metrics, clock.now, guard["diverged"])
        return metrics

    def network_average():
        """The network average over the nodes whose models are the network's now (gossip: the live ones), as
        the engine's (theirs is at the end only), and the node whose BatchNorm statistics evaluate it."""
        holders = [v for v, protocol in net.protocols.built_items() if protocol.holds_final_model(clock.now)]
        params = torch.stack([net.protocols[v].final_model() for v in holders]).mean(dim=0)
        return net.protocols[0].final_holder(holders), params

    def evaluate_now():
        for v, protocol in net.protocols.built_items():
            params = protocol.evaluated_model(clock.now)
            if params is not None:
                evaluate(v, params)
                break
        if cfg["eval_network_average"] and net.protocols[0].averages_network:
            evaluate(*network_average(), model="network_average")

    started = time.perf_counter()
    if verbose:
        print(PROGRESS_HEADER, flush=True)
    clock.run(evaluate_now, cfg["eval_interval"])
    # the end of the run, as the protocol says: the final model's holder, the network average, the saved models
    holders = [v for v, protocol in net.protocols.built_items() if protocol.holds_final_model(clock.now)]
    holder = net.protocols[0].final_holder(holders)
    average = evaluate(*network_average(), model="network_average") if net.protocols[0].averages_network else None
    final_model = net.protocols[holder].final_model()
    final = evaluate(holder, final_model)
    if cfg["save_models"]:
        for _, protocol in net.protocols.built_items():
            for name, params in protocol.saved_models().items():
                torch.save(params, os.path.join(cfg["out"], name))
        torch.save(final_model.cpu(), os.path.join(cfg["out"], "model.pt"))
    for log in logs.built.values():
        log.close()
    out_lock.close()  # written: the folder is free for the next run
    if verbose:
        print(f"simulated {clock.now:.2f}s of virtual time in {time.perf_counter() - started:.1f}s", flush=True)
    return write_final_summary(cfg["out"], cfg, net.counters(), "simulated", net.model_bytes, clock.now,
                               final, average, active_nodes=run["gossip"][1] if run["gossip"] else None,
                               evaluated_node=holder, memory_estimate_bytes=estimate,
                               peak_rss_bytes=peak_resident_bytes(), diverged=guard["diverged"])


def simulate_main(argv):
    try:
        cfg = config.parse_config(argv, prog="simulate.py")
        if not cfg["nodes"]:
            raise config.ConfigError("simulate.py needs --nodes V, the number of virtual nodes")
        if cfg["emulate_compute"]:
            raise config.ConfigError("simulate.py: --emulate-compute is the sleep of a real run; the simulator's "
                                   "virtual compute time is --compute-time-dist / --compute-time-mean")
        if cfg["checkpoint_every"] or cfg["resume"]:
            raise config.ConfigError("simulate.py takes no checkpoints (--checkpoint-every, --resume): "
                                   "a simulated run is reproduced exactly from its seed instead")
        run = build_run.build_run(cfg, cfg["nodes"])
    except ValueError as e:  # ConfigError, GraphError, DataError: one-line messages
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr, flush=True)
        return 2
    # the nodes compute one after another: one thread each is fastest for the small models simulated
    # on a CPU, and torch's default pool (one thread per core) made 200 digits updates 26x slower
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    try:
        simulate(cfg, run)
    except config.ConfigError as e:  # the run folder's gate refused --out
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except Diverged as e:  # --stop-on-divergence true
        print(f"error: {e}", file=sys.stderr, flush=True)
        amend_summary(cfg["out"], complete=False, stopped=stopped_record("diverged", detail=str(e)))
        return 1
    print(f"results in {cfg['out']}/ (summary.json, events-rank*.jsonl, config.json)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(simulate_main(sys.argv[1:]))
