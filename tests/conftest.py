"""Shared by the tests (import helpers with `from conftest import run_main`; fixtures need no import):
run a script under real mpirun from the repo root and read what it wrote, run the simulator in
process, write tiny CIFAR-10 batches, and build a tiny OPT with tiny MultiNLI files.

Markers (pytest.ini): `mpi` on a test that starts mpirun, an sshd or a network namespace (run_main
and start_main refuse to start mpirun from a test without it), `slow` on any other test over ~5 s,
`long` on the long multi-rank scenarios that the default run leaves out."""
import json
import os
import signal
import subprocess

import numpy as np
import pytest
import torch

import simulate
from core import build_run, config, mpirun_command
from core.events import read_events
from tasks import cifar10_files, multinli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# flags of a short digits run that evaluates every 2 s and trains from the first update at the full lr
FAST = ["--task", "digits", "--eval-interval", "2", "--warmup-time", "0"]
CIFAR_IMAGES_PER_BATCH = 20

running = {}  # the test being run: pytest_runtest_setup sets it


def pytest_runtest_setup(item):
    running["test"] = item


def refuse_unless_marked_mpi():
    """So that `-m "not mpi"` really runs no mpirun: a test that starts one must say so."""
    test = running.get("test")
    if test is not None and test.get_closest_marker("mpi") is None:
        pytest.fail(f"{test.nodeid} starts mpirun but is not marked @pytest.mark.mpi")


def run_main(num_ranks, args, timeout=120, script="main.py", pythonpath=None):
    """`mpirun -n K python main.py ARGS`, to the end; a hang fails the test instead of blocking it.
    `pythonpath`: a folder searched before the installed packages."""
    env = {}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), mpirun_command.environment().get("PYTHONPATH", "")])
    job = start_main(num_ranks, args, script, **env)
    try:
        stdout, stderr = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(job)
        raise
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def start_main(num_ranks, args, script="main.py", **env):
    """The same, started in the background: the caller waits for it (and kills it on a hang).
    `env`: extra environment variables (a test-only fault hook, say). The job has its own process
    group (a terminal's Ctrl-C is `os.killpg(job.pid, SIGINT)`), which the test's teardown kills,
    so that a job a test gave up on cannot go on taking the cores of the tests after it."""
    refuse_unless_marked_mpi()
    job = subprocess.Popen(mpirun_command.command(num_ranks, script, args), cwd=REPO, text=True,
                           env=dict(mpirun_command.environment(), **env), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, start_new_session=True)
    STARTED_JOBS.append(job)
    return job


def kill_job(job):
    """SIGKILL to every process left in the job's group: mpirun, its proxies and ranks."""
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


STARTED_JOBS = []


@pytest.fixture(autouse=True)
def no_job_outlives_its_test():
    yield
    while STARTED_JOBS:
        kill_job(STARTED_JOBS.pop())


def seeds_by_cell(runs):
    """A preset's expanded runs as {cell (the run name without its -s<seed>): {seeds}}."""
    cells = {}
    for run in runs:
        cells.setdefault(run["name"].rsplit("-s", 1)[0], set()).add(run["flags"]["seed"])
    return cells


def read_summary(out_dir):
    with open(os.path.join(out_dir, "summary.json")) as f:
        return json.load(f)


def counters_from_events(out_dir):
    """A run's counters as its event logs have them (every rank's), to hold summary.json against."""
    events = read_events(out_dir)
    count = lambda kind: sum(e["type"] == kind for e in events)  # noqa: E731
    relay_sends = [e["bytes"] for e in events if e["type"] == "relay" and e["bytes"]]  # a relay's self-loop sends nothing
    return dict(iterations=count("update"), transfers=count("transfer"), self_loops=count("self_loop"),
                exchanges=count("exchange"), bytes_sent=sum(e["bytes"] for e in events if e["type"] == "transfer"),
                relays=count("relay"), relay_transfers=len(relay_sends), relay_bytes=sum(relay_sends))


def write_cifar_folder(folder, seed=0):
    """Tiny CIFAR-10 batches in the real on-disk format."""
    cifar10_files.write_cifar_folder(folder, images_per_batch=CIFAR_IMAGES_PER_BATCH, seed=seed)


# ----------------------------------------------------------------------------- the simulator in process

