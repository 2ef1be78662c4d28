"""
digits_bn: the digits task (tasks/digits.py's data and split) learnt by a small CNN with
BatchNorm (models.DigitsCNN, 38,330 parameters) under the same SGD: a stand-in for ResNet-20
on CIFAR-10 that runs in minutes on a CPU. Its BatchNorm running statistics are buffers, so,
as ResNet-20's, they stay at each node (walks and gossip exchanges carry parameters only) and
a model is evaluated with the evaluating node's statistics (SEMANTICS.md §1-2, FIDELITY.md).

Not batchable: under vmap its losses drifted from the sequential path's by 1e-4 within 15 updates
(test_batched.run_both: 4 nodes, 6 rounds at lr 0.02-0.05), and batching saved no time at V = 20 (a
gossip run of 400 updates: 17.3 CPU s batched, 16.4 sequential; MW-10: 11.8 and 13.5; load 12 on
2 cores), so the simulator computes its updates one at a time, exactly as the engine does.
"""
from tasks import classification, digits
from tasks.record import Task


def build_model(cfg, task_data):
    import models
    return models.DigitsCNN(num_classes=task_data.num_classes)


TASK = Task(name="digits_bn", folders=(), data_keys=(), load_data=digits.load_data, build_model=build_model,
            make_optimizer=classification.sgd, make_loss=classification.make_loss,
            make_evaluate=classification.make_evaluate, batchnorm=True, batchable=False)
