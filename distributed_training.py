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
the parameters. CUDA models are staged through pinned host memory.
Idle loops poll MPI with an exponential back-off: ranks share few cores.
"""
import heapq
import json
import os
import threading
import time

import numpy as np
import torch
from mpi4py import MPI

import algorithms
import models
from events import COUNTERS, EventLog

TAG_WALK, TAG_RETIRED, TAG_STOP, TAG_EXCHANGE, TAG_REPLY, TAG_DONE, TAG_STATS = range(1, 8)
HEADER_WORDS = 2       # walk messages: (walk_id, visits done); exchange messages: unused
STATS_PERIOD = 1.0     # seconds between progress counters sent to rank 0


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
    line; a final message (flag 1) tells rank 0 that the rank has finished."""
    def __init__(self, comm, log):
        self.comm, self.log = comm, log
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.latest = np.zeros((self.size, 3), dtype=np.int64)
        self.finished = set()
        self.request, self.last_sent = None, 0.0
        self.outgoing = np.zeros(4, dtype=np.int64)
        self.incoming = np.zeros(4, dtype=np.int64)

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
            if final:
                self.finished.add(0)
            return busy
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
    """Periodic test evaluation at one node; prints the progress line."""
    def __init__(self, cfg, run, node, log, progress, clock):
        self.cfg, self.node, self.log, self.progress, self.clock = cfg, node, log, progress, clock
        task_data = run["task_data"]
        self.test_x, self.test_y = task_data.test_x.to(node.device), task_data.test_y.to(node.device)
        self.next_time, self.model_bytes = 0.0, None

    def due(self):
        return self.clock() >= self.next_time

    def seconds_to_next(self):
        return max(0.0, self.next_time - self.clock())

    def __call__(self, params, model="node0", quiet=False):
        models.load_flat_params(self.node.model, params)
        loss, accuracy = models.evaluate(self.node.model, self.test_x, self.test_y)
        iterations, transfers, nbytes = (int(v) for v in self.progress.totals())
        self.log.write("eval", model=model, test_loss=loss, test_accuracy=accuracy,
                       iterations_seen=iterations, bytes_seen=nbytes)
        if not quiet:
            print(f"t {self.clock():7.1f}s | iterations {iterations:7d} | sent {nbytes / 1e6:9.1f} MB | "
                  f"test loss {loss:.4f} | test acc {accuracy:.4f}" + ("" if model == "node0" else f" ({model})"),
                  flush=True)
        self.next_time = self.clock() + self.cfg["eval_interval"]
        return loss, accuracy


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


def mw_communication(comm, cfg, queue, outbox, doorbell, pool, log, progress, stop):
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
        if stop.is_set() and not sending and not outbox:
            break
        if busy:
            backoff.reset()
        else:
            backoff.idle()
    for request in stop_requests or []:
        wait(request, backoff)
    progress.finish(backoff)


def run_mw(comm, cfg, run, node, log, clock, evaluator):
    rank, num_walks = comm.Get_rank(), cfg["walks"]
    graph, tau, seed = run["graph"], cfg["tau"], cfg["seed"]
    x0 = models.flatten_params(node.model)
    num_params = x0.numel()
    model_bytes = 4 * num_params
    pool = BufferPool(num_params, torch.float32, pin=node.device.type == "cuda")
    queue, outbox, stop = WalkQueue(), [], threading.Event()
    doorbell = Doorbell()  # rung with every outbox entry: the communication thread sends it at once
    aggregator = algorithms.Aggregator(x0, num_walks) if rank == 0 else None
    if rank < num_walks:  # walk r starts at node r, carrying x0
        buf = pool.get()
        buf.header[:] = torch.tensor([rank, 0])
        buf.params.copy_(x0)
        queue.put(rank, buf)
    progress = Progress(comm, log)
    if evaluator:
        evaluator.progress = progress
    comm_thread = threading.Thread(target=mw_communication, name="mpi",
                                   args=(comm, cfg, queue, outbox, doorbell, pool, log, progress, stop))
    comm_thread.start()
    final_walks = {}
    while not stop.is_set():
        if evaluator and evaluator.due():
            evaluator(aggregator.global_model)
        buf = queue.get(timeout=evaluator.seconds_to_next() if evaluator else 0.5)
        if buf is None:
            continue
        walk_id, visits = (int(v) for v in buf.header)
        budget = algorithms.walk_budget(cfg["max_iterations"], num_walks, walk_id)
        if clock() >= cfg["train_time"] or (budget is not None and visits >= budget):
            log.write("retire", walk=walk_id, visits=visits)
            if cfg["save_models"]:
                final_walks[walk_id] = buf.params.clone()
            pool.put(buf)
            outbox.append((0, TAG_RETIRED, np.array([walk_id], dtype=np.int64)))
            doorbell.ring()
            continue
        started = time.perf_counter()
        loss = algorithms.local_update(node, buf.params, tau, algorithms.lr_at(clock(), cfg))
        if rank == 0:
            algorithms.merge_at_aggregator(aggregator, walk_id, buf.params)
        if node.device.type == "cuda":
            torch.cuda.synchronize(node.device)
        log.update(time.perf_counter() - started, walk=walk_id, visit=visits, loss=round(loss, 6))
        nxt = algorithms.next_node(graph, rank, seed, walk_id, visits, cfg["laziness"])
        buf.header[1] = visits + 1
        if nxt == rank:
            log.self_loop(walk=walk_id)
            queue.put(walk_id, buf)
        else:
            log.transfer(nxt, model_bytes, walk=walk_id)
            outbox.append((nxt, TAG_WALK, buf))
            doorbell.ring()
    comm_thread.join()
    return (aggregator.global_model if rank == 0 else None), final_walks


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


