"""One latent range for every dimension (thesis §5.2.3) against one per dimension (issue 17, lever 4).

    python scripts/measure_latent_quantizers.py --data-root ../shared/data [--base STEM]

Fits held-out training-photo tiles (never Kodak) and, for 2–6 bits, quantizes their latents with
ranges measured on training tiles — pooled over every entry, or per latent dimension (clipped at 2,
3 or 4 stds) — and reports the mean tile PSNR against the rate: the cross-entropy, in bits per
latent entry, of the held-out symbols under the training symbols' counts (what the range coder
spends), with one shared symbol model or one model per dimension.  Writes
benchmarks/results/coinpp-quantizers/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from metacompress.bench.coinpp_tasks import training_photos
from metacompress.codecs.coinpp import DEFAULT_STEPS, fit_tile_latents, render_tiles
from metacompress.codecs.coinpp_training import prepare_training, sample_tiles
from metacompress.codecs.latent_quantizer import LatentQuantizer
from metacompress.inr.base_network import DEFAULT_BASE, load_base
from metacompress.metrics import psnr_from_mse

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "coinpp-quantizers"


def cross_entropy(train: np.ndarray, held_out: np.ndarray, levels: int, per_dimension: bool) -> float:
    """Bits per entry of ``held_out`` symbols under counts of ``train`` (+½ each, as no bin may be free)."""
    columns = range(train.shape[1]) if per_dimension else [slice(None)]
    total = 0.0
    for column in columns:
        counts = np.bincount(train[:, column].ravel(), minlength=levels) + 0.5
        total -= np.log2(counts / counts.sum())[held_out[:, column].ravel()].sum()
    return total / held_out.size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("METACOMPRESS_DATA"))
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE)
    parser.add_argument("--train-tiles", type=int, default=512)
    parser.add_argument("--tiles", type=int, default=192)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.data_root:
        parser.error("--data-root (or METACOMPRESS_DATA) is required")
    base = load_base(args.base)
    spec = base.config.data
    _, train, val = prepare_training("image", training_photos(Path(args.data_root)), patch=spec.patch, seed=0)
    train_latents = fit_tile_latents(base, sample_tiles(train, spec, args.train_tiles, seed=11), DEFAULT_STEPS)
    tiles = sample_tiles(val, spec, args.tiles, seed=12)
    latents = fit_tile_latents(base, tiles, DEFAULT_STEPS)

    def mean_psnr(z: torch.Tensor) -> float:
        with torch.no_grad():
            mse = ((render_tiles(base, z) - tiles) ** 2).flatten(1).mean(1)
        return float(np.mean([psnr_from_mse(m) for m in mse.tolist()]))

    rows = []
    for bits in (2, 3, 4, 5, 6):
        for name, per_dimension, clip in (("global", False, 3.0), ("per-dimension 2σ", True, 2.0),
                                          ("per-dimension 3σ", True, 3.0), ("per-dimension 4σ", True, 4.0)):
            fitted = LatentQuantizer.fit(train_latents, bits, per_dimension)
            # a clip of k stds is a quantizer of stds scaled by k/3 (the codec's range is ±3 of them)
            scale = clip / 3.0
            quantizer = LatentQuantizer(fitted.mean, tuple(s * scale for s in fitted.std) if per_dimension
                                        else fitted.std * scale, bits)
            train_symbols, symbols = quantizer.symbols(train_latents), quantizer.symbols(latents)
            rows.append({"quantizer": name, "bits": bits, "psnr": mean_psnr(quantizer.values(symbols)),
                         "rate_shared_model": cross_entropy(train_symbols, symbols, 2 ** bits, False),
                         "rate_per_dimension_models": cross_entropy(train_symbols, symbols, 2 ** bits, True)})
            print(json.dumps(rows[-1]), flush=True)
    stds = train_latents.std(0, unbiased=False)
    result = {"base": str(args.base), "base_hash": base.hash, "steps": DEFAULT_STEPS, "tiles": args.tiles,
              "train_tiles": args.train_tiles, "unquantized_psnr": mean_psnr(latents),
              "dimension_std": {"min": float(stds.min()), "median": float(stds.median()), "max": float(stds.max())},
              "rows": rows, "command": "python scripts/measure_latent_quantizers.py --data-root DATA" + (
                  "" if args.base == DEFAULT_BASE else f" --base {args.base}")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
