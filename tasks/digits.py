"""
digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 64 pixels, 10 classes),
offline, with a one-hidden-layer MLP (models.DigitsMLP) under SGD: the quick task every
command runs by default. The test split is a stratified 20%, fixed by the data set (seed 0),
not by the run's seed.
"""
import os

from tasks import classification
from tasks.record import Task


def load_data(cfg):
    import importlib.util

    import numpy as np

    import data
    # read scikit-learn's bundled copy directly: importing sklearn costs every rank a second
    sklearn_dir = importlib.util.find_spec("sklearn").submodule_search_locations[0]
    table = np.loadtxt(os.path.join(sklearn_dir, "datasets", "data", "digits.csv.gz"), delimiter=",")
    x, y = (table[:, :-1] / 16.0).astype(np.float32), table[:, -1].astype(np.int64)  # pixels are 0..16
    # stratified 20% test split, a property of the dataset, not of the run seed
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        test[members[:round(0.2 * len(members))]] = True
    return data.make_task_data(x[~test], y[~test], x[test], y[test], num_classes=10)


def build_model(cfg, task_data):
    import models
    return models.DigitsMLP(task_data.train_x.shape[1], num_classes=task_data.num_classes)


TASK = Task(name="digits", folders=(), data_keys=(), load_data=load_data, build_model=build_model,
            make_optimizer=classification.sgd, make_loss=classification.make_loss,
            make_evaluate=classification.make_evaluate, batchnorm=False, batchable=True)
