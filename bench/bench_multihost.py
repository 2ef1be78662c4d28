"""
The engine across hosts: bench.py's companion on a cluster of network namespaces on this machine
(deploy/local_cluster.py; root), one rank per host, so every transfer crosses a shaped link.

    python bench/bench_multihost.py          # ~15 minutes on 2 cores; a table, then one JSON line

- hop vs ping-pong: MW-1 on 2 hosts with t = 0, so every visit is a hop of a ResNet-20-sized model,
  seconds per hop / one-way time of a raw mpi4py ping-pong of the same bytes between the same two
  hosts (bench.py --pingpong), at the first --rates link speed. Target <= 1.5.
- predicted vs measured: MW-R (--walks) and gossip with emulated compute (--emulate-params,
  --emulate-compute: an update is a sleep of t) on --hosts V hosts, at each --rates link speed and
  each --computes t: local updates/s in the steady window (bench.steady_rate) against simulate.py's
  on the same graph, seed, t (compute_time_dist fixed), model bytes and bandwidth (the link rate),
  latency 0 (the links add none) and this engine's timing (--engine-timing ideal: no authors' polls;
  gossip paced at the same cycle). Target: measured / predicted within 5%. Two predictions: the
  simulator's default links (every transfer has the whole bandwidth) and --links shared (transfers
  that overlap share their hosts' links, as TCP does).
- waiting: every rank's start event says how it waits; across hosts it must poll.
- proof: for every run, the bytes each host's ranks sent (events) <= what its link carried (tc counters).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import json
import shutil
import subprocess
import time

from bench.bench import RESNET20_PARAMS, steady_rate
from core import mpirun_command
from core.events import read_events
from deploy import local_cluster


def engine_run(cluster, args, name, extra, train_time, compute):
    """main.py on every host of `cluster` (one rank each), emulated; returns (out dir, link proof)."""
    out = os.path.join(args.out, name)
    shutil.rmtree(out, ignore_errors=True)
    before = cluster.link_bytes()
    done = cluster.mpirun(cluster.num_hosts, "main.py", [
        "--graph", "complete", "--emulate-params", args.params, "--emulate-compute", compute, "--train-time",
        train_time, "--seed", args.seed, "--stall-timeout", 60, "--out", out, *extra], timeout=train_time + 400)
    if done.returncode:
        sys.exit(f"bench_multihost: {name} failed with code {done.returncode}:\n{done.stderr[-2000:]}")
    crossed = cluster.crossed(out, before, cluster.link_bytes())
    if not all(carried >= sent > 0 for sent, carried in crossed.values()):
        sys.exit(f"bench_multihost: {name}: a host's link carried less than its ranks sent: {crossed}")
    return out, crossed


def simulated_rate(args, name, nodes, extra, compute, bytes_per_s, links):
    """simulate.py's local updates/s over the same steady window, for the same run."""
    out = os.path.join(args.out, f"{name}-sim-{links}")
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, os.path.join(REPO, "simulate.py"), "--nodes", str(nodes), "--graph",
                           "complete", "--emulate-params", str(args.params), "--compute-time-dist", "fixed",
                           "--compute-time-mean", str(compute), "--bandwidth", str(bytes_per_s), "--latency", "0",
                           # this MPI engine's timing, not the authors': its MW waits poll-free and its
                           # gossip is paced at their modelled cycle, which ideal timing keeps (docs/FIDELITY.md)
                           "--engine-timing", "ideal", "--links", links,
                           "--train-time", str(args.train_time), "--seed", str(args.seed), "--out", out,
                           *map(str, extra)], capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        sys.exit(f"bench_multihost: simulate.py for {name} failed:\n{done.stderr[-2000:]}")
    return steady_rate(read_events(out), "update", args.train_time, args.trim)


