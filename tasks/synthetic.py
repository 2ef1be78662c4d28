"""
synthetic: a seeded scikit-learn make_classification problem (--synthetic-samples,
--synthetic-features, --synthetic-classes; half the features informative), standardised by
the train split's statistics, with the digits MLP (models.DigitsMLP) under SGD. The data
follow from the run's seed.
"""
from tasks import classification
from tasks.record import Task


def load_data(cfg):
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    import data
    seed, samples = cfg["seed"], cfg["synthetic_samples"]
    features, classes = cfg["synthetic_features"], cfg["synthetic_classes"]
    try:
        x, y = make_classification(n_samples=samples, n_features=features, n_informative=max(2, features // 2),
                                   n_redundant=0, n_classes=classes, random_state=seed)
        train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    except ValueError as e:
        raise data.DataError(f"synthetic task with samples={samples} features={features} classes={classes} "
                             f"is impossible: {e}".replace("\n", " ")) from None
    scaler = StandardScaler().fit(train_x)  # statistics of the train split only
    return data.make_task_data(scaler.transform(train_x).astype(np.float32), train_y,
                               scaler.transform(test_x).astype(np.float32), test_y, num_classes=classes)


def build_model(cfg, task_data):
    import models
    return models.DigitsMLP(task_data.train_x.shape[1], num_classes=task_data.num_classes)


TASK = Task(name="synthetic", folders=(),
            data_keys=("seed", "synthetic_samples", "synthetic_features", "synthetic_classes"),
            load_data=load_data, build_model=build_model, make_optimizer=classification.sgd,
            make_loss=classification.make_loss, make_evaluate=classification.make_evaluate,
            batchnorm=False, batchable=True)
