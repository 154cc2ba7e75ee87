"""What the thesis plots to explain the regularizer (Figures 4.1, 4.4, 4.5), for any classifier.

* ``gradient_norms`` — per test batch, the ℓ1 and ℓ2 norms of ∇L over weights and activations (Fig. 4.4);
* ``quantization_kl`` — per test batch, KL(p_fp ‖ p_quant) between the predictive distributions of
  the float model and its quantized copy (Fig. 4.5);
* ``induced_loss`` — for random weight perturbations bounded by half a b-bit bin (the quantization
  noise model of §4.2.1), the actual loss change against its first-order prediction ⟨Δ, ∇L⟩ (Fig. 4.1).

Each runs on ``device``: None (the default) is where ``model`` is; another device moves the model
(and the quantized copy) there in place, as ``training.train`` does. The test batches are made on
that device; the random perturbations are drawn on the CPU, so a seed gives the same ones everywhere.
"""

import torch
import torch.nn.functional as F
from torch import nn

from metacompress.data.classification import ClassificationData
from metacompress.distributed import resolve_device
from metacompress.models import module_mode
from metacompress.quantization.quantizers import Grid, minmax_params
from metacompress.quantization.regularizers import gradient_norm, quantizable_weights, recorded_activations
from metacompress.training import channel_stats, normalize


def test_batches(data: ClassificationData, batch_size: int, limit: int | None = None,
                 device: str | torch.device = "cpu"):
    """The normalized test set in order, ``batch_size`` at a time (at most ``limit`` batches), on ``device``."""
    mean, std = channel_stats(data, device)
    for i, start in enumerate(range(0, len(data), batch_size)):
        if limit is not None and i >= limit:
            return
        yield (normalize(data.images[start:start + batch_size].to(device), mean, std),
               data.labels[start:start + batch_size].to(device))


def placed(device: str | torch.device | None, *models: nn.Module) -> torch.device:
    """The device the diagnostics run on: ``device`` (the models are moved there) or the first model's."""
    if device is None:
        return next(models[0].parameters()).device
    device = resolve_device(device)
    for model in models:
        model.to(device)
    return device


def gradient_norms(model: nn.Module, data: ClassificationData, batch_size: int = 100,
                   limit: int | None = None, device: str | torch.device | None = None) -> dict[str, list[float]]:
    device = placed(device, model)
    norms = {"l1": [], "l2": []}
    weights = quantizable_weights(model)
    with module_mode(model, training=False), recorded_activations(model, training_only=False) as activations:
        for x, y in test_batches(data, batch_size, limit, device):
            activations.clear()
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, [*weights, *activations])
            norms["l1"].append(gradient_norm(grads, 1).item())
            norms["l2"].append(gradient_norm(grads, 2).item())
    return norms


@torch.no_grad()
def quantization_kl(model: nn.Module, quantized: nn.Module, data: ClassificationData, batch_size: int = 100,
                    limit: int | None = None, device: str | torch.device | None = None) -> list[float]:
    device = placed(device, model, quantized)
    kls = []
    with module_mode(model, training=False), module_mode(quantized, training=False):
        for x, _ in test_batches(data, batch_size, limit, device):
            log_p, log_q = F.log_softmax(model(x), 1), F.log_softmax(quantized(x), 1)
            kls.append(F.kl_div(log_q, log_p, log_target=True, reduction="batchmean").item())
    return kls


def induced_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: int = 4, samples: int = 20,
                 seed: int = 0, device: str | torch.device | None = None) -> dict[str, list[float]]:
    """Perturb every quantizable weight by Δ ~ U[−δ/2, δ/2], δ its b-bit (signed, min/max) bin width
    (``x``, ``y`` are moved to the device the diagnostics run on). The weights are restored exactly
    after each sample (adding and then subtracting Δ would leave float rounding behind)."""
    device = placed(device, model)
    x, y = x.to(device), y.to(device)
    weights = quantizable_weights(model)
    generator = torch.Generator().manual_seed(seed)
    with module_mode(model, training=False):
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, weights)
        bins = [minmax_params(w, Grid(bits)).scale.item() for w in weights]
        actual, predicted = [], []
        with torch.no_grad():
            originals = [w.clone() for w in weights]
            for _ in range(samples):
                deltas = [((torch.rand(w.shape, generator=generator, device="cpu") - 0.5) * b).to(w.device)
                          for w, b in zip(weights, bins)]
                for w, original, d in zip(weights, originals, deltas):
                    torch.add(original, d, out=w)
                actual.append(F.cross_entropy(model(x), y).item() - loss.item())
                for w, original in zip(weights, originals):
                    w.copy_(original)
                predicted.append(sum((d * g).sum() for d, g in zip(deltas, grads)).item())
    return {"actual": actual, "first_order": predicted}
