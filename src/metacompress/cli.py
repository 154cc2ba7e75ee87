"""The ``metacompress`` command: parses arguments and calls the library.

Contract: ``--json`` prints one JSON object as the last line of stdout; progress goes to stderr;
user errors exit with status 2 and one line on stderr.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

from metacompress.errors import UserError


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def add_data_root(p):
    p.add_argument("--data-root", help="folder holding the datasets (default: $METACOMPRESS_DATA)")


def add_json(p):
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")


def add_training_args(p, models, datasets):
    p.add_argument("--model", required=True, choices=models)
    p.add_argument("--dataset", required=True, choices=datasets)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (split over torchrun processes)")
    p.add_argument("--optimizer", choices=("sgd", "adam"))
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, help="pad-4 random crop + flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.0, help="hold out this share of train for validation")
    p.add_argument("--out", help="run folder for metrics.jsonl and checkpoint.* (default runs/<name>)")
    p.add_argument("--no-progress", action="store_true")
    add_data_root(p)
    add_json(p)


def add_quantization_args(p, models, datasets):
    p.add_argument("--checkpoint", required=True, help="trained model (checkpoint.safetensors + .json)")
    p.add_argument("--model", required=True, choices=models, help="the architecture the checkpoint must hold")
    p.add_argument("--dataset", required=True, choices=datasets)
    p.add_argument("--w-bits", default="8,6,4", help="comma-separated weight widths (2–16, or fp)")
    p.add_argument("--a-bits", default="4", help="comma-separated activation widths (2–16, or fp)")
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel")
    p.add_argument("--weight-range", choices=("minmax", "mse"), default="minmax")
    p.add_argument("--act-range", choices=("bn", "minmax", "mse"), default="bn",
                   help="bn: β ± kγ of the BatchNorm feeding each activation (§4.3.1); else calibration")
    p.add_argument("--bn-k", type=float, default=6.0, help="--act-range bn: k")
    p.add_argument("--first-last-bits", type=int, help="quantize the first and last layers' weights at this width")
    p.add_argument("--seed", type=int, default=0)
    add_data_root(p)
    add_json(p)


def build_parser() -> argparse.ArgumentParser:
    from metacompress.data import CLASSIFICATION_DATASETS
    from metacompress.models import MODEL_NAMES
    from metacompress.pruning import METHODS
    from metacompress.pruning.api import STRUCTURED_METHODS

    parser = OneLineErrorParser(prog="metacompress", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

    p = commands.add_parser("train", help="train a reference model on a classification dataset")
    add_training_args(p, MODEL_NAMES, CLASSIFICATION_DATASETS)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")

    p = commands.add_parser("prune", help="prune a reference model at initialization, then train it")
    add_training_args(p, MODEL_NAMES, CLASSIFICATION_DATASETS)
    p.add_argument("--method", required=True, choices=list(dict.fromkeys(METHODS + tuple(STRUCTURED_METHODS))),
                   help="unstructured: " + ", ".join(METHODS) + "; with --structured: " + ", ".join(STRUCTURED_METHODS))
    p.add_argument("--sparsity", required=True, type=float,
                   help="fraction to remove, in [0, 1): of the prunable weights, or with --structured of --target")
    p.add_argument("--structured", action="store_true", help="remove whole channels: a smaller, faster network")
    p.add_argument("--target", choices=("params", "flops"), default="params", help="--structured: what to remove")
    p.add_argument("--compute-aware", action="store_true", help="--structured: divide scores by channel cost")
    p.add_argument("--lam", type=float, default=0.05, help="--compute-aware: smoothing λ (0 = compute only)")
    init = p.add_mutually_exclusive_group()
    init.add_argument("--rescale", action="store_true", help="--structured: weights × √(fan_out / pruned fan_out)")
    init.add_argument("--reinit", action="store_true", help="--structured: re-initialize the smaller network")
    p.add_argument("--cost-report", action="store_true",
                   help="measure params, FLOPs, size, CPU latency and training-step time before and after")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="module names never pruned (fnmatch pattern, repeatable), e.g. 'fc' or 'layer3.*'")
    p.add_argument("--scope", choices=("global", "layer"), help="one global threshold or one per layer")
    p.add_argument("--rounds", type=int, help="pruning rounds of iterative methods (synflow 100, iter-snip/force 60)")
    p.add_argument("--prune-batch-size", type=int, default=128, help="batch size of the pruning criterion")
    p.add_argument("--steps", type=int, default=3, help="ProsPr: inner training steps M")
    p.add_argument("--inner-lr", type=float, default=0.1, help="ProsPr: inner SGD learning rate")
    p.add_argument("--first-order", action="store_true", help="ProsPr: first-order approximation (Eq. 3.20)")
    p.add_argument("--same-batch", action="store_true", help="ProsPr: one batch for every inner step and the meta-loss")

    p = commands.add_parser("quantize", help="post-training quantization accuracy of a trained classifier")
    add_quantization_args(p, MODEL_NAMES, CLASSIFICATION_DATASETS)

    p = commands.add_parser("robustify", help="fine-tune a trained classifier with a quantization-robustness "
                                              "regularizer, then report its post-training quantization accuracy")
    add_quantization_args(p, MODEL_NAMES, CLASSIFICATION_DATASETS)
    p.add_argument("--reg", required=True, choices=("l1", "l2", "dq", "none"),
                   help="l1: gradient ℓ1 (thesis Eq. 4.3); l2: gradient ℓ2; dq: Defensive Quantization; none: plain")
    p.add_argument("--lam", type=float, required=True, help="regularization strength λ (λ_w = λ_y, §4.3.1)")
    p.add_argument("--method", choices=("exact", "finite-difference"), default="exact",
                   help="l1/l2: exact double backprop, or a finite-difference Hessian-vector product (~2× cheaper)")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs with the regularizer")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (constant)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", help="folder for the fine-tuned checkpoint (default runs/<model>-<dataset>-<reg>)")
    p.add_argument("--no-progress", action="store_true")

    p = commands.add_parser("encode", help="compress a datapoint into a .mcz file (COIN++ with a base network, or COIN)")
    p.add_argument("input", help="the datapoint: an 8-bit image; with --base for other data, a WAV/FLAC, NIfTI/TIFF "
                                 "volume or netCDF/.npy globe")
    p.add_argument("-o", "--output", help="the .mcz file to write (default: INPUT with suffix .mcz)")
    p.add_argument("--codec", choices=("coinpp", "coin"), default="coinpp",
                   help="coinpp: fit latents of a meta-learned base network (fast); coin: overfit a SIREN (slow)")
    p.add_argument("--base", help="coinpp: base network (BASE.safetensors + BASE.json; default: the bundled photo base)")
    p.add_argument("--bits", type=int, help="coinpp: latent bits (3–8, default 5); coin: 16 = fp16 weights, 2–15 uniform")
    p.add_argument("--steps", type=int, default=10, help="coinpp: inner-loop steps fitting the latents (thesis: 3–10)")
    p.add_argument("--no-entropy", action="store_true", help="coinpp: store fixed-width symbols, no entropy coding")
    p.add_argument("--time", type=int, help="coinpp, globes: the time step of a multi-step netCDF file")
    p.add_argument("--bpp", type=float, default=0.3, help="coin: target bits per pixel, header included (picks the network)")
    p.add_argument("--iters", type=int, default=50_000, help="coin: Adam iterations (thesis: 50k)")
    p.add_argument("--lr", type=float, default=2e-4, help="coin: Adam learning rate")
    p.add_argument("--patience", type=int, help="coin: stop early after this many iterations without a new best PSNR")
    p.add_argument("--depth", type=int, help="coin: sine layers (with --width: overrides the architecture --bpp picks)")
    p.add_argument("--width", type=int, help="coin: units per sine layer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    p.add_argument("--no-progress", action="store_true")
    add_json(p)

    p = commands.add_parser("decode", help="reconstruct a datapoint from a .mcz file")
    p.add_argument("input", help="the .mcz file")
    p.add_argument("-o", "--output", required=True,
                   help="file to write: .png/.tif (images), .wav/.flac (audio), .nii/.nii.gz (volumes), .npy/.nc (globes)")
    p.add_argument("--base", help="COIN++ files: the base network they were encoded with (default: the bundled one)")
    p.add_argument("--scale", type=float, default=1.0, help="COIN images: decode at this multiple of the stored resolution")
    p.add_argument("--region", help="COIN images: x0,y0,x1,y1: decode only this rectangle of the (scaled) output")
    p.add_argument("--max-samples", type=int,
                   help="refuse outputs of more pixels/samples than this (default 2^26, a decompression-bomb guard; "
                        "0: no cap)")
    p.add_argument("--max-work", type=float,
                   help="COIN files: refuse decodes of more multiply-accumulates than this (default 2^24 per byte "
                        "of the file, a decompression-bomb guard; 0: no cap)")
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    add_json(p)

    p = commands.add_parser("train-base", help="meta-learn a COIN++ base network on a modality's training data")
    p.add_argument("--modality", required=True, choices=("image", "audio", "volume", "sphere"))
    p.add_argument("--data", required=True, help="training data: a folder (searched recursively) or one file")
    p.add_argument("--out", required=True, help="base network stem: writes OUT.safetensors + OUT.json")
    p.add_argument("--patch", help="patch shape, comma-separated (defaults: image 32,32; audio 800; volume 16,16,16; "
                                   "sphere: the whole globe)")
    p.add_argument("--width", type=int, default=512, help="units per sine layer (thesis C.3: 512)")
    p.add_argument("--depth", type=int, default=10, help="sine layers (thesis C.3: 10)")
    p.add_argument("--latent-dim", type=int, default=128, help="latent size per patch: sets the rate")
    p.add_argument("--w0", type=float, default=50.0, help="SIREN frequency ω₀ (thesis C.3: 50)")
    p.add_argument("--iters", type=int, default=1000, help="outer-loop iterations")
    p.add_argument("--batch-size", type=int, default=64, help="patches per outer step (split over torchrun processes)")
    p.add_argument("--inner-steps", type=int, default=3)
    p.add_argument("--inner-lr", type=float, default=1e-2)
    p.add_argument("--outer-lr", type=float, default=3e-6, help="Adam learning rate (thesis: 3e-6 CIFAR-10, 1e-6 others)")
    p.add_argument("--first-order", action="store_true", help="first-order meta-gradients (thesis C.7: worse)")
    p.add_argument("--checkpoint-steps", action="store_true", help="recompute inner steps on backward: less memory")
    p.add_argument("--variables", help="sphere: comma-separated netCDF variables (default: all on the main grid)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of datapoints held out for validation PSNR")
    p.add_argument("--resume", action="store_true", help="continue from OUT.run/meta_checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing base network at OUT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_json(p)

    from metacompress.archive_cli import add_archive_parser

    add_archive_parser(commands, add_json)

    p = commands.add_parser("bench", help="run a benchmark and write benchmarks/results/<name>/")
    p.add_argument("name", choices=sorted(bench_names()))
    p.add_argument("--profile", choices=("cpu", "paper"), default="cpu",
                   help="cpu: ≤ 60 min on 2 cores; paper: the thesis' full settings (GPU, full data)")
    p.add_argument("--out", help="results folder (default benchmarks/results/<name>)")
    p.add_argument("--codec", choices=("coin",), help="image-rd: the neural codec to compare (default coin)")
    p.add_argument("--modality", choices=("cifar10", "kodak", "audio", "volume", "sphere"),
                   help="coinpp-rd: the test setting")
    add_data_root(p)
    add_json(p)

    p = commands.add_parser("demo", help="run the main features end to end on bundled samples")
    p.add_argument("--out", default="demo-output", help="folder for the report")
    add_json(p)
    return parser


def training_setup(args):
    """Config, data and model spec from the shared training arguments."""
    from metacompress.recipes import default_config, load_experiment_data, spec_for

    for option in ("lr", "momentum", "weight_decay"):
        if getattr(args, option) is not None:
            check_finite(getattr(args, option), "--" + option.replace("_", "-"), positive=option == "lr")
    if args.epochs is not None:
        check_positive(args.epochs, "--epochs")
    if args.batch_size is not None:
        check_positive(args.batch_size, "--batch-size")
    if not 0.0 <= args.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    config = default_config(args.dataset, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                            lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                            augment=args.augment, seed=args.seed)
    train_data, eval_sets = load_experiment_data(args.dataset, args.data_root, args.val_fraction, args.seed)
    return config, train_data, eval_sets, spec_for(args.model, train_data)


def training_summary(args, result, config, train_data, out: Path, started: float) -> dict:
    from metacompress.data import load_classification
    from metacompress.recipes import FINAL_SPLITS
    from metacompress.training import evaluate

    summary = {"command": args.command, "model": args.model, "dataset": args.dataset, "train_size": len(train_data),
               "epochs": config.epochs, "out": str(out), "time_s": round(time.perf_counter() - started, 2)}
    summary |= {k: v for k, v in result.final.items() if k.endswith("accuracy") or k == "epoch_time_s"}
    for split in FINAL_SPLITS.get(args.dataset, ()):
        scores = evaluate(result.model, load_classification(args.dataset, split, args.data_root))
        summary[f"{split}_accuracy"] = scores["accuracy"]
    return summary


def command_train(args) -> dict:
    from metacompress.training import train

    config, train_data, eval_sets, spec = training_setup(args)
    out = Path(args.out or f"runs/{args.model}-{args.dataset}-seed{args.seed}")
    started = time.perf_counter()
    result = train(spec, train_data, eval_sets, config, out_dir=out, resume=args.resume,
                   progress=not args.no_progress)
    summary = training_summary(args, result, config, train_data, out, started)
    print_table(summary)
    return summary


def command_prune(args) -> dict:
    from metacompress.pruning import METHODS
    from metacompress.pruning.experiment import PruneSettings, prune_and_train

    if (args.method in METHODS) != (not args.structured or args.method in ("prospr", "grasp")):
        raise UserError(f"--method {args.method} is {'un' if args.method in METHODS else ''}structured: "
                        f"{'drop' if args.structured else 'add'} --structured")
    check_positive(args.prune_batch_size, "--prune-batch-size")
    if args.rounds is not None:
        check_positive(args.rounds, "--rounds")
    if args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    check_finite(args.inner_lr, "--inner-lr", positive=True)
    check_finite(args.lam, "--lam")
    config, train_data, eval_sets, spec = training_setup(args)
    options = {"steps": args.steps, "lr": args.inner_lr, "first_order": args.first_order,
               "same_batch": args.same_batch} if args.method == "prospr" else {}
    settings = PruneSettings(args.method, args.sparsity, tuple(args.exclude), args.scope, args.rounds,
                             args.prune_batch_size, options, structured=args.structured, target=args.target,
                             compute_aware=args.compute_aware, lam=args.lam,
                             init="rescale" if args.rescale else "reinit" if args.reinit else "keep")
    kind = "structured-" if args.structured else ""
    out = Path(args.out or f"runs/prune-{args.model}-{args.dataset}-{kind}{args.method}-{args.sparsity:g}-seed{args.seed}")
    started = time.perf_counter()
    full_model = None
    if args.cost_report:
        from metacompress.models import model_from_spec

        full_model = model_from_spec(spec)
    result, pruned = prune_and_train(spec, train_data, eval_sets, config, settings, out_dir=out,
                                     progress=not args.no_progress)
    summary = {"method": args.method, "requested_sparsity": args.sparsity,
               "pruning_time_s": round(pruned.seconds, 3),
               "pruning_peak_memory_mb": round(pruned.peak_memory_bytes / 2**20, 1)}
    if args.structured:
        summary |= {"target": args.target, "removed": pruned.removed, "params_before": pruned.params[0],
                    "params_after": pruned.params[1], "flops_before": pruned.flops[0], "flops_after": pruned.flops[1]}
    else:
        summary |= {"sparsity": pruned.sparsity,
                    "weights_zero_after_training": zero_fraction(result.model, pruned.masks)}
    if full_model is not None:
        from metacompress.cost import cost_report
        from metacompress.training import channel_stats, normalize

        mean, std = channel_stats(train_data, "cpu")
        example = normalize(train_data.images[:1], mean, std)
        classes = len(train_data.classes)
        summary["cost_before"] = cost_report(full_model, example, classes, config.batch_size)
        summary["cost_after"] = cost_report(result.model, example, classes, config.batch_size)
    summary = training_summary(args, result, config, train_data, out, started) | summary
    print_table(summary)
    return summary


def quantization_setup(args):
    """The checkpoint's model (checked against --model), the data, and the PTQ grid of the arguments."""
    from itertools import product

    from metacompress.quantization.evaluation import calibration_batches, parse_bits
    from metacompress.recipes import load_experiment_data
    from metacompress.training import load_model

    model, info = load_model(args.checkpoint)
    if info["model"]["name"] != args.model:
        raise UserError(f"{args.checkpoint}: holds a {info['model']['name']}, not a {args.model}")
    train_data, eval_sets = load_experiment_data(args.dataset, args.data_root)
    if info["model"]["num_classes"] != len(train_data.classes):
        raise UserError(f"{args.checkpoint}: has {info['model']['num_classes']} classes, "
                        f"{args.dataset} has {len(train_data.classes)}")
    channels = train_data.images.shape[1]
    if info["model"].get("in_channels", channels) != channels:
        raise UserError(f"{args.checkpoint}: takes {info['model']['in_channels']}-channel images, "
                        f"{args.dataset} has {channels}")
    try:
        configs = [(None, None)] + list(product(parse_bits(args.w_bits), parse_bits(args.a_bits)))
    except ValueError:
        raise UserError(f"bit-widths must be comma-separated integers or fp, got {args.w_bits!r} / {args.a_bits!r}")
    options = {"per_channel": args.per_channel, "weight_range": args.weight_range, "act_range": args.act_range,
               "bn_k": args.bn_k, "first_last_bits": args.first_last_bits}
    return model, info, train_data, eval_sets["test"], configs, calibration_batches(train_data, seed=args.seed), options


