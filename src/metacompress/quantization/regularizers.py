"""Quantization-robustness regularizers (thesis Eq. 4.3, §4.2.3) as pure penalties, plus the
training-loop glue that applies them.

Every penalty has the shape ``penalty(loss, params, activations) -> Tensor``:

* ``grad_l1`` — Σ‖∇_w L‖₁ + Σ‖∇_y L‖₁ over weights w and activations y (Eq. 4.3; by Eq. 4.2 it
  bounds the first-order loss change of any ℓ∞-bounded perturbation, i.e. of quantization noise
  at every bit-width);
* ``grad_l2`` — the ℓ2 norm of the same gradient vector (Gulrajani et al. 2017; Hoffman et al. 2019);
* ``defensive_quantization`` — Σ‖WᵀW − I‖²_F over weight matrices, convs reshaped to
  (out, in·k·k) (Lin et al. 2019); it ignores ``loss`` and ``activations``.

The gradient penalties are differentiable (``create_graph=True``): adding λ·penalty to the loss
and calling ``backward`` is exact double backpropagation.
"""

import copy
import math
from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from metacompress.errors import UserError
from metacompress.quantization.ptq import ACTIVATION_MODULES, WEIGHT_LAYERS


def gradient_norm(grads: Sequence[torch.Tensor], p: int) -> torch.Tensor:
    if p == 1:
        return sum(g.abs().sum() for g in grads)
    return torch.sqrt(sum((g * g).sum() for g in grads))


def weighted_gradient_norm(param_grads: Sequence[torch.Tensor], activation_grads: Sequence[torch.Tensor], p: int,
                           activation_weight: float = 1.0) -> torch.Tensor:
    """‖∇_w‖ + (λ_y / λ_w)·‖∇_y‖ (the thesis found no benefit in λ_y ≠ λ_w, so the weight defaults to 1)."""
    total = gradient_norm(param_grads, p)
    if activation_grads and activation_weight:
        total = total + activation_weight * gradient_norm(activation_grads, p)
    return total


def penalty_gradients(loss, params, activations):
    return torch.autograd.grad(loss, [*params, *activations], create_graph=True, allow_unused=True,
                               materialize_grads=True)


def gradient_penalty(loss, params, activations, p: int, activation_weight: float = 1.0) -> torch.Tensor:
    grads = penalty_gradients(loss, params, activations)
    return weighted_gradient_norm(grads[:len(params)], grads[len(params):], p, activation_weight)


def grad_l1(loss: torch.Tensor, params: Sequence[torch.Tensor], activations: Sequence[torch.Tensor] = (),
            activation_weight: float = 1.0) -> torch.Tensor:
    return gradient_penalty(loss, params, activations, 1, activation_weight)


def grad_l2(loss: torch.Tensor, params: Sequence[torch.Tensor], activations: Sequence[torch.Tensor] = (),
            activation_weight: float = 1.0) -> torch.Tensor:
    return gradient_penalty(loss, params, activations, 2, activation_weight)


