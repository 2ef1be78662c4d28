"""
The asynchronous worker loops of Multi-Walk and Asynchronous Gossip over MPI
point-to-point messages, one rank per graph node.

Every rank runs two threads:
  - the compute thread (the main thread) runs local updates, merges and evaluations
    by calling the rules in algorithms.py;
  - the communication thread owns every MPI call during training: it receives
    walks and exchange requests, sends models, and answers a passive gossip node's
    exchanges while that node computes.
A model travels as one contiguous host buffer: a small int64 header followed by
the parameters, in fp32 or (--transfer-dtype bfloat16) bf16; averaging and merging
always run in fp32. CUDA models are staged through pinned host memory.
Idle loops poll MPI with an exponential back-off: ranks share few cores.

Failures (--failure-times, SPEC §6) follow a schedule every rank knows, so no
message announces them: the rules are algorithms.aggregator_at / is_failed.
Checkpoints (--checkpoint-every, --resume) are consistent cuts taken in rounds;
checkpoint.py describes the protocol, the engine pauses and saves when told.
"""
import heapq
import os
import socket
import threading
import time

import numpy as np
import torch
from mpi4py import MPI

import algorithms
import checkpoint
import models
from events import EventLog, write_final_summary, write_summary

TAG_WALK, TAG_RETIRED, TAG_STOP, TAG_EXCHANGE, TAG_REPLY, TAG_DONE, TAG_STATS, TAG_EVAL = range(1, 9)
HEADER_WORDS = 3       # walk messages: (walk_id, visits done, hops made); exchange messages: unused
STATS_PERIOD = 1.0     # seconds between progress counters sent to rank 0
TRANSFER_DTYPES = dict(float32=torch.float32, bfloat16=torch.bfloat16)


class Backoff:
    """Sleep between polls: short right after activity, doubling while idle, up to `high`,
    which bounds how late an idle rank notices a message. 1 ms: an idle rank costs about
    3% of a core (2 ms: 2.5%, 0.5 ms: 4%; 8 ranks on 2 cores). A `wakeup` (a Doorbell the other thread of this
    rank rings) ends the sleep as soon as there is local work."""
    def __init__(self, low=2e-5, high=1e-3, wakeup=None):
        self.low, self.high, self.delay, self.wakeup = low, high, low, wakeup

    def idle(self):
        if self.wakeup is None:
            time.sleep(self.delay)
        else:
            self.wakeup.wait(self.delay)
        self.delay = min(self.delay * 2, self.high)

    def reset(self):
        self.delay = self.low


class Doorbell:
    """Ends the communication thread's idle wait as soon as the compute thread posts work.
    A bare lock, held while nobody rang: waiting on it costs about what a sleep does, where
    a threading.Event costs half as much again."""
    def __init__(self):
        self.lock = threading.Lock()
        self.lock.acquire()

    def ring(self):
        try:
            self.lock.release()
        except RuntimeError:
            pass  # rung already and not yet answered

    def wait(self, timeout):
        self.lock.acquire(timeout=timeout)


def polite_barrier(comm):
    """A barrier that sleeps while it waits: MPI's blocking collectives spin, and a
    spinning rank steals the core that a slower rank still needs to catch up."""
    wait(comm.Ibarrier(), Backoff(high=0.01))


def transfer_format(cfg, num_params):
    """The dtype models travel in, and the bytes one model transfer counts: itemsize x parameters."""
    dtype = TRANSFER_DTYPES[cfg["transfer_dtype"]]
    return dtype, dtype.itemsize * num_params


class ModelBuffer:
    """Host staging buffer of one model message: header, then the parameters."""
    def __init__(self, num_params, dtype, pin):
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.raw = torch.empty(HEADER_WORDS * 8 + num_params * itemsize, dtype=torch.uint8, pin_memory=pin)
        self.header = self.raw[:HEADER_WORDS * 8].view(torch.int64)
        self.params = self.raw[HEADER_WORDS * 8:].view(dtype)
        self.mpi = self.raw.numpy()


class BufferPool:
    """Reuses model buffers: at most one per walk waiting at this node."""
    def __init__(self, num_params, dtype, pin):
        self.args, self.free = (num_params, dtype, pin), []

    def get(self):
        return self.free.pop() if self.free else ModelBuffer(*self.args)

    def put(self, buf):
        self.free.append(buf)


