"""
What the classification tasks (digits, synthetic, cifar10) share: SGD with Nesterov momentum,
cross-entropy, and evaluation by loss and accuracy. Imported by the records at their top, so
torch and the project's modules are imported inside the functions (see tasks/__init__.py).
"""


def sgd(cfg, param_groups):
    import torch
    return torch.optim.SGD(param_groups, lr=cfg["lr"], momentum=cfg["momentum"],
                           nesterov=cfg["nesterov"] and cfg["momentum"] > 0)


def make_loss(cfg):
    import torch.nn.functional as F

    def cross_entropy(model, bx, by):
        return F.cross_entropy(model(bx), by)
    return cross_entropy


def make_evaluate(cfg, run, node):
    """Mean cross-entropy and accuracy on the evaluated train subset and on the test split, with
    cfg["bn_recalibrate"] = k > 0 on a copy whose BatchNorm statistics are first recomputed on k
    batches of this node's shard (algorithms.make_evaluate says which examples count)."""
    import data
    import models
    task_data = run["task_data"]
    train_subset = data.evaluation_train_subset(len(task_data.train_x), cfg["eval_train_samples"], cfg["seed"])
    train_x, train_y = task_data.train_x[train_subset].to(node.device), task_data.train_y[train_subset].to(node.device)
    test_x, test_y = task_data.test_x.to(node.device), task_data.test_y.to(node.device)
    recalibration_batches = None
    if cfg["bn_recalibrate"]:
        # its own seeded stream over the node's shard, so evaluating never shifts the training batches
        recalibration_batches = data.ShardBatches(task_data.train_x, task_data.train_y, run["shards"][node.node_id],
                                                  cfg["batch_size"], seed=cfg["seed"] * 100_003 + node.node_id + (1 << 40),
                                                  augment=task_data.augment)

    def evaluate(model):
        if recalibration_batches is not None:
            model = models.recalibrated_batchnorm(model, recalibration_batches, cfg["bn_recalibrate"])
        train_loss, train_accuracy = models.evaluate(model, train_x, train_y)
        test_loss, test_accuracy = models.evaluate(model, test_x, test_y)
        return dict(train_loss=train_loss, train_accuracy=train_accuracy, test_loss=test_loss, test_accuracy=test_accuracy)
    return evaluate
