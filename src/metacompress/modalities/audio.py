"""Audio: mono waveforms in [−1, 1] at the base network's sample rate (thesis §5.3.3).

A base network models one rate and mono, and a COIN++ file stores neither a rate nor a channel
count: the decoded file has the base network's rate and one channel.  So a file to encode at
another rate or with more channels is refused (a one-line ``DataError``) unless the caller
opts in to the conversion (``metacompress encode --resample`` / ``--downmix``) — a user of an
audio codec expects the rate and channels to come back, and a silent change would lose what
is above the network's Nyquist frequency and the stereo image without saying so.  Training
data is converted as before: meta-learning on clips of other rates is the caller's choice.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metacompress.data.audio import AUDIO_SUFFIXES, list_audio, load_audio
from metacompress.errors import DataError
from metacompress.modalities.registry import Modality
from metacompress.modalities.spec import Datapoint, DataSpec

AUDIO_RATE, AUDIO_COORD_SCALE = 16_000, 5.0  # thesis C.3.3


class AudioModality(Modality):
    """WAV/FLAC in, 16-bit PCM WAV or FLAC out, at the network's rate and mono (others are refused unless
    ``read`` is told to resample / downmix)."""

    name = "audio"
    spatial_axes = 1
    input_suffixes = AUDIO_SUFFIXES
    output_suffixes = (".wav", ".flac")
    default_suffix = ".wav"
    default_patch = (800,)  # thesis C.3: 200–1600 samples
    stacked_channel_axis = False
    metrics = ("psnr", "snr")

    def read(self, path: Path, spec: DataSpec, time_index: int | None = None, *, resample: bool = False,
             downmix: bool = False) -> Datapoint:
        """``path`` as the base network models it; a file at another rate than ``spec.sample_rate`` needs
        ``resample``, one of several channels ``downmix`` (their mean), else it is refused."""
        return self.read_converting(path, spec, resample=resample, downmix=downmix)[0]

    def read_converting(self, path: Path, spec: DataSpec, time_index: int | None = None, *, resample: bool = False,
                        downmix: bool = False) -> tuple[Datapoint, str | None]:
        """``read``, and what was converted (e.g. ``"44100 Hz stereo → 16000 Hz mono"``), or None."""
        signal, rate = load_audio(path, mono=False)  # (channels, samples) at the file's own rate
        channels, target = signal.shape[0], spec.sample_rate or rate
        if (rate != target and not resample) or (channels > 1 and not downmix):
            flags = " ".join(flag for flag, needed in (("--resample", rate != target), ("--downmix", channels > 1))
                             if needed)
            raise DataError(f"{path}: {_layout(rate, channels)} audio, but the base network codes {_layout(target, 1)} "
                            f"and a .mcz file keeps neither rate nor channels; `metacompress encode {flags}` "
                            f"converts it (the decoded file is then {_layout(target, 1)}), or convert it yourself")
        if rate == target and channels == 1:
            return Datapoint(signal[0][:, None], "float32"), None
        samples, _ = load_audio(path, sample_rate=target)  # the channels' mean, resampled by the exact ratio
        return Datapoint(samples[:, None], "float32"), f"{_layout(rate, channels)} → {_layout(target, 1)}"

    def encode_file(self, point: Datapoint, spec: DataSpec, suffix: str) -> bytes:
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, np.clip(point.values[:, 0], -1.0, 1.0), spec.sample_rate,
                        format="FLAC" if suffix == ".flac" else "WAV", subtype="PCM_16")
        return buffer.getvalue()

    def training_arrays(self, path: Path, spec: DataSpec) -> Iterator[np.ndarray]:
        """Every clip under ``path``, mixed down to mono and resampled to the network's rate."""
        for p in list_audio(path) if path.is_dir() else [path]:
            yield load_audio(p, sample_rate=spec.sample_rate)[0][:, None]

    def new_spec(self, patch, source, variables, extra) -> DataSpec:
        return DataSpec("audio", 1, self.check_patch(patch or self.default_patch), coord_scale=AUDIO_COORD_SCALE,
                        value_range=((-1.0, 1.0),), sample_rate=AUDIO_RATE)


def _layout(rate: int, channels: int) -> str:
    return f"{rate} Hz " + {1: "mono", 2: "stereo"}.get(channels, f"{channels}-channel")
