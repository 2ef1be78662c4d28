"""
Time and peak memory of the simulator as V grows: MW-4, 10,000 local updates of the synthetic
task, at V = 10^3, 10^4, 10^5, on a cycle and on an Erdős–Rényi graph of mean degree 12 (10 on
100,000 nodes is almost never connected: docs/simulator.md). The nodes are built when a walk first
reaches them, so the memory follows the nodes reached, not V. One simulate.py process per row, with
the load average before it; wall and CPU seconds (on a loaded machine the wall time is mostly
waiting); peak memory is the process's own (summary.json's peak_rss_bytes), beside the estimate the
simulator made before it started. The virtual budget (--train-time) is set far past what 10,000
updates take, so --iterations is what ends each run.

    python bench/bench_scale.py                                   # the six rows
    python bench/bench_scale.py --nodes 100000 --graphs er --mean-degree 12
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import resource
import subprocess
import tempfile
import time

VIRTUAL_BUDGET = 100000  # seconds of virtual time: far past 10,000 updates (about 110 s), so the update count ends a run


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--graphs", nargs="+", default=["cycle", "er"], choices=["cycle", "er"])
    parser.add_argument("--mean-degree", type=float, default=12.0, help="of the er graph: er_p = mean degree / (V - 1)")
    parser.add_argument("--iterations", type=int, default=10000)
    args = parser.parse_args(argv)
    print(f"{'V':>7} | {'graph':>5} | {'updates':>7} | {'wall s':>7} | {'CPU s':>6} | {'peak MB':>7} | {'estimate MB':>11} | "
          f"{'nodes logged':>12} | load 1/5/15")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for graph in args.graphs:
            for num_nodes in args.nodes:
                out = os.path.join(tmp, f"{graph}{num_nodes}")
                er_p = args.mean_degree / (num_nodes - 1) if graph == "er" else None
                load = os.getloadavg()
                flags = ["--nodes", str(num_nodes), "--task", "synthetic", "--synthetic-samples", "200000",
                         "--max-iterations", str(args.iterations), "--train-time", str(VIRTUAL_BUDGET),
                         "--graph", graph, *(["--er-p", f"{er_p:.6g}"] if er_p else []), "--out", out]
                started, cpu_before = time.perf_counter(), children_cpu_seconds()
                done = subprocess.run([sys.executable, "simulate.py", *flags], cwd=REPO, capture_output=True, text=True)
                seconds, cpu = time.perf_counter() - started, children_cpu_seconds() - cpu_before
                if done.returncode != 0:
                    print(f"V={num_nodes} {graph}: simulate.py exited {done.returncode}: {done.stderr.strip()[-500:]}")
                    return 1
                with open(os.path.join(out, "summary.json")) as f:
                    summary = json.load(f)
                logged = sum(name.startswith("events-rank") for name in os.listdir(out))
                row = dict(nodes=num_nodes, graph=graph, er_p=er_p, iterations=summary["iterations"],
                           seconds=round(seconds, 1), cpu_seconds=round(cpu, 1),
                           peak_mb=round(summary["peak_rss_bytes"] / 1e6),
                           estimate_mb=round(summary["memory_estimate_bytes"] / 1e6),
                           nodes_logged=logged, load=[round(x, 2) for x in load])
                rows.append(row)
                print(f"{num_nodes:>7} | {graph:>5} | {row['iterations']:>7} | {seconds:7.1f} | {cpu:6.1f} | "
                      f"{row['peak_mb']:7d} | {row['estimate_mb']:11d} | {logged:12d} | "
                      f"{' '.join(f'{x:.1f}' for x in load)}", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
