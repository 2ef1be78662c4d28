"""
Asynchronous decentralized learning: Multi-Walk (MW) vs Asynchronous Gossip.

One MPI rank per graph node:
    mpirun -n 8 python main.py                       # MW, 4 walks, digits, ~1 minute
    mpirun -n 8 python main.py --algorithm gossip --graph complete
Every key of `config` below is a command-line flag (underscores become dashes).
The whole config is validated on every rank before any work starts; a bad
value prints one line and exits with code 2.
"""
import json
import os
import sys

# -----------------------------------------------------------------------------
# the config: every knob of a run, overridden by --key value on the command line
config = dict(
    algorithm="mw",          # mw | gossip
    walks=4,                 # R, number of concurrent random walks (MW)
    graph="cycle",           # cycle | complete | er | path to a JSON edge list
    er_p=0.3,                # edge probability of the Erdos-Renyi graph
    laziness=0.0,            # extra stay probability of the MW walk
    nodes=0,                 # V; 0 = the MPI world size (the simulator sets it)
    task="digits",           # digits | synthetic | cifar10 | mnli
    partition="dirichlet",   # iid | dirichlet
    alpha=1.0,               # Dirichlet concentration (smaller = more non-iid)
    tau=5,                   # local SGD steps per visit / per local update
    lr=0.05,
    momentum=0.9,
    nesterov=True,
    weight_decay=1e-4,
    batch_size=32,
    warmup_time=5.0,         # seconds of linear LR warm-up (the paper: 120)
    decay_fractions=[0.75, 0.9],  # LR x0.1 at these fractions of train_time
    train_time=60.0,         # wall-clock budget in seconds
    max_iterations=0,        # budget of local updates over all nodes; 0 = none
    eval_interval=5.0,       # seconds between evaluations at node 0
    eval_samples=0,          # test examples evaluated (a fixed seeded subset); 0 = the whole test split
    gossip_mode="free",      # free (back-to-back exchanges) | per_update
    seed=0,
    out="runs/default",
    data_dir="data",
    model_dir="",            # local OPT checkpoint for --task mnli
    transfer_dtype="float32",  # float32 | bfloat16: the dtype models travel in (bytes counted accordingly)
    device="auto",           # auto | cpu | cuda
    save_models=False,       # write the final global model and walk models
    failure_times=[],        # seconds; the i-th time fails node i (MW: aggregator moves on; gossip: node stops)
    checkpoint_every=0.0,    # seconds between consistent checkpoints in out/checkpoint/; 0 = none
    resume="",               # a run's out folder: continue it from its latest checkpoint
    stall_timeout=120.0,     # seconds without progress after which a rank counts as stalled and the job ends; 0 = never
    synthetic_samples=4000,  # size of the synthetic task
    synthetic_features=32,
    synthetic_classes=10,
    # the simulator only (simulate.py): virtual time instead of wall-clock time
    compute_time_dist="exponential",  # fixed | exponential | measured (wall time of the real update)
    compute_time_mean=0.025,  # seconds of virtual time per local update
    bandwidth=1.25e8,         # bytes/s of every link (1 Gbit/s); a transfer takes model_bytes/bandwidth + latency
    latency=1e-4,             # seconds per transfer
    skip_updates=False,       # advance the virtual clock without running SGD (pure timing studies)
    emulate_params=0,        # > 0: benchmark mode (bench.py), the model is a flat buffer of this many fp32
    emulate_compute=0.0,     #   parameters and each local update is a sleep of this many seconds
)

ALGORITHMS = ("mw", "gossip")
PARTITIONS = ("iid", "dirichlet")
GOSSIP_MODES = ("free", "per_update")
DEVICES = ("auto", "cpu", "cuda")
COMPUTE_TIME_DISTS = ("fixed", "exponential", "measured")
TASKS = ("digits", "synthetic", "cifar10", "mnli")
TRANSFER_DTYPES = ("float32", "bfloat16")
MODEL_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# what a resumed run may change: how long it runs and how it reports; the rest defines the run
RESUME_CHANGEABLE = ("train_time", "max_iterations", "eval_interval", "checkpoint_every", "device", "stall_timeout",
                     "resume")


