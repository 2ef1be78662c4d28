"""
Every rank checks its own inputs (data may be missing on one node only), then all
ranks agree before any work: either every rank goes on, or every rank ends with
exit code 2 after rank 0 has printed each distinct message once, as one line
`error: ...`, naming the ranks it came from when not all of them.
Needs mpi4py only, so main.py can refuse a bad flag before it imports torch.
"""
import sys
import time


def first_line(error):
    """An exception as the one line main.py prints (ConfigError, GraphError, DataError are one line already)."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def polite_barrier(comm):
    """A barrier that sleeps while it waits: MPI's blocking collectives spin, and a
    spinning rank steals the core that a slower rank still needs to catch up."""
    request, delay = comm.Ibarrier(), 2e-5
    while not request.Test():
        time.sleep(delay)
        delay = min(2 * delay, 0.01)


def all_agree(comm, error):
    """`error` is this rank's one-line message or None. Returns True when no rank has one;
    otherwise rank 0 has printed them and every rank returns False."""
    polite_barrier(comm)
    errors = comm.allgather(error)
    if not any(errors):
        return True
    if comm.Get_rank() == 0:
        seen = {}
        for rank, message in enumerate(errors):
            if message:
                seen.setdefault(message, []).append(rank)
        for message, ranks in seen.items():
            where = "" if len(ranks) == comm.Get_size() else f" (rank {', '.join(map(str, ranks))})"
            print(f"error: {message}{where}", file=sys.stderr, flush=True)
    return False
