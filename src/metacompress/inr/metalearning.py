"""Meta-learning a base network whose modulations fit a datapoint in a few steps (thesis §5.2.2).

CAVIA-style: the inner loop runs SGD on the latent modulations only, from zero (Eq. 5.9); the
outer loop updates the shared weights θ through the inner loop — second order by default, since
first-order meta-gradients hurt (C.7) — with Eq. 5.10.
"""

from __future__ import annotations

import math
import operator
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

from metacompress.checkpoint import load_checkpoint, optimizer_tensors, restore_optimizer, save_checkpoint
from metacompress.distributed import DistContext, all_reduce_sum, barrier
from metacompress.errors import UserError
from metacompress.inr.siren import ModulatedSiren, siren_parameter_count
from metacompress.metrics import psnr_from_mse
from metacompress.rng import keeps_global_rng


def per_sample_mse(model: ModulatedSiren, coords: torch.Tensor, features: torch.Tensor,
                   latents: torch.Tensor) -> torch.Tensor:
    """MSE of each datapoint: (batch,)."""
    return ((model(coords, latents) - features) ** 2).flatten(1).mean(dim=1)


def fit_latents(model: ModulatedSiren, coords: torch.Tensor, features: torch.Tensor, steps: int, inner_lr: float,
                create_graph: bool = False, checkpoint_steps: bool = False) -> torch.Tensor:
    """``steps`` of SGD on the latents from 0 → (batch, latent_dim).

    The inner loss is the *sum* over the batch of each datapoint's mean error, so each latent's
    step is the same whatever else is in the batch.  ``create_graph`` keeps the graph for the
    meta-gradient; without it the latents come back detached (encoding, first-order training).
    ``checkpoint_steps`` recomputes each inner step during the backward pass instead of keeping
    its activations: the same meta-gradient for a fraction of the memory, at ~one extra step
    (measured resident peak: 1001 → 555 MB for a 6×128 network, 8 patches of 32×32, 3 steps; see
    ``estimate_peak_memory``).  A Meta-SGD model steps with its own per-dimension rates instead of
    ``inner_lr`` (``ModulatedSiren.inner_learning_rates``).
    """
    latents = torch.zeros(features.shape[0], model.latent_dim, dtype=features.dtype, device=features.device,
                          requires_grad=True)
    inner_lr = model.inner_learning_rates(inner_lr)
    if not create_graph and isinstance(inner_lr, torch.Tensor):
        inner_lr = inner_lr.detach()

    def inner_step(current: torch.Tensor) -> torch.Tensor:
        loss = per_sample_mse(model, coords, features, current).sum()
        (grad,) = torch.autograd.grad(loss, current, create_graph=create_graph)
        return current - inner_lr * grad

    for _ in range(steps):
        if create_graph and checkpoint_steps:
            latents = checkpoint(inner_step, latents, use_reentrant=False)
        else:
            latents = inner_step(latents)
        if not create_graph:
            latents = latents.detach().requires_grad_(True)
    return latents if create_graph else latents.detach()


def meta_loss(model: ModulatedSiren, coords: torch.Tensor, features: torch.Tensor, steps: int, inner_lr: float,
              first_order: bool = False, checkpoint_steps: bool = False) -> torch.Tensor:
    """Mean error after the inner loop (Eq. 5.10's objective); backpropagates into θ through the
    inner loop unless ``first_order`` (then the latents are treated as constants)."""
    latents = fit_latents(model, coords, features, steps, inner_lr, create_graph=not first_order,
                          checkpoint_steps=checkpoint_steps)
    return per_sample_mse(model, coords, features, latents).mean()


@dataclass
class MetaConfig:
    iterations: int = 1_000
    batch_size: int = 64  # thesis C.3.1
    inner_steps: int = 3  # thesis §5.2.2
    inner_lr: float = 1e-2  # thesis C.3
    outer_lr: float = 3e-6  # thesis C.3.1 (CIFAR-10)
    first_order: bool = False  # C.7: first-order meta-gradients hurt
    checkpoint_steps: bool = False  # recompute inner steps in the backward pass to save memory
    spike_factor: float = 10.0  # skip a step whose loss exceeds this × the median of the last 50 (C.8)
    checkpoint_every: int = 200
    validate_every: int = 0  # record validation PSNR every this many steps (0: never): the learning curve
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """One-line ``UserError`` for a setting meta-training cannot run with (CLI flag named)."""
        require_count(self.validate_every, "validation interval", "--validate-every", minimum=0)
        for name, flag in (("iterations", "--iters"), ("batch_size", "--batch-size"),
                           ("inner_steps", "--inner-steps"), ("checkpoint_every", "checkpoint_every")):
            require_count(getattr(self, name), name.replace("_", " "), flag)
        for name, flag in (("inner_lr", "--inner-lr"), ("outer_lr", "--outer-lr")):
            require_positive(getattr(self, name), name.replace("_", " ").replace("lr", "learning rate"), flag)
        require_positive(self.spike_factor, "spike factor", "spike_factor", allow_inf=True)


