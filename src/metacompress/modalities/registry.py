"""One class per modality, found by name: everything that differs between images, audio,
volumes and globes lives in that class — reading and writing its files, the training data, the
spec a new base network gets, the fields its records store.  Nothing else branches on a
modality's name.  A new modality is one module with a ``Modality`` subclass plus one line in
``_MODULES``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from metacompress.errors import UserError
from metacompress.modalities.spec import MODALITIES, Datapoint, DataSpec

# name → "module:Class", imported on first use so that the registry costs nothing to import
_MODULES = {
    "image": "metacompress.modalities.image:ImageModality",
    "audio": "metacompress.modalities.audio:AudioModality",
    "volume": "metacompress.modalities.volume:VolumeModality",
    "sphere": "metacompress.modalities.sphere:SphereModality",
}
assert tuple(_MODULES) == MODALITIES, "register every modality of modalities.spec.MODALITIES, in its order"
_INSTANCES: dict[str, Modality] = {}


def modality(name: str) -> Modality:
    """The modality called ``name`` (a UserError listing the known ones otherwise)."""
    if name not in _MODULES:
        raise UserError(f"unknown modality {name!r} (known: {', '.join(MODALITIES)})")
    if name not in _INSTANCES:
        module, cls = _MODULES[name].split(":")
        _INSTANCES[name] = getattr(importlib.import_module(module), cls)()
    return _INSTANCES[name]


class Modality:
    """How one kind of data is read, written, trained on and stored."""

    name: ClassVar[str]
    spatial_axes: ClassVar[int]  # axes before the channel axis of the canonical layout
    input_suffixes: ClassVar[tuple[str, ...]]  # files a folder of items is searched for
    output_suffixes: ClassVar[tuple[str, ...]]  # files ``write`` can make
    default_suffix: ClassVar[str]
    default_patch: ClassVar[tuple[int, ...] | None] = None  # None: the patch is the whole datapoint
    stores_spacing: ClassVar[bool] = False  # records carry the voxel size (volumes)
    stacked_channel_axis: ClassVar[bool] = True  # an .npz of items has a channel axis of its own
    time_series_suffixes: ClassVar[tuple[str, ...]] = ()  # files whose time steps are separate items
    metrics: ClassVar[tuple[str, ...]] = ("psnr",)
    rate_unit: ClassVar[str] = "bits/sample"  # how rates are quoted: bpp for images

    # --- files ------------------------------------------------------------------------------------
    def read(self, path: Path, spec: DataSpec, time_index: int | None = None) -> Datapoint:
        raise NotImplementedError

    def read_converting(self, path: Path, spec: DataSpec, time_index: int | None = None, *, resample: bool = False,
                        downmix: bool = False) -> tuple[Datapoint, str | None]:
        """``read``, converting what the base network does not model when asked to (only audio has
        conversions), and a description of the conversion (None: none)."""
        if resample or downmix:
            raise UserError(f"--resample and --downmix are for audio (the base network is for {self.name})")
        return self.read(path, spec, time_index), None

    def encode_file(self, point: Datapoint, spec: DataSpec, suffix: str) -> bytes:
        """The bytes of a ``suffix`` file (one of ``output_suffixes``) holding ``point``."""
        raise NotImplementedError

    def write(self, path: str | os.PathLike, point: Datapoint, spec: DataSpec | None) -> None:
        """Write ``point`` to ``path`` whole (a temporary, then a rename); ``spec`` may be None for
        modalities whose files need nothing from it (images)."""
        from metacompress.checkpoint import atomic_write_bytes

        path = Path(path)
        suffix = next((s for s in self.output_suffixes if path.name.lower().endswith(s)), None)
        if suffix is None:
            raise UserError(f"{path}: {self.name} data is written as {' / '.join(self.output_suffixes)}")
        atomic_write_bytes(path, self.encode_file(point, spec, suffix))

    def output_path(self, path: Path) -> Path:
        """``path`` if it names a file this modality writes, else with the default suffix."""
        return path if path.name.lower().endswith(self.output_suffixes) else path.with_suffix(self.default_suffix)

    # --- training data ------------------------------------------------------------------------------
    def training_arrays(self, path: Path, spec: DataSpec) -> Iterator[np.ndarray]:
        """Every datapoint under ``path`` (a file or folder) in the canonical layout."""
        raise NotImplementedError

    def new_spec(self, patch: tuple[int, ...] | None, source: str | os.PathLike | None,
                 variables: list[str] | None, extra: dict | None) -> DataSpec:
        """The spec of a new base network trained on ``source`` (``extra``: what in-memory data
        cannot tell, e.g. a globe's grid); ``finish_spec`` completes it from the data."""
        raise NotImplementedError

    def finish_spec(self, spec: DataSpec, points: list[np.ndarray]) -> DataSpec:
        return spec

    def check_patch(self, patch: tuple[int, ...]) -> tuple[int, ...]:
        patch = tuple(int(s) for s in patch)
        if len(patch) != self.spatial_axes or min(patch) < 1:
            raise UserError(f"a {self.name} patch has {self.spatial_axes} positive sizes, got {patch}")
        return patch

    def check_stacked(self, array: np.ndarray, path: Path) -> None:
        """Refuse an .npz stack this modality cannot hold (beyond its layout)."""
