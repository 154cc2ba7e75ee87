"""What the thesis plots to explain the regularizer (Figures 4.1, 4.4, 4.5), for any classifier.

* ``gradient_norms`` — per test batch, the ℓ1 and ℓ2 norms of ∇L over weights and activations (Fig. 4.4);
* ``quantization_kl`` — per test batch, KL(p_fp ‖ p_quant) between the predictive distributions of
  the float model and its quantized copy (Fig. 4.5);
* ``induced_loss`` — for random weight perturbations bounded by half a b-bit bin (the quantization
  noise model of §4.2.1), the actual loss change against its first-order prediction ⟨Δ, ∇L⟩ (Fig. 4.1).
"""

import torch
import torch.nn.functional as F
from torch import nn

from metacompress.data.classification import ClassificationData
from metacompress.models import module_mode
from metacompress.quantization.quantizers import Grid, minmax_params
from metacompress.quantization.regularizers import gradient_norm, quantizable_weights, recorded_activations
from metacompress.training import channel_stats, normalize


def test_batches(data: ClassificationData, batch_size: int, limit: int | None = None):
    mean, std = channel_stats(data, "cpu")
    for i, start in enumerate(range(0, len(data), batch_size)):
        if limit is not None and i >= limit:
            return
        yield normalize(data.images[start:start + batch_size], mean, std), data.labels[start:start + batch_size]


def gradient_norms(model: nn.Module, data: ClassificationData, batch_size: int = 100,
                   limit: int | None = None) -> dict[str, list[float]]:
    norms = {"l1": [], "l2": []}
    weights = quantizable_weights(model)
    with module_mode(model, training=False), recorded_activations(model, training_only=False) as activations:
        for x, y in test_batches(data, batch_size, limit):
            activations.clear()
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, [*weights, *activations])
            norms["l1"].append(gradient_norm(grads, 1).item())
            norms["l2"].append(gradient_norm(grads, 2).item())
    return norms


@torch.no_grad()
def quantization_kl(model: nn.Module, quantized: nn.Module, data: ClassificationData, batch_size: int = 100,
                    limit: int | None = None) -> list[float]:
    kls = []
    with module_mode(model, training=False), module_mode(quantized, training=False):
        for x, _ in test_batches(data, batch_size, limit):
            log_p, log_q = F.log_softmax(model(x), 1), F.log_softmax(quantized(x), 1)
            kls.append(F.kl_div(log_q, log_p, log_target=True, reduction="batchmean").item())
    return kls


def induced_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: int = 4, samples: int = 20,
                 seed: int = 0) -> dict[str, list[float]]:
    """Perturb every quantizable weight by Δ ~ U[−δ/2, δ/2], δ its b-bit (signed, min/max) bin width."""
    weights = quantizable_weights(model)
    generator = torch.Generator().manual_seed(seed)
    with module_mode(model, training=False):
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, weights)
        bins = [minmax_params(w, Grid(bits)).scale.item() for w in weights]
        actual, predicted = [], []
        with torch.no_grad():
            for _ in range(samples):
                deltas = [(torch.rand(w.shape, generator=generator) - 0.5) * b for w, b in zip(weights, bins)]
                for w, d in zip(weights, deltas):
                    w.add_(d)
                actual.append(F.cross_entropy(model(x), y).item() - loss.item())
                for w, d in zip(weights, deltas):
                    w.sub_(d)
                predicted.append(sum((d * g).sum() for d, g in zip(deltas, grads)).item())
    return {"actual": actual, "first_order": predicted}
