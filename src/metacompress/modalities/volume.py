"""Volumes (MRI/CT): 3-D scalar fields, each normalized by its own range; records keep the voxel size."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metacompress.data.volumes import VOLUME_SUFFIXES, load_volume
from metacompress.errors import DataError
from metacompress.modalities.datapoint import INTEGER_DTYPES
from metacompress.modalities.registry import Modality
from metacompress.modalities.spec import Datapoint, DataSpec


class VolumeModality(Modality):
    """NIfTI/TIFF in, NIfTI (.nii, .nii.gz) out."""

    name = "volume"
    spatial_axes = 3
    input_suffixes = VOLUME_SUFFIXES
    output_suffixes = (".nii", ".nii.gz")
    default_suffix = ".nii.gz"
    default_patch = (16, 16, 16)  # thesis C.3
    stores_spacing = True
    stacked_channel_axis = False

    def read(self, path: Path, spec: DataSpec, time_index: int | None = None) -> Datapoint:
        volume = load_volume(path)
        dtype = volume.source_dtype if volume.source_dtype in INTEGER_DTYPES else "float32"
        return Datapoint(volume.data[..., None].astype(dtype), dtype, volume.spacing)

    def encode_file(self, point: Datapoint, spec: DataSpec, suffix: str) -> bytes:
        import nibabel

        affine = np.diag([*(point.spacing or (1.0, 1.0, 1.0)), 1.0])
        data = nibabel.Nifti1Image(point.values[..., 0], affine).to_bytes()
        return gzip.compress(data, mtime=0) if suffix == ".nii.gz" else data

    def training_arrays(self, path: Path, spec: DataSpec) -> Iterator[np.ndarray]:
        files = sorted(p for p in path.rglob("*") if p.name.lower().endswith(VOLUME_SUFFIXES)) \
            if path.is_dir() else [path]
        if not files:
            raise DataError(f"{path}: no volumes found (expected {', '.join(VOLUME_SUFFIXES)} files)")
        for p in files:
            yield load_volume(p).data[..., None]

    def new_spec(self, patch, source, variables, extra) -> DataSpec:
        return DataSpec("volume", 1, self.check_patch(patch or self.default_patch))
