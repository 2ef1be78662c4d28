"""
The experiment grid: a named preset of configurations x seeds, run one after the
other through mpirun (or, for a simulated preset, simulate.py, --jobs at a time), then
the paper's figures and REPORT.md from the finished runs.

    python experiments.py cpu                      # ~20 min on 2 cores: runs, figures, REPORT.md
    python experiments.py paper --data-dir /data/cifar-10-batches-py    # the paper's grid, GPU cluster
    python experiments.py paper_sim                # the paper's grid in simulation, a run per core at a time
    python experiments.py report cpu               # figures + REPORT.md from the runs that exist
    python experiments.py list paper --only cycle  # the runs of a preset, done or not
    python experiments.py paper --only cycle --mpirun "mpirun -f hosts"   # a share of the grid, on a cluster

Run r of preset P writes runs/P/<r>/ (config.json, events-rank*.jsonl, summary.json,
plus stdout.log, stderr.log and launch.json from this runner). A simulated preset's run is
`python simulate.py --nodes V ...` (what `list` prints), started as a forked child of this
process, which has imported torch once: the same code and outputs without the seconds of
start-up per run. A run is done when
its summary.json says complete=true; done runs are skipped, so an interrupted grid
resumes where it stopped. A failed run prints the tail of its stderr and the grid
goes on; the exit code is 1 if any run failed. The report goes to runs/reports/P/
(--report-dir reports/P rewrites the committed one).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import json
import resource
import shlex
import shutil
import signal
import subprocess
import time
import traceback

from core import config
from core import run_folder
from core import mpirun_command as mpirun_lib
from core import run_records as runs_lib

MAIN = os.path.join(REPO, "main.py")
SIMULATE = os.path.join(REPO, "simulate.py")
PAPER_GRAPHS = {kind: os.path.join(REPO, "configs", "paper", f"{kind}_graph_20_nodes.json")
                for kind in ("cycle", "complete", "erdos_renyi")}

# Gossip at the three exchange rates claim 4 is shown at (FIDELITY.md): "gossip" at the authors' rate (the default
# --gossip-pacing authors: their engine's polls in the simulator, a 64.95 ms exchange cycle in the MPI engine),
# "gossip-b2b" back to back, "gossip-pu" one exchange per local update.
GOSSIP_RATES = {"gossip": {}, "gossip-b2b": dict(gossip_pacing="interval", gossip_interval=0.0), "gossip-pu": dict(gossip_mode="per_update")}
GOSSIP_INTERVAL_AUTHORS = config.config["gossip_interval"]  # the authors-like rate of "gossip"

# The paper's hardware on the simulator's virtual clock (paper_sim; its REPORT.md derives them):
RESNET20_BYTES = 272_474 * 4   # one fp32 ResNet-20 on the wire, counted and timed per transfer: 1,089,896 B
GPU_UPDATE_S = 0.025           # mean of one local update of ResNet-20 (tau 5 steps of batch 32) on a GPU
LINK_BYTES_PER_S = 1.25e8      # 1 Gbit/s links (8.7 ms per ResNet-20)
LINK_LATENCY_S = 1e-4

# paper_sim's runs (paper_verdicts' too): they end at the same number of local updates (all nodes), with a
# constant lr, since a virtual-time warm-up and decay would fall at different iterations for each algorithm
PAPER_SIM_FLAGS = dict(task="digits", tau=5, lr=0.05, batch_size=32, warmup_time=0.0, train_time=1e9,
                       max_iterations=3000, compute_time_dist="exponential", compute_time_mean=GPU_UPDATE_S,
                       bandwidth=LINK_BYTES_PER_S, latency=LINK_LATENCY_S, virtual_model_bytes=RESNET20_BYTES)


def paper_sim_notes(preset):
    """The setting of the paper_sim preset, for its REPORT.md: the task, the budget and target, and where
    the virtual-time model's numbers come from."""
    flags = preset["flags"]
    transfer_ms = (flags["virtual_model_bytes"] / flags["bandwidth"] + flags["latency"]) * 1e3
    update_ms = flags["compute_time_mean"] * 1e3
    return [
        f"**Grid.** The paper's (SEMANTICS.md §7): V = 20 on the exact graphs of `configs/paper/` (cycle, complete, "
        f"Erdos-Renyi), Dirichlet alpha in {{10, 1, 0.1}} (the authors' partitioner), MW-{{1, 5, 10, 15}} and gossip at "
        f"the three exchange rates of FIDELITY.md (authors-like: {GOSSIP_INTERVAL_AUTHORS * 1e3:g} ms between an active "
        f"node's exchange starts; back to back; one exchange per local update), tau = {flags['tau']}, seeds "
        f"{', '.join(map(str, preset['seeds']))} (a seed fixes the split, the initial model, the batches, the walks and "
        "every compute time, so each run is reproduced exactly by its `python simulate.py` line in "
        "`python experiments.py list paper_sim`). Added for claim 3's V axis: gossip (authors-like) on complete "
        "graphs of 5 and 10 nodes, alpha 1.",
        "",
        f"**Task.** scikit-learn's digits (8x8 grey images, 1,438 train / 359 test, offline) and the project's MLP "
        f"(64-128-10, 9,610 parameters), batch {flags['batch_size']}, lr {flags['lr']:g} with Nesterov momentum 0.9 "
        f"and weight decay 1e-4; 71 training images per node. The MLP has no BatchNorm, which the paper's "
        f"ResNet-20 has: the task `digits_bn` (a 38k-parameter CNN with BatchNorm) runs a reduced grid of its own, "
        f"preset `bn_standin` (reports/bn_standin/); ResNet-20 took 0.8 s per local update here (one thread). With `--data-dir` the same grid runs "
        f"ResNet-20 on CIFAR-10 (the paper's task) with a {preset['with_data_dir']['flags']['max_iterations']:,}-update "
        f"budget and a {preset['with_data_dir']['target']:g} target, both untested guesses for a GPU machine.",
        "",
        f"**Budget and target.** Every run ends at {flags['max_iterations']:,} local updates over all nodes, not at "
        "the paper's 15 minutes: equal budgets give every curve the same number of updates to reach the target, and a "
        "simulated run costs its number of updates, not its virtual time (MW-1 covers 20 times the virtual time of "
        "gossip with the same updates, which the time panels show). The learning rate is constant (no warm-up, no "
        "decay): on the virtual clock they would fall at different iterations for each algorithm. About "
        f"{preset['evals_per_run']} evaluations per run (`--eval-interval` from the rate the delay model predicts), "
        f"so *iterations to target* has a resolution of about {flags['max_iterations'] // preset['evals_per_run']} "
        f"updates. Target: test accuracy >= {preset['target']:g}, which the best curve of a setting reaches after "
        "hundreds of updates (the table above; the MLP's best accuracy here is about 0.97).",
        "",
        f"**Compute time: {update_ms:g} ms per local update**, exponential (the paper's delay model), one draw per update "
        "from the seed. An estimate, not a measurement (no GPU was lent to this task): one SGD step of ResNet-20 on a "
        "batch of 32 is about 4 G multiply-adds (3 x 41 M per image for the forward and backward passes), under a "
        "millisecond of arithmetic on a data-centre GPU; at that size an eager PyTorch step is bound by launching "
        "its ~250 kernels (~15-20 us of dispatch each), 4-5 ms, so tau = 5 steps with batch reads and host-device "
        f"copies take 20-30 ms. The authors' CPU-side augmentation and 10 ms polling could add 5-15 ms more. The same "
        "25 ms is config.py's default and many_nodes.py's.",
        "",
        f"**Bandwidth: {flags['bandwidth'] * 8 / 1e9:g} Gbit/s per link** plus {flags['latency'] * 1e3:g} ms: "
        f"{transfer_ms:.2f} ms per transfer of ResNet-20's {flags['virtual_model_bytes']:,} B (272,474 fp32), which "
        "is also what every transfer counts (`--virtual-model-bytes`), so the GB axis is the paper's model's. "
        "FIDELITY.md's derivation of the authors' exchange rate puts two 1.09 MB transfers through gloo at about "
        "10-20 ms on their network, 5-10 ms each: 1-2 Gbit/s. The paper states no link speed that this project has.",
        "",
        f"**Gossip pacing against this clock.** The authors-like interval ({GOSSIP_INTERVAL_AUTHORS * 1e3:g} ms) comes "
        "from the authors' 10 ms sleep-polls, not from their GPUs, so it stays. An exchange takes two transfers "
        f"({2 * transfer_ms:.1f} ms), so the interval, not the link, sets the rate: at most "
        f"{1 / GOSSIP_INTERVAL_AUTHORS:.0f} exchanges/s per active node, while a node computes up to "
        f"{1e3 / update_ms:.0f} updates/s. With the authors' coupling (a finished delta waits for an exchange, "
        "FIDELITY.md) authors-like gossip is therefore exchange-bound here: about one exchange per active-node "
        "update and fewer updates per virtual second than back-to-back gossip (the table above). With updates of "
        f"{GOSSIP_INTERVAL_AUTHORS * 1e3:g} ms or more (a slower GPU) it would be compute-bound. Back to back "
        f"({2 * transfer_ms:.1f} ms per exchange) is compute-bound. Iterations and bytes depend on the clock only "
        "through such rates (exchanges per update, walks queueing at a node).",
    ]


