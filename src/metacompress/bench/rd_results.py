"""Rate–distortion results in CompressAI's JSON shape, one file per codec and dataset, and the one plot.

A file is ``{"name": …, "description": …, "results": {KEY: [one number per operating point]}}``,
as CompressAI's ``results/image/kodak/*.json``. The keys of ``results`` (all lists of one length):

- rate, exactly one: ``bpp`` (bits per pixel, images), ``kbps`` (kbit/s, audio), ``bpv`` (bits
  per voxel, volumes), ``compression-ratio`` (float32 bytes over file bytes, globes);
- quality, at least one: ``psnr-rgb`` (dB, 8-bit RGB, peak 255), ``ms-ssim-rgb`` (MS-SSIM of the
  8-bit RGB image), ``psnr`` (dB of other data; the description gives the peak), ``snr`` (dB,
  audio), ``rmse`` (the data's own units);
- optional: ``encoding_time``, ``decoding_time`` (seconds per image / datapoint).

Every value is the mean over the dataset's items at one setting of the codec, as CompressAI does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from metacompress.checkpoint import atomic_write_bytes
from metacompress.errors import FormatError
from metacompress.metrics import bd_overlap, bd_rate

# key → axis label; the order is the order of the plot's panels
RATE_KEYS = {"bpp": "bits per pixel (whole file)", "kbps": "kbit/s (whole file)",
             "bpv": "bits per voxel (whole file)", "compression-ratio": "compression ratio (float32 / file)"}
QUALITY_KEYS = {"psnr-rgb": "PSNR RGB (dB)", "ms-ssim-rgb": "MS-SSIM RGB", "psnr": "PSNR (dB)", "snr": "SNR (dB)",
                "rmse": "RMSE (data units)"}
TIME_KEYS = ("encoding_time", "decoding_time")
LOG_AXES = {"compression-ratio", "rmse"}  # spans decades
LOWER_IS_BETTER = {"rmse"}


@dataclass(frozen=True)
class RDResult:
    """One codec on one dataset: ``results`` maps the keys above to one value per operating point."""

    name: str
    description: str
    results: Mapping[str, tuple[float, ...]]

    def __post_init__(self) -> None:
        for field in ("name", "description"):
            if not isinstance(getattr(self, field), str) or (field == "name" and not self.name):
                raise FormatError(f"RD result field {field!r}: expected a non-empty string, got {getattr(self, field)!r}")
        if not isinstance(self.results, Mapping):
            raise FormatError(f"RD result field 'results': expected an object, got {type(self.results).__name__}")
        known = RATE_KEYS.keys() | QUALITY_KEYS.keys() | set(TIME_KEYS)
        lengths = set()
        for key, values in self.results.items():
            if key not in known:
                raise FormatError(f"RD result field 'results.{key}': unknown key (known: {', '.join(sorted(known))})")
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                raise FormatError(f"RD result field 'results.{key}': expected a non-empty list of finite numbers, "
                                  f"got {values!r}")
            lengths.add(len(values))
        rates = [k for k in self.results if k in RATE_KEYS]
        if len(rates) != 1:
            raise FormatError(f"RD result field 'results': needs exactly one rate key of {', '.join(RATE_KEYS)}, "
                              f"has {rates}")
        if not any(k in QUALITY_KEYS for k in self.results):
            raise FormatError(f"RD result field 'results': needs a quality key of {', '.join(QUALITY_KEYS)}")
        if len(lengths) != 1:
            raise FormatError(f"RD result field 'results': lists of different lengths {sorted(lengths)}")
        object.__setattr__(self, "results", {k: tuple(float(v) for v in values) for k, values in self.results.items()})

    @property
    def rate_key(self) -> str:
        return next(k for k in self.results if k in RATE_KEYS)

    @property
    def quality_keys(self) -> list[str]:
        return [k for k in QUALITY_KEYS if k in self.results]

    def curve(self, quality: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(rates, qualities) for :func:`metacompress.metrics.bd_rate`: bits (1 / ratio for a
        compression ratio) and quality higher-is-better (−RMSE for RMSE)."""
        rates = self.results[self.rate_key]
        if self.rate_key == "compression-ratio":
            rates = tuple(1 / r for r in rates)
        values = self.results[quality]
        return rates, tuple(-v for v in values) if quality in LOWER_IS_BETTER else values

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description,
                "results": {k: list(v) for k, v in self.results.items()}}

    @classmethod
    def from_json(cls, document) -> RDResult:
        if not isinstance(document, Mapping):
            raise FormatError(f"an RD result is a JSON object, not {type(document).__name__}")
        extra = set(document) - {"name", "description", "results"}
        missing = {"name", "description", "results"} - set(document)
        if extra or missing:
            raise FormatError(f"RD result field {sorted(extra or missing)[0]!r}: " + ("unknown" if extra else "missing"))
        return cls(document["name"], document["description"], document["results"])

    @classmethod
    def from_points(cls, name: str, description: str, points: Sequence[Mapping], keys: Mapping[str, str]) -> RDResult:
        """From a benchmark's list of per-setting records: ``keys`` maps RD keys to record fields;
        a field some record lacks (or holds None for) is left out."""
        results = {key: [p.get(field) for p in points] for key, field in keys.items()}
        return cls(name, description, {k: v for k, v in results.items() if all(x is not None for x in v)})


