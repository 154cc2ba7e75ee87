"""COIN (thesis §5.1): an image is stored as the weights of a small SIREN overfitted to it.

Encoding fits ``Siren(2 → width × depth → C)`` to the pixels with Adam (lr 2e-4, full batch,
MSE), keeps the weights of the iteration with the best 8-bit PSNR, and writes them as fp16 or as
b-bit uniform symbols.  Decoding evaluates the network on a pixel grid — at any resolution, or
only on a region.

File body (after the ``.mcz`` header of ``codecs.base``, which stores the image shape)::

    depth    uvarint   sine layers (1–64)
    width    uvarint   units per layer (1–4096)
    bits     1 byte    16: fp16 weights; 2–15: uniform symbols
    w0       2 bytes   ω₀ as fp16
    payload  16 bits: every tensor in state-dict order as little-endian fp16; b bits: per tensor
             (low, step) as two float32, then all symbols bit-packed at b bits, most significant
             bit first, padded with zero bits to a byte

The payload length follows from the architecture, so it is checked, not stored.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from metacompress.codecs.base import (DECODE_MACS_PER_BYTE, Container, check_decode_work, check_output_samples,
                                      encode_uvarint, pack, read_uvarint, unpack)
from metacompress.codecs.bitpack import pack_bits, unpack_bits
from metacompress.codecs.codec import Codec, Encoded
from metacompress.errors import FormatError, UserError
from metacompress.inr.siren import Siren
from metacompress.modalities.image import (Region, check_region, features_to_image, image_features,
                                           pixel_coordinates, scaled_size)
from metacompress.metrics import psnr, psnr_from_mse
from metacompress.modalities.spec import Datapoint
from metacompress.rng import keeps_global_rng

# Thesis Appendix C.2: (sine layers, width) per bpp for 768×512 RGB Kodak images at 16 bits.
KODAK_ARCHITECTURES = {0.07: (5, 20), 0.15: (5, 30), 0.3: (10, 28), 0.6: (10, 40), 1.2: (13, 49)}
KODAK_PIXELS = 768 * 512
MAX_DEPTH, MAX_WIDTH = 64, 4096
MAX_BPP = 64.0  # above 8 bits per channel of RGBA there is nothing left to gain
# A COIN file is plausible only if its network has at least one parameter per this many pixels:
# 18× below the thesis' lowest rate (0.07 bpp on Kodak: 1,720 parameters, 229 pixels each).  A
# 16-byte file cannot then claim a gigapixel image; the encoder refuses to write such files.
MAX_PIXELS_PER_PARAMETER = 4096
log = logging.getLogger(__name__)
RENDER_CHUNK = 1 << 16  # coordinates per forward pass when decoding: bounds decoder memory
FIT_CHUNK = 1 << 14  # pixels per forward/backward pass when fitting (see fit_siren)


@dataclass
class CoinConfig:
    bpp: float = 0.3  # target rate; picks the architecture unless depth and width are given
    bits: int = 16  # 16: fp16 weights (thesis §5.3.1); 2–15: uniform, clipped at k std (C.3.1)
    iterations: int = 50_000  # thesis C.2
    lr: float = 2e-4  # thesis C.2
    w0: float = 30.0  # Sitzmann et al. 2020
    patience: int | None = None  # stop after this many iterations without a new best PSNR
    depth: int | None = None
    width: int | None = None
    seed: int = 0


@dataclass
class CoinResult:
    data: bytes  # the .mcz file
    model: Siren  # the network the decoder will rebuild (weights after quantization)
    fitted_model: Siren  # the best float network, before quantization
    depth: int
    width: int
    psnr: float  # of the decoded 8-bit image
    best_fit_psnr: float  # of the float network before quantization, 8-bit rounded
    best_iteration: int
    iterations_run: int
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)  # (iteration, 8-bit PSNR)
    reconstruction: np.ndarray | None = field(default=None, repr=False)  # exactly what decoding gives


@keeps_global_rng
def encode_image(image: np.ndarray, config: CoinConfig = CoinConfig(),
                 progress: Callable[[int, float, float], None] | None = None,
                 device: str | torch.device = "cpu") -> CoinResult:
    """Fit, quantize and serialize one uint8 (H, W, C) image; ``progress(iteration, psnr, best)``.

    The network is fitted on ``device``; the reconstruction is rendered on the CPU, as ``decode``
    renders by default, so it is exactly what decoding the file gives there."""
    height, width_px, channels = check_image(image)
    check_bits(config.bits)
    depth, width = (config.depth, config.width) if config.depth is not None and config.width is not None else \
        architecture_for(config.bpp, height, width_px, channels, config.bits)
    if not (1 <= depth <= MAX_DEPTH and 1 <= width <= MAX_WIDTH):
        raise UserError(f"COIN networks have 1–{MAX_DEPTH} sine layers of 1–{MAX_WIDTH} units, got {depth}×{width}")
    check_plausible(height * width_px, siren_parameters(depth, width, channels), UserError,
                    f"a {depth}×{width} SIREN for a {width_px}×{height} image")
    torch.manual_seed(config.seed)
    model = Siren(2, width, depth, channels, w0=config.w0).to(device)
    coords, target = pixel_coordinates(height, width_px).to(device), image_features(image).to(device)
    started = time.perf_counter()
    fit = fit_siren(model, coords, target, config.iterations, config.lr, config.patience, progress)
    model.load_state_dict(fit.best_state)
    data = coin_file(model, image.shape, config.bits)
    decoded_model = model_from_container(unpack(data))
    if height * width_px * model_parameters(model) > DECODE_MACS_PER_BYTE * len(data):
        log.warning("this %d-byte file needs more multiply-accumulates to decode than the default budget allows; "
                    "decode it with --max-work 0", len(data))
    decoded = render(decoded_model, height, width_px)
    return CoinResult(data, decoded_model, model, depth, width, psnr(image, decoded), fit.best_psnr, fit.best_iteration,
                      fit.iterations_run, time.perf_counter() - started, fit.history, decoded)


def coin_file(model: Siren, shape: tuple[int, int, int], bits: int) -> bytes:
    """The .mcz bytes storing ``model`` as the COIN code of an image of ``shape`` (H, W, C)."""
    depth, width = len(model.hidden), model.last.in_features
    container = Container("coin", "image", tuple(shape), "uint8",
                          coin_config_bytes(depth, width, bits, model.w0) + quantize_weights(model, bits))
    return pack(container)


@dataclass
class FitResult:
    best_state: dict
    best_psnr: float
    best_iteration: int
    iterations_run: int
    history: list[tuple[int, float]]


def fit_siren(model: Siren, coords: torch.Tensor, target: torch.Tensor, iterations: int, lr: float,
              patience: int | None = None, progress: Callable | None = None,
              history_every: int | None = None) -> FitResult:
    """Full-batch Adam on the MSE; returns the weights with the best PSNR of the 8-bit rounded output.

    The batch is every pixel, but the forward/backward runs over FIT_CHUNK pixels at a time and
    accumulates the gradient: the same full-batch gradient, ~3× faster on a CPU than one pass
    (measured on a 768×512 image: multi-MB activations are then reused, not re-faulted).
    The PSNR of each iteration comes from the pass that also gives the gradient, so tracking the
    best weights costs no extra evaluation.
    """
    if iterations < 1:
        raise UserError(f"iterations must be ≥ 1, got {iterations}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history_every = history_every or max(1, iterations // 200)
    chunks = list(zip(coords.split(FIT_CHUNK), target.split(FIT_CHUNK)))
    values = target.numel()
    best_psnr, best_iteration, best_state, history = -math.inf, 0, None, []
    iteration = 0
    for iteration in range(1, iterations + 1):
        optimizer.zero_grad(set_to_none=True)
        rounded_error = 0.0
        for x, y in chunks:
            output = model(x)
            (F.mse_loss(output, y, reduction="sum") / values).backward()
            with torch.no_grad():
                rounded = torch.round(output.clamp(0.0, 1.0) * 255.0) / 255.0
                rounded_error += F.mse_loss(rounded, y, reduction="sum").item()
        current = psnr_from_mse(max(rounded_error / values, 1e-12))
        if current > best_psnr:
            best_psnr, best_iteration = current, iteration
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if iteration % history_every == 0 or iteration == 1:
            history.append((iteration, current))
        if progress is not None:
            progress(iteration, current, best_psnr)
        if patience is not None and iteration - best_iteration >= patience:
            break
        optimizer.step()
    return FitResult(best_state, best_psnr, best_iteration, iteration, history)


def architecture_for(bpp: float, height: int, width: int, channels: int, bits: int) -> tuple[int, int]:
    """(depth, width) of the SIREN for a rate target.

    Kodak-sized RGB images at 16 bits use the thesis' searched table (C.2) at its five rates.
    Otherwise: the depth the thesis' searches found best for a similar parameter budget (2 sine
    layers below 1k parameters, as for CIFAR-10 in C.3.1; 5 below 5.5k; 10 below 22k; 13 above),
    and the widest network whose file, header included, stays within the target.
    """
    if not (math.isfinite(bpp) and 0 < bpp <= MAX_BPP):
        raise UserError(f"--bpp must be a rate in (0, {MAX_BPP}] bits per pixel, got {bpp}")
    pixels = height * width
    if pixels == KODAK_PIXELS and channels == 3 and bits == 16:
        for rate, arch in KODAK_ARCHITECTURES.items():
            if math.isclose(bpp, rate):
                return arch
    budget = bpp * pixels / bits
    depth = 2 if budget < 1_000 else 5 if budget < 5_500 else 10 if budget < 22_000 else 13

    def fits(w: int) -> bool:
        return 8 * coin_file_size(height, width, channels, depth, w, bits) / pixels <= bpp

    if not fits(1):
        raise UserError(f"a {bpp} bpp target is too small for a {width}×{height} image: even a width-1 "
                        f"SIREN needs {8 * coin_file_size(height, width, channels, depth, 1, bits) / pixels:.3g} bpp")
    lo, hi = 1, MAX_WIDTH
    while lo < hi:  # the widest width that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return depth, lo


def coin_file_size(height: int, width_px: int, channels: int, depth: int, width: int, bits: int) -> int:
    """Bytes of the .mcz file COIN writes for this architecture."""
    payload = payload_size(siren_shapes(depth, width, channels), bits)
    container = Container("coin", "image", (height, width_px, channels), "uint8",
                          coin_config_bytes(depth, width, bits, 30.0))
    return len(pack(container)) + payload


def check_image(image: np.ndarray) -> tuple[int, int, int]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise UserError("COIN encodes 8-bit images: a uint8 array of shape (height, width, channels)")
    height, width, channels = image.shape
    if height < 1 or width < 1:
        raise UserError(f"cannot encode an empty image ({width}×{height})")
    if channels not in (1, 2, 3, 4):
        raise UserError(f"images have 1–4 channels (grey, grey+alpha, RGB, RGBA), got {channels}")
    return height, width, channels


def check_bits(bits: int) -> None:
    if not 2 <= bits <= 16:
        raise UserError(f"COIN stores weights with 2–16 bits, got {bits}")


# --- the payload: weights as fp16, or as b-bit uniform symbols -------------------------------------

def siren_shapes(depth: int, width: int, channels: int) -> list[tuple[int, ...]]:
    """Shapes of the SIREN's tensors in state-dict order."""
    dims = [2] + [width] * depth
    shapes = []
    for a, b in zip(dims[:-1], dims[1:]):
        shapes += [(b, a), (b,)]
    return shapes + [(channels, width), (channels,)]


