"""What a base network's data is: the typed description every modality-level function takes.

``DataSpec`` is the data half of a base network's description (``inr.base_config.BaseConfig``
adds the architecture and the latent statistics); ``Datapoint`` is one canonical array with what
its file header records.  Both live at the bottom of the codec path so that reading, writing,
tiling and feature scaling never need to know about networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from metacompress.errors import FormatError

# Every modality's name; the order is the id a .mcz/.mcza header stores (two bits), so a new
# modality is appended here as well as registered in ``modalities.registry``.
MODALITIES = ("image", "audio", "volume", "sphere")

COORDINATE_KINDS = ("grid", "sphere")


@dataclass
class Datapoint:
    """A canonical array (see ``modalities.datapoint``) and what its file header records."""

    values: np.ndarray
    dtype: str  # the container dtype: uint8 / uint16 / int16 / float32
    spacing: tuple[float, float, float] | None = None  # volumes: voxel size in mm


@dataclass(frozen=True)
class Grid:
    """The latitudes and longitudes (degrees) a globe base network models."""

    latitude: tuple[float, ...]
    longitude: tuple[float, ...]


@dataclass(frozen=True)
class DataSpec:
    """The data a base network models (thesis §5.2; defaults per modality in ``modalities``).

    ``patch`` is the shape the network was trained on (larger data is cut into tiles of it);
    ``coordinates`` is ``"grid"`` (each axis over [−coord_scale, coord_scale]) or ``"sphere"``
    (unit vectors of ``grid``); ``value_range`` maps each channel's [lo, hi] to [0, 1], or is
    None when every datapoint carries its own range (volumes)."""

    modality: str
    channels: int  # the network's output channels (``out_dim``)
    patch: tuple[int, ...]
    coordinates: str = "grid"
    coord_scale: float = 1.0
    value_range: tuple[tuple[float, float], ...] | None = None
    sample_rate: int | None = None  # audio
    grid: Grid | None = None  # sphere
    variables: tuple[str, ...] | None = None  # sphere
    units: tuple[str, ...] | None = None  # sphere

    def __post_init__(self) -> None:
        where = "base network description"
        if self.modality not in MODALITIES:
            raise FormatError(f"{where}: unknown modality {self.modality!r} (known: {', '.join(MODALITIES)})")
        if not (isinstance(self.channels, int) and self.channels >= 1):
            raise FormatError(f"{where}: out_dim must be a positive integer, got {self.channels!r}")
        if not self.patch or not all(isinstance(s, int) and s >= 1 for s in self.patch):
            raise FormatError(f"{where}: patch must be positive integer sizes, got {self.patch!r}")
        if self.coordinates not in COORDINATE_KINDS:
            raise FormatError(f"{where}: coordinates must be one of {COORDINATE_KINDS}, got {self.coordinates!r}")
        if not (math.isfinite(self.coord_scale) and self.coord_scale > 0):
            raise FormatError(f"{where}: coord_scale must be positive, got {self.coord_scale!r}")
        if self.value_range is not None and (
                len(self.value_range) != self.channels
                or not all(len(r) == 2 and math.isfinite(r[0]) and math.isfinite(r[1]) and r[1] > r[0]
                           for r in self.value_range)):
            raise FormatError(f"{where}: value_range must be {self.channels} finite [lo, hi] pairs with hi > lo, "
                              f"got {self.value_range!r}")
        if self.sample_rate is not None and not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            raise FormatError(f"{where}: sample_rate must be a positive integer, got {self.sample_rate!r}")
        if self.coordinates == "sphere" and (self.grid is None or self.patch != (len(self.grid.latitude),
                                                                                 len(self.grid.longitude))):
            raise FormatError(f"{where}: sphere coordinates need a grid whose size is the patch {self.patch}")
        for name in ("variables", "units"):
            value = getattr(self, name)
            if value is not None and len(value) != self.channels:
                raise FormatError(f"{where}: {name} must name {self.channels} channel(s), got {value!r}")

    @property
    def in_dim(self) -> int:
        """Coordinates per point: one per patch axis, or a unit vector in 3-D on the sphere."""
        return 3 if self.coordinates == "sphere" else len(self.patch)

    @property
    def fixed_range(self) -> bool:
        """Whether the network maps one fixed range per channel (else each datapoint stores its own)."""
        return self.value_range is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields, exactly as base network descriptions have always stored them."""
        out: dict[str, Any] = {"modality": self.modality, "out_dim": self.channels, "patch": list(self.patch),
                               "coordinates": self.coordinates, "coord_scale": self.coord_scale,
                               "value_range": None if self.value_range is None else [list(r) for r in self.value_range]}
        if self.sample_rate is not None:
            out["sample_rate"] = self.sample_rate
        if self.grid is not None:
            out["grid"] = {"latitude": list(self.grid.latitude), "longitude": list(self.grid.longitude)}
        if self.variables is not None:
            out["variables"] = list(self.variables)
        if self.units is not None:
            out["units"] = list(self.units)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        """Parse the data fields of a description; a missing or malformed one is a FormatError naming it."""
        try:
            grid = d.get("grid")
            value_range = d.get("value_range")
            return cls(
                modality=field_of(d, "modality", str),
                channels=field_of(d, "out_dim", int),
                patch=tuple(int_list(d, "patch")),
                coordinates=str(d.get("coordinates", "grid")),
                coord_scale=float(d.get("coord_scale", 1.0)),
                value_range=None if value_range is None else tuple((float(lo), float(hi)) for lo, hi in value_range),
                sample_rate=None if d.get("sample_rate") is None else field_of(d, "sample_rate", int),
                grid=None if grid is None else Grid(tuple(map(float, grid["latitude"])),
                                                    tuple(map(float, grid["longitude"]))),
                variables=None if d.get("variables") is None else tuple(map(str, d["variables"])),
                units=None if d.get("units") is None else tuple(map(str, d["units"])))
        except (TypeError, ValueError, KeyError) as exc:
            raise FormatError(f"base network description: malformed data fields ({exc})") from None


def field_of(d: dict[str, Any], name: str, kind: type) -> Any:
    """``d[name]`` if it is a ``kind`` (bool is not an int), else a FormatError naming the field."""
    value = d.get(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(f"base network description: field {name!r} must be {kind.__name__}, got {value!r}")
    return value


def int_list(d: dict[str, Any], name: str) -> list[int]:
    value = d.get(name)
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise FormatError(f"base network description: field {name!r} must be a list of integers, got {value!r}")
    return value
