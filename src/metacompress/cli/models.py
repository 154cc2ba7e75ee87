"""``metacompress train|prune|quantize|robustify``: classification models (pruning and quantization)."""

import argparse
import time
from pathlib import Path

from metacompress.cli.common import (Command, add_data_root, add_device, add_json, check_finite, check_positive,
                                     print_table)
from metacompress.errors import UserError


def classification_choices() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The model and dataset names the commands accept (imports the model zoo: call it lazily)."""
    from metacompress.data import CLASSIFICATION_DATASETS
    from metacompress.models import MODEL_NAMES

    return MODEL_NAMES, CLASSIFICATION_DATASETS


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
    add_device(p)
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
    add_device(p)
    add_json(p)


def add_train_arguments(p):
    add_training_args(p, *classification_choices())
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")


def add_prune_arguments(p):
    from metacompress.pruning import METHODS
    from metacompress.pruning.api import STRUCTURED_METHODS

    add_training_args(p, *classification_choices())
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


def add_quantize_arguments(p):
    add_quantization_args(p, *classification_choices())


def add_robustify_arguments(p):
    add_quantization_args(p, *classification_choices())
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
                   progress=not (args.no_progress or args.quiet), device=args.device)
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
                                     progress=not (args.no_progress or args.quiet), device=args.device)
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
        summary["cost_after"] = cost_report(result.model.cpu(), example, classes, config.batch_size)  # CPU figures
    summary = training_summary(args, result, config, train_data, out, started) | summary
    print_table(summary)
    return summary


def quantization_setup(args):
    """The checkpoint's model (checked against --model), the data, and the PTQ grid of the arguments."""
    from itertools import product

    from metacompress.distributed import resolve_device
    from metacompress.quantization.evaluation import calibration_batches, parse_bits
    from metacompress.recipes import load_experiment_data
    from metacompress.training import load_model

    device = resolve_device(args.device)
    model, info = load_model(args.checkpoint)
    model.to(device)
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
    return (model, info, train_data, eval_sets["test"], configs,
            calibration_batches(train_data, seed=args.seed, device=device), options)


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
        result = train(spec, train_data, {}, config, model=model, progress=not (args.no_progress or args.quiet),
                       backward=regularizer, device=args.device)
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


COMMANDS = (
    Command("train", "train a reference model on a classification dataset", add_train_arguments, command_train),
    Command("prune", "prune a reference model at initialization, then train it", add_prune_arguments, command_prune),
    Command("quantize", "post-training quantization accuracy of a trained classifier", add_quantize_arguments,
            command_quantize),
    Command("robustify", "fine-tune a trained classifier with a quantization-robustness regularizer, then report its "
            "post-training quantization accuracy", add_robustify_arguments, command_robustify),
)
