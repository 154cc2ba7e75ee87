"""The five test settings of ``bench coinpp-rd``: data, rate and quality measures, classical baselines."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from metacompress.codecs.classical import CLASSICAL_IMAGE_CODECS, Jpeg, Jpeg2000
from metacompress.codecs.classical_audio import Mp3, Opus
from metacompress.codecs.coinpp import Datapoint, encode_many, fit_datapoints, quantize_and_pack
from metacompress.data.audio import list_audio, load_audio
from metacompress.data.cifar import load_cifar_npz
from metacompress.modalities.sphere import globe_description
from metacompress.data.globes import load_globe
from metacompress.data.images import list_images, load_image
from metacompress.data.volumes import load_volume
from metacompress.metrics import ms_ssim, psnr, rmse, snr_db

# Knob settings of the classical sweeps (each gives one point: mean rate, mean quality).
IMAGE_SWEEPS = {"jpeg": (5, 10, 20, 35, 50, 70, 90), "jpeg2000": (150.0, 80.0, 40.0, 20.0, 10.0, 5.0),
                "webp": (5, 10, 20, 35, 50, 70, 90), "avif": (5, 15, 30, 45, 60, 75, 90),
                "heic": (5, 15, 30, 45, 60, 75, 90), "jxl": (5, 15, 30, 45, 60, 75, 90)}
HELD_OUT_PHOTOS = ("108005",)  # CBSD68 source of the bundled sample photo.png
IMAGE_CODECS = ("jpeg", "jpeg2000", "webp", "avif", "heic", "jxl")
LABELS = {name: codec.label for name, codec in CLASSICAL_IMAGE_CODECS.items()} | {
    "mp3": "MP3", "opus": "Opus", "jpeg2000 per slice": "JPEG 2000 per slice"}

# Official COIN++ results (thesis Figures 5.9 and 5.12), rate in bpp of the latents.
REFERENCES = {
    "cifar10": {"COIN++ (thesis)": {"rate": [0.549, 1.099, 1.647, 2.195, 3.294], "psnr": [24.22, 27.03, 28.90, 30.45, 32.42]},
                "BPG (thesis)": {"rate": [1.0, 1.875], "psnr": [27.11, 31.97]}},
    "kodak": {"COIN++ (thesis)": {"rate": [0.067, 0.266, 0.537], "psnr": [23.68, 26.14, 27.80]}},
}


def save_sheet(fig, axes, path: Path) -> None:
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(path, dpi=110)


def mean_where_defined(values) -> float | None:
    """The mean, or None when any value is None (MS-SSIM of images under 161 pixels a side)."""
    values = list(values)
    return None if any(v is None for v in values) else statistics.fmean(values)


def training_photos(root: Path, with_paths: bool = False) -> list:
    """The training photos (``photos/``), less the one the bundled demo photo is cut from; with
    ``with_paths``, as (path, image) pairs."""
    paths = [p for p in list_images(root / "photos") if p.stem not in HELD_OUT_PHOTOS]
    return [(p, load_image(p)) for p in paths] if with_paths else [load_image(p) for p in paths]


class Task:
    """A test setting: ``train`` (path or datapoints), ``tests`` [(name, Datapoint)], measures and baselines."""

    name = modality = title = ""
    rate_unit, rate_label = "bpp", "bits per pixel (whole file)"
    quality_key, quality_label = "psnr", "PSNR (dB)"
    group_size = 1
    extra: dict | None = None
    # the RD result files (bench/rd_results.py): rate key, {RD quality key: key of our records}, BD-rate anchors
    rd_rate_key = "bpp"
    rd_qualities = {"psnr": "psnr"}
    bd_anchors: tuple[str, ...] = ()

    def __init__(self, root: Path, limit: int | None, **options):
        for key, value in options.items():  # profile options: Kodak images, volume crop
            setattr(self, key, value)
        self.root = root
        self.reference = REFERENCES.get(self.name, {})
        self.tests: list[tuple[str, Datapoint]] = self.load_tests()[:limit]
        self.train = self.load_train()

    def describe(self) -> dict:
        return {"name": self.name, "test_datapoints": [n for n, _ in self.tests], "rate_unit": self.rate_unit}

    def batches(self, limit: int | None = None):
        tests = self.tests[:limit]
        for i in range(0, len(tests), self.group_size):
            yield tests[i:i + self.group_size]

    def samples(self, point: Datapoint) -> int:
        return math.prod(point.values.shape[:-1])

    def rate(self, nbytes: int, point: Datapoint) -> float:
        return 8 * nbytes / self.samples(point)

    def dataset_rate(self, nbytes: int, points: list[Datapoint]) -> float:
        """The rate of ``nbytes`` storing all of ``points`` (an archive): bits over all their samples."""
        return 8 * nbytes / sum(self.samples(p) for p in points)

    def extra_metrics(self, reconstructions, points, sizes) -> dict:
        return {}

    def sweep(self, codecs: dict[str, list], measure) -> dict:
        """Each classical codec at each setting over every test datapoint: the mean of each of
        ``measure(codec, point)``'s numbers (rate, quality, time), one point per setting."""
        out = {}
        for name, settings in codecs.items():
            points = []
            for setting, codec in settings:
                measured = [measure(codec, point) for _, point in self.tests]
                points.append({"setting": setting} | {k: mean_where_defined(m[k] for m in measured) for k in measured[0]})
            out[name] = sorted(points, key=lambda p: p["rate"])
        return out

    def coin(self, *args) -> dict:
        return {}


