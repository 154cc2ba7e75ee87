"""Dataset archives: format, random access, damage reports, parallel and resumed creation, CLI."""

import io
import json
import zlib

import numpy as np
import pytest
from conftest import run_torchrun
from hypothesis import given, settings
from hypothesis import strategies as st

from metacompress.cli import main
from metacompress.codecs.archive import (Archive, ArchiveHeader, ArchiveItem, append_to_archive, archive_bytes,
                                         parse_item_range)
from metacompress.codecs.coinpp import Datapoint, decode, encode_many
from metacompress.data import sample_path
from metacompress.modalities.files import read_datapoint
from metacompress.data.images import save_image
from metacompress.modalities.item_sources import item_source
from metacompress.dataset_archive import ArchiveSettings, create_archive, parts_folder
from metacompress.errors import FormatError, UserError

HASH = "ab" * 32


@pytest.fixture(scope="module")
def base(tiny_image_base):
    return tiny_image_base


@pytest.fixture(scope="module")
def base_stem(tiny_image_base_stem):
    return tiny_image_base_stem


@pytest.fixture(scope="module")
def crops(base):
    """21 different 8×8 crops of the bundled photo: one base-network patch each."""
    photo = read_datapoint(sample_path("photo"), base.config.data).values
    return np.stack([photo[5 * i:5 * i + 8, 7 * i:7 * i + 8] for i in range(21)])


@pytest.fixture
def crops_npz(crops, tmp_path):
    path = tmp_path / "crops.npz"
    np.savez(path, images=crops)
    return path


def items_strategy():
    shape = st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 3))
    return st.lists(st.builds(ArchiveItem, shape, st.binary(max_size=60), st.sampled_from(["", "a.png", "d/b.png"])),
                    max_size=12)


@settings(max_examples=60, deadline=None)
@given(items_strategy(), st.booleans())
def test_every_item_reads_back_exactly(items, common):
    shape = items[0].shape if common and items else None
    if shape is not None:
        items = [ArchiveItem(shape, item.record, item.name) for item in items]
    header = ArchiveHeader("image", "uint8", 5, True, HASH, shape)
    archive = Archive(io.BytesIO(archive_bytes(header, items)))
    assert archive.header == header and archive.count == len(items) and archive.verify().ok
    for i, item in enumerate(items):
        assert archive.item(i) == item


