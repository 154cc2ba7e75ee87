"""Meta-training's memory estimate, the refusal of runs that do not fit, and up-front setting checks (issue 15)."""

import logging
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metacompress.errors import UserError
from metacompress.modalities.spec import DataSpec
from metacompress.codecs.coinpp_training import BaseSettings, check_training_memory, prepare_training, train_base
from metacompress.inr.metalearning import (MEMORY_LIMIT_ENV, MetaConfig, available_memory, estimate_peak_memory,
                                           largest_fitting_batch)

GB = 1e9
DEFAULT = dict(width=512, depth=10, latent_dim=128, points=1024, batch_size=64, inner_steps=3)  # train-base defaults


def cli_defaults():
    """MetaConfig and BaseSettings exactly as `metacompress train-base --modality image` builds them."""
    from metacompress.cli import build_parser

    args = build_parser().parse_args(["train-base", "--modality", "image", "--data", "d", "--out", "o"])
    meta = MetaConfig(iterations=args.iters, batch_size=args.batch_size, inner_steps=args.inner_steps,
                      inner_lr=args.inner_lr, outer_lr=args.outer_lr, first_order=args.first_order,
                      checkpoint_steps=args.checkpoint_steps, seed=args.seed)
    settings = BaseSettings(IMAGE_SPEC_32, args.width, args.depth, args.latent_dim, args.w0)
    return settings, meta


IMAGE_SPEC_32 = DataSpec("image", 3, (32, 32), value_range=((0.0, 255.0),) * 3)


def tiny_settings():
    return BaseSettings(DataSpec("image", 3, (8, 8), value_range=((0.0, 255.0),) * 3), width=16, depth=2,
                        latent_dim=4, w0=30.0, code_patches=16)


def tiny_points(count=3):
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(16, 16, 3, generator=generator) for _ in range(count)]


def test_estimate_grows_with_batch_width_depth_and_steps():
    # on either side of 32 MiB of activations per layer (B·points·width·4 bytes): see metalearning
    for base in (DEFAULT, dict(width=16, depth=2, latent_dim=4, points=64, batch_size=2, inner_steps=1)):
        for key, values in (("batch_size", (1, 2, 4, 8)), ("width", (1, 1.5, 2)), ("depth", (1, 2, 3)),
                            ("inner_steps", (1, 2, 3, 5))):
            scale = 16 if base is DEFAULT and key == "batch_size" else 1
            sizes = [estimate_peak_memory(**base | {key: int(base[key] * v * scale if key != "inner_steps" else v)})
                     for v in values]
            assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), (key, sizes)
    assert estimate_peak_memory(**DEFAULT) > 15 * GB  # the run that was OOM-killed at 19.8 GB


def test_checkpointing_and_first_order_lower_the_estimate():
    for steps in (1, 3, 5):
        second = estimate_peak_memory(**DEFAULT | {"inner_steps": steps})
        checkpointed = estimate_peak_memory(**DEFAULT | {"inner_steps": steps}, checkpoint_steps=True)
        first = estimate_peak_memory(**DEFAULT | {"inner_steps": steps}, first_order=True)
        assert first < checkpointed < second
    # checkpointing keeps one inner step's graph at a time, whatever the number of steps
    assert estimate_peak_memory(**DEFAULT | {"inner_steps": 1}, checkpoint_steps=True) == \
        estimate_peak_memory(**DEFAULT | {"inner_steps": 9}, checkpoint_steps=True)


def test_the_default_settings_are_refused_on_24_gb_with_a_batch_size_that_fits(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(int(24 * GB)))
    settings, meta = cli_defaults()
    run_dir = tmp_path / "base.run"
    with pytest.raises(UserError) as caught:
        train_base(settings, tiny_points(), [], meta, run_dir)
    message = str(caught.value)
    assert "\n" not in message and "21." in message and "24.0 GB" in message, message
    suggested = int(re.search(r"--batch-size (\d+)\b(?! --)", message.split(" use ", 1)[1]).group(1))
    assert 1 <= suggested < meta.batch_size
    assert check_training_memory(settings, replace(meta, batch_size=suggested)) <= 0.9 * 24 * GB
    assert "--checkpoint-steps" in message
    check_training_memory(settings, replace(meta, checkpoint_steps=True))  # the other suggestion fits too
    assert not run_dir.exists()


