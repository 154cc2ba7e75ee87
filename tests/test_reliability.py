"""Issue 15: damaged or hostile files never decode to wrong data or cost unbounded work; the user's
input and finished outputs are never lost; every failure is one line and exit status 2."""

import io
import json
import math
import os
import subprocess
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from metacompress.cli import main
from metacompress.codecs import archive as archive_format
from metacompress.codecs.archive import Archive, ArchiveHeader, ArchiveItem, archive_bytes, item_crc
from metacompress.codecs.base import Container, encode_shape, encode_uvarint, pack
from metacompress.codecs.coin import CoinConfig, coin_config_bytes, coin_file, decode_image, encode_image
from metacompress.codecs.coinpp import Datapoint, decode, encode, encode_many, file_bytes, symbol_model
from metacompress.codecs.entropy import decode_symbols, encode_symbols, min_payload_bytes
from metacompress.data import sample_path
from metacompress.modalities.files import read_datapoint
from metacompress.data.images import save_image
from metacompress.errors import FormatError, UserError
from metacompress.inr.siren import Siren


@pytest.fixture(scope="module")
def base(tiny_image_base):
    return tiny_image_base


@pytest.fixture(scope="module")
def base_stem(tiny_image_base_stem):
    return tiny_image_base_stem


@pytest.fixture(scope="module")
def crops(base):
    photo = read_datapoint(sample_path("photo"), base.config.data).values
    return [photo[5 * i:5 * i + 8, 7 * i:7 * i + 8] for i in range(6)]


@pytest.fixture(scope="module")
def archive_file(base, crops, tmp_path_factory):
    results = encode_many([Datapoint(c, "uint8") for c in crops], base, steps=2)
    items = [ArchiveItem(c.shape, r.record, f"crop{i}.png") for i, (c, r) in enumerate(zip(crops, results))]
    path = tmp_path_factory.mktemp("archive") / "crops.mcza"
    path.write_bytes(archive_bytes(ArchiveHeader("image", "uint8", 5, True, base.hash, (8, 8, 3)), items))
    return path


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return code, err


