"""COIN++ encode-time effort (issue 17, lever 5): PSNR and encode time against refinement steps.

After the meta-learned inner-loop steps, ``effort`` Adam steps refine the latents with the
quantizer in the loop (``codecs.coinpp.refine_tile_latents``).  The curve is measured on the
held-out 5 % of the training photos (what the default effort is chosen on); Kodak is scored
afterwards at the chosen default only, beside JPEG at no more bytes (best quality whose file fits)
and a raw 8-bit thumbnail of no more bytes upscaled bicubically, and never tunes anything.

CPU profile: the bundled photo base network, 5 bits, 3 and 10 inner steps, effort 0–40, central
128×128 crops of the held-out photos; Kodak kodim03 and kodim15 whole.  Paper profile: whole
held-out photos and all of Kodak, on ``--device``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from metacompress.bench.coinpp_tasks import training_photos
from metacompress.codecs.classical import Jpeg, encode_at_bpp
from metacompress.codecs.coinpp import DEFAULT_EFFORT, encode
from metacompress.codecs.coinpp_training import VAL_FRACTION, validation_split
from metacompress.data.images import list_images, load_image
from metacompress.inr.base_network import DEFAULT_BASE, load_base
from metacompress.metrics import psnr
from metacompress.modalities.spec import Datapoint

PROFILES = {
    "cpu": {"crop": 128, "steps": (3, 10), "efforts": (0, 5, 10, 20, 40), "bits": 5,
            "kodak": ("kodim03", "kodim15")},
    "paper": {"crop": None, "steps": (3, 10), "efforts": (0, 5, 10, 20, 40, 100), "bits": 5, "kodak": None},
}


def held_out_photos(root: Path, crop: int | None) -> list[tuple[str, np.ndarray]]:
    """The validation split ``train-base`` holds out of the training photos (seed 0), centre-cropped."""
    photos = training_photos(root, with_paths=True)
    out = []
    for i in validation_split(len(photos), VAL_FRACTION, 0)[0]:
        path, image = photos[i]
        if crop:
            h, w = image.shape[:2]
            image = image[(h - crop) // 2:(h + crop) // 2, (w - crop) // 2:(w + crop) // 2]
        out.append((path.stem, np.ascontiguousarray(image)))
    return out


def jpeg_within(image: np.ndarray, budget: int) -> dict | None:
    """The best JPEG of at most ``budget`` bytes, or None when even quality 1 is larger."""
    data, quality = encode_at_bpp("jpeg", image, 8 * budget / (image.shape[0] * image.shape[1]))
    if len(data) > budget:
        return None
    return {"quality": quality, "bytes": len(data), "psnr": psnr(image, Jpeg(quality=quality).decode(data))}


def thumbnail_within(image: np.ndarray, budget: int) -> dict:
    """Issue 17's yardstick: the largest raw 8-bit thumbnail (same aspect) of at most ``budget``
    bytes, upscaled back bicubically; what a codec must beat to be worth its decoder."""
    h, w, c = image.shape
    th = next((t for t in range(h, 0, -1) if t * max(1, round(w * t / h)) * c <= budget), 1)
    tw = max(1, round(w * th / h))
    small = Image.fromarray(image).resize((tw, th), Image.Resampling.BOX)
    upscaled = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))
    return {"size": [th, tw], "bytes": th * tw * c, "psnr": psnr(image, upscaled)}


def score(images, base, steps: int, effort: int, bits: int) -> dict:
    rows = []
    for name, image in images:
        started = time.perf_counter()
        result = encode(Datapoint(image, "uint8"), base, bits=bits, steps=steps, effort=effort)
        rows.append({"image": name, "psnr": result.psnr, "bpp": 8 * len(result.data) / (image.shape[0] * image.shape[1]),
                     "bytes": len(result.data), "encode_s": time.perf_counter() - started})
    return {"steps": steps, "effort": effort, "bits": bits, "psnr": statistics.fmean(r["psnr"] for r in rows),
            "bpp": statistics.fmean(r["bpp"] for r in rows), "encode_s": statistics.fmean(r["encode_s"] for r in rows),
            "images": rows}


def run(profile: str, data_root, out_dir: Path, device="cpu", **_) -> dict:
    settings = PROFILES[profile]
    root = Path(data_root)
    base = load_base(DEFAULT_BASE, device)
    photos = held_out_photos(root, settings["crop"])
    curve = [score(photos, base, steps, effort, settings["bits"]) for steps in settings["steps"]
             for effort in settings["efforts"]]
    results = {"base": "bundled photo base", "base_hash": base.hash, "validation_photos": [n for n, _ in photos],
               "crop": settings["crop"], "default_effort": DEFAULT_EFFORT, "curve": curve,
               "threads": torch.get_num_threads()}
    kodak = [(p.stem, load_image(p)) for p in list_images(root / "kodak")
             if settings["kodak"] is None or p.stem in settings["kodak"]]
    rows = []
    for effort in sorted({0, DEFAULT_EFFORT}):
        scored = score(kodak, base, max(settings["steps"]), effort, settings["bits"])
        for row, (_, image) in zip(scored["images"], kodak):
            row["jpeg_within_bytes"] = jpeg_within(image, row["bytes"])
            row["thumbnail_within_bytes"] = thumbnail_within(image, row["bytes"])
        rows.append(scored)
    results["kodak"] = rows
    plot(results, out_dir / "effort.png")
    return results


def plot(results: dict, path: Path) -> None:
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.subplots()
    for steps in sorted({c["steps"] for c in results["curve"]}):
        points = [c for c in results["curve"] if c["steps"] == steps]
        ax.plot([c["encode_s"] for c in points], [c["psnr"] for c in points], "o-", label=f"{steps} inner steps")
        for c in points:
            ax.annotate(str(c["effort"]), (c["encode_s"], c["psnr"]), fontsize=7, textcoords="offset points",
                        xytext=(3, -8))
    ax.set_xlabel("encode time per image (s)")
    ax.set_ylabel("PSNR (dB), 5-bit latents")
    ax.set_title(f"COIN++ effort on held-out photos ({results['crop'] or 'whole'} px crops); labels: effort")
    ax.legend()
    fig.savefig(path, dpi=110)
