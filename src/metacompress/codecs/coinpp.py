"""COIN++ (thesis §5.2): a datapoint is stored as the quantized, entropy-coded latent of a shared base network.

Encoding cuts the datapoint into the base network's patches, fits one latent vector per patch
with ``steps`` of SGD from zero (the meta-learned inner loop, Eq. 5.9), quantizes the latents
to ``bits`` (§5.2.3) and range-codes the symbols with the base network's training-symbol model.
Decoding maps the symbols back to bin centres and evaluates the base network.  Only the latents
are per datapoint, so encoding is a handful of gradient steps instead of COIN's thousands.

File body (after the ``.mcz`` header of ``codecs.base``; the base network's whole content hash
keys the file's CRC, so decoding with another base network fails)::

    base     1 byte   the first byte of the base network's content hash (for a clear error message)
    flags    1 byte   bits − 1 (bits 0–2) | entropy-coded (bit 3)
    record   the datapoint record

Datapoint record (also an archive item, see ``codecs.archive``)::

    range    2 float32 (little-endian), only for base networks without a fixed value range
    spacing  3 float32, only for volumes (voxel size in mm)
    payload  the range-coded symbols, or without entropy coding the symbols bit-packed at
             ``bits`` bits each; the symbol count follows from the shape, so it is not stored

The shape is left out of the header when it is one patch of the base network (a CIFAR-10
image on a 32×32 base), so such a file is its payload plus 8 bytes.  Everything else —
architecture, quantizer, symbol model — is in the base network.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from metacompress.codecs.base import (DEFAULT_MAX_OUTPUT_SAMPLES, Container, body_start, check_output_samples, pack,
                                      peek, unpack)
from metacompress.codecs.bitpack import pack_bits, unpack_bits
from metacompress.codecs.codec import Codec, Encoded
from metacompress.codecs.entropy import SymbolModel, decode_symbols, encode_symbols
from metacompress.codecs.latent_quantizer import LatentQuantizer
from metacompress.errors import FormatError, UserError
from metacompress.inr.base_network import BaseNetwork
from metacompress.inr.metalearning import fit_latents, per_sample_mse
from metacompress.metrics import psnr_from_mse
from metacompress.modalities.datapoint import (check_datapoint, coordinates, datapoint_range, from_features,
                                               to_features)
from metacompress.modalities.patches import tile_grid, tile_patches, untile_patches
from metacompress.modalities.registry import modality
from metacompress.modalities.spec import Datapoint

log = logging.getLogger(__name__)
HASH_PREFIX_BYTES = 1
POINTS_PER_CHUNK = 1 << 16  # coordinates per fitting/rendering pass: bounds memory on large data
DEFAULT_BITS, DEFAULT_STEPS = 5, 10  # thesis §5.2.3 and C.11
DEFAULT_EFFORT = 10  # refinement steps at encode time, chosen on held-out training photos (bench coinpp-effort)
REFINE_LR_STDS = 0.2  # Adam's step on the latents at encode time, in units of the training latents' std


@dataclass
class CoinppResult:
    data: bytes
    reconstruction: np.ndarray  # exactly what decoding the file gives
    psnr: float  # of the reconstruction, on the [0, 1] feature scale the network models
    tiles: int
    seconds: float = 0.0
    latents: torch.Tensor = field(default=None, repr=False)  # the quantized latents, (tiles, latent_dim)
    record: bytes = b""  # the datapoint record: what an archive stores for this datapoint
    payload_bytes: int = 0  # of those, the coded latents
    bits: int = DEFAULT_BITS  # latent bits the file is coded with

    @property
    def header_bytes(self) -> int:
        """Bytes of the file beyond the coded latents."""
        return len(self.data) - self.payload_bytes


def quantizer_for(base: BaseNetwork, bits: int) -> LatentQuantizer:
    codes = base.config.codes
    if codes is None or bits not in codes.symbol_counts:
        available = codes.bit_widths if codes is not None else []
        raise UserError(f"this base network has latent statistics for bits {available}, not {bits}")
    if codes.per_dimension:
        return LatentQuantizer(codes.dim_mean, codes.dim_std, bits)
    return LatentQuantizer(codes.mean, codes.std, bits)


def symbol_model(base: BaseNetwork, bits: int) -> SymbolModel:
    return SymbolModel(base.config.codes.symbol_counts[bits])


def fit_tile_latents(base: BaseNetwork, tiles: torch.Tensor, steps: int,
                     progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Latents (tiles, latent_dim) after ``steps`` inner-loop steps; tiles (n, points, C) features.

    Each tile's latent depends on that tile only (the inner loss sums per-tile errors), so
    fitting in chunks gives the same latents as one batch, in bounded memory.  The work runs on
    the base network's device; tiles and latents are CPU tensors.  ``progress(n)`` is told of
    every ``n`` tiles fitted.
    """
    coords = base_coordinates(base)
    inner_lr = base.config.learning_rate
    per_chunk = max(1, POINTS_PER_CHUNK // coords.shape[0])
    parts = []
    for chunk in tiles.split(per_chunk):
        parts.append(fit_latents(base.model, coords, chunk.to(coords.device), steps, inner_lr).detach().cpu())
        if progress is not None:
            progress(chunk.shape[0])
    return torch.cat(parts)


def refine_tile_latents(base: BaseNetwork, tiles: torch.Tensor, latents: torch.Tensor, quantizer: LatentQuantizer,
                        steps: int, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Encode-time effort (issue 17): ``steps`` of Adam on fitted latents with the quantizer in the
    loop (straight-through), so the latents are chosen for what the decoder will render.

    Each tile keeps the latents whose *quantized* error was lowest of all the steps (the start
    included), so refining never makes a tile worse.  Adam's steps are per entry and the loss a sum
    of per-tile errors, so chunking changes nothing.  Same devices as ``fit_tile_latents``.
    """
    if steps <= 0:
        return latents
    coords = base_coordinates(base)
    per_chunk = max(1, POINTS_PER_CHUNK // coords.shape[0])
    parts = []
    for tile_chunk, start in zip(tiles.split(per_chunk), latents.split(per_chunk)):
        target = tile_chunk.to(coords.device)
        # Adam steps in the quantizer's units (z − mean) / std: each dimension moves in proportion
        # to its own spread (for a global quantizer, the same steps as Adam on z at lr·std)
        u = quantizer.normalize(start.to(coords.device)).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([u], lr=REFINE_LR_STDS)
        best, best_error = start.to(coords.device).clone(), None
        with torch.enable_grad():
            for step in range(steps + 1):
                z = quantizer.denormalize(u)
                error = per_sample_mse(base.model, coords, target, quantizer.straight_through(z))
                with torch.no_grad():
                    better = torch.ones_like(error, dtype=torch.bool) if best_error is None else error < best_error
                    best[better] = z.detach()[better]
                    best_error = error.detach() if best_error is None else torch.minimum(best_error, error.detach())
                if step == steps:
                    break
                (u.grad,) = torch.autograd.grad(error.sum(), u)
                optimizer.step()
        parts.append(best.cpu())
        if progress is not None:
            progress(tile_chunk.shape[0])
    return torch.cat(parts)


@torch.no_grad()
def render_tiles(base: BaseNetwork, latents: torch.Tensor) -> torch.Tensor:
    """Features (tiles, points, C) of CPU ``latents``, rendered on the base network's device."""
    coords = base_coordinates(base)
    per_chunk = max(1, POINTS_PER_CHUNK // coords.shape[0])
    return torch.cat([base.model(coords, chunk.to(coords.device)).cpu() for chunk in latents.split(per_chunk)])


@dataclass
class FittedLatents:
    """Datapoints with their tiles' latents fitted (before quantization): quantize at any bit-width."""

    points: list[Datapoint]
    shapes: list[tuple[int, ...]]  # feature shapes (*spatial, out_dim)
    ranges: list[tuple[float, float] | None]  # per-datapoint value ranges, where the base has none
    tiles: list[int]
    latents: torch.Tensor  # (all tiles, latent_dim)
    steps: int
    seconds: float
    effort: int = 0  # refinement steps the latents had (for one bit-width)
    features: torch.Tensor = field(default=None, repr=False)  # the tiles' features (all tiles, points, C)


def check_padding(shape: tuple[int, ...], patch: tuple[int, ...]) -> None:
    """Refuse a shape whose patches the decoder would refuse; warn when padding is most of the work."""
    tiles = math.prod(tile_grid(shape, patch))
    samples, padded = math.prod(shape[:-1]), tiles * math.prod(patch)
    if padded > 2 * samples and padded > DEFAULT_MAX_OUTPUT_SAMPLES:
        raise UserError(f"a {'×'.join(map(str, shape[:-1]))} datapoint needs {tiles} patches of "
                        f"{'×'.join(map(str, patch))} ({padded:,} samples, over the decoders' cap of "
                        f"{DEFAULT_MAX_OUTPUT_SAMPLES:,}); crop or reshape it")
    if padded > 4 * samples:
        log.warning("a %s datapoint is padded to %d patches of %s: %.0f× its samples, so encoding it takes "
                    "about as long as %d full patches", "×".join(map(str, shape[:-1])), tiles,
                    "×".join(map(str, patch)), padded / samples, tiles)


def fit_datapoints(points: list[Datapoint], base: BaseNetwork, steps: int = DEFAULT_STEPS,
                   progress: Callable[[int, int], None] | None = None, effort: int = 0,
                   bits: int | None = None) -> FittedLatents:
    """Tile every datapoint and fit all tiles' latents in shared batches (CIFAR-10-sized data fits
    far faster in a batch than one by one); with ``effort`` > 0, then refine them for quantization
    at ``bits`` (``refine_tile_latents``)."""
    if not 0 <= steps <= 10_000:
        raise UserError(f"inner steps must be in 0–10000, got {steps}")
    if not 0 <= effort <= 10_000:
        raise UserError(f"effort (refinement steps) must be in 0–10000, got {effort}")
    if effort and bits is None:
        raise ValueError("refining latents needs the bit-width they will be quantized to")
    started = time.perf_counter()
    spec = base.config.data
    patch = spec.patch
    shapes, ranges, tiles = [], [], []
    for point in points:
        check_datapoint(point.values, spec)
        x_range = None if spec.fixed_range else datapoint_range(point.values)
        features = to_features(point.values, spec, x_range)
        check_padding(tuple(point.values.shape), patch)
        tiled = tile_patches(features, patch)
        shapes.append(tuple(features.shape))
        ranges.append(x_range)
        tiles.append(tiled.reshape(tiled.shape[0], -1, tiled.shape[-1]))
    all_tiles = torch.cat(tiles)
    report = None if progress is None else _counter(all_tiles.shape[0] * (2 if effort else 1), progress)
    with torch.enable_grad():
        latents = fit_tile_latents(base, all_tiles, steps, report)
    fitted = FittedLatents(points, shapes, ranges, [t.shape[0] for t in tiles], latents, steps,
                           time.perf_counter() - started, 0, all_tiles)
    return refined(fitted, base, bits, effort, report) if effort else fitted


def refined(fitted: FittedLatents, base: BaseNetwork, bits: int, effort: int,
            progress: Callable[[int], None] | None = None) -> FittedLatents:
    """``fitted`` with its latents refined for ``bits``-bit quantization (``refine_tile_latents``)."""
    started = time.perf_counter()
    with torch.enable_grad():
        latents = refine_tile_latents(base, fitted.features, fitted.latents, quantizer_for(base, bits), effort,
                                      progress)
    return dataclasses.replace(fitted, latents=latents, effort=effort,
                               seconds=fitted.seconds + time.perf_counter() - started)


def quantize_and_pack(fitted: FittedLatents, base: BaseNetwork, bits: int = DEFAULT_BITS,
                      entropy: bool = True) -> list[CoinppResult]:
    """The files and reconstructions of fitted datapoints; ``seconds`` is each one's share of the
    fitting and coding time."""
    started = time.perf_counter()
    quantizer = quantizer_for(base, bits)
    symbols = quantizer.symbols(fitted.latents)
    decoded_latents = quantizer.values(symbols)
    spec = base.config.data
    patch = spec.patch
    results, start = [], 0
    for point, shape, x_range, n in zip(fitted.points, fitted.shapes, fitted.ranges, fitted.tiles):
        payload = symbol_payload(symbols[start:start + n], base, bits, entropy)
        record = record_bytes(base, x_range, point.spacing, payload)
        data = file_bytes(base, point.values.shape, point.dtype, bits, entropy, record)
        # rendered per datapoint, in the decoder's chunks: batched matrix products may round
        # differently, and the reconstruction must be exactly what decoding the file gives
        rendered = render_tiles(base, decoded_latents[start:start + n])
        features = untile_patches(rendered.reshape(n, *patch, -1), shape)
        reconstruction = from_features(features, spec, point.values.shape[-1], point.dtype, x_range)
        original = to_features(point.values, spec, x_range)
        mse = float(((to_features(reconstruction, spec, x_range) - original) ** 2).mean())
        results.append(CoinppResult(data, reconstruction, psnr_from_mse(mse), n, 0.0,
                                    decoded_latents[start:start + n], record, len(payload), bits))
        start += n
    seconds = (fitted.seconds + time.perf_counter() - started) / max(1, len(results))
    for result in results:
        result.seconds = seconds
    return results


def encode_many(points: list[Datapoint], base: BaseNetwork, bits: int = DEFAULT_BITS, steps: int = DEFAULT_STEPS,
                entropy: bool = True, progress: Callable[[int, int], None] | None = None,
                effort: int = DEFAULT_EFFORT) -> list[CoinppResult]:
    """Encode several datapoints, fitting all their tiles in shared batches; ``progress(done,
    total)`` counts fitted (and refined) tiles."""
    quantizer_for(base, bits)  # refuse an unsupported bit-width before fitting
    return quantize_and_pack(fit_datapoints(points, base, steps, progress, effort, bits), base, bits, entropy)


def encode_within(point: Datapoint, base: BaseNetwork, bits_per_sample: float, steps: int = DEFAULT_STEPS,
                  entropy: bool = True, progress: Callable[[int, int], None] | None = None,
                  effort: int = DEFAULT_EFFORT) -> CoinppResult:
    """Rate-aware bit choice (issue 17): the file with the most latent bits whose whole size, header
    included, is at most ``bits_per_sample`` × the datapoint's samples (bits per pixel for an image).

    The latents are fitted once; each bit-width the base network has statistics for is quantized
    and coded (cheap next to fitting) and the largest that fits is refined (``effort``).  Should
    refining push the file over the budget, the unrefined latents at that bit-width are kept, so
    the result always fits.  A budget that even the fewest bits exceed is a ``UserError``.
    """
    if not (math.isfinite(bits_per_sample) and bits_per_sample > 0):
        raise UserError(f"target rate must be a finite number of bits per sample > 0, got {bits_per_sample}")
    budget = bits_per_sample * math.prod(point.values.shape[:-1]) / 8  # bytes
    widths = [b for b in base.config.codes.bit_widths if b <= 8] if base.config.codes is not None else []
    if not widths:
        raise UserError("this base network has no latent statistics to code with")
    fitted = fit_datapoints([point], base, steps, progress)
    fits = [b for b in widths if len(quantize_and_pack(fitted, base, b, entropy)[0].data) <= budget]
    if not fits:
        smallest = quantize_and_pack(fitted, base, widths[0], entropy)[0]
        raise UserError(f"target {bits_per_sample:g} bits per sample is below what {widths[0]} latent bits need "
                        f"({8 * len(smallest.data) / math.prod(point.values.shape[:-1]):.3f}) for this datapoint")
    bits = max(fits)
    plain = quantize_and_pack(fitted, base, bits, entropy)[0]
    if not effort:
        return plain
    better = quantize_and_pack(refined(fitted, base, bits, effort), base, bits, entropy)[0]
    return better if len(better.data) <= budget else plain


def encode(point: Datapoint, base: BaseNetwork, bits: int = DEFAULT_BITS, steps: int = DEFAULT_STEPS,
           entropy: bool = True, progress: Callable[[int, int], None] | None = None,
           effort: int = DEFAULT_EFFORT) -> CoinppResult:
    return encode_many([point], base, bits, steps, entropy, progress, effort)[0]


def _counter(total: int, progress: Callable[[int, int], None]) -> Callable[[int], None]:
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)
    return step


def default_shape(base: BaseNetwork) -> tuple[int, ...]:
    """The datapoint shape a file need not store: one patch with the base network's channels."""
    return (*base.config.patch, base.config.channels)


def hash_key(base: BaseNetwork) -> bytes:
    return bytes.fromhex(base.hash)


def flags_byte(bits: int, entropy: bool) -> int:
    if not 1 <= bits <= 8:
        raise UserError(f"latent bits must be 1–8, got {bits}")
    return (bits - 1) | (8 if entropy else 0)


def parse_flags(flags: int, source: str) -> tuple[int, bool]:
    if flags >> 4:
        raise FormatError(f"{source}: malformed COIN++ settings (flags {flags:#04x})")
    return (flags & 7) + 1, bool(flags & 8)


def file_bytes(base: BaseNetwork, shape: tuple[int, ...], dtype: str, bits: int, entropy: bool, record: bytes) -> bytes:
    stored_shape = None if tuple(shape) == default_shape(base) else tuple(shape)
    body = hash_key(base)[:HASH_PREFIX_BYTES] + bytes([flags_byte(bits, entropy)]) + record
    return pack(Container("coinpp", base.config.modality, stored_shape, dtype, body), crc_key=hash_key(base))


def record_floats(base: BaseNetwork) -> int:
    """How many float32 settings a datapoint record of this base network starts with."""
    return (0 if base.config.data.fixed_range else 2) + (3 if stores_spacing(base) else 0)


def stores_spacing(base: BaseNetwork) -> bool:
    return modality(base.config.modality).stores_spacing


def base_coordinates(base: BaseNetwork) -> torch.Tensor:
    """One patch's coordinates, on the device the base network's weights are on."""
    return coordinates(base.config.data).to(next(base.model.parameters()).device)


def record_bytes(base: BaseNetwork, x_range, spacing, payload: bytes) -> bytes:
    out = b""
    if not base.config.data.fixed_range:
        out += struct.pack("<2f", *x_range)
    if stores_spacing(base):
        out += struct.pack("<3f", *(spacing or (1.0, 1.0, 1.0)))
    return out + payload


def symbol_payload(symbols: np.ndarray, base: BaseNetwork, bits: int, entropy: bool) -> bytes:
    if entropy:
        return encode_symbols(symbols, symbol_model(base, bits))
    return pack_bits(symbols, bits)


def unpack_symbols(payload: bytes, count: int, base: BaseNetwork, bits: int, entropy: bool, source: str) -> np.ndarray:
    if entropy:
        return decode_symbols(payload, count, symbol_model(base, bits), source)
    return unpack_bits(payload, count, bits, source)


def decode(data: bytes, base: BaseNetwork, source: str = "input", max_samples: int | None = None) -> Datapoint:
    """The datapoint a COIN++ file describes; refuses files made with another base network."""
    codec, modality = peek(data, source)
    if codec != "coinpp":
        raise FormatError(f"{source}: is a {codec} file, not COIN++")
    if modality != base.config.modality:
        raise FormatError(f"{source}: holds {modality} data, but the base network is for {base.config.modality}")
    ours = hash_key(base)[:HASH_PREFIX_BYTES]
    try:
        container = unpack(data, source, crc_key=hash_key(base))
    except FormatError:
        stored = stored_hash_prefix(data)
        if stored is not None and stored != ours:
            raise FormatError(f"{source}: was encoded with base network {stored.hex()}…, not this one "
                              f"({base.hash[:8]}…); decode it with the base network that made it") from None
        raise
    if len(container.body) < HASH_PREFIX_BYTES + 1:
        raise FormatError(f"{source}: COIN++ settings are truncated")
    bits, entropy = parse_flags(container.body[HASH_PREFIX_BYTES], source)
    shape = container.shape or default_shape(base)
    return decode_record(container.body[HASH_PREFIX_BYTES + 1:], shape, container.dtype, base, bits, entropy, source,
                         max_samples)


def made_with(data: bytes, base_hash: str) -> bool:
    """Whether the COIN++ file ``data`` was encoded with the base network of content hash
    ``base_hash`` (hex): its hash byte matches and its checksum, keyed by the whole hash, verifies."""
    key = bytes.fromhex(base_hash)
    if stored_hash_prefix(data) != key[:HASH_PREFIX_BYTES]:
        return False
    try:
        unpack(data, "input", crc_key=key)
    except FormatError:
        return False
    return True


def stored_hash_prefix(data: bytes) -> bytes | None:
    """The base-hash prefix a COIN++ file names, if its header can be read at all."""
    try:
        pos = body_start(data)
    except (FormatError, IndexError):
        return None
    prefix = data[pos:pos + HASH_PREFIX_BYTES]
    return prefix if len(prefix) == HASH_PREFIX_BYTES else None


def decode_record(record: bytes, shape: tuple[int, ...], dtype: str, base: BaseNetwork, bits: int, entropy: bool,
                  source: str, max_samples: int | None = None) -> Datapoint:
    """The datapoint of shape ``shape`` that a datapoint record describes.

    Every length is checked before work that depends on it: the shape against the output cap
    (``max_samples``, see ``codecs.base.check_output_samples``) and the payload against the
    least the symbol count needs, so a few bytes cannot demand a huge rendering."""
    patch = base.config.patch
    channels = base.config.channels
    if len(shape) != len(patch) + 1 or shape[-1] not in (1, channels):
        raise FormatError(f"{source}: data shape {shape} does not fit this base network")
    floats = record_floats(base)
    if len(record) < 4 * floats:
        raise FormatError(f"{source}: COIN++ settings are truncated")
    values = struct.unpack(f"<{floats}f", record[:4 * floats])
    has_range = not base.config.data.fixed_range
    x_range = values[:2] if has_range else None
    spacing = values[-3:] if stores_spacing(base) else None
    if not all(math.isfinite(v) for v in values) or (x_range is not None and not x_range[1] > x_range[0]) \
            or (spacing is not None and min(spacing) <= 0):
        raise FormatError(f"{source}: malformed COIN++ settings (bad value range or spacing)")
    if base.config.codes is None or bits not in base.config.codes.symbol_counts:
        raise FormatError(f"{source}: stored with {bits}-bit latents, which this base network has no statistics for")
    quantizer = quantizer_for(base, bits)
    tiles = math.prod(tile_grid(shape, patch))
    samples, padded = math.prod(shape[:-1]), tiles * math.prod(patch)
    check_output_samples(samples, max_samples, source, f"the {base.config.modality} {shape}")
    if padded > 2 * samples:  # a thin shape padded out to whole patches: the patches are the work
        check_output_samples(padded, max_samples, source, f"the {tiles} patches covering {shape}")
    count = tiles * base.model.latent_dim
    symbols = unpack_symbols(record[4 * floats:], count, base, bits, entropy, source)
    latents = quantizer.values(symbols.reshape(tiles, base.model.latent_dim))
    rendered = render_tiles(base, latents)
    features = untile_patches(rendered.reshape(tiles, *patch, channels), (*shape[:-1], channels))
    values = from_features(features, base.config.data, shape[-1], dtype, x_range)
    return Datapoint(values, dtype, spacing)


class CoinPP(Codec):
    """COIN++ behind the common interface: ``CoinPP(base, bits=5).compress(x)`` for a canonical
    array of the base network's modality (or a ``Datapoint``, to keep a volume's voxel size)."""

    name, label, modality, suffix = "coinpp", "COIN++", "any", ".mcz"

    def __init__(self, base: BaseNetwork, bits: int = DEFAULT_BITS, steps: int = DEFAULT_STEPS, entropy: bool = True,
                 *, effort: int = DEFAULT_EFFORT, max_samples: int | None = None,
                 progress: Callable[[int, int], None] | None = None, bits_per_sample: float | None = None):
        self.base, self.bits, self.steps, self.entropy, self.max_samples = base, bits, steps, entropy, max_samples
        self.effort = effort
        self.progress = progress  # (tiles fitted, tiles in all)
        self.bits_per_sample = bits_per_sample  # a rate budget: picks the bits per datapoint (encode_within)

    def compress(self, x: np.ndarray | Datapoint) -> Encoded:
        point = x if isinstance(x, Datapoint) else Datapoint(x, container_dtype(x))
        if self.bits_per_sample is None:
            result = encode(point, self.base, self.bits, self.steps, self.entropy, self.progress, self.effort)
        else:
            result = encode_within(point, self.base, self.bits_per_sample, self.steps, self.entropy, self.progress,
                                   self.effort)
        return Encoded(result.data, result.reconstruction,
                       {"psnr": result.psnr, "encode_seconds": result.seconds, "tiles": result.tiles,
                        "payload_bytes": result.payload_bytes, "bits": result.bits})

    def encode(self, x: np.ndarray | Datapoint) -> bytes:
        return self.compress(x).data

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        return decode(data, self.base, source, self.max_samples).values

    @classmethod
    def decode_file(cls, data: bytes, source: str, *, base, scale: float = 1.0, region=None,
                    max_samples: int | None = None, max_macs: int | None = None,
                    device: str | torch.device = "cpu") -> Datapoint:
        """The datapoint in a COIN++ ``.mcz`` file; ``base`` is the base network or a function
        that loads it (called only now, so a COIN file never loads one).  Rendered on ``device``."""
        if scale != 1.0 or region is not None or max_macs is not None:
            raise UserError("--scale, --region and --max-work apply to COIN images; this is a COIN++ file")
        base = base() if callable(base) else base
        return decode(data, on_device(base, device), source, max_samples)


def on_device(base: BaseNetwork, device: str | torch.device) -> BaseNetwork:
    """``base`` with its weights on ``device`` (the same object when they already are)."""
    device = torch.device(device)
    if next(base.model.parameters()).device == device:
        return base
    moved = BaseNetwork(copy.deepcopy(base.model).to(device), base.config)
    moved.__dict__["hash"] = base.hash  # the same weights: no need to hash them again
    return moved


def container_dtype(x: np.ndarray) -> str:
    """The container dtype a canonical array is stored as: its own integer type, else float32."""
    return x.dtype.name if x.dtype.name in ("uint8", "uint16", "int16") else "float32"
