"""``prune_at_init``: from a model and some batches to exact-sparsity masks, in one call."""

import math
from dataclasses import dataclass
from itertools import cycle
from typing import Iterable

import torch
from torch import nn

from metacompress.errors import UserError
from metacompress.measure import Measure
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


def prune_at_init(model: nn.Module, batches: Iterable, method: str, sparsity: float,
                  exclude: Iterable[str] = (), scope: str | None = None, rounds: int | None = None,
                  apply: bool = True, **options) -> PruningResult:
    """Score the prunable Conv/Linear weights of ``model`` with ``method`` and keep the best
    ``1 − sparsity`` of them (exactly, up to rounding to a whole weight).

    ``batches`` yields ``(inputs, labels)`` (reused cyclically by iterative methods); ``exclude``
    holds module-name patterns never pruned; ``scope`` is ``"global"`` or ``"layer"`` thresholds;
    ``options`` go to the criterion (e.g. ``steps=3`` for ProsPr). With ``apply`` the pruned
    weights are zeroed in ``model``; keep them at zero during training with ``mask_enforcer``.
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
    masks = full_masks(model, exclude)
    stream = cycle(batches) if batches is not None else None
    was_training = model.training
    model.train()
    try:
        with Measure(next(model.parameters()).device) as measured:
            for k in range(1, rounds + 1):
                try:
                    scores = criterion(model, masks, stream, **options)
                except RuntimeError as e:  # shape mismatches between batches and model, mostly
                    raise UserError(f"{method}: the batches do not fit the model ({str(e).splitlines()[0]})") from None
                check_scores(scores, masks, method)
                if method not in RESURRECTING:
                    scores = {n: torch.where(masks[n] > 0, s, -math.inf) for n, s in scores.items()}
                masks = masks_from_scores(scores, (1 - sparsity) ** (k / rounds), scope)
    finally:
        model.train(was_training)
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
