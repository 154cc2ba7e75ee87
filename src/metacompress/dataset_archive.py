"""Encoding a whole dataset into one archive: in shards, in parallel, resumably.

Items are cut into fixed shards of ``shard_size`` consecutive items.  A shard is always encoded
as one batch, whoever encodes it, so its bytes do not depend on how many processes share the
work: ``--workers N`` processes on one machine and ``torchrun`` ranks on many machines (sharing
the output folder) each take every N-th pending shard and write it as a part file
``OUTPUT.parts/shard-K.{bin,json}`` (bytes first, then the JSON that marks it finished, both by
rename).  When every part exists the first process merges them in order into the archive and
deletes the parts.  An interrupted run leaves its finished parts behind; running the same
command again encodes only the missing shards.

The merging process holds an exclusive lock on ``.OUTPUT.lock`` (next to the output) from before
the parts folder is made until the archive is written, so a second run to the same output is
refused at once instead of merging half of the other run's parts.  Workers die with the process
that started them (Linux), so killing a run leaves no orphan still encoding.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import multiprocessing
import numbers
import os
import shutil
import signal
import sys
import time
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are not guarded
    fcntl = None

import numpy as np
import torch

from metacompress.checkpoint import atomic_write_bytes, naming
from metacompress.codecs.archive import Archive, ArchiveHeader, ArchiveItem, append_to_archive, common_shape, write_archive
from metacompress.codecs.coinpp import DEFAULT_BITS, DEFAULT_EFFORT, DEFAULT_STEPS, encode_many, quantizer_for
from metacompress.modalities.item_sources import ItemSource
from metacompress.distributed import DistContext, barrier
from metacompress.errors import UserError
from metacompress.inr.base_network import BaseNetwork

PARTS_VERSION = 1
MAX_STEPS = 10_000
MAX_SHARD_SIZE = 1 << 20


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class ArchiveSettings:
    bits: int = DEFAULT_BITS
    steps: int = DEFAULT_STEPS
    entropy: bool = True
    shard_size: int = 64  # items encoded as one batch (and the unit of resuming)
    effort: int = DEFAULT_EFFORT  # refinement steps per item (codecs.coinpp.refine_tile_latents)

    def __post_init__(self) -> None:
        """Refuse impossible settings when they are made, before anything is written to disk."""
        if not _is_int(self.bits) or not 1 <= self.bits <= 8:
            raise UserError(f"--bits must be an integer in 1–8, got {self.bits!r}")
        if not _is_int(self.steps) or not 0 <= self.steps <= MAX_STEPS:
            raise UserError(f"--steps must be an integer in 0–{MAX_STEPS}, got {self.steps!r}")
        if not _is_int(self.effort) or not 0 <= self.effort <= MAX_STEPS:
            raise UserError(f"--effort must be an integer in 0–{MAX_STEPS}, got {self.effort!r}")
        if not _is_int(self.shard_size) or not 1 <= self.shard_size <= MAX_SHARD_SIZE:
            raise UserError(f"--shard-size must be an integer in 1–{MAX_SHARD_SIZE}, got {self.shard_size!r}")
        if not isinstance(self.entropy, (bool, np.bool_)):
            raise UserError(f"entropy coding is on or off (True/False), got {self.entropy!r}")

    def validate(self, base: BaseNetwork | None = None, workers: int = 1) -> None:
        """Every check of a run's options, in one place; ``base`` adds whether it supports ``bits``."""
        self.__post_init__()  # again: a frozen dataclass can still be changed behind its back
        if not _is_int(workers) or workers < 1:
            raise UserError(f"--workers must be an integer of at least 1, got {workers!r}")
        if base is not None:
            quantizer_for(base, self.bits)  # refuse an unsupported bit-width before any work


@dataclass
class ShardStats:
    """What the progress bar and the summary need from a finished shard."""

    shard: int
    items: int
    record_bytes: int
    file_bytes: int  # the same items as stand-alone .mcz files
    samples: int
    psnr_sum: float
    seconds: float


