"""Accuracy vs sparsity of pruning at initialization (thesis Figure 3.9 / Table A.2 protocol,
sparsities 1 − 0.8^k), the effect of ProsPr's meta-steps M (Table 3.5 analogue), and the cost of
ProsPr's meta-gradient next to one plain training step.

CPU profile (≤ 60 min on 2 cores) — the choices that make it fit, and what they cost:
- LeNet-5 on Fashion-MNIST (harder than MNIST, so the criteria separate) trained for 2 epochs on a
  fixed 10,000-image subset, scored on the 10,000 test images.
- ResNet-20 on a fixed 3,072-image part of the genuine CIFAR-10 subset for 2 epochs of 24 steps
  (lr 0.1, then 0.01), scored on the 1,000 genuine test images. Accuracies are far from converged (the thesis trains
  200 epochs on 50,000 images); the comparison between criteria at equal budget is what is measured.
- Iter-SNIP and FORCE prune in 20 rounds instead of 60 on ResNet-20 (each round is a full
  forward/backward pass; 60 rounds cost as much as training the network here).
Paper profile: ResNet-20 and VGG-16 on a user-supplied full CIFAR-10, 200 epochs, lr 0.1 ÷10 at
100/150, wd 5e-4, batch 256, crop+flip (§A.4.2), 18 sparsities, 3 seeds; the thesis' Tables A.2/A.3
are stored beside the results.

``device`` (``--device``): where every network is pruned (``pruning.experiment.prune_and_train``
scores the freshly initialized network there, so ``pruning_time_s`` is the device's) and trained.
Random masks are the same on every device; the other criteria agree up to float rounding. ProsPr's
cost is measured on the device, against a training step there (CUDA: synchronized timing, the
allocator's peak memory).
"""

import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from matplotlib.figure import Figure

from metacompress.bench.runs import (append_run, mean_std, peak_bytes, read_runs, run_key, synchronizer,
                                     training_subset)
from metacompress.cost import median_seconds, sgd_step
from metacompress.models import model_from_spec
from metacompress.pruning.experiment import PruneSettings, prune_and_train, prune_model
from metacompress.recipes import load_experiment_data, spec_for
from metacompress.training import TrainConfig, shuffled_batches

COST_MODEL = ("resnet20", "cifar10")  # where ProsPr's cost is measured against a training step
SPARSITIES_PAPER = tuple(round(1 - 0.8**k, 4) for k in range(1, 19))  # Table A.2's columns
SPARSITIES_CPU = tuple(round(1 - 0.8**k, 4) for k in (6, 10, 14, 18))  # 73.8, 89.3, 95.6, 98.2 %

# Figure labels → (criterion, options). First-order ProsPr keeps M = 3 here, so that the two
# ProsPr rows differ only by the approximation of Eq. 3.20.
VARIANTS = {
    "random": ("random", {}), "magnitude": ("magnitude", {}), "snip": ("snip", {}), "grasp": ("grasp", {}),
    "synflow": ("synflow", {}), "iter-snip": ("iter-snip", {}), "force": ("force", {}),
    "prospr": ("prospr", {}), "prospr-first-order": ("prospr", {"first_order": True}),
}


@dataclass
class Setting:
    model: str
    dataset: str
    config: TrainConfig
    sparsities: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = tuple(VARIANTS)
    train_size: int | None = None  # a fixed random subset of the training split; None = all of it
    rounds: dict = field(default_factory=dict)  # per-criterion override of the pruning rounds
    meta_steps: tuple[int, ...] = ()  # non-empty: the Table 3.5 study, ProsPr with these M on one batch


_LENET_CPU = TrainConfig(epochs=2, batch_size=64, lr=0.05, milestones=(0.5,), weight_decay=5e-4)
_RESNET_CPU = TrainConfig(epochs=2, batch_size=128, lr=0.1, milestones=(0.5,), weight_decay=5e-4, augment=True)
_CIFAR_PAPER = TrainConfig(epochs=200, batch_size=256, lr=0.1, milestones=(0.5, 0.75), weight_decay=5e-4,
                           augment=True)  # §A.4.2

