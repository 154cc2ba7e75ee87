"""Unstructured pruning masks: which tensors are prunable, masks from scores, keeping them applied.

A mask set is ``{parameter name: 0/1 float tensor of the parameter's shape}``; scores have the
same layout and a higher score means "keep".
"""

from fnmatch import fnmatch
from typing import Iterable

import torch
from torch import nn

from metacompress.errors import UserError

Masks = dict[str, torch.Tensor]
Scores = dict[str, torch.Tensor]

PRUNABLE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_weights(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """Conv/Linear weights by parameter name; ``exclude`` holds module-name patterns (fnmatch)."""
    exclude = tuple(exclude)
    weights = {
        f"{name}.weight" if name else "weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_MODULES) and not any(fnmatch(name, pattern) for pattern in exclude)
    }
    if not weights:
        raise UserError(f"{type(model).__name__} has no prunable Conv/Linear weights"
                        + (f" outside {', '.join(exclude)}" if exclude else ""))
    return weights


def full_masks(model: nn.Module, exclude: Iterable[str] = ()) -> Masks:
    return {name: torch.ones_like(weight, dtype=weight.dtype) for name, weight in prunable_weights(model, exclude).items()}


def masks_from_scores(scores: Scores, density: float, scope: str = "global") -> Masks:
    """Keep exactly ``round(density · n)`` highest-scoring weights, over all layers or per layer."""
    if scope == "layer":
        return {name: top_k_mask(s.flatten(), round(density * s.numel())).view_as(s) for name, s in scores.items()}
    if scope != "global":
        raise UserError(f"unknown threshold scope {scope!r} (expected 'global' or 'layer')")
    flat = torch.cat([s.detach().flatten().to(torch.float64) for s in scores.values()])
    keep = top_k_mask(flat, round(density * flat.numel()))
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start:start + s.numel()].view_as(s).to(s.dtype if s.is_floating_point() else torch.float32)
        start += s.numel()
    return masks


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(values, dtype=torch.float32)
    if k > 0:
        mask[torch.topk(values, k, sorted=False).indices] = 1.0
    return mask


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def mask_enforcer(masks: Masks):
    """A trainer ``after_step`` hook: re-zero pruned weights after every optimizer step, so that
    momentum and weight decay can never revive them."""
    return lambda model: apply_masks(model, masks)


def density(masks: Masks) -> float:
    kept = sum(int(m.sum()) for m in masks.values())
    return kept / sum(m.numel() for m in masks.values())


def kept_fractions(masks: Masks) -> dict[str, float]:
    return {name: float(m.mean()) for name, m in masks.items()}
