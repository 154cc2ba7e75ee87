"""Continuous fuzzing of the ``.mcz`` and ``.mcza`` decoders (issue 15).

A deterministic seed corpus (tiny base networks, real datapoints cropped small, tiny COIN files,
archives of several layouts) is mutated with a seeded ``random.Random``: bit flips, byte
insertions/deletions, special-value overwrites, truncations, length-field edits, huge varints,
special floats, splices, item-body swaps between archives and zero-filled ranges.  About a third
of the mutants then get every CRC of the format recomputed, so that the fuzzer reaches the code
behind the checksums.

The oracle, per input: the decoder ends in success or ``FormatError`` (anything else is a crash),
within 1 s (a SIGALRM guard catches hangs), without a large jump of the peak RSS; and a mutant
whose CRCs were *not* recomputed decodes only if every byte the decode checks is unchanged
(otherwise it is a silent wrong decode).

    .venv/bin/python tests/fuzz_harness.py --inputs 100000 --seed 1 --json /tmp/fuzz.json

``tests/test_fuzz.py`` runs a smaller budget of the same harness and replays ``tests/fuzz_corpus/``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import random
import resource
import signal
import string
import struct
import sys
import tempfile
import time
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # conftest's tiny_base, when run as a script from elsewhere
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from metacompress.codecs import coin, coinpp  # noqa: E402
from metacompress.codecs.archive import Archive, ArchiveHeader, ArchiveItem, archive_bytes, item_crc  # noqa: E402
from metacompress.codecs.base import read_uvarint  # noqa: E402
from metacompress.errors import FormatError  # noqa: E402

CORPUS_DIR = HERE / "fuzz_corpus"
TARGETS = ("mcz-coinpp", "mcz-coin", "mcza")
WEIGHTS = {"mcz-coinpp": 0.4, "mcz-coin": 0.25, "mcza": 0.35}  # share of the inputs per target
TIME_LIMIT_S = 1.0  # an input slower than this is a hang
ALARM_S = 5.0  # the SIGALRM guard that interrupts a real hang
MAX_RSS_JUMP_MB = 256.0  # one input raising the process's peak RSS by more is a memory blow-up
CRC_FRACTION = 1 / 3
PROGRESS_EVERY = 10000
SAMPLES = {"image": "photo", "audio": "speech", "volume": "mri", "sphere": "globe"}
SPECIAL_BYTES = (0x00, 0xFF, 0x7F, 0x80)
HUGE_VARINTS = (b"\xff\xff\xff\xff\x7f",  # 2^35 - 1
                b"\xfe\xff\xff\xff\x7f", b"\x80\x80\x80\x80\x40",  # 2^35 - 2, 2^34
                b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x10",  # 2^32 - 1, 2^32
                b"\x80\x80\x80\x80\x01", b"\xff\xff\xff\x7f",  # 2^28, 2^28 - 1
                b"\xff\xff\xff\xff\xff\x01",  # six bytes: too long
                b"\x80\x80\x80\x80\x00", b"\x81\x00")  # over-long encodings of 0 and 1
SPECIAL_F32 = [struct.pack("<f", v) for v in (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e38, -1e38, 1e-45, -1.0)]
SPECIAL_F16 = [struct.pack("<e", v) for v in (math.nan, math.inf, -math.inf, 0.0, -0.0, 65504.0, -30.0, 6e-8)]


# --- the seed corpus ---------------------------------------------------------------------------------

@dataclass
class Layout:
    """Where the fields of an archive's header lie (see ``archive_layout``)."""

    varints: list[tuple[int, int]]  # (start, end) of each uvarint: shape dims, count, lengths, names length
    shape: tuple[int, int] | None  # (start, end) of the common shape (ndim byte and dims)
    names: int  # where the names field (its length uvarint) starts, or would start
    crc_positions: list[int]  # of each index entry's CRC
    lengths: list[int]
    hcrc: int  # where the header CRC starts
    offsets: list[int]
    end: int  # where the final CRC starts

    @property
    def header_end(self) -> int:
        return self.hcrc + 4


@dataclass
class Seed:
    target: str
    name: str
    data: bytes
    base: object | None = None  # the base network that decodes it (COIN++ and archives)
    layout: Layout | None = None  # archives
    shapes: list | None = None  # archives: each item's shape


@dataclass
class Corpus:
    bases: dict  # modality → base network
    seeds: dict = field(default_factory=lambda: {t: [] for t in TARGETS})  # target → [Seed]

    def add(self, seed: Seed) -> None:
        self.seeds[seed.target].append(seed)

    def index(self) -> None:
        """Lookups for the silent-wrong-decode oracle."""
        self.mcz_originals = {s.data for t in ("mcz-coinpp", "mcz-coin") for s in self.seeds[t]}
        self.archive_originals = {s.data for s in self.seeds["mcza"]}
        self.archive_headers = {}
        for s in self.seeds["mcza"]:
            self.archive_headers.setdefault(s.data[:s.layout.header_end], []).append(s)
            with Archive(io.BytesIO(s.data)) as archive:
                s.shapes = [archive.item_shape(i) for i in range(archive.count)]


