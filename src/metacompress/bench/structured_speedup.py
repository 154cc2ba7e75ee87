"""What structured pruning at initialization buys (thesis Table 3.2 / Table A.1): VGG-19 (the
§A.1 architecture) and ResNet-18 with 50 % and 80 % of their FLOPs removed by 3SP and by
compute-aware 3SP (λ = 0.05, as in Table 3.2), against the unpruned network.

Measured per network: parameters, FLOPs, safetensors size, single-image CPU prediction time
(all of a model's configurations timed in alternating rounds, so that machine-load drift hits them
alike; with all torch threads and with one), CPU training-step time at batch 128 (median of 10), the epoch time and test
accuracy of a short training run, and the pruning (scoring) time. A configuration that would
empty a layer is recorded as refused, with the reason — the thesis reports that plain 3SP cannot
remove more than ~75 % of VGG-19's FLOPs without removing whole layers.

CPU profile: scoring on a batch of 128 genuine CIFAR-10 training images; training for 1 epoch on a
fixed 3,072-image subset (24 steps; the accuracies are those of barely trained networks, and only
compare the configurations); 1 seed. Paper profile: the §A.1 recipe, 160 epochs on a user-supplied
full CIFAR-10, lr 0.1 halved at epochs 80 and 120, and speeds measured on whatever machine runs it.

``device`` (``--device``): where the networks train, so ``epoch_time_s`` (and its speedup) is that
device's; on CUDA each configuration also gets ``gpu_prediction_ms`` (single image, synchronized,
alternating rounds like the CPU's) and ``gpu_train_step_ms``. The CPU columns are the thesis' CPU
measurements and stay on the CPU (a copy of each network), whatever the device; the channels are
chosen on the CPU too (the channel masks of the pruning library are CPU tensors).
"""

import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from matplotlib.figure import Figure

from metacompress.bench.runs import synchronizer, training_subset
from metacompress.cost import compare_prediction_seconds, cost_report, median_seconds
from metacompress.errors import UserError
from metacompress.models import model_from_spec, module_mode
from metacompress.pruning.api import prune_channels_at_init
from metacompress.recipes import load_experiment_data, spec_for
from metacompress.training import TrainConfig, channel_stats, normalize, shuffled_batches, train

# label → (fraction of FLOPs removed, compute-aware); None = the unpruned network
CONFIGS = {"original": None, "3sp-50": (0.5, False), "3sp-ca-50": (0.5, True),
           "3sp-80": (0.8, False), "3sp-ca-80": (0.8, True)}
LAMBDA = 0.05  # thesis Table 3.2

PROFILES = {
    "cpu": {"models": ("vgg19-3sp", "resnet18"), "dataset": "cifar10", "train_size": 3_072, "seed": 0,
            "config": TrainConfig(epochs=1, batch_size=128, lr=0.1, milestones=(), weight_decay=5e-4, augment=True)},
    "paper": {"models": ("vgg19-3sp", "resnet18"), "dataset": "cifar10", "train_size": None, "seed": 0,
              "config": TrainConfig(epochs=160, batch_size=128, lr=0.1, milestones=(0.5, 0.75), gamma=0.5,
                                    weight_decay=5e-4, augment=True)},  # §A.1
}

# Thesis Table 3.2 (VGG-19, GTX 1080 Ti for training, i7 8700K CPU for prediction).
THESIS_TABLE_3_2 = {
    "original": {"gpu_epoch_s": 15, "cpu_prediction_ms": 12.8, "size_mb": 87, "accuracy": 93.6},
    "3sp-50": {"gpu_epoch_s": 8, "cpu_prediction_ms": 4.2, "size_mb": 12, "pruning_ms": 41, "accuracy": 93.1},
    "3sp-ca-80": {"gpu_epoch_s": 4, "cpu_prediction_ms": 2.6, "size_mb": 3.3, "pruning_ms": 41, "accuracy": 90.9},
}


