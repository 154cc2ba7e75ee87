"""One pruning experiment: a freshly initialized reference model, pruned at initialization, then
trained with its masks enforced. Shared by ``metacompress prune`` and the pruning benchmarks."""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from torch import nn

from metacompress.checkpoint import load_checkpoint, save_checkpoint
from metacompress.data import ClassificationData
from metacompress.distributed import resolve_device
from metacompress.errors import UserError
from metacompress.models import ModelSpec, model_from_spec
from metacompress.pruning.api import PruningResult, StructuredPruningResult, prune_at_init, prune_channels_at_init
from metacompress.pruning.masks import mask_enforcer
from metacompress.pruning.structured import channel_groups, shrink
from metacompress.training import TrainConfig, TrainResult, load_model, model_weights, shuffled_batches, train
from metacompress.rng import keeps_global_rng


@dataclass
class PruneSettings:
    method: str
    sparsity: float
    exclude: tuple[str, ...] = ()
    scope: str | None = None  # None: the method's default ("global", "layer" for random)
    rounds: int | None = None  # None: the method's default (SynFlow 100, Iter-SNIP/FORCE 60)
    batch_size: int = 128  # ProsPr's meta-batch size (authors' code); every data-driven criterion uses it
    options: dict = field(default_factory=dict)  # criterion options, e.g. {"steps": 3, "first_order": True}
    structured: bool = False  # remove whole channels; ``sparsity`` is then the share of ``target`` removed
    target: str = "params"  # "params" or "flops"
    compute_aware: bool = False
    lam: float = 0.05  # compute smoothing λ (thesis Table 3.2)
    init: str = "keep"  # "keep", "rescale" or "reinit" the smaller network's weights


def prune_model(model, train_data: ClassificationData, settings: PruneSettings, seed: int,
                ) -> PruningResult | StructuredPruningResult:
    """Unstructured: prune ``model`` in place. Structured: return the smaller network in the result.
    Runs where ``model`` is: its batches are made on that device."""
    batches = shuffled_batches(train_data, settings.batch_size, seed, next(model.parameters()).device)
    if settings.structured:
        return prune_channels_at_init(model, batches, settings.method, settings.sparsity, target=settings.target,
                                      compute_aware=settings.compute_aware, lam=settings.lam,
                                      exclude=settings.exclude, init=settings.init, seed=seed, **settings.options)
    return prune_at_init(model, batches, settings.method, settings.sparsity, exclude=settings.exclude,
                         scope=settings.scope, rounds=settings.rounds, **({"seed": seed} | settings.options))


@keeps_global_rng
def prune_and_train(spec: ModelSpec, train_data: ClassificationData, eval_sets: dict[str, ClassificationData],
                    config: TrainConfig, settings: PruneSettings, out_dir: str | Path | None = None,
                    progress: bool = True, device: str | torch.device = "cpu") -> tuple[TrainResult, PruningResult]:
    """Initialize ``spec`` with ``config.seed``, prune it, train it; with ``out_dir`` the masks (weight
    masks, or per-channel keep masks) go to ``masks.{safetensors,json}`` beside the trainer's files.

    ``device``: where the network is pruned (the pruning batches are made there) and trained. The
    initial weights are drawn on the CPU, so a seed starts every device from the same network; random
    and uniform masks are then the same too, the other criteria up to float rounding."""
    torch.manual_seed(config.seed)
    model = model_from_spec(spec).to(resolve_device(device))
    pruned = prune_model(model, train_data, settings, config.seed)
    if settings.structured:
        model, masks, after_step = pruned.model, pruned.keep, None
        info = {"params": list(pruned.params), "flops": list(pruned.flops), "removed": pruned.removed}
    else:
        masks, after_step = pruned.masks, mask_enforcer(pruned.masks)
        info = {"sparsity": pruned.sparsity, "kept": pruned.kept}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_checkpoint(Path(out_dir) / "masks", masks, {"pruning": asdict(settings), "model": spec.to_dict(),
                                                         "seconds": pruned.seconds} | info)
    result = train(spec, train_data, eval_sets, config, out_dir=out_dir, model=model, progress=progress,
                   after_step=after_step, device=device)
    return result, pruned


def load_pruned_model(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """The trained network of a ``prune_and_train`` run folder; a structured run is rebuilt at its
    smaller shape (the full model, shrunk by the saved channel masks) before its weights load."""
    run_dir = Path(run_dir)
    masks, info = load_checkpoint(run_dir / "masks")
    settings = info.get("pruning", {})
    if not settings.get("structured"):
        return load_model(run_dir / "checkpoint")
    spec = ModelSpec(**info["model"])
    model = model_from_spec(spec)
    device = next(model.parameters()).device
    example = torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size, device=device)
    groups = channel_groups(model, example, settings.get("exclude", ()))
    if {g.name for g in groups} != set(masks):
        raise UserError(f"{run_dir}/masks.safetensors: its channel groups do not match {spec.name}")
    small = shrink(model, groups, masks, example)
    tensors, checkpoint_info = load_checkpoint(run_dir / "checkpoint")
    small.load_state_dict(model_weights(tensors))
    return small, checkpoint_info
