"""
The configuration of a run: every key of `config` is a command-line flag
(--walks 4, --er-p=0.5, --failure-times 5 10, --nesterov false), parsed with
argparse, so `python main.py --help` lists them all with their defaults.
parse_config returns a validated copy; a bad value raises ConfigError with a
one-line message naming the value and what is allowed. Standard library and the
task registry only (tasks/ imports no torch): main.py checks its flags, and the folders
the task reads, before importing torch or starting any work.
"""
import argparse
import difflib
import json
import math
import os
import re

import tasks
from simulation import engine_timing  # its constants only: no torch, no numpy at import

# -----------------------------------------------------------------------------
# every knob of a run, overridden by --key value on the command line
config = dict(
    algorithm="mw",          # mw | gossip: a name in protocols.PROTOCOLS, the registry of algorithms
    walks=4,                 # R, number of concurrent random walks (MW)
    graph="cycle",           # cycle | complete | er | path to a JSON edge list
    er_p=0.3,                # edge probability of the Erdos-Renyi graph
    laziness=0.0,            # extra stay probability of the MW walk
    nodes=0,                 # V; 0 = the MPI world size (the simulator sets it)
    task="digits",           # digits | synthetic | cifar10 | mnli (tasks/__init__.py)
    partition="dirichlet",   # dirichlet (the authors' partitioner) | dirichlet_plain | iid
    alpha=1.0,               # Dirichlet concentration (smaller = more non-iid)
    tau=5,                   # local SGD steps per visit / per local update
    lr=0.05,                 # peak learning rate (SGD; Adam for mnli)
    momentum=0.9,            # SGD momentum, in [0, 1)
    nesterov=True,           # Nesterov momentum
    weight_decay=1e-4,       # L2 weight decay, in [0, 1)
    batch_size=32,           # mini-batch size per node
    warmup_time=5.0,         # seconds of linear LR warm-up (the paper: 120)
    decay_fractions=[0.75, 0.9],  # LR x0.1 at these fractions of train_time
    train_time=60.0,         # wall-clock budget in seconds
    max_iterations=0,        # budget of local updates over all nodes; 0 = none
    eval_interval=5.0,       # seconds between evaluations at node 0
    eval_samples=0,          # test examples evaluated (a fixed seeded subset); 0 = the whole test split
    concurrent_eval=True,    # evaluate a snapshot in a thread beside training (the authors: a separate process)
    stop_on_divergence=False,  # the divergence guard (a non-finite loss, or test accuracy at chance after the warm-up) warns and records; true: it ends the run (the authors' runs go on)
    eval_logged_at="snapshot",  # snapshot: an evaluation's time and counters are its snapshot's (the authors) | end: when its result is in
    gossip_mode="free",      # free (exchanges decoupled from compute) | per_update (one per local update)
    gossip_pacing="authors",  # free mode: authors (their exchange rate: simulator polls, MPI engine paced at their modelled cycle) | interval (gossip_interval)
    gossip_interval=round(engine_timing.AUTHORS_EXCHANGE_CYCLE, 6),  # gossip_pacing interval: seconds between an active node's exchange starts; 0 = back to back
    mw_visit_delay="none",   # MPI engine: none | authors (each visit waits the authors' measured poll cost, FIDELITY.md)
    gossip_coupling="authors",  # authors (deltas consumed by exchanges) | immediate (deltas land at once)
    seed=0,                  # graph, data split, model init and walk routes all follow from it
    out="runs/default",      # the run folder: config.json, events-rank<k>.jsonl, summary.json
    data_dir="data",         # CIFAR-10 python batches (cifar-10-batches-py) or MultiNLI
    model_dir="",            # local OPT checkpoint for --task mnli
    transfer_dtype="float32",  # float32 | bfloat16: the dtype models travel in (bytes counted accordingly)
    device="auto",           # auto | cpu | cuda
    save_models=False,       # write the final global model and walk models
    failure_times=[],        # seconds; the i-th time fails node i (MW: aggregator moves on; gossip: node stops)
    checkpoint_every=0.0,    # seconds between consistent checkpoints in out/checkpoint/; 0 = none
    resume="",               # a run's out folder: continue it from its latest checkpoint
    stall_timeout=120.0,     # seconds without progress after which a rank counts as stalled and the job ends; 0 = never
    overwrite=False,         # --out holds another run: remove that run's files first (else the run refuses)
    synthetic_samples=4000,  # size of the synthetic task
    synthetic_features=32,   # features of the synthetic task
    synthetic_classes=10,    # classes of the synthetic task
    # the simulator only (simulate.py): virtual time instead of wall-clock time
    compute_time_dist="exponential",  # fixed | exponential | measured (wall time of the real update)
    compute_time_mean=0.025,  # seconds of virtual time per local update
    bandwidth=1.25e8,         # bytes/s of every link (1 Gbit/s); a transfer takes model_bytes/bandwidth + latency
    latency=1e-4,             # seconds per transfer
    links="unshared",         # unshared: every transfer has the whole bandwidth, however many run at once | shared: a node's link is shared by the transfers using it (each way), as TCP shares a host's NIC
    engine_timing="authors",  # authors (their engine's polls and hand-offs, simulation/engine_timing.py) | ideal (none)
    virtual_model_bytes=0,    # > 0: the bytes one model transfer counts and takes (ResNet-20: 1089896), whatever the model trained; 0 = its own
    eval_network_average=False,  # gossip: at every evaluation also the average of the live nodes' models (model "network_average")
    emulate_params=0,        # > 0: no SGD, the model is a flat buffer of this many fp32 (bench.py, timing studies)
    emulate_compute=0.0,     # with emulate_params, real runs: a local update is a sleep of this many seconds
    # fidelity switches (FIDELITY.md): the authors' behaviour by default, the cleaner variant on request
    warmup_start="zero",     # zero: LR warm-up from 0, lr * min(t / W, 1), as the authors | tenth: from lr/10
    weight_decay_scope="authors",  # authors: no decay of in-block BatchNorm weights/biases | all: decay everything
    paper_version="v2",      # v1 | v2: the authors' gossip split of the paper's ER graph (v2 adds the pair 2-11)
    mnli_style="authors",    # authors: text ends "<|endoftext|>", loss over padding too, a new [PAD] token | masked: eos, padding masked
    mnli_eval="authors",     # authors: MNLI evaluated in batches of 64, the last partial batch dropped | all: batches of 32, every example
    bn_recalibrate=0,        # > 0: evaluate a copy whose BatchNorm statistics are recomputed on this many node batches
    eval_train_samples=0,    # training examples evaluated: a fixed seeded half of the train set, cut to this if > 0
    eval_train_augment=True,  # the evaluated training examples get the training augmentation (cifar10), as the authors' | false: clean images
    count_relays=False,      # MW: count a failed node's relay sends in transfers/bytes_sent (the authors' v2 does not; relay_bytes has them either way)
)

