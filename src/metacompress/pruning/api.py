"""``prune_at_init``: from a model and some batches to exact-sparsity masks, in one call."""

import math
from dataclasses import dataclass
from functools import partial
from itertools import chain, cycle
from typing import Iterable

import torch
from torch import nn

from metacompress.cost import count_params
from metacompress.distributed import resolve_device
from metacompress.errors import UserError
from metacompress.measure import Measure
from metacompress.models import module_mode
from metacompress.pruning.criteria import CRITERIA
from metacompress.pruning.masks import (Masks, Scores, apply_masks, density, full_masks, kept_fractions,
                                        masks_from_scores)

METHODS = tuple(CRITERIA)
# Iterative methods prune along an exponential schedule, density_k = density^(k / rounds).
DEFAULT_ROUNDS = {"synflow": 100, "iter-snip": 60, "force": 60}  # SynFlow paper; FORCE's 60 steps (thesis §3.4.2)
RESURRECTING = {"force"}  # pruned weights may return in a later round
DEFAULT_SCOPE = {"random": "layer"}  # random pruning removes the same fraction of every layer


@dataclass
class PruningResult:
    masks: Masks
    scores: Scores  # normalized to sum to 1 (Eq. 3.1), from the last round
    kept: dict[str, float]  # kept fraction per layer
    sparsity: float  # fraction of prunable weights removed
    seconds: float
    peak_memory_bytes: int


def model_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Where pruning runs: ``device`` (``model`` is moved there, in place) or, if None, the model's."""
    if device is None:
        first = next(model.parameters(), None)
        return torch.device("cpu") if first is None else first.device  # no parameters: refused later
    device = resolve_device(device)
    model.to(device)
    return device


