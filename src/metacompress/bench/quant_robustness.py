"""Post-training quantization robustness (thesis Table 4.1, Figures 4.4 and 4.5, §4.3.1 cost).

Per model and seed: train the float network, then fine-tune it for K epochs four ways — no
regularizer (the same extra training, so the comparison isolates the penalty), Defensive
Quantization, gradient-ℓ2 and gradient-ℓ1 (Eq. 4.3, λ_w = λ_y) — and separately with the STE at
(8,4), (6,4) and (4,4). Every result is scored in floating point and after post-training
quantization at (8,4), (6,4), (4,4) (weights, activations): symmetric grids, BN folded, activation
ranges from BatchNorm (β ± 6γ, §4.3.1). STE models are scored with their trained activation grids
and their shadow weights re-gridded at each width; at widths above their target the better of that
and the target-width result is reported (§4.3.1's rule).

λ follows the thesis' rule: a grid around λ₀ = CE / penalty of the trained network (so that the
two terms are of the same order), then the largest λ whose float accuracy on a held-out validation
split (10 % of the training images; the test set is never used to choose) is within 1 point of
the unregularized fine-tune; if none is, the grid continues down by ×0.3 (up to 3 more values). The search runs on the first seed and is recorded.

A fifth row, l1-fd, fine-tunes with the finite-difference form of the same ℓ1 penalty (two
gradients per step instead of a double backward) at the exact ℓ1's λ.

Cost: a regularized training step against a plain one on the same batch, interleaved and
median-timed, with the peak tensor memory of each (thesis: 5.6× VGG-like, 8.7× ResNet-18 per epoch).

CPU profile: VGG-like at 1/4 width and ResNet-20 on 5,560 images of the genuine CIFAR-10 subset
(5,004 train / 556 validation images; 1,000 test images), 6 epochs of training, K = 1 fine-tuning epoch (lr 0.01),
λ ∈ {0.3, 1}·λ₀, 3 seeds; a LeNet-5 / MNIST sanity run (12,000 images, 1 seed); plus the step cost
of full-width VGG-like and ResNet-18 at batch 32. The networks are far from converged (6 epochs
on 10 % of CIFAR-10), so the table shows the mechanism at a small budget, not the thesis' accuracies. Paper profile: full VGG-like and
ResNet-18 on a user-supplied full CIFAR-10, 200 epochs, K = 15, 5 seeds.

``device`` (``--device``): where every network trains, fine-tunes (regularized and STE), is
quantized and scored, where the first seed's diagnostics (gradient norms, KL, induced loss) run,
and where the step cost is timed (CUDA: synchronized, the allocator's peak memory).
"""

import copy
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from metacompress.bench.runs import (append_run, mean_std, peak_bytes, read_runs, run_key, synchronizer,
                                     training_subset)
from metacompress.cost import median_seconds
from metacompress.data import train_val_split
from metacompress.errors import UserError
from metacompress.models import create_model, module_mode
from metacompress.quantization.diagnostics import (gradient_norms, induced_loss, quantization_kl,
                                                    test_batches)
from metacompress.quantization.evaluation import calibration_batches, config_label, ptq_accuracies
from metacompress.quantization.ptq import quantize_model
from metacompress.quantization.qat import requantize_weights, ste_finetune
from metacompress.quantization.regularizers import (Regularizer, balanced_lambda, recorded_activations,
                                                    regularizer_for)
from metacompress.recipes import load_experiment_data, spec_for
from metacompress.training import TrainConfig, evaluate, shuffled_batches, train

THESIS_CONFIGS = ((None, None), (8, 4), (6, 4), (4, 4))  # thesis Table 4.1 columns
# Lower widths too: the briefly trained CPU-profile networks barely degrade at (4,4).
CONFIGS = THESIS_CONFIGS + ((3, 4), (2, 4), (4, 3), (3, 3))
REGULARIZERS = ("none", "dq", "l2", "l1", "l1-fd")  # l1-fd: finite-difference ℓ1 at the exact ℓ1's λ
STE_TARGETS = ((8, 4), (6, 4), (4, 4))
TOLERANCE = 0.01  # float accuracy the chosen λ may cost on validation
STEP_DOWN, EXTRA_STEPS = 0.3, 3  # when every λ of the grid costs more, try up to 3 smaller ones