def run(profile: str, data_root, out_dir: Path, device="cpu") -> dict:
    settings = PROFILES[profile]
    train_data, eval_sets = load_experiment_data(settings["dataset"], data_root)
    train_data = training_subset(train_data, settings["train_size"])
    mean, std = channel_stats(train_data, "cpu")
    example = normalize(train_data.images[:1], mean, std)
    config = replace(settings["config"], seed=settings["seed"])
    results = {"train_size": len(train_data), "config": config.__dict__ | {"milestones": list(config.milestones)},
               "lambda": LAMBDA, "models": {}}
    for name in settings["models"]:
        spec = spec_for(name, train_data)
        rows, models = {}, {}
        for label, prune in CONFIGS.items():
            rows[label], model = measure(spec, prune, train_data, eval_sets, example, config, device)
            if model is not None:
                models[label] = model
            print(f"{name} {label}: {rows[label]}", flush=True)
        if torch.device(device).type == "cuda":
            for label, seconds in device_prediction_seconds(models, example, device).items():
                rows[label]["gpu_prediction_ms"] = 1e3 * seconds
        models = {label: model.cpu() for label, model in models.items()}
        for key, threads in (("cpu_prediction_ms", None), ("cpu_prediction_1thread_ms", 1)):
            for label, seconds in compare_prediction_seconds(models, example, threads=threads).items():
                rows[label][key] = 1e3 * seconds
        add_speedups(rows)
        results["models"][name] = rows
    if profile == "paper":
        results["thesis_table_3_2"] = THESIS_TABLE_3_2
    plot(results, out_dir / "speedup.png")
    return results


def measure(spec, prune, train_data, eval_sets, example, config: TrainConfig, device="cpu") -> dict:
    """One configuration's row, and its trained network (on ``device``); None for a refused one."""
    torch.manual_seed(config.seed)
    model = model_from_spec(spec)
    row = {}
    if prune is not None:
        fraction, compute_aware = prune
        batches = shuffled_batches(train_data, config.batch_size, config.seed)
        started = time.perf_counter()
        try:
            pruned = prune_channels_at_init(model, batches, "3sp", fraction, target="flops",
                                            compute_aware=compute_aware, lam=LAMBDA, seed=config.seed)
        except UserError as e:
            return {"refused": str(e)}, None
        model = pruned.model
        row |= {"flops_removed": pruned.removed, "pruning_ms": 1e3 * pruned.seconds,
                "pruning_with_slicing_ms": 1e3 * (time.perf_counter() - started)}
    row |= cost_report(model, example, num_classes=len(train_data.classes), batch_size=128)
    result = train(spec, train_data, eval_sets, config, model=model, progress=False, device=device)
    row |= {"epoch_time_s": sum(r["epoch_time_s"] for r in result.history) / len(result.history),
            "test_accuracy": result.final["test_accuracy"]}
    return row, model


@torch.no_grad()
def device_prediction_seconds(models: dict, example: torch.Tensor, device, rounds: int = 15,
                              repeats: int = 20) -> dict[str, float]:
    """``compare_prediction_seconds`` on ``device`` (the models are there): each call waits for the
    device to finish before the clock is read."""
    example, sync = example.to(device), synchronizer(device)
    per_round = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            with module_mode(model, training=False):
                per_round[name].append(median_seconds(lambda m=model: m(example), repeats, synchronize=sync))
    return {name: statistics.median(times) for name, times in per_round.items()}


def add_speedups(rows: dict) -> None:
    base = rows["original"]
    for row in rows.values():
        if "refused" in row:
            continue
        row["speedup"] = {"cpu_prediction": base["cpu_prediction_ms"] / row["cpu_prediction_ms"],
                          "cpu_prediction_1thread": base["cpu_prediction_1thread_ms"] / row["cpu_prediction_1thread_ms"],
                          "cpu_train_step": base["cpu_train_step_ms"] / row["cpu_train_step_ms"],
                          "epoch": base["epoch_time_s"] / row["epoch_time_s"],
                          "size": base["disk_bytes"] / row["disk_bytes"], "flops": base["flops"] / row["flops"]}
        if "gpu_prediction_ms" in row:
            row["speedup"]["gpu_prediction"] = base["gpu_prediction_ms"] / row["gpu_prediction_ms"]


def plot(results: dict, path: Path) -> None:
    models = results["models"]
    fig = Figure(figsize=(6 * len(models), 4), layout="tight")
    axes = fig.subplots(1, len(models), squeeze=False)
    kinds = ("flops", "cpu_prediction", "cpu_prediction_1thread", "cpu_train_step", "size")
    for ax, (name, rows) in zip(axes[0], models.items()):
        labels = [label for label, row in rows.items() if "speedup" in row and label != "original"]
        width = 0.8 / len(kinds)
        for i, kind in enumerate(kinds):
            ax.bar([j + i * width for j in range(len(labels))], [rows[label]["speedup"][kind] for label in labels],
                   width, label=kind.replace("_", " "))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))],
                      [f"{label}\n{100 * rows[label]['test_accuracy']:.1f} %" for label in labels], fontsize=8)
        ax.axhline(1, color="gray", lw=0.8)
        refused = [label for label, row in rows.items() if "refused" in row]
        ax.set_title(f"{name}: × faster / smaller than unpruned" + (f"\n(refused: {', '.join(refused)})"
                                                                    if refused else ""), fontsize=9)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=120)
