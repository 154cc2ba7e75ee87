"""Quantization robustness (thesis ch. 4): quantizers, post-training quantization, gradient
penalties and STE fine-tuning."""

from metacompress.quantization.ptq import fold_batchnorm, quantize_model
from metacompress.quantization.quantizers import Grid, QuantParams, fake_quantize, params_for_range, tensor_params
from metacompress.quantization.regularizers import (PENALTIES, Regularizer, defensive_quantization, grad_l1,
                                                    grad_l2, recorded_activations)

__all__ = ["Grid", "PENALTIES", "QuantParams", "Regularizer", "defensive_quantization", "fake_quantize",
           "fold_batchnorm", "grad_l1", "grad_l2", "params_for_range", "quantize_model", "recorded_activations",
           "tensor_params"]
