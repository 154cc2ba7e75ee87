"""One trainer for every classification experiment: SGD/Adam, multistep schedules, CIFAR
augmentation, evaluation, JSON-lines metrics, safetensors checkpoints with resume, and DDP.

Data order and augmentation are pure functions of (seed, epoch, sample index), so a run gives the
same result whether it is resumed half-way or split over N processes with the same global batch.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DistributedSampler

from metacompress.checkpoint import (atomic_write_bytes, checkpoint_exists, checkpoint_stem, load_checkpoint,
                                     optimizer_tensors, restore_optimizer, save_checkpoint)
from metacompress.data import ClassificationData
from metacompress.distributed import DistContext, all_reduce_sum, barrier, init_distributed, single_process
from metacompress.errors import UserError
from metacompress.models import ModelSpec, model_from_spec, module_mode
from metacompress.progress import Progress
from metacompress.rng import keeps_global_rng


@dataclass
class TrainConfig:
    epochs: int = 200  # thesis §A.4.2
    batch_size: int = 256  # global batch, split evenly over DDP processes (thesis §A.4.2)
    optimizer: str = "sgd"  # "sgd" or "adam"
    lr: float = 0.1  # thesis §A.4.2
    momentum: float = 0.9
    weight_decay: float = 5e-4  # thesis §A.4.2
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training where lr is multiplied by gamma (§A.4.2)
    gamma: float = 0.1
    augment: bool = False  # pad-4 random crop + horizontal flip (CIFAR, §A.4.2)
    seed: int = 0
    eval_batch_size: int = 1000

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise UserError(f"unknown optimizer {self.optimizer!r} (expected 'sgd' or 'adam')")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("epochs and batch size must be positive and the learning rate > 0")
        self.milestones = tuple(self.milestones)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)  # one metrics record per epoch

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """Multistep schedule: lr × gamma^(number of milestones passed)."""
    passed = sum(epoch >= round(m * config.epochs) for m in config.milestones)
    return config.lr * config.gamma**passed


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) → float, standardized per channel."""
    return (images.float() / 255 - mean) / std


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def augmentation_params(n: int, seed: int, epoch: int, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample crop offsets (n, 2) in [0, 2·pad] and flip flags (n,) for one epoch."""
    g = epoch_generator(seed + 1, epoch)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    return offsets, flips


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random-crop augmentation: zero-pad by ``pad``, crop back at ``offsets``, mirror where ``flips``."""
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(h)  # (b, h)
    cols = offsets[:, 1, None] + torch.arange(w)  # (b, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def model_info(spec: ModelSpec, data: ClassificationData) -> dict:
    """What is needed to rebuild and feed a model: its spec and the input normalization."""
    return {"model": spec.to_dict(), "normalization": {"mean": list(data.mean), "std": list(data.std)},
            "dataset": data.name}


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v for k, v in model.state_dict().items()}


def save_model(stem, model: nn.Module, spec: ModelSpec, data: ClassificationData, extra: dict | None = None) -> None:
    save_checkpoint(stem, model_tensors(model), model_info(spec, data) | (extra or {}))


def model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}


def load_model(stem) -> tuple[nn.Module, dict]:
    """Rebuild a reference model from a checkpoint written by ``save_model`` or the trainer."""
    tensors, info = load_checkpoint(stem)
    try:
        spec = ModelSpec(**info["model"])
    except (KeyError, TypeError):
        raise UserError(f"{checkpoint_stem(stem)}.json: no model description (expected a 'model' entry)") from None
    model = model_from_spec(spec)
    try:
        model.load_state_dict(model_weights(tensors))
    except RuntimeError as e:
        first_line = str(e).strip().splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise UserError(f"{checkpoint_stem(stem)}.safetensors: weights do not fit {spec.name} ({first_line})") from None
    return model, info


