"""
Each algorithm's protocol, written once: what one node does when a walk arrives,
when a local update finishes, when an exchange request or reply comes, when its
clock passes a failure time or the budget; what it logs and counts; what state a
checkpoint holds.

A protocol performs no I/O and reads no clock of its own ("sans-I/O", as h11):
every call gets the time `now` from its driver, and answers with what the driver
must do next (compute this, send that, wait until then). Two drivers run them:
  - distributed_training.py: one node per MPI rank, real threads and messages;
  - simulate.py: every node in one process, on a virtual clock.
The learning rules themselves (merge, average, apply a delta, hop) are the plain
tensor functions of algorithms.py; a protocol only decides when each one runs.

Two families of protocol, each with its driver loop in both transports; a protocol
class names its family's driver (`driver`):
  - walk protocols (driver "walks"): models travel between nodes (MW, and any
    variant: a subclass that changes `aggregate`, say);
  - gossip protocols (driver "gossip"): every node computes, active nodes exchange.
The actions a protocol answers with are the small typed records below; drivers
dispatch on their type. The end of a run is the protocol's too: which node holds
the final model, whether the network's average is reported, which models are saved.
PROTOCOLS is the one registry of algorithms (`--algorithm` takes its names): a new
algorithm is one class and one `register` line (docs/adding_an_algorithm.md).
"""
import heapq
import math
from typing import NamedTuple, Optional

import numpy as np
import torch

from core import algorithms
from core.config import ConfigError
from core.events import Diverged
import graphs


def transfer_format(cfg, num_params):
    """The dtype models travel in (config TRANSFER_DTYPES names torch dtypes), and the bytes one
    model transfer counts: itemsize x parameters."""
    dtype = getattr(torch, cfg["transfer_dtype"])
    return dtype, dtype.itemsize * num_params


def check_loss(loss, node_id, now, cfg):
    """The divergence guard on a local update's loss: a non-finite one ends the run with
    --stop-on-divergence true. Without it training goes on, as the authors' does, and the guard at
    the next evaluation (algorithms.guard_divergence) warns and records it."""
    if cfg["stop_on_divergence"] and loss is not None and not math.isfinite(loss):
        raise Diverged(f"the run diverged at t = {now:.1f}s with --lr {cfg['lr']:g}: "
                       f"local update at node {node_id} gave loss {loss}")


class FailureSchedule:
    """The failures every node knows in advance (SEMANTICS.md §6): the i-th time fails node i.
    `passed(now)` returns the failures whose time has come since the last call, so each node
    logs each failure once (its protocol's pass_failures)."""
    def __init__(self, failure_times):
        self.times, self.logged = list(failure_times), 0

    def passed(self, now):
        happened = []
        while self.logged < len(self.times) and now >= self.times[self.logged]:
            happened.append(self.logged)
            self.logged += 1
        return happened


class Failures(NamedTuple):
    """pass_failures: the nodes whose failure time has come, and whether that frees this node's
    blocked compute (the driver then starts it again)."""
    nodes: list
    frees_compute: bool


class WalkQueue:
    """MW's queueing rule (SEMANTICS.md §1): the walks waiting at a node are served lowest walk
    id first. (The arrival count keeps heap entries from ever comparing the items.)"""
    def __init__(self):
        self.heap, self.arrivals = [], 0

    def push(self, walk_id, item):
        heapq.heappush(self.heap, (walk_id, self.arrivals, item))
        self.arrivals += 1

    def pop(self):
        return heapq.heappop(self.heap)[2]

    def __len__(self):
        return len(self.heap)

    def items(self, in_order=False):
        """The waiting items: in the heap's order, or (in_order) in the order they will be served."""
        return [item for _, _, item in (sorted(self.heap, key=lambda e: e[:2]) if in_order else self.heap)]


# -----------------------------------------------------------------------------
# walk protocols: Multi-Walk

