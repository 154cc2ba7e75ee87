"""The one interface every codec implements — COIN, COIN++ and every classical baseline — and
the registry that finds a codec by name or, for a ``.mcz`` file, by the codec id in its header.

As in CompressAI, ``compress`` gives the file and what decoding it yields (so a benchmark never
decodes twice), and ``decompress`` reads a file back; ``encode``/``decode`` are the byte-level
pair (``encode(x) == compress(x).data``).  A new codec is one module with a ``Codec`` subclass
plus one line in ``_CODECS``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from metacompress.errors import UserError

# name → "module:Class", imported on first use (a classical codec may need an optional plugin)
_CODECS = {
    "coin": "metacompress.codecs.coin:Coin",
    "coinpp": "metacompress.codecs.coinpp:CoinPP",
    "jpeg": "metacompress.codecs.classical:Jpeg",
    "jpeg2000": "metacompress.codecs.classical:Jpeg2000",
    "webp": "metacompress.codecs.classical:WebP",
    "avif": "metacompress.codecs.classical:Avif",
    "heic": "metacompress.codecs.classical:Heic",
    "jxl": "metacompress.codecs.classical:JpegXL",
    "mp3": "metacompress.codecs.classical_audio:Mp3",
    "opus": "metacompress.codecs.classical_audio:Opus",
}
CODEC_NAMES = tuple(_CODECS)


@dataclass
class Encoded:
    """A compressed datapoint: the file, exactly what decoding it gives, and measurements."""

    data: bytes
    reconstruction: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)  # e.g. psnr, encode seconds, tiles


class Codec(ABC):
    """Compress datapoints of one modality to files of one format and back."""

    name: ClassVar[str]
    label: ClassVar[str]
    modality: ClassVar[str]  # what it compresses (see ``modalities.registry``)
    suffix: ClassVar[str]  # the file it writes

    @abstractmethod
    def encode(self, x: np.ndarray) -> bytes:
        """The file for ``x``."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """The datapoint in ``data``; ``FormatError`` when it is not a valid file of this codec."""

    def compress(self, x: np.ndarray) -> Encoded:
        """The file for ``x`` and its reconstruction (codecs that get it while encoding override this)."""
        data = self.encode(x)
        return Encoded(data, self.decode(data))

    def decompress(self, data: bytes) -> np.ndarray:
        return self.decode(data)


def codec_class(name: str) -> type[Codec]:
    """The codec called ``name`` (a UserError listing the known ones otherwise)."""
    if name not in _CODECS:
        raise UserError(f"unknown codec {name!r} (known: {', '.join(CODEC_NAMES)})")
    module, cls = _CODECS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def codecs_for(modality: str) -> list[str]:
    """Names of the codecs that compress ``modality`` data, ours first."""
    return [name for name in CODEC_NAMES if codec_class(name).modality in (modality, "any")]


def decode_mcz(data: bytes, source: str = "input", **options: Any):
    """(codec name, the Datapoint) of a ``.mcz`` file, whichever codec wrote it; ``options`` are
    the decoders' settings (``base``, ``scale``, ``region``, ``max_samples``, ``max_macs``)."""
    from metacompress.codecs.base import peek

    name, _ = peek(data, source)
    return name, codec_class(name).decode_file(data, source, **options)
