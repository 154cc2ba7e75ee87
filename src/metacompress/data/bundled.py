"""Small sample files shipped inside the package (sources and licences: samples/README.md).

Regenerate them from a data root with ``scripts/make_samples.py --data-root DIR``.
"""

from __future__ import annotations

from pathlib import Path

from metacompress.errors import DataError

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

SAMPLE_FILES = {
    "photo": "photo.png",              # 256x256 RGB crop of a CBSD68 photo
    "speech": "speech.flac",           # 2.5 s of a CMU ARCTIC utterance, 16 kHz, 16-bit
    "mri": "mri.nii.gz",               # 64^3 crop of the Colin27 ch2bet T1 MRI, uint8, 1 mm
    "globe": "globe.nc",               # 12 months of UWND/VWND, 73x144, netCDF-3
    "mnist-sample": "mnist_sample.npz",  # 2,000 train + 1,000 test MNIST digits
}


def sample_path(name: str) -> Path:
    """Path of the bundled sample ``name`` (one of :data:`SAMPLE_FILES`)."""
    if name not in SAMPLE_FILES:
        raise DataError(f"unknown sample {name!r} (expected one of: {', '.join(SAMPLE_FILES)})")
    path = SAMPLES_DIR / SAMPLE_FILES[name]
    if not path.is_file():
        raise DataError(f"{path}: bundled sample missing (regenerate with scripts/make_samples.py)")
    return path
