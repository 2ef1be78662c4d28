"""
Time and peak memory of the simulator as V grows: MW-4 on a cycle, 10,000 iterations of the
synthetic task, at V = 10^3, 10^4, 10^5 (the nodes are built when a walk first reaches them,
so the memory follows the nodes reached, not V). One simulate.py process per row, with the
load average before each; peak memory is the process's own (summary.json's peak_rss_bytes),
beside the estimate the simulator made before it started.

    python bench/bench_scale.py                       # the three rows
    python bench/bench_scale.py --nodes 1000 --graph er --er-p 0.012
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import subprocess
import tempfile
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--graph", default="cycle")
    parser.add_argument("--er-p", type=float, default=None)
    args = parser.parse_args(argv)
    print(f"{'V':>7} | {'graph':>6} | {'seconds':>7} | {'peak MB':>7} | {'estimate MB':>11} | {'nodes logged':>12} | load 1/5/15")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for num_nodes in args.nodes:
            out = os.path.join(tmp, f"v{num_nodes}")
            load = os.getloadavg()
            flags = ["--nodes", str(num_nodes), "--task", "synthetic", "--synthetic-samples", "200000",
                     "--max-iterations", str(args.iterations), "--graph", args.graph,
                     *(["--er-p", str(args.er_p)] if args.er_p else []), "--out", out]
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "simulate.py", *flags], cwd=REPO, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                print(f"V={num_nodes}: simulate.py exited {done.returncode}: {done.stderr.strip()[-500:]}")
                return 1
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            logged = sum(name.startswith("events-rank") for name in os.listdir(out))
            row = dict(nodes=num_nodes, graph=args.graph, seconds=round(seconds, 1),
                       peak_mb=round(summary["peak_rss_bytes"] / 1e6), estimate_mb=round(summary["memory_estimate_bytes"] / 1e6),
                       nodes_logged=logged, iterations=summary["iterations"], load=[round(x, 2) for x in load])
            rows.append(row)
            print(f"{num_nodes:>7} | {args.graph:>6} | {seconds:7.1f} | {row['peak_mb']:7d} | {row['estimate_mb']:11d} | "
                  f"{logged:12d} | {' '.join(f'{x:.1f}' for x in load)}", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
