"""MP3 and Opus baselines: real files, measured bitrates, aligned decodes that improve with rate."""

import numpy as np
import pytest

from metacompress.codecs.classical_audio import Mp3, Opus
from metacompress.data import sample_path
from metacompress.data.audio import load_audio
from metacompress.errors import FormatError, UserError


@pytest.fixture(scope="module")
def speech():
    return load_audio(sample_path("speech"), 16_000)[0]  # 2.5 s, 16 kHz


def snr(x, y):
    return 10 * np.log10(np.mean(x ** 2) / np.mean((x - y) ** 2))


def test_mp3_hits_its_bitrate_and_decodes_aligned(speech):
    seconds = speech.size / 16_000
    quality = []
    for kbps in (16, 32, 64):
        codec = Mp3(kbps)
        data = codec.encode(speech)
        assert data[:3] == b"ID3" or data[0] == 0xFF  # a real MP3 stream
        assert 0.9 * kbps < 8 * len(data) / seconds / 1000 < 1.15 * kbps
        decoded = codec.decode(data, speech.size)
        assert decoded.shape == speech.shape
        quality.append(snr(speech, decoded))
    assert quality[0] > 10 and quality[0] < quality[1] < quality[2]  # aligned: misaligned speech has SNR < 0


def test_opus_level_trades_bytes_for_quality(speech):
    files = [Opus(level).encode(speech) for level in (1.0, 0.9)]
    assert all(f[:4] == b"OggS" for f in files) and len(files[0]) < len(files[1])
    decoded = [Opus().decode(f, speech.size) for f in files]
    assert snr(speech, decoded[0]) < snr(speech, decoded[1])


def test_bad_input_is_refused(speech):
    with pytest.raises(UserError, match="bitrate"):
        Mp3(33)
    with pytest.raises(UserError, match="1-D"):
        Mp3().encode(np.zeros((10, 2), np.float32))
    with pytest.raises(FormatError, match="Opus"):
        Opus().decode(b"not an ogg file")
