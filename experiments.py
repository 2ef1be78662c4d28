"""
The experiment grid: a named preset of configurations x seeds, run one after the
other through mpirun, then the paper's figures and REPORT.md from the finished runs.

    python experiments.py cpu                      # ~20 min on 2 cores: runs, figures, REPORT.md
    python experiments.py paper --data-dir /data/cifar-10-batches-py    # the paper's grid, GPU cluster
    python experiments.py report cpu               # figures + REPORT.md from the runs that exist
    python experiments.py list paper --only cycle  # the runs of a preset, done or not
    python experiments.py paper --only cycle --mpirun "mpirun -f hosts"   # a share of the grid, on a cluster

Run r of preset P writes runs/P/<r>/ (config.json, events-rank*.jsonl, summary.json,
plus stdout.log, stderr.log and launch.json from this runner). A run is done when
its summary.json says complete=true; done runs are skipped, so an interrupted grid
resumes where it stopped. A failed run prints the tail of its stderr and the grid
goes on; the exit code is 1 if any run failed. The report goes to runs/reports/P/
(--report-dir reports/P rewrites the committed one).
"""
import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import mpirun as mpirun_lib
import runs as runs_lib

HERE = os.path.dirname(os.path.abspath(__file__))
MAIN = os.path.join(HERE, "main.py")
PAPER_GRAPHS = {kind: os.path.join(HERE, "configs", "paper", f"{kind}_graph_20_nodes.json")
                for kind in ("cycle", "complete", "erdos_renyi")}

# Gossip at the three exchange rates claim 4 is shown at (FIDELITY.md): "gossip" is the authors-like
# default (--gossip-interval 0.045), "gossip-b2b" back to back, "gossip-pu" one exchange per local update.
GOSSIP_RATES = {"gossip": {}, "gossip-b2b": dict(gossip_interval=0.0), "gossip-pu": dict(gossip_mode="per_update")}

# A preset: flags shared by every run, a grid of (V, graph, alpha, algorithms), seeds,
# and the target the report measures against (a value of --metric, test accuracy by default).
# Algorithms are "mw<R>" or "gossip".
PRESETS = dict(
    paper=dict(
        about="the paper's grid (SEMANTICS.md §7): CIFAR-10 + ResNet-20 on the paper's 20-node graphs, 15-minute runs",
        flags=dict(task="cifar10", tau=5, lr=0.05, batch_size=32, warmup_time=120, train_time=900, eval_interval=30),
        grid=[(20, PAPER_GRAPHS[kind], alpha, ["mw1", "mw5", "mw10", "mw15", *GOSSIP_RATES])
              for kind in ("cycle", "complete", "erdos_renyi") for alpha in (10.0, 1.0, 0.1)],
        seeds=(0, 1, 2), target=0.8, startup_allowance=900),
    cpu=dict(
        about="the paper's comparisons scaled to 2 CPU cores: sklearn digits + MLP, V=8, 15-second runs",
        flags=dict(task="digits", tau=5, lr=0.05, batch_size=32, warmup_time=2, train_time=15, eval_interval=0.25),
        grid=[(8, "cycle", 1.0, ["mw1", "mw4", *GOSSIP_RATES]),
              (8, "complete", 1.0, ["mw1", "mw2", "mw4", "mw8", *GOSSIP_RATES]),
              (8, "complete", 0.1, ["mw1", "mw4", "mw8", *GOSSIP_RATES]),
              (4, "complete", 1.0, ["gossip"])],  # gossip throughput against V
        seeds=(0, 1), target=0.9, startup_allowance=180),
    smoke=dict(
        about="two 3-second runs on 4 ranks: the whole pipeline end to end (tests/test_experiments.py)",
        flags=dict(task="digits", tau=5, lr=0.05, batch_size=32, warmup_time=0.5, train_time=3, eval_interval=0.2),
        grid=[(4, "cycle", 1.0, ["mw2", "gossip"])],
        seeds=(0,), target=0.6, startup_allowance=180),
)


