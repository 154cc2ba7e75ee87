"""Random pruning: i.i.d. uniform scores (use with per-layer thresholds for uniform per-layer sparsity)."""

import torch


def score(model, masks, batches=None, seed: int = 0, **_):
    """Uniform scores in [0, 1), one per mask entry, on each mask's device.

    They are drawn from a CPU ``torch.Generator`` seeded with ``seed`` and then moved, so the same
    seed gives the same scores, and so the same masks, on every device (CUDA's generator would not)."""
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(m.shape, generator=g, device="cpu").to(m.device) for name, m in masks.items()}
