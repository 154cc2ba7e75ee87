"""``bench NAME --device`` (issue 16): every benchmark threads its device to where networks are
trained, fitted and timed. On the CPU the device ``cpu:0`` (not the default ``"cpu"``) shows that
it got there; the ``cuda`` tests run a tiny slice of each benchmark where a GPU exists."""

import inspect
import json

import pytest
import torch
from PIL import Image

from metacompress.bench import (BENCHMARKS, image_rd, prune_at_init, quant_robustness, runs, structured_accuracy,
                                structured_speedup)
from metacompress.bench.results import run_benchmark
from metacompress.cli import main
from metacompress.data import load_image, sample_path
from metacompress.training import TrainConfig

CPU0 = torch.device("cpu", 0)
TINY = TrainConfig(epochs=1, batch_size=64, lr=0.05, milestones=())
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def tiny_prune(monkeypatch, tmp_path):
    monkeypatch.setitem(prune_at_init.PROFILES, "cpu", {"sweep": prune_at_init.Setting(
        "lenet5", "mnist-sample", TINY, (0.5,), seeds=(0,), variants=("random", "synflow", "snip"), train_size=256,
        rounds={"synflow": 5})})
    monkeypatch.setattr(prune_at_init, "COST_MODEL", ("lenet5", "mnist-sample"))


def tiny_structured(monkeypatch, tmp_path):
    monkeypatch.setitem(structured_accuracy.PROFILES, "cpu", {"params-removed": structured_accuracy.Study(
        "lenet5", "mnist-sample", TINY, "params", (0.5,), ("uniform", "3sp"), (0,), 256)})


def tiny_quant(monkeypatch, tmp_path):
    """One seed, one λ, FP and (4,4) only, diagnostics on 1 batch (checked to run where the network
    and its calibration batches are), step costs timed once."""
    monkeypatch.setitem(quant_robustness.PROFILES, "cpu", [quant_robustness.Study(
        "mnist-sample", ("lenet5",), TINY, TINY, (0,), lambda_factors=(0.1,), train_size=256)])
    monkeypatch.setattr(quant_robustness, "EXTRA_STEPS", 0)
    monkeypatch.setattr(quant_robustness, "CONFIGS", ((None, None), (4, 4)))
    monkeypatch.setattr(quant_robustness, "STE_TARGETS", ((4, 4),))
    diagnostics = quant_robustness.diagnostics

    def beside_the_network(model, test_data, calibration, seed):
        device = next(model.parameters()).device
        assert all(x.device == device for x, _ in calibration)
        return diagnostics(model, test_data, calibration, seed, batches=1)

    monkeypatch.setattr(quant_robustness, "diagnostics", beside_the_network)
    step_costs = quant_robustness.step_costs
    monkeypatch.setattr(quant_robustness, "step_costs", lambda *args, **kwargs: step_costs(*args, repeats=1, **kwargs))


def tiny_speedup(monkeypatch, tmp_path):
    monkeypatch.setitem(structured_speedup.PROFILES, "cpu", {
        "models": ("lenet5",), "dataset": "mnist-sample", "train_size": 256, "seed": 0, "config": TINY})
    fast = structured_speedup.compare_prediction_seconds
    monkeypatch.setattr(structured_speedup, "compare_prediction_seconds",
                        lambda models, example, threads=None: fast(models, example, 2, 2, threads))


def tiny_image_rd(monkeypatch, tmp_path):
    """Two 48×64 crops of the bundled photo as kodak/; COIN on one of them, 20 iterations."""
    photo = load_image(sample_path("photo"))
    folder = tmp_path / "data" / "kodak"
    folder.mkdir(parents=True)
    for i, (y, x) in enumerate([(0, 0), (100, 80)], start=1):
        Image.fromarray(photo[y:y + 48, x:x + 64]).save(folder / f"kodim{i:02d}.png")
    monkeypatch.setitem(image_rd.PROFILES, "cpu", image_rd.Profile(rates=(1.0,), coin_images=("kodim01",),
                                                                   iterations=20, lr=5e-3, sheet=("kodim01", 1.0)))
    return tmp_path / "data"


