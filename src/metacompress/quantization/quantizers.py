"""Uniform quantizers (thesis §2.2.2, Eqs. 2.3–2.7) on torch's fake-quantization ops.

A grid is ``bits`` and a ``kind``:

* ``signed`` — symmetric around zero, integers in [−2^(b−1), 2^(b−1) − 1], zero-point 0 (Eq. 2.3);
* ``unsigned`` — integers in [0, 2^b − 1], zero-point 0, for non-negative tensors such as ReLU
  outputs (Eq. 2.5);
* ``asymmetric`` — integers in [0, 2^b − 1] with an integer zero-point z so that real 0 is exactly
  representable (Eqs. 2.6–2.7).

Scales are per tensor or per channel (``axis``). Rounding is to nearest; the gradient is the
straight-through estimator inside the grid and zero where the value was clamped (torch's
fake-quant backward), so the same call serves post-training quantization and STE training.
"""

from dataclasses import dataclass

import torch

from metacompress.errors import UserError

KINDS = ("signed", "unsigned", "asymmetric")
MIN_BITS, MAX_BITS = 2, 16


@dataclass(frozen=True)
class Grid:
    bits: int
    kind: str = "signed"

    def __post_init__(self):
        if not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise UserError(f"bit-width must be an integer from {MIN_BITS} to {MAX_BITS}, got {self.bits!r}")
        if self.kind not in KINDS:
            raise UserError(f"unknown quantizer kind {self.kind!r} (choose from {', '.join(KINDS)})")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.kind == "signed" else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.kind == "signed" else 2 ** self.bits - 1


@dataclass(frozen=True)
class QuantParams:
    """A grid placed on the real line: x_quant = scale · (clamp(round(x / scale) + zero_point) − zero_point)."""

    grid: Grid
    scale: torch.Tensor  # () per tensor, (channels,) per channel
    zero_point: torch.Tensor  # int32, same shape as scale
    axis: int | None = None


def params_for_range(grid: Grid, low: torch.Tensor, high: torch.Tensor, axis: int | None = None) -> QuantParams:
    """The grid's scale (and zero-point) covering [low, high] (tensors: one entry per channel or scalar).

    signed: s = max(|low|, |high|) / (2^(b−1) − 1); unsigned: s = high / (2^b − 1) (low must be ≥ 0);
    asymmetric: the range is widened to contain 0, s = (high − low) / (2^b − 1), z = round(−low / s).
    """
    low, high = (t.to(torch.float32) if isinstance(t, torch.Tensor) else torch.tensor(t, dtype=torch.float32)
                 for t in (low, high))  # tensors stay on their device
    tiny = torch.finfo(torch.float32).tiny
    if grid.kind == "signed":
        scale = torch.maximum(low.abs(), high.abs()) / grid.qmax
        zero = torch.zeros_like(scale, dtype=torch.int32)
    elif grid.kind == "unsigned":
        if (low < 0).any():
            raise UserError("an unsigned grid cannot represent negative values; use a signed or asymmetric grid")
        scale = high / grid.qmax
        zero = torch.zeros_like(scale, dtype=torch.int32)
    else:
        low, high = torch.clamp(low, max=0), torch.clamp(high, min=0)
        scale = (high - low) / grid.qmax
        zero = torch.round(-low / scale.clamp(min=tiny)).clamp(grid.qmin, grid.qmax).to(torch.int32)
    # a constant-zero channel gets scale 1 (anything works; it quantizes to 0 exactly)
    scale = torch.where(scale > tiny, scale, torch.ones_like(scale))
    return QuantParams(grid, scale, zero, axis)


def fake_quantize(x: torch.Tensor, q: QuantParams) -> torch.Tensor:
    """Round ``x`` onto the grid and map back to reals (differentiable with the clipped STE)."""
    if q.axis is None:
        return torch.fake_quantize_per_tensor_affine(x, q.scale.to(x.device, torch.float32),
                                                     q.zero_point.to(x.device), q.grid.qmin, q.grid.qmax)
    return torch.fake_quantize_per_channel_affine(x, q.scale.to(x.device, torch.float32),
                                                  q.zero_point.to(x.device), q.axis % x.ndim,
                                                  q.grid.qmin, q.grid.qmax)


def to_integers(x: torch.Tensor, q: QuantParams) -> torch.Tensor:
    """The integer codes of ``x`` on the grid (what an integer kernel would store)."""
    shape = [1] * x.ndim
    if q.axis is not None:
        shape[q.axis % x.ndim] = -1
    scale, zero = q.scale.to(x.device).view(shape), q.zero_point.to(x.device).view(shape)
    return torch.clamp(torch.round(x / scale) + zero, q.grid.qmin, q.grid.qmax).to(torch.int32)


def channel_extremes(x: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) of the whole tensor, or of every slice along ``axis``."""
    x = x.detach()
    if axis is None:
        return x.min(), x.max()
    flat = x.movedim(axis, 0).flatten(1)
    return flat.min(1).values, flat.max(1).values


def minmax_params(x: torch.Tensor, grid: Grid, axis: int | None = None) -> QuantParams:
    """Cover the tensor's full observed range."""
    return params_for_range(grid, *channel_extremes(x, axis), axis)


def mse_params(x: torch.Tensor, grid: Grid, axis: int | None = None, candidates: int = 100) -> QuantParams:
    """The clipped range α·[min, max], α ∈ (0, 1], with the least mean squared quantization error
    (per channel when ``axis`` is given; Nagel et al. 2021 §3.4): a grid search over α."""
    low, high = channel_extremes(x, axis)
    best_error = best = None
    for alpha in torch.linspace(1.0 / candidates, 1.0, candidates, device="cpu").to(low.device):  # same α everywhere
        q = params_for_range(grid, alpha * low, alpha * high, axis)
        diff = (fake_quantize(x.detach(), q) - x.detach()) ** 2
        error = diff.mean() if axis is None else diff.movedim(axis, 0).flatten(1).mean(1)
        if best is None:
            best_error, best = error, q
            continue
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best = QuantParams(grid, torch.where(better, q.scale, best.scale),
                           torch.where(better, q.zero_point, best.zero_point), axis)
    return best


RANGE_METHODS = {"minmax": minmax_params, "mse": mse_params}


def tensor_params(x: torch.Tensor, grid: Grid, method: str = "minmax", axis: int | None = None) -> QuantParams:
    try:
        return RANGE_METHODS[method](x, grid, axis)
    except KeyError:
        raise UserError(f"unknown range method {method!r} (choose from {', '.join(RANGE_METHODS)})") from None