PRIMARY_SEEDS, SECONDARY_SEEDS = tuple(range(10)), tuple(range(5))  # docs/analysis_plan.md

def paper_verdicts_notes(preset):
    """paper_sim's setting notes, the grid paragraph replaced by the plan's runs."""
    return [f"**Grid.** docs/analysis_plan.md's runs on paper_sim's setting: the primary tests at seeds "
            f"{PRIMARY_SEEDS[0]}-{PRIMARY_SEEDS[-1]} (cycle: MW-1 and gossip; complete: MW-1, -5, -10, -15 and gossip; "
            f"alpha 10, 1, 0.1; V = 20 on the graphs of `configs/paper/`), the secondary grid at seeds "
            f"{SECONDARY_SEEDS[0]}-{SECONDARY_SEEDS[-1]} (cycle MW-5, -10, -15; gossip back to back and per update at "
            "alpha 1; Erdos-Renyi MW-1, MW-10 and gossip at alpha 1 and 0.1); gossip's network average is evaluated "
            "beside node 0's model at every evaluation. Each run is reproduced exactly by its `python simulate.py` "
            "line in `python experiments.py list paper_verdicts`.", ""] + paper_sim_notes(preset)[2:]


def bn_standin_notes(preset):
    """paper_sim's setting notes, the grid and task paragraphs replaced by the stand-in's."""
    return [f"**Grid.** docs/analysis_plan.md's BatchNorm stand-in: V = 20 on the cycle and complete graphs of "
            f"`configs/paper/`, Dirichlet alpha 1 and 0.1, MW-1, MW-10 and gossip (authors-like rate), seeds "
            f"{preset['seeds'][0]}-{preset['seeds'][-1]}; gossip's network average is evaluated beside node 0's model. "
            "Each run is reproduced exactly by its `python simulate.py` line in `python experiments.py list bn_standin`. "
            "What the stand-in shows, beside the MLP grid's verdicts: [README.md](README.md), written by hand "
            "after the runs.",
            "",
            "**Task.** `digits_bn`: scikit-learn's digits (8x8 grey images, 1,438 train / 359 test) and a small CNN "
            "with BatchNorm (`models.DigitsCNN`: 3x3 convolutions of 16 and 32 channels, each with BatchNorm, a 64-unit "
            "hidden layer; 38,330 parameters), batch 32, lr 0.05 with Nesterov momentum 0.9 and weight decay 1e-4. As "
            "ResNet-20's, the BatchNorm running statistics are buffers that stay at each node: a walk or a gossip "
            "exchange carries the parameters only, a node's local steps update its own statistics, and a model is "
            "evaluated with the statistics of the node that evaluates it (node 0; the network average with those of "
            "the final model's holder), with no recalibration (the authors' default, FIDELITY.md).",
            "",
            f"**Budget and targets.** Every run ends at {preset['flags']['max_iterations']:,} local updates over all "
            f"nodes (paper_sim's 3,000 did not fit the hour: a CNN update costs about four times the MLP's, and the machine "
            f"was shared), about "
            f"{preset['evals_per_run']} evaluations per run (a resolution of about "
            f"{preset['flags']['max_iterations'] // preset['evals_per_run']} updates), constant lr. Targets "
            f"{' / '.join(f'{t:g}' for t in preset['targets'])}, chosen from a pilot of one seed (99, not counted): "
            "docs/analysis_plan.md's stand-in section gives the pilot's curves and the deviations from the main plan. "
            f"The train metrics use the first {preset['flags']['eval_train_samples']} images of the evaluated train "
            "half (`--eval-train-samples`; no verdict reads them).",
            ""] + paper_sim_notes(dict(PRESETS["paper_sim"], flags=preset["flags"]))[6:]  # compute, links, pacing


