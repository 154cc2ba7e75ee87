#!/usr/bin/env python
"""Regenerate the bundled samples in src/metacompress/data/samples/ from a data root.

    python scripts/make_samples.py --data-root ../shared/data   # or set METACOMPRESS_DATA

Deterministic: the same data root gives byte-identical files (fixed zip timestamps in the
.npz, mtime-free gzip in the .nii.gz).  Sources and licences: samples/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import nibabel
import numpy as np
import soundfile
from PIL import Image
from scipy.io import netcdf_file

from metacompress.data import load_classification, resolve_data_root
from metacompress.data.bundled import SAMPLE_FILES, SAMPLES_DIR

PHOTO = "photos/CBSD68/108005.png"  # tiger in grass (BSDS300 test image 108005)
SPEECH = "audio/cmu_arctic/arctic_a0007.wav"
MRI = "volumes/mricron_templates/ch2bet.nii.gz"
GLOBE = "climate/ferret_noaa_pmel/monthly_navy_winds.cdf"

PHOTO_SIZE = 256
SPEECH_SECONDS = 2.5
MRI_SIZE = 64
GLOBE_STEPS = 12
GLOBE_VARIABLES = ("UWND", "VWND")
MNIST_PER_CLASS = 200  # 10 x 200 = 2,000 train digits
MNIST_TEST = 1000


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def make_mnist_sample(root: Path, out: Path) -> None:
    """Class-balanced train sample: the first 200 digits of each class in MNIST train order
    (kept in that order); test sample: the first 1,000 MNIST test digits."""
    train = load_classification("mnist", "train", root)
    test = load_classification("mnist", "test", root)
    labels = train.labels.numpy()
    train_idx = np.sort(np.concatenate(
        [np.flatnonzero(labels == c)[:MNIST_PER_CLASS] for c in range(10)]))
    test_idx = np.arange(MNIST_TEST)
    write_npz(out, {
        "train_images": train.images.numpy()[train_idx, 0],
        "train_labels": labels[train_idx].astype(np.uint8),
        "train_source_idx": train_idx.astype(np.int64),
        "test_images": test.images.numpy()[test_idx, 0],
        "test_labels": test.labels.numpy()[test_idx].astype(np.uint8),
        "test_source_idx": test_idx.astype(np.int64),
    })


def make_photo(root: Path, out: Path) -> None:
    """Centre 256x256 crop, RGB PNG."""
    with Image.open(root / PHOTO) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w = rgb.shape[:2]
    top, left = (h - PHOTO_SIZE) // 2, (w - PHOTO_SIZE) // 2
    crop = rgb[top:top + PHOTO_SIZE, left:left + PHOTO_SIZE]
    Image.fromarray(crop).save(out, format="PNG", optimize=True)


def make_speech(root: Path, out: Path) -> None:
    """The 2.5 s window (on a 50 ms grid) with the most energy, original 16-bit samples, FLAC."""
    pcm, rate = soundfile.read(root / SPEECH, dtype="int16")
    if pcm.ndim > 1:
        pcm = pcm[:, 0]
    n, hop = int(SPEECH_SECONDS * rate), rate // 20
    energy = np.cumsum(np.concatenate([[0.0], pcm.astype(np.float64) ** 2]))
    starts = np.arange(0, max(len(pcm) - n, 0) + 1, hop)
    best = int(starts[np.argmax(energy[starts + n] - energy[starts])])
    soundfile.write(out, pcm[best:best + n], rate, format="FLAC", subtype="PCM_16")


def make_mri(root: Path, out: Path) -> None:
    """64^3 crop centred on the brain's centre of mass (voxels > 0), affine shifted to match."""
    img = nibabel.load(root / MRI)
    data = np.asarray(img.dataobj)
    centre = np.round(np.argwhere(data > 0).mean(axis=0)).astype(int)
    start = np.clip(centre - MRI_SIZE // 2, 0, np.array(data.shape) - MRI_SIZE)
    crop = data[tuple(slice(s, s + MRI_SIZE) for s in start)].astype(np.uint8)
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ start + img.affine[:3, 3]
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    new = nibabel.Nifti1Image(crop, affine, header)
    new.set_qform(affine, code=int(img.header["qform_code"]) or 1)
    new.set_sform(affine, code=int(img.header["sform_code"]) or 1)
    new.header.set_zooms(img.header.get_zooms()[:3])
    nibabel.save(new, out)


def make_globe(root: Path, out: Path) -> None:
    """First 12 months of UWND and VWND with the coordinate variables and all attributes."""
    src = netcdf_file(root / GLOBE, "r", mmap=False)
    try:
        dst = netcdf_file(out, "w", version=1)
        try:
            for key, value in src._attributes.items():
                setattr(dst, key, value)
            dst.history = (_text(src._attributes.get("history", b"")) +
                           f"; first {GLOBE_STEPS} time steps of "
                           f"{', '.join(GLOBE_VARIABLES)} by metacompress scripts/make_samples.py")
            used = {d for v in GLOBE_VARIABLES for d in src.variables[v].dimensions}
            # scipy's writer wants the unlimited (record) dimension created first
            dims = sorted((d for d in src.dimensions if d in used),
                          key=lambda d: src.dimensions[d] is not None)
            for dim in dims:
                dst.createDimension(dim, src.dimensions[dim])
            for name in dims + list(GLOBE_VARIABLES):
                var = src.variables[name]
                new = dst.createVariable(name, var.data.dtype.newbyteorder("="), var.dimensions)
                for key, value in var._attributes.items():
                    setattr(new, key, value)
                data = var.data
                if var.dimensions and src.dimensions[var.dimensions[0]] is None:  # record dim
                    data = data[:GLOBE_STEPS]
                new[:] = data
        finally:
            dst.close()
    finally:
        src.close()


def _text(value) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


MAKERS = {
    "mnist-sample": make_mnist_sample,
    "photo": make_photo,
    "speech": make_speech,
    "mri": make_mri,
    "globe": make_globe,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data-root", help="dataset root (default: $METACOMPRESS_DATA)")
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR, help="output folder")
    parser.add_argument("only", nargs="*", metavar="NAME",
                        help=f"samples to make (default: all of {', '.join(MAKERS)})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.only if n not in MAKERS]
    if unknown:
        parser.error(f"unknown sample(s) {', '.join(unknown)} (choose from {', '.join(MAKERS)})")
    root = resolve_data_root(args.data_root)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or MAKERS:
        path = args.out / SAMPLE_FILES[name]
        MAKERS[name](root, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        print(f"{path}  {path.stat().st_size:>9,} bytes  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