PARTITIONS = ("dirichlet", "dirichlet_plain", "iid")
GOSSIP_MODES = ("free", "per_update")
GOSSIP_COUPLINGS = ("authors", "immediate")
DEVICES = ("auto", "cpu", "cuda")
COMPUTE_TIME_DISTS = ("fixed", "exponential", "measured")
TRANSFER_DTYPES = ("float32", "bfloat16")
# what a resumed run may change: how long it runs and how it reports; the rest defines the run
RESUME_CHANGEABLE = ("train_time", "max_iterations", "eval_interval", "checkpoint_every", "device", "stall_timeout")
# config.json also records the software versions that produced the run (runs.write_config): not config
SOFTWARE_KEY = "software"
TRANSPORT_KEY = "transport"  # ... and which transport ran it, "mpi" or "simulated": not config either
# how a run starts, not what it is: never taken from a resumed run's config.json
START_KEYS = ("resume", "overwrite")
# the allowed values of every number (float keys must also be finite; the two lists are checked below)
RANGES = dict(walks=">= 1", tau=">= 1", batch_size=">= 1", nodes=">= 0", max_iterations=">= 0", eval_samples=">= 0",
              seed=">= 0", emulate_params=">= 0", virtual_model_bytes=">= 0", synthetic_samples=">= 1", synthetic_features=">= 1",
              synthetic_classes=">= 2", alpha="> 0", lr="(0, 10]", momentum="[0, 1)", weight_decay="[0, 1)",
              er_p="(0, 1]", laziness="[0, 1)", warmup_time=">= 0", train_time="> 0", eval_interval="> 0",
              checkpoint_every=">= 0", compute_time_mean="> 0", bandwidth="> 0", latency=">= 0", emulate_compute=">= 0",
              gossip_interval=">= 0", stall_timeout=">= 0", bn_recalibrate=">= 0", eval_train_samples=">= 0")


class ConfigError(ValueError):
    """A bad command line or config value; the message is one line."""


def flag(key):
    return "--" + key.replace("_", "-")


def _kind(key):
    """The type of a key's values: its default's, float for each element of a list."""
    return float if isinstance(config[key], list) else type(config[key])


def _converter(key):
    """argparse `type` of a flag: the text parsed to the type of the key's default."""
    kind = _kind(key)

    def convert(text):
        if kind is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
        else:
            try:
                return kind(text)
            except ValueError:
                pass
        raise argparse.ArgumentTypeError(f"must be {kind.__name__}, got {text!r}")
    return convert


