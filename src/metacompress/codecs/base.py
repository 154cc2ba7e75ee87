"""The ``.mcz`` container every neural codec writes (the Codec interface is in ``codecs.codec``).

Layout (all integers unsigned; ``uvarint`` is LEB128, at most 5 bytes)::

    format  1 byte   0xB0 | version: a metacompress file, layout version FORMAT_VERSION
    kind    1 byte   codec (bits 0–1) | modality (bits 2–3) | dtype (bits 4–5) | shape stored (bit 6)
    shape   only when bit 6 is set: ndim (1 byte, 1..4), then ndim uvarints
    body    the codec's own settings and payload, up to the last 4 bytes
    crc     4 bytes  CRC-32 (little-endian) of the codec's key followed by every byte before it

Every byte counts: at 32×32 pixels one header byte is 0.008 bpp.  So there is no length or
settings field the reader can work out itself: a codec whose datapoints usually have one shape
(a COIN++ base network's patch) leaves the shape out, and a codec bound to other data (COIN++:
its base network's hash) puts that data into the CRC as a key instead of storing it — decoding
with the wrong base network then fails the CRC.  ``unpack`` checks each field against the bytes
that are really there before slicing anything, and refuses absurd shapes before a decoder
allocates.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

from metacompress.errors import FormatError
from metacompress.modalities.spec import MODALITIES

FORMAT_VERSION = 2
_FORMAT_MAGIC = 0xB0  # high nibble of the first byte
CODEC_IDS = {"coin": 1, "coinpp": 2}
DTYPES = ("uint8", "uint16", "int16", "float32")
MAX_NDIM = 4
MAX_SAMPLES = 1 << 28  # the largest datapoint a file may describe (decompression-bomb guard)
# The largest output a decoder renders unless the caller raises the cap (as Pillow's
# MAX_IMAGE_PIXELS): 2^26 pixels / samples / voxels / grid points, an 8192×8192 image.
DEFAULT_MAX_OUTPUT_SAMPLES = 1 << 26
# A decoder that runs a network stored in the file (COIN) does output samples × parameters
# multiply-accumulates: both come from the file, so the output cap alone lets a 10 kB file
# demand minutes.  Unless the caller sets a budget, decoding may cost at most this many
# multiply-accumulates per byte of input (about 1.4 ms of one 2-core CPU per byte).
DECODE_MACS_PER_BYTE = 1 << 24
CRC_BYTES = 4
_SHAPE_STORED = 0x40
_MAX_VARINT_BYTES = 5


@dataclass(frozen=True)
class Container:
    codec: str
    modality: str
    shape: tuple[int, ...] | None  # None: the codec's default shape, not stored
    dtype: str
    body: bytes

    def __post_init__(self):
        if self.codec not in CODEC_IDS:
            raise ValueError(f"unknown codec {self.codec!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        if self.shape is not None:
            check_shape(self.shape)


def check_shape(shape: tuple[int, ...]) -> None:
    if not 1 <= len(shape) <= MAX_NDIM or min(shape) < 1:
        raise ValueError(f"bad shape {shape}")
    if math.prod(shape) > MAX_SAMPLES:
        raise ValueError(f"shape {shape} exceeds {MAX_SAMPLES} samples")


def check_output_samples(samples: int, max_samples: int | None, source: str, what: str = "the output") -> None:
    """Refuse to render more than ``max_samples`` samples (None: the default cap; 0: no cap)."""
    cap = DEFAULT_MAX_OUTPUT_SAMPLES if max_samples is None else max_samples
    if cap and samples > cap:
        raise FormatError(f"{source}: {what} would have {samples:,} samples, over the decoding cap of {cap:,} "
                          "(a decompression-bomb guard); raise it with --max-samples if you trust this file")


def check_decode_work(macs: int, file_bytes: int, max_macs: int | None, source: str, what: str) -> None:
    """Refuse a decode of more than ``max_macs`` multiply-accumulates (None: DECODE_MACS_PER_BYTE
    for each of the file's ``file_bytes``; 0: no budget)."""
    budget = DECODE_MACS_PER_BYTE * file_bytes if max_macs is None else max_macs
    if budget and macs > budget:
        basis = f" ({DECODE_MACS_PER_BYTE:,} per byte of this {file_bytes:,}-byte file)" if max_macs is None else ""
        raise FormatError(f"{source}: {what} needs {macs:.3g} multiply-accumulates, over the decoding budget of "
                          f"{budget:.3g}{basis}, a decompression-bomb guard; raise it with --max-work if you "
                          "trust this file")


def pack(container: Container, crc_key: bytes = b"") -> bytes:
    """The file bytes of ``container``; ``crc_key`` (e.g. a base network's hash) enters the CRC only."""
    kind = CODEC_IDS[container.codec] | MODALITIES.index(container.modality) << 2 \
        | DTYPES.index(container.dtype) << 4 | (_SHAPE_STORED if container.shape is not None else 0)
    out = bytearray([_FORMAT_MAGIC | FORMAT_VERSION, kind])
    if container.shape is not None:
        out += encode_shape(container.shape)
    out += container.body
    out += zlib.crc32(out, zlib.crc32(crc_key)).to_bytes(CRC_BYTES, "little")
    return bytes(out)


def peek(data: bytes, source: str = "input") -> tuple[str, str]:
    """(codec, modality) of a ``.mcz`` file, from its first two bytes (nothing else checked yet)."""
    _check_format(data, source)
    codecs = {v: k for k, v in CODEC_IDS.items()}
    codec_id = data[1] & 3
    if codec_id not in codecs:
        raise FormatError(f"{source}: unknown codec id {codec_id}")
    return codecs[codec_id], MODALITIES[data[1] >> 2 & 3]


def unpack(data: bytes, source: str = "input", crc_key: bytes = b"") -> Container:
    """Parse and validate a ``.mcz`` file; any problem raises :class:`FormatError` naming ``source``."""
    def fail(problem: str):
        raise FormatError(f"{source}: {problem}")

    data = bytes(data)
    codec, _ = peek(data, source)
    if len(data) < 2 + CRC_BYTES:
        fail(f"truncated ({len(data)} bytes)")
    body, stored_crc = data[:-CRC_BYTES], int.from_bytes(data[-CRC_BYTES:], "little")
    if zlib.crc32(body, zlib.crc32(crc_key)) != stored_crc:
        fail("corrupt or truncated (CRC-32 mismatch)" if not crc_key else
             "corrupt, truncated, or made with another base network (CRC-32 mismatch)")
    kind = body[1]
    if kind & 0x80:
        fail(f"unknown flags in the kind byte {kind:#04x}")
    shape, pos = read_shape(body, 2, source) if kind & _SHAPE_STORED else (None, 2)
    return Container(codec, MODALITIES[kind >> 2 & 3], shape, DTYPES[kind >> 4 & 3], body[pos:])


def _check_format(data: bytes, source: str) -> None:
    if len(data) < 2 or data[0] & 0xF0 != _FORMAT_MAGIC:
        if data[:3] == b"Mz\x01":
            raise FormatError(f"{source}: written in metacompress's format 1, which this version no longer reads; "
                              "encode the original again")
        raise FormatError(f"{source}: not a metacompress .mcz file (bad format byte)")
    if data[0] & 15 != FORMAT_VERSION:
        raise FormatError(f"{source}: format version {data[0] & 15} is not supported "
                          f"(this metacompress reads version {FORMAT_VERSION})")


def body_start(data: bytes, source: str = "input") -> int:
    """Where the codec body of a ``.mcz`` file starts (after the stored shape, if any)."""
    return read_shape(data, 2, source)[1] if data[1] & _SHAPE_STORED else 2


def encode_shape(shape: tuple[int, ...]) -> bytes:
    return bytes([len(shape)]) + b"".join(encode_uvarint(d) for d in shape)


def read_shape(data: bytes, pos: int, source: str) -> tuple[tuple[int, ...], int]:
    """A shape written by ``encode_shape`` → (shape, next position); FormatError when implausible."""
    if pos >= len(data):
        raise FormatError(f"{source}: truncated header")
    ndim, pos, shape = data[pos], pos + 1, []
    if not 1 <= ndim <= MAX_NDIM:
        raise FormatError(f"{source}: bad number of dimensions {ndim}")
    for _ in range(ndim):
        dim, pos = read_uvarint(data, pos, source)
        if dim < 1:
            raise FormatError(f"{source}: a dimension of the data is 0")
        shape.append(dim)
    if math.prod(shape) > MAX_SAMPLES:
        raise FormatError(f"{source}: data shape {tuple(shape)} is implausibly large (over {MAX_SAMPLES} samples)")
    return tuple(shape), pos


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
