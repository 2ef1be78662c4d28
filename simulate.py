"""
A deterministic discrete-event simulator of Multi-Walk and Asynchronous Gossip:
V virtual nodes in one process, for graphs and delay models a real cluster (or a
2-core laptop) cannot run as V MPI ranks.

It drives the SAME protocols as the MPI engine (protocols.py: every rule of an
algorithm, from a walk's arrival to the end of the run) and writes the same
outputs (config.json, events-rank{v}.jsonl, summary.json), so plots and reports
read simulated and real runs alike. Only time is virtual:
  - a local update takes a duration drawn from compute_time_dist: fixed,
    exponential with mean compute_time_mean (the paper's wall-clock model), or
    measured (the wall time the real update took; not deterministic),
  - with --engine-timing authors (the default) the authors' engine's own delays come on top:
    their sleep-polls and hand-offs between processes (simulation/engine_timing.py),
  - a model transfer takes model_bytes / bandwidth + latency, model_bytes being the trained
    model's (itemsize x parameters) or --virtual-model-bytes (the bytes of the paper's
    ResNet-20, say, counted and timed while a small model is trained),
  - every node has one compute queue.
Time-based settings (train_time, LR schedule, eval_interval) use virtual time;
evaluations at node 0 take none.
One seed gives byte-identical event logs (fixed and exponential durations).

    python simulate.py --nodes 50 --graph cycle --walks 5 --task synthetic --max-iterations 2000 --seed 7 --out runs/sim
    python simulate.py --nodes 100 --algorithm gossip --graph complete --max-iterations 3000 --out runs/sim_gossip
Every flag of main.py works here; --nodes V is required.
"""
import heapq
import os
import sys
import time
from collections import deque

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
from core.events import PROGRESS_HEADER, EventLog, progress_line, record_eval, write_final_summary

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


class Network:
    """What every driver shares: the nodes, their protocols and logs, the clock, and what
    updates and transfers cost."""
    def __init__(self, cfg, run, nodes, logs, clock):
        self.cfg, self.run, self.nodes, self.logs, self.clock = cfg, run, nodes, logs, clock
        x0 = models.flatten_params(nodes[0].model)
        self.dtype, self.model_bytes = protocols.transfer_format(cfg, x0.numel())
        # the paper's model on the wire (its bytes counted and timed) while a smaller one is trained
        self.model_bytes = cfg["virtual_model_bytes"] or self.model_bytes
        self.protocols = [protocols.make_protocol(cfg, v, run, x0, self.model_bytes, logs[v]) for v in range(len(nodes))]
        self.transfer_time = self.model_bytes / cfg["bandwidth"] + cfg["latency"]
        self.timing = EngineTiming(cfg, len(nodes))
        # one stream per node: durations never depend on the order in which the simulator visits nodes
        self.duration_rngs = [np.random.default_rng([cfg["seed"], 2, v]) for v in range(len(nodes))]
        # a measured duration is the wall time of the update itself, so it cannot wait for a batch
        self.batch = (batched.BatchedUpdates(nodes, cfg["tau"]) if BATCHED and cfg["compute_time_dist"] != "measured"
                      and tasks.get(cfg["task"]).batchable and all(map(batched.can_batch, nodes)) else None)

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

    def update(self, v, params, lr):
        """Node v's local update on `params` (no SGD with --emulate-params: pure timing studies);
        returns (outcome, virtual duration). The outcome is the loss, computed now, or with batching
        a batched.PendingUpdate: `loss(outcome)` computes it (and `params`) when the clock needs it."""
        cfg, started = self.cfg, time.perf_counter()
        if self.batch is not None:
            outcome = self.batch.submit(v, params, lr)
        else:
            outcome = algorithms.local_update(self.nodes[v], params, cfg["tau"], lr)
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
    """Every node serves one walk at a time; a sent walk arrives transfer_time later (authors' timing:
    an idle node finds an arriving walk at its next poll, and a walk leaves after a poll and a hand-off)."""
    def __init__(self, net):
        self.net = net
        net.at_failure_times(net.pass_failures)
        self.busy = [False] * len(net.nodes)
        for v, protocol in enumerate(net.protocols):
            for walk in protocol.walks_here():
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
                net.clock.after(net.transfer_time, self.arrive, step.dest, step.walk)
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
            net.clock.after(leave + net.transfer_time, self.arrive, step.dest, step.walk)
        self.serve(v)


# -----------------------------------------------------------------------------
# gossip protocols: what distributed_training.run_gossip and gossip_communication do

