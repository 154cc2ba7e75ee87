"""Data loading for metacompress.

Dataset files live under a data root given explicitly (``data_root=``, ``--data-root``) or by
the ``METACOMPRESS_DATA`` environment variable; nothing here knows a default location.  Every
problem with a file (missing, wrong format, truncated, corrupt) raises
:class:`metacompress.errors.DataError` with a one-line message naming the file.

- classification: :func:`load_classification` (MNIST, Fashion-MNIST, CIFAR-10, mnist-sample)
- images: :func:`list_images`, :func:`load_image` (8-bit PNG/TIFF)
- audio: :func:`list_audio`, :func:`load_audio` (WAV/FLAC, resampling)
- volumes: :func:`load_volume` (NIfTI, TIFF stacks)
- globes: :func:`load_globe` (netCDF-3 fields on a latitude/longitude grid)
- bundled samples: :func:`sample_path`
"""

from metacompress.data.audio import list_audio, load_audio
from metacompress.data.bundled import sample_path
from metacompress.data.classification import (
    CLASSIFICATION_DATASETS,
    ClassificationData,
    load_classification,
    train_val_split,
)
from metacompress.data.globes import Globe, load_globe
from metacompress.data.images import list_images, load_image
from metacompress.data.root import resolve_data_root
from metacompress.data.volumes import Volume, load_volume

__all__ = [
    "CLASSIFICATION_DATASETS",
    "ClassificationData",
    "Globe",
    "Volume",
    "list_audio",
    "list_images",
    "load_audio",
    "load_classification",
    "load_globe",
    "load_image",
    "load_volume",
    "resolve_data_root",
    "sample_path",
    "train_val_split",
]
