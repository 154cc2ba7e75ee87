"""Classical image codecs: real files of each format, round trips, the knob, and the bpp search."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metacompress
from metacompress.codecs.classical import CLASSICAL_IMAGE_CODECS, Heic, Jpeg2000, JpegXL, Knob, WebP, encode_at_bpp
from metacompress.errors import FormatError, UserError

CODECS = list(CLASSICAL_IMAGE_CODECS)
PHOTO = Path(metacompress.__file__).parent / "data" / "samples" / "photo.png"
TARGET_BPP = 1.0


def is_real_file(name: str, data: bytes) -> bool:
    """Whether ``data`` starts the way a file of that codec's format must."""
    if name == "jpeg":
        return data[:3] == b"\xff\xd8\xff"
    if name == "jpeg2000":
        return data[:4] == b"\xff\x4f\xff\x51"
    if name == "webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if name == "avif":
        return data[4:12] == b"ftypavif"
    if name == "heic":
        return data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix")
    if name == "jxl":
        return data[:2] == b"\xff\x0a"
    raise AssertionError(f"no magic bytes known for {name}")


def knob_at(knob: Knob, t: float) -> int | float:
    """The setting a fraction ``t`` of the way from lowest (0) to highest (1) quality;
    linear for integer knobs, geometric for the compression ratio."""
    if knob.integer:
        return round(knob.smallest + t * (knob.largest - knob.smallest))
    return math.exp(math.log(knob.smallest) + t * (math.log(knob.largest) - math.log(knob.smallest)))


def make(name: str, t: float):
    codec_class = CLASSICAL_IMAGE_CODECS[name]
    return codec_class(**{codec_class.knob.name: knob_at(codec_class.knob, t)})


def psnr(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    mse = np.mean((reference.astype(np.float64) - reconstruction.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse else math.inf


def bpp(data: bytes, image: np.ndarray) -> float:
    return 8 * len(data) / (image.shape[0] * image.shape[1])


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    with Image.open(PHOTO) as photo:
        return np.asarray(photo.convert("RGB").crop((64, 64, 192, 160)))


@pytest.fixture(scope="module")
def grey(rgb) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]


def test_registry_names_match_codecs():
    assert {name: cls.name for name, cls in CLASSICAL_IMAGE_CODECS.items()} == {name: name for name in CODECS}


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("channels", [3, 1])
def test_round_trip_is_a_real_file_and_close_at_high_quality(name, channels, rgb, grey):
    image = rgb if channels == 3 else grey
    codec = make(name, 0.9)
    data = codec.encode(image)
    assert isinstance(data, bytes) and is_real_file(name, data)
    out = codec.decode(data)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert psnr(image, out) > 30


@pytest.mark.parametrize("name", CODECS)
def test_pillow_opens_the_file(name, rgb):
    if name == "heic":
        pytest.importorskip("pillow_heif").register_heif_opener()
    data = make(name, 0.5).encode(rgb)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.size == (rgb.shape[1], rgb.shape[0])


@pytest.mark.parametrize("name", CODECS)
def test_higher_quality_never_gives_a_smaller_file(name, rgb):
    sizes = [len(make(name, t).encode(rgb)) for t in (0.2, 0.5, 0.9)]
    assert sizes == sorted(sizes)
    assert sizes[0] < sizes[-1]


@pytest.mark.parametrize("name", CODECS)
def test_odd_sizes_round_trip(name, rgb):
    image = np.ascontiguousarray(rgb[:17, :23])
    assert make(name, 0.5).decode(make(name, 0.5).encode(image)).shape == image.shape


@pytest.mark.parametrize("name", CODECS)
def test_encode_at_bpp_is_within_budget_and_tight(name, rgb):
    codec_class = CLASSICAL_IMAGE_CODECS[name]
    knob = codec_class.knob
    data, value = encode_at_bpp(name, rgb, TARGET_BPP)
    assert bpp(data, rgb) <= TARGET_BPP
    assert data == codec_class(**{knob.name: value}).encode(rgb)
    assert codec_class(**{knob.name: value}).decode(data).shape == rgb.shape
    if knob.integer:
        better = value + 1 if knob.bigger_files_upward else value - 1
    else:
        better = value / 1.01
    assert bpp(codec_class(**{knob.name: better}).encode(rgb), rgb) > TARGET_BPP


@pytest.mark.parametrize("name", CODECS)
def test_encode_at_bpp_returns_the_smallest_file_when_the_target_is_unreachable(name, rgb):
    knob = CLASSICAL_IMAGE_CODECS[name].knob
    data, value = encode_at_bpp(name, rgb, 0.01)
    assert value == knob.smallest
    assert bpp(data, rgb) > 0.01
    assert data == CLASSICAL_IMAGE_CODECS[name](**{knob.name: value}).encode(rgb)


@pytest.mark.parametrize("name", CODECS)
def test_encode_at_bpp_encodes_about_log2_range_times(name, rgb, monkeypatch):
    codec_class = CLASSICAL_IMAGE_CODECS[name]
    calls = []
    original = codec_class.encode
    monkeypatch.setattr(codec_class, "encode", lambda self, x: calls.append(1) or original(self, x))
    encode_at_bpp(name, rgb, TARGET_BPP)
    knob = codec_class.knob
    limit = 2 + (math.ceil(math.log2(knob.hi - knob.lo)) if knob.integer else 20)
    assert len(calls) <= limit


def test_encode_at_bpp_returns_the_best_setting_when_everything_fits(rgb):
    data, value = encode_at_bpp("jpeg", rgb, 100.0)
    assert value == 100


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, "1"])
def test_encode_at_bpp_rejects_bad_targets(bad, rgb):
    with pytest.raises(UserError, match="bpp"):
        encode_at_bpp("jpeg", rgb, bad)


