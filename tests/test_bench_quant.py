import pytest

from metacompress.bench import quant_robustness as bench
from metacompress.training import TrainConfig

TINY = TrainConfig(epochs=2, batch_size=64, lr=0.05, milestones=(), weight_decay=1e-4)


def test_quant_robustness_benchmark_fills_the_table_records_the_search_and_resumes(tmp_path, monkeypatch):
    study = bench.Study("mnist-sample", ("lenet5",), TINY, TINY, (0, 1), lambda_factors=(0.01, 0.1),
                        train_size=512)
    monkeypatch.setitem(bench.PROFILES, "cpu", [study])
    results = bench.run("cpu", None, tmp_path)
    model = results["models"]["lenet5"]
    assert set(model["table"]) == {"none", "dq", "l2", "l1", "l1-fd", "ste-8-4", "ste-6-4", "ste-4-4"}
    for row, columns in model["table"].items():
        labels = [bench.config_label(w, a) for w, a in bench.CONFIGS]
        expected = ({label for label in labels if label.endswith(",4)")} if row.startswith("ste") else set(labels))
        assert set(columns) == expected and all(len(c["runs"]) == 2 for c in columns.values())
        assert all(0 <= c["mean"] <= 1 for c in columns.values())
    for kind in ("dq", "l2", "l1"):
        search = model["lambda_search"][kind]
        lambdas = [t["lambda"] for t in search["trials"]]
        assert lambdas[:2] == pytest.approx([0.01 * search["lambda0"], 0.1 * search["lambda0"]])
        # λs that all cost too much float accuracy extend the grid downwards, ×0.3 at a time
        assert len(lambdas) <= 2 + bench.EXTRA_STEPS
        assert all(b == pytest.approx(bench.STEP_DOWN * min(lambdas[:i + 2]))
                   for i, b in enumerate(lambdas[2:]))
        assert search["chosen"] in lambdas
    diagnostics = model["diagnostics"]
    assert len(diagnostics["none"]["gradient_norms"]["l1"]) == 10
    assert all(l1 >= l2 for l1, l2 in zip(*diagnostics["l1"]["gradient_norms"].values()))
    cost = results["cost"]["lenet5"]
    assert set(cost["time_ratio"]) == {"dq", "l2", "l1", "l1-fd"} and cost["time_ratio"]["l1"] > 1
    assert cost["memory_ratio"]["l1"] > 1
    for png in ("accuracy_table.png", "diagnostics.png"):
        assert (tmp_path / png).stat().st_size > 10_000

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed benchmark retrained")

    monkeypatch.setattr(bench, "train", no_training)
    monkeypatch.setattr(bench, "ste_finetune", no_training)
    again = bench.run("cpu", None, tmp_path)
    assert again["models"]["lenet5"]["table"] == model["table"]
