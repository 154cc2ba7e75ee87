"""Image-classification datasets (MNIST, Fashion-MNIST, CIFAR-10, bundled MNIST sample).

Every loader returns a :class:`ClassificationData` with uint8 channels-first images; models
normalise them with the dataset's ``mean``/``std`` (train-split statistics in [0, 1] units).

Files under the data root::

    mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    cifar10/cifar10_genuine_subset.npz          # 'train' (7,728 images), 'test' (1,000)
    cifar10/cifar10_test_jpeg_q75_YoongiKim.tar # 'test-jpeg' (10,000, lossy JPEG q75)

``mnist-sample`` is bundled with the package (see ``samples/README.md``) and needs no data root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from metacompress.data.bundled import sample_path
from metacompress.data.cifar import CIFAR10_CLASSES, load_cifar_jpeg_tar, load_cifar_npz, read_npz
from metacompress.data.idx import load_idx_pair
from metacompress.data.root import require_file, resolve_data_root
from metacompress.errors import DataError, UserError

CLASSIFICATION_DATASETS = ("mnist", "fashion-mnist", "cifar10", "mnist-sample")

SPLITS = {
    "mnist": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "cifar10": ("train", "test", "test-jpeg"),
    "mnist-sample": ("train", "test"),
}

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# Per-channel mean/std of each dataset's full training split, in [0, 1] units (the standard
# constants). mnist-sample uses the MNIST constants so that a model trained on the sample sees
# the same input scaling as one trained on full MNIST.
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist-sample": ((0.1307,), (0.3081,)),
}

CIFAR_NPZ = "cifar10/cifar10_genuine_subset.npz"
CIFAR_JPEG_TAR = "cifar10/cifar10_test_jpeg_q75_YoongiKim.tar"


@dataclass(frozen=True)
class ClassificationData:
    """A labelled image set. ``images`` uint8 ``(N, C, H, W)``, not normalised; ``labels`` int64."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices) -> "ClassificationData":
        """The examples at ``indices`` (tensor, array, list or slice), same metadata."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ClassificationData(self.images[indices], self.labels[indices], self.classes,
                                  self.mean, self.std, self.name, self.split)


def load_classification(name: str, split: str,
                        data_root: str | os.PathLike | None = None) -> ClassificationData:
    """Load split ``split`` of dataset ``name`` (one of :data:`CLASSIFICATION_DATASETS`)."""
    if name not in SPLITS:
        raise DataError(f"unknown classification dataset {name!r} "
                        f"(expected one of: {', '.join(CLASSIFICATION_DATASETS)})")
    if split not in SPLITS[name]:
        raise DataError(f"unknown split {split!r} for {name} "
                        f"(expected one of: {', '.join(SPLITS[name])})")

    if name == "mnist-sample":
        images, labels, classes = _load_mnist_sample(split)
    elif name in ("mnist", "fashion-mnist"):
        folder = resolve_data_root(data_root) / name
        prefix = "train" if split == "train" else "t10k"
        images, labels = load_idx_pair(folder, prefix)
        images = images[:, None]  # (N, 1, 28, 28)
        classes = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    else:
        root = resolve_data_root(data_root)
        if split == "test-jpeg":
            path = require_file(root / CIFAR_JPEG_TAR, "a tar of test/<class>/NNNN.jpg")
            images, labels = load_cifar_jpeg_tar(path)
        else:
            path = require_file(root / CIFAR_NPZ, "the CIFAR-10 genuine-subset .npz")
            images, labels = load_cifar_npz(path, split)
        images = images.transpose(0, 3, 1, 2)  # HWC -> CHW
        classes = CIFAR10_CLASSES

    mean, std = _STATS[name]
    return ClassificationData(
        images=torch.from_numpy(np.array(images, dtype=np.uint8, order="C")),
        labels=torch.from_numpy(np.array(labels, dtype=np.int64)),
        classes=classes, mean=mean, std=std, name=name, split=split,
    )


def _load_mnist_sample(split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    path = sample_path("mnist-sample")
    arrays = read_npz(path, (f"{split}_images", f"{split}_labels"))
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) \
            or labels.shape != images.shape[:1]:
        raise DataError(f"{path}: {split} arrays are {images.dtype}{list(images.shape)} and "
                        f"{labels.dtype}{list(labels.shape)}, expected uint8[N, 28, 28] and [N]")
    return images[:, None], labels, MNIST_CLASSES


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into sorted, disjoint (train, val) index tensors.

    ``round(n * val_fraction)`` indices go to validation, chosen by a ``torch.Generator`` seeded
    with ``seed`` (same arguments, same split, on any machine).
    """
    if int(n) != n or n < 0:
        raise UserError(f"cannot split {n} examples (expected a non-negative integer)")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"validation fraction {val_fraction} out of range (expected 0 <= f < 1)")
    n = int(n)
    n_val = int(round(n * val_fraction))
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator)
    return perm[n_val:].sort().values, perm[:n_val].sort().values
