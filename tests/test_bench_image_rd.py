import json

import pytest
from PIL import Image

from metacompress.bench import image_rd as bench
from metacompress.bench import rd_results
from metacompress.bench.results import run_benchmark
from metacompress.codecs.coin import decode_image
from metacompress.data import load_image, sample_path
from metacompress.errors import UserError
from metacompress.metrics import psnr


@pytest.fixture
def tiny_kodak(tmp_path):
    """A data root whose kodak/ holds three 48×64 crops of the bundled photo."""
    photo = load_image(sample_path("photo"))
    folder = tmp_path / "data" / "kodak"
    folder.mkdir(parents=True)
    for i, (y, x) in enumerate([(0, 0), (100, 80), (180, 150)], start=1):
        Image.fromarray(photo[y:y + 48, x:x + 64]).save(folder / f"kodim{i:02d}.png")
    return tmp_path / "data"


def test_image_rd_benchmark_measures_real_files_and_resumes(tiny_kodak, tmp_path, monkeypatch):
    profile = bench.Profile(rates=(1.0, 2.0, 3.0), coin_images=("kodim01", "kodim02"), iterations=60, lr=None,
                            probe_lrs=(2e-4, 5e-3), probe_image="kodak/kodim03.png", sheet=("kodim02", 1.0))
    monkeypatch.setitem(bench.PROFILES, "cpu", profile)
    out = tmp_path / "results"
    results = run_benchmark(bench, "image-rd", "cpu", tiny_kodak, out, codec="coin")
    assert set(results["all_images"]) == {"jpeg", "jpeg2000", "webp", "avif", "heic", "jxl"}
    assert set(results["coin_images"]) == {"coin"} | set(results["all_images"])
    for curves in (results["all_images"], results["coin_images"]):
        for name, c in curves.items():
            assert set(c) == {"bpp", "psnr", "encoding_time", "decoding_time"} and len(c["psnr"]) == 3
            assert c["psnr"][0] < c["psnr"][1] or name == "heic"  # more bits, better images
    for image, per_rate in results["per_image"]["coin"].items():
        original = load_image(tiny_kodak / "kodak" / f"{image}.png")
        for rate, record in per_rate.items():
            data = (out / record["file"]).read_bytes()
            assert record["bpp"] == pytest.approx(8 * len(data) / (48 * 64)) and record["bpp"] <= rate
            assert record["psnr"] == pytest.approx(psnr(original, decode_image(data)))
    probe = results["lr_probe"]
    assert probe["rate"] == 2.0 and probe["chosen"] == 5e-3 and probe["psnr"]["0.005"] > probe["psnr"]["0.0002"]
    assert results["settings"]["lr"] == 5e-3
    jpeg = results["per_image"]["jpeg"]["kodim03"][2.0]
    assert jpeg["bpp"] <= 2.0 and 20 < jpeg["psnr"] < 60
    summary = results["coin_encoding"]["1.0"]
    assert summary["iterations_per_s"] > 0 and summary["beat_jpeg"].endswith("/2")
    bits = summary["weight_bits"]
    assert bits["8"]["bpp"] < bits["12"]["bpp"] < bits["16"]["bpp"] and bits["8"]["psnr"] <= bits["16"]["psnr"] + 0.1
    for png in ("rd.png", "rd_all_images.png", "fit.png", "sheet_kodim02.png"):
        assert (out / png).stat().st_size > 10_000
    document = json.loads((out / "results.json").read_text())
    assert document["name"] == "image-rd" and document["results"]["official_coin"]["psnr"][0] == 22.41
    # CompressAI-shaped files per dataset; 48×64 crops are too small for MS-SSIM, so it is left out
    jpeg = rd_results.read(out / "rd" / "kodak" / "jpeg.json")
    assert jpeg.name == "JPEG" and list(jpeg.results) == ["bpp", "psnr-rgb", "encoding_time", "decoding_time"]
    assert jpeg.results["psnr-rgb"] == pytest.approx(results["all_images"]["jpeg"]["psnr"])
    coin = rd_results.read(out / "rd" / "kodak-kodim01-kodim02" / "coin.json")
    assert coin.results["bpp"] == pytest.approx(results["coin_images"]["coin"]["bpp"])
    webp = results["bd_rate"]["kodak"]["WebP"]["JPEG"]["psnr-rgb"]
    assert isinstance(webp["bd_rate"], float) and webp["quality_range"][0] < webp["quality_range"][1]
    assert set(results["bd_rate"]["kodak-kodim01-kodim02"]["COIN"]) == {"JPEG", "WebP"}

    def no_encoding(*args, **kwargs):
        raise AssertionError("a resumed benchmark encoded again")

    monkeypatch.setattr(bench, "encode_image", no_encoding)
    monkeypatch.setattr(bench, "encode_at_bpp", no_encoding)
    # runs logged before MS-SSIM was measured get it from their files, without encoding, in place
    log = out / "runs.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "ms-ssim"}) + "\n" for r in lines))
    again = bench.run("cpu", tiny_kodak, out)
    assert again["coin_images"] == results["coin_images"]
    assert [json.loads(line) for line in log.read_text().splitlines()] == lines


def test_image_rd_refuses_an_unknown_codec(tiny_kodak, tmp_path):
    with pytest.raises(UserError, match="not 'nope'"):
        bench.run("cpu", tiny_kodak, tmp_path, codec="nope")
