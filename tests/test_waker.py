"""How idle threads wait (engine/waker.py, Waker): asleep on their own sockets, woken by a
poke or a walk's note from a rank on the same host or a ring from the rank's other thread.
Real mpirun, 3 ranks."""
import subprocess
import textwrap

import pytest

from core import mpirun_command as mpirun_lib
from conftest import REPO, start_main

pytestmark = pytest.mark.mpi

SCRIPT = textwrap.dedent("""
    from mpi4py import MPI
    from engine.waker import COMM, COMPUTE, Waker
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    waker = Waker(comm)
    assert waker.pokable == {0, 1, 2} - {rank}, waker.pokable
    assert waker.cap == Waker.CHORES_CAP and "every peer wakes it" in waker.strategy, waker.strategy
    assert not waker.wait(0.0, COMPUTE) and not waker.wait(0.0, COMM)  # nothing pending before the pokes
    comm.Barrier()
    if rank == 0:
        waker.poke(1, COMPUTE)           # rank 1's compute thread, not its communication thread
        waker.ring(COMM)
        assert waker.wait(60.0, COMM)    # its own ring (the deadline only catches a hang)
        assert not waker.wait(0.0, COMM)  # answered: nothing left
    elif rank == 1:
        assert waker.wait(60.0, COMPUTE)  # True: woken by the poke (a timeout answers False)
    comm.Barrier()  # every poke is written (datagrams on this host arrive at once): what is pending now stays
    if rank != 0:  # rank 1's poke was for its compute thread alone (answered above); nobody poked rank 2
        assert not waker.wait(0.0, COMPUTE) and not waker.wait(0.0, COMM)
    # a walk's notes: rank 2's compute thread learns when walk 3 lands, and forgets it once taken in
    comm.Barrier()
    if rank == 0:
        waker.note_walk(2, 3, 5, 100.0)
    comm.Barrier()
    if rank == 2:
        assert waker.wait(60.0, COMPUTE) and not waker.wait(0.0, COMM)  # a note wakes the compute thread only
        assert waker.walk_landing(100.5, late=1.0) == (100.0, 3, 5)
        waker.took_walk(3, 5)
        assert waker.walk_landing(100.5, late=1.0) is None
    comm.Barrier()
    if rank == 0:
        waker.note_walk(2, 3, 5, 101.0)  # walk 3's hop 5 again (its "sent" note): taken in already, stale
        waker.note_walk(2, 4, 1, 102.0)
    comm.Barrier()
    if rank == 2:
        assert waker.wait(60.0, COMPUTE)
        assert waker.walk_landing(101.0, late=1.0) == (102.0, 4, 1)  # walk 4 alone
        assert waker.walk_landing(103.5, late=1.0) is None  # more than `late` overdue: no longer expected
    passed = comm.gather(rank)  # one line from rank 0: ranks' separate prints can interleave mid-line
    if rank == 0:
        print("ok", *sorted(passed), flush=True)
""")


def test_pokes_and_walk_notes_wake_the_thread_they_name_and_nothing_else():
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
