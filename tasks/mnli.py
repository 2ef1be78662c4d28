"""
mnli: the paper's LLM task (SEMANTICS.md §4), causal-LM fine-tuning under Adam of a local OPT
checkpoint (--model-dir, e.g. facebook/opt-125m saved with save_pretrained) on MultiNLI
(--data-dir), split over the nodes by genre, fully offline; its code is tasks/multinli.py.
--mnli-style picks the authors' text end, loss (padding scored) and new [PAD] token, or eos with
padding masked. Evaluation: LM loss on the train subset and the test split (validation_matched), and
label accuracy on the test split; train_accuracy is nan (label choices are built for the test split
only). --mnli-eval authors evaluates as theirs: batches of 64, the last partial batch dropped, the
train half in a random order (their random_split subset); all: batches of 32 over every example.
"""
from tasks.record import Folder, Task

# config.py's early check that model_dir holds weights; multinli.check_model_dir, when the model
# loads, also takes a sharded checkpoint's index files
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_data(cfg):
    from data import DataError
    from tasks import multinli
    task_data = multinli.load_mnli(cfg["data_dir"], cfg["model_dir"], style=cfg["mnli_style"])
    batch_size, drop_last = multinli.EVAL_BATCHES[cfg["mnli_eval"]]
    # what is evaluated: the test split (cut to eval_samples by build_run) and the train half (cut to eval_train_samples)
    evaluated = (("test examples", len(task_data.test_x), "eval_samples"),
                 ("train-evaluation examples", len(task_data.train_x) // 2, "eval_train_samples"))
    for what, examples, key in evaluated:
        examples = min(examples, cfg[key] or examples)
        if drop_last and examples < batch_size:  # their evaluation would average over no batch at all
            raise DataError(f"{examples} MultiNLI {what} ({key} {cfg[key]}, data_dir {cfg['data_dir']}) are fewer "
                            f"than one evaluation batch of {batch_size}: --mnli-eval authors drops a partial batch "
                            f"(--mnli-eval all evaluates every example)")
    return task_data


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
    the authors compute it; "masked": per real token) and the test split's label accuracy, over the
    batches --mnli-eval makes (multinli.EVAL_BATCHES)."""
    import data
    from tasks import multinli
    import torch
    task_data = run["task_data"]
    train_subset = data.evaluation_train_subset(len(task_data.train_x), cfg["eval_train_samples"], cfg["seed"])
    if cfg["mnli_eval"] == "authors":  # their train half is a random_split subset in its random order: with the
        # padded mean, which rows share a batch changes the loss (MultiNLI's neighbouring rows share premises)
        train_subset = train_subset[torch.randperm(len(train_subset), generator=torch.Generator().manual_seed(cfg["seed"]))]
    include_padding = cfg["mnli_style"] == "authors"
    batch_size, drop_last = multinli.EVAL_BATCHES[cfg["mnli_eval"]]
    train_ids, train_labels = task_data.train_x[train_subset], task_data.train_y[train_subset]

    def evaluate(model):
        test_loss, test_accuracy = multinli.evaluate_mnli(model, task_data, include_padding, batch_size, drop_last)
        train_loss = multinli.evaluate_lm_loss(model, train_ids, train_labels, include_padding, batch_size, drop_last)
        return dict(train_loss=train_loss, train_accuracy=float("nan"), test_loss=test_loss, test_accuracy=test_accuracy)
    return evaluate


TASK = Task(name="mnli", folders=(Folder("data_dir", "MultiNLI"), Folder("model_dir", "a local OPT checkpoint", WEIGHT_FILES)),
            data_keys=("data_dir", "model_dir", "mnli_style", "mnli_eval"), load_data=load_data, build_model=build_model,
            make_optimizer=make_optimizer, make_loss=make_loss, make_evaluate=make_evaluate,
            batchnorm=False, batchable=False)
