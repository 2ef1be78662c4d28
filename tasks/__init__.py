"""
The task registry: one record per learning task (digits, synthetic, cifar10, mnli) saying
how its data loads, its model, optimizer, loss and evaluation, the folders it reads, and
whether the simulator can batch its local updates. Nothing outside this package asks which
task runs; everything asks the task's record, get(cfg["task"]).

Adding a task is one file, tasks/<name>.py, that defines TASK = Task(...), plus one line in
TASKS below; docs/adding_a_task.md walks through it.

Importing this package costs no torch: core/config.py checks --task and the folders a task
reads before any rank imports torch. So a record's module imports only the standard library
and this package at its top, and its functions import data, models and torch when called. A
task with much code keeps it in a module of its own that the record's functions import
(tasks/cifar10_files.py, tasks/multinli.py); tasks/classification.py holds what the three
classification tasks share.
"""
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Folder:
    """A folder a task reads, named by a config key; config.py checks it before torch is imported."""
    key: str            # the config key that names it: "data_dir", "model_dir"
    holds: str          # what the task reads from it, for the error message: "MultiNLI"
    files: tuple = ()   # it must hold at least one of these files (none: the folder alone is checked)


@dataclass(frozen=True)
class Task:
    name: str
    folders: tuple          # Folder, one per folder the task reads
    data_keys: tuple        # the config keys load_data reads: equal values, equal data
    load_data: Callable     # cfg -> data.TaskData; a bad input raises data.DataError
    build_model: Callable   # (cfg, task_data) -> torch.nn.Module; the caller has seeded torch
    make_optimizer: Callable  # (cfg, param_groups) -> torch.optim.Optimizer at lr cfg["lr"]
    make_loss: Callable     # cfg -> loss_fn(model, bx, by), a scalar tensor to minimise
    make_evaluate: Callable  # (cfg, run, node) -> evaluate(model) -> dict(train_loss, train_accuracy,
                             #   test_loss, test_accuracy); see algorithms.make_evaluate
    batchnorm: bool         # its model has BatchNorm (--bn-recalibrate is allowed)
    batchable: bool         # its model and loss run under torch.func.vmap (simulation/batched.py)


# the record modules import Task and Folder from here, so they come after them
from tasks import cifar10, digits, mnli, synthetic  # noqa: E402

TASKS = {
    "digits": digits.TASK,
    "synthetic": synthetic.TASK,
    "cifar10": cifar10.TASK,
    "mnli": mnli.TASK,
}


def get(name):
    """The record of task `name`; a name not in TASKS raises ValueError naming the allowed ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    return TASKS[name]
