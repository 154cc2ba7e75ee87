"""SIREN (Sitzmann et al. 2020): an MLP with sine activations, the network COIN overfits (thesis Eq. 5.2)."""

from __future__ import annotations

import math

import torch
from torch import nn


class Siren(nn.Module):
    """``depth`` sine layers sin(ω₀(Wh + b)) of ``width`` units, then a linear layer to ``out_dim``.

    ``depth`` counts sine layers, as the thesis' architecture table does (C.2: "5 layers of
    width 20" is 1,803 parameters for RGB, 0.073 bpp at 16 bits on a Kodak image).
    Initialization as Sitzmann et al.: the first layer U(±1/d_in), the others U(±√(6/d_in)/ω₀),
    biases drawn like the weights of their layer.
    """

    def __init__(self, in_dim: int, width: int, depth: int, out_dim: int, w0: float = 30.0,
                 w0_first: float | None = None):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"a SIREN needs depth ≥ 1 and width ≥ 1, got depth={depth}, width={width}")
        self.w0 = float(w0)
        self.w0_first = float(w0 if w0_first is None else w0_first)
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
        self.last.bias.uniform_(-bound, bound)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        h = coords
        for i, layer in enumerate(self.hidden):
            h = torch.sin((self.w0_first if i == 0 else self.w0) * layer(h))
        return self.last(h)


def siren_parameter_count(in_dim: int, width: int, depth: int, out_dim: int) -> int:
    """Weights and biases of ``Siren(in_dim, width, depth, out_dim)``, without building it."""
    return (in_dim + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * out_dim
