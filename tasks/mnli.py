"""
mnli: the paper's LLM task (SEMANTICS.md §4), causal-LM fine-tuning under Adam of a local OPT
checkpoint (--model-dir, e.g. facebook/opt-125m saved with save_pretrained) on MultiNLI
(--data-dir), split over the nodes by genre, fully offline; its code is tasks/multinli.py.
--mnli-style picks the authors' text end and loss (padding scored) or eos with padding masked.
Evaluation: LM loss on the train subset and the test split (validation_matched), and label
accuracy on the test split; train_accuracy is nan (label choices are built for the test split only).
"""
from tasks.record import Folder, Task

# config.py's early check that model_dir holds weights; multinli.check_model_dir, when the model
# loads, also takes a sharded checkpoint's index files
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_data(cfg):
    from tasks import multinli
    return multinli.load_mnli(cfg["data_dir"], cfg["model_dir"], style=cfg["mnli_style"])


def build_model(cfg, task_data):
    from tasks import multinli
    return multinli.load_model(cfg["model_dir"])  # x0 is the pretrained checkpoint on every rank


def make_optimizer(cfg, param_groups):
    import torch
    return torch.optim.Adam(param_groups, lr=cfg["lr"])


def make_loss(cfg):
    from tasks import multinli
    return multinli.lm_loss_with_padding if cfg["mnli_style"] == "authors" else multinli.lm_loss


def make_evaluate(cfg, run, node):
    """LM loss (mnli_style "authors": the mean over every position of a batch, padding included, as
    the authors compute it; "masked": per real token) and the test split's label accuracy."""
    import data
    from tasks import multinli
    task_data = run["task_data"]
    train_subset = data.evaluation_train_subset(len(task_data.train_x), cfg["eval_train_samples"], cfg["seed"])
    include_padding = cfg["mnli_style"] == "authors"
    train_ids, train_labels = task_data.train_x[train_subset], task_data.train_y[train_subset]

    def evaluate(model):
        test_loss, test_accuracy = multinli.evaluate_mnli(model, task_data, include_padding=include_padding)
        train_loss = multinli.evaluate_lm_loss(model, train_ids, train_labels, include_padding=include_padding)
        return dict(train_loss=train_loss, train_accuracy=float("nan"), test_loss=test_loss, test_accuracy=test_accuracy)
    return evaluate


TASK = Task(name="mnli", folders=(Folder("data_dir", "MultiNLI"), Folder("model_dir", "a local OPT checkpoint", WEIGHT_FILES)),
            data_keys=("data_dir", "model_dir", "mnli_style"), load_data=load_data, build_model=build_model,
            make_optimizer=make_optimizer, make_loss=make_loss, make_evaluate=make_evaluate,
            batchnorm=False, batchable=False)
