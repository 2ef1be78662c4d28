"""
The asynchronous worker loops of Multi-Walk and Asynchronous Gossip over MPI
point-to-point messages, one rank per graph node: the walk driver, the gossip
driver, and a rank's start and end.

Every rank runs two threads (MPI_THREAD_MULTIPLE):
  - the compute thread (the main thread) runs local updates, merges and evaluations
    by calling the rules in algorithms.py; under MW it also takes in and sends on the
    walks it serves, so a hop to an idle node wakes one thread;
  - the communication thread does every other MPI call during training: exchanges,
    walks that arrive while the compute thread is busy, a passive gossip node's
    replies, progress counters, checkpoints.
A model travels as one contiguous host buffer (engine/wire.py, with every MPI tag);
averaging and merging always run in fp32. Idle threads sleep in the kernel until
a rank on the same host that sends them a message, or the rank's other thread,
wakes them (engine/waker.py): no polling on shared cores.

What a node does (on a walk's arrival, after a local update, on an exchange, at a
failure time, at the end of the run) is its protocol's (protocols.py), shared with
the simulator; this file only moves models and messages and keeps time, and picks
the driver loop the protocol names (`driver`).
The rest of the MPI machinery is under engine/: the rank's context (rank.py),
progress counters (progress.py), evaluation (evaluator.py), cores and devices
(cores.py), checkpoints (checkpoint.py, consistent cuts taken in rounds: the
engine pauses and saves when told), faults and signals (faults.py), the stall
supervisor (supervisor.py).
"""
import os
import socket
import threading
import time

import numpy as np
import torch
from mpi4py import MPI

from core import algorithms
from core.events import HOLD, PROGRESS_HEADER, EventLog, write_final_summary, write_summary
from engine import faults
from engine import supervisor
from engine.agreement import polite_barrier
from engine.cores import pick_device
from engine.rank import Rank
from engine.waker import COMPUTE, Backoff, Waker, wait
from engine.wire import TAG_DONE, TAG_EXCHANGE, TAG_REPLY, TAG_RETIRED, TAG_STOP, TAG_WALK, BufferPool, ModelBuffer
import models
import protocols
from simulation.engine_timing import mw_visit_delay

# an idle compute thread that expects a walk (its sender's note) probes MPI for it from LANDING_LEAD
# seconds before its expected landing until LANDING_LATE after: a probe costs microseconds, a sleep and
# the wake-up after the walk has landed tens to hundreds of them (a cold thread on a shared core)
LANDING_LEAD, LANDING_LATE = 5e-4, 1e-3  # a timed wake-up can be 0.1-0.5 ms late on a virtual machine

# -----------------------------------------------------------------------------
# walk protocols (Multi-Walk)

def receive_walks(rank, pool, patience=0.0):
    """Every walk message waiting for this rank, into the protocol's queue; True if there was one.
    The communication thread calls it always, the compute thread when it has nothing to do (so a
    hop to an idle node wakes one thread, not two); a matched probe gives a message to one of them.
    `patience`: seconds to keep probing for a first one, which a walk's note has announced."""
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
        rank.waker.took_walk(walk_id, hops)
        with rank.lock:
            rank.protocol.arrive(protocols.Walk(walk_id, visits, hops, buf.params, carrier=buf))
        received = True