class ImageTask(Task):
    modality = "image"
    sheet_count = 4
    rd_qualities = {"psnr-rgb": "psnr", "ms-ssim-rgb": "ms-ssim"}
    bd_anchors = ("jpeg", "webp")

    def classical(self) -> dict:
        def measure(codec, point):
            started = time.perf_counter()
            data = codec.encode(point.values)
            seconds = time.perf_counter() - started
            decoded = np.broadcast_to(codec.decode(data), point.values.shape)  # a grey-looking image may come back with one channel
            return {"rate": self.rate(len(data), point), "psnr": psnr(point.values, decoded),
                    "ms-ssim": ms_ssim(point.values, decoded), "encode_time_per_datapoint_s": seconds}

        codecs = {name: [(v, CLASSICAL_IMAGE_CODECS[name](**{CLASSICAL_IMAGE_CODECS[name].knob.name: v}))
                         for v in IMAGE_SWEEPS[name]] for name in IMAGE_CODECS}
        return self.sweep(codecs, measure)

    def extra_metrics(self, reconstructions, points, sizes) -> dict:
        """MS-SSIM (None for images under 161 pixels a side, e.g. CIFAR-10)."""
        return {"ms-ssim": mean_where_defined(ms_ssim(p.values, r) for r, p in zip(reconstructions, points))}

    def sheet(self, base, steps: int, path: Path) -> None:
        """Originals, COIN++ at 3 and 6 bits, and JPEG at about the same file size."""
        group = [p for _, p in self.tests[:self.sheet_count]]
        rows = [("original", [p.values for p in group])]
        fitted = fit_datapoints(group, base, steps)
        for bits in (3, 6):
            results = quantize_and_pack(fitted, base, bits)
            rows.append((f"COIN++ {bits} bits", [r.reconstruction for r in results],
                         [f"{self.rate(len(r.data), p):.2f} bpp {r.psnr:.1f} dB" for r, p in zip(results, group)]))
        fig = Figure(figsize=(2.4 * len(group), 2.5 * len(rows)), layout="tight")
        axes = fig.subplots(len(rows), len(group), squeeze=False)
        for r, row in enumerate(rows):
            for c, image in enumerate(row[1]):
                ax = axes[r][c]
                ax.imshow(image if image.shape[-1] == 3 else image[..., 0], cmap="gray", interpolation="nearest")
                ax.set_title(row[0] if len(row) == 2 else f"{row[0]}\n{row[2][c]}", fontsize=7)
        save_sheet(fig, axes.flat, path)


