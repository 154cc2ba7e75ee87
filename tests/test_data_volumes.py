import nibabel
import numpy as np
import pytest
import tifffile
from PIL import Image

from metacompress.data import Volume, load_volume
from metacompress.errors import DataError


def test_ch2bet(data_file):
    vol = load_volume(data_file("volumes/mricron_templates/ch2bet.nii.gz"))
    assert isinstance(vol, Volume)
    assert vol.data.shape == (181, 217, 181) and vol.data.dtype == np.float32
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert vol.source_dtype == "uint8"
    assert vol.data.max() > 100 and vol.data.min() == 0  # original values, not rescaled


def test_ch2better_spacing(data_file):
    vol = load_volume(data_file("volumes/mricron_templates/ch2better.nii.gz"))
    assert vol.data.shape == (301, 370, 316) and vol.spacing == (0.5, 0.5, 0.5)


def test_skimage_brain_tiff(data_file):
    vol = load_volume(data_file("volumes/skimage/brain.tiff"))
    assert vol.data.shape == (10, 256, 256) and vol.data.dtype == np.float32
    assert vol.spacing == (1.0, 1.0, 1.0) and vol.source_dtype == "uint16"
    assert vol.data.max() > 255  # 16-bit values kept


def test_nifti_scaling_and_singleton_4d(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4, 1)
    img = nibabel.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]))
    img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "v.nii"
    nibabel.save(img, path)
    vol = load_volume(path)
    assert vol.data.shape == (2, 3, 4)
    assert np.allclose(vol.data, data[..., 0] * 0.5 + 10.0)
    assert vol.spacing == (2.0, 3.0, 4.0) and vol.source_dtype == "int16"


def test_nifti_4d_rejected(tmp_path, expect_data_error):
    path = tmp_path / "v4.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((2, 3, 4, 2), np.float32), np.eye(4)), path)
    with expect_data_error(path, match="expected a 3-D volume"):
        load_volume(path)


def test_png_renamed_nifti(tmp_path, expect_data_error):
    path = tmp_path / "brain.nii.gz"
    Image.new("L", (8, 8)).save(path, format="PNG")
    with expect_data_error(path, match="not a readable NIfTI"):
        load_volume(path)


def test_truncated_nifti(data_file, tmp_path, expect_data_error):
    src = data_file("volumes/mricron_templates/ch2bet.nii.gz")
    path = tmp_path / "ch2bet.nii.gz"
    path.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with expect_data_error(path):
        load_volume(path)


def test_tiff_pages_and_rgb(tmp_path):
    single = tmp_path / "one.tif"
    tifffile.imwrite(single, np.ones((5, 6), np.uint8))
    assert load_volume(single).data.shape == (1, 5, 6)
    stack = tmp_path / "stack.tiff"
    tifffile.imwrite(stack, np.arange(60, dtype=np.float32).reshape(3, 4, 5),
                     photometric="minisblack")
    vol = load_volume(stack)
    assert vol.data.shape == (3, 4, 5) and vol.data[2, 3, 4] == 59 and vol.source_dtype == "float32"
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(DataError, match="colour TIFF"):
        load_volume(rgb)


def test_volume_errors(tmp_path, expect_data_error):
    with pytest.raises(DataError, match="unsupported volume format"):
        load_volume(tmp_path / "x.png")
    with expect_data_error(tmp_path / "x.nii.gz", match="not found"):
        load_volume(tmp_path / "x.nii.gz")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a tiff")
    with expect_data_error(bad, match="not a readable TIFF"):
        load_volume(bad)


def test_corrupt_gzip_nifti(tmp_path, expect_data_error):
    """A damaged .nii.gz is rejected even where nibabel's partial read would not notice."""
    path = tmp_path / "noise.nii.gz"
    noise = np.random.default_rng(0).random((16, 16, 16), dtype=np.float32)
    nibabel.save(nibabel.Nifti1Image(noise, np.eye(4)), path)
    assert np.array_equal(load_volume(path).data, noise)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with expect_data_error(path, match="not a readable NIfTI"):
        load_volume(path)
