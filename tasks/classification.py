"""
What the classification tasks (digits, digits_bn, synthetic, cifar10) share: SGD with Nesterov momentum,
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


EVAL_AUGMENT_CHUNK = 1000  # train-evaluation images augmented at a time (memory: a padded copy of a chunk)


def make_evaluate(cfg, run, node):
    """Mean cross-entropy and accuracy on the evaluated train subset and on the test split, with
    cfg["bn_recalibrate"] = k > 0 on a copy whose BatchNorm statistics are first recomputed on k
    batches of this node's shard (algorithms.make_evaluate says which examples count). With
    cfg["eval_train_augment"] (the authors': their evaluation reads the train half through the
    training transforms) the train subset gets the task's training augmentation, drawn anew at
    every evaluation from a seeded stream of its own; the test split is never augmented."""
    import torch
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

    augment = task_data.augment if cfg["eval_train_augment"] else None
    augment_rng = torch.Generator().manual_seed(cfg["seed"] * 100_003 + (2 << 40))  # apart from the nodes' streams

    def evaluate_train(model):
        if augment is None:
            return models.evaluate(model, train_x, train_y)
        loss_sum, correct = 0.0, 0.0
        for start in range(0, len(train_x), EVAL_AUGMENT_CHUNK):
            bx, by = augment(train_x[start:start + EVAL_AUGMENT_CHUNK], augment_rng), train_y[start:start + EVAL_AUGMENT_CHUNK]
            loss, accuracy = models.evaluate(model, bx, by)
            loss_sum, correct = loss_sum + loss * len(by), correct + accuracy * len(by)
        return loss_sum / len(train_x), correct / len(train_x)

    def evaluate(model):
        if recalibration_batches is not None:
            model = models.recalibrated_batchnorm(model, recalibration_batches, cfg["bn_recalibrate"])
        train_loss, train_accuracy = evaluate_train(model)
        test_loss, test_accuracy = models.evaluate(model, test_x, test_y)
        return dict(train_loss=train_loss, train_accuracy=train_accuracy, test_loss=test_loss, test_accuracy=test_accuracy)
    return evaluate