def wait(request, backoff, on_idle=None):
    """Complete a nonblocking request without spinning a core."""
    backoff.reset()
    while not request.Test():
        if on_idle:
            on_idle()
        backoff.idle()


class Progress:
    """Counters every rank sends to rank 0 about once a second, for the progress
    line; a final message (flag 1) tells rank 0 that the rank has finished.
    Evaluations made at another node (after failures) travel to rank 0 the same way."""
    def __init__(self, comm, log):
        self.comm, self.log = comm, log
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.latest = np.zeros((self.size, 3), dtype=np.int64)
        self.finished = set()
        self.request, self.last_sent = None, 0.0
        self.outgoing = np.zeros(4, dtype=np.int64)
        self.incoming = np.zeros(4, dtype=np.int64)
        self.evaluator = None          # rank 0: records the evaluations other nodes report
        self.evals, self.eval_requests = [], []  # other ranks: (loss, accuracy) to report, and their sends
        self.eval_incoming = np.zeros(2, dtype=np.float64)

    def post_eval(self, loss, accuracy):
        """Compute thread of a node that evaluates in rank 0's place; the communication thread sends it."""
        self.evals.append((loss, accuracy))

    def send_evals(self):
        self.eval_requests = [(r, b) for r, b in self.eval_requests if not r.Test()]
        while self.evals:
            buf = np.array(self.evals.pop(0), dtype=np.float64)
            self.eval_requests.append((self.comm.Isend(buf, 0, TAG_EVAL), buf))

    def snapshot(self):
        c = self.log.counters
        return [c["iterations"], c["transfers"], c["bytes_sent"]]

    def poll(self, final=False):
        """Called from the communication thread only. Returns True if it did something."""
        if self.rank == 0:
            status, busy = MPI.Status(), False
            while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_STATS, status):
                self.comm.Recv(self.incoming, status.Get_source(), TAG_STATS)
                self.latest[status.Get_source()] = self.incoming[:3]
                if self.incoming[3]:
                    self.finished.add(status.Get_source())
                busy = True
            while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_EVAL, status):
                self.comm.Recv(self.eval_incoming, status.Get_source(), TAG_EVAL)
                self.evaluator.record(*self.eval_incoming.tolist(), node=status.Get_source())
                busy = True
            if final:
                self.finished.add(0)
            return busy
        self.send_evals()
        if self.request is not None and not self.request.Test():
            return False
        self.request = None
        if final or time.monotonic() - self.last_sent > STATS_PERIOD:
            self.outgoing[:] = self.snapshot() + [int(final)]
            self.request = self.comm.Isend(self.outgoing, 0, TAG_STATS)
            self.last_sent = time.monotonic()
        return False

    def finish(self, backoff):
        """Tell rank 0 we are done; rank 0 waits until every rank has said so."""
        if self.rank == 0:
            self.poll(final=True)
            while len(self.finished) < self.size:
                if not self.poll():
                    backoff.idle()
        else:
            if self.request is not None:
                wait(self.request, backoff)
                self.request = None
            self.poll(final=True)
            wait(self.request, backoff)
            for request, _ in self.eval_requests:
                wait(request, backoff)

    def totals(self):
        """Rank 0's view of the whole network: (iterations, transfers, bytes)."""
        self.latest[0] = self.snapshot()
        return self.latest.sum(axis=0)


