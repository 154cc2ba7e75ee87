"""Training a COIN++ base network: meta-learning on random patches, then the latent statistics.

After the outer loop (``meta_train``) the training patches are encoded once more with the
encoder's own inner loop; the global mean/std of those latents sets the quantizer's clipping
range and, per bit-width, the symbol counts become the entropy model (thesis §5.2.3).  The
finished base network carries everything the codec needs in its JSON description.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from metacompress.codecs.coinpp import DEFAULT_STEPS, POINTS_PER_CHUNK, fit_tile_latents, quantizer_for, render_tiles
from metacompress.codecs.entropy import SymbolModel
from metacompress.codecs.latent_quantizer import LatentQuantizer
from metacompress.distributed import DistContext, single_process
from metacompress.errors import FormatError, UserError
from metacompress.inr.base_config import BaseConfig, LatentStatistics
from metacompress.inr.base_network import BaseNetwork, build_model
from metacompress.inr.metalearning import (MEMORY_FIT_FRACTION, MEMORY_LIMIT_ENV, BatchSampler, MetaConfig,
                                            available_memory, estimate_peak_memory, largest_fitting_batch,
                                            meta_train, require_count, require_positive)
from metacompress.metrics import psnr_from_mse
from metacompress.modalities.datapoint import coordinates, training_features
from metacompress.modalities.patches import random_patches
from metacompress.modalities.registry import modality as registered_modality
from metacompress.modalities.spec import DataSpec
from metacompress.rng import keeps_global_rng

CODE_BITS = tuple(range(3, 9))  # thesis Figure 5.10: 3–8 bits
VAL_FRACTION = 0.05  # datapoints held out for validation PSNR (train-base --val-fraction)
CURVE_TILES, CURVE_STEPS = 64, (3, 10)  # the learning curve: validation PSNR on 64 held-out tiles
GB = 1e9

logger = logging.getLogger(__name__)


def check_architecture(width, depth, latent_dim, w0) -> None:
    """One-line UserError for a network size meta-training cannot build."""
    require_count(width, "width", "--width")
    require_count(depth, "depth", "--depth")
    require_count(latent_dim, "latent dimension", "--latent-dim")
    require_positive(w0, "ω₀", "--w0")


@dataclass(frozen=True)
class BaseSettings:
    """What a new base network models and its architecture (thesis C.3 defaults: 10 × 512, ω₀ 50)."""

    data: DataSpec
    width: int = 512
    depth: int = 10
    latent_dim: int = 128
    w0: float = 50.0
    code_patches: int = 2048  # training patches the latent statistics are measured on
    code_steps: int = DEFAULT_STEPS
    meta_sgd: bool = False  # learn one inner learning rate per latent dimension (issue 17, lever 3)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_architecture(self.width, self.depth, self.latent_dim, self.w0)
        require_count(self.code_patches, "code patches", "code_patches")
        require_count(self.code_steps, "code steps", "code_steps")

    @property
    def patch(self) -> tuple[int, ...]:
        return self.data.patch

    @property
    def points(self) -> int:
        """Coordinates per patch (a globe: its whole grid)."""
        return math.prod(self.patch)

    @property
    def in_dim(self) -> int:
        return self.data.in_dim

    def config(self) -> BaseConfig:
        return BaseConfig(self.data, self.in_dim, self.width, self.depth, self.latent_dim, float(self.w0),
                          meta_sgd=self.meta_sgd)


def patch_sampler(points: list[torch.Tensor], spec: DataSpec) -> BatchSampler:
    """Batches of random patches from random datapoints (each (*spatial, C) features in [0, 1])."""
    if not points:
        raise UserError("no training data")
    coords, patch = coordinates(spec), spec.patch

    def sample(batch_size: int, generator: torch.Generator):
        chosen = torch.randint(len(points), (batch_size,), generator=generator).tolist()
        patches = [non_constant_patch(points[i], patch, generator) for i in chosen]
        return coords, torch.stack(patches).reshape(batch_size, coords.shape[0], -1)

    return sample


def non_constant_patch(x: torch.Tensor, patch: tuple[int, ...], generator: torch.Generator,
                       tries: int = 16) -> torch.Tensor:
    """A random patch of ``x``, drawn again (up to ``tries`` times) while every value in it is the same.

    Brain volumes are mostly empty background (80 % of the macaque template's voxels are 0):
    sampled uniformly, such patches fill most meta-training batches, and a base network that
    learns only to output background scores well on them but renders tissue as noise
    (measured: 26 dB on training patches, 15 dB on a brain).  A constant patch costs one
    bias to fit, so skipping it loses nothing."""
    for _ in range(tries):
        drawn = random_patches(x, patch, 1, generator)[0]
        if drawn.amax() > drawn.amin():
            break
    return drawn


def feature_mean(points: list[torch.Tensor]) -> torch.Tensor:
    """Per-channel mean of every training sample (each datapoint (*spatial, C) features)."""
    total = sum(p.reshape(-1, p.shape[-1]).double().sum(0) for p in points)
    return (total / sum(math.prod(p.shape[:-1]) for p in points)).float()


def sample_tiles(points: list[torch.Tensor], spec: DataSpec, count: int, seed: int) -> torch.Tensor:
    """``count`` random patches as (count, points, C), reproducibly."""
    _, features = patch_sampler(points, spec)(count, torch.Generator().manual_seed(seed))
    return features


def mean_psnr(base: BaseNetwork, tiles: torch.Tensor, steps: int, bits: int | None = None) -> float:
    """Mean per-tile PSNR after ``steps`` inner steps (latents quantized to ``bits`` if given)."""
    latents = fit_tile_latents(base, tiles, steps)
    if bits is not None:
        quantizer = quantizer_for(base, bits)
        latents = quantizer.values(quantizer.symbols(latents))
    with torch.no_grad():  # a graph kept across the rendered chunks would hold GBs at width 512
        mse = ((render_tiles(base, latents) - tiles) ** 2).flatten(1).mean(dim=1)
    return float(torch.tensor([psnr_from_mse(m) for m in mse.tolist()]).mean())


def latent_codes(base: BaseNetwork, tiles: torch.Tensor, steps: int, bits: tuple[int, ...] = CODE_BITS,
                 per_dimension: bool = True) -> LatentStatistics:
    """Quantizer statistics and per-bit-width symbol counts of the training latents: per latent
    dimension unless ``per_dimension`` is False (the thesis' one global range)."""
    latents = fit_tile_latents(base, tiles, steps)
    pooled = LatentQuantizer.fit(latents, 8)
    ranges = LatentQuantizer.fit(latents, 8, per_dimension) if per_dimension else pooled
    counts = {}
    for b in bits:
        quantizer = LatentQuantizer(ranges.mean, ranges.std, b)
        counts[b] = tuple(int(c) for c in SymbolModel.from_symbols(quantizer.symbols(latents), b).counts)
    return LatentStatistics(pooled.mean, pooled.std, steps, int(tiles.shape[0]), counts,
                            *((ranges.mean, ranges.std) if per_dimension else (None, None)))


@keeps_global_rng
def train_base(settings: BaseSettings, train_points: list[torch.Tensor], val_points: list[torch.Tensor],
               meta: MetaConfig, out_dir: Path | None = None, resume: bool = False,
               progress: Callable[[int, float], None] | None = None, ctx: DistContext | None = None, *,
               memory_available: int | None = None, device: str | torch.device | None = "cpu") -> BaseNetwork:
    """Meta-learn a base network on ``train_points`` and measure its codes; validation PSNR on ``val_points``.

    Refuses to start (``UserError``, before anything is written) on invalid settings, or when the
    estimated peak memory exceeds ``MEMORY_FIT_FRACTION`` of ``memory_available`` (default:
    ``available_memory()``, which ``$METACOMPRESS_MEMORY_LIMIT`` overrides).  Runs on ``ctx.device``
    under torchrun, else on ``device``; the weights come back on that device.
    """
    ctx = ctx or single_process(device)
    check_training_memory(settings, meta, ctx, memory_available)
    config = settings.config().replace(inner_lr=meta.inner_lr)  # encoding steps as training did
    spec = config.data
    torch.manual_seed(meta.seed)
    # the outputs start at the training data's mean (see ModulatedSiren: Adam barely moves that bias)
    model = build_model(config, output_start=feature_mean(train_points)).to(ctx.device)
    # whole datapoints (CIFAR-10, globes): no more draws than there are datapoints
    whole = all(tuple(p.shape[:-1]) == tuple(settings.patch) for p in train_points + val_points)
    val_source = val_points or train_points
    val_tiles = sample_tiles(val_source, spec, min(256, len(val_source)) if whole else 256, meta.seed + 2)
    curve_tiles = val_tiles[:CURVE_TILES]

    def validate(current) -> dict:
        probe = BaseNetwork(current, config)
        return {f"{s}_steps": round(mean_psnr(probe, curve_tiles, s), 3) for s in CURVE_STEPS}

    history = meta_train(model, patch_sampler(train_points, spec), meta, out_dir, resume, progress, ctx,
                         validate=validate if ctx.is_main else None)
    model.eval()
    base = BaseNetwork(model, config)
    code_count = min(settings.code_patches, len(train_points)) if whole else settings.code_patches
    code_tiles = sample_tiles(train_points, spec, code_count, meta.seed + 1)
    base = base.with_config(config.replace(codes=latent_codes(base, code_tiles, settings.code_steps)))
    training = {
        "meta": asdict(meta), "train_datapoints": len(train_points), "val_datapoints": len(val_points),
        "val_source": "held-out datapoints" if val_points else "training datapoints (none held out)",
        "final_loss": history[-1]["loss"] if history else None,
        "skipped_steps": sum(h["skipped"] for h in history),
        "val_psnr": {f"{s}_steps": round(mean_psnr(base, val_tiles, s), 3) for s in (3, 10)},
        "val_psnr_5bit_10_steps": round(mean_psnr(base, val_tiles, 10, bits=5), 3),
        "learning_curve": [{"iteration": h["iteration"]} | h["val"] for h in history if "val" in h],
    }
    return base.with_config(base.config.replace(training=training))


def training_memory(settings: BaseSettings, meta: MetaConfig, batch_per_process: int | None = None,
                    checkpoint_steps: bool | None = None) -> tuple[int, int]:
    """Estimated peak bytes ``train_base`` adds in one process: (meta-training on its share of the
    batch, encoding the code patches — a first-order inner loop on POINTS_PER_CHUNK-point chunks)."""
    common = {"width": settings.width, "depth": settings.depth, "latent_dim": settings.latent_dim,
              "in_dim": settings.in_dim, "out_dim": settings.data.channels}
    training = estimate_peak_memory(
        points=settings.points, batch_size=meta.batch_size if batch_per_process is None else batch_per_process,
        inner_steps=meta.inner_steps, first_order=meta.first_order,
        checkpoint_steps=meta.checkpoint_steps if checkpoint_steps is None else checkpoint_steps, **common)
    chunk = max(1, POINTS_PER_CHUNK // settings.points)
    encoding = estimate_peak_memory(points=settings.points, batch_size=chunk, inner_steps=1, first_order=True, **common)
    return training, encoding


def check_training_memory(settings: BaseSettings, meta: MetaConfig, ctx: DistContext | None = None,
                          available: int | None = None) -> int:
    """Validate the settings, then refuse (one-line UserError with a setting that fits) a run whose
    estimated peak memory exceeds ``MEMORY_FIT_FRACTION`` of ``available`` (default:
    ``available_memory()``); returns the estimate in bytes for this machine's processes."""
    settings.validate()
    meta.validate()
    world = ctx.world_size if ctx is not None else 1
    if meta.batch_size % world:
        raise UserError(f"batch size (--batch-size) {meta.batch_size} does not split evenly over {world} processes")
    # processes of this run on this machine share its memory (torchrun sets LOCAL_WORLD_SIZE)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if world > 1 else 1
    per_process = meta.batch_size // world

    def needs(batch: int = per_process, checkpointed: bool | None = None) -> int:
        return local * max(training_memory(settings, meta, batch, checkpointed))

    needed = needs()
    if ctx is not None and ctx.device.type != "cpu":
        return needed
    if available is None:
        available = available_memory()
    processes = f" for {local} processes" if local > 1 else ""
    if available is None:
        logger.info("meta-training needs about %.1f GB of memory%s (available memory unknown)", needed / GB, processes)
        return needed
    budget = MEMORY_FIT_FRACTION * available
    if needed <= budget:
        logger.info("meta-training needs about %.1f GB of memory%s; %.1f GB available", needed / GB, processes,
                    available / GB)
        return needed
    options = []
    if local * training_memory(settings, meta, 1)[1] > budget:
        options.append(f"a smaller --width (encoding the code patches alone needs about "
                       f"{local * training_memory(settings, meta, 1)[1] / GB:.1f} GB)")
    else:
        batch = largest_fitting_batch(lambda b: needs(b) <= budget, per_process)
        if batch:
            options.append(f"--batch-size {batch * world}")
        if not (meta.first_order or meta.checkpoint_steps):
            if needs(per_process, True) <= budget:
                options.append(f"--checkpoint-steps (about {needs(per_process, True) / GB:.1f} GB)")
            elif batch := largest_fitting_batch(lambda b: needs(b, True) <= budget, per_process):
                options.append(f"--checkpoint-steps with --batch-size {batch * world}")
        if not options:
            options.append("a smaller --width or --depth (not even one patch per process fits)")
    raise UserError(
        f"meta-training needs about {needed / GB:.1f} GB of memory{processes} (--width {settings.width} "
        f"--depth {settings.depth} --batch-size {meta.batch_size}, {meta.inner_steps} inner steps, "
        f"{'first' if meta.first_order else 'second'}-order{', checkpointed' if meta.checkpoint_steps else ''}) "
        f"but {available / GB:.1f} GB is available, of which it may use {MEMORY_FIT_FRACTION:.0%}: "
        f"use {', or '.join(options)}; {MEMORY_LIMIT_ENV}=BYTES overrides the available amount")


def validation_split(count: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(held-out, training) indices of ``count`` datapoints: a random ``val_fraction``, rounded —
    none from a handful of datapoints (a few volumes: all train)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(round(val_fraction * count), count - 1)
    return order[:n_val], order[n_val:]


def prepare_training(modality: str, data: str | Path | list[np.ndarray], patch: tuple[int, ...] | None = None,
                     width: int = 512, depth: int = 10, latent_dim: int = 128, w0: float = 50.0,
                     variables: list[str] | None = None, val_fraction: float = VAL_FRACTION, seed: int = 0,
                     extra: dict | None = None, meta_sgd: bool = False) -> tuple[BaseSettings, list, list]:
    """Settings and (train, validation) features for a base network of ``modality``.

    ``data`` is a file or folder, or datapoints already in the canonical layout (globes then need
    ``extra``: their grid, variables and units).  The modality gives the data spec (images
    [0, 255] per channel, audio [−1, 1] at 16 kHz, volumes each their own range, globes the
    training data's range per variable).  Validation takes a random ``val_fraction`` of the
    datapoints, rounded — none from a handful of datapoints (two volumes), when validation PSNR
    is measured on training patches instead.
    """
    from metacompress.modalities.files import training_datapoints

    check_architecture(width, depth, latent_dim, w0)
    if not 0 <= val_fraction < 1:
        raise UserError(f"validation fraction must be in [0, 1), got {val_fraction}")
    if patch is not None:
        for size in patch:
            require_count(size, "patch size", "--patch")
    kind = registered_modality(modality)
    in_memory = isinstance(data, list)
    try:
        spec = kind.new_spec(tuple(patch) if patch is not None else None, None if in_memory else data, variables,
                             extra)
    except FormatError as exc:
        raise UserError(str(exc).replace("base network description: ", "")) from None
    points = data if in_memory else training_datapoints(data, spec)
    if not points:
        raise UserError("no training data")
    spec = kind.finish_spec(spec, points)
    features = training_features(points, spec)
    val_indices, train_indices = validation_split(len(features), val_fraction, seed)
    val = [features[i] for i in val_indices]
    train = [features[i] for i in train_indices]
    settings = BaseSettings(spec, width, depth, latent_dim, w0, meta_sgd=meta_sgd)
    return settings, train, val
