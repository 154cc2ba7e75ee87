"""How much PSNR the 32×32 tile seams of COIN++ images cost (issue 17, lever 6).

    python scripts/measure_tile_seams.py --data-root ../shared/data [--base STEM] [--tiles 192]

Fits held-out training-photo tiles (never Kodak) with the base network at the codec's default
settings, quantizes their latents, and averages the squared error over tiles per pixel position.
A seam shows as extra error near the tile's edges.  The bound printed: the PSNR the tiles would
have if every pixel within ``--ring`` of an edge had the interior's mean error — no overlap or
blending can gain more than that.  Writes benchmarks/results/coinpp-seams/results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

from metacompress.bench.coinpp_tasks import training_photos
from metacompress.codecs.coinpp import DEFAULT_BITS, DEFAULT_STEPS, fit_tile_latents, quantizer_for, render_tiles
from metacompress.codecs.coinpp_training import prepare_training, sample_tiles
from metacompress.inr.base_network import DEFAULT_BASE, load_base
from metacompress.metrics import psnr_from_mse

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "coinpp-seams"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("METACOMPRESS_DATA"))
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE)
    parser.add_argument("--tiles", type=int, default=192)
    parser.add_argument("--ring", type=int, default=2, help="pixels from an edge that count as the seam")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.data_root:
        parser.error("--data-root (or METACOMPRESS_DATA) is required")
    base = load_base(args.base)
    spec = base.config.data
    _, _, val = prepare_training("image", training_photos(Path(args.data_root)), patch=spec.patch, seed=0)
    tiles = sample_tiles(val, spec, args.tiles, seed=12)
    quantizer = quantizer_for(base, DEFAULT_BITS)
    latents = fit_tile_latents(base, tiles, DEFAULT_STEPS)
    rendered = render_tiles(base, quantizer.values(quantizer.symbols(latents)))
    height, width = spec.patch
    error = ((rendered - tiles) ** 2).mean(-1).mean(0).reshape(height, width).double()  # per pixel position
    rows, cols = torch.arange(height).unsqueeze(1), torch.arange(width).unsqueeze(0)
    distance = torch.minimum(torch.minimum(rows, height - 1 - rows), torch.minimum(cols, width - 1 - cols))
    by_distance = {int(d): float(error[distance == d].mean()) for d in distance.unique()}
    ring = distance < args.ring
    interior = float(error[~ring].mean())
    mse, bound = float(error.mean()), float(torch.where(ring, torch.tensor(interior, dtype=torch.float64), error).mean())
    result = {"base": str(args.base), "base_hash": base.hash, "tiles": args.tiles, "bits": DEFAULT_BITS,
              "steps": DEFAULT_STEPS, "ring": args.ring, "mse_by_distance_to_edge": by_distance,
              "edge_to_interior_mse": by_distance[0] / interior, "psnr_of_mean_mse": psnr_from_mse(mse),
              "psnr_if_seams_cost_nothing": psnr_from_mse(bound),
              "seam_cost_db": psnr_from_mse(bound) - psnr_from_mse(mse),
              "command": "python scripts/measure_tile_seams.py --data-root DATA" + (
                  "" if args.base == DEFAULT_BASE else f" --base {args.base}")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "mse_by_distance_to_edge"}))
    return 0 if math.isfinite(result["seam_cost_db"]) else 1


if __name__ == "__main__":
    sys.exit(main())