def one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("metacompress: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# 1. every archive read path checks the header CRC ------------------------------------------------

def test_extract_refuses_an_archive_whose_header_fails_its_crc(archive_file, base_stem, tmp_path, capsys):
    data = bytearray(archive_file.read_bytes())
    shape_at = 4 + 3 + 32 + 1  # after magic, version, kind, flags, hash: ndim, then the first dimension
    assert data[shape_at] == 8
    data[shape_at] = 9  # 8×8 → 9×8: every item would decode to the wrong shape
    damaged = tmp_path / "damaged.mcza"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, err = run_cli(["archive", "extract", damaged, "-o", out, "--base", base_stem, "--no-progress"], capsys)
    one_line_error(code, err, "header is corrupt")
    assert not out.exists()
    for command in (["archive", "list", damaged], ["archive", "append", damaged, tmp_path, "--base", base_stem]):
        one_line_error(*run_cli(command, capsys), "header is corrupt")
    code, err = run_cli(["archive", "verify", damaged], capsys)  # verify still reports what it can
    one_line_error(code, err, "header/index CRC mismatch")


def test_a_damaged_mixed_shape_item_never_lists_a_wrong_shape(tmp_path, capsys):
    header = ArchiveHeader("image", "uint8", 5, True, "ab" * 32, None)  # mixed shapes: each item stores its own
    items = [ArchiveItem((8, 8, 3), b"x" * 20, "a"), ArchiveItem((16, 8, 3), b"y" * 20, "b")]
    data = bytearray(archive_bytes(header, items))
    at = Archive(io.BytesIO(bytes(data))).offsets[1] + 1  # item 1's first dimension
    assert data[at] == 16
    data[at] = 36
    damaged = tmp_path / "mixed.mcza"
    damaged.write_bytes(bytes(data))
    with Archive(damaged) as archive:
        assert archive.item_shape(0) == (8, 8, 3)
        with pytest.raises(FormatError, match="item 1 is damaged"):
            archive.item_shape(1)
        with pytest.raises(FormatError, match="item 1 is damaged"):
            archive.samples()
    capsys.readouterr()
    assert main(["archive", "list", str(damaged), "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert "? (damaged)" in out and "36×8" not in out
    assert [item["shape"] for item in summary["item_list"]] == [[8, 8, 3], None]
    assert summary["damaged_items"] == [1] and summary["bits_per_sample"] is None


# 2. empty, short and truncated records -----------------------------------------------------------

def test_an_empty_item_does_not_verify_with_a_zero_crc():
    assert item_crc(0, b"") != 0 and item_crc(1, b"") != item_crc(0, b"")
    header = ArchiveHeader("image", "uint8", 5, True, "ab" * 32, (8, 8, 3))
    data = bytearray(archive_bytes(header, [ArchiveItem((8, 8, 3), b"x" * 20), ArchiveItem((8, 8, 3), b"y" * 20)]))
    archive = Archive(io.BytesIO(bytes(data)))
    # zero-fill item 1's index entry as a damaged disk block would, then make the header CRC agree
    entry = archive.offsets[0] - 4 - 5
    data[entry:entry + 5] = bytes(5)
    data[archive.offsets[0] - 4:archive.offsets[0]] = zlib.crc32(bytes(data[:archive.offsets[0] - 4])).to_bytes(4, "little")
    report = Archive(io.BytesIO(bytes(data))).verify()
    assert report.damaged.get(1) == "CRC mismatch"


def test_an_8_byte_coinpp_file_is_refused(base):
    data = file_bytes(base, (8, 8, 3), "uint8", 5, True, b"")
    assert len(data) == 8
    with pytest.raises(FormatError, match="too short"):
        decode(data, base)


def test_payloads_cut_short_are_refused_even_with_a_valid_crc(base, crops):
    refused = accepted_one_byte = 0
    for crop in crops:
        # no refinement: the cuts this test counts depend on the symbols (with effort 10, one crop's
        # stream still decodes cut by 2 bytes — only the CRC catches such a forgery, see below)
        record = encode(Datapoint(crop, "uint8"), base, steps=2, effort=0).record
        for cut in range(1, len(record) + 1):
            forged = file_bytes(base, crop.shape, "uint8", 5, True, record[:-cut])  # the CRC recomputed
            try:
                decode(forged, base)
            except FormatError:
                refused += 1
                continue
            assert cut == 1, f"a payload cut by {cut} bytes decoded"
            accepted_one_byte += 1
    assert refused >= 2 * len(crops)
    # a one-byte cut can still decode (only the CRC catches it): say so, and keep it rare
    assert accepted_one_byte <= len(crops)


def test_the_encoder_pads_a_stream_shorter_than_its_information(base):
    model = symbol_model(base, 5)
    most_probable = int(np.argmax(model.counts))
    symbols = np.full(300, most_probable)  # least information per symbol: the bound is tightest here
    payload = encode_symbols(symbols, model)
    assert len(payload) >= min_payload_bytes(300, model)
    assert np.array_equal(decode_symbols(payload, 300, model), symbols)
    with pytest.raises(FormatError, match="too short"):
        decode_symbols(payload[:min_payload_bytes(300, model) - 1], 300, model)


def test_no_entropy_payload_padding_bits_must_be_zero(base, crops):
    result = encode(Datapoint(crops[0], "uint8"), base, steps=2, entropy=False)
    count_bits = math.prod((1, base.model.latent_dim)) * 5
    if count_bits % 8 == 0:
        pytest.skip("no padding bits at this latent size")
    data = bytearray(result.record)
    data[-1] |= 1  # the last padding bit
    with pytest.raises(FormatError, match="padding"):
        decode(file_bytes(base, crops[0].shape, "uint8", 5, False, bytes(data)), base)


# 3. zlib bomb in archive names -------------------------------------------------------------------

def names_bomb(count: int, expanded: int) -> bytes:
    """A CRC-valid archive whose zlib-packed names expand to ``expanded`` bytes."""
    packed = zlib.compress(b"a" * expanded, 9)
    out = bytearray(archive_format.MAGIC) + bytes([archive_format.ARCHIVE_VERSION, 0x10 | 0x20, 4 | 8])
    out += bytes(32) + encode_shape((8, 8, 3)) + encode_uvarint(count)
    for i in range(count):
        out += encode_uvarint(10) + item_crc(i, bytes(10)).to_bytes(4, "little")
    out += encode_uvarint(len(packed)) + packed
    out += zlib.crc32(out).to_bytes(4, "little")
    out += bytes(10 * count)
    return bytes(out + zlib.crc32(out).to_bytes(4, "little"))


def test_names_that_decompress_to_a_bomb_are_refused_in_bounded_memory():
    data = names_bomb(3, 200 << 20)  # 200 MB of names in ~200 kB
    assert len(data) < 300_000
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(FormatError, match="item names are longer"):
            Archive(io.BytesIO(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * len(data) + (1 << 20) and time.perf_counter() - started < 1.0


def test_an_unchecked_header_never_decompresses_names():
    data = bytearray(names_bomb(3, 1000))
    data[-4 - 30 - 5] ^= 1  # inside the index: the header CRC fails
    archive = Archive(io.BytesIO(bytes(data)), check_header=False)
    assert not archive.header_ok and archive.names == ["", "", ""]


# 4. decode-time bombs ----------------------------------------------------------------------------

@pytest.mark.parametrize("side", [2048, 16384])
def test_a_tiny_coinpp_file_cannot_demand_a_huge_output(base, side):
    data = file_bytes(base, (side, side, 1), "uint8", 5, True, b"\x01\x02")
    started = time.perf_counter()
    with pytest.raises(FormatError, match="too short|cap"):
        decode(data, base)
    assert time.perf_counter() - started < 0.5


def test_decoding_has_an_output_cap_with_an_override(base, crops):
    data = encode(Datapoint(crops[0], "uint8"), base, steps=2).data
    with pytest.raises(FormatError, match="--max-samples"):
        decode(data, base, max_samples=63)
    assert decode(data, base, max_samples=64).values.shape == (8, 8, 3)
    assert decode(data, base, max_samples=0).values.shape == (8, 8, 3)  # 0: no cap


def test_a_tiny_coin_file_cannot_claim_a_huge_image():
    body = coin_config_bytes(1, 1, 16, 30.0) + bytes(2 * (2 + 1 + 1 + 1))  # a 5-parameter network
    data = pack(Container("coin", "image", (16384, 16384, 1), "uint8", body))
    assert len(data) < 40
    with pytest.raises(FormatError, match="implausible"):
        decode_image(data)


def test_the_coin_encoder_refuses_what_the_decoder_would_refuse():
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    with pytest.raises(UserError, match="implausible"):
        encode_image(image, CoinConfig(depth=1, width=1, iterations=1))


def coin_work_bomb() -> bytes:
    """A valid 2-bit COIN file of a 1,801-parameter SIREN declaring a 2700×2700 image: it passes
    the output cap and the plausibility check, but rendering it costs ~25,000× its size in
    multiply-accumulates (the 9.6 kB version at 8192² rendered for 270 s)."""
    return coin_file(Siren(2, 40, 2, 1, w0=30.0), (2700, 2700, 1), 2)


def test_a_coin_file_cannot_demand_more_work_than_its_size_allows():
    data = coin_work_bomb()
    started = time.perf_counter()
    with pytest.raises(FormatError, match="multiply-accumulates.*--max-work"):
        decode_image(data)
    assert time.perf_counter() - started < 0.5
    # an explicit budget lifts the guard, and a small region stays cheap
    assert decode_image(data, max_macs=0, region=(0, 0, 8, 8)).shape == (8, 8, 1)
    with pytest.raises(FormatError, match="budget of 1e\\+06"):
        decode_image(data, max_macs=10**6, region=(0, 0, 32, 32))


def test_max_work_on_the_command_line(tmp_path, capsys):
    bomb = tmp_path / "bomb.mcz"
    bomb.write_bytes(coin_work_bomb())
    one_line_error(*run_cli(["decode", bomb, "-o", tmp_path / "y.png"], capsys), "--max-work")
    one_line_error(*run_cli(["decode", bomb, "-o", tmp_path / "y.png", "--max-work", "nan"], capsys), "--max-work")
    assert not (tmp_path / "y.png").exists()
    code, _ = run_cli(["decode", bomb, "-o", tmp_path / "y.png", "--max-work", "0", "--region", "0,0,4,4"], capsys)
    assert code == 0 and (tmp_path / "y.png").exists()


@pytest.mark.parametrize("scale", ["inf", "nan", "1e6", "-1"])
def test_absurd_scales_are_refused_up_front(tmp_path, capsys, scale):
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    coin = tmp_path / "x.mcz"
    coin.write_bytes(encode_image(image, CoinConfig(depth=2, width=8, iterations=2)).data)
    started = time.perf_counter()
    one_line_error(*run_cli(["decode", coin, "-o", tmp_path / "y.png", "--scale", scale], capsys), "--scale")
    assert time.perf_counter() - started < 2 and not (tmp_path / "y.png").exists()


# 6. the input and existing outputs are never overwritten -----------------------------------------

@pytest.fixture
def photo_png(tmp_path, crops):
    path = tmp_path / "y.png"
    save_image(path, np.concatenate([np.concatenate(crops[:2], 1)] * 2, 0))
    return path


def test_encode_and_decode_refuse_to_overwrite_their_input(photo_png, base_stem, tmp_path, capsys):
    original = photo_png.read_bytes()
    one_line_error(*run_cli(["encode", photo_png, "-o", photo_png, "--base", base_stem], capsys), "input")
    link = tmp_path / "link.mcz"
    link.symlink_to(photo_png)
    one_line_error(*run_cli(["encode", photo_png, "-o", link, "--base", base_stem, "--force"], capsys), "input")
    assert photo_png.read_bytes() == original
    mcz = tmp_path / "y.mcz"
    assert run_cli(["encode", photo_png, "-o", mcz, "--base", base_stem, "--steps", "1"], capsys)[0] == 0
    encoded = mcz.read_bytes()
    one_line_error(*run_cli(["decode", mcz, "-o", mcz, "--base", base_stem], capsys), "input")
    assert mcz.read_bytes() == encoded


def test_existing_outputs_need_force(photo_png, base_stem, tmp_path, capsys):
    out = tmp_path / "out.mcz"
    out.write_bytes(b"precious")
    one_line_error(*run_cli(["encode", photo_png, "-o", out, "--base", base_stem], capsys), "--force")
    assert out.read_bytes() == b"precious"
    assert run_cli(["encode", photo_png, "-o", out, "--base", base_stem, "--steps", "1", "--force"], capsys)[0] == 0
    png = tmp_path / "back.png"
    png.write_bytes(b"precious")
    one_line_error(*run_cli(["decode", out, "-o", png, "--base", base_stem], capsys), "--force")
    assert png.read_bytes() == b"precious"


# 7. archive extract stays in its folder and loses nothing ----------------------------------------

def named_archive(base, crops, names, path):
    results = encode_many([Datapoint(c, "uint8") for c in crops[:len(names)]], base, steps=1)
    items = [ArchiveItem(c.shape, r.record, n) for c, r, n in zip(crops, results, names)]
    path.write_bytes(archive_bytes(ArchiveHeader("image", "uint8", 5, True, base.hash, (8, 8, 3)), items))
    return path


@pytest.mark.parametrize("names, problem", [
    (["a.png", "../../x.png"], "cannot be written safely"),
    (["a.png", "/tmp/abs.png"], "cannot be written safely"),
    (["a.png", "d/./b.png"], "cannot be written safely"),
    (["a.png", "globe#/x"], "cannot be written safely"),
    (["same", "same.png", "b.png"], "would both be written"),
    (["x.png", "x.png/y.png"], "need as a folder"),
])
def test_extract_refuses_unsafe_or_colliding_names_before_writing_anything(base, base_stem, crops, tmp_path, capsys,
                                                                           names, problem):
    path = named_archive(base, crops, names, tmp_path / "a.mcza")
    out = tmp_path / "out"
    one_line_error(*run_cli(["archive", "extract", path, "-o", out, "--base", base_stem, "--no-progress"], capsys),
                   problem)
    assert not out.exists() or not any(out.rglob("*"))


def test_extract_never_writes_through_a_link_out_of_its_folder(base, base_stem, crops, tmp_path, capsys):
    path = named_archive(base, crops, ["a.png", "sub/b.png"], tmp_path / "a.mcza")
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)
    one_line_error(*run_cli(["archive", "extract", path, "-o", out, "--base", base_stem, "--no-progress"], capsys),
                   "link")
    assert not any(elsewhere.iterdir()) and not (out / "a.png").exists()


def test_extract_to_the_archive_itself_and_over_existing_files_is_refused(archive_file, base_stem, tmp_path, capsys):
    before = archive_file.read_bytes()
    one_line_error(*run_cli(["archive", "extract", archive_file, "-o", archive_file, "--base", base_stem], capsys))
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"keep")
    one_line_error(*run_cli(["archive", "extract", archive_file, "-o", npz, "--base", base_stem], capsys), "--force")
    out = tmp_path / "out"
    out.mkdir()
    (out / "crop3.png").write_bytes(b"keep")
    one_line_error(*run_cli(["archive", "extract", archive_file, "-o", out, "--base", base_stem], capsys), "--force")
    assert sorted(p.name for p in out.iterdir()) == ["crop3.png"] and (out / "crop3.png").read_bytes() == b"keep"
    assert run_cli(["archive", "extract", archive_file, "-o", out, "--base", base_stem, "--force",
                    "--no-progress"], capsys)[0] == 0
    assert len(list(out.iterdir())) == 6 and archive_file.read_bytes() == before


# 8. OS errors and bad options: one line, exit 2, nothing partial ---------------------------------

def test_unwritable_outputs_are_one_line(photo_png, base_stem, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    one_line_error(*run_cli(["encode", photo_png, "-o", blocker / "x.mcz", "--base", base_stem], capsys),
                   "not a folder")
    folder = tmp_path / "folder.mcz"
    folder.mkdir()
    one_line_error(*run_cli(["encode", photo_png, "-o", folder, "--base", base_stem], capsys), "is a folder")


@pytest.fixture
def small_mount(tmp_path):
    """A 64 kB tmpfs (disk full after that), or skip where mounting is not allowed."""
    point = tmp_path / "mnt"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_disk_full_and_read_only_are_one_line_and_leave_nothing(small_mount, base, base_stem, crops, archive_file,
                                                                tmp_path, capsys):
    big = tmp_path / "big.png"
    save_image(big, np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8))  # ~77 kB as PNG
    mcz = tmp_path / "big.mcz"
    assert run_cli(["encode", big, "-o", mcz, "--base", base_stem, "--steps", "1"], capsys)[0] == 0
    filler = os.open(small_mount / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while os.write(filler, bytes(4096)):
            pass
    except OSError:
        pass
    finally:
        os.close(filler)
    one_line_error(*run_cli(["decode", mcz, "-o", small_mount / "out.png", "--base", base_stem], capsys),
                   f"{small_mount / 'out.png'}: No space left on device")
    one_line_error(*run_cli(["archive", "extract", archive_file, "-o", small_mount / "out", "--base", base_stem,
                             "--no-progress"], capsys), "No space left on device", str(small_mount / "out"))
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, crop in enumerate(crops):
        save_image(folder / f"{i}.png", crop)
    one_line_error(*run_cli(["archive", "create", folder, "-o", small_mount / "a.mcza", "--base", base_stem,
                             "--steps", "1", "--no-progress"], capsys), "No space left on device")
    assert sorted(p.name for p in small_mount.iterdir()) == ["filler"]  # no partial file, folder or temporary
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    for command, output in ((["encode", big, "--base", base_stem, "--steps", "1"], "x.mcz"),
                            (["archive", "create", folder, "--base", base_stem, "--steps", "1"], "a.mcza")):
        code, err = run_cli(command + ["-o", small_mount / output], capsys)
        one_line_error(code, err, f"{small_mount / output}: Read-only file system")
        assert ".tmp" not in err and ".lock" not in err


def test_an_extract_stopped_by_a_storage_error_removes_what_it_wrote(archive_file, base_stem, tmp_path, capsys,
                                                                     monkeypatch):
    from metacompress.modalities import files as datapoints

    real, written = datapoints.write_datapoint, []

    def fails_on_the_third(path, point, config):
        if len(written) == 2:
            raise OSError(28, "No space left on device", str(path))
        real(path, point, config)
        written.append(path)
    monkeypatch.setattr(datapoints, "write_datapoint", fails_on_the_third)
    out = tmp_path / "out"
    (out / "kept").mkdir(parents=True)  # a folder that was there before stays
    one_line_error(*run_cli(["archive", "extract", archive_file, "-o", out, "--base", base_stem, "--no-progress"],
                            capsys), "No space left on device")
    assert len(written) == 2 and sorted(p.name for p in out.iterdir()) == ["kept"]
    out2 = tmp_path / "new" / "out"
    written.clear()
    one_line_error(*run_cli(["archive", "extract", archive_file, "-o", out2, "--base", base_stem, "--no-progress"],
                            capsys), "No space left on device")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("args, fragment", [
    (["train", "--model", "lenet5", "--dataset", "mnist-sample", "--lr", "nan"], "--lr"),
    (["train", "--model", "lenet5", "--dataset", "mnist-sample", "--batch-size", "0"], "--batch-size"),
    (["prune", "--model", "lenet5", "--dataset", "mnist-sample", "--method", "snip", "--sparsity", "0.5",
      "--prune-batch-size", "0"], "--prune-batch-size"),
    (["prune", "--model", "lenet5", "--dataset", "mnist-sample", "--method", "synflow", "--sparsity", "0.5",
      "--rounds", "0"], "--rounds"),
])
def test_bad_training_options_are_one_line(args, fragment, capsys, tmp_path):
    one_line_error(*run_cli(args + ["--out", tmp_path / "run"], capsys), fragment)
    assert not (tmp_path / "run").exists()


def test_quantize_refuses_a_checkpoint_for_other_channels(tmp_path, capsys):
    from metacompress.models import ModelSpec, model_from_spec
    from metacompress.training import save_model

    import torch

    from metacompress.data.classification import ClassificationData

    spec = ModelSpec("lenet5", 10, 3, 32)
    data = ClassificationData(torch.zeros((1, 3, 32, 32), dtype=torch.uint8), torch.zeros(1, dtype=torch.int64),
                              tuple("0123456789"), (0.5,) * 3, (0.25,) * 3, "rgb", "train")
    save_model(tmp_path / "ckpt", model_from_spec(spec), spec, data)
    one_line_error(*run_cli(["quantize", "--checkpoint", tmp_path / "ckpt", "--model", "lenet5",
                             "--dataset", "mnist-sample"], capsys), "channel")


@pytest.mark.parametrize("extra, fragment", [(["--bpp", "inf"], "--bpp"), (["--iters", "0"], "--iters"),
                                             (["--bpp", "0"], "--bpp")])
def test_bad_coin_options_are_one_line(photo_png, tmp_path, capsys, extra, fragment):
    out = tmp_path / "c.mcz"
    one_line_error(*run_cli(["encode", photo_png, "--codec", "coin", "-o", out] + extra, capsys), fragment)
    assert not out.exists()


# 10. smaller defects -----------------------------------------------------------------------------

def test_an_animated_gif_is_refused_not_encoded_from_its_first_frame(tmp_path, base_stem, capsys):
    frames = [Image.fromarray(np.full((16, 16, 3), v, dtype=np.uint8)) for v in (0, 128, 255)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    one_line_error(*run_cli(["encode", gif, "--base", base_stem, "-o", tmp_path / "a.mcz"], capsys), "3 frames")


def test_a_thin_image_says_that_padding_dominates(base, caplog):
    thin = np.zeros((1, 80, 3), dtype=np.uint8)  # 80 pixels → 10 patches of 8×8 = 640 samples
    with caplog.at_level("WARNING"):
        encode(Datapoint(thin, "uint8"), base, steps=1)
    assert any("padded to 10 patches" in r.getMessage() for r in caplog.records)
