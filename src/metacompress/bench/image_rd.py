"""COIN against six classical codecs on Kodak (thesis Figures 5.5, 5.7, C.2–C.9).

Every method writes real files and its bpp is 8 × bytes / pixels of those files, header included;
PSNR and MS-SSIM are measured on the 8-bit decoded image, averaged over images (CompressAI's convention).
Classical codecs hit each target rate by a search on their quality knob (the best quality whose
file fits). COIN encodes with the thesis' architecture table (C.2) at 16-bit weights.

Timing per method and rate: encoding_time (one encode at the chosen setting; COIN: the whole
fit), decoding_time. COIN also reports iterations/s and the time its fit first reached JPEG's
PSNR at the same rate on the same image.

CPU profile: COIN on two full-size Kodak images (kodim03, kodim15) at 0.07 / 0.15 / 0.3 / 0.6 bpp
with a budget of 500 iterations instead of 50k — what fits in the hour at 0.25–0.85 s per
iteration on 2 cores. lr 2e-4 is tuned for 50k iterations, so the learning rate is the best of
{2e-4, 1e-3, 3e-3} after 500 iterations on a training photo (CBSD68 101085, never Kodak). What the
budget costs in PSNR shows against the official COIN curve (50k iterations, stored as reference).
Classical codecs run on all 24 images. Paper profile: COIN on all 24 images, 50k iterations, lr 2e-4.

Besides ``results.json``, every curve is written in CompressAI's shape (:mod:`.rd_results`) under
``rd/kodak/`` (all images: the classical codecs and the official COIN curve) and
``rd/kodak-<images>/`` (COIN's images: COIN and the classical codecs on them), and ``results.json``
holds the BD-rate (PSNR and MS-SSIM) of every curve against JPEG and WebP on the same images.
Runs logged before MS-SSIM was measured get it from the same file: the stored ``.mcz`` decoded,
a classical codec re-run at its stored knob (its PSNR checked against the log); nothing refits.

``device`` (``--device``): where COIN's networks are fitted (the learning-rate probe too); every
file is decoded on the CPU, as ``metacompress decode`` does by default, so the PSNR, MS-SSIM and
decoding times are the CPU decoder's. The classical codecs run on the CPU.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from metacompress.bench import rd_results
from metacompress.bench.rd_results import RDResult
from metacompress.bench.runs import append_run, read_runs, rewrite_runs, run_key
from metacompress.checkpoint import atomic_write_bytes
from metacompress.codecs.classical import CLASSICAL_IMAGE_CODECS, encode_at_bpp
from metacompress.codecs.coin import CoinConfig, coin_file, decode_image, encode_image
from metacompress.data import list_images, load_image, resolve_data_root
from metacompress.errors import UserError
from metacompress.metrics import ms_ssim, psnr

# Official COIN results on Kodak (bpp, PSNR dB), from the authors' released result files.
OFFICIAL_COIN = {"bpp": [0.037, 0.074, 0.160, 0.307, 0.611, 1.209], "psnr": [22.41, 23.21, 24.64, 26.41, 28.41, 30.64]}
CODECS = ("coin",)
ABLATION_BITS = (8, 10, 12)
BD_ANCHORS = ("jpeg", "webp")
RD_KEYS = {"bpp": "bpp", "psnr-rgb": "psnr", "ms-ssim-rgb": "ms-ssim", "encoding_time": "encoding_time",
           "decoding_time": "decoding_time"}  # CompressAI key → key of our curves


@dataclass(frozen=True)
class Profile:
    rates: tuple[float, ...] = (0.07, 0.15, 0.3, 0.6)
    coin_images: tuple[str, ...] | None = None  # None: every Kodak image
    iterations: int = 50_000  # thesis C.2
    lr: float | None = 2e-4  # thesis C.2; None: the best of probe_lrs on a training photo
    probe_lrs: tuple[float, ...] = (2e-4, 1e-3, 3e-3)
    probe_image: str = "photos/CBSD68/101085.png"  # a training photo, never a Kodak one
    sheet: tuple[str, float] = ("kodim03", 0.15)  # thesis Figure C.3


PROFILES = {
    # lr 2e-4 is tuned for 50k iterations; for a budget of 500 the probe picks the learning rate
    "cpu": Profile(coin_images=("kodim03", "kodim15"), iterations=500, lr=None),
    "paper": Profile(),
}


def run(profile: str, data_root, out_dir: Path, codec: str = "coin", device="cpu") -> dict:
    if codec not in CODECS:
        raise UserError(f"image-rd compares {', '.join(CODECS)} with the classical codecs, not {codec!r}")
    settings = PROFILES[profile]
    paths = list_images(resolve_data_root(data_root) / "kodak")
    images = {p.stem: load_image(p) for p in paths}
    coin_names = list(settings.coin_images or images)
    missing = [n for n in coin_names if n not in images]
    if missing:
        raise UserError(f"Kodak images not found: {', '.join(missing)}")
    log = out_dir / "runs.jsonl"
    done = read_runs(log)
    probe = None if settings.lr is not None else lr_probe(settings, resolve_data_root(data_root), log, done, device)
    lr = settings.lr if settings.lr is not None else probe["chosen"]

    classical = {name: {image: {rate: classical_record(name, image, images[image], rate, log, done)
                                for rate in settings.rates} for image in images} for name in CLASSICAL_IMAGE_CODECS}
    coin = {image: {rate: coin_record(settings, lr, image, images[image], rate, out_dir, log, done, device)
                    for rate in settings.rates} for image in coin_names}
    for image, per_rate in coin.items():
        for rate, record in per_rate.items():
            record["seconds_to_jpeg_psnr"] = seconds_to_reach(record, classical["jpeg"][image][rate]["psnr"])
    if read_runs(log) != done:  # MS-SSIM added to runs logged before it was measured
        rewrite_runs(log, done)

    results = {
        "settings": asdict(settings) | {"coin_images": coin_names, "classical_images": list(images), "lr": lr},
        "lr_probe": probe,
        "all_images": {name: curve(per_image, settings.rates) for name, per_image in classical.items()},
        "coin_images": {"coin": curve(coin, settings.rates)} |
                       {name: curve({i: per_image[i] for i in coin_names}, settings.rates)
                        for name, per_image in classical.items()},
        "official_coin": OFFICIAL_COIN,
        "coin_encoding": encoding_summary(coin, settings.rates),
        "per_image": {"coin": coin, **classical},
    }
    curves = rd_curves(results)
    anchors = {CLASSICAL_IMAGE_CODECS[name].label for name in BD_ANCHORS}
    results["bd_rate"] = {dataset: rd_results.bd_rates(found, [c for c in found if c.name in anchors])
                          for dataset, found in curves.items()}
    styles = {"COIN": {"color": "black", "lw": 2.5}, "COIN official": {"color": "black", "ls": "--", "marker": "x"}}
    official = curves["kodak"][-1]  # on all 24 images: drawn beside COIN's images too, for reference
    for (dataset, found), png in zip(curves.items(), ("rd.png", "rd_all_images.png")):
        rd_results.write_all(out_dir / "rd" / dataset, found)
        title = f"all {len(images)} Kodak images" if dataset == "kodak" else f"Kodak: {', '.join(coin_names)}"
        rd_results.plot(found + [official] * (official not in found), out_dir / png, title=title,
                        xlim=(0, 1.15 * max(settings.rates)), styles=styles)
    plot_fit(coin, classical["jpeg"], settings.rates, out_dir / "fit.png")
    sheet_image, sheet_rate = settings.sheet
    if sheet_image in coin and sheet_rate in coin[sheet_image]:
        plot_sheet(images[sheet_image], out_dir / coin[sheet_image][sheet_rate]["file"],
                   classical["jpeg"][sheet_image][sheet_rate]["knob"], out_dir / f"sheet_{sheet_image}.png")
    return results


def classical_record(name: str, image_name: str, image: np.ndarray, rate: float, log: Path, done: dict) -> dict:
    key = run_key("classical", {"codec": name, "rate": rate}, name, image_name, rate)
    if key not in done:
        started = time.perf_counter()
        data, knob = encode_at_bpp(name, image, rate)
        search_s = time.perf_counter() - started
        codec = CLASSICAL_IMAGE_CODECS[name](knob)
        encoding_time, _ = timed(codec.encode, image)
        decoding_time, decoded = timed(codec.decode, data)
        pixels = image.shape[0] * image.shape[1]
        done[key] = append_run(log, key, {
            "bpp": 8 * len(data) / pixels, "psnr": psnr(image, decoded), "ms-ssim": ms_ssim(image, decoded),
            "knob": knob, "encoding_time": encoding_time, "decoding_time": decoding_time, "search_time": search_s})
        print(f"{name} {image_name} @ {rate}: {done[key]['bpp']:.4f} bpp, {done[key]['psnr']:.2f} dB", flush=True)
    elif "ms-ssim" not in done[key]:  # logged before MS-SSIM: the same file again, at the stored knob
        codec = CLASSICAL_IMAGE_CODECS[name](done[key]["knob"])
        data = codec.encode(image)
        done[key] = with_ms_ssim(done[key], image, codec.decode(data), 8 * len(data) / (image.shape[0] * image.shape[1]))
    return strip_key(done[key])


def lr_probe(settings: Profile, data_root: Path, log: Path, done: dict, device="cpu") -> dict:
    """COIN's PSNR after the profile's iteration budget at each candidate learning rate, on one
    training photo at the middle rate: the learning rate for a short budget, chosen off Kodak."""
    image = load_image(data_root / settings.probe_image)
    rate = settings.rates[len(settings.rates) // 2]
    trials = {}
    for lr in settings.probe_lrs:
        config = CoinConfig(bpp=rate, iterations=settings.iterations, lr=lr)
        key = run_key("probe", asdict(config) | {"image": settings.probe_image}, lr, device=device)
        if key not in done:
            result = encode_image(image, config, device=device)
            done[key] = append_run(log, key, {"lr": lr, "psnr": result.psnr, "seconds": result.seconds})
            print(f"probe lr {lr}: {result.psnr:.2f} dB", flush=True)
        trials[str(lr)] = done[key]["psnr"]
    chosen = max(settings.probe_lrs, key=lambda lr: trials[str(lr)])
    return {"image": settings.probe_image, "rate": rate, "iterations": settings.iterations, "psnr": trials,
            "chosen": chosen}


def coin_record(settings: Profile, lr: float, image_name: str, image: np.ndarray, rate: float, out_dir: Path,
                log: Path, done: dict, device="cpu") -> dict:
    config = CoinConfig(bpp=rate, iterations=settings.iterations, lr=lr)
    key = run_key("coin", asdict(config), image_name, rate, device=device)
    on = torch.device(device).type
    file = Path("coin") / f"{image_name}-{rate}bpp{'' if on == 'cpu' else '-' + on}.mcz"  # one file per run key
    if key not in done or not (out_dir / file).exists():
        result = encode_image(image, config, device=device)
        atomic_write_bytes(out_dir / file, result.data)
        decoding_time, decoded = timed(decode_image, result.data)
        assert np.array_equal(decoded, decode_image((out_dir / file).read_bytes()))
        pixels = image.shape[0] * image.shape[1]
        done[key] = append_run(log, key, {
            "file": str(file), "bpp": 8 * len(result.data) / pixels, "psnr": psnr(image, decoded),
            "ms-ssim": ms_ssim(image, decoded), "bits_ablation": bits_ablation(result.fitted_model, image),
            "depth": result.depth, "width": result.width, "best_fit_psnr": result.best_fit_psnr,
            "best_iteration": result.best_iteration, "iterations": result.iterations_run,
            "encoding_time": result.seconds, "decoding_time": decoding_time,
            "iterations_per_s": result.iterations_run / result.seconds, "history": result.history})
        print(f"coin {image_name} @ {rate}: {done[key]['bpp']:.4f} bpp, {done[key]['psnr']:.2f} dB "
              f"({result.seconds:.0f} s)", flush=True)
    elif "ms-ssim" not in done[key]:  # logged before MS-SSIM: decode the stored file
        data = (out_dir / file).read_bytes()
        done[key] = with_ms_ssim(done[key], image, decode_image(data), 8 * len(data) / (image.shape[0] * image.shape[1]))
    return strip_key(done[key])


def with_ms_ssim(record: dict, image: np.ndarray, decoded: np.ndarray, bpp: float) -> dict:
    """``record`` with the MS-SSIM of ``decoded``, once its PSNR shows it is the logged decoding, and
    the bpp of the file as it is now (COIN's files were re-packed into the smaller .mcz format 2
    after they were logged: the same weights in 4 bytes less)."""
    if not math.isclose(psnr(image, decoded), record["psnr"], rel_tol=1e-9):
        raise UserError(f"{record['key']}: the file does not decode to the logged image ({psnr(image, decoded):.3f} dB, "
                        f"logged {record['psnr']:.3f}); delete runs.jsonl to measure again")
    return record | {"bpp": bpp, "ms-ssim": ms_ssim(image, decoded)}


def bits_ablation(model, image: np.ndarray) -> dict:
    """The same fitted network stored with fewer bits per weight (thesis §5.3.1: 8 bits cost more
    PSNR than they save rate)."""
    pixels = image.shape[0] * image.shape[1]
    out = {}
    for bits in ABLATION_BITS:
        data = coin_file(model, image.shape, bits)
        out[str(bits)] = {"bpp": 8 * len(data) / pixels, "psnr": psnr(image, decode_image(data))}
    return out


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - started, value


def strip_key(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "key"}


def seconds_to_reach(record: dict, target_psnr: float) -> float | None:
    """When COIN's fit first matched ``target_psnr`` (None: not within its iterations)."""
    seconds_per_iteration = record["encoding_time"] / record["iterations"]
    for iteration, value in record["history"]:
        if value >= target_psnr:
            return iteration * seconds_per_iteration
    return None


