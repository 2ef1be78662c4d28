"""
A rank that dies or stalls must not leave a job that hangs or ends without saying which rank.

MPICH's launcher (Hydra) already ends the whole job within a second when one of
its processes is killed, but its message names only a process id:
    BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES / PID 21178 RUNNING AT vm / EXIT CODE: 9
and the other ranks are SIGKILLed at once, too fast to say anything themselves.
So every rank runs as a child of a small supervising process (the one the launcher
started): the supervisor imports nothing heavy, waits for the child, and when the
child dies of a signal or an unexpected exit code it prints one line naming the
rank, then exits with the child's status, which makes the launcher end the job:
    error: rank 2 (pid 4242 on vm) was killed by SIGKILL; ending the job
The child dies with its supervisor (PR_SET_PDEATHSIG on Linux), so a launcher that
kills the supervisor never leaves an orphan rank behind. The child inherits the
launcher's connection (environment and file descriptors) and does MPI_Init itself.

The supervisor is also the stall watchdog: a stopped process (SIGSTOP, a deadlock, a
hung GPU) cannot report on itself. While the rank trains, its communication thread
beats into memory shared with the supervisor and each local update posts a deadline
(HEARTBEAT); a rank silent for --stall-timeout seconds, or an update past its deadline,
is named, SIGKILLed, and the job ends.

The supervisor outlives its rank, so it is the one to write down why the rank ended: once the
rank knows its run folder it writes the path into the shared memory, and a killed, stalled or
unexpectedly exited rank's supervisor adds summary.json's `stopped` (cause killed, stalled or
exited, with the rank and host) before it exits. It amends the summary.json on its own host and
only one that exists: with one host or a shared folder that is the run's; on a host without
rank 0's folder the cause is on the terminal alone.

A rank stopped by SIGINT or SIGTERM (faults.py) leaves with os._exit(128 + the signal), without
MPI_Finalize (it fails on the sends the stop leaves pending). Since MPICH 4.1 a process says goodbye
to the launcher's proxy (PMI "finalize") in an exit handler, which os._exit skips, and Hydra's proxy
takes a connection dropped without that goodbye for a crash: it SIGKILLs the other ranks, and mpirun
prints "BAD TERMINATION ... Killed (signal 9)" and exits 9. The supervisor holds the same connection
(inherited before the fork), so it says the goodbye itself once its rank has stopped
(release_launcher): the launcher sees every rank end on purpose, and mpirun exits with 130 or 143.

A supervisor whose own parent (the launcher's proxy on this host) dies ends its rank:
orphaned, the rank would train on with its output lost, and the launcher would fail only
at the end. It sends the rank LAUNCHER_LOST, on which a training rank reports the fault to
rank 0 like any other (faults.py: rank 0 prints the line, since this host's output went with
the proxy), and SIGKILLs it if it is still there after REPORT_GRACE.
"""
import mmap
import os
import signal
import socket
import struct
import sys
import time

from core import events

# how launchers tell a process its rank: MPICH (Hydra), Open MPI, PMIx
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
FAULT_EXIT = 3   # the rank has printed (or had rank 0 print) the line that explains its end
QUIET_EXIT_CODES = (0, 2, FAULT_EXIT)  # success, a bad config that rank 0 has explained, a reported fault
STALL_EXIT = 124
PR_SET_PDEATHSIG = 1
WATCH_PERIOD = 0.2  # seconds between the supervisor's looks at its rank
LAUNCHER_LOST = signal.SIGRTMIN + 1  # supervisor to rank: the launcher's proxy died; no one sends it otherwise
REPORT_GRACE = 3.0  # seconds the rank gets to report a lost launcher before it is killed
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # an operator's stop: the rank saves what it has and exits 128 + it
PMI_TIMEOUT = 2.0  # seconds the launcher's proxy gets to acknowledge a stopped rank's goodbye


class Heartbeat:
    """Three float64s (CLOCK_MONOTONIC, the same clock in both processes): the stall timeout
    (0: not watched), the communication thread's last beat (0: no communication thread now),
    the deadline of the local update under way (0: none); then the run folder, NUL-terminated UTF-8."""
    TIMEOUT, BEAT, DEADLINE, FOLDER = 0, 8, 16, 24
    SIZE = 24 + 4096

    def __init__(self, memory):
        self.memory = memory

    def set(self, slot, value):
        struct.pack_into("d", self.memory, slot, value)

    def get(self, slot):
        return struct.unpack_from("d", self.memory, slot)[0]

    # --- the rank
    def watch(self, timeout, out):
        """Training starts: watch for stalls (timeout 0: do not) and record a stop in `out`."""
        path = os.path.abspath(out).encode()[:self.SIZE - self.FOLDER - 1]
        self.memory[self.FOLDER:self.FOLDER + len(path) + 1] = path + b"\0"
        self.set(self.TIMEOUT, timeout)

    def beat(self):
        self.set(self.BEAT, time.monotonic())

    def silent(self):
        self.set(self.BEAT, 0.0)

    def update_started(self, longest):
        """A local update begins; the longest one so far says how long is too long."""
        timeout = self.get(self.TIMEOUT)
        if timeout:
            self.set(self.DEADLINE, time.monotonic() + longest + timeout)

    def update_ended(self):
        self.set(self.DEADLINE, 0.0)

    # --- the supervisor
    def stall(self):
        """What stalls the rank, in words, or None."""
        timeout, now = self.get(self.TIMEOUT), time.monotonic()
        beat, deadline = self.get(self.BEAT), self.get(self.DEADLINE)
        if not timeout:
            return None
        if beat and now - beat > timeout:
            return f"its communication thread made no progress for {now - beat:.0f} s"
        if deadline and now > deadline:
            return f"a local update has run {timeout:g} s past the longest one before it"
        return None

    def folder(self):
        """The rank's run folder, or None before it has said."""
        path = bytes(self.memory[self.FOLDER:self.SIZE]).split(b"\0")[0]
        return path.decode() if path else None


