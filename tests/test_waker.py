"""How idle threads wait (engine/waker.py, Waker): asleep on their own sockets, woken by a
poke from a rank on the same host or a ring from the rank's other thread. Real mpirun, 3 ranks."""
import subprocess
import sys
import textwrap

from core import mpirun_command as mpirun_lib
from conftest import REPO, start_main

SCRIPT = textwrap.dedent("""
    import sys, time
    from mpi4py import MPI
    from engine.waker import COMM, COMPUTE, Waker
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    waker = Waker(comm)
    assert waker.pokable == {0, 1, 2} - {rank}, waker.pokable
    assert waker.cap == Waker.CHORES_CAP and "every peer wakes it" in waker.strategy, waker.strategy
    comm.Barrier()
    if rank == 0:
        time.sleep(0.3)
        waker.poke(1, COMPUTE)           # rank 1's compute thread, not its communication thread
        waker.ring(COMM)
        assert waker.wait(5.0, COMM)     # its own ring
        assert not waker.wait(0.0, COMM)  # answered: nothing left
    elif rank == 1:
        started = time.monotonic()
        assert waker.wait(10.0, COMPUTE)
        woken_after = time.monotonic() - started
        assert 0.2 < woken_after < 9, woken_after  # by the poke, not the timeout
        assert not waker.wait(0.05, COMM)       # the poke was for the other thread
    else:
        assert not waker.wait(0.5, COMPUTE)     # nobody poked rank 2
    passed = comm.gather(rank)  # one line from rank 0: ranks' separate prints can interleave mid-line
    if rank == 0:
        print("ok", *sorted(passed), flush=True)
""")


def test_pokes_wake_the_thread_they_name_and_nothing_else():
    done = subprocess.run(mpirun_lib.command(3, "-c", [SCRIPT]), cwd=REPO, capture_output=True, text=True,
                          env=dict(mpirun_lib.environment(), PYTHONPATH=str(REPO)), timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "ok 0 1 2" in done.stdout, done.stdout


def test_an_mpi_without_thread_multiple_is_refused_in_one_line(tmp_path):
    # mpi4py asks for the level in MPI4PY_RC_THREAD_LEVEL: "serialized" stands in for an MPI that lacks MULTIPLE
    process = start_main(2, ["--train-time", "1", "--out", str(tmp_path / "run")], MPI4PY_RC_THREAD_LEVEL="serialized")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    lines = [line for line in (stdout + stderr).splitlines() if "MPI_THREAD_MULTIPLE" in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "thread level" in lines[0], stdout + stderr
    assert "Traceback" not in stdout + stderr
