"""
Every fault ends the job, and an operator's stop stops it cleanly: one line says which,
and nothing written is lost (a stalled rank is the supervisor's to name: supervisor.py).

An uncaught exception in either thread of a rank (a full disk, a diverged loss, a bug)
ends the job within seconds. The failing rank reports it to rank 0, which adds it to
summary.json (complete stays false; `stopped` names the cause, exception or disk_full, and the
rank and host) and prints the one line that heads the job's output:
    error: rank 3, thread mpi: OSError: [Errno 28] No space left on device: 'out/events-rank3.jsonl'
The failing rank then exits with FAULT_EXIT, and the launcher ends the other ranks.
Rank 0 prints only the first fault it hears of (a full disk fails every rank at once);
a rank that rank 0 does not answer within REPORT_TIMEOUT prints its own line. Where rank 0
cannot write summary.json (a full disk), the line ends by saying summary.json is stale.
A rank cut off by the network (no word for --stall-timeout, either way between it and
rank 0) ends the job the same way, naming the rank and its host (end_unreachable):
    error: rank 2 (host2) is unreachable: rank 0 (host0) has heard nothing from it for 8 s ...

SIGINT (one Ctrl-C on mpirun, which forwards it to every rank) or SIGTERM stops the
run: each rank's threads stop, rank 0 collects every rank's counters (for at most
GATHER_TIMEOUT), writes summary.json with complete: false and stopped {cause: signal, detail: SIGINT, ...}, and says
the run was interrupted; then every rank exits with 128 + the signal's number.
"""
import json
import os
import signal
import socket
import sys
import threading
import time

from mpi4py import MPI

from engine import supervisor
from core import events
from core.events import amend_summary, counter_totals, fault_cause, flush_all, stale_summary_note, stopped_record
from engine.wire import TAG_COUNTERS, TAG_FAULT, TAG_FAULT_SEEN, TAG_SUMMARY_WRITTEN

REPORT_TIMEOUT = 2.0   # seconds a failing rank waits for rank 0 to take its report
PEER_DEATH_GRACE = 3.0  # an MPI error is mostly a peer that died: its supervisor names it, the launcher ends us first
GATHER_TIMEOUT = 3.0   # seconds rank 0 waits for the counters of interrupted ranks
RETRY_SIGNAL = 0.005   # seconds after which a stop that came while an event was being logged is taken

_fault_reported = threading.Lock()  # the first fault of this rank reports; a second one waits for the end
_headline_printed = threading.Lock()  # rank 0: the job's one error line is out


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached this rank. A BaseException: no `except Exception` of the run swallows it."""
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.name = signum, signal.Signals(signum).name


class LauncherLost(RuntimeError):
    """The launcher's proxy on this rank's host died (supervisor.py sent LAUNCHER_LOST)."""


def raise_launcher_lost(signum, frame):
    raise LauncherLost(f"the MPI launcher's proxy on {socket.gethostname()} died (killed, or its ssh session)")


class InjectedFault(RuntimeError):
    """Raised where MULTIWALK_FAULT asks (tests only)."""


class Injection:
    """Test-only faults: MULTIWALK_FAULT=RANK:THREAD:N:ACTION makes rank RANK's THREAD (mpi: at
    its Nth poll; compute: in its Nth local update) raise InjectedFault (ACTION raise) or hang (hang)."""
    def __init__(self, rank_id, spec=None):
        self.spec = os.environ.get("MULTIWALK_FAULT", "") if spec is None else spec
        self.thread, self.remaining, self.action = None, 0, None
        if self.spec:
            target, thread, count, action = self.spec.split(":")
            if int(target) == rank_id:
                self.thread, self.remaining, self.action = thread, int(count), action

    def point(self, thread):
        if thread != self.thread:
            return
        self.remaining -= 1
        if self.remaining:
            return
        if self.action == "hang":
            while True:
                time.sleep(60)
        raise InjectedFault(f"MULTIWALK_FAULT={self.spec}")


def fault_line(rank_id, thread, error):
    cause = (str(error).splitlines() or [""])[0]
    return f"error: rank {rank_id}, thread {thread}: {type(error).__name__}" + (f": {cause}" if cause else "")


def record_fault(cfg, line, stopped):
    """Rank 0: the first fault of the job goes into summary.json and heads the output."""
    if not _headline_printed.acquire(blocking=False):
        return
    try:
        amend_summary(cfg["out"], complete=False, error=line[len("error: "):], stopped=stopped)
    except OSError as e:  # a full disk: the line says summary.json no longer tells the truth
        line = f"{line}; {stale_summary_note(e)}"
    print(line, file=sys.stderr, flush=True)


def wake_rank0():
    """Wakes rank 0's communication thread to take a report; the engine replaces it once its
    ranks can wake each other (engine/waker.py, Waker)."""


def end_on_fault(comm, cfg, thread, error):
    """Any thread of any rank, on an uncaught exception. Never returns."""
    _fault_reported.acquire()
    flush_all()  # the events held in memory (EventLog) are on disk before the job ends
    if isinstance(error, MPI.Exception):
        time.sleep(PEER_DEATH_GRACE)  # if a peer died, the job ends now with its name, not with our symptom
    line = fault_line(comm.Get_rank(), thread, error)
    stopped = stopped_record(fault_cause(error), comm.Get_rank(), socket.gethostname(), line[len("error: "):])
    if comm.Get_rank() == 0:
        record_fault(cfg, line, stopped)
    else:
        message = json.dumps(dict(line=line, stopped=stopped)).encode()
        report = [comm.Isend(message, 0, TAG_FAULT), comm.Irecv(bytearray(1), 0, TAG_FAULT_SEEN)]
        wake_rank0()
        if not completes(report, REPORT_TIMEOUT):
            print(line, file=sys.stderr, flush=True)
    os._exit(supervisor.FAULT_EXIT)


def end_unreachable(comm, cfg, line, unreachable, host):
    """A rank that has heard nothing from a peer for --stall-timeout (engine/progress.py):
    rank 0 records the line in summary.json and prints it; a rank cut off from rank 0 prints it
    itself (on a host the launcher may not hear either) and leaves. Never returns."""
    _fault_reported.acquire()
    flush_all()
    if comm.Get_rank() == 0:
        record_fault(cfg, line, stopped_record("unreachable", unreachable, host, line[len("error: "):]))
        comm.Abort(supervisor.FAULT_EXIT)
    else:
        print(line, file=sys.stderr, flush=True)
    os._exit(supervisor.FAULT_EXIT)


def receive_fault(comm, cfg):
    """Rank 0's communication thread: a fault another rank reports. Returns True if one came."""
    status = MPI.Status()
    if not comm.Iprobe(MPI.ANY_SOURCE, TAG_FAULT, status):
        return False
    message = bytearray(status.Get_count(MPI.BYTE))
    comm.Recv(message, status.Get_source(), TAG_FAULT)
    report = json.loads(message.decode())
    record_fault(cfg, report["line"], report["stopped"])
    comm.Send(bytearray(1), status.Get_source(), TAG_FAULT_SEEN)
    return True


