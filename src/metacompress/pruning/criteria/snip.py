"""SNIP (Lee et al., 2019; thesis Eqs. 3.1–3.2): |∂L(c ⊙ w)/∂c| at c = current mask.

It is ProsPr's meta-gradient with zero inner steps, summed over ``num_batches`` batches.
"""

from itertools import islice

from metacompress.errors import UserError
from metacompress.pruning.criteria.prospr import meta_gradient
from metacompress.pruning.masks import Masks, Scores


def mask_gradient(model, masks: Masks, batches, num_batches: int = 1, masking=None) -> Scores:
    total = None
    for batch in islice(iter(batches), num_batches):
        g = meta_gradient(model, masks, [batch], lr=0.0, masking=masking)
        total = g if total is None else {name: total[name] + g[name] for name in g}
    if total is None:
        raise UserError("pruning needs at least one batch but the loader is empty")
    return total


def score(model, masks: Masks, batches, num_batches: int = 1, masking=None, **_) -> Scores:
    """Weight masks by default; channel masks (3SP, thesis Algorithm 2 line 1) with ``masking``."""
    return {name: g.abs() for name, g in mask_gradient(model, masks, batches, num_batches, masking).items()}
