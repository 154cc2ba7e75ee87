"""COIN: SIREN, coordinates, the .mcz container, weight quantization, encode/decode round trips."""

import math
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from metacompress.codecs import coin
from metacompress.codecs.base import Container, encode_uvarint, pack, unpack
from metacompress.codecs.bitpack import pack_bits, unpack_bits
from metacompress.codecs.coin import (KODAK_ARCHITECTURES, CoinConfig, architecture_for, clipping_stds, coin_config_bytes, coin_file,
                                      coin_file_size, decode_image, encode_image, model_from_container, render)
from metacompress.data.images import load_image
from metacompress.data.bundled import sample_path
from metacompress.errors import DataError, FormatError, UserError
from metacompress.inr.siren import Siren, siren_parameter_count
from metacompress.modalities.grid import axis_coordinates
from metacompress.modalities.image import pixel_coordinates
from metacompress.metrics import psnr

from test_cli import last_json, run


@pytest.fixture(scope="module")
def photo():
    """A 40×56 crop of the bundled photo: small enough to fit in a few hundred iterations."""
    return load_image(sample_path("photo"))[60:100, 80:136]


@pytest.fixture(scope="module")
def encoded(photo):
    return encode_image(photo, CoinConfig(bpp=4.0, iterations=150, seed=1))


def random_siren(depth=3, width=12, channels=3, seed=0):
    torch.manual_seed(seed)
    return Siren(2, width, depth, channels).eval()


# --- SIREN ---------------------------------------------------------------------------------------

def test_siren_initialization_bounds_and_size():
    model = random_siren(depth=4, width=64)
    first, hidden = model.hidden[0].weight, model.hidden[1].weight
    assert first.abs().max() <= 1 / 2 and first.abs().max() > 0.45  # U(±1/d_in), d_in = 2
    bound = math.sqrt(6 / 64) / 30
    assert hidden.abs().max() <= bound and hidden.abs().max() > 0.95 * bound
    assert sum(p.numel() for p in model.parameters()) == siren_parameter_count(2, 64, 4, 3)


def test_siren_forward_is_sine_of_scaled_affine():
    model = random_siren(depth=1, width=5, channels=2)
    x = torch.rand(7, 2) * 2 - 1
    h = torch.sin(30 * (x @ model.hidden[0].weight.T + model.hidden[0].bias))
    assert torch.allclose(model(x), h @ model.last.weight.T + model.last.bias, atol=1e-6)


def test_kodak_table_sizes_match_the_thesis_rates():
    for rate, (depth, width) in KODAK_ARCHITECTURES.items():
        bpp = siren_parameter_count(2, width, depth, 3) * 16 / (768 * 512)
        assert abs(bpp - rate) / rate < 0.06  # C.2 rounds 0.0734 to 0.07, 0.1588 to 0.15, ...
        assert architecture_for(rate, 512, 768, 3, 16) == (depth, width)


@pytest.mark.parametrize("bpp, shape, bits", [(0.25, (512, 768, 3), 16), (3.6, (32, 32, 3), 16),
                                               (1.0, (100, 80, 1), 8), (0.5, (300, 200, 4), 6)])
def test_general_architecture_rule_is_the_widest_that_fits(bpp, shape, bits):
    depth, width = architecture_for(bpp, *shape, bits)
    pixels = shape[0] * shape[1]
    assert 8 * coin_file_size(*shape, depth, width, bits) / pixels <= bpp
    assert 8 * coin_file_size(*shape, depth, width + 1, bits) / pixels > bpp


def test_too_small_a_rate_is_refused():
    with pytest.raises(UserError, match="too small"):
        architecture_for(0.001, 64, 64, 3, 16)


# --- coordinates ---------------------------------------------------------------------------------

def test_each_axis_spans_minus_one_to_one():
    coords = pixel_coordinates(4, 7)
    assert coords.shape == (28, 2)
    assert coords[:, 0].min() == -1 and coords[:, 0].max() == 1 and coords[:, 1].min() == -1 and coords[:, 1].max() == 1
    assert torch.allclose(coords[:7, 1], torch.linspace(-1, 1, 7), atol=1e-6) and torch.all(coords[:7, 0] == -1)