def command_quantize(args) -> dict:
    from metacompress.quantization.evaluation import ptq_accuracies

    model, _, _, test_data, configs, calibration, options = quantization_setup(args)
    accuracies = ptq_accuracies(model, configs, test_data, calibration, **options)
    summary = {"command": "quantize", "checkpoint": args.checkpoint, "model": args.model, "dataset": args.dataset,
               "test_size": len(test_data), "options": options, "accuracy": accuracies}
    for label, accuracy in accuracies.items():
        print(f"{label:>12}: {100 * accuracy:6.2f} %")
    return summary


def command_robustify(args) -> dict:
    from metacompress.models import ModelSpec
    from metacompress.quantization.evaluation import ptq_accuracies
    from metacompress.quantization.regularizers import recorded_activations, regularizer_for
    from metacompress.training import TrainConfig, save_model, train

    model, info, train_data, test_data, configs, calibration, options = quantization_setup(args)
    before = ptq_accuracies(model, configs, test_data, calibration, **options)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, milestones=(),
                         weight_decay=args.weight_decay, augment=info.get("config", {}).get("augment", False),
                         seed=args.seed)
    spec = ModelSpec(**info["model"])
    started = time.perf_counter()
    with recorded_activations(model) as activations:
        regularizer = regularizer_for(args.reg, args.lam, activations, args.method)
        result = train(spec, train_data, {}, config, model=model, progress=not args.no_progress,
                       backward=regularizer)
    seconds = time.perf_counter() - started
    out = Path(args.out or f"runs/{args.model}-{args.dataset}-{args.reg}")
    save_model(out / "checkpoint", model, spec, train_data, {"robustify": {"reg": args.reg, "lam": args.lam}})
    after = ptq_accuracies(model, configs, test_data, calibration, **options)
    print(f"{'':>12}  {'before':>8}  {'after':>8}")
    for label in before:
        print(f"{label:>12}: {100 * before[label]:7.2f}%  {100 * after[label]:7.2f}%")
    return {"command": "robustify", "reg": args.reg, "lam": args.lam, "method": regularizer.method,
            "epochs": args.epochs, "out": str(out),
            "fine_tune_s": round(seconds, 2), "final_penalty": regularizer.last_penalty,
            "train_loss": result.final.get("train_loss"), "accuracy_before": before, "accuracy_after": after}


