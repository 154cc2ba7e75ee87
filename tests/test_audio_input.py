"""Audio the base network does not model (another rate, several channels): refused in one line, or converted
on request (``encode --resample / --downmix``) and said so — never silently downmixed and resampled."""

import json

import numpy as np
import pytest
import soundfile
from conftest import tiny_base

from metacompress.cli import main
from metacompress.data import load_audio, sample_path
from metacompress.errors import DataError
from metacompress.inr.base_network import save_base
from metacompress.modalities.audio import AudioModality
from metacompress.modalities.files import read_datapoint

SPEC_RATE = 16_000


@pytest.fixture(scope="module")
def base_stem(tmp_path_factory):
    """A tiny 16 kHz mono audio base network, saved for the CLI's --base."""
    base = tiny_base("audio", tmp_path_factory.mktemp("audio-base"))
    assert base.config.data.sample_rate == SPEC_RATE and base.config.data.channels == 1
    stem = tmp_path_factory.mktemp("audio-base-saved") / "tiny-audio"
    save_base(stem, base)
    return stem, base.config.data


def tones(rate, seconds=0.5, channels=2):
    """``channels`` different tones below 4 kHz at ``rate``: (samples, channels) float32."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.4 * np.sin(2 * np.pi * f * t) for f in (440, 660, 880)[:channels]], axis=1).astype(np.float32)


def write(path, rate, channels):
    soundfile.write(path, tones(rate, channels=channels), rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize("rate,channels,layout,flags", [
    (16_000, 2, "16000 Hz stereo", "--downmix"),
    (44_100, 1, "44100 Hz mono", "--resample"),
    (44_100, 2, "44100 Hz stereo", "--resample --downmix"),
    (8_000, 3, "8000 Hz 3-channel", "--resample --downmix"),
])
def test_other_rates_and_channels_are_refused_in_one_line(base_stem, tmp_path, rate, channels, layout, flags):
    _, spec = base_stem
    path = write(tmp_path / "clip.wav", rate, channels)
    with pytest.raises(DataError) as refused:
        read_datapoint(path, spec)  # what `archive create` and every caller without options gets
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and layout in message
    assert "16000 Hz mono" in message and f"metacompress encode {flags}`" in message
    # opting in to only part of the conversion is not enough
    if rate != SPEC_RATE and channels > 1:
        for partial in ({"resample": True}, {"downmix": True}):
            with pytest.raises(DataError, match=layout):
                AudioModality().read(path, spec, **partial)


def test_the_networks_own_rate_and_mono_read_unchanged(base_stem):
    _, spec = base_stem
    point, converted = AudioModality().read_converting(sample_path("speech"), spec)
    assert converted is None and point.dtype == "float32"
    np.testing.assert_array_equal(point.values[:, 0], load_audio(sample_path("speech"), SPEC_RATE)[0])
    # the options change nothing when there is nothing to convert
    same = AudioModality().read(sample_path("speech"), spec, resample=True, downmix=True)
    np.testing.assert_array_equal(same.values, point.values)


def test_conversion_on_request_is_the_channel_mean_at_the_network_rate(base_stem, tmp_path):
    _, spec = base_stem
    stereo = write(tmp_path / "stereo.wav", 16_000, 2)
    point, converted = AudioModality().read_converting(stereo, spec, downmix=True)
    pcm = soundfile.read(stereo, dtype="float32")[0]
    assert converted == "16000 Hz stereo → 16000 Hz mono"
    np.testing.assert_allclose(point.values[:, 0], pcm.mean(axis=1), atol=1e-7)

    fast = write(tmp_path / "fast.wav", 44_100, 1)
    point, converted = AudioModality().read_converting(fast, spec, resample=True)
    assert converted == "44100 Hz mono → 16000 Hz mono"
    assert point.values.shape == (round(0.5 * 44_100 * 16_000 / 44_100), 1) == (8_000, 1)
    # the 440 Hz tone keeps its pitch: 8000 samples at 16 kHz hold 220 periods
    spectrum = np.abs(np.fft.rfft(point.values[:, 0] * np.hanning(8_000)))
    assert np.fft.rfftfreq(8_000, 1 / 16_000)[np.argmax(spectrum)] == pytest.approx(440, abs=2)


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_cli_refuses_stereo_44k_naming_the_file_then_converts_on_request(base_stem, tmp_path, capsys):
    stem, _ = base_stem
    clip = write(tmp_path / "clip.wav", 44_100, 2)
    out = tmp_path / "clip.mcz"
    code, _, err = run_cli(["encode", clip, "-o", out, "--base", stem, "--steps", "1", "--json"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(clip) in err and "44100 Hz stereo" in err and "16000 Hz mono" in err and "--resample --downmix" in err
    assert not out.exists()

    code, stdout, err = run_cli(["encode", clip, "-o", out, "--base", stem, "--steps", "1", "--resample",
                                 "--downmix", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["converted"] == "44100 Hz stereo → 16000 Hz mono" and summary["shape"] == [8_000, 1]
    assert "converted" in stdout.split("{")[0]  # the table says so too, not only the JSON
    code, _, err = run_cli(["decode", out, "-o", tmp_path / "back.wav", "--base", stem], capsys)
    assert code == 0, err
    info = soundfile.info(tmp_path / "back.wav")
    assert info.samplerate == 16_000 and info.channels == 1 and info.frames == 8_000


def test_cli_conversion_options_are_for_audio_only(tiny_image_base_stem, tmp_path, capsys):
    code, _, err = run_cli(["encode", sample_path("photo"), "-o", tmp_path / "p.mcz", "--base", tiny_image_base_stem,
                            "--resample"], capsys)
    assert code == 2 and "are for audio" in err and not (tmp_path / "p.mcz").exists()


def test_a_16k_mono_clip_needs_no_option(base_stem, tmp_path, capsys):
    stem, _ = base_stem
    code, stdout, err = run_cli(["encode", sample_path("speech"), "-o", tmp_path / "s.mcz", "--base", stem,
                                 "--steps", "1", "--json"], capsys)
    assert code == 0, err
    assert "converted" not in json.loads(stdout.strip().splitlines()[-1])
