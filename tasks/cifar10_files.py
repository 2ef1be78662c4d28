"""
The CIFAR-10 python batches (cifar-10-python.tar.gz: data_batch_1..5 and test_batch, pickled
dicts with bytes keys), read without running code from them, normalised by the data set's
channel statistics, augmented by a random crop and flip, and written with random pixels in the
same format for the tests, bench/bench_sim.py and scripts/gpu_check.sh. The cifar10 task's
record (tasks/cifar10.py) loads its data through load_cifar10.
"""
import os
import pickle

import numpy as np
import torch

from data import DataError, TaskData

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_PAD = 4


def find_cifar_dir(data_dir):
    """data_dir itself or data_dir/cifar-10-batches-py, whichever holds the batches."""
    for candidate in (data_dir, os.path.join(data_dir, "cifar-10-batches-py")):
        if all(os.path.isfile(os.path.join(candidate, f)) for f in CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,)):
            return candidate
    raise DataError(f"data_dir {data_dir} has no CIFAR-10 batches (expected data_batch_1..5 and test_batch "
                    f"from cifar-10-python.tar.gz, or its cifar-10-batches-py folder)")


def restricted_unpickle(path):
    """A CIFAR-10 batch pickle, unpickled without running code: only numpy arrays, and plain
    dicts, lists, bytes and numbers (pickle.load would call whatever the file names)."""
    # numpy's array and dtype reconstruction (numpy < 2 wrote numpy.core, numpy >= 2 numpy._core),
    # and the latin-1 bytes of pickle protocol 2
    allowed = {(f"{core}.{module}", name) for core in ("numpy.core", "numpy._core")
               for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}
    allowed |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    class CifarUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never does")
            return super().find_class(module, name)

    with open(path, "rb") as f:
        return CifarUnpickler(f, encoding="bytes").load()


def read_cifar_batch(path):
    """(uint8 images (n, 3, 32, 32), int64 labels (n,)) from one CIFAR python pickle."""
    try:
        batch = restricted_unpickle(path)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise ValueError(f"b'data' has shape {data.shape} and b'labels' has {len(labels)} entries; "
                             f"expected (n, 3072) and n")
    except Exception as e:  # truncated pickle, wrong keys, wrong shapes: all the same fault for the user
        reason = f"{type(e).__name__}: {e}".replace("\n", " ")
        raise DataError(f"CIFAR-10 file {path} is truncated or not a CIFAR pickle: {reason}") from None
    return data.reshape(-1, 3, 32, 32), labels


def normalize_cifar(images_uint8):
    x = torch.from_numpy(images_uint8).float().div_(255.0)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def augment_cifar_batch(batch_x, generator):
    """Random 32x32 crop from the image zero-padded by 4, then a random horizontal flip.

    batch_x is already normalised, so the padding uses each channel's normalised
    value of a black pixel, (0 - mean) / std: the same as padding before normalising.
    Random draws come from `generator` (CPU), so a seed gives the same augmentation.
    """
    n, channels, height, width = batch_x.shape
    pad_value = -torch.tensor(CIFAR_MEAN) / torch.tensor(CIFAR_STD)
    padded = pad_value.to(batch_x).view(1, channels, 1, 1).repeat(n, 1, height + 2 * CIFAR_PAD,
                                                                  width + 2 * CIFAR_PAD)
    padded[:, :, CIFAR_PAD:CIFAR_PAD + height, CIFAR_PAD:CIFAR_PAD + width] = batch_x
    top = torch.randint(0, 2 * CIFAR_PAD + 1, (n,), generator=generator).to(batch_x.device)
    left = torch.randint(0, 2 * CIFAR_PAD + 1, (n,), generator=generator).to(batch_x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(batch_x.device)
    rows = top[:, None] + torch.arange(height, device=batch_x.device)  # (n, height)
    cols = left[:, None] + torch.arange(width, device=batch_x.device)  # (n, width)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip is a reversed column order
    images = torch.arange(n, device=batch_x.device)[:, None, None, None]
    chans = torch.arange(channels, device=batch_x.device)[None, :, None, None]
    return padded[images, chans, rows[:, None, :, None], cols[:, None, None, :]]


def write_cifar_folder(folder, images_per_batch=64, seed=0):
    """Random CIFAR-10 batches in the real on-disk format (pickled dicts with bytes keys): what the
    tests, bench_sim.py and scripts/gpu_check.sh read where the real data set is not at hand."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(),
                 b"data": rng.integers(0, 256, size=(images_per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, size=images_per_batch).tolist()}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)


def load_cifar10(data_dir):
    if data_dir is None:
        raise DataError("task cifar10 needs a data_dir holding the CIFAR-10 python batches (cifar-10-batches-py)")
    if not os.path.isdir(data_dir):
        raise DataError(f"data_dir {data_dir} is not a directory; expected the CIFAR-10 python batches folder")
    folder = find_cifar_dir(data_dir)
    train = [read_cifar_batch(os.path.join(folder, f)) for f in CIFAR_TRAIN_FILES]
    test_images, test_labels = read_cifar_batch(os.path.join(folder, CIFAR_TEST_FILE))
    train_labels = np.concatenate([labels for _, labels in train])
    for labels in (train_labels, test_labels):
        if labels.min() < 0 or labels.max() > 9:
            raise DataError(f"CIFAR-10 labels in {folder} range over {labels.min()}..{labels.max()}; allowed 0..9")
    return TaskData(train_x=normalize_cifar(np.concatenate([images for images, _ in train])),
                    train_y=torch.from_numpy(train_labels),
                    test_x=normalize_cifar(test_images), test_y=torch.from_numpy(test_labels),
                    num_classes=10, partition_labels=train_labels, augment=augment_cifar_batch)