def _shown(default):
    """A default as it would be typed on the command line."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list):
        return " ".join(map(str, default)) or "none"
    return str(default) if default != "" else '""'


def _flag_help():
    """{key: the comment beside it in the config dict above}, for --help."""
    with open(__file__) as f:
        return dict(re.findall(r"^    (\w+)=.*?#\s*(.*)$", f.read(), re.MULTILINE))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line ConfigErrors instead of usage-and-exit, and only --flags as flags."""
    def error(self, message):
        raise ConfigError(message)

    def _parse_optional(self, arg):
        # "-1e-3" and "-inf" are values (argparse would take them for unknown short flags); errors name them
        return super()._parse_optional(arg) if arg.startswith("--") or arg == "-h" else None


def make_parser(prog="main.py"):
    parser = _Parser(prog=prog, usage="%(prog)s [--flag value ...]", allow_abbrev=False, exit_on_error=False,
                     description="Every flag sets the config key of the same name (dashes for underscores).")
    comments = _flag_help()
    for key, default in config.items():
        text = f"{comments.get(key, '')} (default: {_shown(default)})".strip().replace("%", "%%")
        parser.add_argument(flag(key), dest=key, type=_converter(key), nargs="*" if isinstance(default, list) else None,
                            default=argparse.SUPPRESS, metavar=_kind(key).__name__.upper(), help=text)
    return parser


def _unknown(arg, prog):
    if not arg.startswith("--"):
        return ConfigError(f"unexpected argument {arg!r}; flags look like --walks 4")
    name = arg[2:].partition("=")[0]
    flags = [flag(k)[2:] for k in config]
    close = difflib.get_close_matches(name, flags, n=1)
    allowed = f"did you mean --{close[0]}?" if close else "allowed: " + ", ".join("--" + f for f in flags)
    return ConfigError(f"unknown flag --{name}; {allowed} (python {prog} --help lists them all)")


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
    saved.pop(SOFTWARE_KEY, None)
    if saved.pop(TRANSPORT_KEY, "mpi") != "mpi":
        raise ConfigError(f"--resume {folder}: {path} is a simulated run's; a simulated run is reproduced from its "
                          "seed, not resumed")
    for key, value in saved.items():
        if key not in config:
            raise ConfigError(f"{path}: unknown config key {key!r}")
        _check_type(key, value, where=f"{path}: ")
    if "out" in given:
        raise ConfigError("--out cannot be given with --resume: a resumed run continues in its own folder")
    merged = dict(config, **saved)
    for key in given:
        if key not in RESUME_CHANGEABLE + START_KEYS and cfg[key] != merged[key]:
            raise ConfigError(f"{flag(key)} cannot change on --resume (the run has {merged[key]!r}); "
                              f"only {', '.join(map(flag, RESUME_CHANGEABLE))} can")
        merged[key] = cfg[key]
    for key in START_KEYS:
        merged[key] = cfg[key]
    merged["out"] = folder
    return merged


def parse_config(argv, check_paths=True, prog="main.py"):
    """Return a validated copy of `config` with command-line overrides applied."""
    try:
        given, extra = make_parser(prog).parse_known_args(argv)
    except argparse.ArgumentError as e:
        needs_value = e.message.startswith("expected")
        raise ConfigError(f"{e.argument_name} needs one value" if needs_value else f"{e.argument_name} {e.message}") from None
    if extra:
        raise _unknown(extra[0], prog)
    cfg = dict(config, **vars(given))
    if cfg["resume"]:
        cfg = resumed_config(cfg, vars(given))
    validate_config(cfg, check_paths)
    if "gossip_interval" in vars(given) and cfg["gossip_pacing"] != "interval":
        raise ConfigError(f"--gossip-interval {cfg['gossip_interval']:g} needs --gossip-pacing interval "
                          f"(gossip_pacing {cfg['gossip_pacing']!r} sets the rate itself)")
    return cfg


def _one_of(cfg, key, allowed):
    if cfg[key] not in allowed:
        raise ConfigError(f"{key} {cfg[key]!r} is not one of {', '.join(allowed)}")


def _within(value, allowed):
    """Whether a number lies in a RANGES entry: "> 0", ">= 1", or an interval such as "[0, 1)"."""
    if allowed.startswith(">="):
        return value >= float(allowed[2:])
    if allowed.startswith(">"):
        return value > float(allowed[1:])
    low, high = map(float, allowed[1:-1].split(","))
    return (low <= value if allowed[0] == "[" else low < value) and (value <= high if allowed[-1] == "]" else value < high)


