"""Files written before the typed codec core (issue 16) decode to the same values after it.

``tests/compat/expected.json`` holds SHA-256 digests of what the code at 3fb7c3c decoded from the
committed COIN files of ``bench image-rd`` and from a COIN++ file and an archive it wrote with the
shipped photo base network (made by running that commit's code; decoding is bit-exact on the
machine class that encoded, see docs/layout.md).
"""

import hashlib
import io
import json
from pathlib import Path

import pytest

from metacompress.codecs.archive import Archive
from metacompress.codecs.codec import decode_mcz
from metacompress.cli import main
from metacompress.inr.base_network import bundled_bases, load_base
from metacompress.modalities.registry import modality

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((ROOT / "tests" / "compat" / "expected.json").read_text())


@pytest.fixture(scope="module")
def base():
    stems = [stem for stem, digest in bundled_bases() if digest == EXPECTED["base"]]
    assert stems  # the base network these files were made with is still bundled
    loaded = load_base(stems[0])
    assert loaded.hash == EXPECTED["base"]  # and kept its hash
    return loaded


def digest(values) -> str:
    return hashlib.sha256(values.tobytes()).hexdigest()


@pytest.mark.parametrize("path", [p for p in EXPECTED["sha256_of_decoded"] if p.endswith(".mcz")])
def test_old_mcz_files_decode_to_the_same_values(path, base):
    codec, point = decode_mcz((ROOT / path).read_bytes(), path, base=base)
    assert codec in ("coin", "coinpp")
    assert digest(point.values) == EXPECTED["sha256_of_decoded"][path]


def test_an_old_archive_decodes_to_the_same_values(base):
    path = "tests/compat/photo-crops.mcza"
    with Archive(io.BytesIO((ROOT / path).read_bytes())) as archive:
        assert [digest(archive.datapoint(i, base).values) for i in range(archive.count)] == \
            EXPECTED["sha256_of_decoded"][path]


def test_the_cli_finds_the_bundled_base_an_old_file_and_archive_were_made_with(base, tmp_path, capsys):
    """No --base: decoding picks the bundled base network by the hash the file names, so files made
    with an older default base still decode after the default changed."""
    path = "tests/compat/photo-crop-coinpp.mcz"
    assert main(["decode", str(ROOT / path), "-o", str(tmp_path / "crop.png")]) == 0
    spec = base.config.data
    assert digest(modality("image").read(tmp_path / "crop.png", spec).values) == EXPECTED["sha256_of_decoded"][path]
    archive = "tests/compat/photo-crops.mcza"
    assert main(["archive", "extract", str(ROOT / archive), "-o", str(tmp_path / "crops.npz")]) == 0
    import numpy as np

    with np.load(tmp_path / "crops.npz") as stacked:
        values = next(iter(stacked.values()))
    assert [digest(v) for v in values] == EXPECTED["sha256_of_decoded"][archive]
    capsys.readouterr()