class Cifar10(ImageTask):
    name, title, group_size = "cifar10", "CIFAR-10 (1,000 test images)", 250

    def load_tests(self):
        images, _ = load_cifar_npz(self.root / "cifar10" / "cifar10_genuine_subset.npz", "test")
        return [(f"test{i}", Datapoint(np.ascontiguousarray(im), "uint8")) for i, im in enumerate(images)]

    def load_train(self):
        images, _ = load_cifar_npz(self.root / "cifar10" / "cifar10_genuine_subset.npz", "train")
        return [np.ascontiguousarray(im) for im in images]

    def coin(self, count: int, iterations: int, base, steps: int) -> dict:
        """COIN (Siren overfitted per image) at two sizes on the first ``count`` test images, and
        the time it needs to reach the PSNR COIN++ reaches (Figure 5.10d)."""
        from metacompress.codecs.coin import CoinConfig, encode_image

        group = [p for _, p in self.tests[:count]]
        coinpp = encode_many(group, base, 5, steps)
        points, to_match = [], []
        for depth, width in ((2, 12), (3, 20)):
            rates, quality = [], []
            for point, fast in zip(group, coinpp):
                result = encode_image(point.values, CoinConfig(bits=16, iterations=iterations, lr=1e-3, depth=depth,
                                                               width=width))
                rates.append(self.rate(len(result.data), point))
                quality.append(result.psnr)
                reached = next((it for it, value in result.history if value >= fast.psnr), None)
                if reached is not None:
                    to_match.append(result.seconds * reached / result.iterations_run)
            points.append({"depth": depth, "width": width, "rate": statistics.fmean(rates),
                           "psnr": statistics.fmean(quality), "iterations": iterations})
        return {"points": points, "coinpp_5bit_psnr": statistics.fmean(r.psnr for r in coinpp),
                "coinpp_encode_time_per_image_s": coinpp[0].seconds,
                "coin_time_to_coinpp_psnr_s": statistics.fmean(to_match) if to_match else None,
                "coin_fits_reaching_it": len(to_match), "coin_fits": 2 * len(group)}


class Kodak(ImageTask):
    name, title, sheet_count = "kodak", "Kodak", 2
    images: tuple[str, ...] | None = None

    def load_tests(self):
        return [(p.stem, Datapoint(load_image(p), "uint8")) for p in list_images(self.root / "kodak")
                if self.images is None or p.stem in self.images]

    def load_train(self):
        """The training photos, less the one the bundled demo photo is cut from (so the demo, which
        uses this base network, compresses an image it never saw)."""
        return training_photos(self.root)


