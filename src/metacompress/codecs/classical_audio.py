"""Classical audio codecs, the baselines of thesis Figure 5.13: MP3 (LAME via lameenc) and Opus (libopus
through libsndfile's Ogg container, via soundfile).

Signals are mono float32 arrays in [−1, 1] at ``sample_rate``; each codec writes its format's
real file (``.mp3`` / ``.opus``), so kbps = 8 × file bytes / duration counts what a user stores.
Decoding returns the same number of samples as went in: MP3 frames add encoder delay and
padding, which are trimmed by aligning the decoded signal with the input length (LAME's
and decoder delays, 1105 samples in all, are cut off).
"""

from __future__ import annotations

import io

import numpy as np
import soundfile

from metacompress.codecs.codec import Codec, Encoded
from metacompress.errors import FormatError, UserError

# LAME's encoder delay (576) + the layer III decoder delay (529), which libsndfile leaves in;
# measured by cross-correlation on speech at 16–64 kbps.
MP3_DELAY = 1105
MP3_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)  # MPEG-2 layer III at 16 kHz


def _check_signal(x: np.ndarray, codec: str) -> np.ndarray:
    if not (isinstance(x, np.ndarray) and x.ndim == 1 and x.size and x.dtype.kind == "f"):
        raise UserError(f"{codec}: expects a non-empty 1-D float signal in [-1, 1], got {getattr(x, 'shape', x)!r}")
    return np.clip(x, -1.0, 1.0)


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
        try:
            decoded, _ = soundfile.read(io.BytesIO(data), dtype="float32")
        except Exception as exc:  # soundfile.LibsndfileError and friends
            raise FormatError(f"mp3: not a valid MP3 stream ({exc})") from None
        decoded = decoded if decoded.ndim == 1 else decoded.mean(axis=1)
        if length is None:
            return decoded.astype(np.float32)
        return _aligned(decoded, length, MP3_DELAY)


class Opus(_AudioCodec):
    """Opus in Ogg; the knob is libsndfile's compression level in [0, 1] (0 = highest bitrate)."""

    name, label, suffix = "opus", "Opus", ".opus"

    def __init__(self, level: float = 0.5, sample_rate: int = 16_000):
        if not 0.0 <= level <= 1.0:
            raise UserError(f"opus: compression level must be in [0, 1], got {level}")
        self.level, self.sample_rate = float(level), sample_rate

    def encode(self, x: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        signal = _check_signal(x, self.name)
        with soundfile.SoundFile(buffer, "w", samplerate=self.sample_rate, channels=1, format="OGG",
                                 subtype="OPUS", compression_level=self.level) as f:
            f.write(signal)
        return buffer.getvalue()

    def decode(self, data: bytes, length: int | None = None) -> np.ndarray:
        try:
            decoded, _ = soundfile.read(io.BytesIO(data), dtype="float32")
        except Exception as exc:
            raise FormatError(f"opus: not a valid Ogg/Opus stream ({exc})") from None
        decoded = decoded if decoded.ndim == 1 else decoded.mean(axis=1)
        return decoded if length is None else _aligned(decoded, length, 0)


CLASSICAL_AUDIO_CODECS = {"mp3": Mp3, "opus": Opus}
