"""Images as functions (row, column) ↦ colour: coordinates in [−1, 1]², features in [0, 1];
and the image modality (files, training data, base network defaults)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from metacompress.data.images import IMAGE_SUFFIXES, image_file_bytes, list_images, load_image
from metacompress.errors import DataError, UserError
from metacompress.modalities.grid import axis_coordinates, grid_coordinates
from metacompress.modalities.registry import Modality
from metacompress.modalities.spec import Datapoint, DataSpec

Region = tuple[int, int, int, int]  # x0, y0, x1, y1: columns [x0, x1), rows [y0, y1)


def pixel_coordinates(height: int, width: int, region: Region | None = None,
                      output_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Coordinates of the pixels of a ``height``×``width`` image, row-major: (pixels, 2).

    ``output_size`` resamples the grid (decoding at another resolution); ``region`` keeps only
    that rectangle of the output, with exactly the values its pixels have in the full grid.
    """
    out_h, out_w = output_size or (height, width)
    rows, cols = axis_coordinates(height, out_h), axis_coordinates(width, out_w)
    if region is not None:
        x0, y0, x1, y1 = check_region(region, out_h, out_w)
        rows, cols = rows[y0:y1], cols[x0:x1]
    return grid_coordinates([rows, cols])


def check_region(region: Region, height: int, width: int) -> Region:
    x0, y0, x1, y1 = (int(v) for v in region)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise UserError(f"region {x0},{y0},{x1},{y1} is not a non-empty rectangle inside the "
                        f"{width}×{height} output (x0,y0,x1,y1 with x0 < x1 ≤ width, y0 < y1 ≤ height)")
    return x0, y0, x1, y1


def image_features(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) → float (H·W, C) in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).reshape(-1, image.shape[-1]).float() / 255.0


def features_to_image(features: torch.Tensor, height: int, width: int) -> np.ndarray:
    """float (H·W, C), nominally in [0, 1] → uint8 (H, W, C), clamped and rounded."""
    values = torch.round(features.detach().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return values.reshape(height, width, -1).cpu().numpy()


MAX_SCALED_SIDE = 1 << 20  # pixels per side of a rescaled decode; the sample cap bounds the area


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The output size when decoding at ``scale`` × the stored resolution."""
    if not (math.isfinite(scale) and scale > 0) or max(height, width) * scale > MAX_SCALED_SIDE:
        raise UserError(f"--scale must be a positive number giving sides of at most {MAX_SCALED_SIDE:,} pixels, "
                        f"got {scale} for a {width}×{height} image")
    return max(1, round(height * scale)), max(1, round(width * scale))


# Each axis of a new image base network spans [−0.5, 0.5]: a unit span, as the official COIN++
# code's [0, 1].  The span scales every first-layer frequency, and [−1, 1] doubled them: issue 17's
# side-by-side run (CIFAR-10, 6×128, latent 64, batch 16, lr 1e-4, 200 outer steps, ω₀ 30) scored
# 16.35 / 16.90 dB (3 / 10 inner steps) at [−1, 1], 17.84 / 18.43 at [−0.5, 0.5], and the official
# code 17.40 / 18.10.  Base networks made before keep the span they store (``coord_scale`` 1).
IMAGE_COORD_SCALE = 0.5


class ImageModality(Modality):
    """8-bit images (PNG, TIFF, anything Pillow reads), RGB networks over [0, 255] per channel."""

    name = "image"
    spatial_axes = 2
    input_suffixes = IMAGE_SUFFIXES
    output_suffixes = (".png", ".tif", ".tiff")
    default_suffix = ".png"
    default_patch = (32, 32)  # thesis C.3.1
    metrics = ("psnr", "ms-ssim")
    rate_unit = "bpp"

    def read(self, path: Path, spec: DataSpec, time_index: int | None = None) -> Datapoint:
        return Datapoint(load_image(path), "uint8")

    def encode_file(self, point: Datapoint, spec: DataSpec, suffix: str) -> bytes:
        return image_file_bytes(point.values, suffix)

    def training_arrays(self, path: Path, spec: DataSpec) -> Iterator[np.ndarray]:
        for p in list_images(path) if path.is_dir() else [path]:
            image = load_image(p)
            yield image if image.shape[-1] == spec.channels else np.repeat(image, spec.channels, -1)

    def new_spec(self, patch, source, variables, extra) -> DataSpec:
        return DataSpec("image", 3, self.check_patch(patch or self.default_patch), coord_scale=IMAGE_COORD_SCALE,
                        value_range=((0.0, 255.0),) * 3)

    def check_stacked(self, array: np.ndarray, path: Path) -> None:
        if array.dtype != np.uint8:
            raise DataError(f"{path}: images must be uint8, got {array.dtype}")