def defensive_quantization(loss: torch.Tensor | None, params: Sequence[torch.Tensor],
                           activations: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    total = 0.0
    for w in params:
        if w.ndim < 2:
            continue
        m = w.flatten(1)
        # the smaller Gram matrix: ‖WᵀW − I‖² and ‖WWᵀ − I‖² differ by a constant, not in gradient
        gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
        total = total + ((gram - torch.eye(gram.shape[0], device=w.device, dtype=w.dtype)) ** 2).sum()
    return total


PENALTIES = {"l1": grad_l1, "l2": grad_l2, "dq": defensive_quantization}
GRADIENT_NORMS = {"l1": 1, "l2": 2}


def quantizable_weights(model: nn.Module) -> list[torch.Tensor]:
    """The tensors post-training quantization rounds: conv and linear weights."""
    return [m.weight for m in model.modules() if isinstance(m, WEIGHT_LAYERS) and m.weight.requires_grad]


@contextmanager
def recorded_activations(model: nn.Module, training_only: bool = True):
    """Collect the output of every activation module during forward passes with gradients on
    (training-mode ones only, by default; one entry per call, so a reused ``nn.ReLU`` contributes
    each use). Activations computed with functional calls (``F.relu``) are not seen."""
    outputs: list[torch.Tensor] = []

    def record(module, inputs, output):
        if (module.training or not training_only) and torch.is_grad_enabled():
            outputs.append(output)

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, ACTIVATION_MODULES)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class Regularizer:
    """``backward(loss, model, epoch, recompute)`` for the trainer: the loss's gradient plus
    λ·penalty's, from ``start_epoch`` on (thesis §4.3.1 enables it only in the last epochs or as
    fine-tuning). Use it inside ``recorded_activations(model)`` so the step's activations are known.

    ``method="exact"``: double backpropagation. The first-order gradient is computed once with
    ``create_graph=True`` and serves both as the loss's gradient and inside the penalty, so a step
    is one forward, one differentiable backward and one double-backward.

    ``method="finite-difference"`` (gradient norms only): the penalty's gradient is a Hessian-vector
    product, ∇_w P = d/dε ∇_w L(w + ε·s_w, y + ε·s_y) at ε = 0 with s = ∂P/∂g (sign(g) for ℓ1) held
    fixed, taken as a one-sided difference of two ordinary gradients — about two plain steps instead
    of three to four, with an O(ε) error. ε = ``fd_scale`` × the RMS of the quantizable weights;
    ``recompute()`` must redo the step's forward pass and return its loss (same batch).
    BatchNorm running statistics are restored after the perturbed pass.
    """

    def __init__(self, kind: str, lam: float, activations: list | None = None, start_epoch: int = 0,
                 activation_weight: float = 1.0, method: str = "exact", fd_scale: float = 1e-3):
        if kind not in PENALTIES:
            raise UserError(f"unknown regularizer {kind!r} (choose from {', '.join(PENALTIES)})")
        if not lam >= 0:
            raise UserError(f"the regularization strength must be ≥ 0, got {lam!r}")
        if method not in ("exact", "finite-difference") or (method != "exact" and kind == "dq"):
            raise UserError(f"method must be 'exact' or, for gradient norms, 'finite-difference'; got {method!r}")
        self.kind, self.lam, self.start_epoch, self.method = kind, lam, start_epoch, method
        self.activations = activations if activations is not None else []
        self.activation_weight, self.fd_scale = activation_weight, fd_scale
        self.last_penalty = float("nan")

    def __call__(self, loss: torch.Tensor, model: nn.Module, epoch: int = 0, recompute=None) -> None:
        activations = list(self.activations)
        self.activations.clear()
        if epoch < self.start_epoch or self.lam == 0:
            loss.backward()
            return
        weights = quantizable_weights(model)
        if self.kind == "dq":
            penalty = defensive_quantization(None, weights)
            (loss + self.lam * penalty).backward()
            self.last_penalty = penalty.item()
            return
        params = [p for p in model.parameters() if p.requires_grad]
        exact = self.method == "exact"
        grads = torch.autograd.grad(loss, [*params, *activations], create_graph=exact, allow_unused=True,
                                    materialize_grads=True)
        by_param = dict(zip(map(id, params), grads))
        weight_grads, activation_grads = [by_param[id(w)] for w in weights], grads[len(params):]
        penalty = weighted_gradient_norm(weight_grads, activation_grads, GRADIENT_NORMS[self.kind],
                                         self.activation_weight)
        if exact:
            (self.lam * penalty).backward()
            totals = [g.detach() for g in grads[:len(params)]]
        else:
            if recompute is None:
                raise UserError("the finite-difference penalty needs the trainer's recompute() of the forward pass")
            param_grads = list(grads[:len(params)])
            weight_dirs = self.penalty_directions(weight_grads)
            shifts = self.penalty_directions(activation_grads, compact=True)
            del grads, by_param, weight_grads, activation_grads, activations  # free before the second pass
            extra = self.finite_difference(model, params, param_grads, weights, weight_dirs, shifts, recompute)
            totals = [g + e for g, e in zip(param_grads, extra)]
        for p, total in zip(params, totals):
            p.grad = total if p.grad is None else p.grad + total
        self.last_penalty = penalty.item()

    def penalty_directions(self, grads, compact: bool = False):
        """∂‖g‖_p / ∂g: sign(g) for ℓ1 (as int8 when ``compact``: activation-sized), g / ‖g‖₂ for ℓ2."""
        if self.kind == "l1":
            return [torch.sign(g).to(torch.int8 if compact else g.dtype) for g in grads]
        norm = gradient_norm(grads, 2).clamp(min=torch.finfo(torch.float32).tiny) if grads else 1.0
        return [g / norm for g in grads]

    @torch.no_grad()
    def finite_difference(self, model, params, param_grads, weights, weight_dirs, shifts, recompute):
        eps = self.fd_scale * gradient_norm(weights, 2).item() / math.sqrt(sum(w.numel() for w in weights))
        activation_eps = eps * self.activation_weight
        saved = [w.clone() for w in weights]
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        calls = iter(shifts)

        def shift(module, inputs, output):
            return output + activation_eps * next(calls)

        for w, d in zip(weights, weight_dirs):
            w.add_(d, alpha=eps)
        handles = [m.register_forward_hook(shift) for m in model.modules() if isinstance(m, ACTIVATION_MODULES)]
        try:
            with torch.enable_grad():
                perturbed = torch.autograd.grad(recompute(), params, allow_unused=True, materialize_grads=True)
        finally:
            for handle in handles:
                handle.remove()
            for w, original in zip(weights, saved):
                w.copy_(original)
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
            self.activations.clear()
        return [self.lam * (q - g) / eps for q, g in zip(perturbed, param_grads)]


def regularizer_for(kind: str, lam: float, activations: list, method: str = "exact") -> Regularizer:
    """``kind`` one of PENALTIES or "none" (the same fine-tuning without a penalty); ``method``
    applies to the gradient norms (DQ has no second-order term and is always exact)."""
    if kind == "none":
        return Regularizer("l1", 0.0, activations)
    return Regularizer(kind, lam, activations, method="exact" if kind == "dq" else method)


def balanced_lambda(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str) -> float:
    """λ₀ = cross-entropy / penalty on one batch: the strength at which the two terms are equal —
    the centre of the thesis' λ search ("ratios in the same order of magnitude", §4.3.1)."""
    net = copy.deepcopy(model).train()
    with recorded_activations(net) as activations:
        loss = F.cross_entropy(net(x), y)
        regularizer = Regularizer(kind, 1.0, activations)
        regularizer(loss, net)
    return loss.item() / regularizer.last_penalty
