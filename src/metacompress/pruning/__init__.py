"""Pruning at initialization (thesis ch. 3)."""

from metacompress.pruning.api import METHODS, PruningResult, prune_at_init
from metacompress.pruning.masks import (apply_masks, density, full_masks, mask_enforcer, masks_from_scores,
                                        prunable_weights)

__all__ = ["METHODS", "PruningResult", "apply_masks", "density", "full_masks", "mask_enforcer",
           "masks_from_scores", "prune_at_init", "prunable_weights"]