def parts_folder(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.lock")


@contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold the exclusive lock on writing ``output`` (refusing at once if another run holds it);
    the lock file is removed when done."""
    if fcntl is None:
        yield
        return
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # name the output the user gave, not the hidden lock file
            raise naming(error, output) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise UserError(f"{output}: another archive create/append is writing it; wait for it or choose "
                                "another output") from None
            fd = None  # a file system without locks: go on unguarded
            break
        try:
            held, current = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the run before removed this lock file as it finished: lock the new one
    try:
        yield
    finally:
        if fd is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            os.close(fd)


def shard_items(shard: int, count: int, shard_size: int) -> range:
    return range(shard * shard_size, min(count, (shard + 1) * shard_size))


def encode_shard(source: ItemSource, base: BaseNetwork, settings: ArchiveSettings, shard: int, parts: Path) -> ShardStats:
    """Encode one shard and write its part files."""
    started = time.perf_counter()
    indices = shard_items(shard, len(source), settings.shard_size)
    points = [source.load(i) for i in indices]
    results = encode_many(points, base, settings.bits, settings.steps, settings.entropy, effort=settings.effort)
    records = [r.record for r in results]
    blob = b"".join(records)
    samples = [math.prod(p.values.shape[:-1]) for p in points]
    meta = {"shard": shard, "items": [indices.start, indices.stop], "lengths": [len(r) for r in records],
            "shapes": [list(p.values.shape) for p in points], "dtypes": [p.dtype for p in points],
            "psnr": [r.psnr for r in results],
            "file_bytes": [len(r.data) for r in results], "samples": samples, "crc": zlib.crc32(blob),
            "seconds": time.perf_counter() - started}
    atomic_write_bytes(parts / f"shard-{shard:06d}.bin", blob)
    atomic_write_bytes(parts / f"shard-{shard:06d}.json", json.dumps(meta).encode())
    return stats_of(meta)


def stats_of(meta: dict) -> ShardStats:
    return ShardStats(meta["shard"], len(meta["lengths"]), sum(meta["lengths"]), sum(meta["file_bytes"]),
                      sum(meta["samples"]), sum(meta["psnr"]), meta["seconds"])


def finished_shard(parts: Path, shard: int, expected_items: range) -> tuple[dict, bytes] | None:
    """The part's metadata and data if shard ``shard`` was finished intact, else None."""
    meta_path, blob_path = parts / f"shard-{shard:06d}.json", parts / f"shard-{shard:06d}.bin"
    try:
        meta = json.loads(meta_path.read_text())
        blob = blob_path.read_bytes()
    except (OSError, ValueError):
        return None
    if meta.get("items") != [expected_items.start, expected_items.stop] or zlib.crc32(blob) != meta.get("crc") \
            or sum(meta.get("lengths", [])) != len(blob):
        return None
    return meta, blob


def run_manifest(source: ItemSource, base: BaseNetwork, settings: ArchiveSettings) -> dict:
    return {"parts_version": PARTS_VERSION, "base": base.hash, "settings": asdict(settings),
            "source": source.fingerprint, "items": len(source)}


def prepare_parts(parts: Path, manifest: dict, ctx: DistContext | None) -> None:
    """Create the parts folder, or check that the one there belongs to this very run."""
    main = ctx is None or ctx.is_main
    path = parts / "manifest.json"
    if main:
        if path.exists():
            try:
                existing = json.loads(path.read_text())
            except ValueError:
                existing = None
            if existing != manifest:
                raise UserError(f"{parts}: holds parts of a different archive run (other items, base network or "
                                "settings); delete it, or rerun with the settings that made it")
        else:
            parts.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(manifest).encode())
    if ctx is not None:
        barrier(ctx)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux; a no-op elsewhere), and exit
    now if the parent ``parent`` is already gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0))
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the signal was asked for
        os._exit(1)


def _worker_init(threads: int, parent: int) -> None:
    die_with_parent(parent)
    torch.set_num_threads(threads)


def _worker_encode(job) -> ShardStats:
    return encode_shard(*job)


def encode_pending(source: ItemSource, base: BaseNetwork, settings: ArchiveSettings, parts: Path, shards: list[int],
                   workers: int, on_shard: Callable[[ShardStats], None]) -> None:
    """Encode ``shards`` in this process or in ``workers`` processes, reporting each as it finishes."""
    if workers <= 1 or len(shards) <= 1:
        for shard in shards:
            on_shard(encode_shard(source, base, settings, shard, parts))
        return
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(shards)), initializer=_worker_init,
                      initargs=(threads, os.getpid())) as pool:
        jobs = [(source, base, settings, shard, parts) for shard in shards]
        for stats in pool.imap_unordered(_worker_encode, jobs):
            on_shard(stats)


@dataclass
class ArchiveSummary:
    items: int  # in the archive
    added: int  # by this command (all of them, unless appending)
    archive_bytes: int
    samples: int  # pixels, audio samples, voxels or grid points of all items
    added_samples: int
    file_bytes: int  # the added items as stand-alone .mcz files, summed
    mean_psnr: float  # of the added items
    encoded_items: int  # encoded in this run (the rest were finished parts of an interrupted run)
    encode_seconds: float

    @property
    def bits_per_sample(self) -> float:
        return 8 * self.archive_bytes / self.samples


