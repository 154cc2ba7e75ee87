"""SIREN (Sitzmann et al. 2020): an MLP with sine activations, the network COIN overfits (thesis Eq. 5.2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class Siren(nn.Module):
    """``depth`` sine layers sin(ω₀(Wh + b)) of ``width`` units, then a linear layer to ``out_dim``.

    ``depth`` counts sine layers, as the thesis' architecture table does (C.2: "5 layers of
    width 20" is 1,803 parameters for RGB, 0.073 bpp at 16 bits on a Kodak image).
    Initialization as Sitzmann et al.: the first layer U(±1/d_in), the others U(±√(6/d_in)/ω₀),
    biases drawn like the weights of their layer; ``output_offset`` is added to the output
    layer's initial bias (where the outputs should start).
    """

    def __init__(self, in_dim: int, width: int, depth: int, out_dim: int, w0: float = 30.0,
                 w0_first: float | None = None, output_offset: float | Sequence[float] = 0.0):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"a SIREN needs depth ≥ 1 and width ≥ 1, got depth={depth}, width={width}")
        self.w0 = float(w0)
        self.w0_first = float(w0 if w0_first is None else w0_first)
        self.output_offset = torch.as_tensor(output_offset, dtype=torch.float32).expand(out_dim).clone()
        dims = [in_dim] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.last = nn.Linear(width, out_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for i, layer in enumerate(self.hidden):
            d_in = layer.in_features
            bound = 1.0 / d_in if i == 0 else math.sqrt(6.0 / d_in) / self.w0
            layer.weight.uniform_(-bound, bound)
            layer.bias.uniform_(-bound, bound)
        bound = math.sqrt(6.0 / self.last.in_features) / self.w0
        self.last.weight.uniform_(-bound, bound)
        self.last.bias.uniform_(-bound, bound).add_(self.output_offset)

    def forward(self, coords: torch.Tensor, shifts: torch.Tensor | None = None) -> torch.Tensor:
        """``shifts`` (batch, depth, 1, width), if given, is added inside every sine layer."""
        h = coords
        for i, layer in enumerate(self.hidden):
            z = layer(h) if shifts is None else layer(h) + shifts[:, i]
            h = torch.sin((self.w0_first if i == 0 else self.w0) * z)
        return self.last(h)


def siren_parameter_count(in_dim: int, width: int, depth: int, out_dim: int) -> int:
    """Weights and biases of ``Siren(in_dim, width, depth, out_dim)``, without building it."""
    return (in_dim + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * out_dim


FEATURE_MIDPOINT = 0.5  # features are normalized to [0, 1] (modalities/datapoint.py)


class ModulatedSiren(nn.Module):
    """A SIREN shared across datapoints, specialised to one by shifts β: sin(ω₀(Wh + b + β)).

    Thesis Eq. 5.4 (COIN++): only shifts, at every sine layer, all produced from one latent
    vector by a single linear map (deeper maps hurt, C.7).  A datapoint is stored as its latent.
    The map's bias is the shift at latent 0, so a zero latent start loses nothing (CAVIA).
    ``output_start`` (one value, or one per output channel) is added to the output layer's initial
    bias: where the outputs start.  Features lie in [0, 1], so the default is mid-range, 0.5, as
    the official code (its last layer adds 0.5); training starts it at the training data's mean.
    It matters: Adam moves that bias by about the learning rate per step, so at the thesis' rates
    (1e-6–3e-6) the start is where the outputs stay for thousands of steps — starting at 0 cost
    ~7 dB before training and slower meta-learning (issue 17, CIFAR-10: 5.7 vs 12.4 dB untrained).

    ``meta_sgd`` gives every latent dimension its own inner-loop learning rate, a weight learned by
    the outer loop like any other (Meta-SGD, Li et al. 2017, as Functa uses it), starting at
    ``inner_lr``; ``inner_learning_rates`` is what the inner loop steps with.
    """

    def __init__(self, in_dim: int, width: int, depth: int, out_dim: int, latent_dim: int, w0: float = 30.0,
                 output_start: float | Sequence[float] = FEATURE_MIDPOINT, meta_sgd: bool = False,
                 inner_lr: float = 1e-2):
        super().__init__()
        self.base = Siren(in_dim, width, depth, out_dim, w0=w0, output_offset=output_start)
        self.latent_dim, self.width, self.depth = latent_dim, width, depth
        self.latent_to_shifts = nn.Linear(latent_dim, width * depth)
        self.inner_lrs = nn.Parameter(torch.full((latent_dim,), float(inner_lr))) if meta_sgd else None

    @property
    def meta_sgd(self) -> bool:
        return self.inner_lrs is not None

    def inner_learning_rates(self, default: float) -> float | torch.Tensor:
        """The inner loop's step size: ``default``, or with Meta-SGD the learned per-dimension rates
        (clipped at 0, as Functa clips them: a negative rate would climb the loss)."""
        return default if self.inner_lrs is None else self.inner_lrs.clamp(min=0.0)

    def shifts(self, latents: torch.Tensor) -> torch.Tensor:
        return self.latent_to_shifts(latents).view(-1, self.depth, 1, self.width)  # (batch, depth, 1, width)

    def forward(self, coords: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """coords (batch, points, in_dim) or shared (points, in_dim); latents (batch, latent_dim)
        → features (batch, points, out_dim)."""
        return self.base(coords, self.shifts(latents))
