"""bench coinpp-effort: its validation split is train-base's, and its JPEG yardstick fits the budget."""

import numpy as np
import torch
from PIL import Image

from metacompress.bench.coinpp_effort import held_out_photos, jpeg_within, thumbnail_within
from metacompress.codecs.classical import Jpeg
from metacompress.codecs.coinpp_training import prepare_training
from metacompress.data import sample_path


def test_the_effort_curve_is_measured_on_the_photos_train_base_holds_out(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(41):
        Image.fromarray(rng.integers(0, 256, (8 + i % 3, 9, 3), dtype=np.uint8)).save(folder / f"p{i:02d}.png")
    held_out = held_out_photos(tmp_path, crop=None)
    _, _, val = prepare_training("image", folder, patch=(8, 8), width=4, depth=1, latent_dim=2, w0=30.0, seed=0)
    assert len(held_out) == len(val) == 2
    for (_, image), features in zip(held_out, val):
        assert torch.equal(torch.tensor(image).float() / 255, features)


def test_jpeg_within_a_budget_is_the_best_quality_that_fits():
    image = np.asarray(Image.open(sample_path("photo")).convert("RGB"))[:64, :64]
    budget = len(Jpeg(quality=40).encode(image)) + 5
    best = jpeg_within(image, budget)
    assert best["bytes"] <= budget < len(Jpeg(quality=best["quality"] + 1).encode(image))
    assert jpeg_within(image, 10) is None  # not even quality 1 fits in 10 bytes


def test_the_thumbnail_yardstick_is_the_largest_raw_thumbnail_that_fits():
    image = np.asarray(Image.open(sample_path("photo")).convert("RGB"))[:60, :90]
    found = thumbnail_within(image, 1000)
    h, w = found["size"]
    assert found["bytes"] == h * w * 3 <= 1000 < (h + 1) * round(90 * (h + 1) / 60) * 3
    assert abs(w / h - 1.5) < 0.2
    flat = np.full((60, 90, 3), 77, np.uint8)  # a flat image comes back exactly from any thumbnail
    assert thumbnail_within(flat, 30)["psnr"] > 60