def _crop(point, *slices):
    return coinpp.Datapoint(np.ascontiguousarray(point.values[slices]), point.dtype, point.spacing)


def build_corpus(modalities=("image", "audio", "volume"), workdir: str | Path | None = None) -> Corpus:
    """The seed files, built deterministically (fixed seeds) in a few seconds."""
    from conftest import tiny_base

    from metacompress.data import sample_path
    from metacompress.modalities.files import read_datapoint

    with _torch_threads(1), _quiet(), tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        torch.manual_seed(0)
        bases = {m: tiny_base(m, root) for m in modalities}
        corpus = Corpus(bases)
        points = {}
        for m, base in bases.items():
            point = read_datapoint(sample_path(SAMPLES[m]), base.config.data, 0 if m == "sphere" else None)
            if m == "image":  # 8×8 is one patch of the tiny base: its shape is not stored
                crops = [_crop(point, slice(5 * i, 5 * i + 8), slice(7 * i, 7 * i + 8)) for i in range(20)]
                crops += [_crop(point, slice(100, 112), slice(40, 50)), _crop(point, slice(60, 65), slice(9, 12)),
                          _crop(point, slice(30, 38), slice(30, 38), slice(0, 1)),
                          _crop(point, slice(0, 1), slice(0, 17))]
            elif m == "audio":
                crops = [_crop(point, slice(1000 + 300 * i, 1100 + 300 * i)) for i in range(10)]
                crops += [_crop(point, slice(5000, 5250)), _crop(point, slice(9000, 9040))]
            elif m == "volume":
                crops = [_crop(point, slice(20 + 2 * i, 28 + 2 * i), slice(24, 32), slice(28, 36)) for i in range(6)]
                crops += [_crop(point, slice(16, 24), slice(16, 24), slice(16, 28)),
                          _crop(point, slice(30, 33), slice(30, 38), slice(30, 35))]
            else:  # the sphere base's patch is the whole grid
                crops = [point]
            points[m] = crops
        _coinpp_seeds(corpus, points)
        _coin_seeds(corpus)
    corpus.index()
    return corpus


def _coinpp_seeds(corpus: Corpus, points: dict) -> None:
    for m, crops in points.items():
        base = corpus.bases[m]
        # bits and entropy coding per encoding: every base has statistics for 3–8 bits
        for bits, entropy in ((5, True), (3, False), (8, True)):
            results = coinpp.encode_many(crops, base, bits=bits, steps=3, entropy=entropy)
            for k, r in enumerate(results):
                if k % 3 == 0 or k >= len(crops) - 4:  # one-patch files and every stored-shape one
                    corpus.add(Seed("mcz-coinpp", f"{m}-{k}-b{bits}{'e' if entropy else 'n'}", r.data, base))
            _archive_seeds(corpus, m, base, crops, results, bits, entropy)


def _archive_seeds(corpus: Corpus, modality: str, base, crops, results, bits: int, entropy: bool) -> None:
    names = ["a.png", "dir/b.png", "", "ü/ß ç.png", "x" * 40, "c"]
    shapes = [tuple(p.values.shape) for p in crops]
    default = shapes[0]
    same = [i for i, s in enumerate(shapes) if s == default]
    mixed = list(range(len(crops)))
    layouts = [(same[:8], True, True), (mixed[-12:], False, False), (mixed[:5] + mixed[-3:], False, True),
               (same[:20], True, False)]
    if modality == "image" and bits == 5:
        layouts.append(([], True, False))  # an empty archive
    for n, (chosen, common, named) in enumerate(layouts):
        if n == 3 and (modality != "image" or entropy):  # the long one: fixed-length records (no entropy coding)
            continue
        items = [ArchiveItem(shapes[i], results[i].record, names[k % len(names)] if named else "")
                 for k, i in enumerate(chosen)]
        shape = default if common and chosen else None
        header = ArchiveHeader(modality, crops[0].dtype, bits, entropy, base.hash, shape)
        data = archive_bytes(header, items)
        corpus.add(Seed("mcza", f"{modality}-b{bits}{'e' if entropy else 'n'}-{n}", data, base, archive_layout(data)))
    if modality == "image" and not entropy:
        # a header over the reader's first 64 KiB read (long incompressible names): its re-read path
        rng = random.Random(0)
        names = ["".join(rng.choice(string.ascii_letters + string.digits + string.punctuation) for _ in range(1000))
                 for _ in range(90)]
        items = [ArchiveItem(shapes[same[k % len(same)]], results[same[k % len(same)]].record, name)
                 for k, name in enumerate(names)]
        data = archive_bytes(ArchiveHeader(modality, crops[0].dtype, bits, entropy, base.hash, default), items)
        assert archive_layout(data).hcrc > 1 << 16
        corpus.add(Seed("mcza", f"{modality}-b{bits}n-long-header", data, base, archive_layout(data)))