class ConfigError(ValueError):
    """A bad command line or config value; the message is one line."""


def _convert(key, text, default):
    """Parse a flag's text to the type of its default value."""
    kind = type(default)
    try:
        if kind is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        return kind(text)
    except ValueError:
        raise ConfigError(f"--{key.replace('_', '-')} must be {kind.__name__}, got {text!r}") from None


def _check_type(key, value, where=""):
    """A config value must have its default's type (an int will do for a float)."""
    default, number = config[key], (int, float)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
    else:
        kinds = number if isinstance(default, float) else type(default)
        ok = isinstance(value, kinds) and not isinstance(value, bool)
    if not ok:
        kind = "list of numbers" if isinstance(default, list) else type(default).__name__
        raise ConfigError(f"{where}{key} must be {kind}, got {value!r}")


def resumed_config(cfg, given):
    """--resume DIR: the config the run was started with (DIR/config.json), where the command
    line may change only RESUME_CHANGEABLE keys; the run continues in DIR."""
    folder = cfg["resume"]
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--resume {folder}: {path} does not exist; resume takes the --out folder of a run") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume {folder}: {path} is unreadable: {e}") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} must hold one JSON object of config keys")
    for key, value in saved.items():
        if key not in config:
            raise ConfigError(f"{path}: unknown config key {key!r}")
        _check_type(key, value, where=f"{path}: ")
    if "out" in given:
        raise ConfigError("--out cannot be given with --resume: a resumed run continues in its own folder")
    merged = dict(config, **saved)
    for key in given:
        if key not in RESUME_CHANGEABLE and cfg[key] != merged[key]:
            raise ConfigError(f"--{key.replace('_', '-')} cannot change on --resume (the run has {merged[key]!r}); "
                              f"only {', '.join('--' + k.replace('_', '-') for k in RESUME_CHANGEABLE[:-1])} can")
        merged[key] = cfg[key]
    merged["out"] = folder
    return merged


def parse_config(argv, check_paths=True):
    """Return a validated copy of `config` with command-line overrides applied."""
    cfg, given = dict(config), set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; flags look like --walks 4")
        name, _, inline = arg[2:].partition("=")
        key = name.replace("-", "_")
        if key not in cfg:
            allowed = ", ".join("--" + k.replace("_", "-") for k in config)
            raise ConfigError(f"unknown flag --{name}; allowed: {allowed}")
        given.add(key)
        values = [inline] if inline else []
        i += 1
        while i < len(argv) and not argv[i].startswith("--") and (not values or isinstance(config[key], list)):
            values.append(argv[i])
            i += 1
        if isinstance(config[key], list):
            cfg[key] = [_convert(key, v, 0.0) for v in values]
        elif len(values) != 1:
            raise ConfigError(f"--{name} needs one value")
        else:
            cfg[key] = _convert(key, values[0], config[key])
    if cfg["resume"]:
        cfg = resumed_config(cfg, given)
    validate_config(cfg, check_paths)
    return cfg


def _one_of(cfg, key, allowed):
    if cfg[key] not in allowed:
        raise ConfigError(f"{key} {cfg[key]!r} is not one of {', '.join(allowed)}")