def zero_fraction(model, masks) -> float:
    """Share of the prunable weights that are exactly zero in the trained model."""
    params = dict(model.named_parameters())
    zeros = sum(int((params[name] == 0).sum()) for name in masks)
    return zeros / sum(m.numel() for m in masks.values())


def print_table(summary: dict) -> None:
    if not is_main_process():  # under torchrun every rank shares stdout; one table is enough
        return
    for key, value in summary.items():
        print(f"{key:>22}: {value:.4f}" if isinstance(value, float) else f"{key:>22}: {value}")


def command_encode(args) -> dict:
    if args.codec == "coin":
        return command_encode_coin(args)
    from metacompress.checkpoint import atomic_write_bytes
    import numpy as np

    from metacompress.codecs.coinpp import DEFAULT_BITS, encode
    from metacompress.data.datapoints import read_datapoint
    from metacompress.output_paths import check_output_file

    output = check_output_file(args.output or Path(args.input).with_suffix(".mcz"), [args.input], args.force)
    base, base_name = load_base_argument(args.base)
    point = read_datapoint(args.input, base.config, args.time)
    bits = DEFAULT_BITS if args.bits is None else args.bits
    result = encode(point, base, bits=bits, steps=args.steps, entropy=not args.no_entropy)
    atomic_write_bytes(output, result.data)
    samples = math.prod(point.values.shape[:-1])
    summary = {"command": "encode", "codec": "coinpp", "input": str(args.input), "output": str(output),
               "base": base_name, "modality": base.config["modality"], "shape": list(point.values.shape),
               "bytes": len(result.data), "header_bytes": result.header_bytes,
               "bits_per_sample": 8 * len(result.data) / samples,
               "compression_ratio": point.values.size * np.dtype(point.dtype).itemsize / len(result.data),
               "psnr": result.psnr, "bits": bits, "steps": args.steps, "entropy_coding": not args.no_entropy,
               "patches": result.tiles, "encode_time_s": round(result.seconds, 3)}
    print_table(summary)
    return summary