@torch.no_grad()
def evaluate(model: nn.Module, data: ClassificationData, batch_size: int = 1000,
             ctx: DistContext | None = None) -> dict:
    """Top-1 accuracy and mean loss; under DDP each process scores a shard and the sums are reduced."""
    ctx = ctx or single_process(next(model.parameters()).device)
    mean, std = channel_stats(data, ctx.device)
    totals = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # correct, loss sum, count
    shard = torch.arange(ctx.rank, len(data), ctx.world_size)
    with module_mode(model, training=False):
        for start in range(0, len(shard), batch_size):
            idx = shard[start:start + batch_size]
            x = normalize(data.images[idx].to(ctx.device), mean, std)
            y = data.labels[idx].to(ctx.device)
            logits = model(x)
            totals += torch.stack([(logits.argmax(1) == y).sum().double(),
                                   F.cross_entropy(logits, y, reduction="sum").double(),
                                   torch.tensor(float(len(idx)), dtype=torch.float64, device=ctx.device)])
    correct, loss, count = all_reduce_sum(totals, ctx).tolist()
    return {"accuracy": correct / count, "loss": loss / count, "count": int(count)}


def shuffled_batches(data: ClassificationData, batch_size: int, seed: int, device="cpu"):
    """An endless stream of normalized ``(x, y)`` batches in a seeded random order (for pruning)."""
    if len(data) == 0:
        raise UserError(f"{data.name} {data.split}: no images to draw pruning batches from")
    batch_size = min(batch_size, len(data))
    mean, std = channel_stats(data, device)
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(data), generator=g)
        for start in range(0, len(data) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            yield normalize(data.images[idx].to(device), mean, std), data.labels[idx].to(device)


def channel_stats(data: ClassificationData, device) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, -1, 1, 1)
    return (torch.tensor(data.mean, device=device).view(shape), torch.tensor(data.std, device=device).view(shape))


@keeps_global_rng
def train(
    spec: ModelSpec,
    train_data: ClassificationData,
    eval_sets: dict[str, ClassificationData],
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    model: nn.Module | None = None,
    progress: bool = True,
    after_step: Callable[[nn.Module], None] | None = None,
    stop_after: int | None = None,
    backward: Callable[..., None] | None = None,
    device: str | torch.device | None = "cpu",
) -> TrainResult:
    """Train ``model`` (or a fresh ``spec`` model seeded by ``config.seed``) on ``train_data``.

    With ``out_dir``, every epoch appends a line to ``metrics.jsonl`` and rewrites the checkpoint
    ``checkpoint.{safetensors,json}``; ``resume=True`` continues from that checkpoint.
    ``after_step`` runs after every optimizer step (e.g. to re-apply pruning masks).
    ``backward(loss, model, epoch, recompute)`` replaces ``loss.backward()`` (e.g. to add a gradient
    penalty); ``recompute()`` redoes the step's forward pass on the same batch and returns the loss.
    ``stop_after`` ends this call after that epoch (a time-sliced job resumes later).
    """
    ctx = init_distributed(device)
    if config.batch_size % ctx.world_size:
        raise UserError(f"batch size {config.batch_size} is not divisible by {ctx.world_size} processes")
    if model is None:
        torch.manual_seed(config.seed)
        model = model_from_spec(spec)
    model.to(ctx.device)
    optimizer = make_optimizer(model, config)
    out_dir = Path(out_dir) if out_dir else None
    start_epoch, history = 0, []
    if resume:
        start_epoch, history = resume_state(out_dir, model, optimizer, spec, config)
        if ctx.is_main:
            trim_metrics(out_dir, start_epoch, history)
    elif out_dir is not None and ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.jsonl").unlink(missing_ok=True)
    if backward is not None and ctx.is_distributed:
        raise UserError("a custom backward (gradient penalties need double backpropagation) runs on one process only")
    net = DistributedDataParallel(model) if ctx.is_distributed else model

    mean, std = channel_stats(train_data, ctx.device)
    sampler = DistributedSampler(range(len(train_data)), num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=config.seed)
    batches = BatchSampler(sampler, config.batch_size // ctx.world_size, drop_last=False)
    for epoch in range(start_epoch, min(config.epochs, stop_after or config.epochs)):
        started = time.perf_counter()
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.set_epoch(epoch)
        if config.augment:
            offsets, flips = augmentation_params(len(train_data), config.seed, epoch)
        net.train()
        totals = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss sum, correct, count
        bar = Progress(len(batches), f"epoch {epoch + 1}/{config.epochs}", "batch", progress and ctx.is_main, lines=0)
        for indices in batches:
            idx = torch.as_tensor(indices)
            images = train_data.images[idx]
            if config.augment:
                images = crop_and_flip(images, offsets[idx], flips[idx])
            x = normalize(images.to(ctx.device), mean, std)
            y = train_data.labels[idx].to(ctx.device)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            if not math.isfinite(loss.item()):
                raise UserError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            if backward is None:
                loss.backward()
            else:
                backward(loss, model, epoch, lambda: F.cross_entropy(net(x), y))
            optimizer.step()
            if after_step is not None:
                after_step(model)
            totals += torch.stack([loss.detach().double() * len(idx), (logits.argmax(1) == y).sum().double(),
                                   torch.tensor(float(len(idx)), dtype=torch.float64, device=ctx.device)])
            bar.update(loss=round(loss.item(), 3))
        bar.close()
        loss_sum, correct, count = all_reduce_sum(totals, ctx).tolist()
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / count, "train_accuracy": correct / count,
                  "epoch_time_s": time.perf_counter() - started}
        for name, data in eval_sets.items():
            scores = evaluate(model, data, config.eval_batch_size, ctx)
            record[f"{name}_accuracy"], record[f"{name}_loss"] = scores["accuracy"], scores["loss"]
        history.append(record)
        if ctx.is_main and out_dir is not None:
            write_epoch(out_dir, model, optimizer, spec, train_data, config, history)
        barrier(ctx)
    return TrainResult(model, history)