def expand(preset, data_dir=None, only=None):
    """The preset's runs, in order: [dict(name, nodes, flags)]."""
    runs = []
    for nodes, graph, alpha, algorithms in preset["grid"]:
        for algorithm in algorithms:
            for seed in preset["seeds"]:
                flags = dict(preset["flags"], graph=os.path.relpath(graph) if graph.endswith(".json") else graph,
                             partition="dirichlet", alpha=alpha, seed=seed,
                             algorithm="mw" if algorithm.startswith("mw") else "gossip",
                             walks=int(algorithm[2:]) if algorithm.startswith("mw") else 1,
                             **GOSSIP_RATES.get(algorithm, {}))
                if data_dir:
                    flags["data_dir"] = data_dir
                name = f"{runs_lib.graph_kind(graph)}-V{nodes}-a{alpha:g}-{algorithm}-s{seed}"
                if only is None or only in name:
                    runs.append(dict(name=name, nodes=nodes, flags=flags))
    return runs


def argv_of(flags):
    argv = []
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}"] + [str(v) for v in (value if isinstance(value, list) else [value])]
    return argv


def check_runs(runs, mpirun):
    """The checks every rank of main.py makes before training, once here for the whole grid,
    so a missing dataset or graph file fails now and not after hours of earlier runs.
    Returns None or a one-line error."""
    import data
    import graphs
    import config
    if not shutil.which(shlex.split(mpirun)[0]):
        return f"{shlex.split(mpirun)[0]} is not on PATH (pip install mpich mpi4py, or load your cluster's MPI)"
    checked = set()
    try:
        for run in runs:
            cfg = config.parse_config(argv_of(run["flags"]))
            graph = (cfg["graph"], run["nodes"], cfg["er_p"], cfg["seed"] if cfg["graph"] == "er" else 0)
            task = (cfg["task"], cfg["data_dir"], cfg["seed"] if cfg["task"] == "synthetic" else 0)
            if graph not in checked:
                graphs.build_graph(cfg["graph"], run["nodes"], er_p=cfg["er_p"], seed=cfg["seed"])
                checked.add(graph)
            if task not in checked:
                data.load_task_data(cfg["task"], data_dir=cfg["data_dir"], seed=cfg["seed"],
                                    synthetic_samples=cfg["synthetic_samples"],
                                    synthetic_features=cfg["synthetic_features"],
                                    synthetic_classes=cfg["synthetic_classes"])
                checked.add(task)
    except ValueError as e:  # ConfigError, GraphError, DataError: one-line messages
        return str(e).splitlines()[0]
    return None


def launch(run, out, preset, mpirun):
    """One mpirun; returns (exit code or 'timeout', seconds). launch.json records how it went."""
    shutil.rmtree(out, ignore_errors=True)  # a partial run from an interrupted grid starts over
    os.makedirs(out)
    command = mpirun_lib.command(run["nodes"], MAIN, argv_of(run["flags"]) + ["--out", out], mpirun)
    timeout = run["flags"]["train_time"] + preset["startup_allowance"]
    load_before, started = os.getloadavg()[0], time.time()
    with open(os.path.join(out, "stdout.log"), "w") as stdout, open(os.path.join(out, "stderr.log"), "w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=mpirun_lib.environment(),
                                   start_new_session=True)  # its own process group, so a hang can be killed whole
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = "timeout"
    seconds = time.time() - started
    with open(os.path.join(out, "launch.json"), "w") as f:
        json.dump(dict(command=" ".join(command), exit_code=code, seconds=round(seconds, 2), timeout_s=timeout,
                       load_before=load_before, load_after=os.getloadavg()[0], cores=len(os.sched_getaffinity(0)),
                       env=mpirun_lib.THREAD_LIMITS), f, indent=2)
    return code, seconds


def stderr_tail(out, lines=5):
    try:
        with open(os.path.join(out, "stderr.log")) as f:
            tail = [line.rstrip() for line in f if line.strip()][-lines:]
    except OSError:
        tail = []
    return "\n".join("    " + line for line in tail) or "    (stderr is empty)"


def is_done(run, out):
    """A run folder counts as this run done only if it finished and its config.json has this run's flags:
    a folder left by another version of the preset (other flags, other defaults) is run again."""
    if not runs_lib.is_complete(out):
        return False
    try:
        saved = runs_lib.read_json(os.path.join(out, "config.json"))
    except (OSError, ValueError):
        return False
    return all(saved.get(key) == value for key, value in run["flags"].items()) and saved.get("nodes") == run["nodes"]