def siren_parameters(depth: int, width: int, channels: int) -> int:
    return sum(math.prod(s) for s in siren_shapes(depth, width, channels))


def check_plausible(pixels: int, parameters: int, error: type, what: str) -> None:
    if pixels > MAX_PIXELS_PER_PARAMETER * parameters:
        raise error(f"{what} is implausible: {parameters} parameters for {pixels:,} pixels "
                    f"(at most {MAX_PIXELS_PER_PARAMETER} pixels per parameter); use a larger network")


def payload_size(shapes: list[tuple[int, ...]], bits: int) -> int:
    count = sum(math.prod(s) for s in shapes)
    if bits == 16:
        return 2 * count
    return 8 * len(shapes) + math.ceil(count * bits / 8)


def clipping_stds(bits: int) -> float:
    """k = 3 + 3(b − 1)/15 standard deviations (thesis C.3.1): wider ranges for finer grids."""
    return 3.0 + 3.0 * (bits - 1) / 15.0


def quantize_weights(model: Siren, bits: int) -> bytes:
    """The payload for ``model``'s weights; each weight matrix and each bias has its own range."""
    tensors = [t.detach().reshape(-1).double().cpu().numpy() for t in model.state_dict().values()]
    if bits == 16:
        return np.concatenate(tensors).astype("<f2").tobytes()
    ranges, symbols = bytearray(), []
    for t in tensors:
        low, step = uniform_grid(t, bits)
        ranges += struct.pack("<ff", low, step)
        symbols.append(np.clip(np.round((t - low) / step), 0, 2 ** bits - 1).astype(np.uint16))
    return bytes(ranges) + pack_bits(np.concatenate(symbols), bits)