def validate_config(cfg, check_paths=True):
    """Checks that need no MPI and no data; graph and data checks come in build_run."""
    unknown = set(cfg) - set(config)
    if unknown:
        raise ConfigError(f"unknown config key {sorted(unknown)[0]!r}")
    for key, value in cfg.items():
        _check_type(key, value)
    _one_of(cfg, "algorithm", ALGORITHMS)
    _one_of(cfg, "task", TASKS)
    _one_of(cfg, "partition", PARTITIONS)
    _one_of(cfg, "gossip_mode", GOSSIP_MODES)
    _one_of(cfg, "device", DEVICES)
    _one_of(cfg, "compute_time_dist", COMPUTE_TIME_DISTS)
    _one_of(cfg, "transfer_dtype", TRANSFER_DTYPES)
    if cfg["graph"] not in ("cycle", "complete", "er") and not cfg["graph"].endswith(".json"):
        raise ConfigError(f"graph {cfg['graph']!r} is not one of cycle, complete, er, or a .json edge-list file")
    positive = dict(alpha=cfg["alpha"], lr=cfg["lr"], train_time=cfg["train_time"],
                    eval_interval=cfg["eval_interval"], batch_size=cfg["batch_size"],
                    compute_time_mean=cfg["compute_time_mean"], bandwidth=cfg["bandwidth"])
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if cfg["tau"] < 1:
        raise ConfigError(f"tau must be >= 1, got {cfg['tau']}")
    if cfg["walks"] < 1:
        raise ConfigError(f"walks must be >= 1, got {cfg['walks']}")
    if not 0 < cfg["er_p"] <= 1:
        raise ConfigError(f"er_p must be in (0, 1], got {cfg['er_p']}")
    if not 0 <= cfg["laziness"] < 1:
        raise ConfigError(f"laziness must be in [0, 1), got {cfg['laziness']}")
    for key in ("momentum", "weight_decay", "warmup_time", "max_iterations", "nodes", "latency", "emulate_params",
                "emulate_compute", "eval_samples", "stall_timeout"):
        if cfg[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {cfg[key]}")
    if cfg["emulate_compute"] and not cfg["emulate_params"]:
        raise ConfigError("emulate_compute needs emulate_params > 0 (the size of the emulated model)")
    if any(not 0 < f < 1 for f in cfg["decay_fractions"]):
        raise ConfigError(f"decay_fractions must lie in (0, 1), got {cfg['decay_fractions']}")
    if cfg["skip_updates"] and cfg["compute_time_dist"] == "measured":
        raise ConfigError("compute_time_dist measured times real updates, so it cannot be combined with skip_updates")
    if any(t < 0 for t in cfg["failure_times"]):
        raise ConfigError(f"failure_times must be >= 0 seconds, got {cfg['failure_times']}")
    if any(a >= b for a, b in zip(cfg["failure_times"], cfg["failure_times"][1:])):
        raise ConfigError(f"failure_times must increase (the i-th time fails node i), got {cfg['failure_times']}")
    if cfg["checkpoint_every"] < 0:
        raise ConfigError(f"checkpoint_every must be >= 0, got {cfg['checkpoint_every']}")
    if check_paths:
        if cfg["graph"].endswith(".json") and not os.path.isfile(cfg["graph"]):
            raise ConfigError(f"graph file {cfg['graph']} does not exist")
        if cfg["task"] in ("cifar10", "mnli") and not os.path.isdir(cfg["data_dir"]):
            raise ConfigError(f"data_dir {cfg['data_dir']} does not exist (task {cfg['task']} reads its data from it)")
        if cfg["task"] == "mnli" and not os.path.isdir(cfg["model_dir"]):
            raise ConfigError(f"model_dir {cfg['model_dir']!r} does not exist (task mnli loads a local OPT checkpoint from it)")
        if cfg["task"] == "mnli" and not any(os.path.isfile(os.path.join(cfg["model_dir"], f)) for f in MODEL_WEIGHT_FILES):
            raise ConfigError(f"model_dir {cfg['model_dir']} has no weights (expected {' or '.join(MODEL_WEIGHT_FILES)})")


def build_run(cfg, num_nodes):
    """Graph, data partition and plan: identical on every rank, from the seed alone."""
    import graphs
    import data
    if cfg["nodes"] and cfg["nodes"] != num_nodes:
        raise ConfigError(f"nodes {cfg['nodes']} differs from the {num_nodes} MPI ranks; launch with mpirun -n {cfg['nodes']}")
    cfg["nodes"] = num_nodes
    if cfg["algorithm"] == "mw" and cfg["walks"] > num_nodes:
        raise ConfigError(f"walks {cfg['walks']} exceeds the {num_nodes} nodes; R must be <= V")
    if len(cfg["failure_times"]) > num_nodes - 1:
        raise ConfigError(f"failure_times lists {len(cfg['failure_times'])} failures but {num_nodes} nodes "
                          f"allow at most {num_nodes - 1} (one node must survive)")
    graph = graphs.build_graph(cfg["graph"], num_nodes, er_p=cfg["er_p"], seed=cfg["seed"])
    gossip = graphs.gossip_graph(graph, cfg["graph"]) if cfg["algorithm"] == "gossip" else None
    task_data = data.load_task_data(cfg["task"], data_dir=cfg["data_dir"], seed=cfg["seed"],
                                    synthetic_samples=cfg["synthetic_samples"],
                                    synthetic_features=cfg["synthetic_features"],
                                    synthetic_classes=cfg["synthetic_classes"], model_dir=cfg["model_dir"])
    if cfg["eval_samples"]:
        task_data = data.subset_test_split(task_data, cfg["eval_samples"], cfg["seed"])
    shards = data.partition_indices(task_data.partition_labels, num_nodes, cfg["partition"], cfg["alpha"], cfg["seed"])
    return dict(graph=graph, gossip=gossip, task_data=task_data, shards=shards)


def plan_text(cfg, run):
    import graphs
    import data
    stats = graphs.graph_stats(run["graph"], cfg["laziness"])
    what = f"MW-{cfg['walks']}" if cfg["algorithm"] == "mw" else f"gossip ({cfg['gossip_mode']})"
    hist = data.class_histogram(run["task_data"].partition_labels, run["shards"], run["task_data"].num_classes)
    return (f"{what} on {cfg['graph']} (V={stats['nodes']}, {stats['edges']} edges, diameter {stats['diameter']}, "
            f"spectral gap {stats['spectral_gap']:.4f}, E[H^2]={stats['E_H2']:.1f}), task {cfg['task']}, "
            f"{cfg['partition']} alpha={cfg['alpha']}, tau={cfg['tau']}, budget {cfg['train_time']:g}s"
            + (f" / {cfg['max_iterations']} iterations" if cfg["max_iterations"] else "")
            + f"\nper-node shard classes:\n{data.format_histogram(hist)}")


def main(argv):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    error, cfg, run = None, None, None
    try:
        cfg = parse_config(argv)
        run = build_run(cfg, comm.Get_size())
        if cfg["resume"]:  # this rank's part of the latest checkpoint, checked before any work
            import checkpoint
            run["resume"] = checkpoint.load(cfg, comm.Get_rank())
    except ValueError as e:  # ConfigError, GraphError, DataError: one-line messages
        error = str(e).splitlines()[0] if str(e) else type(e).__name__
    # Every rank checks (data may be missing on one node only); all agree before any work.
    from distributed_training import polite_barrier
    polite_barrier(comm)
    errors = comm.allgather(error)
    if any(errors):
        if comm.Get_rank() == 0:
            seen = {}
            for rank, message in enumerate(errors):
                if message:
                    seen.setdefault(message, []).append(rank)
            for message, ranks in seen.items():
                where = "" if len(ranks) == comm.Get_size() else f" (rank {', '.join(map(str, ranks))})"
                print(f"error: {message}{where}", file=sys.stderr, flush=True)
        return 2
    if comm.Get_rank() == 0:
        os.makedirs(cfg["out"], exist_ok=True)
        with open(os.path.join(cfg["out"], "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        print(plan_text(cfg, run), flush=True)
    import distributed_training
    distributed_training.train(comm, cfg, run)
    if comm.Get_rank() == 0:
        print(f"results in {cfg['out']}/ (summary.json, events-rank*.jsonl, config.json)", flush=True)
    return 0


if __name__ == "__main__":
    import supervisor
    supervisor.supervise_rank()  # returns in a child process that runs the rank; see supervisor.py
    sys.exit(main(sys.argv[1:]))
