"""`archive create` under misuse: concurrent runs, a killed parent, bad options, unstorable file names."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest


from metacompress.cli import main
from metacompress.codecs.archive import Archive
from metacompress.data import sample_path
from metacompress.modalities.files import read_datapoint
from metacompress.data.images import save_image
from metacompress.modalities.item_sources import MAX_NAME_BYTES, item_source
from metacompress.dataset_archive import ArchiveSettings, create_archive, lock_path, parts_folder
from metacompress.errors import DataError, UserError


@pytest.fixture(scope="module")
def base(tiny_image_base):
    return tiny_image_base


@pytest.fixture(scope="module")
def base_stem(tiny_image_base_stem):
    return tiny_image_base_stem


@pytest.fixture(scope="module")
def photo(base):
    return read_datapoint(sample_path("photo"), base.config.data).values


@pytest.fixture
def crops_npz(photo, tmp_path):
    path = tmp_path / "crops.npz"
    np.savez(path, images=np.stack([photo[3 * i:3 * i + 8, 5 * i:5 * i + 8] for i in range(6)]))
    return path


def nothing_written(out):
    return not out.exists() and not parts_folder(out).exists() and not lock_path(out).exists()


# --- 1. one writer per output -------------------------------------------------------------------------

def test_a_second_run_to_the_same_output_is_refused_while_the_first_runs(base, crops_npz, tmp_path):
    source = item_source(crops_npz, base.config.data)
    out, refusals = tmp_path / "a.mcza", []

    def meanwhile(stats):  # a second run, started while the first is encoding
        assert lock_path(out).exists()
        with pytest.raises(UserError) as refused:
            create_archive(source, base, out, ArchiveSettings(steps=1, shard_size=2))
        refusals.append(str(refused.value))
    summary = create_archive(source, base, out, ArchiveSettings(steps=1, shard_size=2), on_shard=meanwhile)
    assert refusals == [f"{out}: another archive create/append is writing it; wait for it or choose another output"] * 3
    assert summary.items == 6 and not parts_folder(out).exists() and not lock_path(out).exists()
    with Archive(out) as archive:
        assert archive.count == 6 and archive.verify().ok


def test_a_run_is_refused_before_making_anything_while_another_process_holds_the_output(base_stem, crops_npz,
                                                                                       tmp_path, capsys):
    out = tmp_path / "b.mcza"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys
        fd = os.open({str(lock_path(out))!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("locked", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["archive", "create", str(crops_npz), "-o", str(out), "--base", str(base_stem), "--steps", "1",
                "--no-progress"]
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "another archive create/append is writing it" in err and "\n" not in err
        assert not out.exists() and not parts_folder(out).exists()
    finally:
        holder.communicate("", timeout=30)
    assert lock_path(out).exists()  # left behind as by a killed run: no obstacle once nobody holds it
    assert main(args) == 0 and not parts_folder(out).exists() and not lock_path(out).exists()
    with Archive(out) as archive:
        assert archive.count == 6


def test_an_interrupted_run_releases_the_output(base, crops_npz, tmp_path):
    source = item_source(crops_npz, base.config.data)
    out = tmp_path / "c.mcza"

    def interrupt(stats):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        create_archive(source, base, out, ArchiveSettings(steps=1, shard_size=2), on_shard=interrupt)
    assert parts_folder(out).exists() and not lock_path(out).exists()
    assert create_archive(source, base, out, ArchiveSettings(steps=1, shard_size=2)).encoded_items == 4


# --- 2. workers die with their parent ----------------------------------------------------------------

WORKER_SCRIPT = """
import os
import sys
from pathlib import Path

from metacompress.modalities.item_sources import ItemSource, item_source
from metacompress.dataset_archive import ArchiveSettings, create_archive
from metacompress.inr.base_network import load_base


class MarkingSource(ItemSource):
    \"\"\"Leaves a file named after the loading process as each item is loaded (in the workers).\"\"\"

    def __init__(self, inner, marks):
        self.inner, self.marks = inner, marks
        self.path, self.names, self.fingerprint = inner.path, inner.names, inner.fingerprint

    def load(self, i):
        (self.marks / f"{os.getpid()}-{i}").touch()
        return self.inner.load(i)


if __name__ == "__main__":
    npz, stem, out, marks = sys.argv[1:]
    base = load_base(stem)
    source = MarkingSource(item_source(npz, base.config.data), Path(marks))
    # two shards of 8 items of 32x32 pixels and 10,000 steps each: tens of seconds per shard
    create_archive(source, base, Path(out), ArchiveSettings(steps=10_000, shard_size=8), workers=2)
"""


def process_state(pid):
    """The /proc state letter of ``pid``, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with their parent on Linux only")