def uniform_grid(values: np.ndarray, bits: int) -> tuple[float, float]:
    """(lowest level, step) of a 2^bits-level grid over mean ± k·std, both as stored (float32).

    float32, not fp16: with 2^12 levels an fp16 step's rounding error would add up to ~2 steps.
    """
    k = clipping_stds(bits)
    mean, std = float(values.mean()), float(values.std())
    low = max(mean - k * std, float(values.min()))
    high = min(mean + k * std, float(values.max()))
    step = (high - low) / (2 ** bits - 1)
    low32, step32 = np.float32(low), np.float32(step)
    if not step32 > 0:  # a constant tensor: any positive step represents it
        step32 = np.float32(1.0)
    return float(low32), float(step32)


def dequantize_weights(payload: bytes, shapes: list[tuple[int, ...]], bits: int, source: str) -> list[np.ndarray]:
    expected = payload_size(shapes, bits)
    if len(payload) != expected:
        raise FormatError(f"{source}: weight payload is {len(payload)} bytes, the header implies {expected}")
    counts = [math.prod(s) for s in shapes]
    if bits == 16:
        flat = np.frombuffer(payload, dtype="<f2").astype(np.float32)
    else:
        ranges = np.frombuffer(payload[:8 * len(shapes)], dtype="<f4").astype(np.float64).reshape(-1, 2)
        if not np.all(np.isfinite(ranges)):
            raise FormatError(f"{source}: corrupt quantizer ranges")
        symbols = unpack_bits(payload[8 * len(shapes):], sum(counts), bits, source)
        low = np.repeat(ranges[:, 0], counts)
        step = np.repeat(ranges[:, 1], counts)
        flat = (low + symbols * step).astype(np.float32)
    return [a.reshape(s) for a, s in zip(np.split(flat, np.cumsum(counts)[:-1]), shapes)]