class GossipDriver:
    """Every node computes back to back (unless its delta waits for an exchange: the authors'
    coupling; the protocol says which events free it); an active node runs one exchange at a
    time (request, then reply, each taking transfer_time); a passive node serves one exchange at a time.
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
            net.clock.after(net.timing.exchange_handoff() + net.transfer_time, self.receive_request, step.partner, v,
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
        self.net.clock.after(timing.poll(p) + timing.exchange_handoff() + self.net.transfer_time, self.finish_exchange,
                             p, v, received, reply)

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

def simulate(cfg, run, verbose=True):
    """One simulated run of cfg on run (build_run.build_run(cfg, V)); writes the outputs to cfg["out"] and returns the summary."""
    # gossip_pacing authors: the authors' polls pace the exchanges here (engine_timing.py); recorded in config.json
    cfg = dict(cfg, gossip_interval=engine_timing.simulated_gossip_interval(cfg))
    num_nodes = cfg["nodes"]
    device = torch.device("cuda" if cfg["device"] == "cuda" or (cfg["device"] == "auto" and torch.cuda.is_available())
                          else "cpu")
    # the run folder's gate: a live run's folder is refused, a finished one's unless --overwrite true
    out_lock = run_folder.claim(cfg["out"], cfg["overwrite"])
    run_records.write_config(cfg, "simulated")
    if verbose:
        print(build_run.plan_text(cfg, run) + f"\nsimulated: {cfg['compute_time_dist']} compute times, mean "
              f"{cfg['compute_time_mean']:g}s; bandwidth {cfg['bandwidth']:g} B/s, latency {cfg['latency']:g}s"
              + (f"; transfers of {cfg['virtual_model_bytes']} B (--virtual-model-bytes)" if cfg["virtual_model_bytes"] else ""),
              flush=True)
    nodes = [algorithms.make_node(cfg, run, v, device) for v in range(num_nodes)]
    clock = VirtualClock()
    logs = [EventLog(os.path.join(cfg["out"], f"events-rank{v}.jsonl"), lambda: clock.now) for v in range(num_nodes)]
    net = Network(cfg, run, nodes, logs, clock)
    DRIVERS[net.protocols[0].driver](net)  # schedules the first events; the clock runs them
    measures = {}  # node -> its evaluation function (the node's own BatchNorm statistics)

    def evaluate(v, params, model="node0"):
        """The EVAL_METRICS of `params` at node v, logged at node 0 like the engine's Evaluator."""
        net.settle()
        if v not in measures:
            measures[v] = algorithms.make_evaluate(cfg, run, nodes[v])
        models.load_flat_params(nodes[v].model, params)
        metrics = measures[v](nodes[v].model)
        iterations = sum(log.counters["iterations"] for log in logs)
        nbytes = sum(log.counters["bytes_sent"] for log in logs)
        record_eval(logs[0], metrics, iterations, nbytes, model, v)
        if verbose:
            print(progress_line(clock.now, iterations, nbytes, metrics, model, v), flush=True)
        return metrics

    def network_average():
        """The network average over the nodes whose models are the network's now (gossip: the live ones), as
        the engine's (theirs is at the end only), and the node whose BatchNorm statistics evaluate it."""
        holders = [v for v, protocol in enumerate(net.protocols) if protocol.holds_final_model(clock.now)]
        params = torch.stack([net.protocols[v].final_model() for v in holders]).mean(dim=0)
        return net.protocols[0].final_holder(holders), params

    def evaluate_now():
        for v, protocol in enumerate(net.protocols):
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
    holders = [v for v, protocol in enumerate(net.protocols) if protocol.holds_final_model(clock.now)]
    holder = net.protocols[0].final_holder(holders)
    average = evaluate(*network_average(), model="network_average") if net.protocols[0].averages_network else None
    final_model = net.protocols[holder].final_model()
    final = evaluate(holder, final_model)
    if cfg["save_models"]:
        for protocol in net.protocols:
            for name, params in protocol.saved_models().items():
                torch.save(params, os.path.join(cfg["out"], name))
        torch.save(final_model.cpu(), os.path.join(cfg["out"], "model.pt"))
    for log in logs:
        log.close()
    out_lock.close()  # written: the folder is free for the next run
    if verbose:
        print(f"simulated {clock.now:.2f}s of virtual time in {time.perf_counter() - started:.1f}s", flush=True)
    return write_final_summary(cfg["out"], cfg, [log.counters for log in logs], "simulated", net.model_bytes, clock.now,
                               final, average, active_nodes=run["gossip"][1] if run["gossip"] else None,
                               evaluated_node=holder)


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
    except protocols.Diverged as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"results in {cfg['out']}/ (summary.json, events-rank*.jsonl, config.json)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(simulate_main(sys.argv[1:]))