def validate_config(cfg, check_paths=True):
    """Checks that need no MPI and no data; graph and data checks come in build_run."""
    unknown = set(cfg) - set(config)
    if unknown:
        raise ConfigError(f"unknown config key {sorted(unknown)[0]!r}")
    for key, value in cfg.items():
        _check_type(key, value)
    # algorithm: build_run checks it against protocols.PROTOCOLS, which imports torch (not imported yet here)
    _one_of(cfg, "task", tuple(tasks.TASKS))
    _one_of(cfg, "partition", PARTITIONS)
    _one_of(cfg, "gossip_mode", GOSSIP_MODES)
    _one_of(cfg, "gossip_coupling", GOSSIP_COUPLINGS)
    _one_of(cfg, "gossip_pacing", ("authors", "interval"))
    _one_of(cfg, "mw_visit_delay", ("none", "authors"))
    _one_of(cfg, "engine_timing", engine_timing.TIMINGS)
    _one_of(cfg, "links", ("unshared", "shared"))
    _one_of(cfg, "eval_logged_at", ("snapshot", "end"))
    _one_of(cfg, "warmup_start", ("zero", "tenth"))
    _one_of(cfg, "weight_decay_scope", ("authors", "all"))
    _one_of(cfg, "paper_version", ("v1", "v2"))
    _one_of(cfg, "mnli_style", ("authors", "masked"))
    _one_of(cfg, "mnli_eval", ("authors", "all"))
    _one_of(cfg, "device", DEVICES)
    _one_of(cfg, "compute_time_dist", COMPUTE_TIME_DISTS)
    _one_of(cfg, "transfer_dtype", TRANSFER_DTYPES)
    if cfg["graph"] not in ("cycle", "complete", "er") and not cfg["graph"].endswith(".json"):
        raise ConfigError(f"graph {cfg['graph']!r} is not one of cycle, complete, er, or a .json edge-list file")
    for key, value in cfg.items():
        numbers = value if isinstance(value, list) else [value] if type(value) in (int, float) else []
        if isinstance(config[key], (float, list)) and not all(map(math.isfinite, numbers)):
            raise ConfigError(f"{key} must be finite, got {value}")
        if key in RANGES and not _within(value, RANGES[key]):
            raise ConfigError(f"{key} must be {'in ' if RANGES[key][0] in '[(' else ''}{RANGES[key]}, got {value}")
    if cfg["overwrite"] and cfg["resume"]:
        raise ConfigError("--overwrite true cannot be given with --resume: a resumed run continues its own files")
    if cfg["emulate_compute"] and not cfg["emulate_params"]:
        raise ConfigError("emulate_compute needs emulate_params > 0 (the size of the emulated model)")
    if any(not 0 < f < 1 for f in cfg["decay_fractions"]):
        raise ConfigError(f"decay_fractions must lie in (0, 1), got {cfg['decay_fractions']}")
    if cfg["emulate_params"] and cfg["compute_time_dist"] == "measured":
        raise ConfigError("compute_time_dist measured times real updates, so it cannot be combined with emulate_params")
    if cfg["bn_recalibrate"] and (not tasks.get(cfg["task"]).batchnorm or cfg["emulate_params"]):
        with_batchnorm = " or ".join(name for name, task in tasks.TASKS.items() if task.batchnorm)
        raise ConfigError(f"bn_recalibrate {cfg['bn_recalibrate']} needs a model with BatchNorm: task {with_batchnorm} "
                          f"without emulate_params")
    if any(t < 0 for t in cfg["failure_times"]):
        raise ConfigError(f"failure_times must be >= 0 seconds, got {cfg['failure_times']}")
    if any(a >= b for a, b in zip(cfg["failure_times"], cfg["failure_times"][1:])):
        raise ConfigError(f"failure_times must increase (the i-th time fails node i), got {cfg['failure_times']}")
    if check_paths:
        if cfg["graph"].endswith(".json") and not os.path.isfile(cfg["graph"]):
            raise ConfigError(f"graph file {cfg['graph']} does not exist")
        check_folders(cfg)


def check_folders(cfg):
    """The folders the task reads (its record's `folders`) exist and hold the files it needs."""
    task = tasks.get(cfg["task"])
    for folder in task.folders:
        path = cfg[folder.key]
        if not os.path.isdir(path):
            raise ConfigError(f"{folder.key} {path!r} does not exist (task {task.name} reads {folder.holds} from it)")
        if folder.files and not any(os.path.isfile(os.path.join(path, f)) for f in folder.files):
            raise ConfigError(f"{folder.key} {path} has none of {', '.join(folder.files)} "
                              f"(task {task.name} reads {folder.holds} from it)")