def _coin_seeds(corpus: Corpus) -> None:
    from metacompress.data import sample_path
    from metacompress.data.images import load_image

    photo = load_image(sample_path("photo"))
    images = [(photo[40:56, 60:76], 16), (photo[40:56, 60:76], 8), (photo[100:109, 10:22, :1], 4),
              (photo[0:16, 0:16], 2)]
    for k, (image, bits) in enumerate(images):
        config = coin.CoinConfig(bits=bits, iterations=20, depth=2, width=8, seed=k)
        corpus.add(Seed("mcz-coin", f"coin-{k}-b{bits}", coin.encode_image(np.ascontiguousarray(image), config).data))


# --- format knowledge: field positions and CRCs ------------------------------------------------------

def archive_layout(data: bytes) -> Layout | None:
    """The header fields of an archive, parsed with the library's ``read_uvarint``; None when the
    bytes no longer parse as far as the header CRC (or claim more items than they can hold)."""
    try:
        if len(data) < 39:
            return None
        kind, pos, varints, shape = data[5], 39, [], None
        if kind & 0x10:
            shape_start, ndim = pos, data[pos]
            pos += 1
            if not 1 <= ndim <= 4:
                return None
            for _ in range(ndim):
                start = pos
                _, pos = read_uvarint(data, pos)
                varints.append((start, pos))
            shape = (shape_start, pos)
        start = pos
        count, pos = read_uvarint(data, pos)
        varints.append((start, pos))
        if count * 5 > len(data) - pos:
            return None
        lengths, crc_positions = [], []
        for _ in range(count):
            start = pos
            length, pos = read_uvarint(data, pos)
            varints.append((start, pos))
            lengths.append(length)
            crc_positions.append(pos)
            pos += 4
        names = pos
        if kind & 0x20:
            start = pos
            packed, pos = read_uvarint(data, pos)
            varints.append((start, pos))
            pos += packed
        if pos + 4 > len(data):
            return None
    except (FormatError, IndexError):
        return None
    offsets, offset = [], pos + 4
    for length in lengths:
        offsets.append(offset)
        offset += length
    return Layout(varints, shape, names, crc_positions, lengths, pos, offsets, offset)


def item_shape_varints(data: bytes, layout: Layout) -> list[tuple[int, int]]:
    """(start, end) of the shape dims that each item of a mixed-shape archive starts with."""
    fields = []
    if layout.shape is not None:
        return fields
    for offset in layout.offsets:
        try:
            pos = offset + 1
            for _ in range(min(data[offset], 4)):
                start = pos
                _, pos = read_uvarint(data, pos)
                fields.append((start, pos))
        except (FormatError, IndexError):
            pass
    return fields