def await_walk(rank, pool, wake_in):
    """The compute thread with nothing to do: if a walk's note says it lands about now, probe for it;
    otherwise sleep until a note, a ring (the communication thread took a walk in from another host, or
    the run stops) or `wake_in` seconds (the next chore), and probe at once if the note woke it for a
    walk that has landed. A walk noted to land later is slept for, and its next hop drawn meanwhile."""
    for woken in (False, True):
        now = time.perf_counter()
        landing = rank.waker.walk_landing(now, LANDING_LATE)
        if landing is not None:
            lands_at, walk_id, hops = landing
            if now >= lands_at - LANDING_LEAD:
                receive_walks(rank, pool, patience=lands_at + LANDING_LATE - now)
                return
            if not woken:
                with rank.lock:  # where it goes next: drawn now, off the hop's path
                    rank.protocol.next_node(walk_id, hops)
                wake_in = min(wake_in, lands_at - LANDING_LEAD - now)
        if woken or not rank.waker.wait(wake_in, COMPUTE):
            return


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
    hops) and model. MPI_THREAD_MULTIPLE: both threads call MPI. Returns the time it stopped."""
    comm, protocol, node, ckpt, stop = rank.comm, rank.protocol, rank.node, rank.ckpt, rank.stop
    pool = BufferPool(rank.num_params, rank.dtype, pin=node.device.type == "cuda")
    for walk in protocol.walks_here():  # x0 or a checkpoint's walks: from now on they live in buffers
        buf = pool.get()
        buf.params.copy_(walk.params)
        walk.params, walk.carrier = buf.params, buf
    sending, retired_here = [], []  # this thread's walk sends under way; rank 0's own retirements
    retired_notice = np.zeros(1, dtype=np.int64)
    comm_thread = rank.start_communication(walk_communication, retired_here, pool)
    visit_delay = mw_visit_delay(rank.cfg)  # 0 unless --mw-visit-delay authors: their polls' cost per visit
    update_time = 0.0  # this rank's last local update: when a walk noted at an update's start should land
    while not stop.is_set():
        if ckpt.due():
            ckpt.pause(stop)  # walks arriving meanwhile stay parked in the protocol's queue
            continue
        until_eval = rank.evaluate_if_due()
        with rank.lock:
            step = protocol.next_visit(rank.clock())
        complete_sends(sending, pool)
        if step is None:
            if not receive_walks(rank, pool):
                await_walk(rank, pool, min(until_eval, ckpt.seconds_to_next(), Waker.CHORES_CAP))
            continue
        if isinstance(step, protocols.Compute):
            if step.leaves_to is not None and rank.waker.early_notes:  # arriving with the hop after_update counts
                rank.waker.note_walk(step.leaves_to, step.walk.walk_id, step.walk.hops + 1,
                                     time.perf_counter() + update_time + visit_delay)
            loss, duration = rank.local_update(step.walk.params, step.lr)
            update_time = duration
            ended = rank.clock()  # the update's own end: its event's time, whatever the lock and the delay add
            if visit_delay:
                time.sleep(visit_delay)
            with rank.lock:
                step = protocol.after_update(step.walk, loss, duration, ended)
            if step is None:  # it stays here
                continue
        walk = step.walk
        if isinstance(step, protocols.Retire):
            pool.put(walk.carrier)
            if rank.rank == 0:
                retired_here.append(walk.walk_id)
                rank.waker.ring()
            else:  # an 8-byte message: sent at once, so the buffer may be reused
                comm.Send(retired_notice, 0, TAG_RETIRED)
                rank.waker.poke(0)
        else:  # Send
            walk.carrier.header[:] = (walk.walk_id, walk.visits, walk.hops)
            sending.append((comm.Isend(walk.carrier.mpi, step.dest, TAG_WALK), walk.carrier))
            rank.waker.note_walk(step.dest, walk.walk_id, walk.hops, time.perf_counter())  # its compute thread takes it in
    ended = rank.clock()
    backoff = Backoff(rank.waker, thread=COMPUTE)
    while sending:  # every walk has retired, so these have been received
        complete_sends(sending, pool)
        backoff.idle()
    comm_thread.join()
    return ended


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
                step = protocol.next_exchange(rank.clock())
                rank.notify_if(isinstance(step, protocols.Exchange) and step.frees_compute)
            if isinstance(step, protocols.Over):
                requests = [comm.Isend(done, j, TAG_DONE) for j in step.neighbours]
                for j in step.neighbours:
                    rank.waker.poke(j)
                for request in requests:
                    wait(request, backoff, rank.poll)
                break
            if isinstance(step, protocols.Wait):  # until a pacing time, or the next local update (which rings)
                if not busy:
                    backoff.idle(until=step.until)
                continue
            gossip_exchange_active(rank, step.partner, sendbuf, recvbuf, backoff)
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
                    rank.notify_if(protocol.passive_average(partner, sendbuf.params, recvbuf.params, rank.clock()))
                backoff.quiet()  # the next request will poke
            elif comm.Iprobe(MPI.ANY_SOURCE, TAG_DONE, status):
                comm.Recv(done, status.Get_source(), TAG_DONE)
                with rank.lock:
                    rank.notify_if(protocol.neighbour_over(status.Get_source(), rank.clock()))
                    serving = not protocol.serving_over()
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
    the communication thread exchanges. A blocked compute waits on the rank's condition until
    the communication thread reports an event the protocol says frees it, or until it is time
    to evaluate or to join a checkpoint round. Returns the time its updates ended."""
    protocol, ckpt = rank.protocol, rank.ckpt
    compute_done = threading.Event()
    comm_thread = rank.start_communication(gossip_communication, compute_done)
    while True:
        if ckpt.due():
            ckpt.pause()
            continue
        until_eval = rank.evaluate_if_due()
        with rank.lock:
            start = protocol.begin_update(rank.clock())
            if isinstance(start, protocols.Blocked):
                timeout = min(until_eval, ckpt.seconds_to_next())
                rank.lock.wait(None if timeout == float("inf") else timeout)
                continue
        if start is None:
            break
        after = start.model.clone()
        loss, duration = rank.local_update(after, start.lr)
        ended = rank.clock()  # the update's own end: its event's time, whatever the lock wait adds
        with rank.lock:
            protocol.after_update(start.model, after, loss, duration, ended)
        rank.waker.ring()  # a per_update exchange may start now
    ended = rank.clock()
    ckpt.compute_finished()
    compute_done.set()
    rank.waker.ring()
    comm_thread.join()
    return ended


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
                   resume_at=resume["log_offset"] if resume else None, hold=HOLD)  # hot-path lines wait up to 50 ms
    # the pid maps the launcher's "BAD TERMINATION ... PID" line to a rank
    log.write("start", pid=os.getpid(), host=socket.gethostname(), waiting=waker.strategy,
              **(dict(resumed_at=elapsed) if resume else {}))
    rank = Rank(comm, cfg, run, node, log, clock, resume, waker)
    if rank_id == 0:
        write_summary(cfg["out"], cfg, comm.Get_size(), wall_time_s=clock(), complete=False)
        print(PROGRESS_HEADER, flush=True)
    supervisor.HEARTBEAT.watch(cfg["stall_timeout"], cfg["out"])
    return rank


