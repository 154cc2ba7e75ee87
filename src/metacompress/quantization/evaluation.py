"""Accuracy of a classifier after post-training quantization at several (weight, activation) widths."""

from itertools import islice

from torch import nn

from metacompress.data.classification import ClassificationData
from metacompress.quantization.ptq import quantize_model
from metacompress.training import evaluate, shuffled_batches


def parse_bits(text: str) -> list[int | None]:
    """"8,6,4" → [8, 6, 4]; "fp" stands for floating point (not quantized)."""
    return [None if part.strip().lower() == "fp" else int(part) for part in text.split(",") if part.strip()]


def config_label(w_bits: int | None, a_bits: int | None) -> str:
    return "FP" if w_bits is None and a_bits is None else f"({w_bits or 'fp'},{a_bits or 'fp'})"


def calibration_batches(train_data: ClassificationData, count: int = 4, batch_size: int = 256, seed: int = 0,
                        device="cpu"):
    return list(islice(shuffled_batches(train_data, batch_size, seed, device), count))


def ptq_accuracies(model: nn.Module, configs, test_data: ClassificationData, calibration: list | None = None,
                   **ptq_options) -> dict[str, float]:
    """Test accuracy of ``model`` quantized at each (w_bits, a_bits) of ``configs`` (None = float)."""
    results = {}
    for w_bits, a_bits in configs:
        quantized = model if w_bits is None and a_bits is None else quantize_model(
            model, w_bits, a_bits, calibration, **ptq_options)
        results[config_label(w_bits, a_bits)] = evaluate(quantized, test_data)["accuracy"]
    return results