def curve(per_image: dict, rates) -> dict:
    """CompressAI's shape: one value per rate, each the mean over images (MS-SSIM where every image
    has one: none under 161 pixels a side)."""
    fields = ["bpp", "psnr", "ms-ssim", "encoding_time", "decoding_time"]
    records = [per_image[i][rate] for i in per_image for rate in rates]
    if not all(r.get("ms-ssim") is not None for r in records):
        fields.remove("ms-ssim")
    return {field: [statistics.fmean(per_image[i][rate][field] for i in per_image) for rate in rates]
            for field in fields}


def rd_curves(results: dict) -> dict[str, list[RDResult]]:
    """The curves of ``results`` as RD results, by dataset: ``kodak`` (all images, the official COIN
    curve last) and, when COIN ran on fewer, ``kodak-<its images>`` first."""
    settings = results["settings"]
    coin_names, every = settings["coin_images"], settings["classical_images"]
    images = "mean over {} Kodak images; bpp of whole files, PSNR/MS-SSIM of the 8-bit decoding"

    def classical(curves: dict, count: int) -> list[RDResult]:
        codecs = [CLASSICAL_IMAGE_CODECS[name] for name in curves if name != "coin"]
        return [RDResult.from_points(codec.label, f"{codec.label} (Pillow) at the best {codec.knob.name} whose file fits "
                                                  f"each target rate; " + images.format(count), points(curves[codec.name]),
                                     RD_KEYS) for codec in codecs]

    coin = RDResult.from_points("COIN", f"COIN (16-bit weights, {settings['iterations']:,} iterations, lr "
                                        f"{settings['lr']:g}); " + images.format(len(coin_names)),
                                points(results["coin_images"]["coin"]), RD_KEYS)
    official = RDResult("COIN official", "COIN's released results: 24 Kodak images, 50k iterations",
                        {"bpp": results["official_coin"]["bpp"], "psnr-rgb": results["official_coin"]["psnr"]})
    if coin_names == every:
        return {"kodak": [coin, *classical(results["all_images"], len(every)), official]}
    return {"kodak-" + "-".join(coin_names): [coin, *classical(results["coin_images"], len(coin_names))],
            "kodak": classical(results["all_images"], len(every)) + [official]}