def require_count(value, what: str, flag: str, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``, else a one-line UserError naming ``flag``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise UserError(f"{what} ({flag}) must be a whole number ≥ {minimum}, got {value!r}") from None
    if number < minimum:
        raise UserError(f"{what} ({flag}) must be at least {minimum}, got {number}")
    return number


def require_positive(value, what: str, flag: str, allow_inf: bool = False) -> float:
    """``value`` as a float > 0 (finite unless ``allow_inf``), else a one-line UserError naming ``flag``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (number > 0 and (allow_inf or math.isfinite(number))):
        raise UserError(f"{what} ({flag}) must be a {'' if allow_inf else 'finite '}number > 0, got {value!r}")
    return number


# sample(batch_size, generator) → (coords, features): coords (points, in_dim) shared or per sample
BatchSampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def meta_train(model: ModulatedSiren, sample: BatchSampler, config: MetaConfig, out_dir: Path | None = None,
               resume: bool = False, progress: Callable[[int, float], None] | None = None,
               ctx: DistContext | None = None, validate: Callable[[ModulatedSiren], dict] | None = None) -> list[dict]:
    """Outer loop (Eq. 5.10) with Adam; returns one history entry per iteration.

    Every ``config.validate_every`` steps (and after the last) the entry also holds ``validate(model)``
    under ``"val"`` — the learning curve, kept in the checkpoint so it spans resumed stretches.

    Iteration i draws its batch from a generator seeded with (seed, i), so a resumed run sees
    exactly the batches an uninterrupted one would.  A step is skipped — weights untouched —
    when its loss or gradient is not finite or its loss spikes above ``spike_factor`` × the
    recent median; weights that still come out non-finite are restored from before the step.

    Under torchrun (``ctx`` with world size N) every process draws the same global batch and
    trains on its own 1/N slice; losses and gradients are averaged over processes, so every
    process takes the same skip decision and the same step — the step one process would take
    on the whole batch (the meta-loss is a mean of independent per-sample terms).
    """
    world, rank = (ctx.world_size, ctx.rank) if ctx is not None else (1, 0)
    if config.batch_size % world:
        raise UserError(f"batch size {config.batch_size} does not split evenly over {world} processes")
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=config.outer_lr)
    start, history = 0, []
    if resume:
        start, history = load_meta_checkpoint(out_dir, model, optimizer, config)
    recent: list[float] = [h["loss"] for h in history[-50:] if not h["skipped"]]
    for iteration in range(start, config.iterations):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + iteration)
        coords, features = sample(config.batch_size, generator)
        coords, features = coords.to(device), features.to(device)  # batches are drawn on the CPU
        if world > 1:
            share = slice(rank * config.batch_size // world, (rank + 1) * config.batch_size // world)
            coords, features = (coords[share] if coords.dim() == 3 else coords), features[share]
        loss = meta_loss(model, coords, features, config.inner_steps, config.inner_lr, config.first_order,
                         config.checkpoint_steps)
        value = loss.item() if world == 1 else all_reduce_sum(loss.detach().reshape(1), ctx).item() / world
        spike = len(recent) >= 10 and value > config.spike_factor * statistics.median(recent)
        skipped = not math.isfinite(value) or spike
        if not skipped:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                average_gradients(model, ctx)
            skipped = not all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        if not skipped:
            before = [p.detach().clone() for p in model.parameters()]
            optimizer.step()
            if not all(torch.isfinite(p).all() for p in model.parameters()):
                with torch.no_grad():
                    for p, saved in zip(model.parameters(), before):
                        p.copy_(saved)
                skipped = True
        if not skipped:
            recent = (recent + [value])[-50:]
        history.append({"iteration": iteration + 1, "loss": value, "psnr": psnr_from_mse(value), "skipped": skipped})
        if validate is not None and config.validate_every and (
                (iteration + 1) % config.validate_every == 0 or iteration + 1 == config.iterations):
            history[-1]["val"] = validate(model)
        if progress is not None:
            progress(iteration + 1, value)
        if out_dir is not None and ((iteration + 1) % config.checkpoint_every == 0 or iteration + 1 == config.iterations):
            if rank == 0:
                save_meta_checkpoint(out_dir, model, optimizer, config, history)
            if ctx is not None:
                barrier(ctx)
    return history


def average_gradients(model: torch.nn.Module, ctx: DistContext) -> None:
    """Mean of every parameter's gradient over the processes, in one all-reduce."""
    params = [p for p in model.parameters() if p.grad is not None]
    flat = all_reduce_sum(torch.cat([p.grad.reshape(-1) for p in params]), ctx) / ctx.world_size
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p.grad))


