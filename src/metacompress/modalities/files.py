"""Files ↔ canonical datapoints for every modality, through the modality registry.

Reading: images (PNG/TIFF/anything Pillow reads, 8-bit), audio (WAV/FLAC, mono, resampled to the
base network's rate), volumes (NIfTI/TIFF), globes (a netCDF time step, or ``.npy`` (lat, lon, C)).
Writing: PNG/TIFF, WAV (16-bit PCM) or FLAC, NIfTI (.nii / .nii.gz), ``.npy`` or netCDF-3 — every
file written whole to a temporary name, then renamed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from metacompress.errors import UserError
from metacompress.modalities.registry import modality
from metacompress.modalities.spec import Datapoint, DataSpec


def read_datapoint(path: str | os.PathLike, spec: DataSpec, time_index: int | None = None) -> Datapoint:
    """The datapoint in ``path`` as a base network with data ``spec`` models it."""
    return modality(spec.modality).read(Path(path), spec, time_index)


def read_datapoint_converting(path: str | os.PathLike, spec: DataSpec, time_index: int | None = None, *,
                              resample: bool = False, downmix: bool = False) -> tuple[Datapoint, str | None]:
    """``read_datapoint``, converting a layout the base network does not model where the modality
    allows it and the caller opts in (audio: ``resample``, ``downmix``); also says what was converted."""
    return modality(spec.modality).read_converting(Path(path), spec, time_index, resample=resample, downmix=downmix)


def write_datapoint(path: str | os.PathLike, point: Datapoint, spec: DataSpec) -> None:
    modality(spec.modality).write(path, point, spec)


def training_datapoints(path: str | os.PathLike, spec: DataSpec) -> list[np.ndarray]:
    """Every datapoint under ``path`` (a file or folder), canonical layout.  Globes: each time
    step of each file is one datapoint.  Kodak is refused: it is the image-codec test set."""
    path = Path(path)
    if "kodak" in {part.lower() for part in path.resolve().parts}:
        raise UserError(f"{path}: Kodak is the image-codec test set; train on other images")
    return list(modality(spec.modality).training_arrays(path, spec))
