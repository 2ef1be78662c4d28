"""
Progress counters every rank sends rank 0 about once a second for the progress line, and the
evaluations measured at another node (after failures), which rank 0 records. The counters, and
rank 0's answer (ALIVE), also tell rank 0 and every rank that the other is still reachable.
"""
import socket
import time

import numpy as np
from mpi4py import MPI

from core.events import EVAL_METRICS
from engine import faults
from engine.waker import wait
from engine.wire import TAG_ALIVE, TAG_EVAL, TAG_STATS

STATS_PERIOD = 1.0  # seconds between progress counters sent to rank 0
# past --stall-timeout, how long a silent peer has before it counts as unreachable: a stalled process is its
# supervisor's to name (it sees the missed beats at once; counters come only once a second)
UNREACHABLE_GRACE = 2 * STATS_PERIOD


class Progress:
    """Counters every rank sends to rank 0 about once a second, for the progress
    line; a final message (flag 1) tells rank 0 that the rank has finished.
    Evaluations made at another node (after failures) travel to rank 0 the same way.
    They are also how rank 0 knows a rank is reachable; rank 0 answers every rank with a
    byte (ALIVE) as often. A host cut off by the network (a link down, a partition) leaves
    no process dead and no thread stalled, so it is found here: rank 0 ends the job when an
    unfinished rank has not been heard from for --stall-timeout, and a rank that has not
    heard from rank 0 for as long ends itself (rank 0 cannot tell it to); both wait
    UNREACHABLE_GRACE more."""
    def __init__(self, comm, log, waker, cfg):
        self.comm, self.log, self.waker, self.cfg = comm, log, waker, cfg
        self.stall_timeout = cfg["stall_timeout"]
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.hosts = comm.allgather(socket.gethostname())  # the unreachable rank's host goes in the message
        self.latest = np.zeros((self.size, 3), dtype=np.int64)
        self.finished = set()
        self.request, self.last_sent = None, 0.0
        self.outgoing = np.zeros(4, dtype=np.int64)
        self.incoming = np.zeros(4, dtype=np.int64)
        self.reported_evals = []       # rank 0: (metrics, node) that other nodes measured, to record
        self.evals, self.eval_requests = [], []  # other ranks: metrics to report, and their sends
        self.eval_incoming = np.zeros(len(EVAL_METRICS), dtype=np.float64)
        self.heard = [time.monotonic()] * self.size  # rank 0: each rank's last word; others: [0], rank 0's
        self.alive, self.alive_requests, self.last_alive = np.zeros(1, dtype=np.uint8), [], 0.0

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
                self.heard[status.Get_source()] = time.monotonic()
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
            self.keep_in_touch()
            return busy
        self.keep_in_touch()
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

    def keep_in_touch(self):
        """Rank 0 sends every rank ALIVE once a second, and ends the job if an unfinished rank has
        been silent too long; another rank ends itself if rank 0 has been silent as long."""
        if not self.stall_timeout:
            return
        now = time.monotonic()
        if self.rank == 0:
            self.alive_requests = [r for r in self.alive_requests if not r.Test()]
            if now - self.last_alive > STATS_PERIOD:
                self.alive_requests += [self.comm.Isend(self.alive, r, TAG_ALIVE) for r in range(1, self.size)]
                self.last_alive = now
            silent = [r for r in range(1, self.size) if r not in self.finished]
        else:
            while self.comm.Iprobe(0, TAG_ALIVE):
                self.comm.Recv(self.alive, 0, TAG_ALIVE)
                self.heard[0] = now
            silent = [0]
        for r in silent:
            if now - self.heard[r] > self.stall_timeout + UNREACHABLE_GRACE:
                seen_from = f"rank {self.rank} ({self.hosts[self.rank]}) has heard nothing from it"
                faults.end_unreachable(self.comm, self.cfg, (
                    f"error: rank {r} ({self.hosts[r]}) is unreachable: {seen_from} for {now - self.heard[r]:.0f} s "
                    f"(--stall-timeout {self.stall_timeout:g}: a link down or the network partitioned?); ending the job"),
                    r, self.hosts[r])

    def finish(self, backoff):
        """Tell rank 0 we are done; rank 0 waits until every rank has said so."""
        if self.rank == 0:
            self.poll(final=True)
            while len(self.finished) < self.size:
                if not self.poll():
                    backoff.idle()
            for request in self.alive_requests:  # to ranks that are all there: they complete
                wait(request, backoff)
            self.alive_requests = []
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