# A preset: flags shared by every run, a grid of (V, graph, alpha, algorithms[, seeds]) (seeds: the
# preset's unless given), seeds, the target the report measures against (a value of --metric, test
# accuracy by default) and, where the analysis plan judges it, its targets.
# Algorithms are "mw<R>" or "gossip". A simulated preset (runner "simulate") also has
# evals_per_run (each run's --eval-interval is set from it), a wall-clock timeout per run, and
# with_data_dir: what changes when experiments.py is given --data-dir.
PRESETS = dict(
    paper=dict(
        about="the paper's grid (SEMANTICS.md §7): CIFAR-10 + ResNet-20 on the paper's 20-node graphs, 15-minute runs",
        # evaluations every 10 s, the authors' own period: "s to target" is read at the first evaluation past the
        # target, so its resolution is the interval: a 5-minute time to target is resolved to 10% of itself at
        # 30 s, to 3% at 10 s, as finely as the paper's curves (an evaluation runs beside training,
        # --concurrent-eval, as theirs does on node 0's GPU)
        flags=dict(task="cifar10", tau=5, lr=0.05, batch_size=32, warmup_time=120, train_time=900, eval_interval=10),
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
    paper_sim=dict(
        about="the paper's grid in simulation (simulate.py, --jobs runs at a time): digits + MLP on the paper's "
              "20-node graphs, ResNet-20's bytes and a GPU's update time on the virtual clock, 5 seeds, ~35 min on 2 cores "
              "(--data-dir: ResNet-20 on CIFAR-10, for a GPU)",
        runner="simulate",
        flags=PAPER_SIM_FLAGS,
        grid=[(20, PAPER_GRAPHS[kind], alpha, ["mw1", "mw5", "mw10", "mw15", *GOSSIP_RATES])
              for kind in ("cycle", "complete", "erdos_renyi") for alpha in (10.0, 1.0, 0.1)]
             + [(nodes, "complete", 1.0, ["gossip"]) for nodes in (5, 10)],  # claim 3: gossip against V
        # 300 evaluations per run: "iterations to target" is read at the first evaluation past the target, and the
        # fastest curves reach it in 70-135 updates (reports/paper_sim), which 100 evaluations resolved to ~20-30
        # updates (MW-1 under the authors' engine timing: 151 evaluations, one per 20 updates); 300 give ~7, <= 10% of
        # the fastest. An evaluation of the MLP on digits costs ~2.4 ms (load 12): under 1 s per run
        seeds=(0, 1, 2, 3, 4), target=0.93, evals_per_run=300, timeout=900, notes=paper_sim_notes,
        with_data_dir=dict(flags=dict(task="cifar10", max_iterations=20000), target=0.7)),
    paper_verdicts=dict(
        about="docs/analysis_plan.md's runs: paper_sim's setting, the primary tests at 10 seeds (cycle MW-1 + gossip, "
              "complete MW-1/5/10/15 + gossip, alpha 10/1/0.1) and the secondary grid at 5, gossip's network average "
              "logged at every evaluation; its report leads with the plan's verdicts at three targets",
        runner="simulate",
        flags=dict(PAPER_SIM_FLAGS, eval_network_average=True),
        # (V, graph, alpha, algorithms, seeds): primary at 10 seeds, secondary at 5 (the first five)
        grid=[(20, PAPER_GRAPHS["cycle"], alpha, ["mw1", "gossip"], PRIMARY_SEEDS) for alpha in (10.0, 1.0, 0.1)]
             + [(20, PAPER_GRAPHS["complete"], alpha, ["mw1", "mw5", "mw10", "mw15", "gossip"], PRIMARY_SEEDS)
                for alpha in (10.0, 1.0, 0.1)]
             + [(20, PAPER_GRAPHS["cycle"], alpha, ["mw5", "mw10", "mw15"], SECONDARY_SEEDS) for alpha in (10.0, 1.0, 0.1)]
             + [(20, PAPER_GRAPHS[kind], 1.0, ["gossip-b2b", "gossip-pu"], SECONDARY_SEEDS) for kind in ("cycle", "complete")]
             + [(20, PAPER_GRAPHS["erdos_renyi"], alpha, ["mw1", "mw10", "gossip"], SECONDARY_SEEDS) for alpha in (1.0, 0.1)],
        seeds=PRIMARY_SEEDS, target=0.93, targets=(0.90, 0.93, 0.95), evals_per_run=100, timeout=900,
        notes=paper_verdicts_notes, with_data_dir=dict(flags=dict(task="cifar10", max_iterations=20000), target=0.7,
                                                  targets=(0.6, 0.7, 0.75))),
    bn_standin=dict(
        about="docs/analysis_plan.md's BatchNorm stand-in: paper_sim's setting with digits_bn (a 38k-parameter CNN with "
              "BatchNorm) instead of the MLP, cycle + complete, alpha 1/0.1, MW-1/10 + gossip, 5 seeds, 400-update "
              "budget; gossip's network average logged; its report leads with the plan's verdicts at 0.80/0.85/0.90",
        runner="simulate",
        # the first 100 images of the train half for the train metrics (no verdict reads them): evaluations cost less
        flags=dict(PAPER_SIM_FLAGS, task="digits_bn", eval_network_average=True, max_iterations=400, eval_train_samples=100),
        grid=[(20, PAPER_GRAPHS[kind], alpha, ["mw1", "mw10", "gossip"]) for kind in ("cycle", "complete")
              for alpha in (1.0, 0.1)],
        seeds=SECONDARY_SEEDS, target=0.85, targets=(0.80, 0.85, 0.90), evals_per_run=40, timeout=1800,
        notes=bn_standin_notes),
    smoke=dict(
        about="two 3-second runs on 4 ranks: the whole pipeline end to end (tests/test_experiments.py)",
        flags=dict(task="digits", tau=5, lr=0.05, batch_size=32, warmup_time=0.5, train_time=3, eval_interval=0.2),
        grid=[(4, "cycle", 1.0, ["mw2", "gossip"])],
        seeds=(0,), target=0.6, startup_allowance=180),
)


def with_data_dir(preset, data_dir):
    """The preset as run with --data-dir: a simulated preset's with_data_dir changes applied."""
    change = preset.get("with_data_dir") if data_dir else None
    return dict(preset, flags=dict(preset["flags"], **change["flags"]),
                **{k: change[k] for k in ("target", "targets") if k in change}) if change else preset


def is_simulated(preset):
    return preset.get("runner") == "simulate"


def eval_interval(preset, nodes, algorithm):
    """Virtual seconds between a simulated run's evaluations: about preset["evals_per_run"] of them over
    its iteration budget at the rate the delay model gives (MW-R: R / (update + transfer) updates/s,
    gossip: V / update); walks that queue and gossip nodes that wait for an exchange go slower, and
    so are evaluated a little more often."""
    flags = preset["flags"]
    transfer = flags["virtual_model_bytes"] / flags["bandwidth"] + flags["latency"]
    rate = (int(algorithm[2:]) / (flags["compute_time_mean"] + transfer) if algorithm.startswith("mw")
            else nodes / flags["compute_time_mean"])
    return round(flags["max_iterations"] / rate / preset["evals_per_run"], 6)


def expand(preset, data_dir=None, only=None):
    """The preset's runs, in order: [dict(name, nodes, flags)]."""
    runs = []
    preset = with_data_dir(preset, data_dir)
    for nodes, graph, alpha, algorithms, *seeds in preset["grid"]:
        for algorithm in algorithms:
            for seed in (seeds[0] if seeds else preset["seeds"]):
                flags = dict(preset["flags"], graph=os.path.relpath(graph) if graph.endswith(".json") else graph,
                             partition="dirichlet", alpha=alpha, seed=seed,
                             algorithm="mw" if algorithm.startswith("mw") else "gossip",
                             walks=int(algorithm[2:]) if algorithm.startswith("mw") else 1,
                             **GOSSIP_RATES.get(algorithm, {}))
                if is_simulated(preset):
                    flags["eval_interval"] = eval_interval(preset, nodes, algorithm)
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


def command_of(run, out, preset, mpirun):
    """The command line of one run: mpirun -n V python main.py ..., or python simulate.py --nodes V ..."""
    argv = argv_of(run["flags"]) + ["--out", out]
    if is_simulated(preset):
        return [sys.executable, SIMULATE, "--nodes", str(run["nodes"]), *argv]
    return mpirun_lib.command(run["nodes"], MAIN, argv, mpirun)


def check_runs(runs, mpirun):
    """The checks every rank of main.py makes before training, once here for the whole grid,
    so a missing dataset or graph file fails now and not after hours of earlier runs.
    Returns None or a one-line error. mpirun None: simulated runs, no launcher to check."""
    import graphs
    import tasks
    if mpirun is not None and not shutil.which(shlex.split(mpirun)[0]):
        return f"{shlex.split(mpirun)[0]} is not on PATH (pip install mpich mpi4py, or load your cluster's MPI)"
    checked = set()
    try:
        for run in runs:
            cfg = config.parse_config(argv_of(run["flags"]))
            graph = (cfg["graph"], run["nodes"], cfg["er_p"], cfg["seed"] if cfg["graph"] == "er" else 0)
            task = tasks.get(cfg["task"])
            data_key = (task.name, *(cfg[key] for key in task.data_keys))  # equal values, equal data
            if graph not in checked:
                graphs.build_graph(cfg["graph"], run["nodes"], er_p=cfg["er_p"], seed=cfg["seed"])
                checked.add(graph)
            if data_key not in checked:
                task.load_data(cfg)
                checked.add(data_key)
    except ValueError as e:  # ConfigError, GraphError, DataError: one-line messages
        return str(e).splitlines()[0]
    return None


def run_mpirun(command, out, timeout):
    """The command in its own process group, output into out/; its exit code or 'timeout'."""
    with open(os.path.join(out, "stdout.log"), "w") as stdout, open(os.path.join(out, "stderr.log"), "w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=mpirun_lib.environment(),
                                   start_new_session=True)  # its own process group, so a hang can be killed whole
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return "timeout"


def warm_simulator():
    """Import what simulate.py imports, once, before the runs are forked from this process: torch
    (seconds), and torch._dynamo, which torch.optim imports on a first optimizer (seconds more).
    MPI is not started here: a forked child starts its own when it records the software versions.
    One torch thread, as simulate.py sets it."""
    import simulate  # noqa: F401
    import torch
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def simulate_child(argv, out):
    """In a forked child: simulate.py's main on argv, its output into out/stdout.log and stderr.log;
    never returns (os._exit with simulate.py's exit code)."""
    code = 1
    try:
        sys.stdout = open(os.path.join(out, "stdout.log"), "w", buffering=1)
        sys.stderr = open(os.path.join(out, "stderr.log"), "w", buffering=1)
        os.dup2(sys.stdout.fileno(), 1)  # and what C code writes
        os.dup2(sys.stderr.fileno(), 2)
        import simulate
        code = simulate.simulate_main(argv) or 0
    except SystemExit as e:  # argparse and the config checks exit with a message or a code
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def start_forked(command, out):
    """python simulate.py ARGS as a forked child of this warm process; its pid."""
    sys.stdout.flush()
    sys.stderr.flush()  # nothing buffered here is written again by the child
    pid = os.fork()
    if pid == 0:
        simulate_child(command[2:], out)
    return pid


def prepare(run, runs_dir, preset, mpirun):
    """A fresh folder for the run (a partial one from an interrupted grid starts over); its command."""
    out = os.path.join(runs_dir, run["name"])
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    return out, command_of(run, out, preset, mpirun)


def write_launch(out, command, code, started, cpu_s, load_before, timeout, jobs, simulated):
    """launch.json: how the run went, read by the report (times, CPU, load)."""
    with open(os.path.join(out, "launch.json"), "w") as f:
        json.dump(dict(command=" ".join(command), exit_code=code, started=round(started, 2),
                       seconds=round(time.time() - started, 2), timeout_s=timeout, cpu_s=round(cpu_s, 2),
                       load_before=load_before, load_after=os.getloadavg()[0], cores=len(os.sched_getaffinity(0)),
                       jobs=jobs, env={"torch_threads": 1} if simulated else mpirun_lib.THREAD_LIMITS,
                       **(dict(runner="forked from experiments.py") if simulated else {})), f, indent=2)
    return time.time() - started


def launch_mpirun(run, runs_dir, preset, mpirun):
    """One mpirun run, waited for; returns (exit code or 'timeout', seconds)."""
    out, command = prepare(run, runs_dir, preset, mpirun)
    timeout = run["flags"]["train_time"] + preset["startup_allowance"]
    load_before, started = os.getloadavg()[0], time.time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = usage.ru_utime + usage.ru_stime
    code = run_mpirun(command, out, timeout)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return code, write_launch(out, command, code, started, usage.ru_utime + usage.ru_stime - cpu_before,
                              load_before, timeout, 1, simulated=False)


def launch_forked(todo, runs_dir, preset, jobs, finished):
    """The simulated runs, `jobs` forked children at a time; finished(run, code, seconds) as each ends.
    A run's outputs depend on its flags and seed alone, so running runs side by side changes nothing in them."""
    queue, running, killed = list(todo), {}, set()  # running: pid -> (run, out, command, started, load_before)
    while queue or running:
        while queue and len(running) < jobs:
            run = queue.pop(0)
            out, command = prepare(run, runs_dir, preset, None)
            load_before, started = os.getloadavg()[0], time.time()
            running[start_forked(command, out)] = (run, out, command, started, load_before)
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid == 0:
            for pid, (_, _, _, started, _) in running.items():
                if pid not in killed and time.time() - started > preset["timeout"]:
                    os.kill(pid, signal.SIGKILL)  # reaped by wait4 like any other end, reported as a timeout
                    killed.add(pid)
            time.sleep(0.1)
            continue
        run, out, command, started, load_before = running.pop(pid)
        code = "timeout" if pid in killed else os.waitstatus_to_exitcode(status)
        seconds = write_launch(out, command, code, started, usage.ru_utime + usage.ru_stime, load_before,
                               preset["timeout"], jobs, simulated=True)
        finished(run, code, seconds)


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


def run_grid(name, preset, runs, runs_dir, mpirun, jobs):
    """Runs every run not yet done; returns the number that failed."""
    todo = [run for run in runs if not is_done(run, os.path.join(runs_dir, run["name"]))]
    simulated = is_simulated(preset)
    error = check_runs(todo, None if simulated else mpirun) if todo else None
    try:  # the run folder's gate: a folder a live run holds (another grid, a run by hand) is never replaced
        for run in todo:
            run_folder.check_not_live(os.path.join(runs_dir, run["name"]))
    except config.ConfigError as e:
        error = error or str(e)
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if todo and simulated:
        warm_simulator()
    jobs = max(1, min(jobs, len(todo)))
    print(f"preset {name}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run"
          + (f", {jobs} at a time" if simulated else ""), flush=True)
    index = {run["name"]: i for i, run in enumerate(runs, 1)}
    for run in runs:
        if run not in todo:
            print(f"[{index[run['name']]}/{len(runs)}] {run['name']}: done, skipped", flush=True)
    failed, started = [], time.time()

    def finished(run, code, seconds):
        out = os.path.join(runs_dir, run["name"])
        head = f"[{index[run['name']]}/{len(runs)}] {run['name']}"
        if code == 0 and runs_lib.is_complete(out):
            s = runs_lib.read_json(os.path.join(out, "summary.json"))
            print(f"{head}: {seconds:.0f} s, {s['iterations']} updates, {s['bytes_sent'] / 1e6:.1f} MB sent, "
                  f"test acc {s['final_test_accuracy']:.4f}", flush=True)
        else:
            failed.append(run["name"])
            print(f"{head}: FAILED ({'timed out' if code == 'timeout' else f'exit code {code}'}) after {seconds:.0f} s; "
                  f"stderr ends:\n{stderr_tail(out)}", flush=True)

    if simulated:
        launch_forked(todo, runs_dir, preset, jobs, finished)
    else:
        for run in todo:
            finished(run, *launch_mpirun(run, runs_dir, preset, mpirun))
    print(f"preset {name}: grid finished in {(time.time() - started) / 60:.1f} min, {len(failed)} failed", flush=True)
    return len(failed)


def make_report(name, preset, runs, runs_dir, report_dir, metric):
    from analysis import report
    finished = [os.path.join(runs_dir, run["name"]) for run in runs]
    missing = [run["name"] for run, path in zip(runs, finished) if not runs_lib.is_complete(path)]
    finished = [path for path in finished if runs_lib.is_complete(path)]
    if not finished:
        print(f"error: no finished runs of preset {name} under {runs_dir}", file=sys.stderr)
        return 2
    os.makedirs(report_dir, exist_ok=True)
    loaded = runs_lib.find_runs(finished)
    verdicts = report.write_report(loaded, metric, preset["target"], report_dir, f"Reproduction report: preset `{name}`",
                                   f"python experiments.py report {name}", notes=preset.get("notes", lambda _: [])(preset),
                                   targets=preset.get("targets"), missing=missing)
    print(f"{os.path.join(report_dir, 'REPORT.md')} from {len(loaded)} of {len(runs)} runs: "
          + ", ".join(f"claim {n} {v}" for n, v in verdicts.items()), flush=True)
    return 0


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


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
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="simulated runs at a time, each a process of one torch thread (default: the cores "
                             "this process may use); mpirun presets run one at a time")
    parser.add_argument("--mpirun", default="mpirun", help="the launcher and its options, e.g. 'mpirun -f hosts'")
    args = parser.parse_args(argv)
    preset = with_data_dir(PRESETS[args.preset], args.data_dir)
    runs_dir = os.path.join(args.runs_dir, args.preset)
    report_dir = args.report_dir or os.path.join(args.runs_dir, "reports", args.preset)
    runs = expand(preset, args.data_dir, args.only)
    if not runs:
        print(f"error: no run of preset {args.preset} has {args.only!r} in its name", file=sys.stderr)
        return 2
    if args.command == "list":
        for run in runs:
            out = os.path.join(runs_dir, run["name"])
            command = ["python" if word == sys.executable else os.path.relpath(word) if word in (MAIN, SIMULATE) else word
                       for word in command_of(run, out, preset, args.mpirun)]
            print(f"{'done' if is_done(run, out) else 'todo'}  {run['name']}: {shlex.join(command)}")
        return 0
    if args.jobs is not None and args.jobs > 1 and not is_simulated(preset):
        print(f"error: --jobs {args.jobs}: preset {args.preset} runs mpirun, which takes every rank's cores, so its "
              "runs go one at a time (--jobs 1); --jobs > 1 is for simulated presets", file=sys.stderr)
        return 2
    jobs = args.jobs or (len(os.sched_getaffinity(0)) if is_simulated(preset) else 1)
    failed = run_grid(args.preset, preset, runs, runs_dir, args.mpirun, jobs) if args.command == "run" else 0
    code = make_report(args.preset, preset, runs, runs_dir, report_dir, args.metric)
    return 1 if failed else code


if __name__ == "__main__":
    sys.exit(main())
