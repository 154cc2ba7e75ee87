"""``metacompress demo``: the main features end to end on the bundled samples, with a report."""

import time
from pathlib import Path

import numpy as np

from metacompress.checkpoint import atomic_write_bytes
from metacompress.pruning.experiment import PruneSettings, prune_and_train
from metacompress.recipes import default_config, load_experiment_data, spec_for
from metacompress.quantization.evaluation import calibration_batches, ptq_accuracies
from metacompress.quantization.regularizers import Regularizer, balanced_lambda, recorded_activations
from metacompress.training import TrainConfig, shuffled_batches, train

DEMO_SPARSITY = 0.95
DEMO_QUANT_CONFIGS = ((None, None), (8, 4), (4, 4), (3, 3), (2, 4))
DEMO_CURVE_BITS = (3, 4, 5, 6, 7, 8)  # COIN++'s RD curve: one fit, the latents quantized at each
DEMO_SWEEP = (1, 5, 10, 20, 35, 50, 70, 90)  # JPEG and WebP qualities of the BD-rate anchors


def run_demo(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_data, eval_sets = load_experiment_data("mnist-sample")
    config = default_config("mnist-sample", epochs=12)
    result = train(spec_for("lenet5", train_data), train_data, eval_sets, config, out_dir=out / "lenet5")
    accuracy = result.final["test_accuracy"]
    seconds = time.perf_counter() - started
    pruned = {method: prune_and_train(spec_for("lenet5", train_data), train_data, eval_sets, config,
                                      PruneSettings(method, DEMO_SPARSITY), out_dir=out / f"lenet5-{method}")
              for method in ("snip", "prospr")}
    rows = [f"| {method} | {p.sparsity:.2%} | {p.seconds:.2f} s | {r.final['test_accuracy']:.2%} |"
            for method, (r, p) in pruned.items()]
    report = "\n".join([
        "# metacompress demo report", "",
        "## Training a reference network",
        f"LeNet-5 trained for {config.epochs} epochs (SGD, lr {config.lr}, batch {config.batch_size}) on the "
        f"{len(train_data):,} bundled MNIST training digits: **{accuracy:.2%}** test accuracy on "
        f"{len(eval_sets['test']):,} bundled test digits ({seconds:.1f} s).", "",
        "## Pruning at initialization: ProsPr vs SNIP",
        f"The same LeNet-5, pruned to {DEMO_SPARSITY:.0%} sparsity before training (one global threshold), then "
        f"trained with the same recipe; ProsPr looks through M = 3 training steps, SNIP through none.", "",
        "| method | sparsity | pruning time | test accuracy |", "|---|---|---|---|", *rows, "",
    ])
    robust = quantization_robustness(result.model, spec_for("lenet5", train_data), train_data, eval_sets["test"])
    labels = list(next(iter(robust["accuracy"].values())))
    report += "\n".join([
        "", "## Quantization robustness: gradient-ℓ1 regularization",
        f"The trained LeNet-5 fine-tuned for {robust['epochs']} epochs without a regularizer and with the "
        f"gradient-ℓ1 penalty (Eq. 4.3, λ = {robust['lambda']:.3g} = 0.3 × CE / penalty), then quantized after "
        "training (weights, activations) with symmetric grids and calibrated activation ranges:", "",
        "| fine-tuning | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|",
        *[f"| {row} | " + " | ".join(f"{v:.2%}" for v in accs.values()) + " |" for row, accs in robust["accuracy"].items()],
        "",
    ])
    codec = neural_compression(out)
    report += "\n".join([
        "", "## Neural data compression: COIN++ vs JPEG",
        f"The bundled 256×256 photo compressed with COIN++ and the base network shipped in the package "
        f"(meta-learned on training photos that exclude this one; {codec['steps']} inner steps, {codec['effort']} refinement "
        f"steps with the quantizer in the loop, {codec['bits']}-bit "
        f"latents, range-coded), and with JPEG at the largest quality whose file is no bigger. Rates count whole files.", "",
        "| codec | file | bpp | PSNR | MS-SSIM | encode time |", "|---|---|---|---|---|---|",
        *[f"| {name} | `{r['file']}` | {r['bpp']:.3f} | {r['psnr']:.2f} dB | {r['ms_ssim']:.4f} | {r['encode_time_s']:.2f} s |"
          for name, r in codec["results"].items()],
        "", "Decoded images: " + ", ".join(f"`{r['png']}`" for r in codec["results"].values()) + ".", "",
        f"BD-rate of COIN++ ({DEMO_CURVE_BITS[0]}–{DEMO_CURVE_BITS[-1]}-bit latents of the same fit, each refined "
        f"for its bit-width) at equal PSNR on this photo, against JPEG and WebP at qualities {', '.join(map(str, DEMO_SWEEP))}: " + "; ".join(
            f"{name} {describe_bd_rate(value)}" for name, value in codec["bd_rate"].items()) +
        " (negative: COIN++ needs fewer bits; undefined where the PSNR ranges do not overlap).", "",
    ])
    atomic_write_bytes(out / "report.md", report.encode())
    print(report)
    return {"command": "demo", "coinpp_vs_jpeg": codec["results"], "coinpp_bd_rate": codec["bd_rate"], "lenet5_mnist_sample_test_accuracy": accuracy, "time_s": round(time.perf_counter() - started, 2),
            "pruned_test_accuracy": {m: r.final["test_accuracy"] for m, (r, _) in pruned.items()},
            "ptq_accuracy": robust["accuracy"],
            "report": str(out / "report.md")}


def describe_bd_rate(entry: dict) -> str:
    if entry["bd_rate"] is None:
        return "undefined"
    return f"{entry['bd_rate']:+.1f} % (over {entry['psnr_range'][0]:.2f}–{entry['psnr_range'][1]:.2f} dB)"


def neural_compression(out: Path, bits: int = 5, steps: int = 10, effort: int | None = None) -> dict:
    """The bundled photo through COIN++ (shipped base network, the encoder's default settings) and
    JPEG at no more bytes; files written; and the BD-rate of COIN++ at every bit-width against JPEG
    and WebP on the photo."""
    from metacompress.codecs.classical import Jpeg, WebP, encode_at_bpp
    from metacompress.codecs.coinpp import (DEFAULT_EFFORT, Datapoint, decode, fit_datapoints, quantize_and_pack,
                                            refined)
    from metacompress.data import load_image, sample_path
    from metacompress.data.images import save_image
    from metacompress.inr.base_network import DEFAULT_BASE, load_base
    from metacompress.metrics import bd_overlap, bd_rate, ms_ssim, psnr

    photo = load_image(sample_path("photo"))
    pixels = photo.shape[0] * photo.shape[1]
    base = load_base(DEFAULT_BASE)
    effort = DEFAULT_EFFORT if effort is None else effort
    fitted = fit_datapoints([Datapoint(photo, "uint8")], base, steps)
    curve = {b: quantize_and_pack(refined(fitted, base, b, effort), base, b)[0]
             for b in sorted({*DEMO_CURVE_BITS, bits})}
    coinpp = curve[bits]  # what encode(…, bits, steps, effort) writes: the same fit, refined for ``bits``
    decoded = decode(coinpp.data, base).values
    started = time.perf_counter()
    jpeg_data, quality = encode_at_bpp("jpeg", photo, 8 * len(coinpp.data) / pixels)
    jpeg_seconds = time.perf_counter() - started
    jpeg = Jpeg(quality).decode(jpeg_data)
    results = {}
    for name, data, image, seconds, suffix in (("COIN++", coinpp.data, decoded, coinpp.seconds, "mcz"),
                                               (f"JPEG (quality {quality})", jpeg_data, jpeg, jpeg_seconds, "jpg")):
        stem = "photo-coinpp" if suffix == "mcz" else "photo-jpeg"
        atomic_write_bytes(out / f"{stem}.{suffix}", data)
        save_image(out / f"{stem}.png", np.broadcast_to(image, photo.shape).copy())
        results[name] = {"file": f"{stem}.{suffix}", "png": f"{stem}.png", "bytes": len(data),
                         "bpp": 8 * len(data) / pixels, "psnr": psnr(photo, np.broadcast_to(image, photo.shape)),
                         "ms_ssim": ms_ssim(photo, np.broadcast_to(image, photo.shape)), "encode_time_s": seconds}
    save_image(out / "photo-original.png", photo)

    def sweep(codec) -> tuple[list[float], list[float]]:
        rates, qualities = [], []
        for quality in DEMO_SWEEP:
            data = codec(quality).encode(photo)
            rates.append(8 * len(data) / pixels)
            qualities.append(psnr(photo, np.broadcast_to(codec(quality).decode(data), photo.shape)))
        return rates, qualities

    coinpp_curve = ([8 * len(r.data) / pixels for r in curve.values()], [psnr(photo, r.reconstruction) for r in curve.values()])
    anchors = {"JPEG": sweep(Jpeg), "WebP": sweep(WebP)}
    return {"bits": bits, "steps": steps, "effort": effort, "results": results,
            "bd_rate": {name: {"bd_rate": bd_rate(anchor, coinpp_curve), "psnr_range": bd_overlap(anchor, coinpp_curve)}
                        for name, anchor in anchors.items()}}


def quantization_robustness(model, spec, train_data, test_data, epochs: int = 2) -> dict:
    """Fine-tune copies of ``model`` with and without the gradient-ℓ1 penalty and quantize both."""
    import copy

    x, y = next(shuffled_batches(train_data, 128, 0))
    lam = 0.3 * balanced_lambda(model, x, y, "l1")
    config = TrainConfig(epochs=epochs, batch_size=64, lr=0.01, milestones=(), weight_decay=1e-4)
    calibration = calibration_batches(train_data)
    accuracy = {}
    for row, strength in (("no regularizer", 0.0), ("gradient ℓ1", lam)):
        tuned = copy.deepcopy(model)
        with recorded_activations(tuned) as activations:
            train(spec, train_data, {}, config, model=tuned, progress=False,
                  backward=Regularizer("l1", strength, activations))
        accuracy[row] = ptq_accuracies(tuned, DEMO_QUANT_CONFIGS, test_data, calibration)
    return {"lambda": lam, "epochs": epochs, "accuracy": accuracy}