@pytest.fixture
def one_thread():
    """Tiny models: one BLAS thread is fastest and keeps the suite from oversubscribing the cores.
    A module takes it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def simulate_run(out, *flags):
    """`python simulate.py FLAGS --out OUT` in this process; returns the summary."""
    cfg = config.parse_config([*flags, "--out", str(out)])
    return simulate.simulate(cfg, build_run.build_run(cfg, cfg["nodes"]), verbose=False)


def event_files(out):
    """{file name: bytes} of a run's event logs."""
    return {name: open(os.path.join(out, name), "rb").read()
            for name in sorted(os.listdir(out)) if name.startswith("events-rank")}


# ----------------------------------------------------------------------------- a tiny OPT and MultiNLI

GENRES = ("fiction", "government", "slate", "telephone", "travel")
WORDS = ("the cat dog man woman child sat ran slept ate walked on in under near a an red big small old new "
         "house park river city road table tree car book letter quickly slowly today never always not").split()


def sentence(rng, low, high):
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high)))).capitalize() + "."


def tiny_rows(rng, count):
    """MultiNLI-like rows: (premise, hypothesis, label id, genre); every 17th row has a very long premise."""
    return [(sentence(rng, 130, 160) if i % 17 == 5 else sentence(rng, 6, 14), sentence(rng, 3, 8),
             int(rng.integers(3)), GENRES[int(rng.integers(len(GENRES)))]) for i in range(count)]


def write_jsonl(path, rows, unlabeled):
    with open(path, "w") as f:
        for premise, hypothesis, label, genre in rows:
            f.write(json.dumps(dict(sentence1=premise, sentence2=hypothesis, gold_label=multinli.LABEL_WORDS[label],
                                    genre=genre, pairID="x")) + "\n")
        for premise, hypothesis, genre in unlabeled:  # no annotator majority: must be skipped
            f.write(json.dumps(dict(sentence1=premise, sentence2=hypothesis, gold_label="-", genre=genre)) + "\n")


def save_dataset_dict(path, splits, unlabeled):
    import datasets
    datasets.disable_progress_bars()
    tables = {}
    for name, rows in splits.items():
        rows = rows + [(p, h, -1, g) for p, h, g in unlabeled]
        tables[name] = datasets.Dataset.from_dict(dict(premise=[r[0] for r in rows], hypothesis=[r[1] for r in rows],
                                                       label=[r[2] for r in rows], genre=[r[3] for r in rows]))
    datasets.DatasetDict(tables).save_to_disk(path)


def save_tiny_opt(path, texts):
    """A byte-level BPE tokenizer trained on `texts` (OPT's conventions: </s> is bos and eos,
    <pad> pads) and a random 2-layer OPT over its vocabulary, saved as a checkpoint folder."""
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, processors, trainers
    from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast
    bpe = Tokenizer(tok_models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    bpe.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="</s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(path)
    # spare embedding rows, as OPT's (50,272 rows for 50,265 tokens): room for the authors' new [PAD]
    config = OPTConfig(vocab_size=len(tokenizer) + 8, hidden_size=32, word_embed_proj_dim=32, ffn_dim=64,
                       num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=128,
                       pad_token_id=0, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    OPTForCausalLM(config).save_pretrained(path)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Built once per session: test_mnli and test_fidelity read it and change nothing in it."""
    root = tmp_path_factory.mktemp("mnli")
    rng = np.random.default_rng(0)
    train, dev = tiny_rows(rng, 200), tiny_rows(rng, 80)  # dev: one evaluation batch of 64 and a partial one
    unlabeled = [(sentence(rng, 5, 9), sentence(rng, 3, 6), GENRES[0])]
    jsonl_dir = root / "jsonl" / "multinli_1.0"
    jsonl_dir.mkdir(parents=True)
    write_jsonl(jsonl_dir / "multinli_1.0_train.jsonl", train, unlabeled)
    write_jsonl(jsonl_dir / "multinli_1.0_dev_matched.jsonl", dev, unlabeled)
    save_dataset_dict(str(root / "hf"), dict(train=train, validation_matched=dev), unlabeled)
    save_tiny_opt(str(root / "opt"), [multinli.example_text(p, h, y, "") for p, h, y, _ in train])
    return dict(root=root, model=str(root / "opt"), hf=str(root / "hf"), jsonl=str(root / "jsonl"),
                train=train, dev=dev, task=multinli.load_mnli(str(root / "hf"), str(root / "opt")))


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return multinli.load_tokenizer(tiny["model"])


@pytest.fixture(scope="module")
def model(tiny):
    return multinli.load_model(tiny["model"]).eval()
