"""
The asynchronous worker loops of Multi-Walk and Asynchronous Gossip over MPI
point-to-point messages, one rank per graph node.

Every rank runs two threads (MPI_THREAD_MULTIPLE):
  - the compute thread (the main thread) runs local updates, merges and evaluations
    by calling the rules in algorithms.py; under MW it also takes in and sends on the
    walks it serves, so a hop to an idle node wakes one thread;
  - the communication thread does every other MPI call during training: exchanges,
    walks that arrive while the compute thread is busy, a passive gossip node's
    replies, progress counters, checkpoints.
A model travels as one contiguous host buffer: a small int64 header followed by
the parameters, in fp32 or (--transfer-dtype bfloat16) bf16; averaging and merging
always run in fp32. CUDA models are staged through pinned host memory.
Idle threads sleep in the kernel until a rank on the same host that sends them a
message, or the rank's other thread, wakes them (Waker): no polling on shared cores.

What a node does (on a walk's arrival, after a local update, on an exchange, at a
failure time) is its protocol's (protocols.py), shared with the simulator; this
file only moves models and messages and keeps time.
Checkpoints (--checkpoint-every, --resume) are consistent cuts taken in rounds;
checkpoint.py describes the protocol, the engine pauses and saves when told.
"""
import contextlib
import copy
import os
import select
import socket
import threading
import time

import numpy as np
import torch
from mpi4py import MPI

from core import algorithms
from engine import checkpoint
from engine import faults
import models
import protocols
from engine import supervisor
from engine.agreement import polite_barrier
from simulation.engine_timing import mw_visit_delay
from core.events import (EVAL_METRICS, PROGRESS_HEADER, EventLog, progress_line, record_eval, write_final_summary,
                    write_summary)

TAG_WALK, TAG_RETIRED, TAG_STOP, TAG_EXCHANGE, TAG_REPLY, TAG_DONE, TAG_STATS, TAG_EVAL = range(1, 9)
HEADER_WORDS = 3       # walk messages: (walk_id, visits done, hops made); exchange messages: unused
STATS_PERIOD = 1.0     # seconds between progress counters sent to rank 0
POKED_PATIENCE = 5e-4  # seconds an idle compute thread, poked, probes for the walk announced