def load_base_argument(path: str | None):
    """The base network at ``path``, or the one bundled with the package."""
    from metacompress.inr.base_network import DEFAULT_BASE, load_base

    stem = Path(path) if path else DEFAULT_BASE
    if path and stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    return load_base(stem), str(stem)


def command_encode_coin(args) -> dict:
    from metacompress.checkpoint import atomic_write_bytes
    from metacompress.codecs.coin import CoinConfig, architecture_for, check_bits, encode_image
    from metacompress.data.images import load_image
    from metacompress.output_paths import check_output_file

    if (args.depth is None) != (args.width is None):
        raise UserError("--depth and --width go together")
    check_positive(args.iters, "--iters")
    if args.patience is not None:
        check_positive(args.patience, "--patience")
    check_finite(args.lr, "--lr", positive=True)
    output = check_output_file(args.output or Path(args.input).with_suffix(".mcz"), [args.input], args.force)
    image = load_image(args.input, keep_alpha=True)
    bits = 16 if args.bits is None else args.bits
    check_bits(bits)
    depth, width = (args.depth, args.width) if args.depth else architecture_for(args.bpp, *image.shape, bits)
    config = CoinConfig(bpp=args.bpp, bits=bits, iterations=args.iters, lr=args.lr, patience=args.patience,
                        depth=depth, width=width, seed=args.seed)
    with progress_bar(args.iters, "encoding", args.no_progress) as bar:
        def progress(iteration, psnr, best):
            bar.update(1)
            if iteration % 25 == 0 or iteration == 1:
                bar.set_postfix(psnr=f"{psnr:.2f}", best=f"{best:.2f}", refresh=False)
        result = encode_image(image, config, progress)
    atomic_write_bytes(output, result.data)
    pixels = image.shape[0] * image.shape[1]
    summary = {"command": "encode", "codec": "coin", "input": str(args.input), "output": str(output),
               "shape": list(image.shape), "bytes": len(result.data), "bpp": 8 * len(result.data) / pixels,
               "psnr": result.psnr, "depth": result.depth, "width": result.width, "bits": bits,
               "iterations": result.iterations_run, "best_iteration": result.best_iteration,
               "encode_time_s": round(result.seconds, 2),
               "iterations_per_s": round(result.iterations_run / result.seconds, 2)}
    print_table(summary)
    return summary