@dataclass
class Study:
    dataset: str
    models: tuple[str, ...]
    pretrain: TrainConfig
    finetune: TrainConfig
    seeds: tuple[int, ...]
    lambda_factors: tuple[float, ...] = (0.1, 0.3, 1.0)
    cost_models: tuple[str, ...] = ()  # thesis-size networks timed only, at cost_batch_size
    cost_batch_size: int = 32
    val_fraction: float = 0.1
    train_size: int | None = None  # a fixed random subset of the training split (None: all of it)


_CIFAR_TRAIN = TrainConfig(epochs=6, batch_size=128, lr=0.1, milestones=(0.5, 0.75), weight_decay=5e-4, augment=True)
_CIFAR_TUNE = TrainConfig(epochs=1, batch_size=128, lr=0.01, milestones=(), weight_decay=1e-4, augment=True)
PROFILES = {
    "cpu": [
        Study("cifar10", ("vgglike-quarter", "resnet20"), _CIFAR_TRAIN, _CIFAR_TUNE, (0, 1, 2),
              lambda_factors=(0.3, 1.0), cost_models=("vgglike", "resnet18"), train_size=5_560),
        # the quick sanity run: LeNet-5 on MNIST (no BatchNorm, so activation ranges are calibrated)
        Study("mnist", ("lenet5",), TrainConfig(epochs=2, batch_size=128, lr=0.05, milestones=(), weight_decay=5e-4),
              TrainConfig(epochs=1, batch_size=128, lr=0.01, milestones=(), weight_decay=1e-4), (0,),
              lambda_factors=(0.3, 1.0), train_size=12_000),
    ],
    "paper": [
        Study("cifar10", ("vgglike", "resnet18"),
              TrainConfig(epochs=200, batch_size=128, lr=0.1, milestones=(0.5, 0.75), weight_decay=5e-4,
                          augment=True),
              TrainConfig(epochs=15, batch_size=128, lr=0.001, milestones=(), weight_decay=1e-4, augment=True),
              (0, 1, 2, 3, 4)),
    ],
}

# Thesis Table 4.1 (CIFAR-10, %): FP, (8,4), (6,4), (4,4); None where the thesis prints "–".
THESIS_TABLE_4_1 = {
    "vgglike": {"none": [92.49, 79.10, 78.84, 11.47], "dq": [91.51, 86.30, 84.29, 30.86],
                "l2": [91.88, 86.64, 86.14, 63.93], "l1": [92.63, 89.74, 89.78, 85.99],
                "ste-8-4": [None, 91.28, 89.99, 32.83], "ste-6-4": [None, None, 90.25, 39.56],
                "ste-4-4": [None, None, None, 89.79]},
    "resnet18": {"none": [93.54, 85.51, 85.35, 83.98], "dq": [92.46, 83.31, 83.34, 82.47],
                 "l2": [93.31, 84.50, 84.99, 83.82], "l1": [93.36, 88.70, 88.45, 87.62],
                 "ste-8-4": [None, 89.10, 87.79, 86.21], "ste-6-4": [None, None, 90.77, 88.17],
                 "ste-4-4": [None, None, None, 89.98]},
}