def save_meta_checkpoint(out_dir: Path, model: ModulatedSiren, optimizer, config: MetaConfig, history: list) -> None:
    opt_tensors, opt_saved = optimizer_tensors(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | opt_tensors
    save_checkpoint(Path(out_dir) / "meta_checkpoint", tensors,
                    {"config": asdict(config), "optimizer": opt_saved, "history": history})


def load_meta_checkpoint(out_dir: Path | None, model: ModulatedSiren, optimizer, config: MetaConfig) -> tuple[int, list]:
    if out_dir is None or not (Path(out_dir) / "meta_checkpoint.json").exists():
        raise UserError(f"nothing to resume: no meta_checkpoint in {out_dir}")
    tensors, info = load_checkpoint(Path(out_dir) / "meta_checkpoint")
    saved = info.get("config", {})
    for key in ("batch_size", "inner_steps", "inner_lr", "seed", "first_order"):
        if saved.get(key) != getattr(config, key):
            raise UserError(f"{out_dir}: cannot resume with {key}={getattr(config, key)!r}, the run used {saved.get(key)!r}")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if set(weights) != set(model.state_dict()):
        raise UserError(f"{out_dir}: cannot resume: the run's network has other weights than this one "
                        "(a different architecture, or --meta-sgd on one side only)")
    model.load_state_dict(weights)
    restore_optimizer(optimizer, tensors, info["optimizer"])
    for group in optimizer.param_groups:  # the stored rate would override a new --outer-lr silently
        group["lr"] = config.outer_lr
    history = list(info["history"])
    return len(history), history


# --- memory -------------------------------------------------------------------------------------
#
# Every activation of the meta-training graph is a (batch, points, width) float32 tensor, one or
# more per sine layer, so the peak is a multiple of T = batch × points × width × 4 bytes per layer:
#
#   second order:  D·(B₀ + A·S) + E   (the graph of every inner step is kept for the meta-gradient:
#                                      the forward's sine inputs and outputs, and the backward's
#                                      cos, incoming gradient and pre-activation gradient; B₀ is the
#                                      final forward plus the outer backward's working space)
#   checkpointed:  D·C_K + E          (only the latents are kept per step; one step is rebuilt at a
#                                      time during the backward pass, whatever S)
#   first order:   D·C_F + E          (each step's graph is dropped before the next)
#
# plus a fixed FIXED_BYTES and 16 bytes per parameter (its gradient, Adam's two moments and the
# copy kept to undo a non-finite step).  glibc hands out blocks under 32 MiB (its largest dynamic
# mmap threshold) from heaps that freed temporaries fragment: below that size of T the resident
# peak is FRAGMENTATION × the live tensors — so the peak *drops* where T reaches 32 MiB (measured:
# 1029 MB at 256 wide × 2 deep, batch 30, vs 720 MB at batch 40) and the estimate is monotone in
# batch, width, depth and steps only on either side of that size.  Constants fitted on resident
# peaks (VmHWM minus VmRSS before training, 2 outer steps: `measure_peak_memory`) of 11
# configurations (widths 128/256, depths 2–6, batches 8–80, 1–3 steps, each mode); on 35 other
# measurements — widths 64–512, depths 2–6, batches 2–40, 1–5 steps, 256–4096 points, each mode —
# the estimate was within ±3 % where T ≥ 32 MiB and −9 … +39 % below (34 of 35 within ±35 %; one
# configuration measured 721, 906 and 839 MB in three runs: fragmentation is not deterministic).
FIXED_BYTES = 84e6
PER_STEP_LAYER = 4.52  # A: second-order activations kept per inner step and sine layer, in T
FINAL_LAYER = 2.25  # B₀
CHECKPOINT_LAYER = 5.27  # C_K
FIRST_ORDER_LAYER = 2.22  # C_F
EXTRA_LAYERS = 1.65  # E: tensors outside the sine layers (shared first-layer product, loss, …)
BYTES_PER_PARAMETER = 16
MMAP_THRESHOLD_MAX = 32 << 20
FRAGMENTATION = {"second_order": 2.26, "checkpointed": 3.36, "first_order": 2.88}
MEMORY_FIT_FRACTION = 0.85  # refuse to start when the estimate exceeds this share of what is available
MEMORY_LIMIT_ENV = "METACOMPRESS_MEMORY_LIMIT"  # bytes: overrides the available memory read from the system


def estimate_peak_memory(width: int, depth: int, latent_dim: int, points: int, batch_size: int, inner_steps: int,
                         first_order: bool = False, checkpoint_steps: bool = False, in_dim: int = 2,
                         out_dim: int = 3) -> int:
    """Resident memory (bytes) one process's meta-training adds at its peak, beyond what it held
    before: ``batch_size`` is that process's share of the batch, ``points`` the coordinates per
    patch (1024 for 32×32 images).  float32, CPU, Linux/glibc; see the formula above."""
    layer_bytes = batch_size * points * width * 4
    if first_order:
        mode, layers = "first_order", depth * FIRST_ORDER_LAYER
    elif checkpoint_steps:
        mode, layers = "checkpointed", depth * CHECKPOINT_LAYER
    else:
        mode, layers = "second_order", depth * (FINAL_LAYER + PER_STEP_LAYER * inner_steps)
    fragmentation = FRAGMENTATION[mode] if layer_bytes < MMAP_THRESHOLD_MAX else 1.0
    parameters = siren_parameter_count(in_dim, width, depth, out_dim) + (latent_dim + 1) * width * depth
    return int(FIXED_BYTES + BYTES_PER_PARAMETER * parameters + fragmentation * (layers + EXTRA_LAYERS) * layer_bytes)


def available_memory() -> int | None:
    """Bytes this process may still use: ``$METACOMPRESS_MEMORY_LIMIT`` if set, else the smaller of
    MemAvailable (/proc/meminfo; os.sysconf's free pages elsewhere) and the room left under a
    cgroup memory limit; None when none of these can be read."""
    override = os.environ.get(MEMORY_LIMIT_ENV)
    if override is not None:
        try:
            value = float(override)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{MEMORY_LIMIT_ENV} must be a number of bytes > 0, got {override!r}")
        return int(value)
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    room = cgroup_room()
    if room is not None:
        found.append(room)
    return min(found) if found else None


def cgroup_room() -> int | None:
    """limit − usage (less reclaimable page cache) of this process's cgroup, v2 or v1; None if unlimited."""
    root = Path("/sys/fs/cgroup")
    for limit_file, usage_file, inactive_key in (("memory.max", "memory.current", "inactive_file"),
                                                 ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
                                                  "total_inactive_file")):
        try:
            limit = (root / limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:
                return None
            usage = int((root / usage_file).read_text())
            stat = (root / limit_file).with_name("memory.stat").read_text().split()
            inactive = int(dict(zip(stat[::2], stat[1::2])).get(inactive_key, 0))
            return max(0, int(limit) - usage + inactive)
        except (OSError, ValueError):
            continue
    return None


def largest_fitting_batch(fits: Callable[[int], bool], upper: int) -> int:
    """The largest batch in [1, upper] for which ``fits`` holds; 0 if none.  A scan, not a bisection:
    the estimate drops where a layer's activations reach 32 MiB (see above)."""
    return next((batch for batch in range(upper, 0, -1) if fits(batch)), 0)


@keeps_global_rng
def measure_peak_memory(width: int, depth: int, latent_dim: int, points: int, batch_size: int, inner_steps: int,
                        first_order: bool = False, checkpoint_steps: bool = False, iterations: int = 2,
                        in_dim: int = 2, out_dim: int = 3) -> int:
    """Measured counterpart of ``estimate_peak_memory`` (Linux): the peak resident memory of
    ``iterations`` outer steps on random data beyond the resident memory before them.  Run it in
    a fresh process — a heap that earlier work left behind absorbs part of the peak."""
    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key} in /proc/self/status")

    torch.manual_seed(0)
    model = ModulatedSiren(in_dim, width, depth, out_dim, latent_dim, w0=50.0)
    coords = torch.rand(points, in_dim) * 2 - 1
    features = torch.rand(batch_size, points, out_dim)
    config = MetaConfig(iterations=iterations, batch_size=batch_size, inner_steps=inner_steps, outer_lr=1e-6,
                        first_order=first_order, checkpoint_steps=checkpoint_steps)
    before = status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    except OSError:
        pass
    meta_train(model, lambda count, generator: (coords, features[:count]), config)
    return status("VmHWM") - before
