"""--device on every long job (issue 16): CPU here; the `cuda` tests run where a GPU exists."""

import numpy as np
import pytest
import torch

from metacompress.cli import main
from metacompress.codecs.coinpp import CoinPP, decode
from metacompress.distributed import resolve_device
from metacompress.errors import UserError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_device_names_resolve_or_fail_in_one_line():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "gpu0"):
        with pytest.raises(UserError, match="--device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.parametrize("command", ["train", "encode", "train-base", "robustify"])
def test_an_unavailable_device_is_one_line_and_exit_2(command, tmp_path, capsys):
    from metacompress.data import sample_path

    if torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    out, photo = tmp_path / "x", str(sample_path("photo"))
    args = {"train": ["train", "--model", "lenet5", "--dataset", "mnist-sample", "--out", str(out)],
            "encode": ["encode", photo, "-o", str(out)],
            "train-base": ["train-base", "--modality", "image", "--data", photo, "--out", str(out)],
            "robustify": ["robustify", "--checkpoint", str(out), "--model", "lenet5", "--dataset", "mnist-sample",
                          "--reg", "l1", "--lam", "0.01", "--out", str(out)]}[command]
    assert main(args + ["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda: no CUDA device" in err[0], err
    assert not out.exists()


@cuda
@pytest.mark.cuda
def test_coinpp_on_cuda_decodes_on_the_cpu(tiny_image_base):
    from metacompress.codecs.coinpp import on_device
    from metacompress.data import sample_path
    from metacompress.modalities.files import read_datapoint

    image = read_datapoint(sample_path("photo"), tiny_image_base.config.data).values[:32, :32]
    gpu = on_device(tiny_image_base, "cuda")
    encoded = CoinPP(gpu, bits=5, steps=3).compress(image)
    on_cpu = decode(encoded.data, tiny_image_base).values
    assert on_cpu.shape == image.shape
    # rendered on the GPU vs the CPU: the same file, values equal up to float rounding at level boundaries
    assert np.abs(on_cpu.astype(int) - encoded.reconstruction.astype(int)).max() <= 1


@cuda
@pytest.mark.cuda
def test_training_and_coin_fit_on_cuda(tmp_path):
    from metacompress.codecs.coin import CoinConfig, decode_image, encode_image

    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    result = encode_image(image, CoinConfig(depth=2, width=8, iterations=20), device="cuda")
    np.testing.assert_array_equal(decode_image(result.data), result.reconstruction)  # CPU decode = reported
    assert main(["train", "--model", "lenet5", "--dataset", "mnist-sample", "--epochs", "1", "--device", "cuda",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0


def test_bench_passes_the_device_only_to_benchmarks_that_take_one(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from metacompress.bench import results

    monkeypatch.setattr(results, "write_results", lambda *a, **k: None)
    seen = {}
    aware = SimpleNamespace(run=lambda profile, data_root, out_dir, device="cpu": seen.setdefault("device", device))
    plain = SimpleNamespace(run=lambda profile, data_root, out_dir: {"ran": True})
    results.run_benchmark(aware, "aware", "cpu", None, tmp_path / "a", device="cpu")
    assert seen["device"] == torch.device("cpu")
    assert results.run_benchmark(plain, "plain", "cpu", None, tmp_path / "b", device="cpu") == {"ran": True}
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda"):
            results.run_benchmark(plain, "plain", "cpu", None, tmp_path / "c", device="cuda")