def points(curve: dict) -> list[dict]:
    """{field: [one value per rate]} → [{field: value} per rate]."""
    return [dict(zip(curve, values)) for values in zip(*curve.values())]


def encoding_summary(coin: dict, rates) -> dict:
    summary = {}
    for rate in rates:
        records = [coin[i][rate] for i in coin]
        reached = [r["seconds_to_jpeg_psnr"] for r in records if r["seconds_to_jpeg_psnr"] is not None]
        summary[str(rate)] = {
            "architecture": f"{records[0]['depth']}×{records[0]['width']}",
            "iterations_per_s": statistics.fmean(r["iterations_per_s"] for r in records),
            "beat_jpeg": f"{len(reached)}/{len(records)}",
            "seconds_to_jpeg_psnr": reached, "decoding_time": statistics.fmean(r["decoding_time"] for r in records),
            "weight_bits": {"16": {k: statistics.fmean(r[k] for r in records) for k in ("bpp", "psnr")}} |
                           {b: {k: statistics.fmean(r["bits_ablation"][b][k] for r in records) for k in ("bpp", "psnr")}
                            for b in map(str, ABLATION_BITS)}}
    return summary


# --- plots ---------------------------------------------------------------------------------------

def plot_fit(coin: dict, jpeg: dict, rates, path: Path) -> None:
    """PSNR of COIN's fit against iterations, with JPEG at the same rate (thesis Figure 5.7)."""
    fig = Figure(figsize=(4 * len(rates), 3.6), layout="tight")
    axes = fig.subplots(1, len(rates), sharey=True, squeeze=False)[0]
    for ax, rate in zip(axes, rates):
        for i, image in enumerate(coin):
            its, values = zip(*coin[image][rate]["history"])
            color = f"C{i}"
            ax.plot(its, values, color=color, label=image)
            ax.axhline(jpeg[image][rate]["psnr"], color=color, ls=":", lw=1)
        ax.set(title=f"{rate} bpp (dotted: JPEG)", xlabel="iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR of the fit (dB)")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)