# --- the container's config field ------------------------------------------------------------------

def coin_config_bytes(depth: int, width: int, bits: int, w0: float) -> bytes:
    return encode_uvarint(depth) + encode_uvarint(width) + bytes([bits]) + struct.pack("<e", w0)


def parse_coin_config(body: bytes, source: str) -> tuple[int, int, int, float, int]:
    """(depth, width, bits, ω₀, where the payload starts) from the start of a COIN file's body."""
    depth, pos = read_uvarint(body, 0, source)
    width, pos = read_uvarint(body, pos, source)
    if len(body) < pos + 3:
        raise FormatError(f"{source}: COIN settings are truncated")
    bits, (w0,) = body[pos], struct.unpack("<e", body[pos + 1:pos + 3])
    if not (1 <= depth <= MAX_DEPTH and 1 <= width <= MAX_WIDTH and 2 <= bits <= 16 and math.isfinite(w0) and w0 > 0):
        raise FormatError(f"{source}: implausible COIN settings (depth {depth}, width {width}, bits {bits}, ω₀ {w0})")
    return depth, width, bits, float(w0), pos + 3


# --- decoding -----------------------------------------------------------------------------------------

def model_from_container(container: Container, source: str = "input") -> Siren:
    if container.modality != "image" or container.dtype != "uint8" or container.shape is None \
            or len(container.shape) != 3 \
            or not 1 <= container.shape[2] <= 4:
        raise FormatError(f"{source}: COIN stores 8-bit images, but the header says {container.modality} "
                          f"{container.dtype} of shape {container.shape}")
    depth, width, bits, w0, payload_start = parse_coin_config(container.body, source)
    channels = container.shape[2]
    check_plausible(container.shape[0] * container.shape[1], siren_parameters(depth, width, channels), FormatError,
                    f"{source}: a {depth}×{width} network for a {container.shape[1]}×{container.shape[0]} image")
    shapes = siren_shapes(depth, width, channels)
    weights = dequantize_weights(container.body[payload_start:], shapes, bits, source)
    model = Siren(2, width, depth, channels, w0=w0)
    state = dict(zip(model.state_dict().keys(), (torch.from_numpy(w.copy()) for w in weights)))
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def render(model: Siren, height: int, width: int, region: Region | None = None,
           output_size: tuple[int, int] | None = None) -> np.ndarray:
    """The network's 8-bit image of a ``height``×``width`` original, resampled to ``output_size`` and
    cut to ``region`` if given; evaluated in row blocks (on the model's device) so memory stays bounded."""
    device = next(model.parameters()).device
    out_h, out_w = output_size or (height, width)
    x0, y0, x1, y1 = check_region(region, out_h, out_w) if region else (0, 0, out_w, out_h)
    out = np.empty((y1 - y0, x1 - x0, model.last.out_features), dtype=np.uint8)
    rows_per_block = max(1, RENDER_CHUNK // (x1 - x0))
    for r0 in range(y0, y1, rows_per_block):
        r1 = min(r0 + rows_per_block, y1)
        coords = pixel_coordinates(height, width, (x0, r0, x1, r1), (out_h, out_w))
        out[r0 - y0:r1 - y0] = features_to_image(model(coords.to(device)), r1 - r0, x1 - x0)
    return out


def decode_image(data: bytes, scale: float = 1.0, region: Region | None = None, source: str = "input",
                 max_samples: int | None = None, max_macs: int | None = None,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 (H, W, C) from a COIN file, optionally at ``scale``× resolution or only a region of it.

    The output (the scaled image, or the region of it) may have at most ``max_samples`` pixels
    (see ``codecs.base.check_output_samples``) and cost at most ``max_macs`` multiply-accumulates
    (see ``codecs.base.check_decode_work``); everything is checked before the network runs."""
    container = unpack(data, source)
    model = model_from_container(container, source)
    height, width = container.shape[:2]
    out_h, out_w = scaled_size(height, width, scale)
    x0, y0, x1, y1 = check_region(region, out_h, out_w) if region else (0, 0, out_w, out_h)
    what = f"the {out_w}×{out_h} decode" + (" region" if region else "")
    pixels = (x1 - x0) * (y1 - y0)
    check_output_samples(pixels, max_samples, source, what)
    check_decode_work(pixels * model_parameters(model), len(data), max_macs, source, what)
    return render(model.to(device), height, width, region, (out_h, out_w))


def model_parameters(model: Siren) -> int:
    """Multiply-accumulates per rendered pixel, near enough: one per weight."""
    return sum(p.numel() for p in model.parameters())


class Coin(Codec):
    """COIN behind the common interface: ``Coin(CoinConfig(bpp=0.3)).compress(image)``; decoding
    options (resolution, region, the decompression-bomb guards) are the decoder's settings."""

    name, label, modality, suffix = "coin", "COIN", "image", ".mcz"

    def __init__(self, config: CoinConfig = CoinConfig(), *, scale: float = 1.0, region: Region | None = None,
                 max_samples: int | None = None, max_macs: int | None = None,
                 progress: Callable[[int, float, float], None] | None = None, device: str | torch.device = "cpu"):
        self.config, self.progress, self.device = config, progress, device
        self.scale, self.region, self.max_samples, self.max_macs = scale, region, max_samples, max_macs

    def compress(self, x: np.ndarray) -> Encoded:
        result = encode_image(x, self.config, self.progress, self.device)
        return Encoded(result.data, result.reconstruction,
                       {"psnr": result.psnr, "encode_seconds": result.seconds, "depth": result.depth,
                        "width": result.width, "best_iteration": result.best_iteration,
                        "iterations_run": result.iterations_run})

    def encode(self, x: np.ndarray) -> bytes:
        return self.compress(x).data

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        return decode_image(data, self.scale, self.region, source, self.max_samples, self.max_macs, self.device)

    @classmethod
    def decode_file(cls, data: bytes, source: str, *, scale: float = 1.0, region: Region | None = None,
                    max_samples: int | None = None, max_macs: int | None = None, base=None,
                    device: str | torch.device = "cpu") -> Datapoint:
        """The image in a COIN ``.mcz`` file (``base`` is for COIN++ files and not used)."""
        coin = cls(scale=scale, region=region, max_samples=max_samples, max_macs=max_macs, device=device)
        return Datapoint(coin.decode(data, source), "uint8")
