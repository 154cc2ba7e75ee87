"""The typed description of a COIN++ base network: architecture, data and latent statistics.

Stored as the ``config`` object of the base network's JSON (see ``inr.base_network``).  The
JSON fields are the ones every base network has been written with, so ``to_dict`` of a parsed
description gives back the same object — and the same content hash, which ``.mcz`` files are
keyed with.  Parsing validates every field; a bad one is a ``FormatError`` naming it.
Fields added since are written only when set, so older descriptions keep their bytes: ``inner_lr``
(the inner-loop rate encoding steps with), ``meta_sgd`` (the weights include ``inner_lrs``, one
learned rate per latent dimension) and ``codes.dim_mean`` / ``codes.dim_std`` (the quantizer's
range per latent dimension; the symbol counts are then of those per-dimension symbols).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metacompress.errors import FormatError
from metacompress.modalities.spec import DataSpec, field_of

ARCHITECTURE_FIELDS = ("in_dim", "width", "depth", "latent_dim", "w0")
DEFAULT_INNER_LR = 1e-2  # thesis C.3: the inner-loop learning rate of meta-training and encoding


@dataclass(frozen=True)
class LatentStatistics:
    """What the latent quantizer and the symbol model need (thesis §5.2.3): the training latents'
    mean and std, and per bit-width the symbol counts of the training patches.  With ``dim_mean``
    and ``dim_std`` (one per latent dimension; issue 17) the quantizer's range is per dimension and
    the counts are of those per-dimension symbols, pooled over dimensions."""

    mean: float
    std: float
    steps: int  # inner steps the statistics were measured after
    patches: int  # training patches they were measured on
    symbol_counts: Mapping[int, tuple[int, ...]]
    dim_mean: tuple[float, ...] | None = None
    dim_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise FormatError(f"base network description: codes need a finite mean and a positive std, "
                              f"got {self.mean}, {self.std}")
        if (self.dim_mean is None) != (self.dim_std is None) or (
                self.dim_mean is not None and (len(self.dim_mean) != len(self.dim_std) or not self.dim_std
                                               or not all(math.isfinite(v) for v in self.dim_mean + self.dim_std)
                                               or min(self.dim_std) <= 0)):
            raise FormatError("base network description: codes.dim_mean and codes.dim_std must be lists of equal "
                              "length of finite numbers, the stds positive")
        for bits, counts in self.symbol_counts.items():
            if len(counts) != 2 ** bits or any(c < 0 for c in counts):
                raise FormatError(f"base network description: codes.symbol_counts[{bits}] must be {2 ** bits} "
                                  "counts ≥ 0")

    @property
    def bit_widths(self) -> list[int]:
        return sorted(self.symbol_counts)

    @property
    def per_dimension(self) -> bool:
        return self.dim_std is not None

    def to_dict(self) -> dict[str, Any]:
        out = {"mean": self.mean, "std": self.std, "steps": self.steps, "patches": self.patches,
               "symbol_counts": {str(b): list(c) for b, c in self.symbol_counts.items()}}
        if self.per_dimension:  # written only when set: older descriptions keep their content hash
            out |= {"dim_mean": list(self.dim_mean), "dim_std": list(self.dim_std)}
        return out

    @classmethod
    def from_dict(cls, d: Any) -> LatentStatistics:
        if not isinstance(d, dict):
            raise FormatError(f"base network description: field 'codes' must be an object, got {d!r}")
        counts = d.get("symbol_counts")
        if not isinstance(counts, dict) or not all(isinstance(k, str) and k.isdigit() and isinstance(v, list)
                                                   and all(isinstance(c, int) for c in v)
                                                   for k, v in counts.items()):
            raise FormatError("base network description: field 'codes.symbol_counts' must map bit-widths to "
                              "lists of integer counts")
        per_dim = []
        for key in ("dim_mean", "dim_std"):
            values = d.get(key)
            if values is not None and not (isinstance(values, list) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
                raise FormatError(f"base network description: field 'codes.{key}' must be a list of numbers")
            per_dim.append(None if values is None else tuple(float(v) for v in values))
        return cls(field_of(d, "mean", float), field_of(d, "std", float), field_of(d, "steps", int),
                   field_of(d, "patches", int), {int(k): tuple(v) for k, v in counts.items()}, *per_dim)


@dataclass(frozen=True)
class BaseConfig:
    """A base network: ModulatedSiren(in_dim → width × depth → channels, latent_dim, ω₀) over the
    data ``data`` describes (thesis C.3 defaults: 10 × 512, latent 128, ω₀ 50)."""

    data: DataSpec
    in_dim: int
    width: int
    depth: int
    latent_dim: int
    w0: float
    codes: LatentStatistics | None = None  # measured after meta-training
    inner_lr: float | None = None  # None: DEFAULT_INNER_LR (older descriptions do not store it)
    training: Mapping[str, Any] | None = None  # how it was trained: notes, not read by the codec
    meta_sgd: bool = False  # learned per-dimension inner learning rates (stored with the weights)

    def __post_init__(self) -> None:
        for name in ("in_dim", "width", "depth", "latent_dim"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise FormatError(f"base network description: field {name!r} must be a positive integer, "
                                  f"got {value!r}")
        if not (math.isfinite(self.w0) and self.w0 > 0):
            raise FormatError(f"base network description: field 'w0' must be positive, got {self.w0!r}")
        if self.codes is not None and self.codes.per_dimension and len(self.codes.dim_std) != self.latent_dim:
            raise FormatError(f"base network description: codes has statistics for {len(self.codes.dim_std)} latent "
                              f"dimensions, not {self.latent_dim}")
        expected_in = self.data.in_dim
        if self.in_dim != expected_in:
            raise FormatError(f"base network description: in_dim {self.in_dim} does not fit {self.data.coordinates} "
                              f"coordinates of a {len(self.data.patch)}-axis patch (expected {expected_in})")

    @property
    def modality(self) -> str:
        return self.data.modality

    @property
    def channels(self) -> int:
        return self.data.channels

    @property
    def patch(self) -> tuple[int, ...]:
        return self.data.patch

    @property
    def learning_rate(self) -> float:
        """The inner-loop learning rate encoding uses."""
        return DEFAULT_INNER_LR if self.inner_lr is None else self.inner_lr

    def replace(self, **changes: Any) -> BaseConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, with exactly the fields base network descriptions have always had."""
        out = self.data.to_dict() | {"in_dim": self.in_dim, "width": self.width, "depth": self.depth,
                                     "latent_dim": self.latent_dim, "w0": self.w0}
        if self.inner_lr is not None:
            out["inner_lr"] = self.inner_lr
        if self.meta_sgd:  # written only when set: older descriptions keep their content hash
            out["meta_sgd"] = True
        if self.codes is not None:
            out["codes"] = self.codes.to_dict()
        if self.training is not None:
            out["training"] = dict(self.training)
        return out

    @classmethod
    def from_dict(cls, d: Any) -> BaseConfig:
        if not isinstance(d, dict):
            raise FormatError("base network description: config must be a JSON object")
        known = {"modality", "out_dim", "patch", "coordinates", "coord_scale", "value_range", "sample_rate", "grid",
                 "variables", "units", *ARCHITECTURE_FIELDS, "inner_lr", "meta_sgd", "codes", "training"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FormatError(f"base network description: unknown field(s) {', '.join(map(repr, unknown))}")
        training = d.get("training")
        if training is not None and not isinstance(training, dict):
            raise FormatError(f"base network description: field 'training' must be an object, got {training!r}")
        meta_sgd = d.get("meta_sgd", False)
        if not isinstance(meta_sgd, bool):
            raise FormatError(f"base network description: field 'meta_sgd' must be true or false, got {meta_sgd!r}")
        return cls(DataSpec.from_dict(d), field_of(d, "in_dim", int), field_of(d, "width", int),
                   field_of(d, "depth", int), field_of(d, "latent_dim", int), field_of(d, "w0", float),
                   None if d.get("codes") is None else LatentStatistics.from_dict(d["codes"]),
                   None if d.get("inner_lr") is None else field_of(d, "inner_lr", float), training, meta_sgd)
