"""
The task registry: one record per learning task (digits, digits_bn, synthetic, cifar10, mnli) saying
how its data loads, its model, optimizer, loss and evaluation, the folders it reads, and
whether the simulator can batch its local updates. Nothing outside this package asks which
task runs; everything asks the task's record, get(cfg["task"]).

Adding a task is one file, tasks/<name>.py, that defines TASK = Task(...) (tasks/record.py
says what each field is), plus one line in TASKS below; docs/adding_a_task.md walks through it.

Importing this package costs no torch: core/config.py checks --task and the folders a task
reads before any rank imports torch. So a record's module imports only the standard library,
tasks.record and tasks.classification at its top, and its functions import data, models and
torch when called. A task with much code keeps it in a module of its own that the record's
functions import (tasks/cifar10_files.py, tasks/multinli.py); tasks/classification.py holds
what the three classification tasks share.
"""
from tasks import cifar10, digits, digits_bn, mnli, synthetic

TASKS = {
    "digits": digits.TASK,
    "digits_bn": digits_bn.TASK,
    "synthetic": synthetic.TASK,
    "cifar10": cifar10.TASK,
    "mnli": mnli.TASK,
}


def get(name):
    """The record of task `name`; a name not in TASKS raises ValueError naming the allowed ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    return TASKS[name]
