"""8-bit PNG/TIFF image folders (codec training and evaluation)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metacompress.errors import DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")

# Pillow modes that are not 8 bits per sample.
_WIDE_MODES = ("I", "F")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """PNG/TIFF files directly inside ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    paths = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{folder}: no images found (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return paths


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An 8-bit image as uint8 ``(H, W, C)``.

    Greyscale (also with alpha or 1-bit) gives C=1; RGB gives C=3; RGBA, palette, CMYK and
    YCbCr images are converted to RGB (alpha dropped).  Images with more than 8 bits per sample
    (16-bit, 32-bit integer or float) are rejected rather than silently truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            _check_8bit(im, path)
            im.load()
            if im.mode in ("1", "L", "LA", "La"):
                arr = np.asarray(im.convert("L"))[:, :, None]
            else:
                arr = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a recognised image file (expected PNG or TIFF)") from None
    except Exception as exc:  # truncated or corrupt data: OSError, SyntaxError, ValueError ...
        raise DataError(f"{path}: corrupt image ({type(exc).__name__}: {exc})") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _check_8bit(im: Image.Image, path: Path) -> None:
    rawmode = ""
    if im.tile:
        args = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
        rawmode = args if isinstance(args, str) else str(args[0]) if args else ""
    if im.mode.startswith(_WIDE_MODES) or ";16" in rawmode or ";32" in rawmode:
        raise DataError(f"{path}: expected an 8-bit image, got mode {im.mode} "
                        f"({rawmode or 'wide samples'})")
