"""
Asynchronous decentralized learning: Multi-Walk (MW) vs Asynchronous Gossip.

One MPI rank per graph node:
    mpirun -n 8 python main.py                       # MW, 4 walks, digits, ~1 minute
    mpirun -n 8 python main.py --algorithm gossip --graph complete
    python main.py --help                            # every flag, with its default
Every key of the config dict (config.py) is a command-line flag (underscores
become dashes). Flags and --out are checked on every rank before torch is even
imported, then graph and data; a bad value prints one line on rank 0 and every
rank exits with code 2. Rank 0 prints one `[start]` line per start-up phase.
"""
import sys
import time

from core.config import config  # noqa: F401  the run's global config: every key is a flag (python main.py --help)
from core.config import ConfigError, parse_config
from core import run_folder
from core import run_records
from engine.agreement import all_agree, first_line, polite_barrier

STARTED = time.time()  # taken before the supervisor forks, so start-up lines count from the launch


def print_start_line(comm, text):
    if comm.Get_rank() == 0:
        print(f"[start] {text} ({time.time() - STARTED:.1f} s)", flush=True)


def refusal(*checks):
    """The one-line message of the first check that raises a ConfigError, or None."""
    try:
        for check in checks:
            check()
    except ConfigError as e:
        return first_line(e)
    return None


def main(argv):
    error, cfg = None, None
    try:
        cfg = parse_config(argv)  # before MPI: --help prints and exits here, without mpirun too
    except ConfigError as e:
        error = first_line(e)
    if error is None and cfg["virtual_model_bytes"]:
        error = ("virtual_model_bytes is the simulator's (simulate.py): a real run sends and counts its own "
                 "model's bytes")
    from mpi4py import MPI  # cheap next to torch, which nothing imports until every rank agrees the flags are good
    comm = MPI.COMM_WORLD
    if error is None and MPI.Query_thread() < MPI.THREAD_MULTIPLE:  # a rank's threads both call MPI
        error = (f"this MPI library gives thread level {MPI.Query_thread()}, the engine needs MPI_THREAD_MULTIPLE "
                 f"({MPI.THREAD_MULTIPLE}): use an MPI library that provides it (MPICH and Open MPI 3 or later do)")
    # the run folder's gate (core/run_folder.py), in two agreed steps so that every rank gives the same
    # reason: it is writable and no live run holds it; then rank 0 locks it and no earlier run is there
    # (each rank writes its own event log there, so each rank looks)
    out = cfg["out"] if cfg else None
    if error is None:
        error = refusal(lambda: run_folder.check_writable(out), lambda: run_folder.check_not_live(out))
    if not all_agree(comm, error):
        return 2
    out_lock = None  # rank 0 holds it for the run's lifetime
    if comm.Get_rank() == 0:
        try:
            out_lock = run_folder.lock(out)
        except ConfigError as e:
            error = first_line(e)
    if error is None and not cfg["resume"] and not cfg["overwrite"]:
        error = refusal(lambda: run_folder.refuse_previous_run(out))
    if not all_agree(comm, error):
        return 2
    print_start_line(comm, f"MPI up: {comm.Get_size()} ranks; flags and --out {cfg['out']} checked")
    try:
        from core.build_run import build_run, plan_text
        run = build_run(cfg, comm.Get_size())
        if cfg["resume"]:  # this rank's part of the latest checkpoint, checked before any work
            from engine import checkpoint
            run["resume"] = checkpoint.load(cfg, comm.Get_rank())
    except ValueError as e:  # ConfigError, GraphError, DataError: one-line messages
        error = first_line(e)
    if not all_agree(comm, error):
        return 2
    task_data = run["task_data"]
    print_start_line(comm, f"data loaded: {cfg['task']}, {len(task_data.train_y)} train / {len(task_data.test_y)} test, "
              f"graph {cfg['graph']}" + (", checkpoint read" if cfg["resume"] else ""))
    if comm.Get_rank() == 0:
        stale = run_folder.stale_summary(cfg["resume"] or cfg["out"]) if cfg["resume"] or cfg["overwrite"] else None
        if stale:
            print(stale, flush=True)
        if cfg["overwrite"]:
            run_folder.remove_previous_run(cfg["out"])
        run_records.write_config(cfg, "mpi")
        print(plan_text(cfg, run), flush=True)
    polite_barrier(comm)  # the previous run's files are gone before any rank opens its event log
    import distributed_training
    run["started"] = STARTED  # the engine's own start-up lines count from the launch too
    distributed_training.train(comm, cfg, run)
    if comm.Get_rank() == 0:
        print(f"results in {cfg['out']}/ (summary.json, events-rank*.jsonl, config.json)", flush=True)
    if out_lock:
        out_lock.close()  # the folder is free for the next run
    return 0


if __name__ == "__main__":
    from engine import supervisor
    supervisor.supervise_rank()  # returns in a child process that runs the rank; see supervisor.py
    sys.exit(main(sys.argv[1:]))
