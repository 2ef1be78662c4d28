"""
Where a walk's hop spends its time in the MPI engine: every step of the hop stamped on the
ranks' shared monotonic clock (time.perf_counter, one clock for the processes of a host), from
the end of a local update at the sender to the start of the next one at the receiver.

    python bench/trace_hop.py                          # MW-1 on 2 ranks, t = 0: every visit a hop
    python bench/trace_hop.py --nodes 8 --compute 0.005

The engine runs unchanged (main.py under mpirun); each rank wraps, before main starts, the functions
a hop goes through (the update, node 0's merge, the event lines, the walk's notes, the receiver's
sleep, the walk taken in) with a stamp at their ends, and writes its stamps when it exits. Printed:
the median time from the update's end to each step, over the hops of the steady window, separately
for hops that leave node 0 (which merges first) and the others, with the load average.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import atexit
import collections
import functools
import glob
import json
import shutil
import statistics
import subprocess
import threading
import time

from core import mpirun_command as mpirun_lib
from bench.bench import RESNET20_PARAMS


def stamped(owner, name, label, at_start=False):
    """Wrap owner.name so that each call adds (label, thread, time) to the rank's stamps."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if at_start:
            STAMPS.append((label(*args) if callable(label) else label, threading.current_thread().name, time.perf_counter()))
        result = original(*args, **kwargs)
        if not at_start:
            STAMPS.append((label, threading.current_thread().name, time.perf_counter()))
        return result
    setattr(owner, name, wrapper)


STAMPS = []


def child(out, argv):
    """A rank: wrap the hop's functions, then run main.py's main with argv."""
    from core import algorithms
    from core.events import EventLog
    from engine.rank import Rank
    from engine.waker import COMPUTE, Waker
    import main
    import protocols
    rank = int(os.environ.get("PMI_RANK", "0"))
    stamped(Rank, "local_update", "update start", at_start=True)
    stamped(Rank, "local_update", "update end")
    stamped(algorithms, "aggregate", "merged")
    stamped(EventLog, "update", "update line")
    stamped(EventLog, "transfer", "transfer line")
    # a note whose landing is (about) now is the sent note, after the Isend; a later one is the early note
    stamped(Waker, "note_walk", lambda self, dest, walk_id, hops, lands_at:
            "sent note" if lands_at <= time.perf_counter() else "early note", at_start=True)
    original_wait = Waker.wait

    def wait(self, timeout, thread=0):
        if thread == COMPUTE:
            STAMPS.append(("asleep", "compute", time.perf_counter()))
        woken = original_wait(self, timeout, thread)
        if thread == COMPUTE:
            STAMPS.append(("awake", "compute", time.perf_counter()))
        return woken
    Waker.wait = wait
    stamped(Waker, "took_walk", "received", at_start=True)  # called right after the Recv
    stamped(protocols.MultiWalkNode, "arrive", "queued")
    atexit.register(lambda: json.dump(STAMPS, open(os.path.join(out, f"stamps-rank{rank}.json"), "w")))
    sys.exit(main.main(argv))


def analyse(out, trim):
    """Median offsets from each update's end to the steps that follow, until the next update starts."""
    stamps = []
    for path in glob.glob(os.path.join(out, "stamps-rank*.json")):
        rank = int(path.rsplit("rank", 1)[1].split(".")[0])
        stamps += [(t, rank, thread, label) for label, thread, t in json.load(open(path))]
    stamps.sort()
    low, high = stamps[0][0] + trim, stamps[-1][0] - trim
    offsets = {True: collections.defaultdict(list), False: collections.defaultdict(list)}
    hops = {True: 0, False: 0}
    hop = None  # the stamps since the last update's end
    for t, rank, thread, label in stamps:
        if label == "update end":
            hop = [(t, rank, label)] if low <= t <= high else None
        elif hop is not None and label == "update start":
            sender, start = hop[0][1], hop[0][0]
            from_node0 = sender == 0
            hops[from_node0] += 1
            seen = set()
            for at, where, step in hop[1:] + [(t, rank, label)]:
                role = "sender" if where == sender else "receiver" if where == rank else None
                if role and (step, role) not in seen:  # the first of each step at each end of the hop
                    seen.add((step, role))
                    offsets[from_node0][f"{step} ({role})"].append(at - start)
            hop = None
        elif hop is not None:
            hop.append((t, rank, label))
    for from_node0 in (False, True):
        if not hops[from_node0]:
            continue
        print(f"hops from {'node 0 (merge first)' if from_node0 else 'other nodes'}: {hops[from_node0]}")
        steps = offsets[from_node0]
        for step, values in sorted(steps.items(), key=lambda kv: statistics.median(kv[1])):
            if len(values) >= hops[from_node0] / 2:  # steps of most hops; the rest are rare detours
                print(f"  {statistics.median(values) * 1e6:8.0f} us  {step}  ({len(values) / hops[from_node0]:.0%} of hops)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--walks", type=int, default=1)
    parser.add_argument("--compute", type=float, default=0.0, help="seconds of one emulated local update")
    parser.add_argument("--params", type=int, default=RESNET20_PARAMS, help="fp32 parameters of the model")
    parser.add_argument("--train-time", type=float, default=6.0)
    parser.add_argument("--trim", type=float, default=1.0, help="seconds left out at either end")
    parser.add_argument("--out", default="runs/trace_hop")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # internal: a rank
    parser.add_argument("flags", nargs="*", help=argparse.SUPPRESS)  # internal: main.py flags after --
    args = parser.parse_args()
    if args.child:
        return child(args.out, args.flags)
    shutil.rmtree(args.out, ignore_errors=True)
    flags = ["--algorithm", "mw", "--walks", str(args.walks), "--graph", "complete", "--emulate-params",
             str(args.params), "--emulate-compute", str(args.compute), "--train-time", str(args.train_time),
             "--out", args.out]
    load = os.getloadavg()[0]
    cmd = mpirun_lib.command(args.nodes, os.path.abspath(__file__), ["--child", "--out", args.out, "--", *flags])
    done = subprocess.run(cmd, capture_output=True, text=True, env=mpirun_lib.environment(), timeout=args.train_time + 300)
    if done.returncode != 0:
        sys.exit(f"trace_hop: {' '.join(cmd)} failed with code {done.returncode}:\n{done.stderr[-2000:]}")
    print(f"MW-{args.walks} on {args.nodes} ranks, t = {args.compute:g} s, {4 * args.params:,} B; "
          f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after; time from the sender's update end:")
    analyse(args.out, args.trim)


if __name__ == "__main__":
    main()
