"""COIN++ codec: round trips for every modality, exact agreement with the quantized latents, and refusals."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import SAMPLES, run_torchrun, tiny_base
import torch

from metacompress.codecs.base import unpack
from metacompress.codecs.coinpp import Datapoint, decode, encode, encode_many, fit_tile_latents, quantizer_for, \
    render_tiles, symbol_model
from metacompress.data import sample_path
from metacompress.modalities.spec import DataSpec
from metacompress.modalities.files import read_datapoint, training_datapoints, write_datapoint
from metacompress.errors import FormatError, UserError
from metacompress.inr.base_network import load_base, save_base
from metacompress.modalities.datapoint import from_features, to_features
from metacompress.modalities.patches import tile_patches, untile_patches

@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {m: tiny_base(m, root) for m in SAMPLES}


def sample_point(modality, base):
    point = read_datapoint(sample_path(SAMPLES[modality]), base.config.data, time_index=0)
    if modality == "image":  # a corner with a partial tile on both axes
        point.values = np.ascontiguousarray(point.values[:21, :30])
    if modality == "audio":
        point.values = point.values[:1234]
    if modality == "volume":
        point.values = np.ascontiguousarray(point.values[:13, :9, :17])
    return point


@pytest.mark.parametrize("modality", list(SAMPLES))
@pytest.mark.parametrize("entropy", [True, False])
def test_decode_equals_reconstruction_from_quantized_latents(bases, modality, entropy):
    base = bases[modality]
    point = sample_point(modality, base)
    result = encode(point, base, bits=5, steps=3, entropy=entropy, effort=0)
    decoded = decode(result.data, base)
    assert decoded.values.dtype == point.values.dtype and decoded.values.shape == point.values.shape
    np.testing.assert_array_equal(decoded.values, result.reconstruction)
    # the same by hand (no refinement: effort 0): fit, quantize to bin centres, render, stitch, denormalize
    spec = base.config.data
    x_range = None if spec.value_range is not None else \
        (float(point.values.min()), float(np.float32(np.percentile(point.values, 99.5))))
    features = to_features(point.values, spec, x_range)
    tiles = tile_patches(features, spec.patch)
    latents = fit_tile_latents(base, tiles.reshape(tiles.shape[0], -1, tiles.shape[-1]), 3)
    quantizer = quantizer_for(base, 5)
    rendered = render_tiles(base, quantizer.values(quantizer.symbols(latents)))
    by_hand = from_features(untile_patches(rendered.reshape(tiles.shape), features.shape), spec,
                            point.values.shape[-1], point.dtype, x_range)
    np.testing.assert_array_equal(decoded.values, by_hand)
    if modality == "volume":
        assert decoded.spacing == pytest.approx(point.spacing)
    if not entropy:
        assert result.payload_bytes == math.ceil(result.tiles * base.model.latent_dim * 5 / 8)


def test_entropy_coded_size_is_the_model_cross_entropy_and_psnr_is_measured(bases):
    base = bases["image"]
    point = sample_point("image", base)
    coded = encode(point, base, bits=6, steps=3)
    quantizer = quantizer_for(base, 6)
    symbols = quantizer.symbols(coded.latents)
    ideal_bytes = symbol_model(base, 6).cross_entropy_bits(symbols) / 8
    # the coder quantizes the model's probabilities, so one message may come out a few bits under
    # the float cross-entropy; never a whole byte
    assert ideal_bytes - 1 <= coded.payload_bytes <= 1.01 * ideal_bytes + 2
    reference = point.values.astype(np.float64)
    mse = np.mean((coded.reconstruction.astype(np.float64) - reference) ** 2)
    assert coded.psnr == pytest.approx(10 * math.log10(255 ** 2 / mse), rel=1e-6)


def test_batched_encoding_decodes_exactly_and_matches_one_by_one(bases):
    base = bases["image"]
    image = read_datapoint(sample_path("photo"), base.config.data).values
    points = [Datapoint(np.ascontiguousarray(image[i:i + 16, i:i + 40]), "uint8") for i in range(0, 160, 16)]
    batched = encode_many(points, base, bits=5, steps=2)
    for point, result in zip(points, batched):
        np.testing.assert_array_equal(decode(result.data, base).values, result.reconstruction)
        alone = encode(point, base, bits=5, steps=2)  # batched products may round differently: same up to that
        assert len(result.data) == pytest.approx(len(alone.data), abs=2) and result.psnr == pytest.approx(alone.psnr, abs=0.05)


def test_grey_image_on_rgb_base_stays_grey(bases):
    base = bases["image"]
    grey = read_datapoint(sample_path("photo"), base.config.data).values[:16, :16].mean(axis=-1, keepdims=True)
    point = Datapoint(np.round(grey).astype(np.uint8), "uint8")
    result = encode(point, base, steps=2)
    assert decode(result.data, base).values.shape == (16, 16, 1)


def test_a_one_patch_datapoint_costs_8_bytes_beyond_its_latents(bases):
    base = bases["image"]
    image = read_datapoint(sample_path("photo"), base.config.data).values
    result = encode(Datapoint(np.ascontiguousarray(image[:8, :8]), "uint8"), base, steps=2)
    assert result.header_bytes == 8 and len(result.data) == 8 + result.payload_bytes
    assert unpack(result.data, crc_key=bytes.fromhex(base.hash)).shape is None  # the shape is the base's patch
    offset = encode(Datapoint(np.ascontiguousarray(image[:9, :8]), "uint8"), base, steps=2)
    assert offset.header_bytes == 8 + 4  # ndim + three one-byte dimensions


def test_mismatched_base_wrong_modality_and_corruption_are_refused(bases, tmp_path):
    base = bases["image"]
    data = encode(sample_point("image", base), base, steps=2).data
    other = tiny_base("image", tmp_path, iterations=4)
    # the 1-byte hash prefix names the other base network; on a prefix collision the keyed CRC still refuses
    with pytest.raises(FormatError, match="encoded with base network .* not this one|made with another base network"):
        decode(data, other)
    with pytest.raises(FormatError, match="holds image data, but the base network is for audio"):
        decode(data, bases["audio"])
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0x10
    with pytest.raises(FormatError, match="CRC"):
        decode(bytes(corrupt), base)
    with pytest.raises(FormatError):
        decode(data[:-7], base)


def test_wrong_channels_and_globe_grid_are_refused(bases):
    with pytest.raises(UserError, match="channel"):
        encode(Datapoint(np.zeros((8, 8, 2), np.uint8), "uint8"), bases["image"])
    with pytest.raises(UserError, match="grid"):
        encode(Datapoint(np.zeros((10, 20, 2), np.float32), "float32"), bases["sphere"])
    with pytest.raises(UserError, match="bits"):
        encode(sample_point("image", bases["image"]), bases["image"], bits=12)


def test_saved_base_decodes_the_same(bases, tmp_path):
    base = bases["sphere"]
    point = sample_point("sphere", base)
    result = encode(point, base, steps=2)
    save_base(tmp_path / "sphere", base)
    loaded = load_base(tmp_path / "sphere")
    assert loaded.hash == base.hash
    np.testing.assert_array_equal(decode(result.data, loaded).values, result.reconstruction)


def test_latent_codes_count_every_training_symbol(bases):
    codes = bases["audio"].config.codes
    for bits, counts in codes.symbol_counts.items():
        assert len(counts) == 2 ** bits
        assert sum(counts) == codes.patches * bases["audio"].model.latent_dim + 2 ** bits  # add-one


@pytest.mark.parametrize("modality,suffix", [("image", ".png"), ("audio", ".wav"), ("audio", ".flac"),
                                             ("volume", ".nii.gz"), ("sphere", ".npy"), ("sphere", ".nc")])
def test_written_files_read_back(bases, tmp_path, modality, suffix):
    base = bases[modality]
    point = decode(encode(sample_point(modality, base), base, steps=1).data, base)
    path = tmp_path / f"out{suffix}"
    write_datapoint(path, point, base.config.data)
    back = read_datapoint(path, base.config.data, time_index=0)
    tolerance = 1 / 32768 if modality == "audio" else 1e-6
    np.testing.assert_allclose(back.values, np.clip(point.values, -1, 1) if modality == "audio" else point.values,
                               atol=tolerance)


def test_training_on_kodak_is_refused(tmp_path):
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    with pytest.raises(UserError, match="Kodak"):
        training_datapoints(kodak, DataSpec("image", 3, (32, 32)))


def run_cli(args, **kwargs):
    return subprocess.run([sys.executable, "-m", "metacompress.cli"] + args, capture_output=True, text=True,
                          timeout=600, **kwargs)


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_cli_train_base_encode_decode_audio(tmp_path):
    data = tmp_path / "speech"
    data.mkdir()
    (data / "a.flac").write_bytes(sample_path("speech").read_bytes())
    base = tmp_path / "audio-base"
    out = run_cli(["train-base", "--modality", "audio", "--data", str(data), "--out", str(base), "--patch", "200",
                   "--width", "16", "--depth", "2", "--latent-dim", "8", "--iters", "4", "--batch-size", "4",
                   "--outer-lr", "1e-4", "--val-fraction", "0", "--no-progress", "--json",
                   "--meta-sgd", "--inner-lr", "0.02"])
    assert out.returncode == 0, out.stderr
    summary = last_json(out.stdout)
    trained = load_base(base)
    assert summary["hash"] == trained.hash and (tmp_path / "audio-base.run" / "meta_checkpoint.json").exists()
    # encoding steps as training did: the inner lr is stored, and Meta-SGD's learned rates moved from it
    assert trained.config.inner_lr == 0.02 and trained.config.meta_sgd
    assert trained.model.inner_lrs.shape == (8,) and not torch.allclose(trained.model.inner_lrs, torch.tensor(0.02))
    out = run_cli(["encode", str(data / "a.flac"), "-o", str(tmp_path / "a.mcz"), "--base", str(base) + ".json",
                   "--bits", "4", "--steps", "2", "--json"])
    assert out.returncode == 0, out.stderr
    encoded = last_json(out.stdout)
    assert encoded["bytes"] == (tmp_path / "a.mcz").stat().st_size and encoded["patches"] == math.ceil(40_000 / 200)
    # format, kind, shape (ndim, 40000 as a 3-byte varint, 1), hash byte, flags, CRC
    assert encoded["header_bytes"] == 2 + 5 + 2 + 4
    out = run_cli(["decode", str(tmp_path / "a.mcz"), "-o", str(tmp_path / "a.wav"), "--base", str(base)])
    assert out.returncode == 0, out.stderr
    import soundfile

    decoded, rate = soundfile.read(tmp_path / "a.wav")
    assert rate == 16_000 and decoded.shape == (40_000,)
    # decoding with the bundled image base is refused, in one line, writing nothing
    out = run_cli(["decode", str(tmp_path / "a.mcz"), "-o", str(tmp_path / "b.wav")])
    assert out.returncode == 2 and "audio data, but the base network is for image" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "b.wav").exists()


@pytest.mark.slow
def test_two_process_meta_training_equals_one_process(tmp_path):
    data = tmp_path / "globes"
    data.mkdir()
    (data / "g.nc").write_bytes(sample_path("globe").read_bytes())
    common = ["train-base", "--modality", "sphere", "--data", str(data), "--width", "16", "--depth", "2",
              "--latent-dim", "4", "--iters", "3", "--batch-size", "4", "--outer-lr", "1e-3", "--no-progress"]
    single = run_cli(common + ["--out", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr
    ddp = run_torchrun(common + ["--out", str(tmp_path / "two"), "--json"])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = load_base(tmp_path / "one"), load_base(tmp_path / "two")
    for (name, a), b in zip(one.model.state_dict().items(), two.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("dtype,values", [
    ("uint8", np.arange(0, 256, dtype=np.uint8).reshape(16, 16, 1)),
    ("uint16", (np.arange(4096, dtype=np.uint16) * 13).reshape(16, 16, 16, 1)),
    ("int16", np.arange(-500, 500, dtype=np.int16).reshape(1000, 1)),
])
def test_integer_datapoints_survive_the_feature_mapping_exactly(dtype, values):
    spec = DataSpec("volume", 1, (4,) * (values.ndim - 1)) if values.ndim == 4 else \
        DataSpec("image" if values.ndim == 3 else "audio", 1, (4,) * (values.ndim - 1))
    x_range = (float(values.min()), float(values.max()))
    back = from_features(to_features(values, spec, x_range), spec, 1, dtype, x_range)
    assert back.dtype == values.dtype
    np.testing.assert_array_equal(back, values)


def test_float_datapoints_survive_the_feature_mapping_to_float32_precision(bases):
    for modality in ("audio", "sphere"):
        spec = bases[modality].config.data
        values = sample_point(modality, bases[modality]).values
        back = from_features(to_features(values, spec), spec, values.shape[-1], "float32")
        np.testing.assert_allclose(back, values, rtol=0, atol=4e-7 * float(np.abs(values).max()))


def test_sphere_coordinates_give_back_the_grid(bases):
    from metacompress.modalities.datapoint import coordinates

    spec = bases["sphere"].config.data
    xyz = coordinates(spec).double()
    lat = np.degrees(np.arcsin(xyz[:, 2].numpy())).reshape(spec.patch)
    lon = np.degrees(np.arctan2(xyz[:, 1].numpy(), xyz[:, 0].numpy())).reshape(spec.patch)
    np.testing.assert_allclose(lat[:, 0], spec.grid.latitude, atol=1e-4)
    wrapped = (np.asarray(spec.grid.longitude) + 180) % 360 - 180
    equator = lon[len(lon) // 2]  # (at a pole every longitude is the same point)
    np.testing.assert_allclose((equator + 180) % 360 - 180, wrapped, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(xyz.numpy(), axis=1), 1.0, atol=1e-6)


def test_training_patches_skip_constant_background():
    from metacompress.codecs.coinpp_training import non_constant_patch

    volume = torch.zeros(40, 40, 40, 1)
    volume[30:34, 5:9, 20:24] = 1.0  # a small object in empty space: ~96 % of random 8³ patches miss it
    generator = torch.Generator().manual_seed(0)
    drawn = [non_constant_patch(volume, (8, 8, 8), generator, tries=1000) for _ in range(20)]
    assert all(p.amax() == 1.0 and p.amin() == 0.0 for p in drawn)
    flat = torch.full((10, 10, 1), 0.5)  # nothing to find: gives up and returns a patch
    assert non_constant_patch(flat, (4, 4), generator).shape == (4, 4, 1)


def test_the_straight_through_quantizer_gives_bin_centres_and_the_identity_gradient(bases):
    quantizer = quantizer_for(bases["image"], 4)
    dims = base_dims = bases["image"].model.latent_dim
    assert quantizer.per_dimension and len(quantizer.std) == base_dims  # new bases quantize per dimension
    z = quantizer.denormalize(torch.randn(5, dims, generator=torch.Generator().manual_seed(0)) * 2).float()
    z.requires_grad_(True)
    q = quantizer.straight_through(z)
    np.testing.assert_allclose(q.detach().numpy(), quantizer.values(quantizer.symbols(z)).numpy(), rtol=1e-6)
    (q * torch.arange(float(dims))).sum().backward()
    assert torch.equal(z.grad, torch.arange(float(dims)).expand(5, dims))


@pytest.mark.parametrize("bits", [3, 6])
def test_encode_time_effort_never_hurts_a_tile_and_raises_psnr(bases, bits):
    from metacompress.codecs.coinpp import refine_tile_latents

    base = bases["image"]
    point = read_datapoint(sample_path(SAMPLES["image"]), base.config.data)
    tiles = tile_patches(to_features(point.values, base.config.data), base.config.patch)
    tiles = tiles.reshape(tiles.shape[0], -1, tiles.shape[-1])[:40]
    quantizer = quantizer_for(base, bits)
    start = fit_tile_latents(base, tiles, 3)

    def errors(latents):
        rendered = render_tiles(base, quantizer.values(quantizer.symbols(latents)))
        return ((rendered - tiles) ** 2).flatten(1).mean(1)

    refined = refine_tile_latents(base, tiles, start, quantizer, 20)
    before, after = errors(start), errors(refined)
    assert (after <= before + 1e-7).all()  # each tile keeps its best quantized latents
    assert after.mean() < 0.99 * before.mean()  # and the effort pays on average (a tiny base: ~4 %)
    # chunking changes nothing: one tile at a time gives the same latents
    one_by_one = torch.cat([refine_tile_latents(base, tiles[i:i + 1], start[i:i + 1], quantizer, 20)
                            for i in range(3)])
    torch.testing.assert_close(one_by_one, refined[:3], rtol=1e-5, atol=1e-7)


def test_an_effortful_file_decodes_to_its_reconstruction_and_beats_the_plain_one(bases):
    base = bases["image"]
    point = sample_point("image", base)
    plain, refined = encode(point, base, bits=5, steps=3), encode(point, base, bits=5, steps=3, effort=30)
    np.testing.assert_array_equal(decode(refined.data, base).values, refined.reconstruction)
    assert refined.psnr >= plain.psnr
    with pytest.raises(UserError, match="effort"):
        encode(point, base, bits=5, steps=3, effort=-1)


def test_a_rate_budget_picks_the_most_bits_that_fit(bases):
    from metacompress.codecs.coinpp import encode_within

    base = bases["image"]
    point = sample_point("image", base)
    pixels = math.prod(point.values.shape[:-1])
    sizes = {b: len(encode(point, base, bits=b, steps=2, effort=0).data) for b in base.config.codes.bit_widths}
    assert all(sizes[a] < sizes[b] for a, b in zip(sorted(sizes), sorted(sizes)[1:]))  # more bits, more bytes
    for bits in (3, 5, 7):  # a budget just over a bit-width's file picks exactly that width
        budget = 8 * (sizes[bits] + 0.5) / pixels
        for effort in (0, 3):
            result = encode_within(point, base, budget, steps=2, effort=effort)
            assert result.bits == bits and len(result.data) * 8 / pixels <= budget
            np.testing.assert_array_equal(decode(result.data, base).values, result.reconstruction)
    with pytest.raises(UserError, match="below what 3 latent bits need"):
        encode_within(point, base, 8 * (sizes[3] - 1) / pixels, steps=2)


def test_cli_encode_with_a_rate_budget(bases, tmp_path):
    stem = tmp_path / "base"
    save_base(stem, bases["image"])
    photo = tmp_path / "crop.png"
    write_datapoint(photo, sample_point("image", bases["image"]), bases["image"].config.data)
    out = run_cli(["encode", str(photo), "--base", str(stem), "--bpp", "4", "--steps", "2", "--effort", "0",
                   "-o", str(tmp_path / "a.mcz"), "--json"])
    assert out.returncode == 0, out.stderr
    summary = last_json(out.stdout)
    assert summary["bits_per_sample"] <= 4 and 3 <= summary["bits"] <= 8
    out = run_cli(["encode", str(photo), "--base", str(stem), "--bpp", "4", "--bits", "5", "-o", str(tmp_path / "b.mcz")])
    assert out.returncode == 2 and "give --bpp or --bits, not both" in out.stderr and not (tmp_path / "b.mcz").exists()


def test_made_with_names_exactly_the_base_network_a_file_was_encoded_with(bases):
    from metacompress.codecs.coinpp import made_with

    base = bases["image"]
    data = encode(sample_point("image", base), base, bits=4, steps=1, effort=0).data
    assert made_with(data, base.hash)
    # another base network, even one whose hash shares the file's first hash byte, is not it
    assert not made_with(data, bases["audio"].hash)
    assert not made_with(data, base.hash[:2] + "0" * 62)
    assert not made_with(data[:-1], base.hash) and not made_with(b"junk", base.hash)