@pytest.mark.parametrize("n, scale", [(5, 3), (100, 3), (37, 5), (1, 3)])
def test_odd_integer_scale_contains_the_stored_grid_exactly(n, scale):
    fine = axis_coordinates(n, n * scale)
    assert torch.equal(fine[scale // 2::scale], axis_coordinates(n))


# --- container -----------------------------------------------------------------------------------

containers = st.builds(
    Container, codec=st.sampled_from(["coin", "coinpp"]), modality=st.sampled_from(["image", "audio", "volume"]),
    shape=st.none() | st.lists(st.integers(1, 600), min_size=1, max_size=3).map(tuple),
    dtype=st.sampled_from(["uint8", "float32"]), body=st.binary(max_size=300))


@given(containers, st.binary(max_size=40))
def test_container_round_trip(container, key):
    assert unpack(pack(container, key), crc_key=key) == container


def test_container_header_is_tiny():
    # format byte, kind byte, CRC: 6 bytes when the codec supplies the shape; the shape costs 1 + 1 per small dim
    assert len(pack(Container("coinpp", "image", None, "uint8", b""))) == 6
    assert len(pack(Container("coin", "image", (32, 32, 3), "uint8", b""))) == 10


def test_crc_key_binds_a_file_to_its_key():
    data = pack(Container("coinpp", "image", None, "uint8", b"abc"), crc_key=b"base one")
    with pytest.raises(FormatError, match="made with another base network"):
        unpack(data, crc_key=b"base two")


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


@pytest.mark.parametrize("body, message", [
    (b"Mz\x01\x01\x00\x01\x05\x00", "format 1, which this version no longer reads"),
    (b"PK\x03\x04", "not a metacompress .mcz file"),
    (b"\xb3\x01", "version 3 is not supported"),
    (b"\xb2\x00", "unknown codec id 0"),
    (b"\xb2\x81", "unknown flags"),
    (b"\xb2\x41\x00", "bad number of dimensions 0"),
    (b"\xb2\x41\x02" + encode_uvarint(1 << 20) * 2, "implausibly large"),
    (b"\xb2\x41\x01\xff\xff\xff\xff\xff\xff", "integer field too long"),
    (b"\xb2\x41\x02\x05", "truncated header"),
])
def test_container_rejects_bad_fields_before_allocating(body, message):
    with pytest.raises(FormatError, match=message):
        unpack(with_crc(body), "x.mcz")


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_decoder_rejects_any_truncation_or_bit_flip(encoded, data):
    original = encoded.data
    if data.draw(st.booleans()):
        corrupt = original[:data.draw(st.integers(0, len(original) - 1))]
    else:
        position = data.draw(st.integers(0, 8 * len(original) - 1))
        corrupt = bytearray(original)
        corrupt[position // 8] ^= 1 << (position % 8)
    with pytest.raises(FormatError, match="^x.mcz: "):
        decode_image(bytes(corrupt), source="x.mcz")


def test_valid_container_with_inconsistent_payload_is_refused(encoded):
    container = unpack(encoded.data)
    short = Container(container.codec, container.modality, container.shape, container.dtype, container.body[:-2])
    with pytest.raises(FormatError, match="payload is .* bytes, the header implies"):
        decode_image(pack(short))
    audio = Container(container.codec, "audio", (1000,), "float32", container.body)
    with pytest.raises(FormatError, match="COIN stores 8-bit images"):
        decode_image(pack(audio))


# --- weights on disk -----------------------------------------------------------------------------

@given(st.integers(2, 16), st.lists(st.integers(0, 1 << 16), min_size=1, max_size=200))
def test_bit_packing_round_trip(bits, values):
    symbols = np.array(values) % (1 << bits)
    packed = pack_bits(symbols, bits)
    assert len(packed) == math.ceil(len(values) * bits / 8)
    assert np.array_equal(unpack_bits(packed, len(values), bits), symbols)


def test_fp16_path_decodes_to_the_networks_own_output():
    model = random_siren()
    data = coin_file(model, (20, 30, 3), 16)
    as_fp16 = random_siren()
    as_fp16.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    assert np.array_equal(decode_image(data), render(as_fp16, 20, 30))
    config_bytes = len(coin_config_bytes(len(model.hidden), model.last.in_features, 16, model.w0))
    assert len(unpack(data).body) - config_bytes == 2 * sum(p.numel() for p in model.parameters())


def test_clipping_range_formula():
    assert clipping_stds(1) == 3 and clipping_stds(16) == 6 and clipping_stds(6) == 4


@pytest.mark.parametrize("bits", [2, 4, 8, 12])
def test_uniform_weights_are_within_half_a_step_inside_the_clipping_range(bits):
    model = random_siren(depth=3, width=40)
    decoded = model_from_container(unpack(coin_file(model, (8, 8, 3), bits)))
    for original, restored in zip(model.state_dict().values(), decoded.state_dict().values()):
        o = original.double().reshape(-1)
        k = clipping_stds(bits)
        low = max(o.mean() - k * o.std(unbiased=False), o.min())
        high = min(o.mean() + k * o.std(unbiased=False), o.max())
        step = (high - low) / (2 ** bits - 1)
        inside = (o >= low) & (o <= high)
        error = (restored.double().reshape(-1) - o).abs()
        assert torch.all(error[inside] <= 0.5 * step * 1.001 + 1e-9)
        assert len(torch.unique(restored)) <= 2 ** bits


def test_fewer_bits_give_smaller_files_and_more_error():
    model = random_siren(depth=3, width=40)
    sizes, errors = [], []
    for bits in (4, 8, 16):
        data = coin_file(model, (8, 8, 3), bits)
        restored = model_from_container(unpack(data))
        sizes.append(len(data))
        errors.append(sum((a - b).abs().sum().item() for a, b in zip(model.state_dict().values(),
                                                                     restored.state_dict().values())))
    assert sizes[0] < sizes[1] < sizes[2] and errors[0] > errors[1] > errors[2]


# --- encode / decode -----------------------------------------------------------------------------

def test_encode_fits_the_image_and_meets_the_rate(photo, encoded):
    pixels = photo.shape[0] * photo.shape[1]
    assert 8 * len(encoded.data) / pixels <= 4.0
    decoded = decode_image(encoded.data)
    assert decoded.shape == photo.shape and decoded.dtype == np.uint8
    assert encoded.psnr == pytest.approx(psnr(photo, decoded))
    assert encoded.psnr > encoded.history[0][1] + 5  # the fit improved on the initial network by > 5 dB
    assert np.array_equal(decoded, render(encoded.model, *photo.shape[:2]))
    assert abs(encoded.psnr - encoded.best_fit_psnr) < 0.05  # fp16 storage costs almost nothing (§5.3.1)


def test_best_weights_are_kept_not_the_last():
    torch.manual_seed(0)
    target = torch.rand(64, 3)
    coords = pixel_coordinates(8, 8)
    model = Siren(2, 16, 2, 3)
    fit = coin.fit_siren(model, coords, target, iterations=60, lr=0.05)  # a large lr: a noisy descent
    model.load_state_dict(fit.best_state)
    with torch.no_grad():
        rounded = torch.round(model(coords).clamp(0, 1) * 255) / 255
    assert -10 * math.log10(torch.mean((rounded - target) ** 2).item()) == pytest.approx(fit.best_psnr)
    assert fit.best_psnr == max(p for _, p in fit.history) or fit.best_psnr >= max(p for _, p in fit.history)


def test_patience_stops_early():
    torch.manual_seed(0)
    coords, target = pixel_coordinates(8, 8), torch.rand(64, 3)
    fit = coin.fit_siren(Siren(2, 8, 2, 3), coords, target, iterations=10_000, lr=1.0, patience=20)
    assert fit.iterations_run < 10_000 and fit.iterations_run - fit.best_iteration == 20


def test_region_and_scale_agree_with_the_full_decode(encoded, monkeypatch):
    full = decode_image(encoded.data)
    monkeypatch.setattr(coin, "RENDER_CHUNK", 97)  # many small row blocks
    h, w = full.shape[:2]
    for region in [(0, 0, w, h), (3, 5, 41, 33), (w - 1, h - 1, w, h)]:
        x0, y0, x1, y1 = region
        assert np.array_equal(decode_image(encoded.data, region=region), full[y0:y1, x0:x1])
    triple = decode_image(encoded.data, scale=3)
    assert triple.shape == (3 * h, 3 * w, 3)
    assert np.array_equal(triple[1::3, 1::3], full)
    assert np.array_equal(decode_image(encoded.data, scale=3, region=(10, 20, 100, 70)), triple[20:70, 10:100])
    assert decode_image(encoded.data, scale=0.5).shape == (h // 2, w // 2, 3)


def test_region_outside_the_image_is_refused(encoded):
    with pytest.raises(UserError, match="region"):
        decode_image(encoded.data, region=(0, 0, 1000, 10))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 4, 3), np.uint8), "empty image"),
    (np.zeros((4, 4, 3), np.float32), "uint8"),
    (np.zeros((4, 4, 5), np.uint8), "1–4 channels"),
])
def test_encoder_refuses_bad_arrays(bad, message):
    with pytest.raises(UserError, match=message):
        encode_image(bad, CoinConfig(iterations=1))


