"""``metacompress demo``: the main features end to end on the bundled samples, with a report."""

import time
from pathlib import Path

from metacompress.checkpoint import atomic_write_bytes
from metacompress.recipes import default_config, load_experiment_data, spec_for
from metacompress.training import train


def run_demo(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_data, eval_sets = load_experiment_data("mnist-sample")
    config = default_config("mnist-sample", epochs=12)
    result = train(spec_for("lenet5", train_data), train_data, eval_sets, config, out_dir=out / "lenet5")
    accuracy = result.final["test_accuracy"]
    seconds = time.perf_counter() - started
    report = "\n".join([
        "# metacompress demo report", "",
        "## Training a reference network",
        f"LeNet-5 trained for {config.epochs} epochs (SGD, lr {config.lr}, batch {config.batch_size}) on the "
        f"{len(train_data):,} bundled MNIST training digits: **{accuracy:.2%}** test accuracy on "
        f"{len(eval_sets['test']):,} bundled test digits ({seconds:.1f} s).", "",
    ])
    atomic_write_bytes(out / "report.md", report.encode())
    print(report)
    return {"command": "demo", "lenet5_mnist_sample_test_accuracy": accuracy, "time_s": round(seconds, 2),
            "report": str(out / "report.md")}
