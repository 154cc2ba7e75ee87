"""The datapoints of a dataset, addressable by index: what ``archive create`` encodes.

A source is a folder of files (searched recursively, in sorted path order), an ``.npz`` array
of stacked datapoints, or for globes a netCDF file whose time steps are the datapoints.  Items
are loaded on demand, so a worker encoding items 640–703 reads only those.

Item names are stored in archives as UTF-8, one a line, each at most ``MAX_NAME_BYTES`` bytes: a
file whose name is not valid UTF-8, holds a newline or NUL, or is longer than that is refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from metacompress.data.globes import load_globe
from metacompress.errors import DataError, UserError
from metacompress.modalities.datapoint import INTEGER_DTYPES
from metacompress.modalities.files import read_datapoint
from metacompress.modalities.registry import modality
from metacompress.modalities.spec import Datapoint, DataSpec
from metacompress.modalities.sphere import SphereModality

MAX_NAME_BYTES = 1024  # what an archive reader accepts for one item name


def shown_path(path: Path) -> str:
    """``path`` printable on one line, whatever bytes its name holds (undecodable ones as \\xNN)."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def check_item_name(name: str, path: Path) -> str:
    """``name`` (the item stored from ``path``) if an archive can hold it, else one line saying why not."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise DataError(f"{shown_path(path)}: file name is not valid UTF-8; rename it") from None
    if "\n" in name or "\r" in name or "\0" in name:
        raise DataError(f"{shown_path(path)}: file name holds a line break or NUL character; rename it")
    if size > MAX_NAME_BYTES:
        raise DataError(f"{shown_path(path)}: its name in the archive would be {size} bytes long (at most "
                        f"{MAX_NAME_BYTES}); rename it or move it up the folder tree")
    return name


class ItemSource:
    """``names[i]`` and ``load(i)`` for every item; ``fingerprint`` changes when the items do.

    Sources are pickled to worker processes: each loads its data again on first use there.
    """

    path: Path
    names: list[str]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.names)

    def load(self, i: int) -> Datapoint:
        raise NotImplementedError

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_cache")}


def item_source(path: str | os.PathLike, spec: DataSpec, key: str | None = None) -> ItemSource:
    """The items under ``path`` as a base network with data ``spec`` models them."""
    path = Path(path)
    kind = modality(spec.modality)
    netcdf_ok = kind.time_series_suffixes
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(kind.input_suffixes))
        if not files:
            raise DataError(f"{path}: no {kind.name} files found (expected {', '.join(kind.input_suffixes)})")
        netcdf = [p for p in files if p.suffix.lower() in netcdf_ok]
        if not netcdf:
            return FileSource(path, files, spec)
        if len(netcdf) != len(files):
            raise UserError(f"{path}: mixes netCDF files with .npy globes; keep one kind per folder")
        return GlobeSource(path, netcdf, spec)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".npz":
        return NpzSource(path, spec, key)
    if path.suffix.lower() in netcdf_ok:
        return GlobeSource(path, [path], spec)
    raise UserError(f"{path}: give a folder of {kind.name} files, an .npz of stacked datapoints"
                    + (", or a netCDF file of globes" if netcdf_ok else ""))


class FileSource(ItemSource):
    """One file per item; names are the paths relative to the folder."""

    def __init__(self, folder: Path, files: list[Path], spec: DataSpec):
        self.path, self.files, self.spec = folder, files, spec
        self.names = [check_item_name(p.relative_to(folder).as_posix(), p) for p in files]
        self.fingerprint = _fingerprint(files, self.names)

    def load(self, i: int) -> Datapoint:
        return read_datapoint(self.files[i], self.spec)


class GlobeSource(ItemSource):
    """Every time step of every netCDF file; names are ``file#step``."""

    def __init__(self, root: Path, files: list[Path], spec: DataSpec):
        self.path, self.files, self.spec = root, files, spec
        for label, path in zip(self._labels(), files):  # before reading any globe
            check_item_name(f"{label}#0", path)
        self.names = [check_item_name(f"{label}#{t}", path) for label, path, steps
                      in zip(self._labels(), files, self._steps_per_file()) for t in range(steps)]
        self.fingerprint = _fingerprint(files, self.names)

    def _labels(self) -> list[str]:
        return [p.name if p == self.path else p.relative_to(self.path).as_posix() for p in self.files]

    def _steps_per_file(self) -> list[int]:
        return [g.shape[0] for g in self._globes()]

    def _globes(self) -> list[np.ndarray]:
        """Each file's globes, (time, lat, lon, variables) float32, loaded once per process."""
        if getattr(self, "_cache", None) is None:
            self._cache = [self._read(p) for p in self.files]
        return self._cache

    def _read(self, path: Path) -> np.ndarray:
        globe = load_globe(path, self.spec.variables)
        SphereModality.check_grid(globe, self.spec, path)
        if np.isnan(globe.data).any():
            raise DataError(f"{path}: has missing values; COIN++ models complete globes")
        return np.ascontiguousarray(np.moveaxis(globe.data, 0, -1), dtype=np.float32)

    def load(self, i: int) -> Datapoint:
        for globes in self._globes():
            if i < len(globes):
                return Datapoint(np.ascontiguousarray(globes[i]), "float32")
            i -= len(globes)
        raise IndexError(i)


class NpzSource(ItemSource):
    """Items stacked along the first axis of one array in an ``.npz`` (never unpickled)."""

    def __init__(self, path: Path, spec: DataSpec, key: str | None):
        self.path, self.spec, self.key = path, spec, key
        array = self._array()
        self.names = [""] * array.shape[0]
        digest = hashlib.sha256(array.view(np.uint8)).hexdigest()
        self.fingerprint = f"{digest}:{array.shape}:{array.dtype}"

    def _array(self) -> np.ndarray:
        if getattr(self, "_cache", None) is None:
            self._cache = self._read()
        return self._cache

    def _read(self) -> np.ndarray:
        path, key, kind = self.path, self.key, modality(self.spec.modality)
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.keys())
                if key is None and len(keys) != 1:
                    raise UserError(f"{path}: holds arrays {', '.join(keys)}; choose one with --key")
                if key is not None and key not in keys:
                    raise UserError(f"{path}: has no array {key!r} (it holds {', '.join(keys)})")
                array = npz[key or keys[0]]
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npz file ({exc})") from None
        ndim = 2 + kind.spatial_axes  # items, spatial axes, channels
        if array.ndim == ndim - 1:
            array = array[..., None]  # grey images, one-variable globes, audio and volumes
        if array.ndim != ndim or array.shape[0] == 0 or (not kind.stacked_channel_axis and array.shape[-1] != 1):
            raise DataError(f"{path}: {kind.name} items stack as an (items, {', '.join(['…'] * (ndim - 1))}) array, "
                            f"got shape {array.shape}")
        kind.check_stacked(array, path)
        if array.dtype.kind not in "fiu":
            raise DataError(f"{path}: expected numeric data, got {array.dtype}")
        dtype = array.dtype.name if array.dtype.name in INTEGER_DTYPES else "float32"
        return np.ascontiguousarray(array, dtype=dtype)

    def load(self, i: int) -> Datapoint:
        array = self._array()
        return Datapoint(np.ascontiguousarray(array[i]), array.dtype.name)


def _fingerprint(files: list[Path], names: list[str]) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update("\n".join(names).encode())
    return digest.hexdigest()