def test_killing_the_parent_kills_its_workers(base_stem, photo, tmp_path):
    npz, marks, script = tmp_path / "big.npz", tmp_path / "marks", tmp_path / "make_archive.py"
    np.savez(npz, images=np.stack([photo[2 * i:2 * i + 32, 3 * i:3 * i + 32] for i in range(16)]))
    marks.mkdir()
    script.write_text(WORKER_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    parent = subprocess.Popen([sys.executable, str(script), str(npz), str(base_stem), str(tmp_path / "big.mcza"),
                               str(marks)], env=env, stderr=subprocess.PIPE)
    workers = set()
    try:
        deadline = time.monotonic() + 180
        while len(workers) < 2:  # both workers have started on their shard
            assert parent.poll() is None, parent.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the workers did not start"
            workers = {int(mark.name.split("-")[0]) for mark in marks.iterdir()}
            time.sleep(0.1)
        time.sleep(0.5)
        assert all(parent_of(pid) == parent.pid for pid in workers)
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(process_state(pid) not in (None, "Z") for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {pid: process_state(pid) for pid in workers} == {pid: process_state(pid) for pid in workers
                                                                if process_state(pid) in (None, "Z")}, \
            "workers outlived their parent"
    finally:
        parent.kill()
        parent.wait(timeout=30)
        for pid in workers:  # orphans of a failed run (ours: they loaded our items)
            if process_state(pid) not in (None, "Z"):
                os.kill(pid, signal.SIGKILL)


# --- 3. options are checked before anything is made ---------------------------------------------------

@pytest.mark.parametrize("option", [{"bits": 0}, {"bits": 9}, {"bits": True}, {"bits": 5.0}, {"steps": -5},
                                    {"steps": 10_001}, {"steps": 2.5}, {"shard_size": 0}, {"shard_size": -3},
                                    {"entropy": "no"}, {"entropy": 1}])
def test_impossible_settings_are_refused_when_made(option):
    with pytest.raises(UserError, match=r"^(--\S+ must|entropy coding)"):
        ArchiveSettings(**option)


def test_bad_options_leave_nothing_on_disk(base, base_stem, crops_npz, tmp_path, capsys):
    out = tmp_path / "d.mcza"
    for bad in (["--steps", "-5"], ["--shard-size", "0"], ["--bits", "12"], ["--workers", "0"]):
        capsys.readouterr()
        assert main(["archive", "create", str(crops_npz), "-o", str(out), "--base", str(base_stem),
                     "--no-progress"] + bad) == 2, bad
        err = capsys.readouterr().err.strip()
        assert bad[0] in err and "\n" not in err
        assert nothing_written(out), bad
    source = item_source(crops_npz, base.config.data)
    for workers in (0, -1, 1.5):
        with pytest.raises(UserError, match="--workers must be"):
            create_archive(source, base, out, ArchiveSettings(steps=1), workers=workers)
        assert nothing_written(out)
    supported = set(base.config.codes.symbol_counts)
    unsupported = next(b for b in range(1, 9) if b not in supported) if len(supported) < 8 else None
    if unsupported is not None:
        with pytest.raises(UserError, match="latent statistics"):
            create_archive(source, base, out, ArchiveSettings(bits=unsupported, steps=1))
        assert nothing_written(out)


# --- 4. item names an archive can store ---------------------------------------------------------------

@pytest.fixture
def photo_png(photo, tmp_path):
    path = tmp_path / "photo.png"
    save_image(path, photo[:8, :8])
    return path.read_bytes()


def test_a_file_name_that_is_not_utf8_is_refused_by_name(base, base_stem, photo_png, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(photo_png)
    try:
        with open(os.fsencode(folder) + b"/b\xff.png", "wb") as f:
            f.write(photo_png)
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    with pytest.raises(DataError, match=r"b\\xff\.png: file name is not valid UTF-8; rename it$"):
        item_source(folder, base.config.data)
    out = tmp_path / "e.mcza"
    capsys.readouterr()
    assert main(["archive", "create", str(folder), "-o", str(out), "--base", str(base_stem), "--steps", "1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "b\\xff.png: file name is not valid UTF-8" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and nothing_written(out)


def test_file_names_with_line_breaks_are_refused(base, photo_png, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(photo_png)
    (folder / "two\nlines.png").write_bytes(photo_png)
    with pytest.raises(DataError, match=r"two\\nlines\.png: file name holds a line break"):
        item_source(folder, base.config.data)


def test_names_longer_than_the_reader_accepts_are_refused(base, photo_png, tmp_path):
    folder = tmp_path / "photos"
    deep = folder / "/".join(["d" * 200] * 5)  # a 1,004-byte folder path
    deep.mkdir(parents=True)
    (deep / "a.png").write_bytes(photo_png)  # 1,010 bytes: fine
    assert len(item_source(folder, base.config.data).names[0].encode()) == 1010 <= MAX_NAME_BYTES
    (deep / ("é" * 20 + ".png")).write_bytes(photo_png)  # 1,049 bytes
    with pytest.raises(DataError, match=rf"would be 1049 bytes long \(at most {MAX_NAME_BYTES}\)"):
        item_source(folder, base.config.data)
