"""Fixed-size patches of large datapoints, as COIN++ uses them.

COIN++ fits one small latent vector per fixed-size patch (32×32 image patches, 1-D audio patches
of a few hundred samples, 16³ volume patches), so the base network always sees the same
coordinate grid whatever the datapoint's size.  At test time a datapoint is cut into
non-overlapping tiles and stitched back after decoding; during training random patches are drawn.

Data tensors are channels-last: 1-D ``(L, C)``, 2-D ``(H, W, C)``, 3-D ``(D, H, W, C)``; a patch
size is a tuple with one entry per spatial axis.

Padding rule.  When a spatial axis is not a multiple of the patch size it is padded at the end
(right/bottom/back) with reflect padding (mirror without repeating the edge sample: ``a b c | b a``).
Where the pad is as long as the axis or longer (a 5-pixel-wide image with 32-pixel patches), the
reflection is repeated: the axis is extended periodically with period 2(n − 1) —
``a b c | b a b c b a …`` — exactly what ``np.pad(mode="reflect")`` does; an axis of a single
sample is repeated.  This is computed with index gathers, so it works for every dtype and device
and copies values bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from metacompress.errors import UserError
from metacompress.modalities.grid import grid_coordinates


# --- argument checks -------------------------------------------------------------------------


def _check_patch(patch: Sequence[int], n_axes: int | None = None) -> tuple[int, ...]:
    """The patch size as a tuple of positive ints, of ``n_axes`` entries when that is given."""
    try:
        sizes = tuple(patch)
    except TypeError:
        raise UserError(f"patch size must be a tuple of ints, got {patch!r}") from None
    if not sizes or not all(isinstance(p, int) and not isinstance(p, bool) for p in sizes):
        raise UserError(f"patch size must be a non-empty tuple of ints, got {patch!r}")
    if any(p < 1 for p in sizes):
        raise UserError(f"patch sizes must be positive, got {sizes}")
    if n_axes is not None and len(sizes) != n_axes:
        raise UserError(
            f"patch size {sizes} has {len(sizes)} axes but the data has {n_axes} spatial axes"
        )
    return sizes


def _check_data(x: torch.Tensor, patch: Sequence[int]) -> tuple[int, ...]:
    """Check that ``x`` is channels-last with ≥ 1 spatial axis matching ``patch``; return patch."""
    if not isinstance(x, torch.Tensor):
        raise UserError(f"data must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise UserError(
            f"data must have shape (*spatial, C) with at least 2 dims, got shape {tuple(x.shape)}"
        )
    if any(n < 1 for n in x.shape[:-1]):
        raise UserError(f"data spatial sizes must be positive, got shape {tuple(x.shape)}")
    return _check_patch(patch, x.dim() - 1)


def _check_shape(shape: Sequence[int], what: str = "shape") -> tuple[int, ...]:
    """A shape as a tuple of ints, spatial entries positive."""
    try:
        dims = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a tuple of ints, got {shape!r}") from None
    if any(n < 0 for n in dims):
        raise UserError(f"{what} must not have negative sizes, got {dims}")
    return dims


# --- padding ---------------------------------------------------------------------------------


def _reflect_indices(n: int, total: int, device: torch.device) -> torch.Tensor:
    """Source indices of an axis of ``n`` samples reflect-extended to ``total`` samples.

    Periodic with period 2(n − 1) (repeated reflection, as ``np.pad(mode="reflect")``), so pads
    longer than the axis are fine; a one-sample axis just repeats its sample.
    """
    i = torch.arange(total, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    m = i % period
    return torch.where(m < n, m, period - m)


def _pad_end(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Reflect-pad each spatial axis of ``x`` (*spatial, C) at its end up to ``sizes``."""
    for axis, target in enumerate(sizes):
        n = x.shape[axis]
        if target > n:
            x = x.index_select(axis, _reflect_indices(n, target, x.device))
    return x


# --- tiling ----------------------------------------------------------------------------------


