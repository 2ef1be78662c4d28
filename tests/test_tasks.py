"""The task registry (tasks/): every record is complete, importing it costs no torch, the folders a
task reads are checked from its record, nothing outside tasks/ asks which task runs, and a new
task is one record plus one registry line."""
import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import simulate
import tasks
from core import algorithms, build_run, config
from tasks import classification, cifar10_files
from tasks.record import Folder, Task
from conftest import REPO, simulate_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_record_is_complete_and_names_real_config_keys():
    assert tuple(tasks.TASKS) == ("digits", "digits_bn", "synthetic", "cifar10", "mnli")
    for name, task in tasks.TASKS.items():
        assert isinstance(task, Task) and task.name == name and tasks.get(name) is task
        assert all(isinstance(folder, Folder) and folder.key in config.config for folder in task.folders)
        assert all(key in config.config for key in task.data_keys)
        assert all(callable(f) for f in (task.load_data, task.build_model, task.make_optimizer, task.make_loss,
                                         task.make_evaluate))
    with pytest.raises(ValueError, match="unknown task 'resnet'; allowed: digits, digits_bn, synthetic, cifar10, mnli"):
        tasks.get("resnet")


def test_the_registry_and_config_import_no_torch():
    """config.py checks flags and folders before any rank imports torch: the registry must not import it."""
    check = "import sys; from core import config; import tasks; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def nodes_of(cfg, count=2):
    run = build_run.build_run(cfg, count)
    return run, [algorithms.make_node(cfg, run, v, torch.device("cpu")) for v in range(count)]


@pytest.mark.parametrize("task", ["digits", "digits_bn", "synthetic", "cifar10"])
def test_classification_records_build_seeded_sgd_nodes(tmp_path, task):
    cifar = tmp_path / "cifar"
    cifar10_files.write_cifar_folder(str(cifar), images_per_batch=8)
    cfg = config.parse_config(["--task", task, "--data-dir", str(cifar), "--nodes", "2", "--walks", "1",
                               "--batch-size", "4"])
    run, nodes = nodes_of(cfg)
    x0 = [torch.cat([p.detach().reshape(-1) for p in node.model.parameters()]) for node in nodes]
    assert torch.equal(x0[0], x0[1])  # every node starts from the same seeded x0
    has_batchnorm = any(isinstance(m, torch.nn.BatchNorm2d) for m in nodes[0].model.modules())
    assert has_batchnorm == tasks.get(task).batchnorm
    assert type(nodes[0].optimizer) is torch.optim.SGD and nodes[0].optimizer.param_groups[0]["nesterov"]
    bx, by = nodes[0].batches.next_batch()
    assert torch.isfinite(nodes[0].loss_fn(nodes[0].model, bx, by))
    metrics = algorithms.make_evaluate(cfg, run, nodes[0])(nodes[0].model)
    assert 0 <= metrics["test_accuracy"] <= 1 and np.isfinite(metrics["train_loss"])
    other_seed = nodes_of(dict(cfg, seed=1))[1][0]
    assert not torch.equal(x0[0], torch.cat([p.detach().reshape(-1) for p in other_seed.model.parameters()]))


def test_cifar10_train_evaluation_is_augmented_as_the_authors_unless_switched_off(tmp_path, monkeypatch):
    """The authors evaluate the train half through the training transforms (random crop and flip):
    by default each evaluation augments it anew from a seeded stream; --eval-train-augment false
    evaluates the clean images. The test split is never augmented."""
    import models
    monkeypatch.setattr(classification, "EVAL_AUGMENT_CHUNK", 7)  # several chunks on the tiny train half
    cifar = tmp_path / "cifar"
    cifar10_files.write_cifar_folder(str(cifar), images_per_batch=8)  # 40 train images: a half of 20
    cfg = config.parse_config(["--task", "cifar10", "--data-dir", str(cifar), "--nodes", "2", "--walks", "1"])
    run, nodes = nodes_of(cfg)
    model = nodes[0].model
    task_data = run["task_data"]
    half = algorithms.data.evaluation_train_subset(len(task_data.train_x), 0, cfg["seed"])
    clean = models.evaluate(model, task_data.train_x[half], task_data.train_y[half])

    def replay(evaluations):
        """The metrics of each evaluation, from the same seeded stream, chunk by chunk."""
        rng, metrics = torch.Generator().manual_seed(cfg["seed"] * 100_003 + (2 << 40)), []
        for _ in range(evaluations):
            x = torch.cat([cifar10_files.augment_cifar_batch(task_data.train_x[half][i:i + 7], rng) for i in range(0, 20, 7)])
            metrics.append(models.evaluate(model, x, task_data.train_y[half]))
        return metrics

    evaluate = algorithms.make_evaluate(cfg, run, nodes[0])
    first, second = evaluate(model), evaluate(model)
    expected = replay(2)
    for got, (loss, accuracy) in zip((first, second), expected):
        assert got["train_loss"] == pytest.approx(loss, rel=1e-6) and got["train_accuracy"] == pytest.approx(accuracy)
    assert first["train_loss"] != second["train_loss"] != clean[0]  # drawn anew each time, not the clean images
    assert (first["test_loss"], first["test_accuracy"]) == models.evaluate(model, task_data.test_x, task_data.test_y)
    plain = algorithms.make_evaluate(dict(cfg, eval_train_augment=False), run, nodes[0])(model)
    assert (plain["train_loss"], plain["train_accuracy"]) == clean
    assert (plain["test_loss"], plain["test_accuracy"]) == (first["test_loss"], first["test_accuracy"])


