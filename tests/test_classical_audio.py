"""MP3 and Opus baselines: real files, measured bitrates, aligned decodes that improve with rate."""

import io

import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly

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
    for kbps in (8, 16, 32, 64):
        codec = Mp3(kbps)
        data = codec.encode(speech)
        assert data[:3] == b"ID3" or data[0] == 0xFF  # a real MP3 stream
        assert 0.9 * kbps < 8 * len(data) / seconds / 1000 < 1.15 * kbps
        decoded = codec.decode(data, speech.size)
        assert decoded.shape == speech.shape
        quality.append(snr(speech, decoded))
    # aligned and at the right rate: misaligned speech, or 8 kHz played as 16 kHz (the old 8 kbps decode), has SNR < 0
    assert quality[0] > 5 and quality[1] > 10 and quality[0] < quality[1] < quality[2] < quality[3]


def test_mp3_at_8_kbps_is_decoded_at_the_rate_lame_coded():
    """At 8 kbps LAME codes 16 kHz input at 8 kHz; the decode must come back at 16 kHz, aligned, the tone intact."""
    rate, seconds = 16_000, 2
    t = np.arange(rate * seconds) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t + 1)).astype(np.float32)
    codec = Mp3(8, sample_rate=rate)
    data = codec.encode(tone)
    coded_rate, coded_frames = soundfile.info(io.BytesIO(data)).samplerate, soundfile.info(io.BytesIO(data)).frames
    assert coded_rate == 8_000  # the premise: the stream's rate is not the input's
    assert codec.decode(data).size == coded_frames * rate // coded_rate  # the whole stream, at 16 kHz
    decoded = codec.decode(data, tone.size)
    assert decoded.shape == tone.shape and decoded.dtype == np.float32
    # 8 kHz samples read as 16 kHz play an octave up: the strongest component must stay at 440 Hz
    spectrum = np.abs(np.fft.rfft(decoded * np.hanning(decoded.size)))
    assert np.fft.rfftfreq(decoded.size, 1 / rate)[np.argmax(spectrum)] == pytest.approx(440, abs=1)
    # aligned: the cross-correlation with the input peaks at lag 0
    middle = decoded[rate // 4:-rate // 4]
    lags = np.correlate(middle, tone[rate // 4 - 50:tone.size - rate // 4 + 50], "valid")
    assert np.argmax(lags) == 50
    # the expectation: both tones lie below 4 kHz, so an ideal codec at 8 kHz returns them whole (the 16→8→16 kHz
    # round trip alone keeps them to within ~40 dB); a wrong rate or delay gives SNR ≤ 0 dB (≈ −3 dB for an
    # uncorrelated signal of equal power); MP3's own quantization noise at 8 kbps leaves it well above 10 dB
    ideal = resample_poly(resample_poly(tone, 1, 2), 2, 1)
    assert snr(tone, ideal) > 40
    assert 10 < snr(tone, decoded) < snr(tone, ideal)


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
    with pytest.raises(UserError, match="sample rate"):
        Opus(sample_rate=44_100)  # libopus codes 8/12/16/24/48 kHz only
    with pytest.raises(FormatError, match="Opus"):
        Opus().decode(b"not an ogg file")
