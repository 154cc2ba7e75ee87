from metacompress.bench import structured_speedup as bench
from metacompress.training import TrainConfig


def test_structured_speedup_benchmark_measures_every_configuration(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.PROFILES, "cpu", {
        "models": ("lenet5",), "dataset": "mnist-sample", "train_size": 256, "seed": 0,
        "config": TrainConfig(epochs=1, batch_size=64, lr=0.05, milestones=())})
    results = bench.run("cpu", None, tmp_path)
    rows = results["models"]["lenet5"]
    assert set(rows) == set(bench.CONFIGS)
    base = rows["original"]
    assert base["speedup"]["flops"] == 1.0 and "flops_removed" not in base
    for label, (fraction, _) in ((k, v) for k, v in bench.CONFIGS.items() if v is not None):
        row = rows[label]
        if "refused" in row:  # a configuration that would empty a layer says which one
            assert "would remove every channel of" in row["refused"]
            continue
        assert row["flops_removed"] >= fraction
        assert row["flops"] <= (1 - fraction) * base["flops"] + 1
        assert row["params"] < base["params"] and row["disk_bytes"] < base["disk_bytes"]
        assert row["speedup"]["flops"] >= 1 / (1 - fraction) - 1e-9
        assert 0 <= row["test_accuracy"] <= 1 and row["pruning_ms"] > 0
    assert sum("speedup" in row for row in rows.values()) >= 3
    assert (tmp_path / "speedup.png").stat().st_size > 10_000


def test_structured_accuracy_benchmark_trains_or_refuses_every_setting_and_resumes(tmp_path, monkeypatch):
    import pytest

    from metacompress.bench import structured_accuracy as acc

    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, milestones=())
    study = acc.Study("lenet5", "mnist-sample", config, "params", (0.5, 0.9), ("uniform", "3sp-rescale"), (0, 1), 256)
    monkeypatch.setitem(acc.PROFILES, "cpu", {"params-removed": study})
    results = acc.run("cpu", None, tmp_path)["params-removed"]
    assert len(results["runs"]) == 2 * 2 * 2
    for variant, row in results["methods"].items():
        assert len(row["fraction"]) + len(row["refused"]) == 2
        assert all(r >= f for r, f in zip(row["removed"], row["fraction"]))
        assert all(0 <= a <= 1 for a in row["accuracy_mean"])
    monkeypatch.setattr(acc, "one_run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert acc.run("cpu", None, tmp_path)["params-removed"]["methods"] == results["methods"]
    assert (tmp_path / "structured_accuracy.png").exists()
