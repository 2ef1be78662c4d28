"""
How this project starts a script on K MPI ranks: one command line and one
environment, for the tests (tests/conftest.py) and the tools that launch main.py.
"""
import os
import shlex
import sys

# ranks share the host's cores: one OpenMP/BLAS thread each, or K thread pools oversubscribe them
THREAD_LIMITS = dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def command(num_ranks, script, args=(), launcher="mpirun"):
    """`mpirun -n K python SCRIPT ARGS`; `launcher` may carry options, e.g. "mpirun -f hostfile"."""
    return [*shlex.split(launcher), "-n", str(num_ranks), sys.executable, script, *map(str, args)]


def environment():
    """This process's environment with the thread limits, and output unbuffered so logs stream."""
    return dict(os.environ, **THREAD_LIMITS, PYTHONUNBUFFERED="1")
