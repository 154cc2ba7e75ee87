"""Dataset archives (``.mcza``): many COIN++ datapoints under one header, each readable on its own.

A dataset shares one base network, one quantizer and one symbol model, so an archive states
them once and stores per datapoint only its record (``codecs.coinpp``: value range and voxel
size where the base needs them, then the coded latents).  Layout (``uvarint`` as in ``.mcz``)::

    magic    4 bytes   b"MczA"
    version  1 byte    ARCHIVE_VERSION
    kind     1 byte    modality (bits 0–1) | dtype (bits 2–3) | common shape (bit 4) | names (bit 5)
    flags    1 byte    bits − 1 (bits 0–2) | entropy-coded (bit 3), as in a COIN++ file
    base     32 bytes  the base network's SHA-256 content hash
    shape    only with bit 4: the shape of every item (ndim byte, then ndim uvarints)
    count    uvarint   number of items
    index    count × (uvarint item length, 4-byte CRC-32 of the item, seeded with its index)
    names    only with bit 5: uvarint length, then that many bytes of zlib-compressed UTF-8 names,
             one per item, separated by newlines (empty for an unnamed item), each at most
             MAX_NAME_BYTES long
    hcrc     4 bytes   CRC-32 of every byte above
    items    back to back: the item's shape unless common, then its COIN++ datapoint record
    crc      4 bytes   CRC-32 of every byte before it

The index sits in front so that a truncated archive keeps it: every item before the cut still
checks out and extracts.  Item *i* starts at the end of the header plus the lengths of items
0..i−1, so reading it costs the header and its own bytes, nothing else.  All CRCs are
little-endian.  Appending rewrites the index, so it writes a new file and renames it over the old.

Version 2 seeds each item's CRC with the item's index (``item_crc``): an empty or zero-filled
record no longer has the CRC 0 that zero-filled index bytes would give, and an item moved to
another slot fails.  Every read path checks the header CRC before it uses any header field
(``Archive(..., check_header=False)`` is for ``verify``, which reports the damage instead), and
the item names are decompressed only after that check, with a bound from the item count.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from metacompress.checkpoint import atomic_write_bytes
from metacompress.codecs.base import DTYPES, check_shape, encode_shape, encode_uvarint, read_shape, \
    read_uvarint
from metacompress.codecs.coinpp import decode_record, flags_byte, parse_flags
from metacompress.errors import FormatError, UserError
from metacompress.inr.base_network import BaseNetwork
from metacompress.modalities.spec import MODALITIES, Datapoint

MAGIC = b"MczA"
ARCHIVE_VERSION = 2
SUFFIX = ".mcza"
HASH_BYTES = 32
MAX_ITEMS = 1 << 32
_COMMON_SHAPE, _NAMES = 0x10, 0x20
_FIXED = len(MAGIC) + 3 + HASH_BYTES
_FIRST_READ = 1 << 16
MAX_NAME_BYTES = 1024  # UTF-8 bytes of one item name
_MIN_INDEX_ENTRY = 5  # one-byte length + CRC


def item_crc(index: int, body: bytes) -> int:
    """CRC-32 of item ``index``'s bytes, seeded with the index (never 0 for an empty item)."""
    return zlib.crc32(body, zlib.crc32(b"MczA item %d" % index))