def run(profile: str, data_root, out_dir: Path, device="cpu") -> dict:
    log = out_dir / "runs.jsonl"
    done = read_runs(log)
    results = {"studies": [], "models": {}, "cost": {}}
    for study in PROFILES[profile]:
        full_train, eval_sets = load_experiment_data(study.dataset, data_root)
        full_train = training_subset(full_train, study.train_size)
        train_idx, val_idx = train_val_split(len(full_train), study.val_fraction, 0)
        train_data, val_data, test_data = full_train.subset(train_idx), full_train.subset(val_idx), eval_sets["test"]
        results["studies"].append(asdict(study) | {"train_size": len(train_data), "val_size": len(val_data),
                                                   "test_size": len(test_data)})
        for name in study.models:
            results["models"][name] = run_model(name, study, train_data, val_data, test_data, log, done, device)
        for name in study.models + study.cost_models:
            batch_size = 128 if name in study.models else study.cost_batch_size
            key = run_key("cost", {"model": name, "batch_size": batch_size}, name, device=device)
            if key not in done:
                done[key] = append_run(log, key, step_costs(name, train_data, batch_size, device=device))
            results["cost"][name] = {k: v for k, v in done[key].items() if k != "key"}
            print(f"cost {name}: {results['cost'][name]}", flush=True)
    if profile == "paper":
        results["thesis_table_4_1"] = THESIS_TABLE_4_1
    plot_table(results, out_dir / "accuracy_table.png")
    plot_diagnostics(results, out_dir / "diagnostics.png")
    return results


def run_model(name, study: Study, train_data, val_data, test_data, log: Path, done: dict, device="cpu") -> dict:
    spec = spec_for(name, train_data)
    calibration = calibration_batches(train_data, device=device)
    rows: dict[str, list[dict]] = {}
    search, diagnostics, chosen = {}, {}, {}
    for i, seed in enumerate(study.seeds):
        state = {}

        def pretrained():  # trained lazily: a resumed run whose rows are all logged skips it
            if "model" not in state:
                torch.manual_seed(seed)
                state["model"] = train(spec, train_data, {}, replace(study.pretrain, seed=seed), progress=False,
                                       device=device).model
            return state["model"]

        def logged(row: str, fn):
            key = run_key(f"quant/{name}", study, seed, row, device=device)
            if key not in done:
                done[key] = append_run(log, key, fn())
                print(f"{name} seed {seed} {row}: {done[key]}", flush=True)
            return done[key]

        def finetuned(kind, lam):
            return logged(f"{kind}-{lam:.3g}", lambda: regularized_run(
                pretrained(), kind, lam, spec, study, seed, train_data, val_data, test_data, calibration,
                diagnose=i == 0, device=device))

        if i == 0:
            ratio = logged("lambda0", lambda: penalty_ratios(pretrained(), train_data, device))
            reference = finetuned("none", 0.0)
            for kind in ("dq", "l2", "l1"):
                trials = [(f * ratio[kind], finetuned(kind, f * ratio[kind])) for f in study.lambda_factors]
                fine = [lam for lam, r in trials if r["val_fp"] >= reference["val_fp"] - TOLERANCE]
                while not fine and len(trials) < len(study.lambda_factors) + EXTRA_STEPS:
                    lam = min(lam for lam, _ in trials) * STEP_DOWN  # every λ hurt: continue the grid down
                    trials.append((lam, finetuned(kind, lam)))
                    fine = [lam] if trials[-1][1]["val_fp"] >= reference["val_fp"] - TOLERANCE else []
                chosen[kind] = max(fine) if fine else min(lam for lam, _ in trials)
                search[kind] = {"lambda0": ratio[kind], "trials": [{"lambda": lam, "val_fp": r["val_fp"],
                                                                    "test": r["test"]} for lam, r in trials],
                                "chosen": chosen[kind]}
            chosen["none"], chosen["l1-fd"] = 0.0, chosen["l1"]
            diagnostics = {"none": reference.get("diagnostics"), "l1": finetuned("l1", chosen["l1"]).get("diagnostics"),
                           "l1_lambda": chosen["l1"]}
        for kind in REGULARIZERS:
            rows.setdefault(kind, []).append(finetuned(kind, chosen[kind]))
        for w_bits, a_bits in STE_TARGETS:
            label = f"ste-{w_bits}-{a_bits}"
            rows.setdefault(label, []).append(logged(label, lambda: ste_run(
                pretrained(), w_bits, a_bits, spec, study, seed, train_data, test_data, calibration, device)))
    table = {row: summarize([r["test"] for r in runs]) for row, runs in rows.items()}
    return {"lambda_search": search, "table": table, "diagnostics": diagnostics}


