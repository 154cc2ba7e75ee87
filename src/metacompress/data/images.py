"""8-bit PNG/TIFF image folders (codec training and evaluation)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metacompress.errors import DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")

# Pillow modes that are not 8 bits per sample.
_WIDE_MODES = ("I", "F")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """PNG/TIFF files anywhere under ``folder`` (recursive, like ``list_audio``), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    paths = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{folder}: no images found (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return paths


# The most pixels we decode from a file: far above any photo, far below what exhausts memory.
MAX_PIXELS = 1 << 26


def load_image(path: str | os.PathLike, keep_alpha: bool = False, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An 8-bit image as uint8 ``(H, W, C)``.

    Greyscale (also 1-bit) gives C=1; RGB gives C=3; palette, CMYK and YCbCr images are
    converted to RGB.  An alpha channel is dropped unless ``keep_alpha`` (grey+alpha C=2,
    RGBA C=4).  Images with more than 8 bits per sample (16-bit, 32-bit integer or float) are
    rejected rather than silently truncated, and so are images over ``max_pixels`` pixels
    (checked from the header, before any pixel is decoded).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            _check_8bit(im, path)
            width, height = im.size
            if width * height == 0:
                raise DataError(f"{path}: the image is empty ({width}×{height})")
            if width * height > max_pixels:
                raise DataError(f"{path}: {width}×{height} is too large (over {max_pixels:,} pixels)")
            frames = getattr(im, "n_frames", 1)
            if frames > 1:  # an animation or a multi-page file: encoding one frame silently would lose the rest
                raise DataError(f"{path}: holds {frames} frames; metacompress encodes one still image "
                                "(save the frame you want as PNG)")
            im.load()
            arr = np.asarray(im.convert(_target_mode(im, keep_alpha)))
            if arr.ndim == 2:
                arr = arr[:, :, None]
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a recognised image file") from None
    except Exception as exc:  # truncated or corrupt data: OSError, SyntaxError, ValueError ...
        raise DataError(f"{path}: corrupt image ({type(exc).__name__}: {exc})") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _target_mode(im: Image.Image, keep_alpha: bool) -> str:
    grey = im.mode in ("1", "L", "LA", "La")
    has_alpha = im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in im.info
    if keep_alpha and has_alpha:
        return "LA" if grey else "RGBA"
    return "L" if grey else "RGB"


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write uint8 ``(H, W, C)`` (C = 1–4) as a lossless PNG or TIFF, atomically."""
    from metacompress.checkpoint import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, image_file_bytes(image, path.suffix.lower(), path))


def image_file_bytes(image: np.ndarray, suffix: str, path: str | os.PathLike = "output") -> bytes:
    """uint8 ``(H, W, C)`` (C = 1–4) as the bytes of a lossless ``suffix`` (.png, .tif, .tiff) file."""
    formats = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}
    if suffix not in formats:
        raise DataError(f"{path}: images are written as PNG or TIFF (.png, .tif)")
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[image.shape[2]]
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if mode == "L" else image, mode).save(buffer, formats[suffix])
    return buffer.getvalue()


def _check_8bit(im: Image.Image, path: Path) -> None:
    rawmode = ""
    if im.tile:
        args = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
        rawmode = args if isinstance(args, str) else str(args[0]) if args else ""
    if im.mode.startswith(_WIDE_MODES) or ";16" in rawmode or ";32" in rawmode:
        raise DataError(f"{path}: expected an 8-bit image, got mode {im.mode} "
                        f"({rawmode or 'wide samples'})")
