"""bench coinpp-rd end to end with tiny base networks on the real data (sphere, audio, volume)."""

import json

import pytest

from metacompress.bench import coinpp_rd as bench
from metacompress.bench import rd_results
from metacompress.bench.results import run_benchmark

TINY = {
    "sphere": bench.Profile((bench.BaseRecipe(4, 16, 2, 4, 4, 1e-3),), test_limit=3, bits=(3, 8),
                            throughput_workers=(1, 2)),
    "audio": bench.Profile((bench.BaseRecipe(8, 16, 2, 3, 4, 1e-3, patch=(200,)),), test_limit=2, bits=(4,),
                           ablation_limit=1),
    "volume": bench.Profile((bench.BaseRecipe(8, 16, 2, 3, 4, 1e-3, patch=(8, 8, 8)),), bits=(4,),
                            options={"crop": 16}),
}


@pytest.mark.parametrize("modality", list(TINY))
def test_coinpp_rd_writes_measured_results_and_reuses_its_base(data_root, tmp_path, monkeypatch, modality):
    if modality == "audio":  # a few training clips are enough here
        monkeypatch.setattr(bench.coinpp_tasks.Audio, "load_train",
                            lambda self: self.root / "audio" / "fsdd_8k" / "recordings" / "0_george_0.wav")
    monkeypatch.setitem(bench.CPU, modality, TINY[modality])
    out = tmp_path / "results"
    results = run_benchmark(bench, "coinpp-rd", "cpu", data_root, out, modality=modality)
    document = json.loads((out / "results.json").read_text())
    assert document["results"]["modality"] == modality and (out / "rd.png").exists() and (out / "sheet.png").exists()
    (entry,) = results["coinpp"].values()
    points = entry["points"]
    assert [p["bits"] for p in points] == list(TINY[modality].bits)
    if len(points) == 2:  # more bits per latent: a bigger file
        assert points[0]["bytes"] < points[1]["bytes"]
    assert results["decode_check"]["identical"]
    assert [a["steps"] for a in results["ablation_steps"]] == [3, 10, 50]
    off, on = results["ablation_entropy"]["off"], results["ablation_entropy"]["on"]
    assert off["psnr"] == on["psnr"] and off["bytes"] != on["bytes"]
    assert all(len(curve) >= 2 for curve in results["classical"].values())
    # one CompressAI-shaped file per curve, and BD-rate of each against the setting's anchors
    task = bench.coinpp_tasks.TASKS[modality]
    coinpp = rd_results.read(out / "rd" / modality / rd_results.file_name(f"COIN++ {next(iter(results['coinpp']))}"))
    assert coinpp.rate_key == task.rd_rate_key and set(coinpp.quality_keys) == set(task.rd_qualities)
    assert coinpp.results[task.rd_rate_key] == pytest.approx([p["rate"] for p in points])
    anchors = {bench.coinpp_tasks.LABELS[a] for a in task.bd_anchors}
    (table,) = [v for k, v in results["bd_rate"].items() if k.startswith("COIN++") and "archive" not in k]
    assert set(table) == anchors and all(set(e) == {"bd_rate", "quality_range"} for q in table.values() for e in q.values())
    if modality == "sphere":
        # 8 bits no worse than 3 (a 4-step base starts at the data's mean and barely uses its latents)
        assert points[1]["rmse"] <= points[0]["rmse"] * (1 + 1e-4) and points[0]["rate"] > points[1]["rate"]
        # one archive of the 3 globes: 68 bytes of header, index and CRCs where 3 files have 3 × 8 header bytes
        # (records here are under 128 bytes: one-byte lengths)
        for p in points:
            assert p["archive_bytes"] == p["bytes"] - 3 * 8 + 39 + 5 + 1 + 3 * 5 + 4 + 4
            assert p["archive_rate"] == pytest.approx(3 * 73 * 144 * 2 * 4 / p["archive_bytes"])
        runs = results["archive_throughput"]["runs"]
        assert [r["workers"] for r in runs] == [1, 2, 1, 2] and all(r["identical_to_first"] for r in runs)
        assert runs[0]["items"] == 3 and len({r["archive_bytes"] for r in runs}) == 1
        assert set(results["archive_throughput"]["best_items_per_s"]) == {"1", "2"}
    # a second run loads the cached base network instead of training again
    monkeypatch.setattr(bench, "train_base", lambda *a, **k: pytest.fail("retrained"))
    again = run_benchmark(bench, "coinpp-rd", "cpu", data_root, out, modality=modality)
    assert again["coinpp"] == results["coinpp"] or all(
        a["hash"] == b["hash"] for a, b in zip(again["coinpp"].values(), results["coinpp"].values()))
