"""Measure a photo base network's latent statistics again, per latent dimension (issue 17, lever 4).

    python scripts/recode_base.py benchmarks/results/coinpp-long/photos src/metacompress/bases/photos \\
        --data-root ../shared/data

The weights are kept; the quantizer's ranges and the symbol counts are measured as ``train-base``
now measures them (``latent_codes``: the same 2,048 training-photo patches, seed 1, 10 inner steps,
one range per latent dimension).  The new description is a new base network — a new content hash —
so files made with the old one need the old one to decode.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from metacompress.bench.coinpp_tasks import training_photos
from metacompress.codecs.coinpp_training import BaseSettings, latent_codes, mean_psnr, prepare_training, sample_tiles
from metacompress.inr.base_network import load_base, save_base


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", type=Path, help="stem of the base network to measure")
    parser.add_argument("out", type=Path, help="stem to write the re-measured base network to")
    parser.add_argument("--data-root", default=os.environ.get("METACOMPRESS_DATA"))
    args = parser.parse_args(argv)
    if not args.data_root:
        parser.error("--data-root (or METACOMPRESS_DATA) is required")
    base = load_base(args.base)
    config = base.config
    _, train, val = prepare_training("image", training_photos(Path(args.data_root)), patch=config.patch, seed=0)
    defaults, seed = BaseSettings(config.data), config.training["meta"]["seed"]
    tiles = sample_tiles(train, config.data, defaults.code_patches, seed=seed + 1)  # as train_base draws them
    recoded = base.with_config(config.replace(codes=latent_codes(base, tiles, defaults.code_steps)))
    val_tiles = sample_tiles(val, config.data, 256, seed=seed + 2)
    training = dict(config.training) | {"codes_remeasured": "per latent dimension, scripts/recode_base.py",
                                        "val_psnr_5bit_10_steps": round(mean_psnr(recoded, val_tiles, 10, bits=5), 3)}
    print(save_base(args.out, recoded.with_config(recoded.config.replace(training=training))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
