"""Saliency criteria for pruning at initialization, all with one signature:

    score(model, masks, batches, **options) -> {parameter name: score tensor}   (higher = keep)
"""

from metacompress.pruning.criteria import grasp, magnitude, prospr, random, snip, synflow

CRITERIA = {
    "snip": snip.score,
    "grasp": grasp.score,
    "synflow": synflow.score,
    "magnitude": magnitude.score,
    "random": random.score,
    "prospr": prospr.score,
    # The iterative baselines of Table 3.3 (Jorge et al., 2021) re-score with SNIP's |w ⊙ ∇L(c ⊙ w)|
    # at the current mask; FORCE lets pruned weights come back, Iter-SNIP does not.
    "iter-snip": snip.score,
    "force": snip.score,
}