class ReadLog(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.reads = []

    def read(self, size=-1):
        start = self.tell()
        data = super().read(size)
        self.reads.append((start, start + len(data)))
        return data


def records(n, size=30):
    rng = np.random.default_rng(0)
    return [ArchiveItem((8, 8, 3), rng.bytes(size + i)) for i in range(n)]


def test_random_access_reads_only_the_item_asked_for():
    items = records(50)
    data = archive_bytes(ArchiveHeader("image", "uint8", 5, True, HASH, (8, 8, 3)), items)
    log = ReadLog(data)
    archive = Archive(log)
    header_end = archive.offsets[0]
    log.reads.clear()
    assert archive.item(37).record == items[37].record
    assert log.reads == [(archive.offsets[37], archive.offsets[37] + archive.lengths[37])]
    assert header_end < 4 + 3 + 32 + 4 + 1 + 50 * 6 + 4 + 1  # header + index: ~6 bytes an item


def test_truncated_archive_reports_the_lost_items_and_keeps_the_rest():
    items = records(10)
    data = archive_bytes(ArchiveHeader("image", "uint8", 5, True, HASH, (8, 8, 3)), items)
    archive = Archive(io.BytesIO(data))
    cut = archive.offsets[6] + 5  # inside item 6
    damaged = Archive(io.BytesIO(data[:cut]))
    report = damaged.verify()
    assert report.header_ok and not report.whole_ok
    assert report.damaged == {6: "truncated", 7: "missing (archive truncated)", 8: "missing (archive truncated)",
                              9: "missing (archive truncated)"}
    assert [damaged.item(i).record for i in range(6)] == [item.record for item in items[:6]]
    with pytest.raises(FormatError, match="item 7 is damaged"):
        damaged.item(7)


def test_bit_flips_are_pinned_to_their_items():
    items = records(10)
    data = bytearray(archive_bytes(ArchiveHeader("image", "uint8", 5, True, HASH, (8, 8, 3)), items))
    archive = Archive(io.BytesIO(bytes(data)))
    data[archive.offsets[3] + 2] ^= 0x04
    report = Archive(io.BytesIO(bytes(data))).verify()
    assert report.header_ok and not report.whole_ok and report.damaged == {3: "CRC mismatch"}
    # a flip in the index: the header CRC says so, and each item is still judged by its own CRC
    entry_size = 1 + 4  # one-byte length (items are under 128 bytes) and CRC
    index_crc_of_item_5 = archive.offsets[0] - 4 - (10 - 5) * entry_size + 1
    flipped = bytearray(archive_bytes(ArchiveHeader("image", "uint8", 5, True, HASH, (8, 8, 3)), items))
    flipped[index_crc_of_item_5] ^= 0x80
    report = Archive(io.BytesIO(bytes(flipped)), check_header=False).verify()
    assert not report.header_ok and report.damaged == {5: "CRC mismatch"}
    with pytest.raises(FormatError, match="header is corrupt"):  # reading needs a header that checks out
        Archive(io.BytesIO(bytes(flipped)))


def test_not_an_archive_and_bad_versions_are_refused():
    with pytest.raises(FormatError, match="not a metacompress archive"):
        Archive(io.BytesIO(b"PK\x03\x04" + bytes(60)))
    data = bytearray(archive_bytes(ArchiveHeader("image", "uint8", 5, True, HASH, None), records(2)))
    data[4] = 9
    with pytest.raises(FormatError, match="archive version 9 is not supported"):
        Archive(io.BytesIO(bytes(data)))
    with pytest.raises(FormatError, match="truncated inside the archive header"):
        Archive(io.BytesIO(bytes(data[:30])))


def test_item_ranges():
    assert parse_item_range("3", 10) == [3]
    assert parse_item_range("0:3,8:", 10) == [0, 1, 2, 8, 9]
    assert parse_item_range("-2:", 10) == [8, 9]
    assert parse_item_range(None, 3) == [0, 1, 2]
    with pytest.raises(UserError, match="item 10 does not exist"):
        parse_item_range("10", 10)
    with pytest.raises(UserError, match="--items expects"):
        parse_item_range("a:b", 10)


# --- creating archives --------------------------------------------------------------------------------

def test_archive_decodes_exactly_what_the_encoder_reconstructed(base, crops, crops_npz, tmp_path):
    out = tmp_path / "crops.mcza"
    summary = create_archive(item_source(crops_npz, base.config.data), base, out, ArchiveSettings(steps=2, shard_size=8))
    assert summary.items == 21 and summary.encoded_items == 21 and not parts_folder(out).exists()
    with Archive(out) as archive:
        assert archive.header.shape == (8, 8, 3) and archive.size == summary.archive_bytes == out.stat().st_size
        for start in range(0, 21, 8):  # shards are encoded as one batch each: do the same by hand
            shard = [Datapoint(crops[i], "uint8") for i in range(start, min(21, start + 8))]
            for offset, result in enumerate(encode_many(shard, base, 5, 2)):
                decoded = archive.datapoint(start + offset, base).values
                np.testing.assert_array_equal(decoded, result.reconstruction)
                np.testing.assert_array_equal(decoded, decode(result.data, base).values)
                assert archive.item(start + offset).record == result.record
    # the archive spends ~6 bytes an item on its index where a file spends 8 on its header
    assert summary.archive_bytes < summary.file_bytes


def test_one_and_two_workers_and_an_interrupted_run_give_the_same_bytes(base, crops_npz, tmp_path):
    source = item_source(crops_npz, base.config.data)
    config = ArchiveSettings(steps=2, shard_size=4)
    one, two, resumed = tmp_path / "one.mcza", tmp_path / "two.mcza", tmp_path / "resumed.mcza"
    create_archive(source, base, one, config, workers=1)
    create_archive(source, base, two, config, workers=2)
    assert one.read_bytes() == two.read_bytes()

    def stop_after_two_shards(stats, seen=[]):
        seen.append(stats.shard)
        if len(seen) == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        create_archive(source, base, resumed, config, on_shard=stop_after_two_shards)
    assert not resumed.exists() and len(list(parts_folder(resumed).glob("shard-*.json"))) == 2
    summary = create_archive(source, base, resumed, config)
    assert summary.encoded_items == 21 - 8  # the two finished shards were not encoded again
    assert resumed.read_bytes() == one.read_bytes()


def test_parts_of_another_run_are_not_mixed_in(base, crops_npz, tmp_path):
    source = item_source(crops_npz, base.config.data)
    out = tmp_path / "a.mcza"
    with pytest.raises(KeyboardInterrupt):
        create_archive(source, base, out, ArchiveSettings(steps=2, shard_size=4),
                       on_shard=lambda stats: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(UserError, match="parts of a different archive run"):
        create_archive(source, base, out, ArchiveSettings(steps=3, shard_size=4))


def test_append_adds_items_after_the_old_ones(base, crops, tmp_path):
    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    np.savez(first, x=crops[:5])
    np.savez(second, x=crops[5:9])
    out = tmp_path / "grow.mcza"
    settings_ = ArchiveSettings(steps=2, shard_size=8)
    create_archive(item_source(first, base.config.data), base, out, settings_)
    with Archive(out) as archive:
        before = [archive.item(i) for i in range(5)]
    summary = create_archive(item_source(second, base.config.data), base, out, settings_, append=True)
    assert summary.items == 9 and summary.added == 4
    expected = encode_many([Datapoint(c, "uint8") for c in crops[5:9]], base, 5, 2)
    with Archive(out) as archive:
        assert archive.verify().ok and [archive.item(i) for i in range(5)] == before
        for i, result in enumerate(expected):
            np.testing.assert_array_equal(archive.datapoint(5 + i, base).values, result.reconstruction)
    wrong = ArchiveHeader("image", "uint8", 6, True, base.hash, None)
    with pytest.raises(UserError, match="do not match"):
        append_to_archive(out, wrong, [])


def test_folders_keep_names_and_per_item_shapes(base, tmp_path):
    photo = read_datapoint(sample_path("photo"), base.config.data).values
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    save_image(folder / "a.png", photo[:8, :8])
    save_image(folder / "sub" / "b.png", photo[:13, :20])
    out = tmp_path / "photos.mcza"
    create_archive(item_source(folder, base.config.data), base, out, ArchiveSettings(steps=1))
    with Archive(out) as archive:
        assert archive.names == ["a.png", "sub/b.png"] and archive.header.shape is None
        assert [archive.item_shape(i) for i in range(2)] == [(8, 8, 3), (13, 20, 3)]
        assert archive.samples() == 64 + 13 * 20


# --- command line -------------------------------------------------------------------------------------

def run_json(args, capsys):
    code = main(args + ["--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1]) if code == 0 else None


def test_cli_create_list_verify_extract(base, base_stem, crops_npz, tmp_path, capsys):
    out = tmp_path / "c.mcza"
    code, created = run_json(["archive", "create", str(crops_npz), "-o", str(out), "--base", str(base_stem),
                              "--steps", "2", "--shard-size", "8", "--no-progress"], capsys)
    assert code == 0 and created["items"] == 21
    assert created["bits_per_sample"] == pytest.approx(8 * out.stat().st_size / (21 * 64))
    code, listed = run_json(["archive", "list", str(out)], capsys)
    assert listed["items"] == 21 and listed["common_shape"] == [8, 8, 3] and len(listed["item_list"]) == 21
    assert main(["archive", "verify", str(out)]) == 0
    code, extracted = run_json(["archive", "extract", str(out), "-o", str(tmp_path / "all.npz"), "--base",
                                str(base_stem), "--no-progress"], capsys)
    with np.load(tmp_path / "all.npz") as npz:
        stacked = npz["items"]
    assert stacked.shape == (21, 8, 8, 3)
    code, _ = run_json(["archive", "extract", str(out), "-o", str(tmp_path / "some"), "--items", "3,10:12",
                        "--base", str(base_stem), "--no-progress"], capsys)
    files = sorted(p.name for p in (tmp_path / "some").iterdir())
    assert files == ["03.png", "10.png", "11.png"]
    np.testing.assert_array_equal(read_datapoint(tmp_path / "some" / "10.png", base.config.data).values, stacked[10])


def test_cli_reports_damaged_items_and_extracts_the_rest(base_stem, crops_npz, tmp_path, capsys):
    out = tmp_path / "d.mcza"
    assert main(["archive", "create", str(crops_npz), "-o", str(out), "--base", str(base_stem), "--steps", "1",
                 "--no-progress"]) == 0
    with Archive(out) as archive:
        offset = archive.offsets[4]
    data = bytearray(out.read_bytes())
    data[offset] ^= 0xFF
    out.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["archive", "verify", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "item 4 (CRC mismatch)" in err and "20 of 21 items are intact" in err and "\n" not in err
    assert main(["archive", "extract", str(out), "-o", str(tmp_path / "x"), "--base", str(base_stem),
                 "--no-progress"]) == 2
    assert "1 damaged item(s) not extracted (4;" in capsys.readouterr().err
    assert len(list((tmp_path / "x").iterdir())) == 20 and not (tmp_path / "x" / "04.png").exists()


def test_cli_refuses_an_existing_output_and_another_base(base_stem, crops_npz, tmp_path, capsys):
    out = tmp_path / "e.mcza"
    args = ["archive", "create", str(crops_npz), "-o", str(out), "--base", str(base_stem), "--steps", "1",
            "--no-progress"]
    assert main(args) == 0
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main(["archive", "extract", str(out), "-o", str(tmp_path / "f")]) == 2  # the bundled base
    assert "was made with base network" in capsys.readouterr().err


def test_torchrun_ranks_write_the_same_archive(base_stem, crops_npz, tmp_path):
    common = ["archive", "create", str(crops_npz), "--base", str(base_stem), "--steps", "2", "--shard-size", "4",
              "--no-progress"]
    assert main(common + ["-o", str(tmp_path / "one.mcza")]) == 0
    ddp = run_torchrun(common + ["-o", str(tmp_path / "two.mcza")])
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert (tmp_path / "two.mcza").read_bytes() == (tmp_path / "one.mcza").read_bytes()


def test_archive_crc_covers_every_byte():
    data = archive_bytes(ArchiveHeader("audio", "float32", 4, False, HASH, None), records(3))
    assert zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little")


def test_cli_list_into_a_closed_pipe_exits_quietly(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "many.mcza"
    path.write_bytes(archive_bytes(ArchiveHeader("image", "uint8", 5, True, HASH, (8, 8, 3)), records(5000, size=3)))
    process = subprocess.Popen([sys.executable, "-m", "metacompress.cli", "archive", "list", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().strip().startswith(b"command")
    process.stdout.close()  # like `| head -1`: 5,000 item lines overflow the pipe after this
    assert process.wait(timeout=60) == 0 and b"Traceback" not in process.stderr.read()