def gossip_communication(comm, cfg, run, live, log, progress, compute_done, credits, model_bytes):
    rank = comm.Get_rank()
    graph, active_nodes = run["gossip"]
    neighbors = sorted(graph.neighbors(rank))
    sendbuf = ModelBuffer(live.params.numel(), torch.float32, pin=live.params.is_cuda)
    recvbuf = ModelBuffer(live.params.numel(), torch.float32, pin=live.params.is_cuda)
    backoff, status = Backoff(), MPI.Status()
    if rank in active_nodes:
        rng = np.random.default_rng([cfg["seed"], 1, rank])  # partner choices, independent of timing
        while not compute_done.is_set():
            if cfg["gossip_mode"] == "per_update" and not credits.acquire(timeout=0.05):
                progress.poll()
                continue
            partner = algorithms.gossip_partner(neighbors, rng)
            gossip_exchange_active(comm, live, partner, sendbuf, recvbuf, backoff, progress)
            log.exchange(partner)
            log.transfer(partner, model_bytes)
            progress.poll()
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
            elif not progress.poll():
                backoff.idle()
    progress.finish(backoff)


def run_gossip(comm, cfg, run, node, log, clock, evaluator):
    rank = comm.Get_rank()
    live = LiveModel(models.flatten_params(node.model))
    model_bytes = 4 * live.params.numel()
    budget = algorithms.walk_budget(cfg["max_iterations"], comm.Get_size(), rank)
    progress = Progress(comm, log)
    if evaluator:
        evaluator.progress = progress
    compute_done, credits = threading.Event(), threading.Semaphore(0)
    comm_thread = threading.Thread(target=gossip_communication, name="mpi",
                                   args=(comm, cfg, run, live, log, progress, compute_done, credits, model_bytes))
    comm_thread.start()
    updates = 0
    while clock() < cfg["train_time"] and (budget is None or updates < budget):
        if evaluator and evaluator.due():
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
        updates += 1
        credits.release()
    compute_done.set()
    comm_thread.join()
    return live.params


# -----------------------------------------------------------------------------

def train(comm, cfg, run):
    rank = comm.Get_rank()
    device = pick_device(cfg, comm)
    node = algorithms.make_node(cfg, run, rank, device)
    polite_barrier(comm)
    start = comm.bcast(time.time())  # one time origin for every rank's events
    clock = lambda: time.time() - start  # noqa: E731
    log = EventLog(os.path.join(cfg["out"], f"events-rank{rank}.jsonl"), clock)
    evaluator = Evaluator(cfg, run, node, log, None, clock) if rank == 0 else None
    if cfg["algorithm"] == "mw":
        final_model, final_walks = run_mw(comm, cfg, run, node, log, clock, evaluator)
    else:
        final_model, final_walks = run_gossip(comm, cfg, run, node, log, clock, evaluator), {}
    wall_time = clock()

    # after training: collectives only, the communication threads have finished
    polite_barrier(comm)
    network_average = None
    if cfg["algorithm"] == "gossip":
        total = final_model.detach().cpu().clone()
        comm.Allreduce(MPI.IN_PLACE, total.numpy(), op=MPI.SUM)
        network_average = total / comm.Get_size()
    if cfg["save_models"]:
        for walk_id, params in final_walks.items():
            torch.save(params, os.path.join(cfg["out"], f"walk{walk_id}.pt"))
    counters = comm.gather(dict(log.counters), root=0)
    if rank == 0:
        average_accuracy = None
        if network_average is not None:
            average_accuracy = evaluator(network_average, model="network_average")[1]
        loss, accuracy = evaluator(final_model)
        if cfg["save_models"]:
            torch.save(final_model.cpu(), os.path.join(cfg["out"], "model.pt"))
        totals = {key: sum(c[key] for c in counters) for key in COUNTERS}
        summary = dict(algorithm=cfg["algorithm"], nodes=comm.Get_size(), walks=cfg["walks"], graph=cfg["graph"],
                       tau=cfg["tau"], gossip_mode=cfg["gossip_mode"], task=cfg["task"],
                       model_bytes=4 * final_model.numel(), wall_time_s=wall_time,
                       final_test_accuracy=accuracy, final_test_loss=loss, **totals,
                       network_average_test_accuracy=average_accuracy, complete=True)
        with open(os.path.join(cfg["out"], "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(f"done in {wall_time:.1f}s: {totals['iterations']} local updates, {totals['transfers']} transfers, "
              f"{totals['bytes_sent'] / 1e6:.1f} MB sent, test accuracy {accuracy:.4f}", flush=True)
    log.close()
    polite_barrier(comm)