PROFILES = {
    "cpu": {
        "lenet5-fashion-mnist": Setting("lenet5", "fashion-mnist", _LENET_CPU, SPARSITIES_CPU, train_size=10_000),
        "resnet20-cifar10": Setting("resnet20", "cifar10", _RESNET_CPU, SPARSITIES_CPU, train_size=3_072,
                                    rounds={"iter-snip": 20, "force": 20}),
        "meta-steps-lenet5": Setting("lenet5", "fashion-mnist", _LENET_CPU, (0.9, 0.95), train_size=10_000,
                                     meta_steps=(0, 1, 2, 3)),
    },
    "paper": {
        "resnet20-cifar10": Setting("resnet20", "cifar10", _CIFAR_PAPER, SPARSITIES_PAPER),
        "vgg16-cifar10": Setting("vgg16", "cifar10", _CIFAR_PAPER, SPARSITIES_PAPER),
        "meta-steps-resnet20": Setting("resnet20", "cifar10", _CIFAR_PAPER, (0.9, 0.95), meta_steps=(0, 1, 2, 3)),
    },
}


def run(profile: str, data_root, out_dir: Path, device="cpu") -> dict:
    """Every (setting, variant, sparsity, seed) run is appended to ``runs.jsonl`` as it finishes, so an
    interrupted benchmark resumes where it stopped; ``results.json`` aggregates them. ``device``:
    where the networks train (see the module's note)."""
    log = out_dir / "runs.jsonl"
    done = read_runs(log)
    results = {}
    for name, setting in PROFILES[profile].items():
        runs = []
        for variant, method, options, sparsity, seed in grid(setting):
            key = run_key(name, setting, variant, sparsity, seed, device=device)
            runs.append(done.get(key) or append_run(log, key, one_run(setting, variant, method, options, sparsity,
                                                                       seed, data_root, device)))
        results[name] = summarize(setting, runs)
    results["prospr-cost"] = prospr_cost(data_root, *COST_MODEL, device=device)
    if profile == "paper":
        results["thesis"] = {"resnet20-cifar10 (Table A.2)": THESIS_TABLE_A2, "vgg16-cifar10 (Table A.3)": THESIS_TABLE_A3}
    plot(results, out_dir / "accuracy_vs_sparsity.png")
    return results


def grid(setting: Setting):
    """(variant label, criterion, criterion options, sparsity, seed) for every run of a setting."""
    if setting.meta_steps:
        variants = [(f"prospr-M{m}", "prospr", {"steps": m, "same_batch": True}) for m in setting.meta_steps]
    else:
        variants = [(v, *VARIANTS[v]) for v in setting.variants]
    return [(label, method, options, s, seed) for label, method, options in variants
            for s in setting.sparsities for seed in setting.seeds]


def one_run(setting: Setting, variant: str, method: str, options: dict, sparsity: float, seed: int,
            data_root, device="cpu") -> dict:
    train_data, eval_sets = experiment_data(setting, data_root)
    settings = PruneSettings(method, sparsity, rounds=setting.rounds.get(method), options=options)
    config = replace(setting.config, seed=seed)
    result, pruned = prune_and_train(spec_for(setting.model, train_data), train_data, eval_sets, config, settings,
                                     progress=False, device=device)
    record = {"variant": variant, "sparsity": sparsity, "seed": seed, "actual_sparsity": pruned.sparsity,
              "test_accuracy": result.final["test_accuracy"], "pruning_time_s": pruned.seconds,
              "train_time_s": sum(r["epoch_time_s"] for r in result.history)}
    print(f"{setting.model}/{setting.dataset} {variant:>20} sparsity {sparsity:.3f} seed {seed}: "
          f"{record['test_accuracy']:.2%} (pruning {pruned.seconds:.1f} s)", flush=True)
    return record


_DATA_CACHE: dict = {}


def experiment_data(setting: Setting, data_root):
    key = (setting.dataset, setting.train_size, str(data_root))
    if key not in _DATA_CACHE:
        train_data, eval_sets = load_experiment_data(setting.dataset, data_root)
        _DATA_CACHE[key] = training_subset(train_data, setting.train_size), eval_sets
    return _DATA_CACHE[key]


def summarize(setting: Setting, runs: list[dict]) -> dict:
    """Per variant: mean ± std test accuracy at each sparsity, and mean pruning time."""
    table = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == variant]
        sparsities = sorted({r["sparsity"] for r in rows})
        stats = [mean_std([r["test_accuracy"] for r in rows if r["sparsity"] == s]) for s in sparsities]
        table[variant] = {"sparsity": sparsities, "accuracy_mean": [m for m, _ in stats],
                          "accuracy_std": [sd for _, sd in stats],
                          "actual_sparsity": [statistics.fmean(r["actual_sparsity"] for r in rows if r["sparsity"] == s)
                                              for s in sparsities],
                          "pruning_time_s": statistics.fmean(r["pruning_time_s"] for r in rows)}
    summary = {"model": setting.model, "dataset": setting.dataset, "train_size": setting.train_size,
               "seeds": list(setting.seeds), "config": asdict(setting.config), "rounds_override": setting.rounds,
               "methods": table, "runs": runs}
    if "prospr" in table and "snip" in table:
        summary["prospr_minus_snip"] = [round(p - s, 4) for p, s in
                                        zip(table["prospr"]["accuracy_mean"], table["snip"]["accuracy_mean"])]
    return summary


