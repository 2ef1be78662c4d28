"""
How much faster the simulator runs with batched local updates (batched.py) than with
the sequential path (algorithms.local_update one node at a time): the same runs,
timed both ways in one process, with the load average before and after each.

    python bench_sim.py                        # digits MLP, V = 20 and 100, gossip and MW-10
    python bench_sim.py --resnet --iterations 40 --nodes 8   # ResNet-20 on a tiny generated CIFAR folder

Both ways must give the same events (up to float rounding in losses): a run whose
event types and times differ is reported as a failure, not timed.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import json
import tempfile
import time

import torch

from core import config
from tasks import cifar10_files
from core import build_run
import simulate
from core.events import read_events


def timed_run(flags, out, batched):
    """Seconds one simulate() call takes (build included) and the events it wrote."""
    simulate.BATCHED = batched
    cfg = config.parse_config([*flags, "--out", out])
    run = build_run.build_run(cfg, cfg["nodes"])
    started = time.perf_counter()
    simulate.simulate(cfg, run, verbose=False)
    return time.perf_counter() - started, read_events(out)


def warm_up(task, work):
    """One small untimed run each way: the first optimizer built imports torch._dynamo (seconds), and
    the first vmap sets functorch up; neither belongs to the path that happens to run first."""
    for batched in (False, True):
        timed_run([*task, "--nodes", "2", "--walks", "1", "--max-iterations", "4"], os.path.join(work, "warm"), batched)


def same_schedule(sequential, batched):
    """Event types, nodes and times agree; losses may differ by float rounding."""
    key = lambda e: (e["type"], e.get("rank"), e["t"])  # noqa: E731
    return list(map(key, sequential)) == list(map(key, batched))


def load():
    return "load %.2f %.2f %.2f" % os.getloadavg()


def main_bench(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--nodes", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads, one timing each")
    parser.add_argument("--dists", nargs="+", default=["fixed", "exponential"], help="compute_time_dist values")
    parser.add_argument("--resnet", action="store_true", help="ResNet-20 on a tiny CIFAR folder instead of digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench_sim_")
    task = ["--task", "digits"]
    if args.resnet:
        cifar10_files.write_cifar_folder(os.path.join(work, "cifar"), seed=args.seed)
        task = ["--task", "cifar10", "--data-dir", os.path.join(work, "cifar"), "--eval-samples", "64"]
    ratios, failed = {}, False
    warm_up(task, work)
    print(f"{'case':<44}{'threads':>8}{'sequential s':>14}{'batched s':>11}{'ratio':>8}  load before -> after")
    for nodes in args.nodes:
        for algorithm in (["gossip", "--algorithm", "gossip"], ["mw-10", "--walks", str(min(10, nodes))]):
            for dist in args.dists:
                flags = [*task, *algorithm[1:], "--nodes", str(nodes), "--max-iterations", str(args.iterations),
                         "--compute-time-dist", dist, "--train-time", "1e9", "--eval-interval", "1e9",
                         "--seed", str(args.seed)]
                case = f"{'resnet20' if args.resnet else 'digits'} V={nodes} {algorithm[0]} {dist}"
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    before = load()
                    seconds_seq, events_seq = timed_run(flags, os.path.join(work, "seq"), batched=False)
                    seconds_bat, events_bat = timed_run(flags, os.path.join(work, "bat"), batched=True)
                    if not same_schedule(events_seq, events_bat):
                        print(f"FAIL {case}: the batched run's events differ from the sequential run's")
                        failed = True
                        continue
                    ratio = seconds_seq / seconds_bat
                    ratios[f"{case} threads={threads}"] = round(ratio, 2)
                    print(f"{case:<44}{threads:>8}{seconds_seq:>14.2f}{seconds_bat:>11.2f}{ratio:>8.2f}  "
                          f"{before} -> {load()}", flush=True)
    print(json.dumps(ratios))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_bench())
