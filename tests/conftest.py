"""Shared fixtures. Tests that need the real datasets take ``data_root`` (or ``data_file``) and
are skipped when METACOMPRESS_DATA is unset or does not point at a directory."""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from metacompress.errors import DataError


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root from METACOMPRESS_DATA; skips the test when unavailable."""
    value = os.environ.get("METACOMPRESS_DATA", "")
    if not value:
        pytest.skip("METACOMPRESS_DATA is not set")
    root = Path(value).expanduser()
    if not root.is_dir():
        pytest.skip(f"METACOMPRESS_DATA={value} is not a directory")
    return root.resolve()


@pytest.fixture(scope="session")
def data_file(data_root):
    """``data_file("mnist/t10k-labels-idx1-ubyte.gz")`` -> the path, or skip if it is absent."""

    def get(relative: str) -> Path:
        path = data_root / relative
        if not path.exists():
            pytest.skip(f"{path} is not available")
        return path

    return get


@pytest.fixture
def no_data_env(monkeypatch):
    """Run a test with METACOMPRESS_DATA unset."""
    monkeypatch.delenv("METACOMPRESS_DATA", raising=False)


@contextmanager
def _expect_data_error(path=None, match=None):
    """Expect a ``DataError`` whose message matches ``match`` (a regex, searched), names
    ``path`` (unless it is None) and is a single line. Yields the ``pytest.ExceptionInfo``
    for any further checks, which must follow the ``with`` block."""
    __tracebackhide__ = True
    with pytest.raises(DataError, match=match) as info:
        yield info
    message = str(info.value)
    if path is not None:
        assert str(path) in message, f"{str(path)!r} not in the message {message!r}"
    assert "\n" not in message, f"the message is not a single line: {message!r}"


@pytest.fixture
def expect_data_error():
    """``with expect_data_error(path, match="..."):`` -- see ``_expect_data_error``."""
    return _expect_data_error


def run_torchrun(args: list[str], processes: int = 2):
    """``metacompress ARGS`` under ``torchrun --nproc_per_node=PROCESSES`` on the CPU (one thread each)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", "-m", "metacompress.cli"] + args,
                          capture_output=True, text=True, env=env, timeout=600)


SAMPLES = {"image": "photo", "audio": "speech", "volume": "mri", "sphere": "globe"}  # bundled sample per modality
TINY = {"image": (8, 8), "audio": (100,), "volume": (8, 8, 8), "sphere": None}  # patch shapes of tiny bases


def tiny_base(modality, tmp_path, latent_dim=6, iterations=3):
    """A small COIN++ base network trained for a few steps on the bundled sample of ``modality``."""
    from metacompress.data import sample_path
    from metacompress.codecs.coinpp_training import prepare_training, train_base
    from metacompress.inr.metalearning import MetaConfig

    data = tmp_path / f"train-{modality}"
    data.mkdir(exist_ok=True)
    source = sample_path(SAMPLES[modality])
    (data / source.name).write_bytes(source.read_bytes())
    settings, train, val = prepare_training(modality, data, patch=TINY[modality], width=12, depth=2,
                                            latent_dim=latent_dim, w0=30.0, val_fraction=0.0)
    settings = dataclasses.replace(settings, code_patches=64)
    return train_base(settings, train, val, MetaConfig(iterations=iterations, batch_size=4, outer_lr=1e-4))


@pytest.fixture(scope="session")
def tiny_image_base(tmp_path_factory):
    """One tiny image base network for the whole session (8×8 patches, trained for 3 steps)."""
    return tiny_base("image", tmp_path_factory.mktemp("tiny-image-base"))


@pytest.fixture(scope="session")
def tiny_image_base_stem(tiny_image_base, tmp_path_factory):
    """``tiny_image_base`` saved as BASE.safetensors + BASE.json, for the CLI's ``--base``."""
    from metacompress.inr.base_network import save_base

    stem = tmp_path_factory.mktemp("tiny-image-base-saved") / "tiny"
    save_base(stem, tiny_image_base)
    return stem