def prospr_cost(data_root, model_name: str, dataset: str, batch_size: int = 128, repeats: int = 5,
                device="cpu") -> dict:
    """Seconds (median of ``repeats``) and peak tensor memory of pruning at batch 128, next to one
    plain SGD training step, both on ``device``; memory is measured in a separate run (CPU: profiled;
    CUDA: the allocator's peak)."""
    device = torch.device(device)
    train_data, _ = load_experiment_data(dataset, data_root)
    spec = spec_for(model_name, train_data)
    batches = shuffled_batches(train_data, batch_size, seed=0, device=device)
    torch.manual_seed(0)
    training_step = sgd_step(model_from_spec(spec).to(device), *next(batches), lr=0.1)
    step = median_seconds(training_step, repeats, synchronize=synchronizer(device))
    costs = {"model": model_name, "dataset": dataset, "batch_size": batch_size, "training_step_s": step,
             "training_step_peak_tensor_mb": peak_bytes(training_step, device) / 2**20}
    if device.type != "cpu":
        costs["device"] = str(device)
    for label, method, options in [("snip", "snip", {}), ("prospr-M3", "prospr", {}),
                                   ("prospr-M3-first-order", "prospr", {"first_order": True})]:
        settings = PruneSettings(method, 0.9, batch_size=batch_size, options=options)

        def prune():
            torch.manual_seed(0)
            return prune_model(model_from_spec(spec).to(device), train_data, settings, seed=0)

        seconds = statistics.median(prune().seconds for _ in range(3))  # the criterion alone
        peak = peak_bytes(prune, device)
        costs[label] = {"seconds": seconds, "training_steps": seconds / step, "peak_tensor_mb": peak / 2**20,
                        "peak_vs_training_step": peak / 2**20 / costs["training_step_peak_tensor_mb"]}
    return costs


def plot(results: dict, path: Path) -> None:
    panels = [(name, r) for name, r in results.items() if isinstance(r, dict) and "methods" in r]
    fig = Figure(figsize=(5.5 * len(panels), 4.2), layout="tight")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, summary) in zip(axes[0], panels):
        for variant, row in summary["methods"].items():
            x = [-math.log(1 - s) for s in row["sparsity"]]
            mean, std = [100 * a for a in row["accuracy_mean"]], [100 * a for a in row["accuracy_std"]]
            ax.errorbar(x, mean, yerr=std, marker="o", ms=3, capsize=2, label=variant,
                        lw=2.2 if variant.startswith("prospr") else 1.2)
        for method, row in thesis_rows(results, name).items():
            x = [-math.log(1 - s) for s in row["sparsity"]]
            ax.plot(x, row["mean"], ":", lw=1, color="gray")
        ticks = sorted({s for row in summary["methods"].values() for s in row["sparsity"]})
        ax.set_xticks([-math.log(1 - s) for s in ticks], [f"{100 * s:.1f}" for s in ticks], fontsize=7)
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{summary['model']} / {summary['dataset']}" + (" — ProsPr, M meta-steps" if
                                                                     name.startswith("meta") else ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)


def thesis_rows(results: dict, panel: str) -> dict:
    """The thesis' numbers for a panel of the paper profile (drawn dotted under ours)."""
    thesis = results.get("thesis", {})
    table = next((t for label, t in thesis.items() if label.startswith(panel + " ")), {})
    return {m: {"sparsity": table["sparsity"], "mean": row["mean"]} for m, row in table.items() if m != "sparsity"}


def _table(rows: str) -> dict:
    """Parse 'method: 91.8±0.2 91.2±0.3 …' lines into {method: {"mean": [...], "std": [...]}} (percent)."""
    table = {}
    for line in rows.strip().splitlines():
        method, values = line.split(":")
        pairs = [v.split("±") for v in values.split()]
        table[method.strip()] = {"mean": [float(m) for m, _ in pairs], "std": [float(s) for _, s in pairs]}
    return table | {"sparsity": list(SPARSITIES_PAPER)}