def cores_for_this_process():
    """CPU cores this process may use: its affinity, capped by a cgroup (v2) CPU quota (a container's limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            cores = min(cores, max(1.0, int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return cores


COMM, COMPUTE = 0, 1  # a rank's two threads; each sleeps on a socket of its own


class Waker:
    """How a rank's threads wait: asleep in the kernel, not polling, until they have work.
    Each thread sleeps on a datagram socket of its own; the rank's other thread (`ring`) and
    every rank on the same host that sends it an MPI message (`poke`) write a byte there. MPI
    cannot wake a sleeping thread, so messages from ranks that cannot poke (other hosts) are
    found by the communication thread polling, every `cap` seconds at most once idle. The cap
    is the waiting strategy, chosen from the cores per rank (each rank's start event says which):
      - every sender can poke: polls only for chores (progress counters, checkpoints), CHORES_CAP;
      - cores of its own (>= 2 per rank, a cluster node): polls other hosts every FAST_CAP;
      - oversubscribed cores: every SHARED_CAP, which bounds what idle ranks cost.
    The sockets live in Linux's abstract namespace (they vanish with the process); where there
    is none, only `ring` works."""
    CHORES_CAP, FAST_CAP, SHARED_CAP = 0.05, 1e-4, 1e-3

    def __init__(self, comm):
        rank, size = comm.Get_rank(), comm.Get_size()
        token = comm.bcast(f"{os.getpid()}-{time.time_ns()}" if rank == 0 else None)  # one name space per job
        self.names = [[f"\0multiwalk-{token}-{r}-{thread}".encode() for thread in (COMM, COMPUTE)] for r in range(size)]
        host = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local = host.allgather(rank)
        cores_per_rank = cores_for_this_process() / host.Get_size()
        host.Free()
        self.rank, self.sockets, self.ring_ends = rank, [], []
        for thread in (COMM, COMPUTE):
            sock, ring_end = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), None
            try:
                sock.bind(self.names[rank][thread])
            except OSError:  # no abstract namespace: a socket pair for this rank's own rings only
                sock, ring_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self.sockets.append(sock)
            self.ring_ends.append(ring_end)
        self.sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sender.setblocking(False)
        comm.Barrier()  # every rank has bound its sockets: try poking each rank on this host once
        self.pokable = {r for r in local if r != rank and self._send(r, COMM)}
        heard_from = comm.allgather(self.pokable)
        self.wait(0.0, COMM)
        everyone_pokes = all(rank in heard_from[r] for r in range(size) if r != rank)
        if everyone_pokes:
            self.cap, why = self.CHORES_CAP, "every peer wakes it"
        elif cores_per_rank >= 2:
            self.cap, why = self.FAST_CAP, f"{cores_per_rank:g} cores per rank"
        else:
            self.cap, why = self.SHARED_CAP, f"{cores_per_rank:g} cores per rank"
        self.strategy = (f"sleeps until woken ({len(self.pokable)} same-host peers can); polls MPI every "
                         f"{self.cap * 1e3:g} ms at most: {why}")

    def _send(self, dest, thread):
        try:
            if dest == self.rank and self.ring_ends[thread] is not None:
                self.ring_ends[thread].send(b"\0")
            else:
                self.sender.sendto(b"\0", self.names[dest][thread])
            return True
        except BlockingIOError:  # its socket is full of unread pokes: it is awake anyway
            return True
        except OSError:  # not bound where we can reach it: it polls for our messages
            return False

    def poke(self, dest, thread=COMM):
        """After sending rank `dest` a message for its `thread`: wake it if it sleeps (best effort)."""
        if dest in self.pokable:
            self._send(dest, thread)

    def ring(self, thread=COMM):
        """This rank's other thread has work for `thread`."""
        self._send(self.rank, thread)

    def wait(self, timeout, thread=COMM):
        """`thread` sleeps up to `timeout` s; True if a ring or a poke woke it."""
        sock = self.sockets[thread]
        readable, _, _ = select.select([sock], [], [], max(0.0, timeout))
        while True:  # every byte waiting: one wake-up answers them all
            try:
                sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return bool(readable)


class Backoff:
    """A thread's idle waits between polls: short right after activity, doubling while nothing
    happens, up to `cap` (default: the waker's). A poke or a ring ends the wait and starts short
    again, because MPI may need a few polls to show the message a poke announced."""
    def __init__(self, waker, clock=None, thread=COMM, cap=None, low=2e-5):
        self.waker, self.clock, self.thread, self.low, self.delay = waker, clock, thread, low, low
        self.cap = waker.cap if cap is None else cap

    def idle(self, until=None):
        """Wait; `until` (the clock's time, optional) ends the wait no later than then.
        Returns True if a poke or a ring ended it."""
        timeout = self.delay if until is None else min(self.delay, until - self.clock())
        woken = self.waker.wait(timeout, self.thread)
        self.delay = self.low if woken else min(self.delay * 2, self.cap)
        return woken

    def reset(self):
        """Something is due soon (a request to complete): short waits again."""
        self.delay = self.low

    def quiet(self):
        """Nothing is announced: wait long, until a poke or a ring (or the cap for chores)."""
        self.delay = self.cap


class ModelBuffer:
    """Host staging buffer of one model message: header, then the parameters."""
    def __init__(self, num_params, dtype, pin):
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.raw = torch.empty(HEADER_WORDS * 8 + num_params * itemsize, dtype=torch.uint8, pin_memory=pin)
        self.params = self.raw[HEADER_WORDS * 8:].view(dtype)
        self.mpi = self.raw.numpy()
        self.header = self.mpi[:HEADER_WORDS * 8].view(np.int64)


class BufferPool:
    """Reuses model buffers: at most one per walk waiting at this node. Both threads take from it."""
    def __init__(self, num_params, dtype, pin):
        self.args, self.free = (num_params, dtype, pin), []

    def get(self):
        try:
            return self.free.pop()
        except IndexError:
            return ModelBuffer(*self.args)

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
    def __init__(self, comm, log, waker):
        self.comm, self.log, self.waker = comm, log, waker
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.latest = np.zeros((self.size, 3), dtype=np.int64)
        self.finished = set()
        self.request, self.last_sent = None, 0.0
        self.outgoing = np.zeros(4, dtype=np.int64)
        self.incoming = np.zeros(4, dtype=np.int64)
        self.reported_evals = []       # rank 0: (metrics, node) that other nodes measured, to record
        self.evals, self.eval_requests = [], []  # other ranks: metrics to report, and their sends
        self.eval_incoming = np.zeros(len(EVAL_METRICS), dtype=np.float64)

    def post_eval(self, metrics):
        """Compute thread of a node that evaluates in rank 0's place; the communication thread sends it."""
        self.evals.append([metrics[key] for key in EVAL_METRICS])

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
                self.reported_evals.append((dict(zip(EVAL_METRICS, self.eval_incoming.tolist())), status.Get_source()))
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
            if final:  # rank 0 waits for it to end the run
                self.waker.poke(0)
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
    torch.set_num_threads(cpu_threads(local_size))
    return torch.device("cpu")


def cpu_threads(ranks_on_host):
    """Torch threads of a CPU rank: the ranks share the cores this process may use, and a full
    thread pool each would oversubscribe them."""
    return max(1, int(cores_for_this_process()) // ranks_on_host)


class Evaluator:
    """Periodic test evaluation at the node that evaluates: node 0, or after failures the
    node evaluation moved to (SEMANTICS.md §6). That node measures; rank 0 records every result
    (the eval event, the progress line, the provisional summary), so the curve stays in
    one log with rank 0's live totals. The evaluated model keeps the label "node0";
    the `node` field says where it was measured once that is not node 0."""
    def __init__(self, cfg, run, node, log, progress, clock):
        """progress: this rank's Progress (rank 0 reads the network's totals from it)."""
        self.cfg, self.node, self.log, self.progress, self.clock = cfg, node, log, progress, clock
        self.evaluate = algorithms.make_evaluate(cfg, run, node)
        self.next_time = 0.0
        # its own model copy: the periodic evaluation runs beside training, never in the node's model
        self.model = copy.deepcopy(node.model) if cfg["concurrent_eval"] else node.model
        self.snapshot, self.ready, self.idle = None, threading.Event(), threading.Event()
        self.idle.set()
        self.stream = torch.cuda.Stream(node.device) if node.device.type == "cuda" and cfg["concurrent_eval"] else None
        if cfg["concurrent_eval"]:
            threading.Thread(target=self.evaluate_snapshots, name="eval", daemon=True).start()

    def due(self):
        return self.clock() >= self.next_time

    def seconds_to_next(self):
        return max(0.0, self.next_time - self.clock())

    def measure(self, params, buffers=None):
        """The EVAL_METRICS of the flat parameters `params`, with the node's BatchNorm statistics
        (or `buffers`, a snapshot of them)."""
        if buffers is not None:
            for name, buffer in self.model.named_buffers():
                buffer.copy_(buffers[name])
        models.load_flat_params(self.model, params)
        return self.evaluate(self.model)

    def periodic(self, params):
        """Compute thread, when due: evaluate `params` (a copy the caller made) beside training, or
        here and now without --concurrent-eval. An evaluation still running when the next one is
        due makes the next one wait for the following interval."""
        self.next_time = self.clock() + self.cfg["eval_interval"]
        if not self.cfg["concurrent_eval"]:
            self.report(self.measure(params))
        elif self.idle.is_set():
            self.idle.clear()
            self.snapshot = (params, {name: b.detach().clone() for name, b in self.node.model.named_buffers()})
            self.ready.set()

    def evaluate_snapshots(self):
        try:
            while True:
                self.ready.wait()
                self.ready.clear()
                params, buffers = self.snapshot
                with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                    result = self.measure(params, buffers)
                self.report(result)
                self.idle.set()
        except BaseException as error:  # an evaluation that fails ends the job like any other thread's fault
            faults.end_on_fault(self.progress.comm, self.cfg, "eval", error)

    def drain(self):
        """Wait for a running evaluation to be recorded (before the final one)."""
        self.idle.wait()

    def report(self, metrics):
        if self.node.node_id == 0:
            self.record(metrics)
        else:
            self.progress.post_eval(metrics)

    def record(self, metrics, node=0, model="node0"):
        """Rank 0 only."""
        iterations, transfers, nbytes = (int(v) for v in self.progress.totals())
        record_eval(self.log, metrics, iterations, nbytes, model, node)
        print(progress_line(self.clock(), iterations, nbytes, metrics, model, node), flush=True)
        # a job killed from here on still leaves a readable summary, marked incomplete
        write_summary(self.cfg["out"], self.cfg, self.progress.size, wall_time_s=self.clock(), iterations=iterations,
                      transfers=transfers, bytes_sent=nbytes, complete=False,
                      **{f"last_{key}": value for key, value in metrics.items()})


# -----------------------------------------------------------------------------
# what one rank's threads share

class Rank:
    """One rank's context: its node, protocol, log, clock and helpers. `lock` serializes every
    call into the protocol between the compute and the communication thread; the compute
    thread of a gossip protocol also waits on it while an exchange must publish its update."""
    def __init__(self, comm, cfg, run, node, log, clock, resume, waker):
        self.comm, self.cfg, self.run, self.node, self.log, self.clock = comm, cfg, run, node, log, clock
        self.waker = waker
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        x0 = models.flatten_params(node.model)
        self.num_params = x0.numel()
        self.dtype, self.model_bytes = protocols.transfer_format(cfg, self.num_params)
        self.protocol = protocols.make_protocol(cfg, self.rank, run, x0, self.model_bytes, log,
                                                state=resume["protocol"] if resume else None)
        del x0  # the protocol holds its own copies; for OPT-125M this frees 0.5 GB
        self.lock = threading.Condition()
        self.stop = threading.Event()
        self.progress = Progress(comm, log, waker)
        # after failures another node evaluates, so every node can
        self.evaluator = (Evaluator(cfg, run, node, log, self.progress, clock)
                          if self.rank == 0 or cfg["failure_times"] else None)
        self.ckpt = checkpoint.Checkpointer(comm, cfg, clock, self.save_state, resume)
        if resume:
            checkpoint.restore_common(resume, node, log, self.evaluator)
        self.comm_thread, self.interrupted = None, None
        self.longest_update, self.injection = 0.0, faults.Injection(self.rank)

    def start_communication(self, target, *args):
        """The communication thread: it beats for the stall watchdog while it runs, an exception in
        it ends the job, and an interrupt ends it quietly (the compute thread stops the run)."""
        def run():
            supervisor.HEARTBEAT.beat()
            try:
                target(self, *args)
            except faults.Interrupted:
                pass
            except BaseException as error:
                faults.end_on_fault(self.comm, self.cfg, "mpi", error)
            finally:
                supervisor.HEARTBEAT.silent()
        self.comm_thread = threading.Thread(target=run, name="mpi", daemon=True)
        self.comm_thread.start()
        return self.comm_thread

    def halt(self, interrupted):
        """Compute thread, on an interrupt: stop the communication thread at its next poll."""
        self.interrupted = interrupted
        self.stop.set()
        if self.comm_thread is not None:
            self.comm_thread.join(timeout=faults.REPORT_TIMEOUT)

    def save_state(self):
        """The communication thread calls this while the compute thread is paused."""
        with self.lock:
            return dict(checkpoint.common_state(self.node, self.log, self.evaluator),
                        protocol=self.protocol.state_dict())

    def poll(self):
        """The communication thread's chores between messages: progress counters, evaluations
        measured elsewhere, failure events, faults other ranks report to rank 0.
        Returns True if it did something."""
        supervisor.HEARTBEAT.beat()
        self.injection.point("mpi")
        if self.interrupted:
            raise faults.Interrupted(self.interrupted.signum)
        busy = self.progress.poll()
        if self.rank == 0:
            busy |= faults.receive_fault(self.comm, self.cfg)
        for metrics, node in self.progress.reported_evals:
            self.evaluator.record(metrics, node=node)
        self.progress.reported_evals.clear()
        # no lock: only this thread touches the failure schedule (checkpoints save it from here too)
        failed = self.protocol.failures.passed(self.clock(), self.log)
        if self.rank == 0:
            for node in failed:
                print(f"{self.clock():8.1f}s | failure: node {node} fails as scheduled"
                      + (f"; node {node + 1} is the aggregator now" if self.protocol.kind == "walks" else ""),
                      flush=True)
        return busy

    def evaluate_if_due(self):
        """Compute thread: evaluate the protocol's evaluated model if this node holds it and it is time.
        Returns the seconds until the next evaluation here (inf if this node does not evaluate now)."""
        if self.evaluator is None:
            return float("inf")
        with self.lock:
            model = self.protocol.evaluated_model(self.clock())
            snapshot = model.clone() if model is not None and self.evaluator.due() else None
        if snapshot is not None:
            self.evaluator.periodic(snapshot)
        return self.evaluator.seconds_to_next() if model is not None else float("inf")

    def local_update(self, params, lr):
        """tau local steps on `params` (in place); returns (loss, seconds it took)."""
        started = time.perf_counter()
        supervisor.HEARTBEAT.update_started(self.longest_update)
        self.injection.point("compute")
        loss = algorithms.local_update(self.node, params, self.cfg["tau"], lr)
        if self.node.device.type == "cuda":
            torch.cuda.synchronize(self.node.device)
        supervisor.HEARTBEAT.update_ended()
        duration = time.perf_counter() - started
        if self.rank == 0 and not self.longest_update:  # the last start-up phase: training runs
            print(f"[start] first local update done: {duration * 1000:.0f} ms "
                  f"({time.time() - self.run['started']:.1f} s)", flush=True)
        self.longest_update = max(self.longest_update, duration)
        return loss, duration


# -----------------------------------------------------------------------------
# walk protocols (Multi-Walk)

def receive_walks(rank, pool, patience=0.0):
    """Every walk message waiting for this rank, into the protocol's queue; True if there was one.
    The communication thread calls it always, the compute thread when it has nothing to do (so a
    hop to an idle node wakes one thread, not two); a matched probe gives a message to one of them.
    `patience`: seconds to keep probing for a first one, which a poke has announced (MPI can take
    a few probes to show it; a probe costs microseconds, a sleep and a wake-up tens of them)."""
    received, give_up = False, time.perf_counter() + patience
    while True:
        message = rank.comm.Improbe(MPI.ANY_SOURCE, TAG_WALK)
        if message is None:
            if received or time.perf_counter() >= give_up:
                return received
            continue
        buf = pool.get()
        message.Recv(buf.mpi)
        walk_id, visits, hops = buf.header.tolist()
        with rank.lock:
            rank.protocol.arrive(protocols.Walk(walk_id, visits, hops, buf.params, carrier=buf))
        received = True


def complete_sends(sending, pool):
    """The compute thread's walk sends that have completed: their buffers go back to the pool."""
    under_way = []
    for request, buf in sending:
        if request.Test():
            pool.put(buf)
        else:
            under_way.append((request, buf))
    sending[:] = under_way


def walk_communication(rank, retired_here, pool):
    """Takes in walks that arrive while the compute thread computes, and does the chores; rank 0
    also counts retired walks and ends the run."""
    comm, protocol, stop = rank.comm, rank.protocol, rank.stop
    status, backoff = MPI.Status(), Backoff(rank.waker)
    stop_requests = None
    notice = np.zeros(1, dtype=np.int64)
    while True:
        busy, retired = False, 0
        if receive_walks(rank, pool):
            rank.waker.ring(COMPUTE)  # it may be asleep waiting for one
            busy = True
        if rank.rank == 0:
            while retired_here:
                retired_here.pop()
                retired += 1
            while comm.Iprobe(MPI.ANY_SOURCE, TAG_RETIRED, status):
                comm.Recv(notice, status.Get_source(), TAG_RETIRED)
                retired += 1
                busy = True
            if retired:
                with rank.lock:
                    over = any([protocol.walk_retired() for _ in range(retired)])
                if over:
                    # every walk has retired, so no walk message is in flight: safe to stop everyone
                    stop_requests = [comm.Isend(notice, dest, TAG_STOP) for dest in range(1, rank.size)]
                    for dest in range(1, rank.size):
                        rank.waker.poke(dest)
                    stop.set()
        elif comm.Iprobe(0, TAG_STOP, status):
            comm.Recv(notice, 0, TAG_STOP)
            stop.set()
        if stop.is_set():
            rank.waker.ring(COMPUTE)  # it stops too
        busy |= rank.poll()
        if rank.ckpt.every and not stop.is_set():  # a stopped run takes no checkpoint
            with rank.lock:
                parked, unretired = protocol.parked(), protocol.unretired()
            busy |= rank.ckpt.poll(parked=parked, unretired=unretired)
        if stop.is_set():
            break
        if busy:
            backoff.reset()
        else:
            backoff.idle()
    for request in stop_requests or []:
        wait(request, backoff)
    rank.progress.finish(backoff)


def run_walks(rank):
    """A walk protocol at this rank: the compute thread serves the walks the protocol hands it and
    sends them on itself; a walk travels in its MPI buffer (`carrier`), header (walk id, visits,
    hops) and model. MPI_THREAD_MULTIPLE: both threads call MPI."""
    comm, protocol, node, ckpt, stop = rank.comm, rank.protocol, rank.node, rank.ckpt, rank.stop
    pool = BufferPool(rank.num_params, rank.dtype, pin=node.device.type == "cuda")
    for walk in protocol.walks_here():  # x0 or a checkpoint's walks: from now on they live in buffers
        buf = pool.get()
        buf.params.copy_(walk.params)
        walk.params, walk.carrier = buf.params, buf
    sending, retired_here = [], []  # this thread's walk sends under way; rank 0's own retirements
    retired_notice = np.zeros(1, dtype=np.int64)
    # idle, it looks for walks itself; one from another host is found by the communication thread, which rings
    backoff = Backoff(rank.waker, rank.clock, COMPUTE, cap=Waker.CHORES_CAP)
    comm_thread = rank.start_communication(walk_communication, retired_here, pool)
    visit_delay = mw_visit_delay(rank.cfg)  # 0 unless --mw-visit-delay authors: their polls' cost per visit
    while not stop.is_set():
        if ckpt.due():
            ckpt.pause(stop)  # walks arriving meanwhile stay parked in the protocol's queue
            continue
        until_eval = rank.evaluate_if_due()
        with rank.lock:
            step = protocol.next_visit(rank.clock())
        complete_sends(sending, pool)
        if step is None:
            if receive_walks(rank, pool):
                backoff.quiet()  # another walk will poke
            elif backoff.idle(until=rank.clock() + min(until_eval, ckpt.seconds_to_next())):
                receive_walks(rank, pool, patience=POKED_PATIENCE)
            continue
        action, walk, detail = step
        if action == protocols.COMPUTE:
            loss, duration = rank.local_update(walk.params, detail)
            if visit_delay:
                time.sleep(visit_delay)
            with rank.lock:
                step = protocol.after_update(walk, loss, duration, rank.clock())
            if step is None:  # it stays here
                continue
            action, walk, detail = step
        if action == protocols.RETIRE:
            pool.put(walk.carrier)
            if rank.rank == 0:
                retired_here.append(walk.walk_id)
                rank.waker.ring()
            else:  # an 8-byte message: sent at once, so the buffer may be reused
                comm.Send(retired_notice, 0, TAG_RETIRED)
                rank.waker.poke(0)
        else:  # SEND to node `detail`
            walk.carrier.header[:] = (walk.walk_id, walk.visits, walk.hops)
            sending.append((comm.Isend(walk.carrier.mpi, detail, TAG_WALK), walk.carrier))
            rank.waker.poke(detail, COMPUTE)  # its compute thread takes walks in when idle
    while sending:  # every walk has retired, so these have been received
        complete_sends(sending, pool)
        backoff.idle()
    comm_thread.join()


# -----------------------------------------------------------------------------
# gossip protocols (Asynchronous Gossip)

def gossip_exchange_active(rank, partner, sendbuf, recvbuf, backoff):
    """Swap models with a passive neighbour and average."""
    comm, protocol = rank.comm, rank.protocol
    with rank.lock:
        sendbuf.params.copy_(protocol.model_to_send())  # sendbuf keeps the model sent until the average below
    recv_request = comm.Irecv(recvbuf.mpi, partner, TAG_REPLY)
    send_request = comm.Isend(sendbuf.mpi, partner, TAG_EXCHANGE)
    rank.waker.poke(partner)
    wait(send_request, backoff, rank.poll)
    wait(recv_request, backoff, rank.poll)
    with rank.lock:
        protocol.active_average(partner, sendbuf.params, recvbuf.params)


def gossip_communication(rank, compute_done):
    """Exchanges, as the protocol asks: an active node starts them and, once its part is over,
    tells its neighbours (DONE); a passive node serves them until every active neighbour has
    said DONE. A failed passive node still answers the exchanges already in flight to it:
    the active partner waits for the reply, and no new request can come."""
    comm, protocol = rank.comm, rank.protocol
    pin = rank.node.device.type == "cuda"
    sendbuf, recvbuf = ModelBuffer(rank.num_params, rank.dtype, pin), ModelBuffer(rank.num_params, rank.dtype, pin)
    backoff, status = Backoff(rank.waker, rank.clock), MPI.Status()
    done = np.zeros(1, dtype=np.int64)
    if protocol.active:
        while True:
            busy = rank.poll() | rank.ckpt.poll()
            if rank.ckpt.due():  # a checkpoint round: no new exchange
                if not busy:
                    backoff.idle()
                continue
            with rank.lock:
                action, detail = protocol.next_exchange(rank.clock())
                rank.lock.notify_all()  # starting an exchange may have freed a blocked compute
            if action == protocols.OVER:
                requests = [comm.Isend(done, j, TAG_DONE) for j in detail]
                for j in detail:
                    rank.waker.poke(j)
                for request in requests:
                    wait(request, backoff, rank.poll)
                break
            if action == protocols.WAIT:  # until a pacing time, or the next local update (which rings)
                if not busy:
                    backoff.idle(until=detail)
                continue
            gossip_exchange_active(rank, detail, sendbuf, recvbuf, backoff)
            backoff.quiet()
    else:
        serving = True
        while serving:
            if comm.Iprobe(MPI.ANY_SOURCE, TAG_EXCHANGE, status):
                partner = status.Get_source()
                comm.Recv(recvbuf.mpi, partner, TAG_EXCHANGE)
                with rank.lock:
                    sendbuf.params.copy_(protocol.model_to_send())
                reply = comm.Isend(sendbuf.mpi, partner, TAG_REPLY)
                rank.waker.poke(partner)
                wait(reply, backoff, rank.poll)
                with rank.lock:
                    protocol.passive_average(partner, sendbuf.params, recvbuf.params)
                    rank.lock.notify_all()  # the exchange consumed the pending delta: a blocked compute goes on
                backoff.quiet()  # the next request will poke
            elif comm.Iprobe(MPI.ANY_SOURCE, TAG_DONE, status):
                comm.Recv(done, status.Get_source(), TAG_DONE)
                with rank.lock:
                    serving = not protocol.neighbour_over(status.Get_source())
                    rank.lock.notify_all()
            elif not (rank.poll() | rank.ckpt.poll()):
                backoff.idle()
    gossip_finish(rank, compute_done, backoff)


def gossip_finish(rank, compute_done, backoff):
    """Once this rank's part is over (no exchange left to serve, and no update left: a passive
    node can be done serving before it is done computing), it tells rank 0, then keeps taking
    part in checkpoint rounds, which still need its state, until rank 0 has heard from every
    rank and sends STOP."""
    comm, progress, ckpt = rank.comm, rank.progress, rank.ckpt
    notice = np.zeros(1, dtype=np.int64)
    while not compute_done.is_set():
        if not (rank.poll() | ckpt.poll()):
            backoff.idle()
    if rank.rank == 0:
        progress.poll(final=True)
        while len(progress.finished) < rank.size or ckpt.saving:
            if not (rank.poll() | ckpt.poll()):
                backoff.idle()
        requests = [comm.Isend(notice, dest, TAG_STOP) for dest in range(1, rank.size)]
        for dest in range(1, rank.size):
            rank.waker.poke(dest)
        for request in requests:
            wait(request, backoff)
        return
    progress.finish(backoff)
    while not comm.Iprobe(0, TAG_STOP):
        rank.poll()
        if not ckpt.poll():
            backoff.idle()
    comm.Recv(notice, 0, TAG_STOP)


def run_gossip(rank):
    """A gossip protocol at this rank: the compute thread runs local updates back to back while
    the communication thread exchanges. Returns whether this node is still alive (not failed)."""
    protocol, ckpt = rank.protocol, rank.ckpt
    compute_done = threading.Event()
    comm_thread = rank.start_communication(gossip_communication, compute_done)
    while True:
        if ckpt.due():
            ckpt.pause()
            continue
        rank.evaluate_if_due()
        with rank.lock:
            start = protocol.begin_update(rank.clock())
            if start is protocols.BLOCKED:  # an exchange will publish the waiting delta
                rank.lock.wait(0.05)
                continue
        if start is None:
            break
        before, lr = start
        after = before.clone()
        loss, duration = rank.local_update(after, lr)
        with rank.lock:
            protocol.after_update(before, after, loss, duration, rank.clock())
        rank.waker.ring()  # a per_update exchange may start now
    alive = not protocol.failed(rank.clock())
    ckpt.compute_finished()
    compute_done.set()
    rank.waker.ring()
    comm_thread.join()
    return alive


# -----------------------------------------------------------------------------

def train(comm, cfg, run):
    """This rank's run, to its end. An uncaught exception or an interrupt ends it here, never in
    a hang (faults.py); a stalled rank is named by its supervisor (supervisor.py)."""
    try:
        rank = start_rank(comm, cfg, run)
        faults.stop_on_signals()
        train_rank(rank)
    except faults.Interrupted as interrupted:
        rank.halt(interrupted)
        faults.stop_on_interrupt(comm, cfg, rank.log, rank.clock, interrupted)
    except BaseException as error:
        faults.end_on_fault(comm, cfg, "compute", error)


def start_rank(comm, cfg, run):
    rank_id = comm.Get_rank()
    device = pick_device(cfg, comm)
    node = algorithms.make_node(cfg, run, rank_id, device)
    if rank_id == 0:
        print(f"[start] model built: {models.num_params(node.model):,} parameters on {device} "
              f"({time.time() - run['started']:.1f} s)", flush=True)
    resume = run.get("resume")  # this rank's checkpoint (main.py loads it for --resume)
    polite_barrier(comm)
    waker = Waker(comm)
    faults.wake_rank0 = lambda: waker.poke(0)  # a fault report is taken at once, not at rank 0's next chores
    if rank_id == 0:
        print(f"[start] waiting: the communication thread {waker.strategy}", flush=True)
    elapsed = resume["meta"]["elapsed"] if resume else 0.0
    start = comm.bcast(time.time() - elapsed)  # one time origin for every rank's events; a resumed clock goes on
    clock = lambda: time.time() - start  # noqa: E731
    log = EventLog(os.path.join(cfg["out"], f"events-rank{rank_id}.jsonl"), clock,
                   resume_at=resume["log_offset"] if resume else None)
    # the pid maps the launcher's "BAD TERMINATION ... PID" line to a rank
    log.write("start", pid=os.getpid(), host=socket.gethostname(), waiting=waker.strategy,
              **(dict(resumed_at=elapsed) if resume else {}))
    rank = Rank(comm, cfg, run, node, log, clock, resume, waker)
    if rank_id == 0:
        write_summary(cfg["out"], cfg, comm.Get_size(), wall_time_s=clock(), complete=False)
        print(PROGRESS_HEADER, flush=True)
    supervisor.HEARTBEAT.watch(cfg["stall_timeout"])
    return rank


def train_rank(rank):
    comm, cfg, log, clock, rank_id = rank.comm, rank.cfg, rank.log, rank.clock, rank.rank
    # ranks end training at different times: waiting here, not in a blocking collective, keeps them interruptible
    if rank.protocol.kind == "walks":
        run_walks(rank)
        polite_barrier(comm)
        holds = comm.allgather(rank.protocol.final_model() is not None)
        holder = max(r for r, has in enumerate(holds) if has)  # the last node that held the aggregator role
    else:
        alive = run_gossip(rank)
        polite_barrier(comm)
        holder = comm.allgather(alive).index(True)  # the lowest-numbered live node
    wall_time = clock()
    final_model, evaluator = rank.protocol.final_model(), rank.evaluator
    if evaluator is not None:
        evaluator.drain()

    # after training: collectives only, the communication threads have finished
    network_average = None
    if rank.protocol.kind == "gossip":  # over the live nodes: a failed node's model is frozen, not part of the network
        total = final_model.detach().cpu().clone() * alive
        comm.Allreduce(MPI.IN_PLACE, total.numpy(), op=MPI.SUM)
        network_average = total / comm.allreduce(int(alive))
    if cfg["save_models"]:
        for walk_id, params in getattr(rank.protocol, "final_walks", {}).items():
            torch.save(params, os.path.join(cfg["out"], f"walk{walk_id}.pt"))
    final = None
    if rank_id == holder:
        final = evaluator.measure(final_model)
        if cfg["save_models"]:
            torch.save(final_model.cpu(), os.path.join(cfg["out"], "model.pt"))
    polite_barrier(comm)  # the others wait interruptibly while the holder evaluates
    final = comm.bcast(final, root=holder)
    counters = comm.gather(dict(log.counters), root=0)
    if rank_id == 0:
        average = None
        if network_average is not None:
            average = evaluator.measure(network_average)
            evaluator.record(average, model="network_average")
        evaluator.record(final, node=holder)
        write_final_summary(cfg["out"], cfg, counters, "mpi", rank.model_bytes, wall_time, final, average,
                            active_nodes=rank.run["gossip"][1] if rank.run["gossip"] else None, evaluated_node=holder)
        faults.stop_on_signals(active=False)  # the run is complete: a stop now has nothing to save
    log.close()
    polite_barrier(comm)
