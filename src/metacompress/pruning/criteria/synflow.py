"""SynFlow (Tanaka et al., 2020): data-free. With every parameter replaced by its absolute value
and an all-ones input, R = Σ f(1); the score is |θ ⊙ ∂R/∂θ|. Computed in float64 (R overflows
float32 on deep nets) with BatchNorm in eval mode; pruned iteratively (100 rounds) by the API.
The all-ones input is made on the device of the model's weights."""

import torch
from torch.func import functional_call

from metacompress.errors import UserError
from metacompress.models import module_mode
from metacompress.pruning.masks import Masks, Scores


def score(model, masks: Masks, batches=None, input_shape: tuple[int, ...] | None = None, **_) -> Scores:
    if input_shape is None:
        if batches is None:
            raise UserError("SynFlow needs input_shape (or a batch to read it from)")
        input_shape = tuple(next(iter(batches))[0].shape[1:])
    params = {name: p.detach().double().abs() for name, p in model.named_parameters()}
    weights = {name: (params[name] * masks[name].double()).requires_grad_(True) for name in masks}
    buffers = {name: (b.double() if b.is_floating_point() else b) for name, b in model.named_buffers()}
    with module_mode(model, training=False):
        ones = torch.ones((1, *input_shape), dtype=torch.float64, device=next(iter(weights.values())).device)
        total = functional_call(model, (params | weights, buffers), (ones,)).sum()
        grads = torch.autograd.grad(total, list(weights.values()))
    return {name: (g * w.detach()).abs() for (name, w), g in zip(weights.items(), grads)}