def test_mnli_record_trains_with_adam_and_is_not_batched():
    mnli = tasks.get("mnli")
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = mnli.make_optimizer(dict(config.config, lr=1e-4), [dict(params=params, weight_decay=0.0)])
    assert type(optimizer) is torch.optim.Adam and optimizer.param_groups[0]["lr"] == 1e-4
    assert not mnli.batchable and not mnli.batchnorm
    assert [folder.key for folder in mnli.folders] == ["data_dir", "model_dir"]


def test_the_folders_a_task_reads_are_checked_from_its_record(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(config.ConfigError, match=f"data_dir '{missing}' does not exist \\(task cifar10 reads the "
                                                 f"CIFAR-10 python batches from it\\)"):
        config.parse_config(["--task", "cifar10", "--data-dir", missing])
    assert config.parse_config(["--task", "digits", "--data-dir", missing])["data_dir"] == missing  # digits reads none
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "config.json").write_text("{}")
    with pytest.raises(config.ConfigError, match="model_dir .*opt has none of model.safetensors, pytorch_model.bin"):
        config.parse_config(["--task", "mnli", "--data-dir", str(tmp_path), "--model-dir", str(tmp_path / "opt")])
    (tmp_path / "opt" / "model.safetensors").write_bytes(b"")
    assert config.parse_config(["--task", "mnli", "--data-dir", str(tmp_path), "--model-dir", str(tmp_path / "opt")])
    with pytest.raises(config.ConfigError, match="bn_recalibrate 2 needs a model with BatchNorm: task digits_bn or cifar10 "):
        config.parse_config(["--bn-recalibrate", "2"], check_paths=False)


# task-branch tests: a comparison of a task's name with a literal, or a membership test against a literal list
TASK_BRANCH = re.compile(r"""(\btask\b|\[["']task["']\])\s*(==|!=|(not\s+)?in\s*[(\[{])""")


def test_no_code_outside_the_registry_asks_which_task_runs():
    # the project's files (tracked, or new and not ignored): not a venv or anything else the repo ignores
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    sources = [os.path.join(REPO, path) for path in listed if path.split("/")[0] not in ("tasks", "tests")]
    assert len(sources) > 20
    branches = [f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}" for path in sources
                for number, line in enumerate(open(path), 1) if TASK_BRANCH.search(line)]
    assert branches == []
    assert TASK_BRANCH.search('if cfg["task"] == "mnli":') and TASK_BRANCH.search('if task in ("cifar10", "mnli"):')


# ----------------------------------------------------------------------------- a new task

def load_blobs(cfg):
    from sklearn.datasets import make_blobs

    import data
    x, y = make_blobs(n_samples=400, n_features=6, centers=4, random_state=cfg["seed"])
    x = x.astype(np.float32)
    return data.make_task_data(x[:320], y[:320], x[320:], y[320:], num_classes=4)


def build_blobs_model(cfg, task_data):
    import models
    return models.DigitsMLP(6, hidden=16, num_classes=4)


BLOBS = Task(name="blobs", folders=(), data_keys=("seed",), load_data=load_blobs, build_model=build_blobs_model,
             make_optimizer=classification.sgd, make_loss=classification.make_loss,
             make_evaluate=classification.make_evaluate, batchnorm=False, batchable=True)


@pytest.mark.parametrize("batchable", [True, False])
def test_a_new_task_is_one_record_and_one_registry_line(tmp_path, monkeypatch, batchable):
    monkeypatch.setitem(tasks.TASKS, "blobs", dataclasses.replace(BLOBS, batchable=batchable))
    flags = ["--task", "blobs", "--nodes", "4", "--walks", "2", "--max-iterations", "40", "--eval-interval", "0.2"]
    cfg = config.parse_config([*flags, "--out", str(tmp_path / "cfg")])
    run, nodes = nodes_of(cfg, 4)
    network = simulate.Network(cfg, run, simulate.VirtualClock(), nodes.__getitem__)
    assert (network.batch is not None) == batchable  # the record decides whether the simulator batches it
    summary = simulate_run(tmp_path / "run", *flags)
    assert summary["iterations"] == 40 and 0 <= summary["final_test_accuracy"] <= 1