def test_encode_at_bpp_rejects_unknown_codec(rgb):
    with pytest.raises(UserError, match="unknown classical image codec 'bpg'"):
        encode_at_bpp("bpg", rgb, 1.0)


def test_jpeg2000_colour_transform_follows_the_channels(rgb, grey):
    codec = Jpeg2000(ratio=20.0)
    assert codec._options(Image.fromarray(rgb))["mct"] == 1
    assert codec._options(Image.fromarray(grey[:, :, 0]))["mct"] == 0


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8, 2), np.uint8),
        np.zeros((8, 8), np.uint8),
        np.zeros((0, 8, 3), np.uint8),
        np.zeros((8, 8, 3), np.uint16),
    ],
    ids=["float", "two-channels", "2d", "empty", "uint16"],
)
def test_bad_inputs_raise_user_error(name, bad):
    with pytest.raises(UserError, match="uint8 image array") as info:
        make(name, 0.5).encode(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", CODECS)
def test_bad_knob_raises_user_error(name):
    codec_class = CLASSICAL_IMAGE_CODECS[name]
    knob = codec_class.knob
    with pytest.raises(UserError, match=knob.name):
        codec_class(**{knob.name: knob.hi + 1})
    if knob.integer:
        with pytest.raises(UserError, match="integer"):
            codec_class(**{knob.name: 50.5})


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("garbage", [b"", b"garbage!" * 8, "truncated", "other-format"])
def test_decoding_garbage_raises_format_error(name, garbage, rgb):
    codec = make(name, 0.5)
    if garbage == "truncated":
        garbage = codec.encode(rgb)[:40]
    elif garbage == "other-format":
        other = {"jpeg": "webp", "heic": "avif"}.get(name, "jpeg")
        garbage = make(other, 0.5).encode(rgb)
    with pytest.raises(FormatError, match=name) as info:
        codec.decode(garbage)
    assert "\n" not in str(info.value)


def test_webp_colour_stays_colour_at_lowest_quality(rgb):
    codec = WebP(quality=0)
    assert codec.decode(codec.encode(rgb)).shape == rgb.shape


def test_import_does_not_load_optional_plugins():
    code = "import sys, metacompress.codecs.classical; print(sorted(m for m in ('pillow_heif', 'pillow_jxl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("codec_class", "module", "package"), [(Heic, "pillow_heif", "pillow-heif"), (JpegXL, "pillow_jxl", "pillow-jxl-plugin")])
def test_missing_plugin_names_the_package(codec_class, module, package, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserError, match=f"pip install {package}"):
        codec_class()