def command_decode(args) -> dict:
    from metacompress.codecs.base import peek

    from metacompress.output_paths import check_output_file

    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if args.max_samples is not None and args.max_samples < 0:
        raise UserError(f"--max-samples must be ≥ 0 (0: no cap), got {args.max_samples}")
    if args.max_work is not None and not (math.isfinite(args.max_work) and args.max_work >= 0):
        raise UserError(f"--max-work must be a finite number ≥ 0 (0: no cap), got {args.max_work}")
    check_output_file(args.output, [path], args.force)
    data = path.read_bytes()
    codec, _ = peek(data, str(path))
    started = time.perf_counter()
    if codec == "coin":
        from metacompress.codecs.coin import decode_image
        from metacompress.data.images import save_image

        region = parse_region(args.region) if args.region else None
        values = decode_image(data, scale=args.scale, region=region, source=str(path), max_samples=args.max_samples,
                              max_macs=None if args.max_work is None else int(args.max_work))
        seconds = time.perf_counter() - started
        save_image(args.output, values)
    else:
        from metacompress.codecs.coinpp import decode
        from metacompress.data.datapoints import write_datapoint

        if args.scale != 1.0 or args.region or args.max_work is not None:
            raise UserError("--scale, --region and --max-work apply to COIN images; this is a COIN++ file")
        base, _ = load_base_argument(args.base)
        point = decode(data, base, str(path), args.max_samples)
        seconds = time.perf_counter() - started
        write_datapoint(args.output, point, base.config)
        values = point.values
    summary = {"command": "decode", "codec": codec, "input": str(path), "output": str(args.output),
               "shape": list(values.shape), "decode_time_s": round(seconds, 3)}
    print_table(summary)
    return summary


