"""Issue 15: a fixed-seed fuzzing run of the ``.mcz``/``.mcza`` decoders (``tests/fuzz_harness.py``;
``make fuzz`` runs 100,000 inputs), and a replay of every saved input in ``tests/fuzz_corpus/``."""

import fuzz_harness as fh
import pytest

INPUTS = 10_000
SEED = 15


@pytest.fixture(scope="module")
def corpus():
    return fh.build_corpus(("image", "audio", "volume"))


def test_seeds_decode_whole_and_crc_recomputation_is_exact(corpus):
    """The oracle's ground truth: every seed decodes, and recomputing an intact file's CRCs changes nothing."""
    for target, seeds in corpus.seeds.items():
        assert seeds, target
        for seed in seeds:
            outcome, failure, _, _ = fh.check_input(target, seed.data, seed.base)
            assert failure is None, (seed.name, failure)
            if target == "mcza":
                assert outcome["decoded"] == list(range(len(seed.layout.offsets))) and outcome["verified"], seed.name
                assert fh.recompute_archive_crcs(seed.data) == seed.data
            else:
                assert outcome["decoded"] == [0], seed.name
                key = fh.coinpp.hash_key(seed.base) if target == "mcz-coinpp" else b""
                assert fh.recompute_mcz_crc(seed.data, key) == seed.data
            assert not fh._authentic(target, seed.data, outcome, corpus)
    archive = next(s for s in corpus.seeds["mcza"] if s.layout.offsets)
    changed = archive.data[:archive.layout.offsets[0]] + b"\0" + archive.data[archive.layout.offsets[0] + 1:]
    assert fh._authentic("mcza", changed, {"decoded": [0], "verified": True}, corpus) == [
        "verify() passed a changed archive", "decoded item 0 of a changed archive"]
    assert fh._authentic("mcz-coin", b"x", {"decoded": [0]}, corpus) == ["decoded a changed file"]


def test_fuzzed_decoders_end_in_success_or_format_error(corpus):
    summary = fh.fuzz(corpus, INPUTS, SEED)
    report = fh.format_table(summary) + "".join(
        f"\n{target}: {finding}" for target, stats in summary.items() for finding in stats["findings"][:5])
    assert sum(stats["inputs"] for stats in summary.values()) == INPUTS
    assert set(summary) == set(fh.TARGETS)
    for target, stats in summary.items():
        assert stats["crashes"] == 0, report
        assert stats["hangs"] == 0, report
        assert stats["silent_wrong_decodes"] == 0, report
        assert stats["memory_blowups"] == 0, report
        assert stats["slowest_input_s"] < fh.TIME_LIMIT_S, report
        # the CRC-recomputed third reaches the decoders behind the checksums
        assert stats["crc_recomputed"] > stats["inputs"] // 5 and stats["decoded_ok"] > 0, report


def test_saved_crashing_inputs_now_end_in_success_or_format_error(corpus):
    paths = sorted(fh.CORPUS_DIR.glob("*.bin")) if fh.CORPUS_DIR.is_dir() else []
    assert fh.replay(paths, corpus) == []
