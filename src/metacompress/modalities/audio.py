"""Audio: mono waveforms in [−1, 1] at the base network's sample rate (thesis §5.3.3)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metacompress.data.audio import AUDIO_SUFFIXES, list_audio, load_audio
from metacompress.modalities.registry import Modality
from metacompress.modalities.spec import Datapoint, DataSpec

AUDIO_RATE, AUDIO_COORD_SCALE = 16_000, 5.0  # thesis C.3.3


class AudioModality(Modality):
    """WAV/FLAC in, 16-bit PCM WAV or FLAC out; resampled to the network's rate on reading."""

    name = "audio"
    spatial_axes = 1
    input_suffixes = AUDIO_SUFFIXES
    output_suffixes = (".wav", ".flac")
    default_suffix = ".wav"
    default_patch = (800,)  # thesis C.3: 200–1600 samples
    stacked_channel_axis = False
    metrics = ("psnr", "snr")

    def read(self, path: Path, spec: DataSpec, time_index: int | None = None) -> Datapoint:
        samples, _ = load_audio(path, sample_rate=spec.sample_rate)
        return Datapoint(samples[:, None], "float32")

    def encode_file(self, point: Datapoint, spec: DataSpec, suffix: str) -> bytes:
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, np.clip(point.values[:, 0], -1.0, 1.0), spec.sample_rate,
                        format="FLAC" if suffix == ".flac" else "WAV", subtype="PCM_16")
        return buffer.getvalue()

    def training_arrays(self, path: Path, spec: DataSpec) -> Iterator[np.ndarray]:
        for p in list_audio(path) if path.is_dir() else [path]:
            yield load_audio(p, sample_rate=spec.sample_rate)[0][:, None]

    def new_spec(self, patch, source, variables, extra) -> DataSpec:
        return DataSpec("audio", 1, self.check_patch(patch or self.default_patch), coord_scale=AUDIO_COORD_SCALE,
                        value_range=((-1.0, 1.0),), sample_rate=AUDIO_RATE)
