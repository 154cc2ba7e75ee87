"""WAV/FLAC audio via soundfile, with polyphase resampling."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from metacompress.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac")


def list_audio(folder: str | os.PathLike) -> list[Path]:
    """WAV/FLAC files anywhere under ``folder`` (recursive), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: audio folder not found")
    paths = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise DataError(f"{folder}: no audio found (expected {', '.join(AUDIO_SUFFIXES)} files)")
    return paths


def load_audio(path: str | os.PathLike, sample_rate: int | None = None,
               mono: bool = True) -> tuple[np.ndarray, int]:
    """Read ``path`` as float32 in [-1, 1]; returns ``(samples, rate)``.

    Shape ``(samples,)`` when ``mono`` (channels averaged), else ``(channels, samples)``.
    With ``sample_rate`` set and different from the file's, the signal is resampled with
    ``scipy.signal.resample_poly`` by the exact rational factor; the result is clipped to
    [-1, 1] (polyphase filtering can overshoot slightly).
    """
    path = Path(path)
    if sample_rate is not None and (int(sample_rate) != sample_rate or sample_rate <= 0):
        raise DataError(f"{path}: invalid target sample rate {sample_rate} "
                        "(expected a positive integer)")
    if not path.is_file():
        raise DataError(f"{path}: audio file not found")
    try:
        with soundfile.SoundFile(path) as f:
            declared, rate = f.frames, f.samplerate
            data = f.read(dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as exc:  # soundfile.LibsndfileError, RuntimeError, ...
        raise DataError(f"{path}: not a readable WAV/FLAC file ({exc})") from None
    if data.shape[0] < declared:
        raise DataError(f"{path}: truncated audio ({data.shape[0]} of {declared} frames)")
    if path.suffix.lower() == ".wav":
        _check_wav_length(path)
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio file holds no samples")
    signal = data.mean(axis=1) if mono else data.T
    if sample_rate is not None and int(sample_rate) != rate:
        g = math.gcd(int(sample_rate), int(rate))
        signal = resample_poly(signal, int(sample_rate) // g, int(rate) // g, axis=-1)
        rate = int(sample_rate)
    signal = np.clip(signal, -1.0, 1.0)
    return np.ascontiguousarray(signal, dtype=np.float32), int(rate)


def _check_wav_length(path: Path) -> None:
    """libsndfile quietly reads a cut-off WAV; compare the RIFF data chunk size with the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # RF64, W64 ...: leave it to libsndfile
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk = f.read(8)
            length = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                available = size - offset - 8
                if length not in (0, 0xFFFFFFFF) and available < length:
                    raise DataError(f"{path}: truncated WAV (data chunk declares {length} bytes, "
                                    f"file holds {available})")
                return
            offset += 8 + length + (length & 1)
