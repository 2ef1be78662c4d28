"""
How a rank's threads wait (Waker): asleep in the kernel, not polling, until they have work;
their idle waits between polls (Backoff); completing a nonblocking MPI request without
spinning a core (wait).
"""
import os
import select
import socket
import struct
import threading
import time

from mpi4py import MPI

from engine.cores import cores_for_this_process

COMM, COMPUTE = 0, 1  # a rank's two threads; each sleeps on a socket of its own
# a walk's note to the compute thread of the rank it goes to: walk id, the hops it arrives with, and
# when it lands there (time.perf_counter: one clock for the processes of a host, and notes stay on one)
WALK_NOTE = struct.Struct("<qqd")


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
    is none, only `ring` works.
    A walk's sender also notes it (`note_walk`) to the compute thread it goes to once sent, and, where
    every rank has a core of its own (`early_notes`), once more when its update starts (when it should
    land: the update's expected end). The compute thread reads the notes as it wakes and asks
    `walk_landing` when to be awake for the next walk, so it can probe as the walk lands instead of
    sleeping through the transfer and waking after it. On oversubscribed cores that probing would take
    the core from a rank computing, so there the sent note alone wakes it. Walks it has taken in
    (`took_walk`) make their later notes stale: ignored."""
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
        # walk id -> (hops, when it lands) of the walks noted to the compute thread and not yet taken in;
        # walk id -> the hops of the last one taken in. Both threads take walks in: a lock of their own
        self.walks_noted, self.walks_taken, self.walk_lock = {}, {}, threading.Lock()
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
        self.early_notes = cores_per_rank >= 1
        self.strategy = (f"sleeps until woken ({len(self.pokable)} same-host peers can); polls MPI every "
                         f"{self.cap * 1e3:g} ms at most: {why}; "
                         f"{'awake as a walk lands' if self.early_notes else 'woken once a walk is sent'}")

    def _send(self, dest, thread, message=b"\0"):
        try:
            if dest == self.rank and self.ring_ends[thread] is not None:
                self.ring_ends[thread].send(message)
            else:
                self.sender.sendto(message, self.names[dest][thread])
            return True
        except BlockingIOError:  # its socket is full of unread pokes: it is awake anyway
            return True
        except OSError:  # not bound where we can reach it: it polls for our messages
            return False

    def poke(self, dest, thread=COMM):
        """After sending rank `dest` a message for its `thread`: wake it if it sleeps (best effort)."""
        if dest in self.pokable:
            self._send(dest, thread)

    def note_walk(self, dest, walk_id, hops, lands_at):
        """Walk `walk_id`, arriving with `hops`, lands at rank `dest` about `lands_at` (perf_counter):
        wakes dest's compute thread if it sleeps (best effort, same host only)."""
        if dest in self.pokable:
            self._send(dest, COMPUTE, WALK_NOTE.pack(walk_id, hops, lands_at))

    def ring(self, thread=COMM):
        """This rank's other thread has work for `thread`."""
        self._send(self.rank, thread)

    def wait(self, timeout, thread=COMM):
        """`thread` sleeps up to `timeout` s; True if a ring, a poke or a walk's note woke it."""
        sock = self.sockets[thread]
        readable, _, _ = select.select([sock], [], [], max(0.0, timeout))
        while True:  # every message waiting: one wake-up answers them all
            try:
                message = sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return bool(readable)
            if len(message) == WALK_NOTE.size:
                walk_id, hops, lands_at = WALK_NOTE.unpack(message)
                with self.walk_lock:
                    if self.walks_taken.get(walk_id, -1) < hops:  # not taken in yet: expected
                        self.walks_noted[walk_id] = (hops, lands_at)

    def took_walk(self, walk_id, hops):
        """Either thread took walk `walk_id` in, arrived with `hops`: its notes are answered."""
        with self.walk_lock:
            self.walks_taken[walk_id] = hops
            if self.walks_noted.get(walk_id, (hops + 1,))[0] <= hops:
                del self.walks_noted[walk_id]

    def walk_landing(self, now, late):
        """The next walk noted to this rank: (when it lands (perf_counter), walk id, the hops it arrives
        with), None if none is expected; a walk more than `late` seconds overdue is no longer expected
        (its sent note, or MPI, brings it)."""
        with self.walk_lock:
            for walk_id, (_, lands_at) in list(self.walks_noted.items()):
                if lands_at + late < now:
                    del self.walks_noted[walk_id]
            return min(((lands_at, walk_id, hops) for walk_id, (hops, lands_at) in self.walks_noted.items()),
                       default=None)


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


def wait(request, backoff, on_idle=None):
    """Complete a nonblocking request without spinning a core."""
    backoff.reset()
    while not request.Test():
        if on_idle:
            on_idle()
        backoff.idle()

