import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import tasks
from core import config
from data import DataError, ShardBatches, class_histogram, format_histogram, partition_indices
from tasks.cifar10_files import CIFAR_MEAN, CIFAR_STD, augment_cifar_batch
from conftest import CIFAR_IMAGES_PER_BATCH, write_cifar_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mean_top_class_share(labels, shards, num_classes):
    hist = class_histogram(labels, shards, num_classes)
    return float((hist.max(1) / hist.sum(1)).mean())


# ----------------------------------------------------------------------------- partition

def test_dirichlet_shards_are_equal_and_disjoint():
    labels = np.random.default_rng(0).integers(0, 10, size=1003)
    shards = partition_indices(labels, 7, "dirichlet", alpha=0.5, seed=1)
    assert len(shards) == 7
    assert {len(s) for s in shards} == {1003 // 7}
    joined = np.concatenate(shards)
    assert len(np.unique(joined)) == len(joined)


def test_dirichlet_is_reproducible_by_seed():
    labels = np.random.default_rng(0).integers(0, 10, size=1000)
    a = partition_indices(labels, 8, "dirichlet", alpha=1.0, seed=3)
    b = partition_indices(labels, 8, "dirichlet", alpha=1.0, seed=3)
    c = partition_indices(labels, 8, "dirichlet", alpha=1.0, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_small_alpha_is_more_skewed_than_large_alpha():
    labels = np.random.default_rng(0).integers(0, 10, size=4000)
    skewed = np.mean([mean_top_class_share(labels, partition_indices(labels, 10, "dirichlet", 0.1, s), 10)
                      for s in range(3)])
    near_iid = np.mean([mean_top_class_share(labels, partition_indices(labels, 10, "dirichlet", 10.0, s), 10)
                        for s in range(3)])
    assert skewed > near_iid + 0.1
    assert near_iid < 0.25  # 10 balanced classes: close to 0.1


def test_iid_shards_are_disjoint_equal_and_drop_the_remainder():
    labels = np.arange(103) % 10
    shards = partition_indices(labels, 10, "iid", seed=0)
    joined = np.concatenate(shards)
    assert {len(s) for s in shards} == {10}
    assert len(np.unique(joined)) == 100 and joined.max() < 103


@pytest.mark.parametrize("kwargs, bad", [
    (dict(num_nodes=4, partition="zipf"), "zipf"),
    (dict(num_nodes=4, partition="dirichlet", alpha=0.0), "alpha 0.0"),
    (dict(num_nodes=11, partition="iid"), "num_nodes 11"),
])
def test_bad_partition_arguments_raise_data_error(kwargs, bad):
    with pytest.raises(DataError, match=bad):
        partition_indices(np.arange(10) % 2, **kwargs)


def test_histogram_counts_and_table():
    labels = np.array([0, 0, 1, 2, 2, 2])
    hist = class_histogram(labels, [np.array([0, 1, 2]), np.array([3, 4, 5])], 3)
    assert hist.tolist() == [[2, 1, 0], [0, 0, 3]]
    table = format_histogram(hist).splitlines()
    assert len(table) == 3 and "c2" in table[0]


# ----------------------------------------------------------------------------- tasks' data

def load_task_data(task, **settings):
    """The data of `task` (its record's load_data) under the default config with `settings` changed."""
    return tasks.get(task).load_data(dict(config.config, **settings))


def test_digits_loads_with_fixed_split():
    data = load_task_data("digits", seed=5)
    assert len(data.train_x) + len(data.test_x) == 1797
    assert data.train_x.dtype == torch.float32 and data.train_x.shape[1] == 64
    assert data.train_y.dtype == torch.long and data.num_classes == 10
    assert 0.0 <= data.train_x.min() and data.train_x.max() <= 1.0
    assert np.array_equal(data.partition_labels, data.train_y.numpy())
    assert torch.equal(data.test_x, load_task_data("digits", seed=6).test_x)  # split ignores the run seed
    assert data.augment is None


@pytest.mark.slow
def test_synthetic_loads_standardised():
    data = load_task_data("synthetic", seed=0, synthetic_samples=500, synthetic_features=8, synthetic_classes=3)
    assert data.train_x.shape == (400, 8) and data.test_x.shape == (100, 8)
    assert data.num_classes == 3 and set(data.train_y.tolist()) == {0, 1, 2}
    assert data.train_x.mean(0).abs().max() < 1e-4


def test_unknown_task_names_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown task 'foo'; allowed: digits, digits_bn, synthetic, cifar10, mnli"):
        tasks.get("foo")
    assert tuple(tasks.TASKS) == ("digits", "digits_bn", "synthetic", "cifar10", "mnli")


@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-py"])
def test_cifar_loader_reads_the_python_batches(tmp_path, subfolder):
    write_cifar_folder(os.path.join(tmp_path, subfolder) if subfolder else os.path.join(tmp_path, "c"))
    data_dir = str(tmp_path) if subfolder else os.path.join(tmp_path, "c")
    data = load_task_data("cifar10", data_dir=data_dir)
    assert data.train_x.shape == (5 * CIFAR_IMAGES_PER_BATCH, 3, 32, 32) and data.train_x.dtype == torch.float32
    assert data.test_x.shape == (CIFAR_IMAGES_PER_BATCH, 3, 32, 32)
    assert data.train_y.dtype == torch.long and len(data.partition_labels) == 5 * CIFAR_IMAGES_PER_BATCH
    with open(os.path.join(tmp_path, subfolder or "c", "data_batch_1"), "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    pixel = raw[b"data"][0].reshape(3, 32, 32)[:, 5, 7] / 255.0
    expected = (torch.tensor(pixel) - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    assert torch.allclose(data.train_x[0, :, 5, 7], expected.float(), atol=1e-5)
    assert data.train_y[0].item() == raw[b"labels"][0]


def test_cifar_truncated_file_names_its_path(tmp_path):
    folder = os.path.join(tmp_path, "cifar-10-batches-py")
    write_cifar_folder(folder)
    path = os.path.join(folder, "data_batch_3")
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[:len(content) // 2])
    with pytest.raises(DataError, match="data_batch_3 is truncated") as info:
        load_task_data("cifar10", data_dir=str(tmp_path))
    assert path in str(info.value) and "\n" not in str(info.value)


def test_cifar_missing_folder_names_its_path(tmp_path):
    missing = os.path.join(tmp_path, "nowhere")
    with pytest.raises(DataError, match="nowhere"):
        load_task_data("cifar10", data_dir=missing)
    with pytest.raises(DataError, match="has no CIFAR-10 batches"):
        load_task_data("cifar10", data_dir=str(tmp_path))  # exists, but empty
    with pytest.raises(DataError, match="needs a data_dir"):
        load_task_data("cifar10", data_dir=None)


def test_augment_keeps_shape_is_seeded_and_crops_and_flips():
    x = torch.randn(64, 3, 32, 32)
    a = augment_cifar_batch(x, torch.Generator().manual_seed(0))
    b = augment_cifar_batch(x, torch.Generator().manual_seed(0))
    c = augment_cifar_batch(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    pad_value = -torch.tensor(CIFAR_MEAN) / torch.tensor(CIFAR_STD)
    unchanged = flipped_only = padded = 0
    for out, img in zip(a, x):
        unchanged += torch.equal(out, img)
        flipped_only += torch.equal(out, img.flip(2))
        # a shifted crop shows a border row or column of padding
        border = torch.cat([out[:, 0, :], out[:, -1, :], out[:, :, 0], out[:, :, -1]], dim=1)
        padded += bool(torch.isclose(border, pad_value[:, None]).all(0).any())
    # 81 offsets x 2 flips: about 1/81 of images keep their position, about half get flipped
    assert unchanged + flipped_only < 10
    assert padded > 40
    # every output pixel comes from the image or the padding, never from elsewhere
    centred = augment_cifar_batch(torch.zeros(8, 3, 32, 32), torch.Generator().manual_seed(0))
    assert set(torch.unique(centred[:, 0]).tolist()) <= {0.0, pad_value[0].item()}


def test_augment_flip_is_an_exact_mirror():
    # a horizontal ramp survives any crop only as a shifted ramp: flips reverse its slope
    ramp = torch.arange(32.0).repeat(16, 3, 32, 1)
    out = augment_cifar_batch(ramp, torch.Generator().manual_seed(0))
    slopes = out[:, 0, 16, 10] - out[:, 0, 16, 9]
    assert set(slopes.tolist()) == {1.0, -1.0}


# ----------------------------------------------------------------------------- batches

def test_shard_batches_are_deterministic_and_stay_in_the_shard():
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100)
    shard = np.arange(10, 40)
    a = ShardBatches(x, y, shard, batch_size=8, seed=7)
    b = ShardBatches(x, y, shard, batch_size=8, seed=7)
    c = ShardBatches(x, y, shard, batch_size=8, seed=8)
    batches_a = [a.next_batch()[1] for _ in range(20)]
    batches_b = [b.next_batch()[1] for _ in range(20)]
    assert all(torch.equal(p, q) for p, q in zip(batches_a, batches_b))
    assert not all(torch.equal(p, c.next_batch()[1]) for p in batches_a)
    assert all(len(batch) == 8 for batch in batches_a)
    seen = torch.cat(batches_a)
    assert seen.min() >= 10 and seen.max() < 40 and len(torch.unique(seen)) == 30
    assert a.epoch > 0
    first_epoch = torch.cat(batches_a[:3])  # 30 // 8 = 3 batches an epoch, no repeats within one
    assert len(torch.unique(first_epoch)) == 24


def test_shard_smaller_than_batch_uses_the_whole_shard():
    batches = ShardBatches(torch.zeros(10, 2), torch.arange(10), np.array([1, 4, 6]), batch_size=32, seed=0)
    bx, by = batches.next_batch()
    assert bx.shape == (3, 2) and sorted(by.tolist()) == [1, 4, 6]


def test_shard_batches_state_dict_resumes_the_same_stream():
    x, y = torch.randn(50, 3, 32, 32), torch.arange(50)
    stream = ShardBatches(x, y, np.arange(50), batch_size=16, seed=3, augment=augment_cifar_batch)
    for _ in range(4):
        stream.next_batch()
    state = stream.state_dict()
    expected = [stream.next_batch() for _ in range(5)]
    resumed = ShardBatches(x, y, np.arange(50), batch_size=16, seed=99, augment=augment_cifar_batch)
    resumed.load_state_dict(state)
    for (ex, ey), (rx, ry) in zip(expected, [resumed.next_batch() for _ in range(5)]):
        assert torch.equal(ex, rx) and torch.equal(ey, ry)


# ----------------------------------------------------------------------------- CLI

def run_cli(*args):
    return subprocess.run([sys.executable, "data.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_prints_a_histogram():
    result = run_cli("--task", "digits", "--nodes", "8", "--partition", "dirichlet", "--alpha", "0.1", "--seed", "0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[1].startswith("node") and len(lines) == 2 + 8


@pytest.mark.slow
def test_cli_bad_alpha_exits_2_with_error():
    result = run_cli("--task", "digits", "--nodes", "8", "--partition", "dirichlet", "--alpha", "-1")
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "alpha" in result.stderr and "Traceback" not in result.stderr
