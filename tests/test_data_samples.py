"""The bundled samples load without any data root, and match what make_samples.py builds."""

import importlib.util
from pathlib import Path

import nibabel
import numpy as np
import pytest

from metacompress.data import (
    load_audio,
    load_classification,
    load_globe,
    load_image,
    load_volume,
    sample_path,
)
from metacompress.errors import DataError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_samples.py"


def test_photo(no_data_env):
    img = load_image(sample_path("photo"))
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8 and img.std() > 10


def test_speech(no_data_env):
    x, rate = load_audio(sample_path("speech"))
    assert rate == 16_000 and x.shape == (40_000,) and x.dtype == np.float32
    assert np.sqrt(np.mean(x ** 2)) > 0.01  # speech, not silence


def test_mri(no_data_env):
    vol = load_volume(sample_path("mri"))
    assert vol.data.shape == (64, 64, 64) and vol.spacing == (1.0, 1.0, 1.0)
    assert vol.source_dtype == "uint8" and vol.data.max() > 50


def test_globe(no_data_env):
    g = load_globe(sample_path("globe"))
    assert g.variables == ("UWND", "VWND") and g.data.shape == (2, 12, 73, 144)
    assert g.missing == {"UWND": 0, "VWND": 0} and g.time.shape == (12,)


def test_mnist_sample_file(no_data_env):
    d = load_classification("mnist-sample", "train")
    assert len(d) == 2_000


def test_unknown_sample():
    with pytest.raises(DataError, match="photo, speech, mri, globe"):
        sample_path("kodak")


def test_bundled_samples_match_sources(data_root, tmp_path):
    """Regenerating from the data root gives the same content as the bundled files
    (compared decoded, so a different zlib/libFLAC build does not matter)."""
    spec = importlib.util.spec_from_file_location("make_samples", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--data-root", str(data_root), "--out", str(tmp_path)]) == 0

    assert np.array_equal(load_image(tmp_path / "photo.png"), load_image(sample_path("photo")))
    assert np.array_equal(load_audio(tmp_path / "speech.flac")[0],
                          load_audio(sample_path("speech"))[0])
    new, old = nibabel.load(tmp_path / "mri.nii.gz"), nibabel.load(sample_path("mri"))
    assert np.array_equal(np.asarray(new.dataobj), np.asarray(old.dataobj))
    assert np.array_equal(new.affine, old.affine)
    assert np.array_equal(load_globe(tmp_path / "globe.nc").data,
                          load_globe(sample_path("globe")).data)
    with np.load(tmp_path / "mnist_sample.npz") as a, np.load(sample_path("mnist-sample")) as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    # the MRI crop keeps world coordinates: voxel (0,0,0) of the crop is a voxel of ch2bet
    full = nibabel.load(data_root / "volumes/mricron_templates/ch2bet.nii.gz")
    i, j, k = np.round(np.linalg.inv(full.affine) @ old.affine @ [0, 0, 0, 1])[:3].astype(int)
    assert np.array_equal(np.asarray(full.dataobj)[i:i + 64, j:j + 64, k:k + 64],
                          np.asarray(old.dataobj))