def completes(requests, timeout):
    """Whether all the requests complete within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not MPI.Request.testall(requests)[0]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def logging_in(frame):
    """Whether the compute thread is inside the event log (core/events.py), where an event's count and its
    line go together: interrupted between the two, summary.json would count a line that is not there."""
    while frame is not None:
        if frame.f_code.co_filename == events.__file__:
            return True
        frame = frame.f_back
    return False


def raise_interrupted(signum, frame):
    if logging_in(frame):  # the same signal again in a moment, when the event is whole
        threading.Timer(RETRY_SIGNAL, signal.pthread_kill, [threading.main_thread().ident, signum]).start()
        return
    for sig in supervisor.STOP_SIGNALS:  # one stop at a time; a second Ctrl-C is the launcher's to act on
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def stop_on_signals(active=True):
    """While training (active), SIGINT and SIGTERM raise Interrupted in the compute thread;
    before and after, there is nothing to save and the rank exits at once."""
    for sig in supervisor.STOP_SIGNALS:
        signal.signal(sig, raise_interrupted if active else supervisor.exit_quietly_on_signal)
    signal.signal(supervisor.LAUNCHER_LOST, raise_launcher_lost if active else supervisor.exit_quietly_on_signal)


def stop_on_interrupt(comm, cfg, log, clock, interrupted):
    """Every rank, once its threads have stopped: rank 0 collects the counters, writes the summary
    and says the run was interrupted; each rank exits once rank 0 has written it (or has not answered
    in time). Never returns."""
    code = 128 + interrupted.signum
    flush_all()
    if comm.Get_rank() != 0:
        completes([comm.isend(dict(log.counters), 0, TAG_COUNTERS), comm.irecv(source=0, tag=TAG_SUMMARY_WRITTEN)],
                  GATHER_TIMEOUT + REPORT_TIMEOUT)
        os._exit(code)
    counters, pending = {0: dict(log.counters)}, {r: comm.irecv(source=r, tag=TAG_COUNTERS) for r in range(1, comm.Get_size())}
    deadline = time.monotonic() + GATHER_TIMEOUT
    while pending and time.monotonic() < deadline:
        for r, request in list(pending.items()):
            done, value = request.test()
            if done:
                counters[r] = value
                del pending[r]
        time.sleep(0.01)
    missing = dict(counters_missing=sorted(pending)) if pending else {}
    try:
        amend_summary(cfg["out"], complete=False, stopped=stopped_record("signal", detail=interrupted.name),
                      wall_time_s=clock(), **counter_totals(counters.values()), **missing)
        written = "summary.json holds the counters so far (complete: false)"
    except OSError as e:
        written = stale_summary_note(e)
    unheard = f"; ranks {', '.join(map(str, sorted(pending)))} did not answer" if pending else ""
    print(f"interrupted: {interrupted.name} stopped the run at {clock():.1f}s{unheard}; {written}",
          file=sys.stderr, flush=True)
    completes([comm.isend(None, r, TAG_SUMMARY_WRITTEN) for r in counters if r], REPORT_TIMEOUT)
    # not through MPI_Finalize: it fails on the sends left pending by the stop; the supervisor
    # closes the rank's connection to the launcher instead (supervisor.release_launcher)
    os._exit(code)
