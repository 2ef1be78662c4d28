"""
How close the MPI engine gets to the ideal: its overhead, measured end to end.

    python bench/bench.py    # about 16 minutes on 2 cores; a table, then one JSON line of ratios

- engine efficiency: every local update is a sleep of --compute seconds and the model a flat
  buffer of --params fp32 values (main.py --emulate-compute / --emulate-params). A sleep uses no
  CPU, so what is lost is the engine's own cost (polling, copies, Python, thread hand-offs) and
  the OS's lateness in waking a thread. Achieved local updates per second in the steady window
  (the run minus --trim seconds at either end) / ideal, where ideal is R/t for MW-R and V/t for
  gossip's compute. MW-R rows with R > 1 get a second ratio, "engine efficiency", against the
  same walks' routes run with no overhead at all: walks that meet at a node queue there (SEMANTICS.md §1),
  a cost of MW itself that R/t ignores. That ideal runs the walks in lock-step rounds of t;
  real timing jitter can spread them out and meet less often, so the ratio can exceed 1.
- over bound (MW rows): against what no engine can avoid: every visit takes the emulated update
  as it runs alone in this process on this machine now (update_alone) plus one raw one-way
  transfer of the model (the ping-pong), and walks that meet queue as MW's do (the same routes
  in rounds of that visit time); `mw<R>_over_bound` in the JSON line.
- hop overhead: MW-1 on 2 ranks with t = 0 and a ResNet-20-sized buffer, so every visit is a hop:
  seconds per hop / one-way time of a raw mpi4py Send/Recv ping-pong of the same message; hop
  runs and ping-pongs alternate (--hop-pairs, default 5) and the ratio is the pairs' median.
  "hop gap": the same hops less the update (at t = 0 the add over the model) and node 0's merge,
  which are the algorithm's work: from an update's line to the next update's start (the median per
  run), the engine's own part of a hop (route, log, send, wake-up, receive), over the ping-pong.
- gossip rows: the configured pacing, and the ideal one (exchanges back to back, immediate
  coupling: updates never wait for an exchange), each with its exchanges per second.
- real-compute efficiency: the same engine with real local updates (the digits MLP; ResNet-20 on
  CIFAR-shaped input), local updates/s in the steady window / the rate of the same ranks computing
  the same model with no communication at all (--compute-only: every rank runs algorithms.local_update
  back to back). Both sides leave each rank's first update (its warm-up) out: compute-only ranks run
  it before their clock starts, and the real run's window starts once every rank has run it
  (warm_from). Gossip against V ranks computing; MW-R against R ranks computing, times the share
  of visits the same routes lose to walks queueing at a node (the engine-efficiency ideal above).
  MW-R rows also give the engine against the same work with no engine (--rotation: V processes,
  R tokens handed over sockets, a local update per visit): what moving work between processes
  that share the cores costs by itself (cold caches), which no engine can avoid.
- idle cost: cores used by a whole 8-rank job (every process mpirun starts) with almost no work:
  MW-1 whose one update is a 1 s sleep, so 7 ranks wait and one sleeps; CPU time from /proc.
- counters: transfers and bytes from the events / the formula (MW: updates - self loops; gossip:
  2 x exchanges; bytes: transfers x model bytes), and the summary's totals / the events'. Exactly 1.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import json
import shutil
import statistics
import subprocess
import time

from core import mpirun_command as mpirun_lib
from core import run_records
from core.events import read_events

RESNET20_PARAMS = 272_474
# the real-compute rows: main.py flags of each model. ResNet-20 takes batch 16 and tau 1 so that 8 ranks
# sharing 2 cores still make hundreds of updates in a run (batch 32, tau 5 is 1.4 s per update on one core)
REAL_MODELS = {"mlp": ["--task", "digits"],
               "resnet20": ["--task", "cifar10", "--batch-size", "16", "--tau", "1"]}
IDLE_UPDATE = 1.0  # seconds of the one emulated update of the idle-cost run


def mpirun(nodes, script, argv, seconds):
    """Run `script` on `nodes` MPI ranks; returns its stdout, or exits with its error."""
    cmd = mpirun_lib.command(nodes, os.path.join(REPO, script), argv)
    done = subprocess.run(cmd, capture_output=True, text=True, env=mpirun_lib.environment(), timeout=seconds + 300)  # + start-up
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed with code {done.returncode}:\n{done.stderr[-2000:]}")
    return done.stdout


def run_engine(args, name, nodes, extra, train_time, compute=None):
    """One main.py run on the complete graph, in emulation mode unless `compute` is None; returns its out dir."""
    out = os.path.join(args.out, name)
    shutil.rmtree(out, ignore_errors=True)  # an earlier run's extra events-rank*.jsonl would be read too
    emulation = [] if compute is None else ["--emulate-params", str(args.params), "--emulate-compute", str(compute)]
    mpirun(nodes, "main.py", ["--graph", "complete", *emulation, "--train-time", str(train_time),
                              "--seed", str(args.seed), "--out", out] + extra, train_time)
    return out


def steady_rate(events, kind, train_time, trim, low=None):
    """Events of `kind` per second in [low, train_time - trim] (low: trim): no start-up, no wind-down."""
    low, high = trim if low is None else low, train_time - trim
    return sum(1 for e in events if e["type"] == kind and low <= e["t"] < high) / (high - low)


def warm_from(events, trim, train_time):
    """Where a real-compute run's steady window starts: after the trim and after every rank's first
    local update, which warms it up (allocator, caches: ResNet-20's first took 0.4-1.4 s on one core,
    later ones 0.12 s). Gossip's ranks warm up side by side at the start, but a walk warms its ranks
    one after another, on first visits spread over the run; compute-only warms every rank before its
    clock starts. The trim alone if that would leave less than half the steady window."""
    first = {}
    for e in events:
        if e["type"] == "update":
            first[e["rank"]] = min(first.get(e["rank"], e["t"]), e["t"])
    warm = max(first.values(), default=trim)
    return warm if trim < warm <= train_time / 2 else trim


def update_times(events, key, low, high):
    """Per walk (MW, key "walk") or node (gossip, key "rank"), from the update lines in [low, high):
    the updates' durations, and the gaps from one update's line (written after the merge, at node 0)
    to the start of the next (its line's time minus its duration): the engine's part of a visit."""
    ends = {}
    for e in events:
        if e["type"] == "update" and low <= e["t"] < high:
            ends.setdefault(e[key], []).append((e["t"], e["duration"]))
    durations = [d for series in ends.values() for _, d in series]
    gaps = [t - d - previous for series in ends.values() for (previous, _), (t, d) in zip(series, series[1:])]
    return durations, gaps


def time_split(events, key, args, low=None):
    """Where a walk's (MW) or a node's (gossip) time goes: mean length of an update (the sleep plus the
    OS's lateness waking from it) and mean time from one update's end to its next one's start, in
    [low, train_time - trim] (low: trim)."""
    durations, gaps = update_times(events, key, args.trim if low is None else low, args.train_time - args.trim)
    return (f"update {1e3 * sum(durations) / len(durations):.1f} ms, "
            f"then {1e3 * sum(gaps) / max(1, len(gaps)):.1f} ms to the next")


def contention_free_rate(args, walks, visit=None):
    """Updates/s of MW-R on the same routes with a zero-overhead engine: every visit takes exactly
    `visit` seconds (default t: hops are instant), so visits end in rounds k*visit; a node serves
    one waiting walk per round, as MW's queue does (protocols.WalkQueue: the lowest id first), the
    others wait."""
    from core import algorithms
    import graphs
    import protocols
    visit = args.compute if visit is None else visit
    graph = graphs.build_graph("complete", args.nodes, seed=args.seed)
    queues = [protocols.WalkQueue() for _ in range(args.nodes)]
    for walk in range(walks):  # walk r starts at node r
        queues[walk].push(walk, walk)
    visits, counted = [0] * walks, 0
    for k in range(1, int(round(args.train_time / visit)) + 1):
        served = [(node, queue.pop()) for node, queue in enumerate(queues) if queue]
        for node, walk in served:
            queues[algorithms.next_node(graph, node, args.seed, walk, visits[walk])].push(walk, walk)
            visits[walk] += 1
        if args.trim <= k * visit < args.train_time - args.trim:
            counted += len(served)
    return counted / (args.train_time - 2 * args.trim)


def update_alone(args):
    """Seconds of one emulated local update (algorithms.local_update: the sleep, then the add over
    the model) run alone in this process, back to back, the mean over at least 1 s and 20 updates:
    what an update costs on this machine now, with no engine around it."""
    import types
    import torch
    from core import algorithms
    from engine import cores
    torch.set_num_threads(cores.cpu_threads(args.nodes))  # a rank's threads (more spin on a loaded machine: 64 ms, not 5)
    node, params = types.SimpleNamespace(emulate_compute=args.compute), torch.zeros(args.params)
    reps = max(20, int(1.0 / max(args.compute, 1e-3)))
    algorithms.local_update(node, params, 1, 0.0)  # warm-up: page faults of the fresh buffer
    started = time.perf_counter()
    for _ in range(reps):
        algorithms.local_update(node, params, 1, 0.0)
    return (time.perf_counter() - started) / reps


def counter_check(out):
    """(transfers from events, formula), (bytes from events, formula), [(summary total, events total)]."""
    events = read_events(out)
    summary = run_records.read_json(os.path.join(out, "summary.json"))
    count = {kind: sum(1 for e in events if e["type"] == kind)
             for kind in ("update", "transfer", "self_loop", "exchange")}
    sent = sum(e["bytes"] for e in events if e["type"] == "transfer")
    if summary["algorithm"] == "mw":  # a walk leaves after every visit except a self loop; it retires on arrival
        transfers = count["update"] - count["self_loop"]
    else:  # each exchange moves one model each way
        transfers = 2 * count["exchange"]
    agreement = [(summary["iterations"], count["update"]), (summary["transfers"], count["transfer"]),
                 (summary["bytes_sent"], sent), (summary["self_loops"], count["self_loop"]),
                 (summary["exchanges"], count["exchange"])]
    return (count["transfer"], transfers), (sent, transfers * summary["model_bytes"]), agreement


def worst_ratio(pairs):
    """The measured/expected ratio farthest from 1 (an empty expected count is 1 only if measured is too)."""
    ratios = [measured / expected if expected else float(measured == 0) for measured, expected in pairs]
    return max(ratios, key=lambda r: abs(r - 1))


def pingpong(seconds, num_params):
    """Raw mpi4py ping-pong between ranks 0 and 1 of the engine's walk message; prints s per one-way message."""
    import numpy as np
    from mpi4py import MPI
    from engine.wire import HEADER_WORDS
    comm, rank = MPI.COMM_WORLD, MPI.COMM_WORLD.Get_rank()
    message = np.zeros(HEADER_WORDS * 8 + 4 * num_params, dtype=np.uint8)
    other = 1 - rank

    def round_trip():
        if rank == 0:
            comm.Send(message, other)
            comm.Recv(message, other)
        else:
            comm.Recv(message, other)
            comm.Send(message, other)

    for _ in range(20):  # warm-up: connection set-up, page faults
        round_trip()
    trips, started = 0, time.perf_counter()
    while True:
        stop = comm.bcast(time.perf_counter() - started >= seconds)  # rank 0's clock decides for both
        if stop:
            break
        for _ in range(10):
            round_trip()
        trips += 10
    if rank == 0:
        print((time.perf_counter() - started) / (2 * trips))


def warm_node(cfg, run, node_id, device, nodes):
    """Node node_id built as main.py builds it, with the torch threads a CPU rank of a `nodes`-rank run
    gets, and its flat parameters after one local update: the warm-up, run before any clock starts."""
    import torch
    from core import algorithms
    from engine import cores
    import models
    node = algorithms.make_node(cfg, run, node_id, device)
    if node.device.type == "cpu":  # the threads of a rank of the V-rank run, not of a K-process job
        torch.set_num_threads(cores.cpu_threads(nodes))
    params = models.flatten_params(node.model)
    algorithms.local_update(node, params, cfg["tau"], cfg["lr"])
    return node, params


def compute_only(args, flags):
    """The mpirun child of --compute-only: rank k builds node k as main.py would (same model, data,
    optimizer, device) and runs its local updates back to back with no communication; rank 0 prints
    the updates per second of all ranks together in the steady window."""
    from mpi4py import MPI
    from core import algorithms
    from core import config
    from engine import cores
    from core import build_run
    comm = MPI.COMM_WORLD
    cfg = config.parse_config(flags)
    run = build_run.build_run(cfg, args.nodes)  # the V-node partition; these ranks are its first nodes
    node, params = warm_node(cfg, run, comm.Get_rank(), cores.pick_device(cfg, comm), args.nodes)
    start, counted = comm.bcast(time.time()), 0
    while time.time() - start < args.real_time:
        algorithms.local_update(node, params, cfg["tau"], cfg["lr"])
        counted += args.trim <= time.time() - start < args.real_time - args.trim
    total = comm.reduce(counted)
    if comm.Get_rank() == 0:
        print(total / (args.real_time - 2 * args.trim))


def rotation(args, flags, walks):
    """The child of --rotation: MW-R's compute with no engine and no MPI. V forked processes build
    nodes 0..V-1 as main.py would; `walks` tokens start at nodes 0..R-1, and after each local update
    a token hops as MW's walk of that id would on the complete graph (algorithms.next_node), over a
    datagram socket the next process sleeps on; tokens that meet queue as MW's walks do
    (protocols.WalkQueue). Prints the updates per second of all processes
    in the steady window: the cost of moving the work between processes that share the cores."""
    import socket
    import numpy as np
    import torch
    from core import algorithms
    from core import config
    import graphs
    from core import build_run
    import protocols
    cfg = config.parse_config(flags)
    run = build_run.build_run(cfg, args.nodes)
    graph = graphs.build_graph("complete", args.nodes, seed=args.seed)
    names = [f"\0multiwalk-rotation-{os.getpid()}-{k}".encode() for k in range(args.nodes)]
    reports = []
    for k in range(args.nodes):
        here, there = socket.socketpair()
        if os.fork() == 0:
            node, params = warm_node(cfg, run, k, torch.device("cpu"), args.nodes)
            inbox, outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            inbox.bind(names[k])
            there.send(b"r")
            start = float(there.recv(64))
            counted, queue = 0, protocols.WalkQueue()
            while True:
                inbox.setblocking(not queue)  # sleep for a token only when none waits here
                try:
                    while True:  # every token that has arrived joins the queue
                        walk, step = (int(x) for x in np.frombuffer(inbox.recv(16), dtype=np.int64))
                        queue.push(walk, (walk, step))
                        inbox.setblocking(False)
                except BlockingIOError:
                    pass
                walk, step = queue.pop()
                if walk < 0:  # the stop token: the lowest id, served first
                    break
                algorithms.local_update(node, params, cfg["tau"], cfg["lr"])
                counted += args.trim <= time.time() - start < args.real_time - args.trim
                nxt = algorithms.next_node(graph, k, args.seed, walk, step)  # MW's routes
                try:
                    outbox.sendto(np.array([walk, step + 1], dtype=np.int64).tobytes(), names[nxt])
                except OSError:  # that process has stopped: the run is over
                    pass
            there.send(str(counted).encode())
            os._exit(0)
        reports.append(here)
    for report in reports:
        report.recv(1)
    start, sender = time.time(), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for report in reports:
        report.send(repr(start).encode())
    for walk in range(walks):
        sender.sendto(np.array([walk, 0], dtype=np.int64).tobytes(), names[walk])
    time.sleep(args.real_time)
    for name in names:
        sender.sendto(np.array([-1, 0], dtype=np.int64).tobytes(), name)
    total = sum(int(report.recv(64)) for report in reports)
    for _ in reports:
        os.wait()
    print(total / (args.real_time - 2 * args.trim))


def real_compute_rows(args, model, cifar_dir):
    """Real-compute efficiency of gossip and of MW-R for one model: (rows, result entries, run dirs)."""
    flags = REAL_MODELS[model] + (["--data-dir", cifar_dir] if model == "resnet20" else [])
    # evaluation is learning work, not engine work: none during the run
    flags += ["--eval-interval", str(10 * args.real_time), "--graph", "complete", "--seed", str(args.seed)]
    rows, result, counted = [], {}, []

    def computing(ranks):
        return float(mpirun(ranks, "bench/bench.py", ["--compute-only", "--nodes", str(args.nodes),
                                                "--real-time", str(args.real_time), "--trim",
                                                str(args.trim), "--", *flags, "--walks", "1"],  # walks: any valid
                            args.real_time).split()[-1])

    def measured(name, extra, family):
        """Updates/s of the real run, and where its time goes (a walk's, or a node's)."""
        out = run_engine(args, f"{model}-{name}", args.nodes, extra + flags, args.real_time)
        counted.append((family, out))
        events = read_events(out)
        warm = warm_from(events, args.trim, args.real_time)
        split = time_split(events, "walk" if family == "MW" else "rank", argparse.Namespace(
            trim=args.trim, train_time=args.real_time), low=warm)
        return (steady_rate(events, "update", args.real_time, args.trim, low=warm),
                f"window from {warm:.1f} s{' (every rank warm)' * (warm > args.trim)}; {split}")

    def rotating(walks):
        command = [sys.executable, os.path.abspath(__file__), "--rotation", str(walks), "--nodes", str(args.nodes),
                   "--real-time", str(args.real_time), "--trim", str(args.trim), "--seed", str(args.seed), "--",
                   *flags, "--walks", "1"]
        return float(subprocess.run(command, env=mpirun_lib.environment(), capture_output=True, text=True, check=True,
                                    timeout=args.real_time + 300).stdout.split()[-1])

    for walks in args.real_walks:
        free = computing(walks)
        queueing = contention_free_rate(args, walks) / (walks / args.compute)  # share of R/t the routes allow
        rate, split = measured(f"mw{walks}", ["--algorithm", "mw", "--walks", str(walks)], "MW")
        turns = rotating(walks)
        rows.append((f"{model} MW-{walks} real compute", f"{rate:.2f} updates/s", f"{free * queueing:.2f} updates/s",
                     f"{rate / (free * queueing):.3f}",
                     f"bound: {walks} ranks computing alone ({free:.2f}/s) x {queueing:.3f} queueing; no engine, "
                     f"the work handed between {args.nodes} processes: {turns:.2f}/s, engine / that "
                     f"{rate / turns:.3f}; {split}"))
        result[f"{model}_mw{walks}_real_compute_efficiency"] = round(rate / (free * queueing), 4)
        result[f"{model}_mw{walks}_over_rotation"] = round(rate / turns, 4)
    free = computing(args.nodes)
    # the authors' coupling holds a node's next update until an exchange has taken its last one
    # (FIDELITY.md): a wait of the algorithm, not of the engine, so this row lets updates run free
    rate, split = measured("gossip", ["--algorithm", "gossip", "--walks", "1", "--gossip-coupling", "immediate"],
                           "gossip")
    rows.append((f"{model} gossip real compute", f"{rate:.2f} updates/s", f"{free:.2f} updates/s", f"{rate / free:.3f}",
                 f"bound: {args.nodes} ranks computing alone; immediate coupling; {split}"))
    result[f"{model}_gossip_real_compute_efficiency"] = round(rate / free, 4)
    return rows, result, counted


def job_cpu_seconds(root):
    """CPU seconds (user + system) used so far by every process under `root`, from /proc."""
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:  # ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append((int(pid), int(fields[11]) + int(fields[12])))
    ticks, todo = 0, [root]
    while todo:
        for pid, used in children.get(todo.pop(), []):
            ticks += used
            todo.append(pid)
    return ticks / os.sysconf("SC_CLK_TCK")


def idle_cores(args):
    """Cores used by a whole args.nodes-rank job with almost no work (MW-1, a 1 s update), in the
    window from its first local update to args.trim before its end; and the waiting strategy it chose."""
    out = os.path.join(args.out, "idle")
    shutil.rmtree(out, ignore_errors=True)
    cmd = mpirun_lib.command(args.nodes, os.path.join(REPO, "main.py"), [
        "--graph", "complete", "--emulate-params", str(args.params), "--emulate-compute", str(IDLE_UPDATE),
        "--algorithm", "mw", "--walks", "1", "--train-time", str(args.idle_time), "--seed", str(args.seed), "--out", out])
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=mpirun_lib.environment())
    for line in job.stdout:  # training has begun once the first update is done
        if "first local update" in line:
            break
    first, started = job_cpu_seconds(job.pid), time.time()
    time.sleep(max(0.0, args.idle_time - IDLE_UPDATE - args.trim))
    used, elapsed = job_cpu_seconds(job.pid) - first, time.time() - started
    job.stdout.read()
    if job.wait(timeout=300) != 0:
        sys.exit(f"bench: the idle-cost run {' '.join(cmd)} failed with code {job.returncode}")
    waiting = next((e["waiting"] for e in read_events(out) if e["type"] == "start" and "waiting" in e), "?")
    return used / elapsed, elapsed, waiting


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=8, help="V for the efficiency rows")
    parser.add_argument("--walks", type=int, nargs="*", default=[1, 2, 4, 8], help="R of the MW rows")
    parser.add_argument("--gossip", action=argparse.BooleanOptionalAction, default=True, help="the gossip row")
    parser.add_argument("--compute", type=float, default=0.1, help="seconds of one emulated local update")
    parser.add_argument("--params", type=int, default=RESNET20_PARAMS, help="fp32 parameters of the model")
    parser.add_argument("--train-time", type=float, default=20.0, help="seconds per efficiency run")
    parser.add_argument("--hop-time", type=float, default=8.0, help="seconds of the hop run and of the ping-pong")
    parser.add_argument("--hop-pairs", type=int, default=5, help="alternating hop runs and ping-pongs (median)")
    parser.add_argument("--trim", type=float, default=1.0, help="seconds left out at either end of a run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--real", nargs="*", default=list(REAL_MODELS), choices=list(REAL_MODELS),
                        help="models of the real-compute rows")
    parser.add_argument("--real-walks", type=int, nargs="*", default=[1, 4], help="R of the real-compute MW rows")
    parser.add_argument("--real-time", type=float, default=20.0, help="seconds per real-compute run")
    parser.add_argument("--idle-time", type=float, default=12.0, help="seconds of the idle-cost run (0: none)")
    parser.add_argument("--pingpong", action="store_true", help=argparse.SUPPRESS)  # internal: the mpirun child
    parser.add_argument("--compute-only", action="store_true", help=argparse.SUPPRESS)  # internal: the mpirun child
    parser.add_argument("--rotation", type=int, default=0, help=argparse.SUPPRESS)  # internal: the child, R tokens
    parser.add_argument("flags", nargs="*", help=argparse.SUPPRESS)  # internal: main.py flags after --
    args = parser.parse_args()
    if args.pingpong:
        return pingpong(args.hop_time, args.params)
    if args.compute_only:
        return compute_only(args, args.flags)
    if args.rotation:
        return rotation(args, args.flags, args.rotation)
    if not 0 <= 2 * args.trim < min(args.train_time, args.hop_time, args.real_time):
        parser.error("--trim must leave a steady window: 2 x trim < --train-time, --hop-time and --real-time")
    if args.idle_time and args.idle_time < IDLE_UPDATE + args.trim + 1:
        parser.error(f"--idle-time must be 0 or at least {IDLE_UPDATE + args.trim + 1:g} s (one update, the trim, 1 s)")

    started, load_before = time.time(), os.getloadavg()[0]
    rows, result, counted = [], {}, []
    # the hop first: its ping-pong is also the bound's one-way transfer. Hop runs and ping-pongs
    # alternate, so a change of load hits both sides of a pair alike; the ratio is the pairs' median
    pairs = []
    for _ in range(args.hop_pairs):
        out = run_engine(args, "hop", 2, ["--algorithm", "mw", "--walks", "1"], args.hop_time, 0.0)
        events = read_events(out)
        hop = 1 / steady_rate(events, "transfer", args.hop_time, args.trim)
        gap = statistics.median(update_times(events, "walk", args.trim, args.hop_time - args.trim)[1])
        one_way = float(mpirun(2, "bench/bench.py", ["--pingpong", "--params", str(args.params), "--hop-time",
                                                     str(args.hop_time)], args.hop_time).split()[-1])
        pairs.append((hop / one_way, hop, one_way, os.getloadavg()[0], gap / one_way, gap))
    counted.append(("MW", out))
    ratio, hop, one_way, load, _, _ = statistics.median_low(pairs)
    rows.append(("hop overhead", f"{hop * 1e3:.3f} ms/hop", f"{one_way * 1e3:.3f} ms ping-pong", f"{ratio:.3f}",
                 f"MW-1 on 2 ranks, t = 0, {4 * args.params:,} B; median of {len(pairs)} alternating pairs "
                 f"(ratios {', '.join(f'{p[0]:.2f}' for p in pairs)}; load {load:.1f} at the median's)"))
    result["hop_overhead"] = result["hop_over_pingpong"] = round(ratio, 4)  # the second: #15's name
    # the same hops less the update (t = 0: the add over the model) and node 0's merge: the engine's own part
    gap_ratio, gap, gap_one_way = statistics.median_low((p[4], p[5], p[2]) for p in pairs)
    rows.append(("hop gap", f"{gap * 1e3:.3f} ms/hop", f"{gap_one_way * 1e3:.3f} ms ping-pong", f"{gap_ratio:.3f}",
                 f"update end (after node 0's merge) -> next update start, median per run; median of the pairs "
                 f"(ratios {', '.join(f'{p[4]:.2f}' for p in pairs)})"))
    result["hop_gap_over_pingpong"] = round(gap_ratio, 4)
    one_way = statistics.median(p[2] for p in pairs)

    update = update_alone(args)
    for walks in args.walks:
        out = run_engine(args, f"mw{walks}", args.nodes, ["--algorithm", "mw", "--walks", str(walks)],
                         args.train_time, args.compute)
        events = read_events(out)
        rate, ideal = steady_rate(events, "update", args.train_time, args.trim), walks / args.compute
        note = time_split(events, "walk", args)
        rows.append((f"MW-{walks} efficiency", f"{rate:.2f} updates/s", f"{ideal:.2f} updates/s",
                     f"{rate / ideal:.3f}", note))
        result[f"mw{walks}_efficiency"] = round(rate / ideal, 4)
        if walks > 1:  # walks that meet at a node queue there: a cost of MW itself, not of the engine
            free = contention_free_rate(args, walks)
            rows.append((f"MW-{walks} engine efficiency", f"{rate:.2f} updates/s", f"{free:.2f} updates/s",
                         f"{rate / free:.3f}", "ideal: same routes, queueing, no overhead"))
            result[f"mw{walks}_engine_efficiency"] = round(rate / free, 4)
        # what no engine avoids: the update as it runs alone here, one raw transfer per hop, the routes' queueing
        bound = contention_free_rate(args, walks, visit=update + one_way)
        rows.append((f"MW-{walks} over bound", f"{rate:.2f} updates/s", f"{bound:.2f} updates/s",
                     f"{rate / bound:.3f}", f"bound: visits of {update * 1e3:.2f} ms update alone + "
                     f"{one_way * 1e3:.3f} ms transfer, same routes queueing; load {os.getloadavg()[0]:.1f}"))
        result[f"mw{walks}_over_bound"] = round(rate / bound, 4)
        counted.append(("MW", out))
    if args.gossip:
        # the configured pacing, then the ideal one: exchanges back to back, updates never held (immediate coupling)
        for name, extra in (("gossip", []), ("gossip_ideal_pacing", ["--gossip-pacing", "interval",
                                                                      "--gossip-interval", "0",
                                                                      "--gossip-coupling", "immediate"])):
            out = run_engine(args, name, args.nodes, ["--algorithm", "gossip", "--walks", "1", *extra],
                             args.train_time, args.compute)
            events = read_events(out)
            rate, ideal = steady_rate(events, "update", args.train_time, args.trim), args.nodes / args.compute
            exchanges = steady_rate(events, "exchange", args.train_time, args.trim)
            rows.append((f"{name.replace('_', ' ')} efficiency", f"{rate:.2f} updates/s", f"{ideal:.2f} updates/s",
                         f"{rate / ideal:.3f}", f"{exchanges:.1f} exchanges/s; {time_split(events, 'rank', args)}; "
                         f"load {os.getloadavg()[0]:.1f}"))
            result[f"{name}_efficiency"] = round(rate / ideal, 4)
            result[f"{name}_exchanges_per_s"] = round(exchanges, 2)
            counted.append(("gossip", out))

    if args.real:
        from tasks import cifar10_files
        cifar_dir = os.path.join(args.out, "cifar-10-batches-py")
        if "resnet20" in args.real:
            cifar10_files.write_cifar_folder(cifar_dir, images_per_batch=256, seed=args.seed)
        for model in args.real:
            model_rows, model_result, model_runs = real_compute_rows(args, model, cifar_dir)
            rows += model_rows
            result.update(model_result)
            counted += model_runs
    if args.idle_time:
        cores, elapsed, waiting = idle_cores(args)
        rows.append(("idle cost", f"{cores:.3f} cores", "0.1 cores", f"{cores / 0.1:.3f}",
                     f"{args.nodes} ranks, MW-1 with {IDLE_UPDATE:g} s updates, {elapsed:.0f} s, waiting: {waiting}"))
        result["idle_cores"] = round(cores, 4)

    for family in ("MW", "gossip"):
        checks = [counter_check(out) for name, out in counted if name == family]
        if not checks:
            continue
        for i, what in enumerate(("transfers", "bytes")):
            pairs = [check[i] for check in checks]
            measured, expected = sum(m for m, _ in pairs), sum(e for _, e in pairs)
            ratio = worst_ratio(pairs)  # never rounded: 0.99999 is a miscount, not 1
            rows.append((f"{family} {what}", str(measured), str(expected), str(ratio), "events / formula, worst run"))
            result[f"counter_{family.lower()}_{what}"] = ratio
    ratio = worst_ratio([pair for _, out in counted for pair in counter_check(out)[2]])
    rows.append(("summary.json totals", "", "", str(ratio), "summary / events, worst counter"))
    result["counter_summary"] = ratio

    print(f"engine benchmark: V={args.nodes}, t={args.compute:g}s emulated compute, {args.params:,} fp32 params, "
          f"{args.train_time:g}s runs; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
          f"{time.time() - started:.0f}s")
    print(f"| {'row':<28} | {'measured':>17} | {'ideal / expected':>18} | {'ratio':>6} | note")
    print(f"|{'-' * 30}|{'-' * 19}|{'-' * 20}|{'-' * 8}|{'-' * 45}")
    for name, measured, ideal, ratio, note in rows:
        print(f"| {name:<28} | {measured:>17} | {ideal:>18} | {ratio:>6} | {note}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
