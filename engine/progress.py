"""
Progress counters every rank sends rank 0 about once a second for the progress line, and the
evaluations measured at another node (after failures), which rank 0 records.
"""
import time

import numpy as np
from mpi4py import MPI

from core.events import EVAL_METRICS
from engine.waker import wait
from engine.wire import TAG_EVAL, TAG_STATS

STATS_PERIOD = 1.0  # seconds between progress counters sent to rank 0


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