def mcz_varints(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the uvarints of a ``.mcz``: the shape dims (kind bit 0x40) and a COIN file's
    depth and width."""
    fields = []
    try:
        pos = 2
        if len(data) > 2 and data[1] & 0x40:
            ndim, pos = data[2], 3
            for _ in range(min(ndim, 4)):
                start = pos
                _, pos = read_uvarint(data, pos)
                fields.append((start, pos))
        if len(data) > 1 and data[1] & 3 == 1:  # COIN: depth, width
            for _ in range(2):
                start = pos
                _, pos = read_uvarint(data, pos)
                fields.append((start, pos))
    except (FormatError, IndexError):
        pass
    return fields


def mcz_floats(data: bytes, target: str) -> list[tuple[int, int]]:
    """(start, size) of float fields: a COIN++ record's range/spacing, a COIN file's ω₀ and ranges."""
    try:
        pos = 2
        if len(data) > 2 and data[1] & 0x40:
            pos = 3
            for _ in range(min(data[2], 4)):
                _, pos = read_uvarint(data, pos)
        if target == "mcz-coinpp":
            return [(pos + 2 + 4 * k, 4) for k in range(5)]
        for _ in range(2):
            _, pos = read_uvarint(data, pos)
        return [(pos + 1, 2)] + [(pos + 3 + 4 * k, 4) for k in range(12)]
    except (FormatError, IndexError):
        return []


def recompute_mcz_crc(data: bytes, key: bytes) -> bytes | None:
    if len(data) < 6:
        return None
    body = data[:-4]
    return body + zlib.crc32(body, zlib.crc32(key)).to_bytes(4, "little")


def recompute_archive_crcs(data: bytes) -> bytes | None:
    """Every CRC of an archive made right again: the items', the header's, the final one."""
    layout = archive_layout(data)
    if layout is None:
        return None
    out = bytearray(data)
    for i, (offset, length, at) in enumerate(zip(layout.offsets, layout.lengths, layout.crc_positions)):
        out[at:at + 4] = item_crc(i, bytes(out[offset:offset + length])).to_bytes(4, "little")
    out[layout.hcrc:layout.hcrc + 4] = zlib.crc32(out[:layout.hcrc]).to_bytes(4, "little")
    if len(out) >= layout.end + 4:
        out[layout.end:layout.end + 4] = zlib.crc32(out[:layout.end]).to_bytes(4, "little")
    return bytes(out)


# --- mutators ----------------------------------------------------------------------------------------

def _uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"uvarint of {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def bit_flips(rng, data, seed, corpus):
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        bit = rng.randrange(8 * len(out))
        out[bit >> 3] ^= 1 << (bit & 7)
    return bytes(out)


def insert_bytes(rng, data, seed, corpus):
    at = rng.randint(0, len(data))
    chunk = bytes(rng.choice([rng.randrange(256), *SPECIAL_BYTES]) for _ in range(rng.choice([1, 1, 2, 3, 4, 8, 17])))
    return data[:at] + chunk + data[at:]


def delete_bytes(rng, data, seed, corpus):
    if not data:
        return data
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.choice([1, 1, 2, 3, 4, 5, 9, 33]):]


def overwrite_special(rng, data, seed, corpus):
    if not data:
        return data
    out = bytearray(data)
    at, value = rng.randrange(len(out)), rng.choice(SPECIAL_BYTES)
    for k in range(at, min(len(out), at + rng.choice([1, 1, 1, 2, 4]))):
        out[k] = value
    return bytes(out)


def truncate(rng, data, seed, corpus):
    n = len(data)
    classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, n // 2, n - 1, n - 2, n - 3, n - 4, n - 5, n - 6, rng.randint(0, n)]
    if seed.layout is not None:  # archives: at the header CRC and around every item boundary
        classes += [39, 40, seed.layout.hcrc, seed.layout.header_end, seed.layout.end]
        boundary = rng.choice(seed.layout.offsets or [seed.layout.end])
        classes += [boundary - 1, boundary, boundary + 1]
    return data[:max(0, min(n, rng.choice(classes)))]


def _field_value(rng, value: int) -> bytes:
    choices = [0, 1, 2, value + 1, max(0, value - 1), value * 2, value + rng.randint(2, 1000), value // 2,
               127, 128, 16383, 16384, 1 << 21, (1 << 28) - 1, 1 << 28, (1 << 32) - 1, 1 << 32,
               (1 << 35) - 1, (1 << 35) - rng.randint(2, 1 << 20), rng.getrandbits(rng.randint(1, 35))]
    return _uvarint(rng.choice(choices))


def _varint_fields(data, target):
    if target == "mcza":
        layout = archive_layout(data)
        return layout.varints + item_shape_varints(data, layout) if layout else []
    return mcz_varints(data)


def edit_length_field(rng, data, seed, corpus):
    fields = _varint_fields(data, seed.target)
    if not fields:
        return bit_flips(rng, data, seed, corpus)
    start, end = rng.choice(fields)
    value, _ = read_uvarint(data, start)
    return data[:start] + _field_value(rng, value) + data[end:]


def huge_varint(rng, data, seed, corpus):
    fields = _varint_fields(data, seed.target)
    huge = rng.choice(HUGE_VARINTS)
    if fields and rng.random() < 0.8:
        start, end = rng.choice(fields)
        return data[:start] + huge + data[end:]
    at = rng.randint(0, len(data))
    return data[:at] + huge + data[at + rng.choice([0, len(huge)]):]


def special_float(rng, data, seed, corpus):
    fields = mcz_floats(data, seed.target) if seed.target != "mcza" else []
    if seed.target == "mcza":
        layout = archive_layout(data)
        if layout and layout.offsets:  # the record's range/spacing floats, after a possible stored shape
            offset = rng.choice(layout.offsets)
            fields = [(offset + skip + 4 * k, 4) for skip in (0, 3, 4, 5, 6) for k in range(5)]
    if not fields:
        return overwrite_special(rng, data, seed, corpus)
    start, size = rng.choice(fields)
    value = rng.choice(SPECIAL_F32 if size == 4 else SPECIAL_F16)
    if start + size > len(data):
        return data
    return data[:start] + value + data[start + size:]


def zero_range(rng, data, seed, corpus):
    if not data:
        return data
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.choice([2, 4, 8, 16, 64, len(data)]))
    return data[:start] + bytes(end - start) + data[end:]


def splice(rng, data, seed, corpus):
    other = rng.choice(corpus.seeds[seed.target]).data
    cut = rng.randint(0, len(data))
    other_cut = cut if rng.random() < 0.5 else rng.randint(0, len(other))
    return data[:cut] + other[other_cut:]


def swap_items(rng, data, seed, corpus):
    """Item i's bytes replaced by item j's of another (or the same) archive, or two items swapped."""
    layout = archive_layout(data)
    if layout is None or not layout.offsets:
        return splice(rng, data, seed, corpus)
    i = rng.randrange(len(layout.offsets))
    a, b = layout.offsets[i], layout.offsets[i] + layout.lengths[i]
    if rng.random() < 0.4 and len(layout.offsets) > 1:  # exchange two items of this archive
        j = rng.randrange(len(layout.offsets))
        c, d = layout.offsets[j], layout.offsets[j] + layout.lengths[j]
        if c < a:
            a, b, c, d = c, d, a, b
        if b <= c:
            return data[:a] + data[c:d] + data[b:c] + data[a:b] + data[d:]
    other = rng.choice(corpus.seeds["mcza"])
    if not other.layout.offsets:
        return data
    j = rng.randrange(len(other.layout.offsets))
    body = other.data[other.layout.offsets[j]:other.layout.offsets[j] + other.layout.lengths[j]]
    return data[:a] + body + data[b:]


def _near_shape(rng, shape: tuple[int, ...]) -> bytes:
    """A shape (ndim byte and uvarints) near ``shape``: dims off by one, doubled, 1, huge; channels 1–4;
    now and then one dimension more or fewer."""
    dims = list(shape)
    for k in rng.sample(range(len(dims)), rng.randint(1, len(dims))):
        d = dims[k]
        dims[k] = rng.choice([1, 2, max(1, d - 1), d + 1, 2 * d, 3 * d + 1, d * rng.randint(2, 64), 1 << 13, 1 << 14,
                              rng.randint(1, 1 << 20)] + ([1, 2, 3, 4, 5] if k == len(dims) - 1 else []))
    if rng.random() < 0.15:
        if len(dims) > 1 and rng.random() < 0.5:
            dims = dims[:-2] + dims[-1:]  # one dimension fewer
        else:
            dims = dims[:-1] + [rng.randint(1, 9)] + dims[-1:]  # one more
    ndim = len(dims) if rng.random() < 0.95 else rng.choice([0, 5, len(dims) + 1])
    return bytes([ndim]) + b"".join(_uvarint(d) for d in dims)


def reshape(rng, data, seed, corpus):
    """Store another shape: a .mcz's header shape (added when not stored), an archive's common
    shape or one item's shape."""
    if seed.target == "mcza":
        layout = archive_layout(data)
        if layout is None:
            return huge_varint(rng, data, seed, corpus)
        base_shape = (*seed.base.config.patch, seed.base.config.channels)
        if layout.shape is not None:
            start, end = layout.shape
            return data[:start] + _near_shape(rng, base_shape) + data[end:]
        if not layout.offsets:
            return data
        offset = rng.choice(layout.offsets)
        try:
            pos = offset + 1
            for _ in range(min(data[offset], 4)):
                _, pos = read_uvarint(data, pos)
        except (FormatError, IndexError):
            return data
        return data[:offset] + _near_shape(rng, base_shape) + data[pos:]
    if len(data) < 3:
        return data
    if seed.target == "mcz-coin":
        shape = (16, 16, 3)
    else:
        shape = (*seed.base.config.patch, seed.base.config.channels)
    if data[1] & 0x40:
        try:
            pos = 3
            shape = []
            for _ in range(min(data[2], 4)):
                dim, pos = read_uvarint(data, pos)
                shape.append(dim)
        except (FormatError, IndexError):
            return data
        return data[:2] + _near_shape(rng, tuple(shape) or (1,)) + data[pos:]
    return data[:1] + bytes([data[1] | 0x40]) + _near_shape(rng, shape) + data[2:]


NAME_PAYLOADS = [
    lambda n: "\n".join(f"n{i}" for i in range(n)).encode(),  # right count
    lambda n: "\n".join(f"n{i}" for i in range(n + 1)).encode(),  # one too many
    lambda n: "\n".join(f"n{i}" for i in range(max(0, n - 1))).encode(),  # one too few
    lambda n: "\n".join(["x" * 1025] + [""] * (n - 1)).encode(),  # a name over MAX_NAME_BYTES
    lambda n: "\n".join(["a\0b"] + [""] * (n - 1)).encode(),  # NUL
    lambda n: b"\xff\xfe\n" * max(0, n - 1) + b"\xc3",  # invalid UTF-8
    lambda n: b"a" * (n * 1025 + 1),  # longer than n names can be
    lambda n: b"\n" * (10 ** 7),  # a zlib bomb: 10 MB of newlines
    lambda n: b"",
]


def replace_names(rng, data, seed, corpus):
    """A new names field: wrong counts, long names, NUL, bad UTF-8, a zlib bomb, trailing or missing
    bytes of the zlib stream."""
    layout = archive_layout(data)
    if layout is None:
        return bit_flips(rng, data, seed, corpus)
    count = len(layout.offsets)
    packed = _compressed_names(rng.randrange(len(NAME_PAYLOADS)), count)
    tweak = rng.random()
    if tweak < 0.15:
        packed += bytes([rng.randrange(256)])  # unused data after the stream
    elif tweak < 0.3 and packed:
        packed = packed[:rng.randrange(len(packed))]  # a cut stream
    header = data[:5] + bytes([data[5] | 0x20]) + data[6:layout.names]
    return header + _uvarint(len(packed)) + packed + data[layout.hcrc:]


_NAME_CACHE: dict = {}


def _compressed_names(which: int, count: int) -> bytes:
    key = (which, count)
    if key not in _NAME_CACHE:
        _NAME_CACHE[key] = zlib.compress(NAME_PAYLOADS[which](count), 9)
    return _NAME_CACHE[key]


MUTATORS = [(bit_flips, 4), (insert_bytes, 2), (delete_bytes, 2), (overwrite_special, 2), (truncate, 2),
            (edit_length_field, 3), (huge_varint, 2), (special_float, 2), (splice, 1), (zero_range, 1),
            (reshape, 2)]
ARCHIVE_MUTATORS = MUTATORS + [(swap_items, 3), (replace_names, 1)]


def mutate(rng: random.Random, seed: Seed, corpus: Corpus) -> tuple[bytes, list[str], bool]:
    """(mutant, the mutators applied, whether its CRCs were recomputed)."""
    table = ARCHIVE_MUTATORS if seed.target == "mcza" else MUTATORS
    functions, weights = zip(*table)
    data, applied = seed.data, []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        fn = rng.choices(functions, weights)[0]
        data = fn(rng, data, seed, corpus)
        applied.append(fn.__name__)
    recomputed = False
    if rng.random() < CRC_FRACTION:
        if seed.target == "mcza":
            fixed = recompute_archive_crcs(data)
        else:
            fixed = recompute_mcz_crc(data, coinpp.hash_key(seed.base) if seed.target == "mcz-coinpp" else b"")
        if fixed is not None:
            data, recomputed = fixed, True
            applied.append("recompute_crcs")
    return data, applied, recomputed


# --- targets -----------------------------------------------------------------------------------------

def _expect(call):
    """(True, result) on success, (False, None) on FormatError; anything else propagates (a crash)."""
    try:
        return True, call()
    except FormatError:
        return False, None


def run_coinpp(data: bytes, base) -> dict:
    ok, _ = _expect(lambda: coinpp.decode(data, base, "fuzz"))
    return {"decoded": [0] if ok else []}


def run_coin(data: bytes, base=None) -> dict:
    ok, _ = _expect(lambda: coin.decode_image(data, source="fuzz"))
    return {"decoded": [0] if ok else []}


def run_archive(data: bytes, base) -> dict:
    """Open (both ways), list, verify and decode every item of an archive."""
    strict_ok, _ = _expect(lambda: Archive(io.BytesIO(data), "fuzz").close())
    ok, archive = _expect(lambda: Archive(io.BytesIO(data), "fuzz", check_header=False))
    if not ok:
        if strict_ok:
            raise AssertionError("Archive() opened what Archive(check_header=False) refused")
        return {"decoded": [], "verified": False}
    with archive:
        if strict_ok != archive.header_ok:
            raise AssertionError(f"Archive() {'opened' if strict_ok else 'refused'} an archive whose header_ok is "
                                 f"{archive.header_ok}")
        report = archive.verify()
        shapes = {}
        for i in range(archive.count):
            got, shape = _expect(lambda: archive.item_shape(i))
            if got:
                shapes[i] = shape
        _expect(archive.samples)
        names = list(archive.names)
        if len(names) != archive.count:
            raise AssertionError(f"{len(names)} names for {archive.count} items")
        decoded = [i for i in range(archive.count) if _expect(lambda: archive.datapoint(i, base))[0]]
    return {"decoded": decoded, "verified": report.ok, "shapes": shapes}


RUNNERS = {"mcz-coinpp": run_coinpp, "mcz-coin": run_coin, "mcza": run_archive}


# --- the loop ----------------------------------------------------------------------------------------

class Hang(BaseException):
    """Raised by the SIGALRM guard."""


@contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _quiet():
    """No encoder warnings (padding) and no numpy overflow warnings from garbage weights."""
    logger = logging.getLogger("metacompress")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def _alarm_guard():
    """Install the SIGALRM handler; restore whatever was there (pytest-timeout's) afterwards."""
    def on_alarm(signum, frame):
        raise Hang(f"no result after {ALARM_S} s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_timer = signal.setitimer(signal.ITIMER_REAL, 0)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, old_timer[0] - (time.monotonic() - started)), old_timer[1])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _authentic(target: str, data: bytes, outcome: dict, corpus: Corpus) -> list[str]:
    """What a mutant without recomputed CRCs wrongly got through (empty when nothing): a decode
    counts as right only if every byte it checks equals a seed's (the whole .mcz; an archive's
    header up to and including hcrc, and item i's bytes at its offset)."""
    if target != "mcza":
        return ["decoded a changed file"] if outcome["decoded"] and data not in corpus.mcz_originals else []
    wrong = []
    if outcome.get("verified") and data not in corpus.archive_originals:
        wrong.append("verify() passed a changed archive")
    matches = [s for header, seeds in corpus.archive_headers.items() if data.startswith(header) for s in seeds]
    if outcome["decoded"]:
        for i in outcome["decoded"]:
            if not any(i < len(s.layout.offsets) and _item_bytes(data, s.layout, i) == _item_bytes(s.data, s.layout, i)
                       for s in matches):
                wrong.append(f"decoded item {i} of a changed archive")
    return wrong


def _listing_changes(data: bytes, outcome: dict, corpus: Corpus) -> int:
    """Items whose listed shape differs from the seed's while the header is intact (listing reads
    an item's shape without checking the item's CRC): informational."""
    matches = [s for header, seeds in corpus.archive_headers.items() if data.startswith(header) for s in seeds]
    return sum(1 for i, shape in outcome.get("shapes", {}).items()
               if matches and all(i < len(s.shapes) and s.shapes[i] != shape for s in matches))


def _item_bytes(data: bytes, layout: Layout, i: int) -> bytes:
    return data[layout.offsets[i]:layout.offsets[i] + layout.lengths[i]]


def check_input(target: str, data: bytes, base) -> tuple[dict | None, str | None, float, float]:
    """(outcome, failure, seconds, RSS jump in MB): failure is None, or 'crash: ...' / 'hang: ...'."""
    rss = _rss_mb()
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, ALARM_S)
    outcome, failure = None, None
    try:
        outcome = RUNNERS[target](data, base)
    except Hang as e:
        failure = f"hang: {e}"
    except Exception as e:  # noqa: BLE001 - any exception but FormatError is the finding
        failure = f"crash: {type(e).__module__}.{type(e).__qualname__}: {str(e)[:300]}"
    except BaseException as e:  # e.g. a Rust panic surfacing as pyo3's PanicException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        failure = f"crash: {type(e).__module__}.{type(e).__qualname__}: {str(e)[:300]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - started
    if failure is None and seconds > TIME_LIMIT_S:
        failure = f"hang: took {seconds:.2f} s"
    return outcome, failure, seconds, _rss_mb() - rss


def _save(target: str, data: bytes, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{target}-{hashlib.sha1(data).hexdigest()[:12]}.bin"
    path.write_bytes(data)
    return path


def fuzz(corpus: Corpus, inputs: int, seed: int = 0, save_crashes: Path | None = None,
         progress: bool = False, targets=TARGETS) -> dict:
    """Run ``inputs`` mutants split over ``targets``; a summary dict per target."""
    shares = {t: WEIGHTS[t] for t in targets if corpus.seeds[t]}
    total = sum(shares.values())
    counts = {t: int(inputs * w / total) for t, w in shares.items()}
    counts[next(iter(counts))] += inputs - sum(counts.values())
    summary = {}
    with _torch_threads(1), _quiet(), _alarm_guard():
        rss_start = _rss_mb()
        for target, n in counts.items():
            stats = {"inputs": 0, "crashes": 0, "hangs": 0, "silent_wrong_decodes": 0, "memory_blowups": 0,
                     "slowest_input_s": 0.0, "peak_rss_mb": 0.0, "rss_jump_mb": 0.0, "crc_recomputed": 0,
                     "decoded_ok": 0, "decoded_ok_plain": 0, "listing_changed": 0, "seconds": 0.0, "findings": []}
            started = time.perf_counter()
            for k in range(n):
                rng = random.Random(f"{seed}/{target}/{k}")
                original = rng.choice(corpus.seeds[target])
                data, applied, recomputed = mutate(rng, original, corpus)
                outcome, failure, seconds, jump = check_input(target, data, original.base)
                stats["inputs"] += 1
                stats["slowest_input_s"] = max(stats["slowest_input_s"], seconds)
                stats["rss_jump_mb"] = max(stats["rss_jump_mb"], jump)
                findings = []
                if failure:
                    stats["hangs" if failure.startswith("hang") else "crashes"] += 1
                    findings.append(failure)
                if jump > MAX_RSS_JUMP_MB:
                    stats["memory_blowups"] += 1
                    findings.append(f"memory: peak RSS rose by {jump:.0f} MB")
                if outcome is not None:
                    if recomputed:
                        stats["crc_recomputed"] += 1
                        stats["decoded_ok"] += bool(outcome["decoded"])
                    else:
                        stats["decoded_ok_plain"] += bool(outcome["decoded"])
                        wrong = _authentic(target, data, outcome, corpus)
                        if target == "mcza":
                            stats["listing_changed"] += bool(_listing_changes(data, outcome, corpus))
                        if wrong:
                            stats["silent_wrong_decodes"] += 1
                            findings.append("silent wrong decode: " + "; ".join(wrong))
                elif recomputed:
                    stats["crc_recomputed"] += 1
                if findings:
                    entry = {"input": k, "seed": original.name, "mutators": applied, "problems": findings,
                             "sha1": hashlib.sha1(data).hexdigest()[:12], "bytes": len(data)}
                    if save_crashes is not None:
                        entry["saved"] = str(_save(target, data, save_crashes))
                    if len(stats["findings"]) < 50:
                        stats["findings"].append(entry)
                if progress and (k + 1) % PROGRESS_EVERY == 0:
                    print(f"  {target}: {k + 1}/{n} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
            stats["seconds"] = round(time.perf_counter() - started, 2)
            stats["peak_rss_mb"] = round(_rss_mb(), 1)
            stats["rss_jump_mb"] = round(stats["rss_jump_mb"], 1)
            stats["slowest_input_s"] = round(stats["slowest_input_s"], 4)
            stats["rss_at_start_mb"] = round(rss_start, 1)
            summary[target] = stats
    return summary


def replay(paths, corpus: Corpus) -> list[str]:
    """Run saved inputs through their target (with every base network): problems found, if any."""
    problems = []
    with _torch_threads(1), _quiet(), _alarm_guard():
        for path in paths:
            path = Path(path)
            target = next((t for t in sorted(TARGETS, key=len, reverse=True) if path.name.startswith(t + "-")), None)
            if target is None:
                problems.append(f"{path.name}: no target prefix")
                continue
            bases = list(corpus.bases.values()) if target != "mcz-coin" else [None]
            for base in bases:
                _, failure, seconds, _ = check_input(target, path.read_bytes(), base)
                if failure:
                    problems.append(f"{path.name}: {failure}")
    return problems


def format_table(summary: dict) -> str:
    columns = ["inputs", "crashes", "hangs", "silent_wrong_decodes", "memory_blowups", "slowest_input_s",
               "peak_rss_mb", "rss_jump_mb", "crc_recomputed", "decoded_ok", "seconds"]
    heads = ["target", "inputs", "crashes", "hangs", "silent-wrong", "mem", "slowest s", "peak MB", "jump MB",
             "crc-fixed", "decoded-ok", "seconds"]
    rows = [heads] + [[t] + [str(s[c]) for c in columns] for t, s in summary.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                     for r in rows)


def failures(summary: dict) -> int:
    return sum(s["crashes"] + s["hangs"] + s["silent_wrong_decodes"] + s["memory_blowups"] for s in summary.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=10_000, help="mutated inputs in all (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--save-crashes", action="store_true", help=f"save crashing/hanging inputs to {CORPUS_DIR}")
    parser.add_argument("--modalities", default="image,audio,volume,sphere",
                        help="base networks to build (default image,audio,volume,sphere)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    corpus = build_corpus(tuple(args.modalities.split(",")))
    built = time.perf_counter() - started
    print(f"corpus: {', '.join(f'{len(v)} {k}' for k, v in corpus.seeds.items())} seeds in {built:.1f} s",
          file=sys.stderr)
    summary = fuzz(corpus, args.inputs, args.seed, CORPUS_DIR if args.save_crashes else None, progress=True)
    print(format_table(summary))
    for target, stats in summary.items():
        for finding in stats["findings"][:10]:
            print(f"{target}: {finding}")
    print(f"total {time.perf_counter() - started:.1f} s (corpus {built:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "inputs": args.inputs, "corpus_seconds": round(built, 2),
                                         "targets": summary}, indent=2))
    return 1 if failures(summary) else 0


if __name__ == "__main__":
    sys.exit(main())
