"""
A rank that dies must not leave a job that hangs or ends without saying who died.

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
"""
import os
import signal
import socket
import sys

# how launchers tell a process its rank: MPICH (Hydra), Open MPI, PMIx
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
QUIET_EXIT_CODES = (0, 2)  # success, and a bad config that rank 0 has already explained
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """Linux only: the kernel SIGKILLs this process when its parent dies."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: an orphaned rank is then left to the launcher
        pass


def supervise_rank():
    """Fork. The child returns at once and runs the rank; this process never returns: it
    waits for the child and exits with its status. Does nothing outside an MPI launcher."""
    rank = next((os.environ[v] for v in RANK_VARIABLES if v in os.environ), None)
    if rank is None or not hasattr(os, "fork"):
        return
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        die_with_parent()
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)
        return
    # signals meant for the rank (Ctrl-C forwarded by mpirun, a scheduler's SIGTERM) go to it
    def forward(received, frame):
        try:
            os.kill(child, received)
        except ProcessLookupError:  # the rank has just ended; waitpid below reports how
            pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    _, status = os.waitpid(child, 0)
    where = f"rank {rank} (pid {child} on {socket.gethostname()})"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        print(f"error: {where} was killed by {signal.Signals(sig).name}; ending the job", file=sys.stderr, flush=True)
        os._exit(128 + sig)
    code = os.WEXITSTATUS(status)
    if code not in QUIET_EXIT_CODES:
        print(f"error: {where} exited with code {code}; ending the job", file=sys.stderr, flush=True)
    os._exit(code)
