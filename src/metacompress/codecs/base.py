"""The Codec interface and the ``.mcz`` container every neural codec writes.

Layout (all integers unsigned; ``uvarint`` is LEB128, at most 5 bytes)::

    magic   2 bytes  b"Mz"
    version 1 byte   FORMAT_VERSION
    codec   1 byte   CODEC_IDS
    kind    1 byte   modality << 4 | dtype
    ndim    1 byte   1..4, then ndim uvarints: the data's shape
    config  uvarint length, then that many bytes (the codec's own settings)
    payload everything up to the last 4 bytes
    crc     4 bytes  CRC-32 (little-endian) of every byte before it

The header of a 32×32 image is 14 bytes plus the codec config, because bpp counts every byte: at 32×32
pixels each header byte costs 0.008 bpp.  ``unpack`` checks each field against the bytes that
are really there before slicing anything, and refuses absurd shapes before a decoder allocates.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from metacompress.errors import FormatError

MAGIC = b"Mz"
FORMAT_VERSION = 1
CODEC_IDS = {"coin": 1, "coinpp": 2}
MODALITIES = ("image", "audio", "volume", "sphere")
DTYPES = ("uint8", "uint16", "int16", "float32")
MAX_NDIM = 4
MAX_SAMPLES = 1 << 28  # the largest datapoint a file may describe (decompression-bomb guard)
_MAX_VARINT_BYTES = 5


class Codec(Protocol):
    """Every codec, ours and classical, is used the same way (GUIDE §2)."""

    name: str

    def encode(self, x: np.ndarray) -> bytes: ...

    def decode(self, data: bytes) -> np.ndarray: ...


@dataclass(frozen=True)
class Container:
    codec: str
    modality: str
    shape: tuple[int, ...]
    dtype: str
    config: bytes
    payload: bytes

    def __post_init__(self):
        if self.codec not in CODEC_IDS:
            raise ValueError(f"unknown codec {self.codec!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        if not 1 <= len(self.shape) <= MAX_NDIM or min(self.shape) < 1:
            raise ValueError(f"bad shape {self.shape}")
        if math.prod(self.shape) > MAX_SAMPLES:
            raise ValueError(f"shape {self.shape} exceeds {MAX_SAMPLES} samples")


def pack(container: Container) -> bytes:
    """The file bytes of ``container``."""
    kind = MODALITIES.index(container.modality) << 4 | DTYPES.index(container.dtype)
    out = bytearray(MAGIC)
    out += bytes([FORMAT_VERSION, CODEC_IDS[container.codec], kind, len(container.shape)])
    for dim in container.shape:
        out += encode_uvarint(dim)
    out += encode_uvarint(len(container.config)) + container.config + container.payload
    out += zlib.crc32(out).to_bytes(4, "little")
    return bytes(out)


def unpack(data: bytes, source: str = "input") -> Container:
    """Parse and validate a ``.mcz`` file; any problem raises :class:`FormatError` naming ``source``."""
    def fail(problem: str):
        raise FormatError(f"{source}: {problem}")

    data = bytes(data)
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        fail("not a metacompress .mcz file (bad magic bytes)")
    if len(data) < len(MAGIC) + 4 + 4:
        fail(f"truncated ({len(data)} bytes)")
    version = data[2]
    if version != FORMAT_VERSION:
        fail(f"format version {version} is not supported (this metacompress reads version {FORMAT_VERSION})")
    body, stored_crc = data[:-4], int.from_bytes(data[-4:], "little")
    if zlib.crc32(body) != stored_crc:
        fail("corrupt or truncated (CRC-32 mismatch)")
    codec_id, kind, ndim = body[3], body[4], body[5]
    codecs = {v: k for k, v in CODEC_IDS.items()}
    if codec_id not in codecs:
        fail(f"unknown codec id {codec_id}")
    if kind >> 4 >= len(MODALITIES) or kind & 15 >= len(DTYPES):
        fail(f"unknown modality/dtype byte {kind:#04x}")
    if not 1 <= ndim <= MAX_NDIM:
        fail(f"bad number of dimensions {ndim}")
    pos, shape = 6, []
    for _ in range(ndim):
        dim, pos = read_uvarint(body, pos, source)
        if dim < 1:
            fail("a dimension of the data is 0")
        shape.append(dim)
    if math.prod(shape) > MAX_SAMPLES:
        fail(f"data shape {tuple(shape)} is implausibly large (over {MAX_SAMPLES} samples)")
    config_len, pos = read_uvarint(body, pos, source)
    if config_len > len(body) - pos:
        fail(f"config length {config_len} runs past the end of the file")
    config, payload = body[pos:pos + config_len], body[pos + config_len:]
    return Container(codecs[codec_id], MODALITIES[kind >> 4], tuple(shape), DTYPES[kind & 15], config, payload)


def encode_uvarint(value: int) -> bytes:
    if not 0 <= value < 1 << (7 * _MAX_VARINT_BYTES):
        raise ValueError(f"uvarint out of range: {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_uvarint(data: bytes, pos: int, source: str = "input") -> tuple[int, int]:
    """One uvarint from ``data`` at ``pos`` → (value, next position); FormatError when malformed."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= len(data):
            raise FormatError(f"{source}: truncated header")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise FormatError(f"{source}: malformed header (integer field too long)")