def test_nothing_fits_names_a_smaller_network(monkeypatch):
    settings, meta = cli_defaults()
    with pytest.raises(UserError, match="smaller --width"):
        check_training_memory(settings, meta, available=int(2 * GB))


def test_a_small_configuration_trains_and_logs_its_estimate(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(int(24 * GB)))
    with caplog.at_level(logging.INFO, logger="metacompress.codecs.coinpp_training"):
        base = train_base(tiny_settings(), tiny_points(), [], MetaConfig(iterations=2, batch_size=4, outer_lr=1e-4),
                          tmp_path / "run")
    assert base.config.training["meta"]["batch_size"] == 4
    assert any(re.search(r"needs about \d+\.\d GB of memory; 24\.0 GB available", r.getMessage())
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    with pytest.raises(UserError, match="0.0 GB is available"):  # the parameter overrides the environment
        train_base(tiny_settings(), tiny_points(), [], MetaConfig(iterations=2, batch_size=4), tmp_path / "again",
                   memory_available=1000)
    assert not (tmp_path / "again").exists()


def test_available_memory_honours_the_override(monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    if Path("/proc/meminfo").exists():
        assert available_memory() > 0
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "3e9")
    assert available_memory() == 3_000_000_000
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(MEMORY_LIMIT_ENV, bad)
        with pytest.raises(UserError, match=MEMORY_LIMIT_ENV):
            available_memory()


def test_largest_fitting_batch_scans_past_the_drop_at_32_mib():
    assert largest_fitting_batch(lambda b: b <= 5, 64) == 5
    assert largest_fitting_batch(lambda b: b in (3, 20), 64) == 20  # not monotone: a bisection could miss 20
    assert largest_fitting_batch(lambda b: False, 64) == 0


@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", 0, "--batch-size"), ("batch_size", -3, "--batch-size"), ("batch_size", 2.5, "--batch-size"),
    ("iterations", 0, "--iters"), ("inner_steps", 0, "--inner-steps"), ("inner_lr", 0.0, "--inner-lr"),
    ("inner_lr", math.nan, "--inner-lr"), ("outer_lr", math.inf, "--outer-lr"), ("outer_lr", -1e-4, "--outer-lr"),
    ("checkpoint_every", 0, "checkpoint_every"), ("spike_factor", math.nan, "spike_factor")])
def test_invalid_meta_settings_are_one_line_errors_before_the_run_folder_exists(tmp_path, field, value, flag):
    with pytest.raises(UserError, match=re.escape(flag)) as caught:
        MetaConfig(**{field: value})
    assert "\n" not in str(caught.value)
    meta = MetaConfig(iterations=2, batch_size=4)
    setattr(meta, field, value)  # changed after construction: train_base checks again
    with pytest.raises(UserError, match=re.escape(flag)):
        train_base(tiny_settings(), tiny_points(), [], meta, tmp_path / "run", memory_available=int(24 * GB))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field, value, flag", [("width", 0, "--width"), ("depth", 0, "--depth"),
                                                ("latent_dim", 0, "--latent-dim"), ("w0", -1.0, "--w0")])
def test_invalid_architecture_is_refused_before_the_data_is_read(tmp_path, field, value, flag):
    with pytest.raises(UserError, match=re.escape(flag)):  # not "no such file": checked before loading
        prepare_training("image", tmp_path / "missing", **{field: value})
    with pytest.raises(UserError, match=re.escape(flag)):
        replace(tiny_settings(), **{field: value})


def test_cli_batch_size_zero_is_one_line_and_writes_nothing(tmp_path, capsys):
    from PIL import Image

    from metacompress.cli import main

    data = tmp_path / "images"
    data.mkdir()
    Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy()).save(data / "a.png")
    out = tmp_path / "base"
    code = main(["train-base", "--modality", "image", "--data", str(data), "--out", str(out), "--batch-size", "0",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--batch-size" in err, err
    assert len([line for line in err.splitlines() if line.startswith("metacompress: error:")]) == 1
    assert not list(tmp_path.glob("base*"))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_estimate_matches_a_measured_peak():
    config = dict(width=96, depth=5, latent_dim=32, points=256, batch_size=12, inner_steps=4)  # not calibrated on
    code = ("import sys; from metacompress.inr.metalearning import measure_peak_memory; "
            f"print(measure_peak_memory(**{config!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    measured = int(done.stdout.split()[-1])
    estimated = estimate_peak_memory(**config)
    assert 0.65 * measured <= estimated <= 1.35 * measured, (estimated, measured)