HEARTBEAT = Heartbeat(bytearray(Heartbeat.SIZE))  # a rank without a supervisor beats into its own memory, unwatched


def die_with_parent():
    """Linux only: the kernel SIGKILLs this process when its parent dies."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: an orphaned rank is then left to the launcher
        pass


def exit_quietly_on_signal(received, frame):
    """The rank's handler before training starts and after it ends: only held event lines (the end's)
    could be lost, and they are written first."""
    events.flush_all()
    os._exit(128 + received)


def record_stop(cause, rank, detail):
    """The supervisor: summary.json's `stopped` for the rank it watched, if the run has a summary here.
    The import is deferred and light (json and os): the supervisor stays small."""
    folder = HEARTBEAT.folder()
    if folder is None or not os.path.exists(os.path.join(folder, "summary.json")):
        return
    from core.events import amend_summary, stale_summary_note, stopped_record
    try:
        amend_summary(folder, complete=False, stopped=stopped_record(cause, int(rank), detail=detail))
    except OSError as e:
        print(f"error: {stale_summary_note(e)}", file=sys.stderr, flush=True)


def release_launcher():
    """The supervisor, after its rank stopped on an operator's signal: the PMI-1 goodbye ("cmd=finalize")
    on the connection Hydra gave the rank (PMI_FD), which MPI_Finalize's exit handler would have sent.
    A launcher without PMI_FD (Open MPI, Hydra with -pmi-port) is left to act as it does."""
    fd = os.environ.get("PMI_FD")
    if fd is None:
        return
    try:
        with socket.socket(fileno=int(fd)) as pmi:
            pmi.settimeout(PMI_TIMEOUT)
            pmi.sendall(b"cmd=finalize\n")
            reply = b""
            while not reply.endswith(b"\n"):  # "cmd=finalize_ack rc=0"
                received = pmi.recv(256)
                if not received:
                    break
                reply += received
    except (OSError, ValueError):  # no such connection, or the proxy is gone: it is the launcher's to report
        pass


def supervise_rank():
    """Fork. The child returns at once and runs the rank; this process never returns: it
    watches the child and exits with its status. Does nothing outside an MPI launcher."""
    global HEARTBEAT
    rank = next((os.environ[v] for v in RANK_VARIABLES if v in os.environ), None)
    if rank is None or not hasattr(os, "fork"):
        return
    parent, launcher = os.getpid(), os.getppid()
    HEARTBEAT = Heartbeat(mmap.mmap(-1, Heartbeat.SIZE))  # anonymous and shared: the child writes, this process reads
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        die_with_parent()
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)
        for sig in STOP_SIGNALS:
            signal.signal(sig, exit_quietly_on_signal)
        return
    forwarded = set()

    # signals meant for the rank (Ctrl-C forwarded by mpirun, a scheduler's SIGTERM) go to it
    def forward(received, frame):
        forwarded.add(received)
        try:
            os.kill(child, received)
        except ProcessLookupError:  # the rank has just ended; waitpid below reports how
            pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    where = f"rank {rank} (pid {child} on {socket.gethostname()})"
    # ranks that end together must be seen to end together: the launcher kills what is left when one
    # exits, so this process waits on SIGCHLD, not on a timer
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    while True:
        ended, status = os.waitpid(child, os.WNOHANG)
        if ended:
            break
        if os.getppid() != launcher:
            os.kill(child, LAUNCHER_LOST)
            deadline = time.monotonic() + REPORT_GRACE
            while not os.waitpid(child, os.WNOHANG)[0] and time.monotonic() < deadline:
                signal.sigtimedwait([signal.SIGCHLD], WATCH_PERIOD)
            try:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
            except ChildProcessError:  # it has ended and been reaped above
                pass
            os._exit(FAULT_EXIT)
        stall = HEARTBEAT.stall()
        if stall:
            print(f"error: {where} stalled: {stall}; ending the job", file=sys.stderr, flush=True)
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)  # unreaped, it was seen to keep the launcher from ending the job
            record_stop("stalled", rank, stall)
            os._exit(STALL_EXIT)
        signal.sigtimedwait([signal.SIGCHLD], WATCH_PERIOD)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        print(f"error: {where} was killed by {signal.Signals(sig).name}; ending the job", file=sys.stderr, flush=True)
        if sig not in forwarded:  # a signal passed on from the launcher is the rank's to record (faults.py)
            record_stop("killed", rank, signal.Signals(sig).name)
        os._exit(128 + sig)
    code = os.WEXITSTATUS(status)
    # a rank stopped by a signal it was sent through here has said so itself
    if code not in QUIET_EXIT_CODES and code - 128 not in forwarded:
        print(f"error: {where} exited with code {code}; ending the job", file=sys.stderr, flush=True)
        record_stop("exited", rank, f"exit code {code}")
    if code - 128 in STOP_SIGNALS:
        release_launcher()
    os._exit(code)
