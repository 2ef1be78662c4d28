"""What a task is: the record every tasks/<name>.py defines (see tasks/__init__.py). Standard library only."""
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
