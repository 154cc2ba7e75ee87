"""Reference training runs (foundation acceptance): LeNet-5 on MNIST and ResNet-20 on CIFAR-10.

CPU profile: LeNet-5, MNIST, 2 epochs, 3 seeds; ResNet-20 on the 7,728-image genuine CIFAR-10
subset for 30 epochs (thesis recipe otherwise: SGD 0.1, ÷10 at 50 %/75 %, wd 5e-4, batch 256,
crop+flip), scored on the 1,000 genuine test images and the 10,000 JPEG test images.
Paper profile: the same recipe for 200 epochs on a user-supplied full CIFAR-10 (§A.4.2), ResNet-20
and VGG-16, 3 seeds.
"""

import statistics
from pathlib import Path

from matplotlib.figure import Figure

from metacompress.data import load_classification
from metacompress.recipes import FINAL_SPLITS, default_config, load_experiment_data, spec_for
from metacompress.training import evaluate, train

PROFILES = {
    "cpu": {"mnist": {"model": "lenet5", "epochs": 2, "seeds": (0, 1, 2)},
            "cifar10": [{"model": "resnet20", "epochs": 30, "seeds": (0,)}]},
    "paper": {"mnist": {"model": "lenet5", "epochs": 2, "seeds": (0, 1, 2)},
              "cifar10": [{"model": "resnet20", "epochs": 200, "seeds": (0, 1, 2)},
                          {"model": "vgg16", "epochs": 200, "seeds": (0, 1, 2)}]},
}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def train_runs(dataset: str, model: str, epochs: int, seeds, data_root, final_splits=(), device="cpu") -> dict:
    runs = []
    for seed in seeds:
        train_data, eval_sets = load_experiment_data(dataset, data_root, seed=seed)
        config = default_config(dataset, epochs=epochs, seed=seed)
        result = train(spec_for(model, train_data), train_data, eval_sets, config, device=device)
        run = {"seed": seed, "history": result.history, "test_accuracy": result.final["test_accuracy"]}
        for split in final_splits:
            run[f"{split}_accuracy"] = evaluate(result.model, load_classification(dataset, split, data_root))["accuracy"]
        runs.append(run)
    epoch_times = [r["epoch_time_s"] for run in runs for r in run["history"]]
    summary = {"model": model, "dataset": dataset, "train_size": len(train_data), "epochs": epochs,
               "config": config.__dict__ | {"milestones": list(config.milestones)},
               "test_accuracy": mean_std([run["test_accuracy"] for run in runs]),
               "median_epoch_time_s": statistics.median(epoch_times), "runs": runs}
    for split in final_splits:
        summary[f"{split}_accuracy"] = mean_std([run[f"{split}_accuracy"] for run in runs])
    return summary


def run(profile: str, data_root, out_dir: Path, device="cpu") -> dict:
    settings = PROFILES[profile]
    mnist = settings["mnist"]
    results = {"lenet5-mnist": train_runs("mnist", mnist["model"], mnist["epochs"], mnist["seeds"], data_root,
                                          device=device)}
    for entry in settings["cifar10"]:
        results[f"{entry['model']}-cifar10"] = train_runs("cifar10", entry["model"], entry["epochs"], entry["seeds"],
                                                          data_root, final_splits=FINAL_SPLITS["cifar10"],
                                                          device=device)
    plot(results, out_dir / "accuracy.png")
    return results


def plot(results: dict, path: Path) -> None:
    fig = Figure(figsize=(10, 4), layout="tight")
    axes = fig.subplots(1, 2)
    for name, summary in results.items():
        ax = axes[0] if name.endswith("cifar10") else axes[1]
        for run in summary["runs"]:
            epochs = [r["epoch"] for r in run["history"]]
            ax.plot(epochs, [r["test_accuracy"] for r in run["history"]], label=f"{summary['model']} test, seed {run['seed']}")
            ax.plot(epochs, [r["train_accuracy"] for r in run["history"]], "--", alpha=0.6,
                    label=f"{summary['model']} train, seed {run['seed']}")
    axes[0].set_title("CIFAR-10 (genuine test images)")
    axes[1].set_title("MNIST")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