# Thesis Appendix A.5, test accuracy (%) at the sparsities 1 − 0.8^k, k = 1 … 18.
THESIS_TABLE_A2 = _table("""
magnitude: 91.5±0.2 91.2±0.1 90.8±0.1 90.7±0.2 90.2±0.1 89.8±0.2 89.3±0.2 88.6±0.2 87.9±0.3 87.0±0.3 86.1±0.2 85.2±0.4 83.9±0.2 82.5±0.4 80.7±0.5 79.1±0.4 77.2±0.4 74.5±0.7
snip: 91.8±0.2 91.2±0.3 90.9±0.1 90.7±0.1 90.1±0.2 89.7±0.3 89.0±0.2 88.5±0.3 87.7±0.2 87.2±0.4 85.8±0.1 84.7±0.5 83.8±0.3 82.5±0.4 80.9±0.2 79.1±0.2 77.3±0.2 74.0±0.5
grasp: 91.5±0.1 91.3±0.2 91.2±0.1 90.6±0.2 90.3±0.2 89.6±0.1 89.1±0.2 88.4±0.2 87.9±0.1 87.0±0.2 85.9±0.1 85.1±0.4 83.9±0.4 82.8±0.2 81.2±0.2 79.7±0.3 78.0±0.3 76.0±0.5
synflow: 91.7±0.1 91.3±0.2 91.2±0.1 90.8±0.1 90.4±0.2 89.8±0.1 89.5±0.3 88.9±0.4 88.1±0.1 87.4±0.5 86.1±0.2 85.4±0.2 84.3±0.2 82.9±0.2 81.7±0.2 80.0±0.3 78.6±0.4 76.4±0.4
random: 91.6±0.2 91.2±0.2 90.8±0.3 90.5±0.2 89.8±0.2 89.0±0.4 88.4±0.2 87.5±0.3 86.6±0.2 85.6±0.3 84.3±0.4 83.1±0.4 81.6±0.3 79.6±0.4 74.2±6.4 64.7±9.7 56.9±8.5 43.7±12.5
prospr: 92.3±0.1 92.1±0.0 91.7±0.2 91.5±0.1 91.0±0.2 90.5±0.0 90.1±0.1 89.6±0.2 88.5±0.5 87.8±0.1 86.9±0.3 85.5±0.6 84.3±0.2 83.0±0.9 80.8±0.5 79.6±0.7 77.0±0.8 74.2±0.3
""")
THESIS_TABLE_A3 = _table("""
magnitude: 93.6±0.2 93.4±0.2 93.3±0.1 93.2±0.1 93.3±0.3 93.0±0.1 93.1±0.1 92.9±0.1 92.9±0.1 92.7±0.2 92.5±0.1 92.3±0.1 92.2±0.2 92.0±0.1 91.8±0.2 91.5±0.1 91.3±0.3 90.9±0.2
snip: 93.6±0.1 93.4±0.1 93.3±0.1 93.4±0.2 93.3±0.2 93.4±0.1 93.1±0.1 93.1±0.1 93.2±0.1 93.1±0.1 92.9±0.1 92.8±0.2 92.8±0.1 92.3±0.2 92.2±0.1 92.1±0.1 91.7±0.1 91.5±0.1
grasp: 93.5±0.1 93.4±0.2 93.5±0.0 93.3±0.1 93.2±0.2 93.3±0.2 93.2±0.1 93.0±0.3 93.0±0.1 92.7±0.2 92.8±0.1 92.4±0.1 92.3±0.1 92.2±0.1 91.9±0.1 91.6±0.2 91.5±0.0 91.2±0.2
synflow: 93.6±0.2 93.6±0.1 93.5±0.1 93.4±0.1 93.4±0.2 93.5±0.2 93.2±0.1 93.2±0.1 93.1±0.1 92.9±0.1 92.7±0.2 92.5±0.1 92.3±0.1 92.0±0.1 91.8±0.3 91.3±0.1 91.0±0.2 90.6±0.2
random: 93.6±0.3 93.2±0.1 93.2±0.2 93.0±0.2 92.7±0.2 92.4±0.2 92.2±0.1 91.7±0.1 91.2±0.1 90.8±0.2 90.3±0.2 89.6±0.2 88.8±0.2 88.3±0.4 87.6±0.1 86.4±0.2 86.0±0.4 84.5±0.4
prospr: 93.7±0.2 93.7±0.1 93.9±0.1 93.8±0.1 93.8±0.1 93.5±0.2 93.6±0.1 93.4±0.3 93.5±0.2 93.3±0.2 93.0±0.1 93.0±0.1 92.8±0.3 92.7±0.1 92.6±0.1 92.2±0.1 92.1±0.2 91.6±0.2
""")
