"""Files ↔ canonical COIN++ datapoints (see ``modalities.datapoint``), for every modality.

Reading: images (PNG/TIFF/anything Pillow reads, 8-bit), audio (WAV/FLAC, mono, resampled to the
base network's rate), volumes (NIfTI/TIFF), globes (netCDF-3 time step, or ``.npy`` (lat, lon, C)).
Writing: PNG/TIFF, WAV (16-bit PCM) or FLAC, NIfTI (.nii / .nii.gz), ``.npy`` or netCDF-3 — every
file written whole to a temporary name, then renamed.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import torch

from metacompress.checkpoint import atomic_write_bytes
from metacompress.codecs.coinpp import Datapoint
from metacompress.data.audio import list_audio, load_audio
from metacompress.data.globes import load_globe
from metacompress.data.images import list_images, load_image, save_image
from metacompress.data.volumes import VOLUME_SUFFIXES, load_volume
from metacompress.errors import DataError, UserError
from metacompress.modalities.datapoint import INTEGER_DTYPES, datapoint_range, to_features

MODALITIES = ("image", "audio", "volume", "sphere")
OUTPUT_SUFFIXES = {"image": (".png", ".tif", ".tiff"), "audio": (".wav", ".flac"), "volume": (".nii", ".nii.gz"),
                   "sphere": (".npy", ".nc")}


def read_datapoint(path: str | os.PathLike, config: dict, time_index: int | None = None) -> Datapoint:
    """The datapoint in ``path`` as the base network described by ``config`` models it."""
    path = Path(path)
    modality = config["modality"]
    if modality == "image":
        return Datapoint(load_image(path), "uint8")
    if modality == "audio":
        samples, _ = load_audio(path, sample_rate=int(config["sample_rate"]))
        return Datapoint(samples[:, None], "float32")
    if modality == "volume":
        volume = load_volume(path)
        dtype = volume.source_dtype if volume.source_dtype in INTEGER_DTYPES else "float32"
        return Datapoint(volume.data[..., None].astype(dtype), dtype, volume.spacing)
    if modality == "sphere":
        return Datapoint(read_globe_step(path, config, time_index), "float32")
    raise UserError(f"unknown modality {modality!r}")


def read_globe_step(path: Path, config: dict, time_index: int | None) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
        if values.dtype.kind not in "fiu" or values.ndim != 3:
            raise DataError(f"{path}: expected a numeric (lat, lon, variables) array, got {values.dtype} {values.shape}")
        return values.astype(np.float32)
    globe = load_globe(path, config.get("variables"))
    steps = globe.data.shape[1]
    if time_index is None and steps > 1:
        raise UserError(f"{path}: holds {steps} time steps; choose one with --time")
    index = time_index or 0
    if not -steps <= index < steps:
        raise UserError(f"{path}: time step {index} does not exist (the file has {steps})")
    if config.get("grid") and not same_grid(globe, config["grid"]):
        raise UserError(f"{path}: the globe's latitude/longitude grid is not the one the base network models")
    step = np.moveaxis(globe.data[:, index], 0, -1)
    if np.isnan(step).any():
        raise UserError(f"{path}: time step {index} has missing values; COIN++ models complete globes")
    return np.ascontiguousarray(step, dtype=np.float32)


def same_grid(globe, grid: dict) -> bool:
    return globe.latitude.shape == (len(grid["latitude"]),) and globe.longitude.shape == (len(grid["longitude"]),) \
        and np.allclose(globe.latitude, grid["latitude"]) and np.allclose(globe.longitude, grid["longitude"])


def globe_description(path: str | os.PathLike, variables: list[str] | None = None) -> dict:
    """Grid, variable names and units of the globes in a netCDF file (or the first in a folder)."""
    path = Path(path)
    files = sorted(path.glob("*.nc")) + sorted(path.glob("*.cdf")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no netCDF files found (.nc, .cdf)")
    globe = load_globe(files[0], variables)
    return {"grid": {"latitude": globe.latitude.tolist(), "longitude": globe.longitude.tolist()},
            "variables": list(globe.variables), "units": list(globe.units)}


def write_datapoint(path: str | os.PathLike, point: Datapoint, config: dict) -> None:
    path = Path(path)
    modality = config["modality"]
    suffixes = OUTPUT_SUFFIXES[modality]
    if not path.name.lower().endswith(suffixes):
        raise UserError(f"{path}: {modality} data is written as {' / '.join(suffixes)}")
    if modality == "image":
        save_image(path, point.values)
        return
    buffer = io.BytesIO()
    if modality == "audio":
        import soundfile

        fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
        soundfile.write(buffer, np.clip(point.values[:, 0], -1.0, 1.0), int(config["sample_rate"]), format=fmt,
                        subtype="PCM_16")
        data = buffer.getvalue()
    elif modality == "volume":
        import nibabel

        affine = np.diag([*(point.spacing or (1.0, 1.0, 1.0)), 1.0])
        data = nibabel.Nifti1Image(point.values[..., 0], affine).to_bytes()
        data = gzip.compress(data, mtime=0) if path.name.lower().endswith(".gz") else data
    elif path.suffix.lower() == ".npy":
        np.save(buffer, point.values, allow_pickle=False)
        data = buffer.getvalue()
    else:
        data = globe_netcdf_bytes(point.values, config)
    atomic_write_bytes(path, data)


def globe_netcdf_bytes(values: np.ndarray, config: dict) -> bytes:
    from scipy.io import netcdf_file

    buffer = io.BytesIO()
    nc = netcdf_file(buffer, "w")
    lat, lon = config["grid"]["latitude"], config["grid"]["longitude"]
    nc.createDimension("lat", len(lat))
    nc.createDimension("lon", len(lon))
    for name, axis, units in (("lat", lat, "degrees_north"), ("lon", lon, "degrees_east")):
        var = nc.createVariable(name, "f8", (name,))
        var[:] = axis
        var.units = units
    names = config.get("variables") or [f"var{i}" for i in range(values.shape[-1])]
    units = config.get("units") or [""] * len(names)
    for i, (name, unit) in enumerate(zip(names, units)):
        var = nc.createVariable(name, "f4", ("lat", "lon"))
        var[:] = values[..., i]
        var.units = unit
    nc.flush()
    data = buffer.getvalue()
    nc.close()
    return data


# --- training sets ---------------------------------------------------------------------------------

def training_features(points: list[np.ndarray], config: dict) -> list[torch.Tensor]:
    """Datapoints as features for meta-training; without a fixed value range, each by its own (as the codec does)."""
    return [to_features(v, config, datapoint_range(v) if config.get("value_range") is None else None) for v in points]


def training_datapoints(modality: str, path: str | os.PathLike, config: dict) -> list[np.ndarray]:
    """Every datapoint under ``path`` (a file or folder), canonical layout.  Globes: each time
    step of each file is one datapoint.  Kodak is refused: it is the image-codec test set."""
    path = Path(path)
    if "kodak" in {part.lower() for part in path.resolve().parts}:
        raise UserError(f"{path}: Kodak is the image-codec test set; train on other images")
    return list(_datapoints(modality, path, config))


def _datapoints(modality: str, path: Path, config: dict):
    if modality == "image":
        for p in list_images(path) if path.is_dir() else [path]:
            image = load_image(p)
            yield image if image.shape[-1] == int(config["out_dim"]) else np.repeat(image, config["out_dim"], -1)
    elif modality == "audio":
        for p in list_audio(path) if path.is_dir() else [path]:
            yield load_audio(p, sample_rate=int(config["sample_rate"]))[0][:, None]
    elif modality == "volume":
        files = sorted(p for p in path.rglob("*") if p.name.lower().endswith(VOLUME_SUFFIXES)) if path.is_dir() else [path]
        if not files:
            raise DataError(f"{path}: no volumes found (expected {', '.join(VOLUME_SUFFIXES)} files)")
        for p in files:
            yield load_volume(p).data[..., None]
    elif modality == "sphere":
        files = sorted(path.glob("*.nc")) + sorted(path.glob("*.cdf")) if path.is_dir() else [path]
        for p in files:
            globe = load_globe(p, config.get("variables"))
            if np.isnan(globe.data).any():
                raise DataError(f"{p}: globes with missing values cannot be modelled (COIN++ fits complete globes)")
            for t in range(globe.data.shape[1]):
                yield np.ascontiguousarray(np.moveaxis(globe.data[:, t], 0, -1))
    else:
        raise UserError(f"unknown modality {modality!r}")