def create_archive(source: ItemSource, base: BaseNetwork, output: Path, settings: ArchiveSettings = ArchiveSettings(),
                   workers: int = 1, ctx: DistContext | None = None, append: bool = False,
                   on_shard: Callable[[ShardStats], None] | None = None) -> ArchiveSummary | None:
    """Encode every item of ``source`` into the archive ``output`` (or add them to it with
    ``append``); returns the summary in the process that merges, None in the others.

    ``workers`` > 1 starts processes with ``spawn`` (safe with torch's threads), which re-imports
    the calling script: call this under ``if __name__ == "__main__":`` there."""
    settings.validate(base, workers)  # before anything is made on disk
    output = Path(output)
    if append and not output.is_file():
        raise UserError(f"{output}: no archive to append to")
    if ctx is not None and not ctx.is_main:  # ranks of one run share the parts; rank 0 holds the lock
        return _create_archive(source, base, output, settings, workers, ctx, append, on_shard)
    with output_lock(output):
        if not append and output.exists() and not parts_folder(output).exists():
            raise UserError(f"{output}: already exists; remove it, or add items with `archive append`")
        return _create_archive(source, base, output, settings, workers, ctx, append, on_shard)


def _create_archive(source: ItemSource, base: BaseNetwork, output: Path, settings: ArchiveSettings, workers: int,
                    ctx: DistContext | None, append: bool,
                    on_shard: Callable[[ShardStats], None] | None) -> ArchiveSummary | None:
    parts = parts_folder(output)
    if ctx is None or ctx.is_main:
        with parts_kept_only_with_work(parts, output):
            return _encode_and_merge(source, base, output, settings, workers, ctx, append, on_shard, parts)
    return _encode_and_merge(source, base, output, settings, workers, ctx, append, on_shard, parts)


@contextmanager
def parts_kept_only_with_work(parts: Path, output: Path) -> Iterator[None]:
    """On a storage error (disk full, read-only), remove a parts folder that holds no finished
    shard, and otherwise say that the finished ones are kept for the next run."""
    try:
        yield
    except OSError as error:
        finished = sorted(parts.glob("shard-*.json")) if parts.is_dir() else []
        if not finished:
            shutil.rmtree(parts, ignore_errors=True)
            raise
        raise UserError(
            f"{error.filename or output}: {error.strerror or error}; the {len(finished)} finished shard(s) are kept "
            f"in {parts}: free space and run the same command to resume") from None


def _encode_and_merge(source: ItemSource, base: BaseNetwork, output: Path, settings: ArchiveSettings, workers: int,
                      ctx: DistContext | None, append: bool, on_shard: Callable[[ShardStats], None] | None,
                      parts: Path) -> ArchiveSummary | None:
    prepare_parts(parts, run_manifest(source, base, settings), ctx)
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    shards = range(math.ceil(len(source) / settings.shard_size))
    pending = [k for k in shards if finished_shard(parts, k, shard_items(k, len(source), settings.shard_size)) is None]
    started, encoded = time.perf_counter(), []

    def finished(stats: ShardStats) -> None:
        encoded.append(stats.items)
        if on_shard:
            on_shard(stats)
    encode_pending(source, base, settings, parts, [k for k in pending if k % world == rank], workers, finished)
    seconds = time.perf_counter() - started
    if ctx is not None:
        barrier(ctx)
        if not ctx.is_main:
            return None
    return merge_parts(source, base, settings, output, parts, append, sum(encoded), seconds)


def merge_parts(source: ItemSource, base: BaseNetwork, settings: ArchiveSettings, output: Path, parts: Path,
                append: bool, encoded_items: int, seconds: float) -> ArchiveSummary:
    items, metas = [], []
    for shard in range(math.ceil(len(source) / settings.shard_size)):
        indices = shard_items(shard, len(source), settings.shard_size)
        finished = finished_shard(parts, shard, indices)
        if finished is None:
            raise UserError(f"{parts}: shard {shard} is missing or damaged; run the same command again to encode it")
        (meta, blob), pos = finished, 0
        for i, length, shape in zip(indices, meta["lengths"], meta["shapes"]):
            items.append(ArchiveItem(tuple(shape), blob[pos:pos + length], source.names[i]))
            pos += length
        metas.append(meta)
    dtypes = sorted({d for m in metas for d in m["dtypes"]})
    if len(dtypes) != 1:
        raise UserError(f"{source.path}: the items are {' and '.join(dtypes)} data; an archive holds one kind")
    header = ArchiveHeader(base.config.modality, dtypes[0], settings.bits, settings.entropy, base.hash,
                           common_shape(items))
    size = append_to_archive(output, header, items) if append else write_archive(output, header, items)
    shutil.rmtree(parts)
    with Archive(output) as archive:
        count, samples = archive.count, archive.samples()
    psnrs = [p for m in metas for p in m["psnr"]]
    return ArchiveSummary(count, len(items), size, samples, sum(sum(m["samples"]) for m in metas),
                          sum(sum(m["file_bytes"]) for m in metas),
                          float(np.mean(psnrs)), encoded_items, seconds)