def check_item_name(name: str) -> None:
    """Names are relative paths: one line of UTF-8, no NUL, at most MAX_NAME_BYTES bytes."""
    if "\n" in name or "\0" in name:
        raise UserError(f"item name {name!r} contains a newline or NUL")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UserError(f"item name {name!r} is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise UserError(f"item name {name[:40]!r}… is longer than {MAX_NAME_BYTES} bytes")


@dataclass(frozen=True)
class ArchiveHeader:
    """What every item of an archive shares."""

    modality: str
    dtype: str
    bits: int
    entropy: bool
    base_hash: str  # hex SHA-256 of the base network
    shape: tuple[int, ...] | None = None  # every item's shape, when they share one

    def check_base(self, base: BaseNetwork, source: str) -> None:
        if base.hash != self.base_hash:
            raise FormatError(f"{source}: was made with base network {self.base_hash[:8]}…, not this one "
                              f"({base.hash[:8]}…); use the base network that made it")


@dataclass(frozen=True)
class ArchiveItem:
    shape: tuple[int, ...]
    record: bytes  # the COIN++ datapoint record
    name: str = ""


@dataclass
class VerifyReport:
    items: int
    header_ok: bool
    whole_ok: bool  # the final CRC over the whole archive
    damaged: dict[int, str] = field(default_factory=dict)  # item → what is wrong with it

    @property
    def ok(self) -> bool:
        return self.header_ok and self.whole_ok and not self.damaged


# --- writing ---------------------------------------------------------------------------------------

def archive_bytes(header: ArchiveHeader, items: list[ArchiveItem]) -> bytes:
    """The bytes of an archive holding ``items`` in order."""
    if len(items) >= MAX_ITEMS:
        raise UserError(f"an archive holds fewer than {MAX_ITEMS} items")
    shape = header.shape
    if shape is not None and any(item.shape != shape for item in items):
        raise ValueError("an item's shape differs from the archive's common shape")
    names = [item.name for item in items]
    for name in names:
        check_item_name(name)
    kind = MODALITIES.index(header.modality) | DTYPES.index(header.dtype) << 2 \
        | (_COMMON_SHAPE if shape is not None else 0) | (_NAMES if any(names) else 0)
    out = bytearray(MAGIC) + bytes([ARCHIVE_VERSION, kind, flags_byte(header.bits, header.entropy)])
    out += bytes.fromhex(header.base_hash)
    if shape is not None:
        check_shape(shape)
        out += encode_shape(shape)
    bodies = [item.record if shape is not None else encode_shape(item.shape) + item.record for item in items]
    out += encode_uvarint(len(bodies))
    for i, body in enumerate(bodies):
        out += encode_uvarint(len(body)) + item_crc(i, body).to_bytes(4, "little")
    if kind & _NAMES:
        packed = zlib.compress("\n".join(names).encode("utf-8"), 9)
        out += encode_uvarint(len(packed)) + packed
    out += zlib.crc32(out).to_bytes(4, "little")
    for body in bodies:
        out += body
    out += zlib.crc32(out).to_bytes(4, "little")
    return bytes(out)


def common_shape(items: list[ArchiveItem]) -> tuple[int, ...] | None:
    shapes = {item.shape for item in items}
    return shapes.pop() if len(shapes) == 1 else None


def write_archive(path: str | os.PathLike, header: ArchiveHeader, items: list[ArchiveItem]) -> int:
    """Write the archive whole to a temporary name, then rename; returns its size in bytes."""
    data = archive_bytes(header, items)
    atomic_write_bytes(Path(path), data)
    return len(data)


def append_to_archive(path: str | os.PathLike, header: ArchiveHeader, new_items: list[ArchiveItem]) -> int:
    """Add ``new_items`` after the items of the archive at ``path`` (which must be intact and
    made with the same base network and coding settings)."""
    archive = Archive(path)
    ours, theirs = archive.header, header
    if (ours.modality, ours.dtype, ours.bits, ours.entropy, ours.base_hash) != \
            (theirs.modality, theirs.dtype, theirs.bits, theirs.entropy, theirs.base_hash):
        raise UserError(f"{path}: holds {ours.modality} {ours.dtype} items at {ours.bits} bits made with base "
                        f"{ours.base_hash[:8]}…; the new items do not match (bits {theirs.bits}, base "
                        f"{theirs.base_hash[:8]}…)")
    report = archive.verify()
    if not report.ok:
        raise FormatError(f"{path}: is damaged ({describe_damage(report)}); nothing appended")
    items = [archive.item(i) for i in range(archive.count)] + list(new_items)
    return write_archive(path, ArchiveHeader(ours.modality, ours.dtype, ours.bits, ours.entropy, ours.base_hash,
                                             common_shape(items)), items)


def describe_damage(report: VerifyReport, limit: int = 10) -> str:
    parts = [] if report.header_ok else ["header/index CRC mismatch"]
    if report.damaged:
        listed = ", ".join(f"item {i} ({why})" for i, why in list(report.damaged.items())[:limit])
        more = len(report.damaged) - limit
        parts.append(f"{len(report.damaged)} damaged: {listed}" + (f" and {more} more" if more > 0 else ""))
    if not report.whole_ok and report.header_ok and not report.damaged:
        parts.append("archive CRC mismatch outside the items")
    return "; ".join(parts) or "intact"


# --- reading ---------------------------------------------------------------------------------------

class Archive:
    """An archive opened for random access: the header and index are read once; ``item(i)``
    then reads item *i*'s bytes and nothing else."""

    def __init__(self, source: str | os.PathLike | BinaryIO, name: str | None = None, check_header: bool = True):
        """``check_header=False`` opens an archive whose header CRC fails (for ``verify`` only:
        its header fields may be wrong, and items cannot be read from it)."""
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise UserError(f"{path}: file not found")
            self._file, self.source = open(path, "rb"), name or str(path)
        else:
            self._file, self.source = source, name or "archive"
        try:
            self._file.seek(0, io.SEEK_END)
            self.size = self._file.tell()
            self._parse_header()
            if check_header and not self.header_ok:
                raise FormatError(f"{self.source}: the archive header is corrupt (CRC-32 mismatch); nothing can be "
                                  "read from it safely (`metacompress archive verify` reports the damage)")
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self, offset: int, size: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(size)

    def _parse_header(self) -> None:
        size = _FIRST_READ
        while True:  # the index is read whole: grow the read until it holds the header
            data = self._read(0, size)
            try:
                return self._parse_header_bytes(data)
            except _NeedMore:
                if size >= self.size:
                    raise FormatError(f"{self.source}: truncated inside the archive header") from None
                size *= 4

    def _parse_header_bytes(self, data: bytes) -> None:
        source = self.source
        if data[:len(MAGIC)] != MAGIC:
            raise FormatError(f"{source}: not a metacompress archive (bad magic bytes)")
        if len(data) < _FIXED:
            raise _NeedMore
        if data[4] == 1:
            raise FormatError(f"{source}: written by an earlier metacompress (archive version 1, whose item CRCs "
                              "cannot tell an empty item from a lost one); create the archive again")
        if data[4] != ARCHIVE_VERSION:
            raise FormatError(f"{source}: archive version {data[4]} is not supported "
                              f"(this metacompress reads version {ARCHIVE_VERSION})")
        kind = data[5]
        if kind >> 6:
            raise FormatError(f"{source}: unknown flags in the archive header ({kind:#04x})")
        bits, entropy = parse_flags(data[6], source)
        base_hash = data[7:7 + HASH_BYTES].hex()
        pos, shape = _FIXED, None
        try:
            if kind & _COMMON_SHAPE:
                shape, pos = read_shape(data, pos, source)
            count, pos = read_uvarint(data, pos, source)
            if count >= MAX_ITEMS or count * _MIN_INDEX_ENTRY > self.size - pos:
                raise FormatError(f"{source}: the header claims {count} items, more than the file can hold")
            lengths, crcs = [], []
            for _ in range(count):
                length, pos = read_uvarint(data, pos, source)
                if pos + 4 > len(data):
                    raise _NeedMore
                lengths.append(length)
                crcs.append(int.from_bytes(data[pos:pos + 4], "little"))
                pos += 4
            packed = b""
            if kind & _NAMES:
                packed_length, pos = read_uvarint(data, pos, source)
                if pos + packed_length > len(data):
                    raise _NeedMore
                packed = data[pos:pos + packed_length]
                pos += packed_length
        except FormatError as e:
            if "truncated header" in str(e) and len(data) < self.size:
                raise _NeedMore from None
            raise
        if pos + 4 > len(data):
            raise _NeedMore
        self.header_ok = zlib.crc32(data[:pos]) == int.from_bytes(data[pos:pos + 4], "little")
        # names only from a header that checks out: they are decompressed, so must not be trusted before
        names = self._names(packed, count) if packed and self.header_ok else [""] * count
        self.header = ArchiveHeader(MODALITIES[kind & 3], DTYPES[kind >> 2 & 3], bits, entropy, base_hash, shape)
        self.count, self.lengths, self.crcs, self.names = count, lengths, crcs, names
        self.offsets = []
        offset = pos + 4
        for length in lengths:
            self.offsets.append(offset)
            offset += length
        self.end = offset  # where the final CRC starts

    def _names(self, packed: bytes, count: int) -> list[str]:
        """The item names, decompressed incrementally up to what ``count`` names can take."""
        limit = count * (MAX_NAME_BYTES + 1)
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(packed, limit + 1)
        except zlib.error:
            raise FormatError(f"{self.source}: the item names are corrupt") from None
        if len(text) > limit or inflater.unconsumed_tail:
            raise FormatError(f"{self.source}: the item names are longer than {count} names can be")
        if not inflater.eof or inflater.unused_data:
            raise FormatError(f"{self.source}: the item names are corrupt")
        try:
            names = text.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise FormatError(f"{self.source}: the item names are corrupt") from None
        if len(names) != count:
            raise FormatError(f"{self.source}: {len(names)} item names for {count} items")
        if any(len(name.encode("utf-8")) > MAX_NAME_BYTES or "\0" in name for name in names):
            raise FormatError(f"{self.source}: an item name is over {MAX_NAME_BYTES} bytes or holds NUL")
        return names

    def item_problem(self, i: int, body: bytes) -> str | None:
        if len(body) < self.lengths[i]:
            return "truncated" if body else "missing (archive truncated)"
        if item_crc(i, body) != self.crcs[i]:
            return "CRC mismatch"
        return None

    def item(self, i: int) -> ArchiveItem:
        """Item ``i``'s shape and record, CRC-checked; reads only its bytes."""
        if not 0 <= i < self.count:
            raise UserError(f"{self.source}: has items 0–{self.count - 1}, not {i}")
        self._require_header()
        body = self._read(self.offsets[i], self.lengths[i])
        problem = self.item_problem(i, body)
        if problem:
            raise FormatError(f"{self.source}: item {i} is damaged ({problem})")
        shape, pos = self.header.shape, 0
        if shape is None:
            shape, pos = read_shape(body, 0, f"{self.source}: item {i}")
        return ArchiveItem(shape, body[pos:], self.names[i])

    def _require_header(self) -> None:
        if not self.header_ok:
            raise FormatError(f"{self.source}: the archive header is corrupt (CRC-32 mismatch)")

    def item_shape(self, i: int) -> tuple[int, ...]:
        """Item ``i``'s shape: the common one, or the one its record stores (CRC-checked, so a
        damaged item raises ``FormatError`` instead of showing a wrong shape)."""
        self._require_header()
        if self.header.shape is not None:
            return self.header.shape
        return self.item(i).shape

    def samples(self) -> int:
        """Pixels, audio samples, voxels or grid points of all items (their shapes without channels)."""
        return sum(math.prod(self.item_shape(i)[:-1]) for i in range(self.count))

    def datapoint(self, i: int, base: BaseNetwork, max_samples: int | None = None) -> Datapoint:
        self._require_header()
        self.header.check_base(base, self.source)
        item = self.item(i)
        header = self.header
        return decode_record(item.record, item.shape, header.dtype, base, header.bits, header.entropy,
                             f"{self.source}: item {i}", max_samples)

    def verify(self) -> VerifyReport:
        """Every item's CRC, the header's and the whole archive's, reading the file once."""
        report = VerifyReport(self.count, self.header_ok, whole_ok=False)
        for i in range(self.count):
            problem = self.item_problem(i, self._read(self.offsets[i], self.lengths[i]))
            if problem:
                report.damaged[i] = problem
        if self.size == self.end + 4:
            crc = 0
            for start in range(0, self.end, 1 << 20):
                crc = zlib.crc32(self._read(start, min(1 << 20, self.end - start)), crc)
            report.whole_ok = crc == int.from_bytes(self._read(self.end, 4), "little")
        return report


class _NeedMore(Exception):
    """The header runs past the bytes read so far."""


def parse_item_range(text: str | None, count: int) -> list[int]:
    """``"7"``, ``"0:100"``, ``"-5:"``, ``"1,4,10:20"`` → item indices (Python slice rules, in order)."""
    if not text:
        return list(range(count))
    chosen = []
    for part in text.split(","):
        try:
            if ":" in part:
                start, _, stop = part.partition(":")
                chosen += range(count)[slice(int(start) if start else None, int(stop) if stop else None)]
            else:
                index = int(part)
                if not -count <= index < count:
                    raise UserError(f"--items: item {index} does not exist (the archive has {count})")
                chosen.append(index % count)
        except ValueError:
            raise UserError(f"--items expects indices and ranges like 0:100 or 3,7,10:20, got {text!r}") from None
    return chosen