def command_train_base(args) -> dict:
    from metacompress.distributed import init_distributed
    from metacompress.inr.base_network import save_base
    from metacompress.inr.base_training import prepare_training, train_base
    from metacompress.inr.metalearning import MetaConfig, psnr_from_mse

    if not (args.resume or args.force):
        for suffix in (".safetensors", ".json"):
            if Path(args.out + suffix).exists():
                raise UserError(f"--out {args.out}: {args.out + suffix} already exists; pass --force to replace "
                                "it or --resume to continue its run")
    meta = MetaConfig(iterations=args.iters, batch_size=args.batch_size, inner_steps=args.inner_steps,
                      inner_lr=args.inner_lr, outer_lr=args.outer_lr, first_order=args.first_order,
                      checkpoint_steps=args.checkpoint_steps, seed=args.seed)  # validated before any data is read
    ctx = init_distributed("cpu")
    patch = parse_ints(args.patch, "--patch") if args.patch else None
    variables = args.variables.split(",") if args.variables else None
    settings, train_points, val_points = prepare_training(
        args.modality, args.data, patch=patch, width=args.width, depth=args.depth, latent_dim=args.latent_dim,
        w0=args.w0, variables=variables, val_fraction=args.val_fraction, seed=args.seed)
    run_dir = Path(f"{args.out}.run")
    started = time.perf_counter()
    with progress_bar(args.iters, "meta-training", args.no_progress or not ctx.is_main) as bar:
        def progress(iteration, loss):
            bar.update(1)
            if iteration % 10 == 0:
                bar.set_postfix(psnr=f"{psnr_from_mse(loss):.2f}", refresh=False)
        base = train_base(settings, train_points, val_points, meta, run_dir, args.resume, progress, ctx)
    seconds = time.perf_counter() - started
    digest = save_base(args.out, base) if ctx.is_main else None
    training = base.config["training"]
    summary = {"command": "train-base", "modality": args.modality, "out": args.out, "hash": digest,
               "parameters": sum(p.numel() for p in base.model.parameters()),
               "train_datapoints": len(train_points), "val_datapoints": len(val_points),
               "processes": ctx.world_size, "time_s": round(seconds, 1),
               "val_psnr_3_steps": training["val_psnr"]["3_steps"], "val_psnr_10_steps": training["val_psnr"]["10_steps"],
               "val_psnr_5bit_10_steps": training["val_psnr_5bit_10_steps"]}
    print_table(summary)
    return summary