def batch_on(batch, device: torch.device):
    """A batch (a tensor, or a tuple/list of them) with its tensors on ``device`` (no copy if there)."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(t.to(device) if isinstance(t, torch.Tensor) else t for t in batch)
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


class BatchesOn:
    """A re-iterable view of a collection of batches, each moved to ``device`` as it is drawn."""

    def __init__(self, batches: Iterable, device: torch.device):
        self.batches, self.device = batches, device

    def __iter__(self):
        return (batch_on(batch, self.device) for batch in self.batches)


def batches_on(batches: Iterable | None, device: torch.device) -> Iterable | None:
    """``batches`` moved to ``device`` lazily: a collection stays re-iterable (iterative methods reuse
    it cyclically), an iterator stays an iterator."""
    if batches is None:
        return None
    if iter(batches) is batches:
        return (batch_on(batch, device) for batch in batches)
    return BatchesOn(batches, device)


def prune_at_init(model: nn.Module, batches: Iterable, method: str, sparsity: float,
                  exclude: Iterable[str] = (), scope: str | None = None, rounds: int | None = None,
                  apply: bool = True, device: str | torch.device | None = None, **options) -> PruningResult:
    """Score the prunable Conv/Linear weights of ``model`` with ``method`` and keep the best
    ``1 − sparsity`` of them (exactly, up to rounding to a whole weight).

    ``batches`` yields ``(inputs, labels)`` (reused cyclically by iterative methods); ``exclude``
    holds module-name patterns never pruned; ``scope`` is ``"global"`` or ``"layer"`` thresholds;
    ``options`` go to the criterion (e.g. ``steps=3`` for ProsPr). With ``apply`` the pruned
    weights are zeroed in ``model``; keep them at zero during training with ``mask_enforcer``.

    Scoring runs on ``device`` (``model`` is moved there in place; None: where the model is), the
    batches are moved to it as they are drawn, and the masks and scores live there. Random scores
    come from a CPU generator, so random masks are the same on every device; the other criteria
    agree across devices up to float rounding (which can swap weights scored at the threshold).
    """
    if method not in CRITERIA:
        raise UserError(f"unknown pruning method {method!r} (choose from {', '.join(METHODS)})")
    if not (isinstance(sparsity, (int, float)) and 0 <= sparsity < 1):
        raise UserError(f"sparsity must be in [0, 1), got {sparsity!r}")
    rounds = rounds or DEFAULT_ROUNDS.get(method, 1)
    if rounds < 1:
        raise UserError(f"rounds must be a positive integer, got {rounds}")
    scope = scope or DEFAULT_SCOPE.get(method, "global")
    criterion = CRITERIA[method]
    device = model_device(model, device)
    batches = batches_on(batches, device)
    masks = full_masks(model, exclude)
    # A finite collection is reused cyclically by iterative methods; an iterator is drawn from as is.
    stream = None if batches is None else batches if iter(batches) is batches else cycle(batches)
    with module_mode(model, training=True), Measure(device) as measured:
        for k in range(1, rounds + 1):
            try:
                scores = criterion(model, masks, stream, **options)
            except RuntimeError as e:  # shape mismatches between batches and model, mostly
                raise UserError(f"{method}: the batches do not fit the model ({str(e).splitlines()[0]})") from None
            check_scores(scores, masks, method)
            if method not in RESURRECTING:
                scores = {n: torch.where(masks[n] > 0, s, -math.inf) for n, s in scores.items()}
            masks = masks_from_scores(scores, (1 - sparsity) ** (k / rounds), scope)
    if apply:
        apply_masks(model, masks)
    return PruningResult(masks, normalized(scores), kept_fractions(masks), 1 - density(masks),
                         measured.seconds, measured.peak_bytes)


def check_scores(scores: Scores, masks: Masks, method: str) -> None:
    for name, mask in masks.items():
        s = scores.get(name)
        if s is None or s.shape != mask.shape:
            raise UserError(f"{method} returned scores of shape {None if s is None else tuple(s.shape)} "
                            f"for {name}, expected {tuple(mask.shape)}")
        if torch.isnan(s).any():
            raise UserError(f"{method} produced NaN scores for {name} (diverging inner steps? lower the lr)")


def normalized(scores: Scores) -> Scores:
    total = sum(s[torch.isfinite(s)].abs().sum() for s in scores.values())
    return {n: torch.where(torch.isfinite(s), s / total, torch.zeros_like(s)).float() for n, s in scores.items()}


# Structured criteria (thesis §3.2, §3.4.2) → the criterion that scores the channel masks.
STRUCTURED_METHODS = {"3sp": "snip", "prospr": "prospr", "grasp": "grasp", "uniform": "random"}
GRADIENT_MAGNITUDE = {"3sp", "prospr"}  # scores |∂L/∂c̃| that compute-aware pruning can divide by cost
TARGETS = ("params", "flops")
INITS = ("keep", "rescale", "reinit")


@dataclass
class StructuredPruningResult:
    model: nn.Module  # the physically smaller network
    keep: dict[str, torch.Tensor]  # 0/1 per channel, by channel group (its root layer's name)
    scores: dict[str, torch.Tensor]
    groups: list  # the ChannelGroups
    params: tuple[int, int]  # before, after
    flops: tuple[float, float]  # before, after (2 × MACs of conv/linear layers, one example)
    removed: float  # fraction of the target quantity removed
    seconds: float  # scoring time (choosing the channels and slicing the layers excluded, as in §A.2)
    peak_memory_bytes: int


def prune_channels_at_init(model: nn.Module, batches: Iterable, method: str, fraction: float,
                           target: str = "params", compute_aware: bool = False, lam: float = 0.05,
                           exclude: Iterable[str] = (), init: str = "keep", seed: int = 0,
                           device: str | torch.device | None = None, **options) -> StructuredPruningResult:
    """Remove whole channels of ``model`` before training until ``fraction`` of its parameters or
    FLOPs (``target``) are gone, and return the physically smaller network.

    ``method``: 3sp (|∂L/∂c̃|, Algorithm 2), prospr (meta-gradient w.r.t. c̃ through M steps), grasp,
    or uniform (random channels). ``compute_aware`` divides 3SP/ProsPr scores by each channel's
    smoothed cost (λ = ``lam``, thesis Table 3.2 uses 0.05). ``init``: keep the initial weights,
    ``rescale`` them by √(fan_out / pruned fan_out), or ``reinit`` the smaller network.

    ``device`` as for ``prune_at_init``: the channel masks, scores and costs live there and the smaller
    network is built there. Uniform (random) channels and ``reinit`` weights are drawn on the CPU, so
    they are the same on every device.
    """
    from metacompress.pruning import structured as st

    if method not in STRUCTURED_METHODS:
        raise UserError(f"unknown structured method {method!r} (choose from {', '.join(STRUCTURED_METHODS)})")
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise UserError(f"the fraction to remove must be in [0, 1), got {fraction!r}")
    if target not in TARGETS or init not in INITS:
        raise UserError(f"target must be one of {TARGETS} and init one of {INITS}, got {target!r}, {init!r}")
    if compute_aware and method not in GRADIENT_MAGNITUDE:
        raise UserError(f"compute-aware pruning divides gradient magnitudes by cost; {method} has none")
    device = model_device(model, device)
    stream = batches_on(iter(batches) if batches is not None else iter(()), device)
    first = next(stream, None)
    if first is None:
        raise UserError("structured pruning needs at least one batch but the loader is empty")
    stream = chain([first], stream)
    example = first[0][:1]
    groups = st.channel_groups(model, example, exclude)
    masks = st.full_channel_masks(groups, device)
    try:
        with module_mode(model, training=True), Measure(device) as measured:
            scores = CRITERIA[STRUCTURED_METHODS[method]](model, masks, stream, seed=seed, **options,
                                                          masking=partial(st.channel_masking, model, groups))
            if compute_aware:
                layer_costs = st.producer_costs(model, groups, example)
                scores = st.compute_aware(scores, st.channel_costs(groups, layer_costs, device),
                                          sum(layer_costs.values()), lam)
    except RuntimeError as e:
        raise UserError(f"{method}: the batches do not fit the model ({str(e).splitlines()[0]})") from None
    check_scores(scores, masks, method)
    table = st.layer_costs(model, example)
    before = (count_params(model), sum(c.flops for c in table.values()))
    keep = st.channels_to_keep(scores, groups, table, before, fraction, target)
    small = st.shrink(model, groups, keep, example)
    if init == "rescale":
        st.rescale_to_fan_out(small, table)
    elif init == "reinit":
        st.reinitialize(small, seed)
    after = (count_params(small), sum(c.flops for c in st.layer_costs(small, example).values()))
    index = TARGETS.index(target)
    return StructuredPruningResult(small, keep, scores, groups, (before[0], after[0]), (before[1], after[1]),
                                   1 - after[index] / before[index], measured.seconds, measured.peak_bytes)
