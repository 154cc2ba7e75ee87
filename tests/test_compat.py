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
from metacompress.inr.base_network import DEFAULT_BASE, load_base

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((ROOT / "tests" / "compat" / "expected.json").read_text())


@pytest.fixture(scope="module")
def base():
    loaded = load_base(DEFAULT_BASE)
    assert loaded.hash == EXPECTED["base"]  # the shipped base network kept its hash
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
