"""Tiling, untiling, random patches and patch coordinates (metacompress.modalities.patches)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metacompress.errors import UserError
from metacompress.modalities.patches import (
    patch_coordinates,
    random_patches,
    tile_grid,
    tile_patches,
    untile_patches,
)

FAST = settings(max_examples=25, deadline=None)


def encoded(shape: tuple[int, ...]) -> torch.Tensor:
    """A float64 tensor whose value encodes its own index: digits base 1000, channel last.

    x[i, j, c] = i·10⁶ + j·10³ + c, so any sub-block reveals where it came from.
    """
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    value = torch.zeros(shape, dtype=torch.float64)
    for axis, g in enumerate(grids):
        value = value + g * 1000.0 ** (len(shape) - 1 - axis)
    return value


def decode(value: torch.Tensor, n_dims: int) -> tuple[int, ...]:
    """The index encoded by ``encoded`` (inverse of its digits)."""
    v = int(value.item())
    digits = []
    for _ in range(n_dims):
        digits.append(v % 1000)
        v //= 1000
    return tuple(reversed(digits))


# --- round trips -------------------------------------------------------------------------------

CASES = [
    # (shape, patch): odd sizes, smaller than the patch, exact multiples; C = 1 and 3
    ((7, 1), (3,)),
    ((1600, 3), (400,)),
    ((5, 1), (200,)),
    ((1, 3), (4,)),
    ((17, 23, 3), (8, 8)),
    ((5, 3, 1), (32, 32)),
    ((64, 32, 3), (32, 32)),
    ((33, 1, 3), (32, 32)),
    ((9, 5, 7, 1), (4, 4, 4)),
    ((3, 2, 1, 3), (16, 16, 16)),
    ((32, 16, 16, 1), (16, 16, 16)),
]


@pytest.mark.parametrize(("shape", "patch"), CASES)
def test_round_trip_is_exact(shape, patch):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    tiles = tile_patches(x, patch)
    assert tiles.shape == (math.prod(tile_grid(shape, patch)), *patch, shape[-1])
    back = untile_patches(tiles, x.shape)
    assert back.shape == x.shape
    assert torch.equal(back, x)


@FAST
@given(
    spatial=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    channels=st.sampled_from([1, 3]),
    data=st.data(),
)
def test_round_trip_property(spatial, channels, data):
    patch = tuple(data.draw(st.integers(1, 9)) for _ in spatial)
    shape = (*spatial, channels)
    x = torch.randn(shape, dtype=torch.float32)
    back = untile_patches(tile_patches(x, patch), shape)
    assert torch.equal(back, x)


def test_round_trip_keeps_integer_dtype():
    x = torch.arange(7 * 5 * 2, dtype=torch.int64).reshape(7, 5, 2)
    tiles = tile_patches(x, (4, 4))
    assert tiles.dtype == torch.int64
    assert torch.equal(untile_patches(tiles, x.shape), x)


# --- tile grid and order -----------------------------------------------------------------------


def test_tile_grid_counts():
    assert tile_grid((17, 23, 3), (8, 8)) == (3, 3)
    assert tile_grid((64, 32, 3), (32, 32)) == (2, 1)
    assert tile_grid((5, 1), (200,)) == (1,)
    assert tile_grid((1601, 1), (400,)) == (5,)
    assert tile_grid((33, 16, 17, 1), (16, 16, 16)) == (3, 1, 2)
    # a spatial-only shape is accepted as well
    assert tile_grid((17, 23), (8, 8)) == (3, 3)


def test_tile_order_is_row_major_2d():
    x = encoded((20, 30, 2))
    tiles = tile_patches(x, (8, 8))  # grid (3, 4)
    assert tiles.shape == (12, 8, 8, 2)
    # tile 6 is grid row 1, column 2: rows 8..15, columns 16..23
    assert torch.equal(tiles[6], x[8:16, 16:24])
    assert decode(tiles[6, 0, 0, 1], 3) == (8, 16, 1)
    assert decode(tiles[1, 0, 0, 0], 3) == (0, 8, 0)  # last axis fastest


def test_tile_order_is_row_major_3d():
    x = encoded((8, 12, 4, 1))
    tiles = tile_patches(x, (4, 4, 4))  # grid (2, 3, 1)
    assert tiles.shape == (6, 4, 4, 4, 1)
    # tile 4 = (1, 1, 0)
    assert torch.equal(tiles[4], x[4:8, 4:8, 0:4])


# --- padding -----------------------------------------------------------------------------------


def test_padding_reflects_at_the_end():
    x = encoded((10, 6, 1))
    tiles = tile_patches(x, (4, 4))  # padded to (12, 8): rows 10, 11 and columns 6, 7 are padding
    stitched = untile_patches(tiles, (12, 8, 1))  # the padded tensor itself
    # reflect (edge not repeated): padded row 10 mirrors row 8, row 11 mirrors row 7
    assert torch.equal(stitched[10], x[8, list(range(6)) + [4, 3]])
    assert decode(stitched[11, 2, 0], 3) == (7, 2, 0)
    assert decode(stitched[3, 6, 0], 3) == (3, 4, 0)
    assert decode(stitched[11, 7, 0], 3) == (7, 3, 0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 31])
def test_short_axis_uses_repeated_reflection_like_numpy(n):
    x = encoded((n, 1))
    padded = untile_patches(tile_patches(x, (32,)), (32, 1))
    expected = np.pad(x.numpy(), ((0, 32 - n), (0, 0)), mode="reflect")
    assert np.array_equal(padded.numpy(), expected)


def test_short_axis_2d_matches_numpy():
    x = encoded((5, 3, 2))  # a 5×3 image with 32×32 patches
    tiles = tile_patches(x, (32, 32))
    assert tiles.shape == (1, 32, 32, 2)
    expected = np.pad(x.numpy(), ((0, 27), (0, 29), (0, 0)), mode="reflect")
    assert np.array_equal(tiles[0].numpy(), expected)


# --- random patches ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "patch"),
    [((300, 2), (50,)), ((40, 37, 3), (8, 8)), ((20, 18, 16, 1), (4, 5, 6)), ((30, 8, 1), (8, 8))],
)
def test_random_patches_are_sub_blocks(shape, patch):
    x = encoded(shape)
    out = random_patches(x, patch, 16, torch.Generator().manual_seed(1))
    assert out.shape == (16, *patch, shape[-1])
    k = len(patch)
    for sample in out:
        start = decode(sample.reshape(-1, shape[-1])[0, 0], k + 1)[:k]
        assert all(0 <= s <= n - p for s, n, p in zip(start, shape, patch))
        block = x[tuple(slice(s, s + p) for s, p in zip(start, patch))]
        assert torch.equal(sample, block)


def test_random_patches_cover_many_positions():
    x = encoded((100, 1))
    out = random_patches(x, (10,), 200, torch.Generator().manual_seed(2))
    starts = {decode(p[0, 0], 2)[0] for p in out}
    assert min(starts) >= 0 and max(starts) <= 90
    assert len(starts) > 40  # 91 possible offsets, not stuck on the tile grid


def test_random_patches_are_reproducible():
    x = torch.randn(40, 37, 3)
    a = random_patches(x, (8, 8), 10, torch.Generator().manual_seed(7))
    b = random_patches(x, (8, 8), 10, torch.Generator().manual_seed(7))
    c = random_patches(x, (8, 8), 10, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_patches_pad_short_axes():
    x = encoded((5, 40, 1))  # rows shorter than the patch: padded to 8 rows by reflection
    out = random_patches(x, (8, 8), 12, torch.Generator().manual_seed(3))
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 3), (0, 0), (0, 0)), mode="reflect"))
    for sample in out:
        col = decode(sample[0, 0, 0], 3)[1]
        assert torch.equal(sample, padded[:, col : col + 8])


def test_random_patches_zero_count():
    out = random_patches(torch.randn(10, 2), (4,), 0, torch.Generator().manual_seed(0))
    assert out.shape == (0, 4, 2)


# --- patch coordinates -------------------------------------------------------------------------


def test_patch_coordinates_2d():
    coords = patch_coordinates((3, 4))
    assert coords.shape == (12, 2)
    assert coords.dtype == torch.float32
    assert coords[0].tolist() == [-1.0, -1.0]
    assert coords[-1].tolist() == [1.0, 1.0]
    # last axis fastest
    assert coords[1].tolist() == pytest.approx([-1.0, -1.0 / 3.0])
    assert coords[4].tolist() == [0.0, -1.0]
    assert coords[:4, 0].tolist() == [-1.0] * 4


def test_patch_coordinates_audio_scale():
    coords = patch_coordinates((200,), scale=5.0)
    assert coords.shape == (200, 1)
    assert coords[0, 0].item() == -5.0
    assert coords[-1, 0].item() == 5.0
    assert torch.all(coords[1:, 0] > coords[:-1, 0])
    assert torch.allclose(coords[:, 0], torch.linspace(-5.0, 5.0, 200))


def test_patch_coordinates_single_point_axis_and_3d():
    assert patch_coordinates((1,)).tolist() == [[0.0]]
    coords = patch_coordinates((2, 1, 3))
    assert coords.shape == (6, 3)
    assert coords[:, 1].eq(0).all()
    assert coords[2].tolist() == [-1.0, 0.0, 1.0]
    assert coords[3].tolist() == [1.0, 0.0, -1.0]


# --- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: tile_patches(torch.zeros(10, 10, 3), (4,)),  # patch length ≠ spatial axes
        lambda: tile_patches(torch.zeros(10, 3), (4, 4)),
        lambda: tile_patches(torch.zeros(10, 10, 3), (4, 0)),  # non-positive size
        lambda: tile_patches(torch.zeros(10, 10, 3), (4, -2)),
        lambda: tile_patches(torch.zeros(10), (4,)),  # no channel axis
        lambda: tile_patches(torch.zeros(0, 3), (4,)),  # empty spatial axis
        lambda: tile_patches(torch.zeros(10, 3), (2.5,)),
        lambda: tile_patches(torch.zeros(10, 3), 4),
        lambda: tile_grid((10, 10, 3), (4, 4, 4, 4)),
        lambda: tile_grid((10, 3), (0,)),
        lambda: untile_patches(torch.zeros(2, 4, 1), (9, 1)),  # wrong tile count
        lambda: untile_patches(torch.zeros(3, 4, 2), (9, 1)),  # wrong channels
        lambda: untile_patches(torch.zeros(3, 4, 4, 1), (9, 1)),  # wrong number of axes
        lambda: untile_patches(torch.zeros(3, 4, 1), (9,)),
        lambda: random_patches(torch.zeros(10, 10, 1), (4,), 2, torch.Generator()),
        lambda: random_patches(torch.zeros(10, 1), (4,), -1, torch.Generator()),
        lambda: random_patches(torch.zeros(10, 1), (4,), 2, 0),
        lambda: random_patches(torch.zeros(10), (4,), 2, torch.Generator()),
        lambda: patch_coordinates(()),
        lambda: patch_coordinates((4, 0)),
        lambda: patch_coordinates((4,), scale=0.0),
        lambda: patch_coordinates((4,), scale=float("nan")),
    ],
)
def test_bad_arguments_raise_user_error(call):
    with pytest.raises(UserError) as info:
        call()
    assert "\n" not in str(info.value) and str(info.value)
