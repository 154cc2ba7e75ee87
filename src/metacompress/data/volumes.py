"""3-D volumes: NIfTI (.nii, .nii.gz) via nibabel and TIFF stacks via tifffile."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metacompress.errors import DataError

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff")


@dataclass
class Volume:
    """Voxel values ``data`` (D, H, W) float32 as stored (NIfTI scl_slope/inter applied, no
    normalisation), voxel ``spacing`` in mm (NIfTI zooms; 1.0s for TIFF) and the on-disk dtype."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    source_dtype: str


def load_volume(path: str | os.PathLike) -> Volume:
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(VOLUME_SUFFIXES):
        raise DataError(
            f"{path}: unsupported volume format (expected {', '.join(VOLUME_SUFFIXES)})")
    if not path.is_file():
        raise DataError(f"{path}: volume file not found")
    if name.endswith((".nii", ".nii.gz")):
        return _load_nifti(path)
    return _load_tiff(path)


def _load_nifti(path: Path) -> Volume:
    import nibabel

    try:
        if path.name.lower().endswith(".gz"):
            # decompress it all ourselves: gzip checks the CRC, nibabel's partial reads do not
            img = _nifti_from_bytes(gzip.decompress(path.read_bytes()), path)
        else:
            img = nibabel.load(path)
        if not isinstance(img, (nibabel.Nifti1Image, nibabel.Nifti2Image)):
            raise DataError(f"{path}: not a NIfTI image ({type(img).__name__})")
        shape = img.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        elif len(shape) != 3:
            raise DataError(f"{path}: image has shape {tuple(shape)}, expected a 3-D volume")
        data = np.asarray(img.dataobj).reshape(shape)
        zooms = img.header.get_zooms()[:3]
        source_dtype = str(img.get_data_dtype())
    except DataError:
        raise
    except Exception as exc:  # ImageFileError, gzip/zlib errors, EOFError, HeaderDataError ...
        raise DataError(
            f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    return Volume(np.ascontiguousarray(data, dtype=np.float32),
                  tuple(float(z) for z in zooms), source_dtype)


def _nifti_from_bytes(raw: bytes, path: Path):
    import nibabel

    header_size = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    if 348 in header_size:
        return nibabel.Nifti1Image.from_bytes(raw)
    if 540 in header_size:
        return nibabel.Nifti2Image.from_bytes(raw)
    raise DataError(f"{path}: not a NIfTI file (no NIfTI-1/2 header after decompression)")


def _load_tiff(path: Path) -> Volume:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            data = series.asarray()
    except Exception as exc:  # TiffFileError, ValueError, OSError ...
        raise DataError(f"{path}: not a readable TIFF file ({type(exc).__name__}: {exc})") from None
    if "S" in axes and data.shape[axes.index("S")] > 1:
        raise DataError(f"{path}: colour TIFF (axes {axes}), expected a greyscale stack")
    data = np.squeeze(data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise DataError(f"{path}: TIFF holds shape {data.shape} (axes {axes}), expected a "
                        "(pages, H, W) stack")
    if data.dtype.kind not in "uif":
        raise DataError(f"{path}: TIFF samples are {data.dtype}, expected integers or floats")
    return Volume(np.ascontiguousarray(data, dtype=np.float32), (1.0, 1.0, 1.0), str(data.dtype))
