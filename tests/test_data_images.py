import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from metacompress.data import list_images, load_image
from metacompress.errors import DataError


def png_rgb16(path, w=4, h=3):
    """A valid 16-bit-per-sample RGB PNG (Pillow would silently read it as 8-bit RGB)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + bytes(range(w * 6)) for _ in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # bit depth 16, colour type RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_cset14_grey_and_rgb(data_file):
    paths = list_images(data_file("photos/CSet14"))
    assert len(paths) == 14 and paths == sorted(paths)
    images = {p.stem: load_image(p) for p in paths}
    assert all(a.dtype == np.uint8 and a.ndim == 3 for a in images.values())
    stored_grey = sorted(k for k, a in images.items() if a.shape[2] == 1)
    assert stored_grey == ["bridge"]  # the only file stored as greyscale ...
    grey_content = sorted(k for k, a in images.items()
                          if a.shape[2] == 1 or (a[..., 0] == a[..., 1]).all() and
                          (a[..., 1] == a[..., 2]).all())
    assert grey_content == ["bridge", "man"]  # ... "man" is grey content stored as RGB
    assert images["bridge"].shape == (512, 512, 1)
    assert images["baboon"].shape == (480, 500, 3)


def test_cbsd68_listing(data_file):
    paths = list_images(data_file("photos/CBSD68"))
    assert len(paths) == 68
    assert load_image(paths[0]).shape[2] == 3


def test_modes_are_normalised(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.dstack([rgb, np.full((6, 5), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb[..., 0]).convert("LA").save(tmp_path / "greya.png")
    tifffile.imwrite(tmp_path / "rgb8.tif", rgb)

    assert np.array_equal(load_image(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(load_image(tmp_path / "rgba.png"), rgb)  # alpha dropped
    assert load_image(tmp_path / "pal.png").shape == (6, 5, 3)
    grey = load_image(tmp_path / "grey.png")
    assert grey.shape == (6, 5, 1) and np.array_equal(grey[..., 0], rgb[..., 0])
    assert load_image(tmp_path / "greya.png").shape == (6, 5, 1)
    assert np.array_equal(load_image(tmp_path / "rgb8.tif"), rgb)


def test_list_images_filters_and_sorts(tmp_path):
    for name in ["b.png", "a.TIF", "c.tiff", "notes.txt", "d.jpg"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").write_bytes(b"")
    # recursive, like list_audio, sorted by path
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.TIF", "b.png", "c.tiff",
                                                                                  "sub/e.png"]


def test_list_images_errors(tmp_path, expect_data_error):
    with expect_data_error(tmp_path / "missing", match="not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("x")
    with expect_data_error(tmp_path, match="no images"):
        list_images(tmp_path)


@pytest.mark.parametrize("kind", ["grey16", "rgb16", "float_tiff", "uint16_tiff"])
def test_wide_images_rejected(tmp_path, kind, expect_data_error):
    if kind == "grey16":
        path = tmp_path / "g16.png"
        Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 4000).save(path)
    elif kind == "rgb16":
        path = tmp_path / "rgb16.png"
        png_rgb16(path)
    elif kind == "float_tiff":
        path = tmp_path / "f.tif"
        tifffile.imwrite(path, np.zeros((3, 4), np.float32))
    else:
        path = tmp_path / "u16.tif"
        tifffile.imwrite(path, np.zeros((3, 4, 3), np.uint16))
    with expect_data_error(path, match="expected an 8-bit image"):
        load_image(path)


def test_truncated_png(tmp_path, expect_data_error):
    src = tmp_path / "full.png"
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(src)
    path = tmp_path / "cut.png"
    path.write_bytes(src.read_bytes()[:2000])
    with expect_data_error(path):
        load_image(path)


def test_truncated_real_png(data_file, tmp_path, expect_data_error):
    src = data_file("photos/CSet14/bridge.png")
    path = tmp_path / "bridge.png"
    path.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    with expect_data_error(path, match="corrupt image"):
        load_image(path)


def test_not_an_image_and_missing(tmp_path, expect_data_error):
    path = tmp_path / "fake.png"
    path.write_text("hello")
    with expect_data_error(path, match="not a recognised image"):
        load_image(path)
    with pytest.raises(DataError, match="not found"):
        load_image(tmp_path / "nope.png")
