"""Classical audio codecs, the baselines of thesis Figure 5.13: MP3 (LAME via lameenc) and Opus (libopus
through libsndfile's Ogg container, via soundfile).

Signals are mono float32 arrays in [−1, 1] at ``sample_rate``; each codec writes its format's
real file (``.mp3`` / ``.opus``), so kbps = 8 × file bytes / duration counts what a user stores.
Decoding returns the input's sample rate and the same number of samples as went in. A stream
may be coded at another rate than it was given: at 8 kbps LAME resamples 16 kHz input to 8 kHz
(MPEG-2.5), which is what ``lame -b 8`` does and slightly better than forcing 16 kHz, so the
decoded stream is resampled back to the input's rate (``scipy.signal.resample_poly``, the
exact rational factor, zero-phase) before it is compared with the input. MP3 frames add
encoder delay and padding, which are trimmed by aligning the decoded signal with the input
length (LAME's and the decoder's delays, 1105 samples at the coded rate, are cut off).
"""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile
from scipy.signal import resample_poly

from metacompress.codecs.codec import Codec, Encoded
from metacompress.errors import FormatError, UserError

# LAME's encoder delay (576) + the layer III decoder delay (529), which libsndfile leaves in, in samples
# at the coded rate; measured by cross-correlation on speech at 8 kbps (coded at 8 kHz) and 16–64 kbps.
MP3_DELAY = 1105
OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)  # the rates libopus codes (libsndfile refuses others)
MP3_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)  # MPEG-2 layer III (8 kbps: coded at 8 kHz)


def _check_signal(x: np.ndarray, codec: str) -> np.ndarray:
    if not (isinstance(x, np.ndarray) and x.ndim == 1 and x.size and x.dtype.kind == "f"):
        raise UserError(f"{codec}: expects a non-empty 1-D float signal in [-1, 1], got {getattr(x, 'shape', x)!r}")
    return np.clip(x, -1.0, 1.0)


def _read(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """Decode a whole file with libsndfile: mono float32 samples and the rate they are coded at."""
    try:
        decoded, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    except Exception as exc:  # soundfile.LibsndfileError and friends
        raise FormatError(f"{what} ({exc})") from None
    return (decoded if decoded.ndim == 1 else decoded.mean(axis=1)), int(rate)


def _at_rate(decoded: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``decoded`` (at ``rate``) resampled to ``target`` by the exact rational factor."""
    if rate == target:
        return decoded.astype(np.float32)
    g = math.gcd(rate, target)
    return resample_poly(decoded, target // g, rate // g).astype(np.float32)


def _aligned(decoded: np.ndarray, length: int, delay: int) -> np.ndarray:
    out = decoded[delay:delay + length]
    return np.pad(out, (0, length - out.size)).astype(np.float32)


class _AudioCodec(Codec):
    """Shared by MP3 and Opus: ``compress`` gives the reconstruction aligned to the input's length."""

    modality = "audio"

    def compress(self, x: np.ndarray) -> Encoded:
        data = self.encode(x)
        return Encoded(data, self.decode(data, len(x)))


class Mp3(_AudioCodec):
    name, label, suffix = "mp3", "MP3", ".mp3"

    def __init__(self, kbps: int = 32, sample_rate: int = 16_000):
        if kbps not in MP3_BITRATES:
            raise UserError(f"mp3: bitrate must be one of {MP3_BITRATES} kbps, got {kbps}")
        self.kbps, self.sample_rate = kbps, sample_rate

    def encode(self, x: np.ndarray) -> bytes:
        import lameenc

        pcm = np.round(_check_signal(x, self.name) * 32767).astype("<i2")
        encoder = lameenc.Encoder()
        encoder.set_bit_rate(self.kbps)
        encoder.set_in_sample_rate(self.sample_rate)
        encoder.set_channels(1)
        encoder.set_quality(2)  # LAME -q 2: high-quality search
        return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())

    def decode(self, data: bytes, length: int | None = None) -> np.ndarray:
        """The stream at ``self.sample_rate``: whole, or aligned to the input's ``length`` samples."""
        decoded, rate = _read(data, "mp3: not a valid MP3 stream")
        decoded = _at_rate(decoded, rate, self.sample_rate)
        if length is None:
            return decoded
        return _aligned(decoded, length, round(MP3_DELAY * self.sample_rate / rate))


class Opus(_AudioCodec):
    """Opus in Ogg; the knob is libsndfile's compression level in [0, 1] (0 = highest bitrate)."""

    name, label, suffix = "opus", "Opus", ".opus"

    def __init__(self, level: float = 0.5, sample_rate: int = 16_000):
        if not 0.0 <= level <= 1.0:
            raise UserError(f"opus: compression level must be in [0, 1], got {level}")
        if sample_rate not in OPUS_RATES:
            raise UserError(f"opus: sample rate must be one of {OPUS_RATES} Hz, got {sample_rate}")
        self.level, self.sample_rate = float(level), sample_rate

    def encode(self, x: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        signal = _check_signal(x, self.name)
        with soundfile.SoundFile(buffer, "w", samplerate=self.sample_rate, channels=1, format="OGG",
                                 subtype="OPUS", compression_level=self.level) as f:
            f.write(signal)
        return buffer.getvalue()

    def decode(self, data: bytes, length: int | None = None) -> np.ndarray:
        """The stream at ``self.sample_rate`` (libsndfile decodes Opus at the rate it was given, but a
        file from elsewhere may say otherwise): whole, or aligned to the input's ``length`` samples."""
        decoded, rate = _read(data, "opus: not a valid Ogg/Opus stream")
        decoded = _at_rate(decoded, rate, self.sample_rate)
        return decoded if length is None else _aligned(decoded, length, 0)


CLASSICAL_AUDIO_CODECS = {"mp3": Mp3, "opus": Opus}
