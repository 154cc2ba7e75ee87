"""Accuracy of structured pruning at initialization (thesis Tables 3.1 / 3.4 and Figures 3.5 / 3.6):
VGG-19 (§A.1) with 80 / 90 / 95 % of its parameters removed by Uniform, 3SP, 3SP + re-init,
3SP + rescale and structured ProsPr; and accuracy against the share of FLOPs removed for Uniform,
3SP and compute-aware 3SP. A setting that would empty a layer is recorded as refused.

CPU profile: two epochs on a fixed 3,072-image part of the genuine CIFAR-10 subset (48 steps at
batch 128, lr 0.1 then 0.01), scored on the 1,000 genuine test images; 3 seeds for the table; the
FLOPs curve has 2 points (50, 80 %) and 1 seed, which is what fits beside the table. These networks
are barely trained, so the numbers compare criteria at an equal, tiny budget; they say nothing
about converged accuracy. Paper profile: §A.1's recipe (160 epochs, lr 0.1 halved at 80 and 120,
batch 128) on a user-supplied full CIFAR-10, 5 seeds, with the thesis' numbers stored beside ours.

``device`` (``--device``): where the channels are scored and chosen (``pruning.experiment.prune_and_train``,
on the freshly initialized network) and the smaller networks train. Uniform channels are the same on
every device; the gradient criteria agree up to float rounding.
"""

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from matplotlib.figure import Figure

from metacompress.bench.runs import append_run, mean_std, read_runs, run_key, training_subset
from metacompress.errors import UserError
from metacompress.pruning.experiment import PruneSettings, prune_and_train
from metacompress.recipes import load_experiment_data, spec_for
from metacompress.training import TrainConfig

# label → (criterion, PruneSettings overrides)
VARIANTS = {
    "uniform": ("uniform", {}),
    "3sp": ("3sp", {}),
    "3sp-reinit": ("3sp", {"init": "reinit"}),
    "3sp-rescale": ("3sp", {"init": "rescale"}),
    "prospr": ("prospr", {}),
    "3sp-ca": ("3sp", {"compute_aware": True}),
}


@dataclass
class Study:
    model: str
    dataset: str
    config: TrainConfig
    target: str  # "params" or "flops"
    fractions: tuple[float, ...]
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    train_size: int | None = None


_CPU = TrainConfig(epochs=2, batch_size=128, lr=0.1, milestones=(0.5,), weight_decay=5e-4, augment=True)
_PAPER = TrainConfig(epochs=160, batch_size=128, lr=0.1, milestones=(0.5, 0.75), gamma=0.5, weight_decay=5e-4,
                     augment=True)  # §A.1
_TABLE = ("uniform", "3sp", "3sp-reinit", "3sp-rescale", "prospr")
_CURVE = ("uniform", "3sp", "3sp-ca")

PROFILES = {
    "cpu": {
        "params-removed": Study("vgg19-3sp", "cifar10", _CPU, "params", (0.8, 0.9, 0.95), _TABLE, (0, 1, 2), 3_072),
        "flops-removed": Study("vgg19-3sp", "cifar10", _CPU, "flops", (0.5, 0.8), _CURVE, (0,), 3_072),
    },
    "paper": {
        "params-removed": Study("vgg19-3sp", "cifar10", _PAPER, "params", (0.8, 0.9, 0.95), _TABLE, (0, 1, 2, 3, 4)),
        "flops-removed": Study("vgg19-3sp", "cifar10", _PAPER, "flops", (0.3, 0.5, 0.7, 0.8, 0.9), _CURVE,
                               (0, 1, 2, 3, 4)),
    },
}

# Thesis Tables 3.1 and 3.4, CIFAR-10 accuracy (%) at 80 / 90 / 95 % parameters removed.
THESIS_CIFAR10 = {
    "uniform": [92.0, 90.4, 89.0], "3sp": [93.4, 93.1, 92.5], "3sp-reinit": [93.4, 93.0, 92.6],
    "3sp-rescale": [93.3, 93.0, 92.5], "prospr": [93.61, 93.64, 93.32], "unpruned": 93.6,
}


def run(profile: str, data_root, out_dir: Path, device="cpu") -> dict:
    log = out_dir / "runs.jsonl"
    done = read_runs(log)
    results = {}
    for name, study in PROFILES[profile].items():
        train_data, eval_sets = load_experiment_data(study.dataset, data_root)
        train_data = training_subset(train_data, study.train_size)
        runs = []
        for variant in study.variants:
            for fraction in study.fractions:
                for seed in study.seeds:
                    key = run_key(name, study, variant, fraction, seed, device=device)
                    runs.append(done.get(key) or append_run(log, key, one_run(study, variant, fraction, seed,
                                                                               train_data, eval_sets, device)))
        results[name] = summarize(study, runs)
    if profile == "paper":
        results["thesis_cifar10_params_removed"] = THESIS_CIFAR10
    plot(results, out_dir / "structured_accuracy.png")
    return results


def one_run(study: Study, variant: str, fraction: float, seed: int, train_data, eval_sets, device="cpu") -> dict:
    method, overrides = VARIANTS[variant]
    settings = replace(PruneSettings(method, fraction, structured=True, target=study.target), **overrides)
    record = {"variant": variant, "fraction": fraction, "seed": seed}
    try:
        result, pruned = prune_and_train(spec_for(study.model, train_data), train_data, eval_sets,
                                         replace(study.config, seed=seed), settings, progress=False, device=device)
    except UserError as e:
        print(f"{study.model} {variant} {fraction}: refused ({e})", flush=True)
        return record | {"refused": str(e)}
    record |= {"removed": pruned.removed, "params": list(pruned.params), "flops": list(pruned.flops),
               "pruning_time_s": pruned.seconds, "test_accuracy": result.final["test_accuracy"]}
    print(f"{study.model} {variant} {study.target} −{fraction:.0%} seed {seed}: {record['test_accuracy']:.2%}",
          flush=True)
    return record


def summarize(study: Study, runs: list[dict]) -> dict:
    table = {}
    for variant in study.variants:
        rows = [r for r in runs if r["variant"] == variant]
        entry = {"fraction": [], "accuracy_mean": [], "accuracy_std": [], "removed": [], "refused": {}}
        for fraction in study.fractions:
            at = [r for r in rows if r["fraction"] == fraction]
            trained = [r for r in at if "refused" not in r]
            if not trained:
                entry["refused"][str(fraction)] = at[0]["refused"]
                continue
            mean, std = mean_std([r["test_accuracy"] for r in trained])
            entry["fraction"].append(fraction)
            entry["accuracy_mean"].append(mean)
            entry["accuracy_std"].append(std)
            entry["removed"].append(mean_std([r["removed"] for r in trained])[0])
        table[variant] = entry
    return {"model": study.model, "dataset": study.dataset, "target": study.target, "train_size": study.train_size,
            "seeds": list(study.seeds), "config": asdict(study.config), "methods": table, "runs": runs}


def plot(results: dict, path: Path) -> None:
    panels = [r for r in results.values() if isinstance(r, dict) and "methods" in r]
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="tight")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, summary in zip(axes[0], panels):
        for variant, row in summary["methods"].items():
            if row["fraction"]:
                ax.errorbar([100 * f for f in row["removed"]], [100 * a for a in row["accuracy_mean"]],
                            yerr=[100 * s for s in row["accuracy_std"]], marker="o", ms=3, capsize=2, label=variant)
        ax.set_xlabel(f"{summary['target']} removed (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{summary['model']} / {summary['dataset']}, structured", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
