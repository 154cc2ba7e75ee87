"""metacompress.metrics (PSNR, MS-SSIM, RMSE, SNR, BD-rate) and the RD result files of bench/rd_results."""

import json
import math

import numpy as np
import pytest

from metacompress import metrics
from metacompress.bench import rd_results
from metacompress.bench.rd_results import RDResult
from metacompress.errors import FormatError
from metacompress.metrics import bd_rate, ms_ssim, psnr, psnr_from_mse, rmse, snr_db


def photo_like(height=192, width=256, seed=0) -> np.ndarray:
    """A smooth uint8 RGB image with some texture (MS-SSIM of pure noise says little)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    base = 128 + 60 * np.sin(x / 17.0)[..., None] * np.cos(y / 23.0)[..., None] + rng.normal(0, 8, (height, width, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_psnr_of_a_constant_error_of_one_level():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255)) == pytest.approx(48.1308, abs=1e-4)
    assert psnr(a.astype(np.uint16), a.astype(np.uint16) + 1) == pytest.approx(20 * math.log10(65535))
    floats = np.zeros((4, 4), np.float32)
    assert psnr(floats, floats + 0.1) == pytest.approx(20.0, abs=1e-5)  # peak 1 for floats
    assert psnr(floats, floats + 0.1, peak=2.0) == pytest.approx(20 + 20 * math.log10(2), abs=1e-5)
    # an error of 10 on every value, then on half of them: MSE 100 and 50
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    half = a.copy()
    half[:4] += 10
    assert psnr(a, half) == pytest.approx(10 * math.log10(255 ** 2 / 50))


def test_psnr_of_identical_arrays_is_infinite_and_shapes_must_match():
    a = photo_like(16, 16)
    assert psnr(a, a.copy()) == math.inf and psnr_from_mse(0.0) == math.inf
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, a[:8])


def test_rmse_is_in_the_data_units_and_skips_missing_points():
    reference = np.array([1.0, 2.0, np.nan, 4.0])
    assert rmse(reference, reference + 3.0) == pytest.approx(3.0)
    assert rmse(np.zeros(4), np.array([3.0, -3.0, 3.0, -3.0])) == pytest.approx(3.0)


def test_snr_of_audio():
    t = np.linspace(0, 1, 16_000, endpoint=False)
    signal = 0.5 * np.sin(2 * math.pi * 440 * t)
    noise = 0.05 * np.sin(2 * math.pi * 3000 * t)  # a tenth of the amplitude: 20 dB
    assert snr_db(signal, signal + noise) == pytest.approx(20.0, abs=0.01)
    assert snr_db(signal, signal) == math.inf
    assert snr_db(np.zeros(4), np.ones(4)) == -math.inf


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    image = photo_like()
    assert ms_ssim(image, image.copy()) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(1)
    scores = [ms_ssim(image, np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8))
              for sigma in (2, 8, 30)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0
    assert ms_ssim(image[..., 0], image[..., 0]) == pytest.approx(1.0, abs=1e-6)  # greyscale (H, W)


def test_ms_ssim_is_undefined_below_161_pixels_a_side():
    image = photo_like(160, 300)
    assert ms_ssim(image, image) is None
    assert ms_ssim(photo_like(161, 161), photo_like(161, 161)) == pytest.approx(1.0, abs=1e-6)


CURVE = ([0.1, 0.2, 0.4, 0.8, 1.6], [24.0, 27.0, 30.0, 33.0, 36.0])


def test_bd_rate_of_a_curve_against_itself_is_zero_and_a_cheaper_one_is_negative():
    assert bd_rate(CURVE, CURVE) == pytest.approx(0.0, abs=1e-9)
    cheaper = ([0.9 * r for r in CURVE[0]], CURVE[1])
    assert bd_rate(CURVE, cheaper) == pytest.approx(-10.0, abs=1e-6)
    assert bd_rate(cheaper, CURVE) == pytest.approx(100 / 0.9 - 100, abs=1e-6)
    # dearer at some qualities only: the average lies between
    mixed = (CURVE[0], [24.0, 26.0, 29.0, 33.0, 36.0])
    assert 0 < bd_rate(CURVE, mixed) < 40


def test_bd_rate_is_none_without_overlap_and_ignores_dominated_points():
    assert bd_rate(CURVE, ([0.1, 0.2, 0.4], [15.0, 17.0, 19.0])) is None
    assert metrics.bd_overlap(CURVE, ([0.1, 0.2, 0.4], [15.0, 17.0, 19.0])) is None
    assert metrics.bd_overlap(CURVE, ([0.1, 0.2, 0.4], [20.0, 25.0, 28.0])) == (24.0, 28.0)
    assert bd_rate(CURVE, ([0.1], [30.0])) is None
    # a saturated curve (more bits, no better) and a repeated point are dropped, not interpolated
    saturated = (CURVE[0] + [3.2, 3.2, 6.4], CURVE[1] + [36.0, 36.0, 35.9])
    assert bd_rate(CURVE, saturated) == pytest.approx(0.0, abs=1e-9)
    rates, qualities = metrics.rd_frontier(saturated)
    assert list(rates) == CURVE[0] and list(qualities) == CURVE[1]


def rd_example(name="JPEG") -> RDResult:
    return RDResult(name, "test curve", {"bpp": CURVE[0], "psnr-rgb": CURVE[1], "ms-ssim-rgb": [0.8, 0.85, 0.9, 0.95, 0.97],
                                         "encoding_time": [0.01] * 5})


def test_rd_result_round_trips_through_compressai_json(tmp_path):
    result = rd_example()
    path = rd_results.write(tmp_path / "kodak" / "jpeg.json", result)
    document = json.loads(path.read_text())
    assert set(document) == {"name", "description", "results"} and document["results"]["bpp"] == CURVE[0]
    again = rd_results.read(path)
    assert again == result and again.rate_key == "bpp" and again.quality_keys == ["psnr-rgb", "ms-ssim-rgb"]
    assert again.curve("psnr-rgb") == (tuple(CURVE[0]), tuple(CURVE[1]))


@pytest.mark.parametrize("change, field", [
    (lambda d: d["results"].update({"psnr-rgb": [1.0, "x", 3.0, 4.0, 5.0]}), "results.psnr-rgb"),
    (lambda d: d["results"].update({"bits": [1.0] * 5}), "results.bits"),
    (lambda d: d["results"].update({"encoding_time": [1.0]}), "different lengths"),
    (lambda d: d["results"].update({"kbps": [1.0] * 5}), "exactly one rate key"),
    (lambda d: d.update({"name": ""}), "'name'"),
    (lambda d: d.pop("description"), "'description'"),
    (lambda d: d.update({"extra": 1}), "'extra'"),
])
def test_rd_result_validation_names_the_bad_field(tmp_path, change, field):
    document = rd_example().to_json()
    change(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(FormatError, match=field):
        rd_results.read(path)


def test_bd_rates_between_rd_results_and_sign_of_lower_is_better_metrics():
    jpeg, better = rd_example(), RDResult("better", "", {"bpp": [0.5 * r for r in CURVE[0]], "psnr-rgb": CURVE[1]})
    table = rd_results.bd_rates([jpeg, better], [jpeg])
    assert table["JPEG"] == {} and table["better"]["JPEG"]["psnr-rgb"]["bd_rate"] == pytest.approx(-50.0)
    assert table["better"]["JPEG"]["psnr-rgb"]["quality_range"] == [24.0, 36.0]
    # compression ratio and RMSE: twice the ratio at equal RMSE is half the bits
    a = RDResult("a", "", {"compression-ratio": [10.0, 20.0, 40.0], "rmse": [0.5, 1.0, 2.0]})
    b = RDResult("b", "", {"compression-ratio": [20.0, 40.0, 80.0], "rmse": [0.5, 1.0, 1.5]})
    rmse_entry = rd_results.bd_rates([b], [a])["b"]["a"]["rmse"]
    assert rmse_entry["bd_rate"] < -40 and rmse_entry["quality_range"] == [0.5, 1.5]


def test_one_plot_draws_any_number_of_rd_files(tmp_path):
    paths = rd_results.write_all(tmp_path / "kodak", [rd_example("JPEG"), rd_example("WebP 2"),
                                                      RDResult("ref", "", {"bpp": [0.1, 1.0], "psnr-rgb": [25.0, 35.0]})])
    assert [p.name for p in paths] == ["jpeg.json", "webp-2.json", "ref.json"]
    png = rd_results.plot(paths, tmp_path / "rd.png", title="test", baselines={"zero": 20.0})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="one rate measure"):
        rd_results.plot([rd_example(), RDResult("audio", "", {"kbps": [8.0], "psnr": [30.0]})], tmp_path / "x.png")
