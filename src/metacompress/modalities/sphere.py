"""Data on the sphere: a latitude/longitude grid as points on the unit sphere (thesis §5.3.2).

Using (cos λ cos φ, cos λ sin φ, sin λ) instead of (λ, φ) makes the network see the globe's true
geometry: longitudes −180° and 180° are the same point, and so is every longitude at a pole.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from metacompress.data.globes import Globe, load_globe
from metacompress.errors import DataError, UserError
from metacompress.modalities.grid import grid_coordinates
from metacompress.modalities.registry import Modality
from metacompress.modalities.spec import Datapoint, DataSpec, Grid


def sphere_coordinates(latitudes_deg: np.ndarray, longitudes_deg: np.ndarray) -> torch.Tensor:
    """(lat·lon, 3) unit vectors for every grid point, latitude-major (longitude fastest)."""
    lat = torch.as_tensor(np.radians(np.asarray(latitudes_deg, dtype=np.float64)))
    lon = torch.as_tensor(np.radians(np.asarray(longitudes_deg, dtype=np.float64)))
    angles = grid_coordinates([lat, lon])  # (points, 2): latitude, longitude
    lat, lon = angles[:, 0], angles[:, 1]
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)],
                       dim=-1).float()


NETCDF_SUFFIXES = (".nc", ".cdf")


class SphereModality(Modality):
    """Globes: (latitude, longitude, variables) on the network's grid — a netCDF time step or an
    ``.npy`` array in, ``.npy`` or netCDF-3 out.  The patch is the whole grid."""

    name = "sphere"
    spatial_axes = 2
    input_suffixes = (".npy", *NETCDF_SUFFIXES)
    output_suffixes = (".npy", ".nc")
    default_suffix = ".npy"
    time_series_suffixes = NETCDF_SUFFIXES
    metrics = ("psnr", "rmse")

    def read(self, path: Path, spec: DataSpec, time_index: int | None = None) -> Datapoint:
        if path.suffix.lower() == ".npy":
            try:
                values = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: not a readable .npy array ({exc})") from None
            if values.dtype.kind not in "fiu" or values.ndim != 3:
                raise DataError(f"{path}: expected a numeric (lat, lon, variables) array, got {values.dtype} "
                                f"{values.shape}")
            return Datapoint(values.astype(np.float32), "float32")
        globe = load_globe(path, spec.variables)
        steps = globe.data.shape[1]
        if time_index is None and steps > 1:
            raise UserError(f"{path}: holds {steps} time steps; choose one with --time")
        index = time_index or 0
        if not -steps <= index < steps:
            raise UserError(f"{path}: time step {index} does not exist (the file has {steps})")
        self.check_grid(globe, spec, path)
        step = np.moveaxis(globe.data[:, index], 0, -1)
        if np.isnan(step).any():
            raise UserError(f"{path}: time step {index} has missing values; COIN++ models complete globes")
        return Datapoint(np.ascontiguousarray(step, dtype=np.float32), "float32")

    @staticmethod
    def check_grid(globe: Globe, spec: DataSpec, path: Path) -> None:
        grid = spec.grid
        if grid is None:
            return
        if not (globe.latitude.shape == (len(grid.latitude),) and globe.longitude.shape == (len(grid.longitude),)
                and np.allclose(globe.latitude, grid.latitude) and np.allclose(globe.longitude, grid.longitude)):
            raise UserError(f"{path}: the globe's latitude/longitude grid is not the one the base network models")

    def encode_file(self, point: Datapoint, spec: DataSpec, suffix: str) -> bytes:
        if suffix == ".npy":
            buffer = io.BytesIO()
            np.save(buffer, point.values, allow_pickle=False)
            return buffer.getvalue()
        return globe_netcdf_bytes(point.values, spec)

    def training_arrays(self, path: Path, spec: DataSpec) -> Iterator[np.ndarray]:
        for p in netcdf_files(path):
            globe = load_globe(p, spec.variables)
            if np.isnan(globe.data).any():
                raise DataError(f"{p}: globes with missing values cannot be modelled (COIN++ fits complete globes)")
            for t in range(globe.data.shape[1]):
                yield np.ascontiguousarray(np.moveaxis(globe.data[:, t], 0, -1))

    def new_spec(self, patch, source, variables, extra) -> DataSpec:
        described = extra if extra else globe_description(source, variables)
        grid = Grid(tuple(map(float, described["grid"]["latitude"])), tuple(map(float, described["grid"]["longitude"])))
        shape = (len(grid.latitude), len(grid.longitude))
        if patch is not None and tuple(patch) != shape:
            raise UserError(f"globes are modelled whole: the patch is the {shape[0]}×{shape[1]} grid")
        names = list(described["variables"])
        # the value range is the training data's (finish_spec); until then each datapoint's own
        return DataSpec("sphere", len(names), shape, coordinates="sphere", grid=grid, variables=tuple(names),
                        units=tuple(described.get("units") or [""] * len(names)))

    def finish_spec(self, spec: DataSpec, points: list[np.ndarray]) -> DataSpec:
        """Per variable, the training data's [min, max] (a constant variable: [v, v + 1])."""
        stacked = np.stack(points)
        lo, hi = stacked.min(axis=(0, 1, 2)), stacked.max(axis=(0, 1, 2))
        return dataclasses.replace(spec, value_range=tuple((float(a), float(b) if b > a else float(a) + 1.0)
                                                           for a, b in zip(lo, hi)))


def netcdf_files(path: Path) -> list[Path]:
    """``path`` itself, or the netCDF files in the folder ``path`` (sorted)."""
    if not path.is_dir():
        return [path]
    files = sorted(path.glob("*.nc")) + sorted(path.glob("*.cdf"))
    if not files:
        raise DataError(f"{path}: no netCDF files found (.nc, .cdf)")
    return files


def globe_description(path: str | os.PathLike, variables: list[str] | None = None) -> dict:
    """Grid, variable names and units of the globes in a netCDF file (or the first in a folder)."""
    globe = load_globe(netcdf_files(Path(path))[0], variables)
    return {"grid": {"latitude": globe.latitude.tolist(), "longitude": globe.longitude.tolist()},
            "variables": list(globe.variables), "units": list(globe.units)}


def globe_netcdf_bytes(values: np.ndarray, spec: DataSpec) -> bytes:
    """A netCDF-3 file of one globe with the spec's grid, variable names and units."""
    from scipy.io import netcdf_file

    buffer = io.BytesIO()
    nc = netcdf_file(buffer, "w")
    lat, lon = spec.grid.latitude, spec.grid.longitude
    nc.createDimension("lat", len(lat))
    nc.createDimension("lon", len(lon))
    for name, axis, units in (("lat", lat, "degrees_north"), ("lon", lon, "degrees_east")):
        var = nc.createVariable(name, "f8", (name,))
        var[:] = axis
        var.units = units
    names = spec.variables or [f"var{i}" for i in range(values.shape[-1])]
    units = spec.units or [""] * len(names)
    for i, (name, unit) in enumerate(zip(names, units)):
        var = nc.createVariable(name, "f4", ("lat", "lon"))
        var[:] = values[..., i]
        var.units = unit
    nc.flush()
    data = buffer.getvalue()
    nc.close()
    return data
