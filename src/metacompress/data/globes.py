"""Gridded data on the sphere from netCDF-3 files (read with scipy, no netCDF4 dependency).

A *globe variable* is a numeric variable whose dimensions are one latitude axis, one longitude
axis, at most one time axis and any number of length-1 axes (e.g. a singleton depth level,
squeezed away).  Axes are recognised from their coordinate variable: ``units`` of
``degrees_north`` / ``degrees_east`` (or ``standard_name`` latitude/longitude), time from
``units`` of the form ``<unit> since <date>``; failing that, from the dimension name
(lat/latitude/y, lon/longitude/x, time/t).  The Ferret files in ``climate/ferret_noaa_pmel``
name their axes e.g. COADSX/COADSY/TIME and are found through the units.

Default selection: all globe variables on the largest latitude x longitude grid (ties: the one
met first in the file), and among those the ones on the longest time axis; variables on other
grids are left out.  Explicitly requested variables must all share one grid and time length.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.io import netcdf_file

from metacompress.errors import DataError

_LAT_UNITS = {"degrees_north", "degree_north", "degrees_n", "degree_n", "degreesn", "degreen"}
_LON_UNITS = {"degrees_east", "degree_east", "degrees_e", "degree_e", "degreese", "degreee"}
_NAMES = {"lat": {"lat", "latitude", "y"}, "lon": {"lon", "long", "longitude", "x"},
          "time": {"time", "t"}}


@dataclass
class Globe:
    """``data`` float32 (variables, time, lat, lon), NaN where missing; ``missing[v]`` counts the
    NaNs of variable ``v``; ``time`` is the raw time coordinate (None without a time axis or
    coordinate) in ``time_units``."""

    data: np.ndarray
    variables: tuple[str, ...]
    latitude: np.ndarray
    longitude: np.ndarray
    units: tuple[str, ...]
    missing: dict[str, int]
    time: np.ndarray | None
    time_units: str | None = field(default=None)


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").strip()
    return str(value).strip()


def _axis_kind(name: str, coord) -> str | None:
    """'lat', 'lon', 'time' or None for dimension ``name`` with coordinate variable ``coord``."""
    if coord is not None:
        units = _text(getattr(coord, "units", None)).lower()
        standard = _text(getattr(coord, "standard_name", None)).lower()
        if units in _LAT_UNITS or standard == "latitude":
            return "lat"
        if units in _LON_UNITS or standard == "longitude":
            return "lon"
        if " since " in units or standard == "time":
            return "time"
    lower = name.lower()
    for kind, names in _NAMES.items():
        if lower in names:
            return kind
    return None


@dataclass(frozen=True)
class _Layout:
    lat: str
    lon: str
    time: str | None
    order: tuple[int, ...]  # transpose order giving (time?, lat, lon, singletons...)

    @property
    def grid(self) -> tuple[str, str]:
        return self.lat, self.lon


def _layout(var, kinds: dict[str, str | None], coords: dict) -> _Layout | str:
    """How a variable maps onto (time, lat, lon), or the reason it is not a globe variable."""
    if var.data.dtype.kind not in "iuf":
        return f"has {var.data.dtype} values"
    found: dict[str, list[int]] = {"lat": [], "lon": [], "time": []}
    others = []
    for i, dim in enumerate(var.dimensions):
        kind = kinds.get(dim)
        if kind is not None:
            found[kind].append(i)
        else:
            others.append(i)
    if len(found["lat"]) != 1 or len(found["lon"]) != 1:
        return f"has dimensions {var.dimensions}, not one latitude and one longitude axis"
    if len(found["time"]) > 1:
        return f"has more than one time axis {var.dimensions}"
    wide = [var.dimensions[i] for i in others if var.shape[i] != 1]
    if wide:
        return f"has non-singleton extra axes {tuple(wide)}"
    lat, lon = var.dimensions[found["lat"][0]], var.dimensions[found["lon"][0]]
    if coords.get(lat) is None or coords.get(lon) is None:
        return "has no latitude/longitude coordinate variables"
    order = tuple(found["time"] + found["lat"] + found["lon"] + others)
    time = var.dimensions[found["time"][0]] if found["time"] else None
    return _Layout(lat, lon, time, order)


def load_globe(path: str | os.PathLike, variables: Sequence[str] | None = None) -> Globe:
    """Read globe variables from a netCDF-3 file (see the module docstring for the rules)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: netCDF file not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:3] != b"CDF" or head[3:] not in (b"\x01", b"\x02"):
        hint = " (netCDF-4/HDF5 is not supported)" if head == b"\x89HDF" else ""
        raise DataError(f"{path}: not a netCDF-3 file{hint} (no CDF\\x01/CDF\\x02 signature)")
    try:
        nc = netcdf_file(path, "r", mmap=False)
    except Exception as exc:  # ValueError, TypeError, OSError from a damaged header or data
        raise DataError(f"{path}: corrupt or truncated netCDF-3 file ({exc})") from None
    try:
        return _read_globe(nc, path, variables)
    except DataError:
        raise
    except Exception as exc:  # truncated variable data and the like
        raise DataError(f"{path}: corrupt netCDF-3 file ({type(exc).__name__}: {exc})") from None
    finally:
        nc.close()