class Walk:
    """A walk as its protocol sees it: its id, visits done (local updates: the budget), hops
    made (the route position, so routes stay a pure function of (seed, walk, hop)), and the
    model it carries. `carrier` is the transport's own handle (an MPI buffer), opaque here."""
    __slots__ = ("walk_id", "visits", "hops", "params", "carrier")

    def __init__(self, walk_id, visits, hops, params, carrier=None):
        self.walk_id, self.visits, self.hops, self.params, self.carrier = walk_id, visits, hops, params, carrier


# what a walk protocol asks its driver to do with a walk
class Compute(NamedTuple):
    """Run tau local steps on walk.params at learning rate lr, then call after_update. `leaves_to`:
    the node after_update will send the walk to (None: it stays here, a self-loop), known before the
    update because a route is a pure function of (seed, walk, hop); a driver may tell that node now."""
    walk: Walk
    lr: float
    leaves_to: Optional[int] = None


class Send(NamedTuple):
    """Send the walk to node dest."""
    walk: Walk
    dest: int


class Retire(NamedTuple):
    """The walk's time or budget share is up: tell node 0 (walk_retired)."""
    walk: Walk


class MultiWalkNode:
    """MW at one node (SEMANTICS.md §1, §6). The driver hands it arriving walks (`arrive`), asks
    what to do next when the node is free (`next_visit`), runs the local update it asks for,
    and reports it (`after_update`). Node 0 (and, after failures, the node holding the role)
    is the aggregator. Node 0 also counts retirements (`walk_retired`): when all R walks have
    retired, no walk is in flight and the run is over. At the end, the last node that held
    the aggregator role holds the final model; there is no network average (the walks'
    merged model is the network's); with --save-models each walk's last model is saved too."""
    driver = "walks"
    averages_network = False

    # what build_run asks of an algorithm
    @staticmethod
    def check_run(cfg, num_nodes):
        """Raise a one-line ConfigError if cfg cannot run on num_nodes nodes."""
        if cfg["walks"] > num_nodes:
            raise ConfigError(f"walks {cfg['walks']} exceeds the {num_nodes} nodes; R must be <= V")

    @staticmethod
    def gossip_split(cfg, graph):
        """run["gossip"]: walks need no active/passive split."""
        return None

    @staticmethod
    def start_nodes(cfg):
        """The nodes that hold something when the run starts (the others have nothing to do until a
        walk arrives): walk r starts at node r, and node 0, the aggregator, is among them."""
        return range(cfg["walks"])

    def __init__(self, node_id, cfg, run, x0, model_bytes, log, state=None):
        self.node_id, self.cfg, self.log, self.model_bytes = node_id, cfg, log, model_bytes
        self.graph, self.num_walks = run["graph"], cfg["walks"]
        self.failures = FailureSchedule(cfg["failure_times"])
        self.waiting = WalkQueue()
        self.drawn = (None, None, None)  # (walk id, hop, next node): the last hop drawn here, drawn once
        self.aggregator = algorithms.Aggregator(x0, self.num_walks) if node_id == 0 else None
        self.retired = 0   # node 0: walks that have retired anywhere
        self.final_walks = {}  # with --save-models: the model each walk retired with here
        if state is not None:
            self.load_state_dict(state)
        elif node_id < self.num_walks:  # walk r starts at node r, carrying x0
            self.arrive(Walk(node_id, 0, 0, x0.clone()))

    def walks_here(self):
        """The walks parked here, for a driver to move into its own carriers (an MPI buffer)."""
        return self.waiting.items()

    def arrive(self, walk):
        self.waiting.push(walk.walk_id, walk)

    def parked(self):
        return len(self.waiting)

    def role_at(self, now):
        return algorithms.aggregator_at(now, self.cfg["failure_times"])

    def next_visit(self, now):
        """Take the next waiting walk, if any. Returns
        Retire(walk): its time or budget share is up; the driver tells node 0.
        Send(walk, dest): it moves on without an update (a relay at a failed node).
        Compute(walk, lr): run tau local steps on walk.params at this lr, then call after_update.
        None: nothing waits here. A relay that stays (an MH self-loop) goes straight back
        into the queue, so the loop goes on."""
        while self.waiting:
            walk = self.waiting.pop()
            budget = algorithms.walk_budget(self.cfg["max_iterations"], self.num_walks, walk.walk_id)
            if now >= self.cfg["train_time"] or (budget is not None and walk.visits >= budget):
                self.log.write("retire", walk=walk.walk_id, visits=walk.visits)
                if self.cfg["save_models"]:
                    self.final_walks[walk.walk_id] = walk.params.clone()  # the driver reuses the carrier
                return Retire(walk)
            if self.node_id < self.role_at(now):  # failed: forward along the route, no update (SEMANTICS.md §6)
                hop = self.hop(walk, relay=True)
                if hop is not None:
                    return hop
                continue
            nxt = self.next_node(walk.walk_id, walk.hops)
            return Compute(walk, algorithms.lr_at(now, self.cfg), None if nxt == self.node_id else nxt)
        return None

    def after_update(self, walk, loss, duration, now):
        """The local update on `walk` finished: merge at the aggregator, log, hop.
        Returns Send(walk, dest), or None if the walk stays here (queued again)."""
        check_loss(loss, self.node_id, now, self.cfg)
        if self.node_id == self.role_at(now):
            self.aggregate(walk)
        self.log.update(duration, t=now, walk=walk.walk_id, visit=walk.visits,
                        **({} if loss is None else dict(loss=round(loss, 6))))
        walk.visits += 1
        return self.hop(walk)

    def aggregate(self, walk):
        """The aggregator's rule: adopt a walk's first arrival at a new aggregator, merge every later one."""
        if self.aggregator is None:  # the first walk since this node took the aggregator role over
            self.aggregator = algorithms.Aggregator(walk.params, self.num_walks, joined=())
        algorithms.aggregate(self.aggregator, walk.walk_id, walk.params)

    def hop(self, walk, relay=False):
        """The walk's next hop: Send(walk, dest), or None if it stays (queued again). A relay's send
        (relay: this node has failed) is logged as a relay, and counted as a transfer only with
        --count-relays: the authors' v2 logs no communication event for it (FIDELITY.md, counting)."""
        nxt = self.next_node(walk.walk_id, walk.hops)
        stays = nxt == self.node_id
        if relay:
            self.log.relay(nxt, 0 if stays else self.model_bytes, walk=walk.walk_id, hop=walk.hops)
        walk.hops += 1
        if stays:
            self.log.self_loop(walk=walk.walk_id)
            self.arrive(walk)
            return None
        if not relay or self.cfg["count_relays"]:
            self.log.transfer(nxt, self.model_bytes, walk=walk.walk_id)
        return Send(walk, nxt)

    def next_node(self, walk_id, hops):
        """Where hop number `hops` of walk `walk_id` leads from here (this node: it stays). Drawn once:
        next_visit draws it to announce it (Compute.leaves_to), hop reuses the draw, and a driver that
        knows a walk is on its way may draw it ahead, while the node waits (the MPI engine does)."""
        if self.drawn[:2] != (walk_id, hops):
            self.drawn = (walk_id, hops, algorithms.next_node(
                self.graph, self.node_id, self.cfg["seed"], walk_id, hops, self.cfg["laziness"]))
        return self.drawn[2]

    def walk_retired(self):
        """Node 0: one more walk retired. True once all have: the run is over."""
        self.retired += 1
        return self.retired == self.num_walks

    def unretired(self):
        return self.num_walks - self.retired

    def evaluated_model(self, now):
        """The model this node evaluates at `now`: the global model while it holds the aggregator role."""
        return self.aggregator.global_model if self.aggregator is not None and self.node_id == self.role_at(now) else None

    def pass_failures(self, now):
        """Log the failures whose time has come; a failed aggregator's role moves to the next node."""
        nodes = self.failures.passed(now)
        for node in nodes:
            self.log.write("failure", node=node, scheduled=self.failures.times[node], aggregator=node + 1)
        return Failures(nodes, frees_compute=False)  # a walk's compute never waits

    @staticmethod
    def failure_message(node):
        return f"node {node} fails as scheduled; node {node + 1} is the aggregator now"

    # --- the end of the run
    def holds_final_model(self, now):
        """Whether this node has held the aggregator role (and so a global model)."""
        return self.aggregator is not None

    @staticmethod
    def final_holder(holders):
        """Of the nodes that hold a final model (ascending), the one whose model the run reports:
        the last that held the aggregator role."""
        return holders[-1]

    def final_model(self):
        return None if self.aggregator is None else self.aggregator.global_model

    def saved_models(self):
        """With --save-models, the files this node saves besides the holder's model.pt: the model
        each walk retired with here."""
        return {f"walk{walk_id}.pt": params for walk_id, params in self.final_walks.items()}

    def state_dict(self):
        """Everything this node's protocol needs to go on (walks parked here, the aggregator,
        the retirement count, the failures logged); tensors on the CPU."""
        aggregator = None if self.aggregator is None else dict(
            x=self.aggregator.global_model.cpu(), snapshots=[s.cpu() for s in self.aggregator.snapshots],
            joined=sorted(self.aggregator.joined))
        walks = [([w.walk_id, w.visits, w.hops], w.params.cpu().clone()) for w in self.waiting.items(in_order=True)]
        return dict(aggregator=aggregator, walks=walks, retired=self.retired,
                    final_walks={k: v.cpu().clone() for k, v in self.final_walks.items()},
                    failures_logged=self.failures.logged)

    def load_state_dict(self, state):
        """The inverse of state_dict: the parked walks are parked here again."""
        self.aggregator = None
        if state["aggregator"] is not None:
            saved = state["aggregator"]
            self.aggregator = algorithms.Aggregator(saved["x"], self.num_walks, joined=saved["joined"])
            for snapshot, saved_snapshot in zip(self.aggregator.snapshots, saved["snapshots"]):
                snapshot.copy_(saved_snapshot)
        self.retired, self.final_walks = state["retired"], dict(state["final_walks"])
        self.failures.logged = state["failures_logged"]
        self.waiting = WalkQueue()
        for (walk_id, visits, hops), params in state["walks"]:
            self.arrive(Walk(walk_id, visits, hops, params))