DRIVERS = dict(walks=run_walks, gossip=run_gossip)  # the driver loop of each protocol family (protocol.driver)


def train_rank(rank):
    comm, cfg, log, clock, rank_id, protocol = rank.comm, rank.cfg, rank.log, rank.clock, rank.rank, rank.protocol
    ended = DRIVERS[protocol.driver](rank)
    # ranks end training at different times: waiting here, not in a blocking collective, keeps them interruptible
    polite_barrier(comm)
    # the end of the run, as the protocol says: the final model's holder, the network average, the saved models
    holds = protocol.holds_final_model(ended)
    holder = protocol.final_holder([r for r, has in enumerate(comm.allgather(holds)) if has])
    wall_time = clock()
    final_model, evaluator = protocol.final_model(), rank.evaluator
    if evaluator is not None:
        evaluator.drain()

    # after training: collectives only, the communication threads have finished
    network_average = None
    if protocol.averages_network:  # over the nodes that hold a final model
        total = final_model.detach().cpu().clone() * holds
        comm.Allreduce(MPI.IN_PLACE, total.numpy(), op=MPI.SUM)
        network_average = total / comm.allreduce(int(holds))
    if cfg["save_models"]:
        for name, params in protocol.saved_models().items():
            torch.save(params, os.path.join(cfg["out"], name))
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
                            active_nodes=rank.run["gossip"][1] if rank.run["gossip"] else None, evaluated_node=holder,
                            diverged=evaluator.diverged)
        faults.stop_on_signals(active=False)  # the run is complete: a stop now has nothing to save
    log.close()
    polite_barrier(comm)