def summarize(runs: list[dict]) -> dict:
    return {label: dict(zip(("mean", "std"), mean_std([r[label] for r in runs]))) | {"runs": [r[label] for r in runs]}
            for label in runs[0]}


def regularized_fine_tune(model, kind, lam, spec, study: Study, seed, train_data, device="cpu"):
    tuned = copy.deepcopy(model)
    torch.manual_seed(seed)
    with recorded_activations(tuned) as activations:
        regularizer = make_regularizer(kind, lam, activations)
        result = train(spec, train_data, {}, replace(study.finetune, seed=seed), model=tuned, progress=False,
                       backward=regularizer, device=device)
    return tuned, result, regularizer.last_penalty


def make_regularizer(kind: str, lam: float, activations: list) -> Regularizer:
    """A row's regularizer: none, dq, l2, l1 (exact) or l1-fd (ℓ1 by finite differences)."""
    if kind == "l1-fd":
        return regularizer_for("l1", lam, activations, "finite-difference")
    return regularizer_for(kind, lam, activations)


def regularized_run(model, kind, lam, spec, study, seed, train_data, val_data, test_data, calibration,
                    diagnose: bool = False, device="cpu") -> dict:
    try:
        tuned, result, penalty = regularized_fine_tune(model, kind, lam, spec, study, seed, train_data, device)
    except UserError as e:  # a too-strong λ can diverge; that is a search outcome, not a crash
        return {"kind": kind, "lambda": lam, "diverged": str(e), "val_fp": float("nan"),
                "test": {config_label(w, a): float("nan") for w, a in CONFIGS}}
    record = {"kind": kind, "lambda": lam, "final_penalty": penalty, "train_loss": result.final["train_loss"],
              "val_fp": evaluate(tuned, val_data)["accuracy"],
              "test": ptq_accuracies(tuned, CONFIGS, test_data, calibration)}
    if diagnose:  # on the device the network was fine-tuned on, where ``tuned`` and ``calibration`` are
        record["diagnostics"] = diagnostics(tuned, test_data, calibration, seed)
    return record


def ste_run(model, w_bits, a_bits, spec, study, seed, train_data, test_data, calibration, device="cpu") -> dict:
    torch.manual_seed(seed)
    quantized = ste_finetune(model, w_bits, a_bits, spec, train_data, {}, replace(study.finetune, seed=seed),
                             calibration, device=device)
    target = evaluate(quantized, test_data)["accuracy"]
    test = {}
    for w, a in CONFIGS[1:]:
        if a != a_bits:  # the STE model's activation grids are fixed at its target width
            continue
        if w == w_bits:
            test[config_label(w, a)] = target
            continue
        requantize_weights(quantized, w)
        accuracy = evaluate(quantized, test_data)["accuracy"]
        test[config_label(w, a)] = max(accuracy, target) if w > w_bits else accuracy
    return {"target": config_label(w_bits, a_bits), "test": test}


def penalty_ratios(model, train_data, device="cpu") -> dict:
    x, y = next(shuffled_batches(train_data, 128, 0, device))
    return {kind: balanced_lambda(model, x, y, kind) for kind in ("dq", "l2", "l1")}


