import json

import pytest

from metacompress.bench import prune_at_init as bench
from metacompress.training import TrainConfig

CONFIG = TrainConfig(epochs=1, batch_size=64, lr=0.05)


def test_prune_benchmark_runs_resumes_and_reports(tmp_path, monkeypatch):
    sweep = bench.Setting("lenet5", "mnist-sample", CONFIG, (0.5, 0.9), seeds=(0, 1), variants=("snip", "random"),
                          train_size=512)
    meta = bench.Setting("lenet5", "mnist-sample", CONFIG, (0.9,), seeds=(0,), train_size=512, meta_steps=(0, 1))
    monkeypatch.setitem(bench.PROFILES, "cpu", {"sweep": sweep, "meta": meta})
    monkeypatch.setattr(bench, "COST_MODEL", ("lenet5", "mnist-sample"))
    results = bench.run("cpu", None, tmp_path)

    snip = results["sweep"]["methods"]["snip"]
    assert snip["sparsity"] == [0.5, 0.9] and snip["actual_sparsity"] == pytest.approx([0.5, 0.9], abs=1e-4)
    runs = results["sweep"]["runs"]
    assert len(runs) == 2 * 2 * 2
    at_09 = [r["test_accuracy"] for r in runs if r["variant"] == "snip" and r["sparsity"] == 0.9]
    assert snip["accuracy_mean"][1] == pytest.approx(sum(at_09) / 2)
    assert snip["accuracy_std"][1] == pytest.approx(abs(at_09[0] - at_09[1]) / 2**0.5)
    # ProsPr with M = 0 on one batch is SNIP: same masks, same training, same accuracy.
    m0 = next(r for r in results["meta"]["runs"] if r["variant"] == "prospr-M0")
    snip_run = next(r for r in runs if r["variant"] == "snip" and r["sparsity"] == 0.9 and r["seed"] == 0)
    assert m0["test_accuracy"] == snip_run["test_accuracy"]
    cost = results["prospr-cost"]
    assert cost["prospr-M3"]["training_steps"] > cost["snip"]["training_steps"]
    assert (tmp_path / "accuracy_vs_sparsity.png").stat().st_size > 10_000
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 8 + 2

    monkeypatch.setattr(bench, "one_run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    again = bench.run("cpu", None, tmp_path)
    assert again["sweep"]["methods"] == results["sweep"]["methods"]


def test_thesis_tables_have_all_eighteen_sparsities():
    for table in (bench.THESIS_TABLE_A2, bench.THESIS_TABLE_A3):
        assert len(table["sparsity"]) == 18 and table["sparsity"][-1] == 0.982
        assert all(len(row["mean"]) == len(row["std"]) == 18 for m, row in table.items() if m != "sparsity")
    assert bench.THESIS_TABLE_A2["prospr"]["mean"][0] == 92.3 and bench.THESIS_TABLE_A2["random"]["std"][-1] == 12.5
    json.dumps(bench.THESIS_TABLE_A2)