def _read_globe(nc, path: Path, requested: Sequence[str] | None) -> Globe:
    coords = {d: v for d in nc.dimensions
              if (v := nc.variables.get(d)) is not None and v.dimensions == (d,)}
    kinds = {d: _axis_kind(d, coords.get(d)) for d in nc.dimensions}
    layouts: dict[str, _Layout | str] = {
        name: _layout(var, kinds, coords)
        for name, var in nc.variables.items() if name not in nc.dimensions
    }
    usable = {n: lay for n, lay in layouts.items() if isinstance(lay, _Layout)}

    if requested is None:
        if not usable:
            raise DataError(f"{path}: no variables on a latitude/longitude grid "
                            f"(variables: {', '.join(layouts) or 'none'})")
        names = _default_selection(nc, usable)
    else:
        names = list(requested)
        if not names:
            raise DataError(f"{path}: empty variable list (globe variables: "
                            f"{', '.join(usable) or 'none'})")
        for name in names:
            if name in nc.dimensions and name in nc.variables:
                raise DataError(f"{path}: {name} is a coordinate variable, not a field "
                                f"(globe variables: {', '.join(usable) or 'none'})")
            if name not in layouts:
                raise DataError(f"{path}: no variable {name!r} (globe variables: "
                                f"{', '.join(usable) or 'none'})")
            if not isinstance(layouts[name], _Layout):
                raise DataError(f"{path}: variable {name} {layouts[name]}")
        first = usable[names[0]]
        for name in names[1:]:
            lay = usable[name]
            if lay.grid != first.grid:
                raise DataError(f"{path}: variable {name} is on grid {lay.grid}, {names[0]} "
                                f"on {first.grid}; requested variables must share a grid")
            if _time_len(nc, name, lay) != _time_len(nc, names[0], first):
                raise DataError(f"{path}: variable {name} has {_time_len(nc, name, lay)} time "
                                f"steps, {names[0]} has {_time_len(nc, names[0], first)}")

    fields, missing, units = [], {}, []
    for name in names:
        values, n_missing = _read_variable(nc.variables[name], usable[name])
        fields.append(values)
        missing[name] = n_missing
        units.append(_text(getattr(nc.variables[name], "units", None)))
    lay = usable[names[0]]
    time_coord = coords.get(lay.time) if lay.time is not None else None
    return Globe(
        data=np.stack(fields),
        variables=tuple(names),
        latitude=np.array(coords[lay.lat].data, dtype=np.float64),
        longitude=np.array(coords[lay.lon].data, dtype=np.float64),
        units=tuple(units),
        missing=missing,
        time=None if time_coord is None else np.array(time_coord.data, dtype=np.float64),
        time_units=None if time_coord is None else _text(getattr(time_coord, "units", None)),
    )


def _time_len(nc, name: str, lay: _Layout) -> int:
    return 1 if lay.time is None else int(nc.variables[name].shape[lay.order[0]])


def _default_selection(nc, usable: dict[str, _Layout]) -> list[str]:
    def grid_size(name: str) -> int:
        lay = usable[name]
        return len(nc.variables[lay.lat].data) * len(nc.variables[lay.lon].data)

    best_grid = max(usable, key=grid_size)  # max() keeps the first of equals: file order
    grid = usable[best_grid].grid
    on_grid = [n for n in usable if usable[n].grid == grid]
    longest = max(_time_len(nc, n, usable[n]) for n in on_grid)
    return [n for n in on_grid if _time_len(nc, n, usable[n]) == longest]


def _read_variable(var, lay: _Layout) -> tuple[np.ndarray, int]:
    """(time, lat, lon) float32 with NaN for missing values, and the number of NaNs."""
    raw = _to_tll(np.asarray(var.data), lay)
    mask = np.zeros(raw.shape, dtype=bool)
    for attr in ("_FillValue", "missing_value"):
        fill = getattr(var, attr, None)
        if fill is not None:
            for value in np.atleast_1d(np.asarray(fill)).ravel():
                if raw.dtype.kind == "f":  # compare at storage precision (a double fill
                    value = value.astype(raw.dtype)  # attribute on float32 data still matches)
                mask |= raw == value
    if raw.dtype.kind == "f":
        mask |= np.isnan(raw)
    scale = getattr(var, "scale_factor", None)
    offset = getattr(var, "add_offset", None)
    if scale is not None or offset is not None:
        values = raw.astype(np.float64)
        if scale is not None:
            values = values * float(np.asarray(scale).ravel()[0])
        if offset is not None:
            values = values + float(np.asarray(offset).ravel()[0])
    else:
        values = raw
    values = values.astype(np.float32)  # also converts big-endian storage to native
    values[mask] = np.nan
    return values, int(mask.sum())


def _to_tll(raw: np.ndarray, lay: _Layout) -> np.ndarray:
    """Transpose to (time?, lat, lon, singletons...), drop the singletons, add time if absent."""
    arr = raw.transpose(lay.order)
    n_keep = 3 if lay.time is not None else 2
    arr = arr.reshape(arr.shape[:n_keep])
    return arr if lay.time is not None else arr[None]
