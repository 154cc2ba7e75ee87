"""An independent re-implementation of the official COIN++ learner's settings (Dupont et al. 2022,
github.com/EmilienDupont/coinpp), used to check that metacompress learns at least as well per step.

What it reproduces, each a place where the two implementations could differ:
- coordinates on [0, 1] per axis (ours: [−1, 1]);
- SIREN init: first layer U(±1/d_in), others U(±√(6/d_in)/ω₀), biases alike; the output layer adds
  a constant 0.5 (ours puts 0.5 into its initial bias);
- shifts of every hidden layer from one linear map of the latent (torch's default Linear init);
- inner loop: SGD from a zero latent on the batch-mean MSE × batch size; outer: mean MSE, Adam.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ReferenceModulatedSiren(nn.Module):
    def __init__(self, in_dim: int, width: int, depth: int, out_dim: int, latent_dim: int, w0: float):
        super().__init__()
        self.w0, self.width = w0, width
        dims = [in_dim] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.last = nn.Linear(width, out_dim)
        with torch.no_grad():
            for i, layer in enumerate(self.hidden):
                bound = 1 / layer.in_features if i == 0 else math.sqrt(6 / layer.in_features) / w0
                layer.weight.uniform_(-bound, bound)
                layer.bias.uniform_(-bound, bound)
            bound = math.sqrt(6 / width) / w0
            self.last.weight.uniform_(-bound, bound)
            self.last.bias.uniform_(-bound, bound)
        self.to_shifts = nn.Linear(latent_dim, width * depth)
        self.latent_dim = latent_dim

    def forward(self, coords: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        shifts = self.to_shifts(latents).unsqueeze(1)  # (batch, 1, width·depth)
        h = coords.expand(latents.shape[0], *coords.shape)
        for i, layer in enumerate(self.hidden):
            h = torch.sin(self.w0 * (layer(h) + shifts[..., i * self.width:(i + 1) * self.width]))
        return self.last(h) + 0.5


def unit_grid(size: int) -> torch.Tensor:
    """(size², 2) coordinates on [0, 1]², row-major."""
    axis = torch.linspace(0, 1, size)
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)


def fit(model: ReferenceModulatedSiren, coords, features, steps: int, inner_lr: float, train: bool) -> torch.Tensor:
    latents = torch.zeros(features.shape[0], model.latent_dim, requires_grad=True)
    for _ in range(steps):
        loss = ((model(coords, latents) - features) ** 2).mean() * features.shape[0]
        (grad,) = torch.autograd.grad(loss, latents, create_graph=train)
        latents = latents - inner_lr * grad
    return latents


def outer_loss(model, coords, features, steps: int, inner_lr: float) -> torch.Tensor:
    latents = fit(model, coords, features, steps, inner_lr, train=True)
    return ((model(coords, latents) - features) ** 2).flatten(1).mean(1).mean()


def val_psnr(model, coords, features, steps: int, inner_lr: float) -> float:
    latents = fit(model, coords, features, steps, inner_lr, train=False).detach()
    with torch.no_grad():
        mse = ((model(coords, latents) - features) ** 2).flatten(1).mean(1)
    return float((-10 * torch.log10(mse)).mean())
