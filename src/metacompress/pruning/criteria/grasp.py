"""GraSP (Wang et al., 2020): preserve gradient flow. GraSP removes the weights with the largest
−θ ⊙ Hg, so the keep-score returned here is θ ⊙ Hg, with g the gradient of the loss at softmax
temperature T = 200 on a class-balanced batch of 10 samples per class (the paper's settings)."""

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.func import functional_call

from metacompress.errors import UserError
from metacompress.pruning.masks import Masks, Scores


def class_balanced_batch(batches, samples_per_class: int, num_classes: int | None = None):
    """Draw from ``batches`` until every class has ``samples_per_class`` examples (kept on the
    batches' device; the labels are read once per batch)."""
    xs, ys, counts, taken = [], [], {}, 0
    for x, y in batches:
        chosen = []
        for i, label in enumerate(y.tolist()):
            if counts.get(label, 0) < samples_per_class:
                counts[label] = counts.get(label, 0) + 1
                chosen.append(i)
        if chosen:
            index = torch.tensor(chosen, device=y.device)
            xs.append(x[index])
            ys.append(y[index])
            taken += len(chosen)
        full = [c for c in counts.values() if c == samples_per_class]
        if num_classes is not None and len(full) == num_classes:
            break
        if num_classes is None and counts and len(full) == len(counts) and taken >= 10 * samples_per_class:
            break
    if not xs:
        raise UserError("GraSP needs labelled batches but the loader is empty")
    return torch.cat(xs), torch.cat(ys)


def score(model, masks: Masks, batches, temperature: float = 200.0, samples_per_class: int = 10,
          num_classes: int | None = None, masking=None, **_) -> Scores:
    """θ ⊙ Hg over the masked weights; with channel ``masking`` (structured GraSP, thesis §3.4.1)
    the variables are the channel masks c̃ = 1 and the score is c̃ ⊙ H_c̃ g_c̃."""
    x, y = class_balanced_batch(batches, samples_per_class, num_classes)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    params = {name: p.detach() for name, p in model.named_parameters()}
    if masking is None:
        variables = {name: (params[name] * masks[name]).requires_grad_(True) for name in masks}
    else:
        variables = {name: m.detach().clone().requires_grad_(True) for name, m in masks.items()}

    def loss():
        weights = params | variables if masking is None else params
        return F.cross_entropy(functional_call(model, (weights, buffers), (x,)) / temperature, y)

    with masking(variables) if masking else nullcontext():
        g = torch.autograd.grad(loss(), list(variables.values()))
        grads = torch.autograd.grad(loss(), list(variables.values()), create_graph=True)
        z = sum((gi.detach() * gri).sum() for gi, gri in zip(g, grads))
        hessian_g = torch.autograd.grad(z, list(variables.values()))
    return {name: v.detach() * hg for (name, v), hg in zip(variables.items(), hessian_g)}
