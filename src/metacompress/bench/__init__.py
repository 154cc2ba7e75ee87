"""Benchmarks behind ``metacompress bench NAME``: one module per thesis table or figure.

Each ``run(profile, data_root, out_dir)`` returns the ``results`` dict; ``run_benchmark`` wraps it
in the common results document (GUIDE §4) and writes ``<out_dir>/results.json`` beside its plots.
The rate–distortion benchmarks (image-rd, coinpp-rd) also write each curve in CompressAI's JSON
shape under ``<out_dir>/rd/<dataset>/`` and plot them with one function (:mod:`.rd_results`).
"""

from metacompress.bench import (coinpp_effort, coinpp_rd, image_rd, prune_at_init, quant_robustness, structured_accuracy, structured_speedup,
                                train_reference)
from metacompress.bench.results import run_benchmark

BENCHMARKS = {"train-reference": train_reference, "prune-at-init": prune_at_init,
              "structured-speedup": structured_speedup, "structured-accuracy": structured_accuracy,
              "quant-robustness": quant_robustness, "image-rd": image_rd, "coinpp-rd": coinpp_rd,
              "coinpp-effort": coinpp_effort}

__all__ = ["BENCHMARKS", "run_benchmark"]
