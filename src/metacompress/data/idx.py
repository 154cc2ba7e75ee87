"""Reader for the idx format of MNIST and Fashion-MNIST (gzip-compressed or plain).

Format: a big-endian 32-bit magic number ``0x0000 08 ND`` (``08`` = unsigned byte data,
``ND`` = number of dimensions), then ND big-endian 32-bit sizes, then the data bytes.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from metacompress.errors import DataError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, rows, cols)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)


def read_maybe_gzip(path: Path) -> bytes:
    """All bytes of ``path``, gunzipped when the name ends in ``.gz``; DataError if corrupt."""
    try:
        if path.suffix != ".gz":
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError:
        raise DataError(f"{path}: truncated gzip file (compressed stream ends early)") from None
    except gzip.BadGzipFile as exc:
        if str(exc).startswith("Not a gzipped file"):
            raise DataError(
                f"{path}: not a gzip file (expected a gzip-compressed idx file)") from None
        raise DataError(f"{path}: corrupt gzip file ({exc})") from None
    except (OSError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Parse idx bytes holding ``ndim``-dimensional unsigned-byte data; checks magic and length."""
    expected_magic = 0x00000800 | ndim
    kind = "image" if ndim == 3 else "label"
    if len(data) < 4:
        raise DataError(f"{path}: not an idx{ndim} {kind} file (only {len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path}: not an idx{ndim} {kind} file "
            f"(magic 0x{magic:08x}, expected 0x{expected_magic:08x})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated idx header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    want = header + math.prod(dims)
    if len(data) != want:
        shape = "x".join(map(str, dims))
        problem = "truncated" if len(data) < want else "has trailing bytes"
        raise DataError(
            f"{path}: {problem}: header declares {shape} values ({want} bytes), "
            f"file holds {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, name: str) -> Path:
    """``folder/name`` (gzip), falling back to the uncompressed file without ``.gz``."""
    path = folder / name
    if not path.exists() and (folder / name.removesuffix(".gz")).is_file():
        return folder / name.removesuffix(".gz")
    if not path.is_file():
        raise DataError(f"{path}: not found (expected a gzip-compressed idx file)")
    return path


def load_idx_pair(folder: Path, prefix: str, size: tuple[int, int] = (28, 28),
                  num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` uint8 from ``<prefix>-images-idx3-ubyte.gz``
    and ``<prefix>-labels-idx1-ubyte.gz`` in ``folder``."""
    img_path = _find(folder, f"{prefix}-images-idx3-ubyte.gz")
    lab_path = _find(folder, f"{prefix}-labels-idx1-ubyte.gz")
    images = parse_idx(read_maybe_gzip(img_path), img_path, 3)
    labels = parse_idx(read_maybe_gzip(lab_path), lab_path, 1)
    if images.shape[1:] != size:
        raise DataError(
            f"{img_path}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {size[0]}x{size[1]}"
        )
    if len(labels) != len(images):
        raise DataError(
            f"{lab_path}: {len(labels)} labels but {img_path.name} has {len(images)} images"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(
            f"{lab_path}: label {int(labels.max())} out of range (expected 0..{num_classes - 1})"
        )
    return images, labels