def step_costs(name: str, train_data, batch_size: int = 128, repeats: int = 3, device="cpu") -> dict:
    """Regularized over plain training-step time on one batch, interleaved, and peak tensor memory
    (on ``device``)."""
    torch.manual_seed(0)
    _, channels, size, _ = train_data.images.shape
    model = create_model(name, len(train_data.classes), channels, size).to(device)
    x, y = next(shuffled_batches(train_data, batch_size, 0, device))
    sync = synchronizer(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    steps = {}
    with recorded_activations(model) as activations:
        for kind in ("none", "dq", "l2", "l1", "l1-fd"):
            regularizer = make_regularizer(kind, 1e-6, activations)

            def step(regularizer=regularizer):
                optimizer.zero_grad(set_to_none=True)
                regularizer(F.cross_entropy(model(x), y), model, recompute=lambda: F.cross_entropy(model(x), y))
                optimizer.step()

            steps[kind] = step
        with module_mode(model, training=True):
            times = {kind: [] for kind in steps}
            for _ in range(repeats):
                for kind, step in steps.items():
                    times[kind].append(median_seconds(step, 1, warmup=1, synchronize=sync))
            memory = {kind: peak_bytes(step, device) for kind, step in steps.items()}
    seconds = {kind: statistics.median(t) for kind, t in times.items()}
    return {"batch_size": batch_size, "step_s": seconds, "peak_tensor_bytes": memory,
            "time_ratio": {k: seconds[k] / seconds["none"] for k in seconds if k != "none"},
            "memory_ratio": {k: memory[k] / memory["none"] for k in memory if k != "none"}}


def diagnostics(model, test_data, calibration, seed, batches: int = 10) -> dict:
    """Figures 4.4 / 4.5 / 4.1: gradient norms and quantization KL per test batch, and the loss
    change of random 4-bit-sized weight noise against its first-order prediction; on the model's device."""
    x, y = next(test_batches(test_data, 500))
    return {"gradient_norms": gradient_norms(model, test_data, 100, batches),
            "kl": {config_label(w, a): quantization_kl(model, quantize_model(model, w, a, calibration), test_data,
                                                       100, batches) for w, a in THESIS_CONFIGS[1:] + ((3, 3),)},
            "induced_loss_4bit": induced_loss(model, x, y, bits=4, samples=20, seed=seed)}


def plot_table(results: dict, path: Path) -> None:
    models = results["models"]
    fig = Figure(figsize=(12, 4 * len(models)), layout="tight")
    axes = fig.subplots(len(models), 1, squeeze=False)
    for ax, (name, model) in zip(axes[:, 0], models.items()):
        rows = list(model["table"])
        labels = [config_label(w, a) for w, a in CONFIGS]
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            means = [100 * model["table"][row].get(label, {}).get("mean", float("nan")) for label in labels]
            stds = [100 * model["table"][row].get(label, {}).get("std", 0.0) for label in labels]
            ax.bar([j + i * width for j in range(len(labels))], means, width, yerr=stds, label=row, capsize=2)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{name}: accuracy after post-training quantization (w, a)", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=120)


def plot_diagnostics(results: dict, path: Path) -> None:
    models = {n: m["diagnostics"] for n, m in results["models"].items()}
    fig = Figure(figsize=(15, 4 * len(models)), layout="tight")
    axes = fig.subplots(len(models), 3, squeeze=False)
    for row, (name, diag) in zip(axes, models.items()):
        for kind, style in (("none", "o"), ("l1", "x")):
            norms = diag[kind]["gradient_norms"]
            row[0].scatter(norms["l2"], norms["l1"], marker=style, label=f"{kind} (reg)" if kind != "none" else "no reg")
            for label, kls in diag[kind]["kl"].items():
                row[1].plot(kls, marker=style, label=f"{kind} {label}")
            induced = diag[kind]["induced_loss_4bit"]
            row[2].scatter(induced["first_order"], induced["actual"], marker=style, label=kind)
        row[0].set(xlabel="‖∇L‖₂ per test batch", ylabel="‖∇L‖₁", title=f"{name}: gradient norms (Fig. 4.4)")
        row[1].set(xlabel="test batch", ylabel="KL(p_fp ‖ p_quant)", yscale="log",
                   title=f"{name}: quantization KL (Fig. 4.5)")
        row[2].set(xlabel="first-order prediction ⟨Δ, ∇L⟩", ylabel="actual loss change",
                   title=f"{name}: 4-bit-sized weight noise (Fig. 4.1)")
        for ax in row:
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