def tile_grid(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Number of tiles along each spatial axis: ceil(size / patch) per axis.

    ``shape`` is the datapoint's channels-last shape ``(*spatial, C)`` (as ``x.shape``, and as
    ``untile_patches`` takes it); a spatial-only shape of ``len(patch)`` entries is accepted too.
    """
    sizes = _check_patch(patch)
    dims = _check_shape(shape)
    if len(dims) == len(sizes) + 1:
        dims = dims[:-1]
    elif len(dims) != len(sizes):
        raise UserError(
            f"shape {dims} does not match patch size {sizes}: expected {len(sizes)} spatial axes"
            " (plus channels)"
        )
    if any(n < 1 for n in dims):
        raise UserError(f"spatial sizes must be positive, got {dims}")
    return tuple(-(-n // p) for n, p in zip(dims, sizes))


def tile_patches(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """Cut ``x`` (*spatial, C) into non-overlapping tiles: ``(n_patches, *patch, C)``.

    Tiles are in row-major order (last spatial axis fastest).  Each axis is first reflect-padded at
    its end to a multiple of the patch size (see the module docstring for short axes), so every
    tile has the full patch size the base network was trained on.
    """
    sizes = _check_data(x, patch)
    grid = tile_grid(x.shape, sizes)
    k = len(sizes)
    x = _pad_end(x, [g * p for g, p in zip(grid, sizes)])
    # (g1·p1, …, gk·pk, C) -> (g1, p1, …, gk, pk, C)
    split = [d for g, p in zip(grid, sizes) for d in (g, p)]
    x = x.reshape(*split, x.shape[-1])
    # -> (g1, …, gk, p1, …, pk, C): tile indices first, so a reshape gives row-major tile order
    order = [2 * a for a in range(k)] + [2 * a + 1 for a in range(k)] + [2 * k]
    x = x.permute(*order)
    # -> (g1·…·gk, p1, …, pk, C)
    return x.reshape(math.prod(grid), *sizes, x.shape[-1])


def untile_patches(patches: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Stitch tiles from ``tile_patches`` back together and crop to ``shape`` (*spatial, C).

    The exact inverse of ``tile_patches``: ``untile_patches(tile_patches(x, p), x.shape)`` equals
    ``x`` bit for bit, since only reshapes, permutes and slicing are involved.
    """
    if not isinstance(patches, torch.Tensor):
        raise UserError(f"patches must be a torch.Tensor, got {type(patches).__name__}")
    dims = _check_shape(shape)
    if len(dims) < 2:
        raise UserError(f"shape must be (*spatial, C) with at least 2 dims, got {dims}")
    k = len(dims) - 1
    if patches.dim() != k + 2:
        raise UserError(
            f"patches of shape {tuple(patches.shape)} do not match shape {dims}: expected"
            f" (n_patches, {k} patch axes, C)"
        )
    sizes = _check_patch(tuple(patches.shape[1:-1]), k)
    grid = tile_grid(dims, sizes)
    if patches.shape[0] != math.prod(grid) or patches.shape[-1] != dims[-1]:
        raise UserError(
            f"patches of shape {tuple(patches.shape)} do not tile shape {dims}: expected"
            f" {math.prod(grid)} patches of {dims[-1]} channels"
        )
    # (n, p1, …, pk, C) -> (g1, …, gk, p1, …, pk, C)
    x = patches.reshape(*grid, *sizes, dims[-1])
    # -> (g1, p1, …, gk, pk, C): interleave each tile axis with its within-patch axis
    order = [a for i in range(k) for a in (i, k + i)] + [2 * k]
    x = x.permute(*order)
    # -> (g1·p1, …, gk·pk, C), then crop the padding off
    x = x.reshape(*[g * p for g, p in zip(grid, sizes)], dims[-1])
    return x[tuple(slice(0, n) for n in dims[:-1])]


# --- random patches for training --------------------------------------------------------------


def random_patches(
    x: torch.Tensor, patch: Sequence[int], count: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` patches at uniformly random positions inside ``x``: ``(count, *patch, C)``.

    Training samples patches anywhere (not only on the tile grid) so the latents learn every
    position.  Patches lie fully inside ``x``; an axis shorter than the patch is first padded to
    the patch size with the same reflect rule as ``tile_patches``.  Offsets are drawn from
    ``generator``, so the same seed gives the same patches.
    """
    sizes = _check_data(x, patch)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise UserError(f"patch count must be a non-negative int, got {count!r}")
    if not isinstance(generator, torch.Generator):
        raise UserError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    x = _pad_end(x, [max(n, p) for n, p in zip(x.shape[:-1], sizes)])
    k = len(sizes)
    index = []
    for axis, p in enumerate(sizes):
        start = torch.randint(
            0, x.shape[axis] - p + 1, (count,), generator=generator, device=generator.device
        ).to(x.device)
        # (count, p) indices along this axis, shaped (count, 1, …, p, …, 1) to broadcast
        idx = start[:, None] + torch.arange(p, device=x.device)
        view = [count] + [p if a == axis else 1 for a in range(k)]
        index.append(idx.reshape(view))
    # advanced indexing on the spatial axes: (count, p1, …, pk, C)
    return x[tuple(index)]


# --- coordinates -----------------------------------------------------------------------------


def patch_coordinates(patch: Sequence[int], scale: float = 1.0) -> torch.Tensor:
    """Coordinates of the points of one patch: ``(prod(patch), n_axes)``, last axis fastest.

    Each axis spans [−scale, scale] with both ends included (a one-point axis sits at 0).  Every
    patch shares these coordinates: position in the datapoint is carried by the latent, not the
    input.  Audio uses scale 5, giving the base network's first layer a wider input range.
    """
    sizes = _check_patch(patch)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise UserError(f"coordinate scale must be a number, got {scale!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise UserError(f"coordinate scale must be positive and finite, got {scale}")
    axes = [_axis(n, float(scale)) for n in sizes]
    return grid_coordinates(axes)


def _axis(n: int, scale: float) -> torch.Tensor:
    """``n`` evenly spaced float32 points over [−scale, scale], ends exact; 0 when n == 1."""
    if n == 1:
        return torch.zeros(1)
    t = torch.linspace(-scale, scale, n, dtype=torch.float64)
    return t.float()
