"""CIFAR-10 readers: the genuine-pixel ``.npz`` subset and the JPEG test-set tar.

Both return numpy arrays: images ``(N, 32, 32, 3)`` uint8 (HWC, as stored) and labels
``(N,)`` int64 in the canonical class order :data:`CIFAR10_CLASSES`.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from metacompress.errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
_ALIASES = {"aeroplane": "airplane", "plane": "airplane", "car": "automobile",
            "auto": "automobile", "lorry": "truck"}


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` from an ``.npz`` archive, never unpickling; DataError when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise DataError(f"{path}: is a single .npy array, expected an .npz archive")
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: missing arrays {', '.join(missing)} "
                    f"(has: {', '.join(archive.files) or 'none'})"
                )
            return {k: archive[k] for k in keys}
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: not found (expected an .npz archive)") from None
    except Exception as exc:  # zipfile.BadZipFile, zlib.error, ValueError (pickled data), ...
        raise DataError(
            f"{path}: not a valid .npz archive ({type(exc).__name__}: {exc})"
        ) from None


def _check_images(arr: np.ndarray, path: Path, key: str) -> None:
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (32, 32, 3):
        raise DataError(
            f"{path}: array {key} is {arr.dtype}{list(arr.shape)}, expected uint8[N, 32, 32, 3]"
        )


def load_cifar_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``split`` ('train' or 'test') of ``cifar10_genuine_subset.npz``: images and labels
    ``<split>_y_all[<split>_idx]``."""
    arrays = read_npz(path, (f"{split}_x", f"{split}_idx", f"{split}_y_all", "classes"))
    x, idx, y_all = arrays[f"{split}_x"], arrays[f"{split}_idx"], arrays[f"{split}_y_all"]
    _check_images(x, path, f"{split}_x")
    if idx.ndim != 1 or idx.dtype.kind not in "iu" or len(idx) != len(x):
        raise DataError(
            f"{path}: array {split}_idx is {idx.dtype}{list(idx.shape)}, "
            f"expected integers[{len(x)}]"
        )
    if y_all.ndim != 1 or y_all.dtype.kind not in "iu":
        raise DataError(f"{path}: array {split}_y_all is {y_all.dtype}{list(y_all.shape)}, "
                        "expected a 1-D integer array")
    if len(idx) and (idx.min() < 0 or idx.max() >= len(y_all)):
        raise DataError(f"{path}: {split}_idx out of range for {len(y_all)} labels")
    if len(y_all) and y_all.max() >= len(CIFAR10_CLASSES):
        raise DataError(f"{path}: {split}_y_all has label {int(y_all.max())} (expected 0..9)")
    classes = tuple(str(c) for c in arrays["classes"].reshape(-1))
    if classes != CIFAR10_CLASSES:
        raise DataError(f"{path}: classes {classes} differ from the CIFAR-10 order "
                        f"{CIFAR10_CLASSES}")
    return x, y_all[idx].astype(np.int64)


def class_index(folder: str) -> int | None:
    """Canonical CIFAR-10 index of a class folder name ('cat', 'Cat', '3', '03_cat', 'cars'...)."""
    if folder.isdigit():
        n = int(folder)
        return n if n < len(CIFAR10_CLASSES) else None
    norm = re.sub(r"[^a-z]", "", folder.lower())
    for cand in (norm, norm.removesuffix("s"), norm.removesuffix("es")):
        cand = _ALIASES.get(cand, cand)
        if cand in CIFAR10_CLASSES:
            return CIFAR10_CLASSES.index(cand)
    return None


def load_cifar_jpeg_tar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All ``test/<class>/*.jpg`` members of a tar, decoded in memory (cached per process).

    Order: the original CIFAR-10 test-batch order when the tar holds ``test/test_index.csv``
    (columns ``file,test_batch_index,label,...``), else sorted by (class index, file name).
    """
    st = path.stat()
    return _decode_tar(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=2)
def _decode_tar(path_str: str, _mtime_ns: int, _size: int) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path_str)
    jpegs: dict[str, tuple[int, bytes]] = {}  # "<class>/<file>" -> (label, bytes)
    index_csv: bytes | None = None
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile():
                    continue
                if parts[-2:] == ("test", "test_index.csv"):
                    index_csv = tar.extractfile(member).read()
                elif (len(parts) >= 3 and parts[-3] == "test"
                      and parts[-1].lower().endswith((".jpg", ".jpeg"))):
                    label = class_index(parts[-2])
                    if label is None:
                        raise DataError(f"{path}: member {member.name}: unknown CIFAR-10 class "
                                        f"folder {parts[-2]!r}")
                    jpegs[f"{parts[-2]}/{parts[-1]}"] = (label, tar.extractfile(member).read())
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable tar archive ({exc})") from None
    if not jpegs:
        raise DataError(f"{path}: no test/<class>/*.jpg members (expected the CIFAR-10 test set)")

    names = _ordered_names(path, jpegs, index_csv)
    images = np.empty((len(names), 32, 32, 3), dtype=np.uint8)
    labels = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        label, blob = jpegs[name]
        try:
            with Image.open(io.BytesIO(blob)) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise DataError(f"{path}: member {name}: corrupt JPEG ({exc})") from None
        if arr.shape != (32, 32, 3):
            raise DataError(f"{path}: member {name}: image is {arr.shape[1]}x{arr.shape[0]}, "
                            "expected 32x32")
        images[i], labels[i] = arr, label
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _ordered_names(path: Path, jpegs: dict[str, tuple[int, bytes]],
                   index_csv: bytes | None) -> list[str]:
    if index_csv is None:
        return sorted(jpegs, key=lambda n: (jpegs[n][0], n))
    try:
        rows = list(csv.DictReader(io.StringIO(index_csv.decode("utf-8"))))
        order = {row["file"]: (int(row["test_batch_index"]), int(row["label"])) for row in rows}
    except (UnicodeDecodeError, KeyError, ValueError, TypeError, csv.Error) as exc:
        raise DataError(f"{path}: malformed test/test_index.csv ({exc})") from None
    for name, (label, _) in jpegs.items():
        if name not in order:
            raise DataError(f"{path}: test/{name} is not listed in test/test_index.csv")
        if order[name][1] != label:
            raise DataError(f"{path}: test/test_index.csv labels test/{name} as "
                            f"{order[name][1]}, but its folder means {label}")
    names = sorted(jpegs, key=lambda n: order[n][0])
    if [order[n][0] for n in names] != list(range(len(names))):
        raise DataError(f"{path}: test_batch_index in test/test_index.csv is not "
                        f"0..{len(names) - 1}")
    return names