def check_positive(value: int, option: str) -> None:
    if value < 1:
        raise UserError(f"{option} must be at least 1, got {value}")


def check_finite(value: float, option: str, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise UserError(f"{option} must be a finite number {'> 0' if positive else '≥ 0'}, got {value}")


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{option} expects comma-separated integers, got {text!r}") from None


def parse_region(text: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--region expects four integers x0,y0,x1,y1, got {text!r}") from None
    return x0, y0, x1, y1


def progress_bar(total: int, description: str, disable: bool):
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs stay readable)
    return tqdm(total=total, desc=description, disable=True if disable else None, file=sys.stderr, leave=False,
                mininterval=0.5)


def bench_names():
    from metacompress.bench import BENCHMARKS

    return BENCHMARKS


def command_bench(args) -> dict:
    from metacompress.bench import BENCHMARKS, run_benchmark

    folder = args.name + (f"-{args.modality}" if args.modality else "")
    out = Path(args.out or f"benchmarks/results/{folder}")
    if args.profile == "paper" and not args.out:
        out = out / "paper"
    options = {k: v for k, v in (("codec", args.codec), ("modality", args.modality)) if v}
    results = run_benchmark(BENCHMARKS[args.name], args.name, args.profile, args.data_root, out, **options)
    print(f"results written to {out / 'results.json'}")
    return {"command": "bench", "name": args.name, "profile": args.profile, "out": str(out), "results": results}


def command_archive(args) -> dict:
    from metacompress.archive_cli import command_archive as run

    return run(args)


def command_demo(args) -> dict:
    from metacompress.demo import run_demo

    return run_demo(Path(args.out))


COMMANDS = {"train": command_train, "prune": command_prune, "quantize": command_quantize,
            "robustify": command_robustify, "encode": command_encode,
            "decode": command_decode, "train-base": command_train_base, "bench": command_bench,
            "demo": command_demo, "archive": command_archive}


def main(argv=None) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="metacompress: %(message)s", stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
        summary = COMMANDS[args.command](args)
    except UserError as e:
        print(f"metacompress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metacompress: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `metacompress archive list X | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # unwritable folder, disk full, a file where a folder should be: the user's to fix
        print(f"metacompress: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    if getattr(args, "json", False) and is_main_process():
        print(json.dumps(summary), flush=True)
    return 0


def describe_os_error(error: OSError) -> str:
    """One line: the file, what went wrong, and that nothing partial was left (writes are atomic)."""
    where = error.filename if error.filename is not None else "output"
    return f"{where}: {error.strerror or error}; nothing was written there" if error.strerror else f"{where}: {error}"


def is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