def pick_device(cfg, comm):
    """One GPU per rank, chosen by the rank's index among the ranks of its host."""
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank, local_size = local.Get_rank(), local.Get_size()
    local.Free()
    if cfg["device"] == "cuda" or (cfg["device"] == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    # CPU ranks share the host's cores: one BLAS thread pool each would oversubscribe them
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    return torch.device("cpu")


class Evaluator:
    """Periodic test evaluation at the node that evaluates: node 0, or after failures the
    node evaluation moved to (SPEC §6). That node measures; rank 0 records every result
    (the eval event, the progress line, the provisional summary), so the curve stays in
    one log with rank 0's live totals. The evaluated model keeps the label "node0";
    the `node` field says where it was measured once that is not node 0."""
    def __init__(self, cfg, run, node, log, progress, clock):
        self.cfg, self.node, self.log, self.progress, self.clock = cfg, node, log, progress, clock
        self.evaluate = algorithms.make_evaluate(cfg, run, node)
        self.next_time = 0.0

    def due(self):
        return self.clock() >= self.next_time

    def seconds_to_next(self):
        return max(0.0, self.next_time - self.clock())

    def measure(self, params):
        models.load_flat_params(self.node.model, params)
        return self.evaluate(self.node.model)

    def __call__(self, params, model="node0", quiet=False):
        loss, accuracy = self.measure(params)
        self.next_time = self.clock() + self.cfg["eval_interval"]
        if self.node.node_id == 0:
            self.record(loss, accuracy, model=model, quiet=quiet)
        else:
            self.progress.post_eval(loss, accuracy)
        return loss, accuracy

    def record(self, loss, accuracy, node=0, model="node0", quiet=False):
        """Rank 0 only."""
        iterations, transfers, nbytes = (int(v) for v in self.progress.totals())
        where = dict(node=node) if node else {}
        self.log.write("eval", model=model, test_loss=loss, test_accuracy=accuracy,
                       iterations_seen=iterations, bytes_seen=nbytes, **where)
        if not quiet:
            print(f"t {self.clock():7.1f}s | iterations {iterations:7d} | sent {nbytes / 1e6:9.1f} MB | "
                  f"test loss {loss:.4f} | test acc {accuracy:.4f}" + ("" if model == "node0" else f" ({model})")
                  + (f" (node {node})" if node else ""), flush=True)
        # a job killed from here on still leaves a readable summary, marked incomplete
        write_summary(self.cfg["out"], self.cfg, self.progress.size, wall_time_s=self.clock(), iterations=iterations,
                      transfers=transfers, bytes_sent=nbytes, last_test_accuracy=accuracy, last_test_loss=loss,
                      complete=False)


class FailureLog:
    """A `failure` event at this rank when its clock passes each failure time, so plots can
    mark the failures (every rank knows the schedule; nothing is sent). Called by the
    communication thread, which keeps polling until the run ends."""
    def __init__(self, cfg, log, clock):
        self.times, self.log, self.clock, self.mw = cfg["failure_times"], log, clock, cfg["algorithm"] == "mw"
        self.logged = 0

    def poll(self):
        while self.logged < len(self.times) and self.clock() >= self.times[self.logged]:
            node = self.logged
            self.log.write("failure", node=node, scheduled=self.times[node], **(dict(aggregator=node + 1) if self.mw else {}))
            self.logged += 1


# -----------------------------------------------------------------------------
# Multi-Walk

class WalkQueue:
    """Walks waiting at this node, served lowest walk id first."""
    def __init__(self):
        self.heap, self.cond = [], threading.Condition()

    def put(self, walk_id, buf):
        with self.cond:
            heapq.heappush(self.heap, (walk_id, id(buf), buf))
            self.cond.notify()

    def get(self, timeout):
        with self.cond:
            if not self.heap:
                self.cond.wait(timeout)
            return heapq.heappop(self.heap)[2] if self.heap else None

    def wake(self):
        with self.cond:
            self.cond.notify()

    def buffers(self):
        with self.cond:
            return [buf for _, _, buf in sorted(self.heap, key=lambda item: item[:2])]

    def __len__(self):
        with self.cond:
            return len(self.heap)


def mw_communication(comm, cfg, queue, outbox, doorbell, pool, log, progress, stop, ckpt, failures):
    """Moves walks between ranks; rank 0 also counts retired walks and ends the run."""
    rank, size, num_walks = comm.Get_rank(), comm.Get_size(), cfg["walks"]
    status, backoff, sending, retired = MPI.Status(), Backoff(wakeup=doorbell), [], 0
    stop_requests = None
    notice = np.zeros(1, dtype=np.int64)
    while True:
        busy = False
        if comm.Iprobe(MPI.ANY_SOURCE, TAG_WALK, status):
            buf = pool.get()
            comm.Recv(buf.mpi, status.Get_source(), TAG_WALK)
            queue.put(int(buf.header[0]), buf)
            busy = True
        while outbox:
            dest, tag, payload = outbox.pop(0)
            if dest == rank == 0 and tag == TAG_RETIRED:
                retired += 1
                continue
            sending.append((comm.Isend(payload.mpi if tag == TAG_WALK else payload, dest, tag), tag, payload))
            busy = True
        still_sending = []
        for request, tag, payload in sending:
            if request.Test():
                if tag == TAG_WALK:
                    pool.put(payload)
            else:
                still_sending.append((request, tag, payload))
        sending = still_sending
        if rank == 0:
            while comm.Iprobe(MPI.ANY_SOURCE, TAG_RETIRED, status):
                comm.Recv(notice, status.Get_source(), TAG_RETIRED)
                retired += 1
                busy = True
            if retired == num_walks and stop_requests is None:
                # every walk has retired, so no walk message is in flight: safe to stop everyone
                stop_requests = [comm.Isend(notice, dest, TAG_STOP) for dest in range(1, size)]
                stop.set()
                queue.wake()
        elif comm.Iprobe(0, TAG_STOP, status):
            comm.Recv(notice, 0, TAG_STOP)
            stop.set()
            queue.wake()
        busy |= progress.poll()
        failures.poll()
        if not stop.is_set():  # a stopped run takes no checkpoint
            busy |= ckpt.poll(parked=len(queue), unretired=num_walks - retired)
        if stop.is_set() and not sending and not outbox:
            break
        if busy:
            backoff.reset()
        else:
            backoff.idle()
    for request in stop_requests or []:
        wait(request, backoff)
    progress.finish(backoff)


def run_mw(comm, cfg, run, node, log, clock, evaluator, ckpt, failures, resume):
    """MW at this rank. Failures (SPEC §6): from the i-th failure time on, node i + 1 holds the
    aggregator role; it adopts each walk's first arrival (algorithms.aggregate) and evaluates
    once it holds a model. A failed ex-aggregator relays: it forwards arriving walks along
    their routes without a local update (as the authors' code does), logging a `relay`; the
    forwarded model counts as a transfer, since its bytes are sent. A walk's header counts
    visits (local updates, the budget) and hops (the route position, so routes stay a pure
    function of (seed, walk, hop)); without failures the two are equal."""
    rank, num_walks = comm.Get_rank(), cfg["walks"]
    graph, tau, seed, failure_times = run["graph"], cfg["tau"], cfg["seed"], cfg["failure_times"]
    x0 = models.flatten_params(node.model)
    num_params = x0.numel()
    dtype, model_bytes = transfer_format(cfg, num_params)
    pool = BufferPool(num_params, dtype, pin=node.device.type == "cuda")
    queue, outbox, stop = WalkQueue(), [], threading.Event()
    doorbell = Doorbell()  # rung with every outbox entry: the communication thread sends it at once
    aggregator = algorithms.Aggregator(x0, num_walks) if rank == 0 else None
    final_walks = {}
    if resume:  # the walks parked here at the checkpoint, and the aggregator's state
        for header, params in resume["walks"]:
            buf = pool.get()
            buf.header[:] = torch.tensor(header)
            buf.params.copy_(params)
            queue.put(header[0], buf)
        aggregator, final_walks = None, resume["final_walks"]
        if resume["aggregator"]:
            saved = resume["aggregator"]
            aggregator = algorithms.Aggregator(saved["x"].to(node.device), num_walks, joined=saved["joined"])
            for snapshot, saved_snapshot in zip(aggregator.snapshots, saved["snapshots"]):
                snapshot.copy_(saved_snapshot)
    elif rank < num_walks:  # walk r starts at node r, carrying x0
        buf = pool.get()
        buf.header[:] = torch.tensor([rank, 0, 0])
        buf.params.copy_(x0)
        queue.put(rank, buf)
    del x0  # the walk and the aggregator hold their own copies; for OPT-125M this frees 0.5 GB

    def save_state():  # the communication thread calls this while the compute thread is paused
        saved_aggregator = None if aggregator is None else dict(
            x=aggregator.global_model.cpu(), snapshots=[s.cpu() for s in aggregator.snapshots],
            joined=sorted(aggregator.joined))
        return dict(checkpoint.common_state(node, log, evaluator, failures), aggregator=saved_aggregator,
                    walks=[(buf.header.tolist(), buf.params.clone()) for buf in queue.buffers()],
                    final_walks=final_walks)
    ckpt.save_state = save_state
    progress = Progress(comm, log)
    if evaluator:
        evaluator.progress = progress
        progress.evaluator = evaluator
    comm_thread = threading.Thread(target=mw_communication, name="mpi",
                                   args=(comm, cfg, queue, outbox, doorbell, pool, log, progress, stop, ckpt,
                                         failures))
    comm_thread.start()
    while not stop.is_set():
        if ckpt.due():
            ckpt.pause(stop)  # walks arriving meanwhile stay parked in the queue
            continue
        evaluating = (evaluator is not None and aggregator is not None
                      and rank == algorithms.aggregator_at(clock(), failure_times))
        if evaluating and evaluator.due():
            evaluator(aggregator.global_model)
        buf = queue.get(timeout=min(evaluator.seconds_to_next() if evaluating else 0.5, ckpt.seconds_to_next()))
        if buf is None:
            continue
        walk_id, visits, hops = (int(v) for v in buf.header)
        budget = algorithms.walk_budget(cfg["max_iterations"], num_walks, walk_id)
        if clock() >= cfg["train_time"] or (budget is not None and visits >= budget):
            log.write("retire", walk=walk_id, visits=visits)
            if cfg["save_models"]:
                final_walks[walk_id] = buf.params.clone()
            pool.put(buf)
            outbox.append((0, TAG_RETIRED, np.array([walk_id], dtype=np.int64)))
            doorbell.ring()
            continue
        role = algorithms.aggregator_at(clock(), failure_times)
        if rank < role:
            log.relay(walk=walk_id, hop=hops)
        else:
            started = time.perf_counter()
            loss = algorithms.local_update(node, buf.params, tau, algorithms.lr_at(clock(), cfg))
            if rank == role:
                if aggregator is None:  # the first walk since this node took the aggregator role over
                    aggregator = algorithms.Aggregator(buf.params, num_walks, joined=())
                algorithms.aggregate(aggregator, walk_id, buf.params)
            if node.device.type == "cuda":
                torch.cuda.synchronize(node.device)
            log.update(time.perf_counter() - started, walk=walk_id, visit=visits, loss=round(loss, 6))
            visits += 1
        nxt = algorithms.next_node(graph, rank, seed, walk_id, hops, cfg["laziness"])
        buf.header[1], buf.header[2] = visits, hops + 1
        if nxt == rank:
            log.self_loop(walk=walk_id)
            queue.put(walk_id, buf)
        else:
            log.transfer(nxt, model_bytes, walk=walk_id)
            outbox.append((nxt, TAG_WALK, buf))
            doorbell.ring()
    comm_thread.join()
    return (aggregator.global_model if aggregator is not None else None), final_walks


# -----------------------------------------------------------------------------
# Asynchronous Gossip

class LiveModel:
    """A gossip node's model: the compute thread adds deltas, the communication thread averages."""
    def __init__(self, x0):
        self.params, self.lock = x0.clone(), threading.Lock()

    def copy(self):
        with self.lock:
            return self.params.clone()


def gossip_exchange_active(comm, live, partner, sendbuf, recvbuf, backoff, progress):
    """Swap models with a passive neighbour and average."""
    with live.lock:
        sendbuf.params.copy_(live.params)  # sendbuf keeps the model sent until the average below
    recv_request = comm.Irecv(recvbuf.mpi, partner, TAG_REPLY)
    send_request = comm.Isend(sendbuf.mpi, partner, TAG_EXCHANGE)
    wait(send_request, backoff, progress.poll)
    wait(recv_request, backoff, progress.poll)
    with live.lock:
        algorithms.gossip_average(live.params, sendbuf.params, recvbuf.params)


def gossip_communication(comm, cfg, run, live, log, progress, compute_done, credits, clock, rng, ckpt, failures):
    """Failures (SPEC §6): active nodes stop choosing a passive neighbour at its failure time
    (by the shared clock), and a failed active node stops exchanging and sends DONE at once,
    so its passive neighbours still terminate. A failed passive node still answers the
    exchanges already in flight to it (sent before its failure time), as in the authors'
    code: the active partner is waiting for the reply, and no new request can come."""
    rank = comm.Get_rank()
    graph, active_nodes = run["gossip"]
    neighbors = sorted(graph.neighbors(rank))
    failure_times = cfg["failure_times"]
    dtype, model_bytes = transfer_format(cfg, live.params.numel())
    sendbuf = ModelBuffer(live.params.numel(), dtype, pin=live.params.is_cuda)
    recvbuf = ModelBuffer(live.params.numel(), dtype, pin=live.params.is_cuda)
    backoff, status = Backoff(), MPI.Status()
    if rank in active_nodes:
        while not compute_done.is_set() and not algorithms.is_failed(rank, clock(), failure_times):
            failures.poll()
            busy = progress.poll() | ckpt.poll()
            partners = [j for j in neighbors if not algorithms.is_failed(j, clock(), failure_times)]
            if ckpt.due() or not partners:  # a checkpoint round (no new exchange), or nobody left to gossip with
                if not busy:
                    backoff.idle()
                continue
            if cfg["gossip_mode"] == "per_update" and not credits.acquire(timeout=0.05):
                continue
            partner = algorithms.gossip_partner(partners, rng)
            gossip_exchange_active(comm, live, partner, sendbuf, recvbuf, backoff, progress)
            log.exchange(partner)
            log.transfer(partner, model_bytes)
        done = np.zeros(1, dtype=np.int64)
        for request in [comm.Isend(done, j, TAG_DONE) for j in neighbors]:
            wait(request, backoff, progress.poll)
    else:
        waiting_for = set(neighbors)  # active neighbours that may still start an exchange
        done = np.zeros(1, dtype=np.int64)
        while waiting_for:
            if comm.Iprobe(MPI.ANY_SOURCE, TAG_EXCHANGE, status):
                partner = status.Get_source()
                comm.Recv(recvbuf.mpi, partner, TAG_EXCHANGE)
                with live.lock:
                    sendbuf.params.copy_(live.params)
                wait(comm.Isend(sendbuf.mpi, partner, TAG_REPLY), backoff, progress.poll)
                with live.lock:
                    algorithms.gossip_average(live.params, sendbuf.params, recvbuf.params)
                log.transfer(partner, model_bytes)
                backoff.reset()
            elif comm.Iprobe(MPI.ANY_SOURCE, TAG_DONE, status):
                comm.Recv(done, status.Get_source(), TAG_DONE)
                waiting_for.discard(status.Get_source())
            else:
                failures.poll()
                if not (progress.poll() | ckpt.poll()):
                    backoff.idle()
    gossip_finish(comm, progress, ckpt, failures, backoff, compute_done)


def gossip_finish(comm, progress, ckpt, failures, backoff, compute_done):
    """Once this rank's part is over (no exchange left to serve, and no update left: a passive
    node can be done serving before it is done computing), it tells rank 0, then keeps taking
    part in checkpoint rounds, which still need its state, until rank 0 has heard from every
    rank and sends STOP."""
    rank, size = comm.Get_rank(), comm.Get_size()
    notice = np.zeros(1, dtype=np.int64)
    while not compute_done.is_set():
        failures.poll()
        if not (progress.poll() | ckpt.poll()):
            backoff.idle()
    if rank == 0:
        progress.poll(final=True)
        while len(progress.finished) < size or ckpt.saving:
            failures.poll()
            if not (progress.poll() | ckpt.poll()):
                backoff.idle()
        for request in [comm.Isend(notice, dest, TAG_STOP) for dest in range(1, size)]:
            wait(request, backoff)
        return
    progress.finish(backoff)
    while not comm.Iprobe(0, TAG_STOP):
        failures.poll()
        if not ckpt.poll():
            backoff.idle()
    comm.Recv(notice, 0, TAG_STOP)


def run_gossip(comm, cfg, run, node, log, clock, evaluator, ckpt, failures, resume):
    """Gossip at this rank. Returns its final model and whether it is still alive (not failed).
    Evaluation is at the lowest-numbered live node (SPEC §6: it moves on at each failure)."""
    rank, failure_times = comm.Get_rank(), cfg["failure_times"]
    live = LiveModel(models.flatten_params(node.model))
    budget = algorithms.walk_budget(cfg["max_iterations"], comm.Get_size(), rank)
    rng = np.random.default_rng([cfg["seed"], 1, rank])  # partner choices, independent of timing
    done = dict(updates=0)
    if resume:
        live.params.copy_(resume["live"])
        rng.bit_generator.state = resume["partner_rng"]
        done["updates"] = resume["updates"]
    # the communication thread calls this with the compute thread paused (or finished) and no exchange open
    ckpt.save_state = lambda: dict(checkpoint.common_state(node, log, evaluator, failures), live=live.copy().cpu(),
                                   updates=done["updates"], partner_rng=rng.bit_generator.state)
    progress = Progress(comm, log)
    if evaluator:
        evaluator.progress = progress
        progress.evaluator = evaluator
    compute_done, credits = threading.Event(), threading.Semaphore(0)
    comm_thread = threading.Thread(target=gossip_communication, name="mpi",
                                   args=(comm, cfg, run, live, log, progress, compute_done, credits, clock, rng,
                                         ckpt, failures))
    comm_thread.start()
    while (clock() < cfg["train_time"] and (budget is None or done["updates"] < budget)
           and not algorithms.is_failed(rank, clock(), failure_times)):
        if ckpt.due():
            ckpt.pause()
            continue
        if evaluator and evaluator.due() and rank == algorithms.failures_by(clock(), failure_times):
            evaluator(live.copy())
        started = time.perf_counter()
        before = live.copy()
        after = before.clone()
        loss = algorithms.local_update(node, after, cfg["tau"], algorithms.lr_at(clock(), cfg))
        with live.lock:
            algorithms.apply_delta(live.params, before, after)
        if node.device.type == "cuda":
            torch.cuda.synchronize(node.device)
        log.update(time.perf_counter() - started, loss=round(loss, 6))
        done["updates"] += 1
        credits.release()
    alive = not algorithms.is_failed(rank, clock(), failure_times)
    ckpt.compute_finished()
    compute_done.set()
    comm_thread.join()
    return live.params, alive


# -----------------------------------------------------------------------------

def train(comm, cfg, run):
    rank = comm.Get_rank()
    device = pick_device(cfg, comm)
    node = algorithms.make_node(cfg, run, rank, device)
    resume = run.get("resume")  # this rank's checkpoint (main.py loads it for --resume)
    polite_barrier(comm)
    elapsed = resume["meta"]["elapsed"] if resume else 0.0
    start = comm.bcast(time.time() - elapsed)  # one time origin for every rank's events; a resumed clock goes on
    clock = lambda: time.time() - start  # noqa: E731
    log = EventLog(os.path.join(cfg["out"], f"events-rank{rank}.jsonl"), clock,
                   resume_at=resume["log_offset"] if resume else None)
    # the pid maps the launcher's "BAD TERMINATION ... PID" line to a rank
    log.write("start", pid=os.getpid(), host=socket.gethostname(), **(dict(resumed_at=elapsed) if resume else {}))
    # after failures another node evaluates, so every node can
    evaluator = Evaluator(cfg, run, node, log, None, clock) if rank == 0 or cfg["failure_times"] else None
    failures = FailureLog(cfg, log, clock)
    ckpt = checkpoint.Checkpointer(comm, cfg, clock, resume)
    if resume:
        checkpoint.restore_common(resume, node, log, evaluator, failures)
    if rank == 0:
        write_summary(cfg["out"], cfg, comm.Get_size(), wall_time_s=clock(), complete=False)
    if cfg["algorithm"] == "mw":
        final_model, final_walks = run_mw(comm, cfg, run, node, log, clock, evaluator, ckpt, failures, resume)
        holds = comm.allgather(final_model is not None)
        holder = max(r for r, has in enumerate(holds) if has)  # the last node that held the aggregator role
    else:
        (final_model, alive), final_walks = run_gossip(comm, cfg, run, node, log, clock, evaluator, ckpt, failures,
                                                       resume), {}
        holder = comm.allgather(alive).index(True)  # the lowest-numbered live node
    wall_time = clock()

    # after training: collectives only, the communication threads have finished
    polite_barrier(comm)
    network_average = None
    if cfg["algorithm"] == "gossip":  # over the live nodes: a failed node's model is frozen, not part of the network
        total = final_model.detach().cpu().clone() * alive
        comm.Allreduce(MPI.IN_PLACE, total.numpy(), op=MPI.SUM)
        network_average = total / comm.allreduce(int(alive))
    if cfg["save_models"]:
        for walk_id, params in final_walks.items():
            torch.save(params, os.path.join(cfg["out"], f"walk{walk_id}.pt"))
    final = None
    if rank == holder:
        final = evaluator.measure(final_model)
        if cfg["save_models"]:
            torch.save(final_model.cpu(), os.path.join(cfg["out"], "model.pt"))
    loss, accuracy = comm.bcast(final, root=holder)
    counters = comm.gather(dict(log.counters), root=0)
    if rank == 0:
        average_accuracy = None
        if network_average is not None:
            average_accuracy = evaluator(network_average, model="network_average")[1]
        evaluator.record(loss, accuracy, node=holder)
        model_bytes = transfer_format(cfg, models.num_params(node.model))[1]
        write_final_summary(cfg["out"], cfg, counters, "mpi", model_bytes, wall_time,
                            accuracy, loss, average_accuracy, evaluated_node=holder)
    log.close()
    polite_barrier(comm)
