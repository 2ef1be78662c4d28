"""
cifar10: the paper's task, CIFAR-10 (50,000 train / 10,000 test 32x32 images, 10 classes)
read from --data-dir (the python batches, tasks/cifar10_files.py), random crop and flip on
every training batch, and ResNet-20 (models.ResNet20, 272,474 parameters) under SGD with
Nesterov momentum.
"""
from tasks import classification
from tasks.record import Folder, Task


def load_data(cfg):
    from tasks import cifar10_files
    return cifar10_files.load_cifar10(cfg["data_dir"])


def build_model(cfg, task_data):
    import models
    return models.ResNet20(task_data.num_classes)


TASK = Task(name="cifar10", folders=(Folder("data_dir", "the CIFAR-10 python batches"),), data_keys=("data_dir",),
            load_data=load_data, build_model=build_model, make_optimizer=classification.sgd,
            make_loss=classification.make_loss, make_evaluate=classification.make_evaluate,
            batchnorm=True, batchable=True)