def write_epoch(out_dir: Path, model, optimizer, spec, data, config: TrainConfig, history: list[dict]) -> None:
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(history[-1]) + "\n")
    opt_tensors, opt_saved = optimizer_tensors(optimizer)
    info = model_info(spec, data) | {"epoch": history[-1]["epoch"], "config": asdict(config),
                                     "optimizer": opt_saved, "history": history}
    save_checkpoint(out_dir / "checkpoint", model_tensors(model) | opt_tensors, info)


def resume_state(out_dir: Path | None, model, optimizer, spec: ModelSpec, config: TrainConfig) -> tuple[int, list]:
    if out_dir is None or not checkpoint_exists(out_dir / "checkpoint"):
        raise UserError(f"nothing to resume: no checkpoint in {out_dir}")
    tensors, info = load_checkpoint(out_dir / "checkpoint")
    if info.get("model") != spec.to_dict():
        raise UserError(f"{out_dir}/checkpoint.json: was trained as {info.get('model')}, not {spec.to_dict()}")
    saved = info.get("config", {})
    for key in ("optimizer", "batch_size", "seed", "augment"):
        if saved.get(key) != getattr(config, key):
            raise UserError(f"{out_dir}/checkpoint.json: cannot resume with {key}={getattr(config, key)!r}, "
                            f"the run used {saved.get(key)!r}")
    model.load_state_dict(model_weights(tensors))
    restore_optimizer(optimizer, tensors, info["optimizer"])
    return int(info["epoch"]), list(info["history"])


def trim_metrics(out_dir: Path, epoch: int, history: list[dict]) -> None:
    """Make ``metrics.jsonl`` agree with a checkpoint of ``epoch``, atomically: one line per epoch up to
    ``epoch``. A run killed after an epoch's metrics line but before its checkpoint would otherwise
    log that epoch twice; a torn last line is dropped too. Epochs the file lacks come from the
    checkpoint's own history."""
    path = out_dir / "metrics.jsonl"
    lines: dict[int, str] = {}
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        text = ""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and type(record.get("epoch")) is int and 1 <= record["epoch"] <= epoch:
            lines[record["epoch"]] = line  # the last try of an epoch is the one the checkpoint continued
    for record in history:
        if isinstance(record, dict) and type(record.get("epoch")) is int and 1 <= record["epoch"] <= epoch:
            lines.setdefault(record["epoch"], json.dumps(record))
    atomic_write_bytes(path, "".join(lines[e] + "\n" for e in sorted(lines)).encode())
