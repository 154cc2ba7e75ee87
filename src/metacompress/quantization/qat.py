"""Quantization-aware fine-tuning with the straight-through estimator (thesis §2.2.4, Eq. 2.8) —
the STE @ (w, a) rows of Table 4.1.

The model is quantized once with ``quantize_model`` (BN folded, fixed symmetric grids: §4.3.1
fine-tunes "on a fixed (symmetric) quantization grid"), and its full-precision *shadow* weights are
then trained through the fake-quantizers. ``requantize_weights`` puts the trained shadow weights on
a grid of another width, which is how a model fine-tuned for one target is evaluated at others.
"""

from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn.utils.parametrize as parametrize
from torch import nn

from metacompress.quantization.ptq import FakeQuantizer, quantize_model, weight_layers
from metacompress.quantization.quantizers import Grid, tensor_params
from metacompress.training import TrainConfig, train


def ste_finetune(model: nn.Module, w_bits: int, a_bits: int, spec, train_data, eval_sets: dict,
                 config: TrainConfig, batches: Iterable | None = None, progress: bool = False,
                 device: str | torch.device | None = "cpu", **ptq_options) -> fx.GraphModule:
    """Quantize ``model`` at (w_bits, a_bits) and fine-tune its shadow weights through the
    fake-quantizers with ``config``; returns the trained quantized network.

    The grids are fitted where ``model`` is (calibration ``batches`` are moved there); the fine-tuning
    runs on ``device`` (as ``training.train``: "cpu" by default, "auto", "cuda[:N]"), and the returned
    network lives there, its grids with it. ``model`` itself is not changed."""
    quantized = quantize_model(model, w_bits, a_bits, batches, **ptq_options)
    train(spec, train_data, eval_sets, config, model=quantized, progress=progress, device=device)
    return quantized.eval()


def requantize_weights(gm: nn.Module, bits: int, per_channel: bool = False, method: str = "minmax") -> None:
    """Replace every weight grid by a ``bits``-wide one fitted to the current shadow weights."""
    for _, layer in weight_layers(gm):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        params = tensor_params(layer.weight, Grid(bits, "signed"), method, axis=0 if per_channel else None)
        parametrize.register_parametrization(layer, "weight", FakeQuantizer(params))
