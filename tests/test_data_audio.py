import numpy as np
import pytest
import soundfile

from metacompress.data import list_audio, load_audio
from metacompress.errors import DataError


def rms(x):
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


def test_fsdd_resampled_to_16k(data_file):
    path = data_file("audio/fsdd_8k/recordings/0_george_0.wav")
    x8, rate8 = load_audio(path)
    x16, rate16 = load_audio(path, sample_rate=16_000)
    assert rate8 == 8_000 and rate16 == 16_000
    assert x8.dtype == np.float32 and x16.dtype == np.float32 and x16.ndim == 1
    assert abs(len(x16) - 2 * len(x8)) <= 1
    assert rms(x16) == pytest.approx(rms(x8), rel=0.05)
    assert np.abs(x16).max() <= 1.0
    # same rate requested: untouched
    same, _ = load_audio(path, sample_rate=8_000)
    assert np.array_equal(same, x8)


def test_fsdd_listing(data_file):
    paths = list_audio(data_file("audio/fsdd_8k/recordings"))
    assert len(paths) == 3_000 and paths == sorted(paths)


def test_librispeech_flac(data_file):
    paths = list_audio(data_file("audio/librispeech_test_clean"))  # recursive
    assert len(paths) == 4 and all(p.suffix == ".flac" for p in paths)
    x, rate = load_audio(paths[0])
    assert rate == 16_000 and x.ndim == 1 and len(x) == soundfile.info(paths[0]).frames
    assert 0 < np.abs(x).max() <= 1.0


def test_stereo_and_odd_ratio(tmp_path):
    t = np.arange(44_100) / 44_100
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 44_100, subtype="PCM_16")
    mono, rate = load_audio(path)
    assert rate == 44_100 and mono.shape == (44_100,)
    assert rms(mono) == pytest.approx(rms((left + right) / 2), rel=1e-3)
    both, _ = load_audio(path, mono=False)
    assert both.shape == (2, 44_100)
    down, rate = load_audio(path, sample_rate=16_000, mono=False)  # 160/441
    assert rate == 16_000 and down.shape == (2, 16_000)
    assert rms(down[0]) == pytest.approx(rms(left), rel=0.02)


def test_audio_errors(tmp_path, expect_data_error):
    path = tmp_path / "fake.wav"
    path.write_text("not audio")
    with expect_data_error(path, match="not a readable WAV/FLAC"):
        load_audio(path)
    with pytest.raises(DataError, match="not found"):
        load_audio(tmp_path / "missing.flac")
    with pytest.raises(DataError, match="sample rate"):
        load_audio(path, sample_rate=0)
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "empty" / "deeper" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no audio"):
        list_audio(tmp_path / "empty")
    assert list_audio(tmp_path) == [path]  # found even though it is not audio inside
    with pytest.raises(DataError, match="not found"):
        list_audio(tmp_path / "nope")


def test_truncated_wav(tmp_path, expect_data_error):
    """libsndfile reads a cut-off WAV without complaint; the RIFF size check catches it."""
    path = tmp_path / "tone.wav"
    soundfile.write(path, np.zeros(8_000, np.float32), 8_000, subtype="PCM_16")
    assert load_audio(path)[0].shape == (8_000,)
    path.write_bytes(path.read_bytes()[:5_000])
    with expect_data_error(path, match="truncated WAV"):
        load_audio(path)


def test_truncated_real_flac(data_file, tmp_path, expect_data_error):
    src = data_file("audio/librispeech_test_clean/1089/134691/1089-134691-0000.flac")
    path = tmp_path / src.name
    path.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with expect_data_error(path):
        load_audio(path)