class Audio(Task):
    name, modality, title = "audio", "audio", "speech (LibriSpeech + CMU ARCTIC, 16 kHz)"
    rate_unit, rate_label = "kbps", "kbit/s (whole file)"
    rate_hz = 16_000
    peak = 2.0  # PSNR of audio in [-1, 1]: peak-to-peak 2, as COIN++
    rd_rate_key, rd_qualities, bd_anchors = "kbps", {"psnr": "psnr", "snr": "snr"}, ("mp3", "opus")

    def load_tests(self):
        paths = list_audio(self.root / "audio" / "librispeech_test_clean") + list_audio(self.root / "audio" / "cmu_arctic")
        return [(p.stem, Datapoint(load_audio(p, self.rate_hz)[0][:, None], "float32")) for p in paths]

    def load_train(self):
        return self.root / "audio" / "fsdd_8k"

    def rate(self, nbytes: int, point: Datapoint) -> float:
        return 8 * nbytes / (point.values.shape[0] / self.rate_hz) / 1000

    def dataset_rate(self, nbytes: int, points: list[Datapoint]) -> float:
        return 8 * nbytes / (sum(p.values.shape[0] for p in points) / self.rate_hz) / 1000

    def describe(self) -> dict:
        """With the zero-byte yardstick: the PSNR of decoding every clip as silence."""
        silence = statistics.fmean(psnr(p.values, np.zeros_like(p.values), self.peak) for _, p in self.tests)
        return super().describe() | {"zero_byte": {"silence": silence}}

    def classical(self) -> dict:
        def measure(codec, point):
            signal = point.values[:, 0]
            data = codec.encode(signal)
            decoded = codec.decode(data, signal.size)
            return {"rate": self.rate(len(data), point), "psnr": psnr(signal, decoded, self.peak),
                    "snr": snr_db(signal, decoded)}

        return self.sweep({"mp3": [(k, Mp3(k)) for k in (8, 16, 24, 32, 48, 64)],
                           "opus": [(level, Opus(level)) for level in (1.0, 0.97, 0.94, 0.9, 0.85)]}, measure)

    def extra_metrics(self, reconstructions, points, sizes) -> dict:
        return {"snr": statistics.fmean(snr_db(p.values, r) for r, p in zip(reconstructions, points))}

    def sheet(self, base, steps: int, path: Path) -> None:
        name, point = self.tests[0]
        result = encode_many([point], base, 5, steps)[0]
        mp3 = Mp3(16)
        mp3_signal = mp3.decode(mp3.encode(point.values[:, 0]), point.values.shape[0])
        window = slice(point.values.shape[0] // 2, point.values.shape[0] // 2 + 800)
        fig = Figure(figsize=(8, 3), layout="tight")
        ax = fig.subplots()
        t = np.arange(800) / self.rate_hz * 1000
        ax.plot(t, point.values[window, 0], label="original", lw=1)
        ax.plot(t, result.reconstruction[window, 0], label=f"COIN++ 5 bits ({self.rate(len(result.data), point):.1f} kbps, "
                                                           f"{result.psnr:.1f} dB)", lw=1)
        ax.plot(t, mp3_signal[window], label="MP3 16 kbps", lw=1, alpha=0.7)
        ax.set_xlabel("ms")
        ax.set_title(f"{name}: 50 ms of speech")
        ax.legend(fontsize=7)
        fig.savefig(path, dpi=110)


class Volume(Task):
    """Train on a macaque template and a human MRI stack, test on a different human brain (Colin27)."""

    name, modality, title = "volume", "volume", "MRI (Colin27, skull-stripped)"
    rate_unit, rate_label = "bpv", "bits per voxel (whole file)"
    crop: int | None = None
    rd_rate_key, bd_anchors = "bpv", ("jpeg2000 per slice",)

    def load_tests(self):
        volume = load_volume(self.root / "volumes" / "mricron_templates" / "ch2bet.nii.gz")
        data = volume.data
        if self.crop:
            centre = [s // 2 for s in data.shape]
            data = data[tuple(slice(c - self.crop // 2, c + self.crop // 2) for c in centre)]
        return [("ch2bet" + (f"-centre{self.crop}" if self.crop else ""),
                 Datapoint(np.ascontiguousarray(data[..., None]).astype("uint8"), "uint8", volume.spacing))]

    def load_train(self):
        return [load_volume(self.root / "volumes" / "mricron_templates" / "inia19-t1-brain.nii.gz").data[..., None],
                load_volume(self.root / "volumes" / "skimage" / "brain.tiff").data[..., None]]

    def classical(self) -> dict:
        def measure(codec, point):
            volume = point.values[..., 0]
            files = [codec.encode(np.ascontiguousarray(s[..., None])) for s in volume]
            decoded = np.stack([codec.decode(f)[..., 0] for f in files])
            return {"rate": self.rate(sum(map(len, files)), point), "psnr": volume_psnr(volume, decoded)}

        ratios = (200.0, 100.0, 50.0, 25.0, 12.0, 6.0)
        return self.sweep({"jpeg2000 per slice": [(r, Jpeg2000(ratio=r)) for r in ratios]}, measure)

    def extra_metrics(self, reconstructions, points, sizes) -> dict:
        """PSNR with the volume's full range as the peak, as for JPEG 2000 (the codec normalizes by a percentile)."""
        return {"psnr": statistics.fmean(volume_psnr(p.values, r) for r, p in zip(reconstructions, points))}

    def sheet(self, base, steps: int, path: Path) -> None:
        _, point = self.tests[0]
        fitted = fit_datapoints([point], base, steps)
        results = {bits: quantize_and_pack(fitted, base, bits)[0] for bits in (3, 6)}
        middle = point.values.shape[0] // 2
        fig = Figure(figsize=(9, 3.2), layout="tight")
        axes = fig.subplots(1, 3)
        axes[0].imshow(point.values[middle, ..., 0], cmap="gray")
        axes[0].set_title("original (middle slice)", fontsize=8)
        for ax, (bits, result) in zip(axes[1:], results.items()):
            ax.imshow(result.reconstruction[middle, ..., 0], cmap="gray")
            ax.set_title(f"COIN++ {bits} bits: {self.rate(len(result.data), point):.3f} bpv, {result.psnr:.1f} dB",
                         fontsize=8)
        save_sheet(fig, axes.flat, path)


def volume_psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR with the volume's own range as the peak (as COIN++ normalizes volumes)."""
    return psnr(original, decoded, float(original.max()) - float(original.min()) or 1.0)


class Sphere(Task):
    """Monthly navy winds (UWND, VWND): months 1–100 train, 101–132 test; RMSE in m/s."""

    name, modality, title = "sphere", "sphere", "monthly navy winds (m/s)"
    rate_unit, rate_label = "ratio", "compression ratio (float32 / file)"
    quality_key, quality_label = "rmse", "RMSE (m/s)"
    train_months = 100
    rd_rate_key, rd_qualities, bd_anchors = "compression-ratio", {"rmse": "rmse"}, ("jpeg", "jpeg2000")

    def load_tests(self):
        return [(f"month{self.train_months + i + 1}", Datapoint(g, "float32"))
                for i, g in enumerate(self._globes()[self.train_months:])]

    def load_train(self):
        self.extra = globe_description(self._path())
        return self._globes()[:self.train_months]

    def _path(self) -> Path:
        return self.root / "climate" / "ferret_noaa_pmel" / "monthly_navy_winds.cdf"

    def _globes(self) -> list[np.ndarray]:
        globe = load_globe(self._path())
        return [np.ascontiguousarray(np.moveaxis(globe.data[:, t], 0, -1)) for t in range(globe.data.shape[1])]

    def rate(self, nbytes: int, point: Datapoint) -> float:
        return point.values.size * 4 / nbytes

    def dataset_rate(self, nbytes: int, points: list[Datapoint]) -> float:
        return sum(p.values.size * 4 for p in points) / nbytes

    def describe(self) -> dict:
        """With two zero-byte yardsticks: a decoder that outputs the mean training globe, or the
        training mean of the same calendar month (what a codec must beat to carry information)."""
        train = np.stack(self.train)
        months = {k: train[k::12].mean(axis=0) for k in range(12)}
        tests = [(self.train_months + i, p.values) for i, (_, p) in enumerate(self.tests)]
        return super().describe() | {"zero_byte": {
            "training mean globe": statistics.fmean(rmse(v, train.mean(axis=0)) for _, v in tests),
            "training mean of the calendar month": statistics.fmean(rmse(v, months[t % 12]) for t, v in tests)}}

    def extra_metrics(self, reconstructions, points, sizes) -> dict:
        errors = [rmse(p.values, r) for r, p in zip(reconstructions, points)]
        return {"rmse": statistics.fmean(errors), "rmse_per_variable": [
            statistics.fmean(rmse(p.values[..., v], r[..., v]) for r, p in zip(reconstructions, points))
            for v in range(points[0].values.shape[-1])]}

    def classical(self) -> dict:
        """Each variable as an 8-bit grey map over its own range (+ 8 bytes of range per variable)."""
        def measure(codec, point):
            size, decoded = 0, np.empty_like(point.values)
            for v in range(point.values.shape[-1]):
                field = point.values[..., v]
                lo, hi = float(field.min()), float(field.max())
                data = codec.encode(np.round((field - lo) / (hi - lo) * 255).astype(np.uint8)[..., None])
                size += len(data) + 8
                decoded[..., v] = codec.decode(data)[..., 0] / 255.0 * (hi - lo) + lo
            return {"rate": self.rate(size, point), "rmse": rmse(point.values, decoded)}

        return self.sweep({"jpeg": [(q, Jpeg(q)) for q in (5, 10, 20, 40, 60, 80, 95)],
                           "jpeg2000": [(r, Jpeg2000(r)) for r in (400.0, 200.0, 100.0, 50.0, 25.0, 10.0)]}, measure)

    def sheet(self, base, steps: int, path: Path) -> None:
        name, point = self.tests[0]
        result = encode_many([point], base, 5, steps)[0]
        fig = Figure(figsize=(9, 4.6), layout="tight")
        axes = fig.subplots(2, 2)
        for v, label in enumerate(self.extra["variables"]):
            lo, hi = float(point.values[..., v].min()), float(point.values[..., v].max())
            axes[v][0].imshow(point.values[::-1, :, v], cmap="RdBu_r", vmin=lo, vmax=hi)
            axes[v][0].set_title(f"{label} {name} (m/s)", fontsize=8)
            axes[v][1].imshow(result.reconstruction[::-1, :, v], cmap="RdBu_r", vmin=lo, vmax=hi)
            axes[v][1].set_title(f"COIN++ 5 bits: ratio {self.rate(len(result.data), point):.0f}, RMSE "
                                 f"{rmse(point.values[..., v], result.reconstruction[..., v]):.2f} m/s", fontsize=8)
        save_sheet(fig, axes.flat, path)


TASKS = {"cifar10": Cifar10, "kodak": Kodak, "audio": Audio, "volume": Volume, "sphere": Sphere}