def test_grey_and_rgba_round_trip(photo):
    for image in (photo[:, :, :1], np.concatenate([photo, photo[:, :, :1]], axis=2)):
        result = encode_image(image, CoinConfig(bpp=8.0, iterations=5))
        assert decode_image(result.data).shape == image.shape


# --- files and the command line ------------------------------------------------------------------

def test_loader_refuses_bombs_16_bit_and_non_images(tmp_path):
    Image.new("1", (9000, 8000)).save(tmp_path / "huge.png")
    with pytest.raises(DataError, match="too large"):
        load_image(tmp_path / "huge.png")
    Image.new("I;16", (5, 5)).save(tmp_path / "deep.png")
    with pytest.raises(DataError, match="8-bit"):
        load_image(tmp_path / "deep.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match="not a recognised image"):
        load_image(tmp_path / "text.png")
    Image.new("RGBA", (3, 2), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png", keep_alpha=True)[0, 0].tolist() == [1, 2, 3, 4]
    assert load_image(tmp_path / "rgba.png").shape == (2, 3, 3)


def test_cli_encode_decode_round_trip(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "in.png")
    out = run(["encode", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.mcz"), "--codec", "coin", "--bpp", "3", "--iters", "40",
               "--json"])
    assert out.returncode == 0, out.stderr
    summary = last_json(out.stdout)
    assert summary["bytes"] == (tmp_path / "x.mcz").stat().st_size and summary["bpp"] <= 3
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.mcz").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    out = run(["decode", str(tmp_path / "x.mcz"), "-o", str(tmp_path / "y.png"), "--json"])
    assert out.returncode == 0, out.stderr
    decoded = np.asarray(Image.open(tmp_path / "y.png"))
    assert summary["psnr"] == pytest.approx(psnr(photo, decoded))
    out = run(["decode", str(tmp_path / "x.mcz"), "-o", str(tmp_path / "r.png"), "--scale", "2", "--region",
               "4,6,20,30"])
    assert out.returncode == 0 and np.asarray(Image.open(tmp_path / "r.png")).shape == (24, 16, 3)


@pytest.mark.parametrize("make, args, message", [
    (lambda p: p.write_bytes(b"\xb2\x01garbage"), ["decode", "{f}", "-o", "{o}"], "corrupt or truncated"),
    (lambda p: p.write_text("hello"), ["decode", "{f}", "-o", "{o}"], "not a metacompress .mcz file"),
    (lambda p: p.write_text("hello"), ["encode", "{f}", "-o", "{o}"], "not a recognised image"),
    (lambda p: Image.new("RGB", (8, 8)).save(p, "PNG"), ["encode", "{f}", "-o", "{o}", "--codec", "coin", "--bpp", "0.01"],
     "too small"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, make, args, message):
    source, target = tmp_path / "in.bin", tmp_path / "out.png"
    make(source)
    out = run([a.format(f=source, o=target) for a in args])
    assert out.returncode == 2 and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not target.exists() and list(tmp_path.iterdir()) == [source]


def test_version_byte_is_checked(encoded):
    body = bytearray(encoded.data[:-4])
    body[0] = 0xB7
    with pytest.raises(FormatError, match="format version 7"):
        decode_image(with_crc(bytes(body)))
    assert struct.unpack("<I", encoded.data[-4:])[0] == zlib.crc32(encoded.data[:-4])