def plot_sheet(image: np.ndarray, coin_file: Path, jpeg_quality: int, path: Path) -> None:
    """Original, COIN and JPEG at the same rate, with each one's absolute error (Figures C.2–C.9)."""
    coin = decode_image(coin_file.read_bytes())
    jpeg_codec = CLASSICAL_IMAGE_CODECS["jpeg"](jpeg_quality)
    jpeg_data = jpeg_codec.encode(image)
    jpeg = jpeg_codec.decode(jpeg_data)
    pixels = image.shape[0] * image.shape[1]
    fig = Figure(figsize=(15, 7), layout="tight")
    axes = fig.subplots(2, 3)
    panels = [(image, "original"),
              (coin, f"COIN {8 * coin_file.stat().st_size / pixels:.3f} bpp, {psnr(image, coin):.2f} dB"),
              (jpeg, f"JPEG {8 * len(jpeg_data) / pixels:.3f} bpp, {psnr(image, jpeg):.2f} dB")]
    for ax, (picture, title) in zip(axes[0], panels):
        ax.imshow(picture)
        ax.set_title(title)
    for ax, (picture, title) in zip(axes[1, 1:], panels[1:]):
        error = np.abs(picture.astype(np.int16) - image.astype(np.int16)).mean(axis=2)
        ax.imshow(error, cmap="magma", vmin=0, vmax=40)
        ax.set_title("|error| " + title.split()[0] + " (0–40 levels)")
    axes[1, 0].axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(path, dpi=100)
