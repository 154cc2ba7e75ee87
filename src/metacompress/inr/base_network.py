"""COIN++ base networks on disk: safetensors weights + a JSON description, identified by a hash.

The JSON holds everything a decoder needs besides the weights (architecture, ω₀, latent size,
modality, patch size, and per bit-width the latent quantizer and symbol counts).  The content
hash covers both files' meaning — every tensor's name, dtype, shape and bytes, and the canonical
JSON — so a ``.mcz`` can name the exact base network it was made with, and decoding with any other
is refused.  Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from metacompress.checkpoint import load_checkpoint, save_checkpoint
from metacompress.errors import DataError
from metacompress.inr.siren import ModulatedSiren

FORMAT = "metacompress-base-network"
# Shipped with the package: an image base network meta-learned on photo patches (never Kodak);
# the README gives the command that made it.
DEFAULT_BASE = Path(__file__).resolve().parent.parent / "bases" / "photos"
VERSION = 1
ARCHITECTURE_KEYS = ("in_dim", "width", "depth", "out_dim", "latent_dim", "w0")


@dataclass
class BaseNetwork:
    model: ModulatedSiren
    config: dict  # JSON-serializable: ARCHITECTURE_KEYS plus modality, patch, codes, training notes

    @property
    def hash(self) -> str:
        return content_hash(self.model.state_dict(), self.config)


def build_model(config: dict) -> ModulatedSiren:
    try:
        kwargs = {k: config[k] for k in ARCHITECTURE_KEYS}
        return ModulatedSiren(**{k: (float(v) if k == "w0" else int(v)) for k, v in kwargs.items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"base network description lacks a valid architecture ({exc})") from None


def content_hash(tensors: dict[str, torch.Tensor], config: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    digest.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def save_base(stem: str | os.PathLike, base: BaseNetwork) -> str:
    """Write ``stem.safetensors`` + ``stem.json``; returns the content hash."""
    digest = base.hash
    save_checkpoint(stem, base.model.state_dict(), {"format": FORMAT, "version": VERSION, "hash": digest,
                                                    "config": base.config})
    return digest


def load_base(stem: str | os.PathLike) -> BaseNetwork:
    """Read a base network, refusing other formats, versions and files whose hash does not match."""
    tensors, info = load_checkpoint(stem)
    if info.get("format") != FORMAT:
        raise DataError(f"{stem}: not a metacompress base network")
    if info.get("version") != VERSION:
        raise DataError(f"{stem}: base network format version {info.get('version')} is not supported "
                        f"(this metacompress reads version {VERSION})")
    config = info.get("config")
    if not isinstance(config, dict):
        raise DataError(f"{stem}: base network description has no config")
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
    return base
