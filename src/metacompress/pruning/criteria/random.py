"""Random pruning: i.i.d. uniform scores (use with per-layer thresholds for uniform per-layer sparsity)."""

import torch


def score(model, masks, batches=None, seed: int = 0, **_):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(m.shape, generator=g) for name, m in masks.items()}
