"""Regular grids of coordinates: pixels of an image, samples of a signal, voxels of a volume."""

from __future__ import annotations

import torch


def axis_coordinates(n: int, samples: int | None = None) -> torch.Tensor:
    """Coordinates in [−1, 1] of the ``n`` samples of one axis: −1 + 2i/(n − 1), both ends included.

    Each axis is normalized on its own (a 768×512 image spans [−1, 1] on both axes), unlike the
    official COIN code, which divides both axes by H − 1.

    With ``samples`` = m ≠ n, the same axis resampled to m points, pixel centres aligned as in
    image resizing: output j sits at stored position ((2j + 1)n − m) / 2m.  Computed from exact
    integers, so at an odd integer scale s every s-th output (from the middle one of each block)
    has exactly the stored sample's coordinate.
    """
    m = n if samples is None else samples
    if n == 1:
        return torch.zeros(m)
    j = torch.arange(m, dtype=torch.float64)
    positions = ((2 * j + 1) * n - m) / (2 * m)
    return (-1.0 + 2.0 * positions / (n - 1)).float()


def grid_coordinates(axes: list[torch.Tensor]) -> torch.Tensor:
    """Every combination of the given per-axis coordinates, last axis fastest: (prod(len), n_axes)."""
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)
