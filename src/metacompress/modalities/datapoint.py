"""A datapoint as a base network sees it: features in [0, 1] on a fixed patch of coordinates.

Every modality uses one canonical array layout, channels last — image ``(H, W, C)`` uint8, audio
``(samples, 1)``, volume ``(D, H, W, 1)``, data on the sphere ``(lat, lon, variables)`` — so one
code path serves all of them; what differs lives in the base network's ``DataSpec``:

- ``patch``: the shape the network was trained on; larger data is cut into tiles of it;
- ``coordinates``: ``"grid"`` (each axis over [−scale, scale], ``coord_scale``; audio uses 5) or
  ``"sphere"`` (the unit vectors of the ``grid`` latitudes/longitudes: the patch is the globe);
- ``value_range``: per channel [lo, hi] mapped to [0, 1] (images [0, 255], audio [−1, 1],
  climate variables their training range), or ``None`` — then each datapoint carries its own
  range (volumes: a CT and an MRI have nothing in common).

A single-channel datapoint on a multi-channel base network (a grey photo, RGB base) is
repeated into every channel and averaged back on the way out.
"""

from __future__ import annotations

import numpy as np
import torch

from metacompress.errors import UserError
from metacompress.modalities.patches import patch_coordinates
from metacompress.modalities.spec import DataSpec
from metacompress.modalities.sphere import sphere_coordinates

INTEGER_DTYPES = {"uint8": (0, 255), "uint16": (0, 65535), "int16": (-32768, 32767)}


def coordinates(spec: DataSpec) -> torch.Tensor:
    """The coordinates of one patch: (points, in_dim)."""
    if spec.coordinates == "sphere":
        return sphere_coordinates(np.asarray(spec.grid.latitude), np.asarray(spec.grid.longitude))
    return patch_coordinates(spec.patch, spec.coord_scale)


RANGE_PERCENTILE = 99.5


def datapoint_range(x: np.ndarray) -> tuple[float, float]:
    """The [lo, hi] a datapoint without a fixed range is normalized with: its minimum and its
    99.5th percentile (never empty).  A percentile, not the maximum, because scans differ in
    their few brightest voxels: MRI volumes normalized by their maxima put the same tissue at
    0.2 in one and 0.7 in another, which one base network cannot serve.  Brighter values map
    above 1 and are coded like any other (the mapping is invertible).  Rounded to float32, as
    the file stores them, so encoder and decoder denormalize identically."""
    lo, hi = float(np.min(x)), float(np.percentile(x, RANGE_PERCENTILE))
    if not hi > lo:
        hi = max(float(np.max(x)), lo + 1.0)
    return float(np.float32(lo)), float(np.float32(hi))  # as the file stores them (float32)


def channel_ranges(spec: DataSpec, x_range: tuple[float, float] | None) -> torch.Tensor:
    """(channels, 2) of [lo, hi] per base channel."""
    if spec.value_range is not None:
        return torch.tensor(spec.value_range, dtype=torch.float64)
    if x_range is None:
        raise ValueError("this base network normalizes each datapoint by its own range; pass it")
    return torch.tensor([list(x_range)] * spec.channels, dtype=torch.float64)


def check_datapoint(x: np.ndarray, spec: DataSpec, source: str = "input") -> None:
    spatial = len(spec.patch)
    channels = spec.channels
    if not isinstance(x, np.ndarray) or x.ndim != spatial + 1:
        raise UserError(f"{source}: a {spec.modality} datapoint for this base network has {spatial} spatial "
                        f"axes plus channels, got shape {getattr(x, 'shape', None)}")
    if x.shape[-1] not in (1, channels):
        raise UserError(f"{source}: the base network models {channels} channel(s), the data has {x.shape[-1]}")
    if min(x.shape) < 1:
        raise UserError(f"{source}: empty datapoint of shape {x.shape}")
    if spec.coordinates == "sphere" and tuple(x.shape[:-1]) != spec.patch:
        raise UserError(f"{source}: the base network models globes on a {spec.patch[0]}×{spec.patch[1]} "
                        f"latitude×longitude grid, the data is {x.shape[0]}×{x.shape[1]}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise UserError(f"{source}: the data holds NaN or infinite values")


def to_features(x: np.ndarray, spec: DataSpec, x_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Canonical datapoint → float32 (*spatial, channels) in [0, 1] (for in-range values)."""
    ranges = channel_ranges(spec, x_range)
    values = torch.from_numpy(np.asarray(x, dtype=np.float64))
    if values.shape[-1] == 1 and ranges.shape[0] > 1:
        values = values.expand(*values.shape[:-1], ranges.shape[0])
    return ((values - ranges[:, 0]) / (ranges[:, 1] - ranges[:, 0])).float()


def from_features(features: torch.Tensor, spec: DataSpec, channels: int, dtype: str,
                  x_range: tuple[float, float] | None = None) -> np.ndarray:
    """Inverse of ``to_features``, averaging to ``channels`` = 1 if asked, rounded into integer ``dtype``s."""
    ranges = channel_ranges(spec, x_range)
    values = features.detach().cpu().double() * (ranges[:, 1] - ranges[:, 0]) + ranges[:, 0]
    if channels == 1 and values.shape[-1] > 1:
        values = values.mean(dim=-1, keepdim=True)
    values = values.numpy()
    if dtype in INTEGER_DTYPES:
        lo, hi = INTEGER_DTYPES[dtype]
        return np.clip(np.round(values), lo, hi).astype(dtype)
    return values.astype(np.float32)


def training_features(points: list[np.ndarray], spec: DataSpec) -> list[torch.Tensor]:
    """Datapoints as features for meta-training; without a fixed value range, each by its own (as the codec does)."""
    return [to_features(v, spec, None if spec.fixed_range else datapoint_range(v)) for v in points]