def hop_rows(args):
    rate = args.rates[0]
    with local_cluster.Cluster(hosts=2, rate=rate) as cluster:
        out, crossed = engine_run(cluster, args, "hop", ["--algorithm", "mw", "--walks", "1"], args.hop_time, 0.0)
        hop = 1 / steady_rate(read_events(out), "transfer", args.hop_time, args.trim)
        done = cluster.mpirun(2, os.path.join(REPO, "bench", "bench.py"),
                              ["--pingpong", "--params", args.params, "--hop-time", args.hop_time],
                              timeout=args.hop_time + 300)
        if done.returncode:
            sys.exit(f"bench_multihost: ping-pong failed:\n{done.stderr[-2000:]}")
        one_way = float(done.stdout.split()[-1])
    return hop, one_way, crossed, rate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=6, help="V: hosts, one rank each")
    parser.add_argument("--walks", type=int, nargs="*", default=[1, 2, 4], help="R of the MW rows")
    parser.add_argument("--gossip", action=argparse.BooleanOptionalAction, default=True, help="the gossip rows")
    parser.add_argument("--rates", nargs="+", default=["1gbit", "100mbit"], help="link speeds (htb rates)")
    parser.add_argument("--computes", type=float, nargs="+", default=[0.05, 0.2], help="seconds of one update")
    parser.add_argument("--params", type=int, default=RESNET20_PARAMS, help="fp32 parameters of the model")
    parser.add_argument("--train-time", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--hop-time", type=float, default=8.0, help="seconds of the hop run and of the ping-pong")
    parser.add_argument("--trim", type=float, default=2.0, help="seconds left out at either end of a run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_multihost")
    args = parser.parse_args()
    why = local_cluster.why_unavailable()
    if why:
        sys.exit(f"bench_multihost: no cluster on this machine: {why}")

    started, rows, result = time.time(), [], {}
    load = os.getloadavg()[0]
    hop, one_way, crossed, rate = hop_rows(args)
    rows.append(("hop vs ping-pong", f"{hop * 1e3:.2f} ms/hop", f"{one_way * 1e3:.2f} ms one way",
                 f"{hop / one_way:.3f}", f"2 hosts, {rate}, {4 * args.params:,} B; load {load:.1f}"))
    result["hop_over_pingpong"] = round(hop / one_way, 4)

    algorithms = [(f"MW-{r}", ["--algorithm", "mw", "--walks", r]) for r in args.walks]
    if args.gossip:
        algorithms.append(("gossip", ["--algorithm", "gossip", "--walks", 1]))
    waiting = set()
    for rate in args.rates:
        with local_cluster.Cluster(hosts=args.hosts, rate=rate) as cluster:
            setup = cluster.timings["up_s"]
            for compute in args.computes:
                for label, extra in algorithms:
                    name = f"{label}-{rate}-t{compute:g}"
                    load = os.getloadavg()[0]
                    out, crossed = engine_run(cluster, args, name, extra, args.train_time, compute)
                    events = read_events(out)
                    waiting |= {e["waiting"] for e in events if e["type"] == "start"}
                    measured = steady_rate(events, "update", args.train_time, args.trim)
                    predicted, shared = (simulated_rate(args, name, args.hosts, extra, compute, cluster.bytes_per_s,
                                                        links) for links in ("unshared", "shared"))
                    sent = sum(s for s, _ in crossed.values())
                    carried = sum(c for _, c in crossed.values())
                    rows.append((name, f"{measured:.2f} updates/s", f"{predicted:.2f} updates/s",
                                 f"{measured / predicted:.3f}",
                                 f"shared links: {shared:.2f}/s, {measured / shared:.3f}; links carried "
                                 f"{carried / 1e6:.1f} MB >= ranks sent {sent / 1e6:.1f} MB; load {load:.1f}"))
                    result[name] = round(measured / predicted, 4)
                    result[name + "-shared-links"] = round(measured / shared, 4)
        rows.append((f"rig {rate}", f"up {setup:.1f} s", f"down {cluster.timings['down_s']:.2f} s", "", f"V={args.hosts}"))

    print(f"multi-host benchmark: V={args.hosts} hosts (network namespaces, one rank each), {args.params:,} fp32 "
          f"params, {args.train_time:g}s runs; load average {os.getloadavg()[0]:.1f} at the end; "
          f"{time.time() - started:.0f}s")
    print(f"| {'row':<26} | {'measured':>17} | {'predicted / raw':>18} | {'ratio':>6} | note")
    print(f"|{'-' * 28}|{'-' * 19}|{'-' * 20}|{'-' * 8}|{'-' * 45}")
    for name, measured, ideal, ratio, note in rows:
        print(f"| {name:<26} | {measured:>17} | {ideal:>18} | {ratio:>6} | {note}")
    print("waiting strategies seen: " + " / ".join(sorted(waiting)))
    result["waiting"] = sorted(waiting)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
