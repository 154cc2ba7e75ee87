"""ProsPr (thesis §3.3): saliency of each mask entry after M differentiable training steps.

A multiplicative mask c = 1 sits on the initial weights, w₀ = c ⊙ w_init (Eq. 3.6). M SGD steps
(optionally with momentum and weight decay; BatchNorm in train mode on copies of its running
buffers) give w_M(c) (Eqs. 3.7–3.8), and the score is |∂L(w_M, D_M)/∂c| (Eqs. 3.9–3.15), the
meta-gradient through all M updates. With M = 0 this is exactly SNIP's |∂L(c ⊙ w)/∂c|.

The first-order mode (§3.3.2, Eq. 3.20) drops the Hessian terms: ∇L(w_M) ⊙ w_init, with memory
independent of M, for hundreds of inner steps.
"""

from contextlib import nullcontext
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metacompress.errors import UserError
from metacompress.pruning.masks import Masks, Scores


def batch_loss(model: nn.Module, params: dict, buffers: dict, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)


def sgd_step(params: dict, grads: dict, velocity: dict, lr: float, momentum: float, weight_decay: float,
             ) -> tuple[dict, dict]:
    """torch.optim.SGD's update, written functionally so autograd can see through it."""
    new_params, new_velocity = {}, {}
    for name, w in params.items():
        d = grads[name] + weight_decay * w if weight_decay else grads[name]
        v = d if name not in velocity or not momentum else momentum * velocity[name] + d
        new_velocity[name] = v
        new_params[name] = w - lr * v
    return new_params, new_velocity


def take_batches(batches, steps: int, same_batch: bool) -> list:
    """M + 1 batches: M for the inner steps and a fresh one for the meta-loss (or one, reused)."""
    wanted = 1 if same_batch else steps + 1
    taken = list(islice(iter(batches), wanted))
    if len(taken) < wanted:
        raise UserError(f"pruning needs {wanted} batches but the loader gave {len(taken)}")
    return taken * (steps + 1) if same_batch else taken


def initial_params(model: nn.Module, c: Masks, masking) -> dict:
    """w₀: with weight masks (``masking`` None) c ⊙ w_init (Eq. 3.6); with channel masking the
    weights are w_init and ``masking(c)`` scales the channels' activations instead."""
    if masking is None:
        return {name: (p.detach() * c[name] if name in c else p.detach().clone().requires_grad_(True))
                for name, p in model.named_parameters()}
    return {name: p.detach().clone().requires_grad_(True) for name, p in model.named_parameters()}


def meta_gradient(model: nn.Module, masks: Masks, batches: list, lr: float, momentum: float = 0.0,
                  weight_decay: float = 0.0, masking=None) -> Scores:
    """∂L(w_M(c), batches[-1]) / ∂c through len(batches) − 1 SGD steps, evaluated at c = masks.

    ``masking``: None for weight masks; for channel masks a function c → context manager that
    keeps the channels scaled by c during every step (see ``pruning.structured``)."""
    c = {name: m.detach().clone().requires_grad_(True) for name, m in masks.items()}
    params = initial_params(model, c, masking)
    buffers = {name: b.clone() for name, b in model.named_buffers()}  # BN statistics evolve on copies
    velocity: dict = {}
    with masking(c) if masking else nullcontext():
        for batch in batches[:-1]:
            loss = batch_loss(model, params, buffers, batch)
            grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), create_graph=True)))
            params, velocity = sgd_step(params, grads, velocity, lr, momentum, weight_decay)
        loss = batch_loss(model, params, buffers, batches[-1])
    return dict(zip(c, torch.autograd.grad(loss, list(c.values()))))


def first_order_scores(model: nn.Module, masks: Masks, batches: list, lr: float, momentum: float = 0.0,
                       weight_decay: float = 0.0, masking=None) -> Scores:
    """Eq. 3.20, dropping the Hessian terms (∂w_M/∂c ≈ ∂w₀/∂c): plain training steps, constant memory.
    Weight masks: ∇L(w_M) ⊙ w_init. Channel masks: w₀ does not depend on c, so what is left is
    the direct ∂L(w_M, c)/∂c of the last batch."""
    w_init = {name: p.detach().clone() for name, p in model.named_parameters()}
    c = {name: m.detach().clone().requires_grad_(masking is not None) for name, m in masks.items()}
    params = {name: (w * c[name].detach() if name in c and masking is None else w.clone())
              for name, w in w_init.items()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    velocity: dict = {}
    with masking(c) if masking else nullcontext():
        for i, batch in enumerate(batches):
            params = {name: w.detach().requires_grad_(True) for name, w in params.items()}
            loss = batch_loss(model, params, buffers, batch)
            if i == len(batches) - 1:
                if masking is not None:
                    return dict(zip(c, torch.autograd.grad(loss, list(c.values()))))
                grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
                return {name: grads[name] * w_init[name] for name in masks}
            grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
            with torch.no_grad():
                params, velocity = sgd_step(params, grads, velocity, lr, momentum, weight_decay)
    raise UserError("pruning needs at least one batch")


def score(model: nn.Module, masks: Masks, batches, steps: int = 3, lr: float = 0.1, momentum: float = 0.0,
          weight_decay: float = 0.0, same_batch: bool = False, first_order: bool = False, masking=None,
          **_) -> Scores:
    """ProsPr saliencies |g|. M = 3 and a new batch per step (thesis §3.4.3, §A.4.2); the inner SGD
    (lr 0.1, no momentum, no weight decay) is the authors' released default — the thesis gives none."""
    taken = take_batches(batches, steps, same_batch)
    compute = first_order_scores if first_order else meta_gradient
    return {name: g.abs() for name, g in compute(model, masks, taken, lr, momentum, weight_decay, masking).items()}