# benchmark → (module, its tiny profile, the (namespace, function) calls whose ``device=`` is checked)
CASES = {
    "prune-at-init": (prune_at_init, tiny_prune, [(prune_at_init, "prune_and_train"), (prune_at_init, "prospr_cost")]),
    "structured-accuracy": (structured_accuracy, tiny_structured, [(structured_accuracy, "prune_and_train")]),
    "quant-robustness": (quant_robustness, tiny_quant, [(quant_robustness, "train"),
                                                        (quant_robustness, "ste_finetune"),
                                                        (quant_robustness, "calibration_batches"),
                                                        (quant_robustness, "step_costs")]),
    "structured-speedup": (structured_speedup, tiny_speedup, [(structured_speedup, "train")]),
    "image-rd": (image_rd, tiny_image_rd, [(image_rd, "encode_image")]),
}


def record_devices(monkeypatch, targets) -> dict:
    seen = {}
    for owner, name in targets:
        real = getattr(owner, name)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            seen.setdefault(_name, []).append(kwargs.get("device", "default"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)
    return seen


def run_tiny(name, device, monkeypatch, tmp_path) -> tuple[dict, dict, dict]:
    module, tiny, targets = CASES[name]
    data_root = tiny(monkeypatch, tmp_path)
    seen = record_devices(monkeypatch, targets)
    out = tmp_path / "out"
    results = run_benchmark(module, name, "cpu", data_root, out, device=device)
    return results, seen, json.loads((out / "results.json").read_text())


def test_every_benchmark_takes_a_device():
    assert set(CASES) | {"train-reference", "coinpp-rd", "coinpp-effort"} == set(BENCHMARKS)
    for name, module in BENCHMARKS.items():
        assert "device" in inspect.signature(module.run).parameters, name


@pytest.mark.parametrize("name", CASES)
def test_each_benchmark_threads_its_device_to_training(name, monkeypatch, tmp_path):
    results, seen, document = run_tiny(name, CPU0, monkeypatch, tmp_path)
    assert set(seen) == {name for _, name in CASES[name][2]}, seen
    assert all(device == CPU0 for devices in seen.values() for device in devices), seen
    assert document["device"] == "cpu:0" and document["results"] == json.loads(json.dumps(results))


def test_cpu_run_keys_are_those_logged_before_devices():
    settings = prune_at_init.PROFILES["cpu"]["resnet20-cifar10"]
    before = runs.run_key("resnet20-cifar10", settings, "snip", 0.5, 0)
    assert before == runs.run_key("resnet20-cifar10", settings, "snip", 0.5, 0, device="cpu")
    assert before == runs.run_key("resnet20-cifar10", settings, "snip", 0.5, 0, device=CPU0)
    assert before != runs.run_key("resnet20-cifar10", settings, "snip", 0.5, 0, device=torch.device("cuda"))


def test_an_unavailable_bench_device_is_one_line_and_exit_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    out = tmp_path / "out"
    assert main(["bench", "structured-speedup", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda: no CUDA device" in err[0], err
    assert not out.exists()


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", CASES)
def test_each_benchmark_runs_a_tiny_slice_on_cuda(name, monkeypatch, tmp_path):
    results, seen, document = run_tiny(name, "cuda", monkeypatch, tmp_path)
    gpu = torch.device("cuda", 0)
    assert all(device == gpu for devices in seen.values() for device in devices), seen
    assert document["device"] == "cuda:0"
    if name == "prune-at-init":
        assert results["sweep"]["methods"]["random"]["actual_sparsity"] == pytest.approx([0.5], abs=1e-3)
        assert results["prospr-cost"]["device"] == "cuda:0" and results["prospr-cost"]["snip"]["seconds"] > 0
    elif name == "structured-accuracy":
        assert all(0 <= a <= 1 for row in results["params-removed"]["methods"].values() for a in row["accuracy_mean"])
    elif name == "quant-robustness":
        assert 0 <= results["models"]["lenet5"]["table"]["l1"]["(4,4)"]["mean"] <= 1
        assert results["models"]["lenet5"]["diagnostics"]["none"]["gradient_norms"]["l1"]
        assert results["cost"]["lenet5"]["memory_ratio"]["l1"] > 1
    elif name == "structured-speedup":
        rows = results["models"]["lenet5"]
        assert rows["original"]["gpu_prediction_ms"] > 0 and rows["original"]["cpu_prediction_ms"] > 0
        assert all("gpu_prediction" in row["speedup"] for row in rows.values() if "speedup" in row)
    elif name == "image-rd":
        record = results["per_image"]["coin"]["kodim01"][1.0]
        assert record["file"].endswith("-cuda.mcz") and record["bpp"] <= 1.0
        assert (tmp_path / "out" / record["file"]).exists()