# -----------------------------------------------------------------------------
# gossip protocols: Asynchronous Gossip (AD-PSGD)

# what an active node's next_exchange asks of its driver
class Exchange(NamedTuple):
    """Start an exchange with partner now. frees_compute: starting it published this node's waiting
    delta, so its blocked compute may go on (the driver starts it again)."""
    partner: int
    frees_compute: bool


class Wait(NamedTuple):
    """No exchange before time `until`, or (until None) before the next local update finishes."""
    until: float


class Over(NamedTuple):
    """No exchange will start here again: tell these neighbours."""
    neighbours: list


# what begin_update asks of its driver (or None: this node's updates are over)
class Start(NamedTuple):
    """Run tau local steps on a copy of `model` at learning rate lr, then call after_update."""
    model: torch.Tensor
    lr: float


class Blocked(NamedTuple):
    """The last local update's delta waits to be published (authors' coupling): no update starts
    until an event the protocol reports as freeing the compute (frees_compute)."""


BLOCKED = Blocked()


class GossipNode:
    """Asynchronous gossip at one node (SEMANTICS.md §2, §6). Every node computes all the time
    (`begin_update` / `after_update`); active nodes exchange with a uniform passive neighbour
    (`next_exchange`, `model_to_send`, then `active_average`); passive nodes serve one exchange
    at a time (`model_to_send`, then `passive_average`). An active node whose part is over tells
    its neighbours (Over); a passive node is done once every active neighbour has said so.

    How a local update's delta reaches the live model (--gossip-coupling, FIDELITY.md):
    - authors (the authors' code): two models per node, as their processes hold them. `shared`
      is what the compute and the evaluation read; `live` is the communication's model, the same
      memory as `shared` until the first average and a private copy from then on; `shared` is
      rewritten from `live` only after each average. A finished update's delta is published as
      *pending* (their one-slot buffer), and only an exchange consumes it, folding it into `live`:
      an active node before it sends `live`; a passive node after serving an exchange, in which
      it sent shared + pending. So a passive node's delta published while it waits for a request
      reaches the peer (half) and is folded in after the average (all of it), then the next
      exchange sends `shared`, which lacks it: about 1.0 in all; one published during an exchange
      is folded in before the next, which sends none of it: 0.5. An update starts from
      shared + pending (missing the deltas folded since the last average); a delta that finds
      the previous one still pending waits, and so does the compute: a passive node updates
      about once per exchange it serves. Once no exchange can come any more (the active
      neighbours spent their share of an iteration budget, or failed), a node folds its deltas
      in itself and its two models are one again.
    - immediate: the delta lands on the live model as soon as the update ends, after whatever
      averaging happened meanwhile (stale-gradient AD-PSGD).
    Exchange pacing: an active node starts an exchange at most every gossip_interval seconds (0: back
    to back); --gossip-pacing authors sets it to the authors' modelled exchange cycle, or to 0 in the
    simulator's authors timing, whose polls pace the exchanges (simulation/engine_timing.py).
    A blocked compute (Blocked) goes on after the events that can publish its delta or end its
    wait: an exchange started (Exchange.frees_compute) or served (passive_average), an active
    neighbour's notice that it is over (neighbour_over), a failure time (pass_failures). Each
    reports whether it freed the compute; the driver then calls begin_update again.
    At the end, the lowest-numbered live node holds the final model, and the run also reports
    the average of the live nodes' models (a failed node's model is frozen, not the network's)."""
    driver = "gossip"
    averages_network = True

    # what build_run asks of an algorithm
    @staticmethod
    def check_run(cfg, num_nodes):
        """Any number of nodes will do."""

    @staticmethod
    def gossip_split(cfg, graph):
        """run["gossip"]: (the graph gossip runs on, its active nodes) (graphs.gossip_graph)."""
        return graphs.gossip_graph(graph, cfg["graph"], cfg["paper_version"])

    def __init__(self, node_id, cfg, run, x0, model_bytes, log, state=None):
        self.node_id, self.cfg, self.log, self.model_bytes = node_id, cfg, log, model_bytes
        graph, active_nodes = run["gossip"]
        self.active = node_id in active_nodes
        self.neighbors = sorted(graph.neighbors(node_id))
        self.failure_times = cfg["failure_times"]
        self.failures = FailureSchedule(cfg["failure_times"])
        self.authors_coupling = cfg["gossip_coupling"] == "authors"
        self.live = x0.clone()
        self.shared = self.live         # authors' coupling: one memory until the first average (share_live)
        self.pending = None             # authors' coupling: the published delta no exchange has consumed yet
        self.unpublished = None         # authors' coupling: a finished delta waiting for `pending` to clear
        self.budget = algorithms.walk_budget(cfg["max_iterations"], cfg["nodes"], node_id)
        self.updates = 0
        self.computing = True           # False once this node's updates are over (time, budget, failure)
        self.blocked = False            # the last begin_update answered BLOCKED: the driver waits for a freeing event
        self.credits = 0                # per_update: finished updates not yet paid for by an exchange
        self.next_exchange_at = 0.0     # pacing: the earliest start of this active node's next exchange
        self.partner_rng = np.random.default_rng([cfg["seed"], 1, node_id])  # partner choices, never timing
        self.waiting_for = set(self.neighbors)  # passive: active neighbours that may still start an exchange
        if state is not None:
            self.load_state_dict(state)

    def failed(self, now):
        return algorithms.is_failed(self.node_id, now, self.failure_times)

    def exchanges_over(self, now):
        """No exchange will reach or leave this node any more (its partners failed or are done)."""
        return (not self.live_partners(now)) if self.active else self.serving_over()

    def live_partners(self, now):
        return [j for j in self.neighbors if not algorithms.is_failed(j, now, self.failure_times)]

    # --- compute, on every node
    def updates_over(self, now):
        return (now >= self.cfg["train_time"] or (self.budget is not None and self.updates >= self.budget)
                or self.failed(now))

    def compute_waits(self, now):
        """A local update may not start yet: its last delta waits for an exchange to publish it."""
        return not self.updates_over(now) and self.unpublished is not None and not self.exchanges_over(now)

    def frees_compute(self, now):
        """After an event that may publish the waiting delta or end the wait: True if it freed the
        blocked compute (once; begin_update then answers anew)."""
        if self.blocked and not self.compute_waits(now):
            self.blocked = False
            return True
        return False

    def begin_update(self, now):
        """Start(model a local update starts from, its lr); BLOCKED while the last delta waits to
        be published; None once this node's updates are over."""
        self.blocked = False
        if self.updates_over(now):
            self.computing = False
            return None
        if self.unpublished is not None:
            if not self.exchanges_over(now):
                self.blocked = True
                return BLOCKED
            self.fold_in_alone()
        start = self.shared if self.pending is None else self.shared + self.pending
        return Start(start.clone(), algorithms.lr_at(now, self.cfg))

    def after_update(self, before, after, loss, duration, now):
        check_loss(loss, self.node_id, now, self.cfg)
        if self.authors_coupling and self.exchanges_over(now):
            self.fold_in_alone()
        if not self.authors_coupling or self.exchanges_over(now):
            algorithms.apply_delta(self.live, before, after)
        elif self.pending is None:
            self.pending = after - before
        else:
            self.unpublished = after - before
        self.log.update(duration, t=now, **({} if loss is None else dict(loss=round(loss, 6))))
        self.updates += 1
        self.credits += 1

    def consume_pending(self):
        """Authors' coupling: the pending delta lands on the live model (and on the shared one only
        while they are one memory); a waiting one is published."""
        if self.pending is not None:
            self.live.add_(self.pending)
            self.pending, self.unpublished = self.unpublished, None

    def share_live(self):
        """Authors' coupling, after each average: the shared model is rewritten from the live one;
        from the first average on they are two copies."""
        if self.shared is self.live:
            self.shared = self.live.clone()
        else:
            self.shared.copy_(self.live)

    def fold_in_alone(self):
        """Authors' coupling, once no exchange can come: the live model holds every delta folded
        so far, so it becomes the shared one again, and the deltas waiting are folded in."""
        self.shared = self.live
        self.consume_pending()
        self.consume_pending()

    # --- exchanges, active side
    def next_exchange(self, now):
        """Exchange(partner, frees_compute): start one now. Wait(t): not before time t, or Wait(None)
        not until the next local update finishes. Over(neighbours): no exchange will start here
        again: tell them."""
        if not self.computing or self.failed(now):
            return Over(self.neighbors)
        partners = self.live_partners(now)
        if not partners:
            return Wait(None)
        if self.cfg["gossip_mode"] == "per_update":
            if self.credits == 0:
                return Wait(None)
            self.credits -= 1
        else:
            if now < self.next_exchange_at:
                return Wait(self.next_exchange_at)
            self.next_exchange_at = now + self.cfg["gossip_interval"]
        if self.authors_coupling:
            self.consume_pending()
        return Exchange(algorithms.gossip_partner(partners, self.partner_rng), self.frees_compute(now))

    def active_average(self, partner, sent, received):
        algorithms.gossip_average(self.live, sent, received)
        if self.authors_coupling:
            self.share_live()
        self.log.exchange(partner)
        self.log.transfer(partner, self.model_bytes)

    # --- exchanges, both sides
    def model_to_send(self):
        """The model an exchange sends (the driver copies it into whatever carries it). A passive
        node under the authors' coupling sends shared + pending, not its live model."""
        if self.authors_coupling and not self.active:
            return self.shared if self.pending is None else self.shared + self.pending
        return self.live

    # --- exchanges, passive side
    def passive_average(self, partner, sent, received, now):
        """The exchange served: average. Returns whether that freed the blocked compute."""
        if self.authors_coupling:  # the live model, not what it sent, is averaged; then the slot is folded in
            self.live.add_(received.to(self.live.device, self.live.dtype) - self.live, alpha=0.5)
            self.share_live()
            self.consume_pending()
        else:
            algorithms.gossip_average(self.live, sent, received)
        self.log.transfer(partner, self.model_bytes)
        return self.frees_compute(now)

    def neighbour_over(self, partner, now):
        """An active neighbour will start no more exchanges (once none may: serving_over). Returns
        whether that freed the blocked compute."""
        self.waiting_for.discard(partner)
        return self.frees_compute(now)

    def serving_over(self):
        """No exchange will reach this node any more (an active node serves none)."""
        return self.active or not self.waiting_for

    def pass_failures(self, now):
        """Log the failures whose time has come: this node's own ends its updates, its partners'
        may end its exchanges, and either may free its blocked compute."""
        nodes = self.failures.passed(now)
        for node in nodes:
            self.log.write("failure", node=node, scheduled=self.failures.times[node])
        return Failures(nodes, frees_compute=bool(nodes) and self.frees_compute(now))

    @staticmethod
    def failure_message(node):
        return f"node {node} fails as scheduled"

    def evaluated_model(self, now):
        """Evaluation is at the lowest-numbered live node (SEMANTICS.md §6), of its shared model
        (the one the authors' evaluation process reads)."""
        return self.shared if self.node_id == algorithms.failures_by(now, self.failure_times) else None

    # --- the end of the run
    def holds_final_model(self, now):
        """Whether this node is live at `now` (its model is part of the network's)."""
        return not self.failed(now)

    @staticmethod
    def final_holder(holders):
        """Of the live nodes (ascending), the one whose model the run reports: the lowest-numbered."""
        return holders[0]

    def final_model(self):
        return self.shared

    def saved_models(self):
        """Nothing besides the holder's model.pt."""
        return {}

    def state_dict(self):
        cpu = lambda t: None if t is None else t.cpu().clone()  # noqa: E731
        return dict(live=cpu(self.live), shared=None if self.shared is self.live else cpu(self.shared),
                    pending=cpu(self.pending), unpublished=cpu(self.unpublished),
                    updates=self.updates, credits=self.credits, next_exchange_at=self.next_exchange_at,
                    partner_rng=self.partner_rng.bit_generator.state, failures_logged=self.failures.logged)

    def load_state_dict(self, state):
        device = self.live.device
        self.live.copy_(state["live"])
        self.shared = self.live if state["shared"] is None else state["shared"].to(device)
        self.pending, self.unpublished = (None if state[k] is None else state[k].to(device)
                                          for k in ("pending", "unpublished"))
        self.updates, self.credits, self.next_exchange_at = state["updates"], state["credits"], state["next_exchange_at"]
        self.partner_rng.bit_generator.state = state["partner_rng"]
        self.failures.logged = state["failures_logged"]


# -----------------------------------------------------------------------------
# the registry: --algorithm NAME runs PROTOCOLS[NAME] on both transports

PROTOCOLS = {}


def register(name, protocol_class):
    """Make `--algorithm name` run protocol_class (a walk or gossip protocol: its `driver`)."""
    PROTOCOLS[name] = protocol_class
    return protocol_class


register("mw", MultiWalkNode)
register("gossip", GossipNode)


def make_protocol(cfg, node_id, run, x0, model_bytes, log, state=None):
    return PROTOCOLS[cfg["algorithm"]](node_id, cfg, run, x0, model_bytes, log, state=state)
