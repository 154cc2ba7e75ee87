"""COIN++ base networks on disk: safetensors weights + a JSON description, identified by a hash.

The JSON holds everything a decoder needs besides the weights (architecture, ω₀, latent size,
modality, patch size, and per bit-width the latent quantizer and symbol counts).  The content
hash covers both files' meaning — every tensor's name, dtype, shape and bytes, and the canonical
JSON — so a ``.mcz`` can name the exact base network it was made with, and decoding with any other
is refused.  Nothing is unpickled.  The package bundles several (``bundled_bases``): the default
encodes, and a file or archive decoded without naming its base network finds the bundled one whose
hash it names.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from metacompress.checkpoint import load_checkpoint, save_checkpoint
from metacompress.errors import DataError, FormatError
from metacompress.inr.base_config import BaseConfig
from metacompress.inr.siren import FEATURE_MIDPOINT, ModulatedSiren

FORMAT = "metacompress-base-network"
# Shipped with the package: image base networks meta-learned on photo patches (never Kodak);
# docs/coinpp.md gives the commands that made them.  ``photos`` encodes by default; the older ones
# stay so that every file they made still decodes without naming its base network.
BUNDLED_BASES = Path(__file__).resolve().parent.parent / "bases"
DEFAULT_BASE = BUNDLED_BASES / "photos"
VERSION = 1


@dataclass(frozen=True)
class BaseNetwork:
    """A meta-learned network and its typed description.  The weights must not change once
    wrapped: the content hash is computed once, on first use."""

    model: ModulatedSiren
    config: BaseConfig

    @cached_property
    def hash(self) -> str:
        return content_hash(self.model.state_dict(), self.config)

    def with_config(self, config: BaseConfig) -> BaseNetwork:
        return BaseNetwork(self.model, config)


def build_model(config: BaseConfig, output_start=FEATURE_MIDPOINT) -> ModulatedSiren:
    """The network ``config`` describes, freshly initialized (``output_start``: see ``ModulatedSiren``)."""
    return ModulatedSiren(config.in_dim, config.width, config.depth, config.channels, config.latent_dim,
                          w0=config.w0, output_start=output_start, meta_sgd=config.meta_sgd,
                          inner_lr=config.learning_rate)


def bundled_bases() -> list[tuple[Path, str]]:
    """(stem, content hash as stored in its JSON) of every bundled base network, the default first."""
    stems = [DEFAULT_BASE] + sorted(p.with_suffix("") for p in BUNDLED_BASES.glob("*.json")
                                    if p.with_suffix("") != DEFAULT_BASE)
    found = []
    for stem in stems:
        try:
            found.append((stem, str(json.loads(stem.with_suffix(".json").read_text())["hash"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged bundled description: load_base reports it if that base is asked for
    return found


def content_hash(tensors: dict[str, torch.Tensor], config: BaseConfig) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    digest.update(json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def save_base(stem: str | os.PathLike, base: BaseNetwork) -> str:
    """Write ``stem.safetensors`` + ``stem.json``; returns the content hash."""
    digest = base.hash
    save_checkpoint(stem, {k: v.cpu() for k, v in base.model.state_dict().items()},
                    {"format": FORMAT, "version": VERSION, "hash": digest, "config": base.config.to_dict()})
    return digest


def load_base(stem: str | os.PathLike, device: str | torch.device = "cpu") -> BaseNetwork:
    """Read a base network, refusing other formats, versions and files whose hash does not match."""
    tensors, info = load_checkpoint(stem)
    if info.get("format") != FORMAT:
        raise DataError(f"{stem}: not a metacompress base network")
    if info.get("version") != VERSION:
        raise DataError(f"{stem}: base network format version {info.get('version')} is not supported "
                        f"(this metacompress reads version {VERSION})")
    if not isinstance(info.get("config"), dict):
        raise DataError(f"{stem}: base network description has no config")
    try:
        config = BaseConfig.from_dict(info["config"])
    except FormatError as exc:
        raise DataError(f"{stem}: {exc}") from None
    model = build_model(config)
    expected = set(model.state_dict())
    if set(tensors) != expected:
        raise DataError(f"{stem}: weights do not match the described architecture")
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise DataError(f"{stem}: weights do not match the described architecture ({exc})") from None
    base = BaseNetwork(model.eval(), config)
    if base.hash != info.get("hash"):
        raise DataError(f"{stem}: content hash mismatch (the weights or description were modified or corrupted)")
    return BaseNetwork(model.to(device), config) if torch.device(device).type != "cpu" else base