def run_grid(name, preset, runs, runs_dir, mpirun):
    """Runs every run not yet done; returns the number that failed."""
    todo = [run for run in runs if not is_done(run, os.path.join(runs_dir, run["name"]))]
    error = check_runs(todo, mpirun) if todo else None
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"preset {name}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run", flush=True)
    failed, started = 0, time.time()
    for i, run in enumerate(runs, 1):
        out = os.path.join(runs_dir, run["name"])
        head = f"[{i}/{len(runs)}] {run['name']}"
        if run not in todo:
            print(f"{head}: done, skipped", flush=True)
            continue
        code, seconds = launch(run, out, preset, mpirun)
        if code == 0 and runs_lib.is_complete(out):
            with open(os.path.join(out, "summary.json")) as f:
                s = json.load(f)
            print(f"{head}: {seconds:.0f} s, {s['iterations']} updates, {s['bytes_sent'] / 1e6:.1f} MB sent, "
                  f"test acc {s['final_test_accuracy']:.4f}", flush=True)
        else:
            failed += 1
            print(f"{head}: FAILED ({'timed out' if code == 'timeout' else f'exit code {code}'}) after {seconds:.0f} s; "
                  f"stderr ends:\n{stderr_tail(out)}", flush=True)
    print(f"preset {name}: grid finished in {(time.time() - started) / 60:.1f} min, {failed} failed", flush=True)
    return failed


def make_report(name, preset, runs, runs_dir, report_dir, metric):
    import report
    finished = [os.path.join(runs_dir, run["name"]) for run in runs]
    finished = [path for path in finished if runs_lib.is_complete(path)]
    if not finished:
        print(f"error: no finished runs of preset {name} under {runs_dir}", file=sys.stderr)
        return 2
    os.makedirs(report_dir, exist_ok=True)
    loaded = runs_lib.find_runs(finished)
    verdicts = report.write_report(loaded, metric, preset["target"], report_dir, f"Reproduction report: preset `{name}`",
                                   f"python experiments.py report {name}")
    print(f"{os.path.join(report_dir, 'REPORT.md')} from {len(loaded)} of {len(runs)} runs: "
          + ", ".join(f"claim {n} {v}" for n, v in verdicts.items()), flush=True)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PRESETS:
        argv = ["run"] + argv
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     epilog="presets: " + "; ".join(f"{k}: {p['about']}" for k, p in PRESETS.items()))
    parser.add_argument("command", choices=("run", "report", "list"))
    parser.add_argument("preset", choices=tuple(PRESETS))
    parser.add_argument("--runs-dir", default="runs", help="runs go to RUNS_DIR/<preset>/<run>")
    parser.add_argument("--report-dir", default=None,
                        help="REPORT.md and figures/ (default RUNS_DIR/reports/<preset>; reports/<preset> is committed)")
    parser.add_argument("--metric", default="test_accuracy", choices=runs_lib.METRICS,
                        help="the metric of the preset's target (its value stays the preset's)")
    parser.add_argument("--data-dir", default=None, help="main.py's --data-dir for every run (CIFAR-10 batches)")
    parser.add_argument("--only", default=None, help="only the runs whose name contains this text")
    parser.add_argument("--mpirun", default="mpirun", help="the launcher and its options, e.g. 'mpirun -f hosts'")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    runs_dir = os.path.join(args.runs_dir, args.preset)
    report_dir = args.report_dir or os.path.join(args.runs_dir, "reports", args.preset)
    runs = expand(preset, args.data_dir, args.only)
    if not runs:
        print(f"error: no run of preset {args.preset} has {args.only!r} in its name", file=sys.stderr)
        return 2
    if args.command == "list":
        for run in runs:
            done = "done" if is_done(run, os.path.join(runs_dir, run["name"])) else "todo"
            print(f"{done}  {run['name']}: {args.mpirun} -n {run['nodes']} python main.py {' '.join(argv_of(run['flags']))}")
        return 0
    failed = run_grid(args.preset, preset, runs, runs_dir, args.mpirun) if args.command == "run" else 0
    code = make_report(args.preset, preset, runs, runs_dir, report_dir, args.metric)
    return 1 if failed else code


if __name__ == "__main__":
    sys.exit(main())