def write(path: Path, result: RDResult) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(result.to_json(), indent=1) + "\n").encode())
    return path


def read(path: Path) -> RDResult:
    try:
        document = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise FormatError(f"{path}: not JSON ({error})") from None
    try:
        return RDResult.from_json(document)
    except FormatError as error:
        raise FormatError(f"{path}: {error}") from None


def file_name(name: str) -> str:
    """``JPEG 2000 per slice`` → ``jpeg-2000-per-slice.json``."""
    return re.sub(r"[^a-z0-9+.]+", "-", name.lower()).strip("-") + ".json"


def write_all(folder: Path, results: Iterable[RDResult]) -> list[Path]:
    """Each result as ``folder/<its name>.json`` (a folder per dataset, as CompressAI's)."""
    return [write(Path(folder) / file_name(r.name), r) for r in results]


def bd_rates(tests: Iterable[RDResult], anchors: Iterable[RDResult]) -> dict:
    """``{test: {anchor: {quality key: {"bd_rate": % or None, "quality_range": [low, high] or None}}}}``
    for every quality key both carry; the range is the quality interval the BD-rate averages over."""
    anchors = list(anchors)

    def entry(anchor: RDResult, test: RDResult, quality: str) -> dict:
        overlap = bd_overlap(anchor.curve(quality), test.curve(quality))
        if overlap and quality in LOWER_IS_BETTER:  # back from −RMSE
            overlap = (-overlap[1], -overlap[0])
        return {"bd_rate": bd_rate(anchor.curve(quality), test.curve(quality)),
                "quality_range": list(overlap) if overlap else None}

    return {test.name: {anchor.name: {q: entry(anchor, test, q) for q in test.quality_keys if q in anchor.results}
                        for anchor in anchors if anchor.rate_key == test.rate_key and anchor.name != test.name}
            for test in tests}


def plot(results: Iterable[RDResult | Path | str], path: Path, title: str = "", qualities: Sequence[str] | None = None,
         baselines: Mapping[str, float] | None = None, styles: Mapping[str, dict] | None = None,
         xlim: tuple[float, float] | None = None) -> Path:
    """Any number of RD results (or their files) in one figure: one panel per quality key (``qualities``,
    default every key any of them has), rate on x. ``baselines``: horizontal lines (e.g. the
    quality of a zero-byte decoder) on the first panel; ``styles``: matplotlib keywords by name."""
    results = [r if isinstance(r, RDResult) else read(r) for r in results]
    rate_keys = {r.rate_key for r in results}
    if len(rate_keys) != 1:
        raise ValueError(f"one plot takes one rate measure, not {sorted(rate_keys)}")
    (rate_key,) = rate_keys
    qualities = list(qualities or [q for q in QUALITY_KEYS if any(q in r.results for r in results)])
    fig = Figure(figsize=(6.2 * len(qualities), 4.6), layout="tight")
    axes = fig.subplots(1, len(qualities), squeeze=False)[0]
    for ax, quality in zip(axes, qualities):
        for i, result in enumerate(results):  # a result's colour is the same in every panel
            if quality not in result.results:
                continue
            style = {"marker": "o", "ms": 4, "lw": 1.3, "color": f"C{i % 10}"} | dict((styles or {}).get(result.name, {}))
            ax.plot(result.results[rate_key], result.results[quality], label=result.name, **style)
        ax.set(xlabel=RATE_KEYS[rate_key], ylabel=QUALITY_KEYS[quality], title=title)
        if rate_key in LOG_AXES:
            ax.set_xscale("log")
        if quality in LOG_AXES:
            ax.set_yscale("log")
        if xlim:
            ax.set_xlim(*xlim)
        ax.grid(alpha=0.3)
    for (name, value), style in zip((baselines or {}).items(), (":", "-.", "--")):
        axes[0].axhline(value, color="black", lw=0.8, ls=style, label=f"{name} (0 bytes)")
    for ax in axes:
        ax.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
