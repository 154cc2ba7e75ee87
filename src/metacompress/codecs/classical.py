"""Classical image codecs (JPEG, JPEG 2000, WebP, AVIF, HEIC, JPEG XL), the thesis' baselines.

Each codec writes its format's own file (a real ``.jpg``/``.j2k``/``.webp``/``.avif``/``.heic``/
``.jxl``), so that bpp counts exactly what a user of that format would store.  A codec is built
with its one quality knob, e.g. ``Jpeg(quality=75)`` or ``Jpeg2000(ratio=40.0)``; every class
describes that knob in its ``knob`` attribute, which is what :func:`encode_at_bpp` searches over
to hit a bit budget, as the baselines of the papers we compare with do.

Images are uint8 arrays of shape (H, W, C) with C = 1 (grey) or 3 (RGB); ``decode`` gives back
the same layout.  HEIC (HEVC intra, via pillow-heif) stands in for BPG.  pillow-heif and
pillow-jxl-plugin are imported only when a codec that needs them is built.
"""

from __future__ import annotations

import importlib
import io
import math
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar

import numpy as np
from PIL import Image, features

from metacompress.codecs.codec import Codec
from metacompress.errors import FormatError, UserError

_RATIO_STEPS = 20
_DECODE_ERRORS = (OSError, ValueError, RuntimeError, SyntaxError, EOFError, Image.DecompressionBombError)
_ENCODE_ERRORS = (OSError, ValueError, RuntimeError)


@dataclass(frozen=True)
class Knob:
    """A codec's quality setting: its constructor argument, range and direction.

    ``bigger_files_upward`` says whether raising the value makes files larger (quality knobs)
    or smaller (JPEG 2000's compression ratio).
    """

    name: str
    lo: float
    hi: float
    integer: bool
    bigger_files_upward: bool

    @property
    def smallest(self) -> float:
        """The setting that gives the smallest files (lowest quality)."""
        return self.lo if self.bigger_files_upward else self.hi

    @property
    def largest(self) -> float:
        """The setting that gives the largest files (highest quality)."""
        return self.hi if self.bigger_files_upward else self.lo

    def check(self, value: float, codec: str) -> int | float:
        """``value`` as the knob's type, or UserError when it is of the wrong type or out of range."""
        if self.integer:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise UserError(f"{codec}: {self.name} must be an integer, got {value!r}")
            value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise UserError(f"{codec}: {self.name} must be a number, got {value!r}")
            value = float(value)
        if not self.lo <= value <= self.hi:
            raise UserError(f"{codec}: {self.name} must lie in [{self.lo:g}, {self.hi:g}], got {value!r}")
        return value


class _PillowCodec(Codec):
    """Shared plumbing: check the array, save it with Pillow, read it back as (H, W, C) uint8."""

    modality = "image"
    pillow_format: ClassVar[str]
    knob: ClassVar[Knob]

    def encode(self, x: np.ndarray) -> bytes:
        """The codec's file for image ``x``."""
        image = _to_pil(x, self.name)
        buffer = io.BytesIO()
        try:
            self._save(image, buffer)
        except _ENCODE_ERRORS as exc:
            raise UserError(f"{self.name}: cannot encode a {_describe(x)}: {exc}") from exc
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """The image in ``data``: uint8 (H, W, C), C = 1 for a grey file and 3 otherwise."""
        try:
            image = self._open(bytes(data))
            image.load()
        except _DECODE_ERRORS as exc:
            raise FormatError(f"{self.name}: not a valid {self.label} file (corrupt, truncated or another format)") from exc
        return _to_array(image)

    def _save(self, image: Image.Image, buffer: io.BytesIO) -> None:
        image.save(buffer, self.pillow_format, **self._options(image))

    def _options(self, image: Image.Image) -> dict:
        raise NotImplementedError

    def _open(self, data: bytes) -> Image.Image:
        return Image.open(io.BytesIO(data), formats=[self.pillow_format])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.knob.name}={getattr(self, self.knob.name)!r})"


class Jpeg(_PillowCodec):
    """Baseline JPEG (libjpeg via Pillow) with optimised Huffman tables and default 4:2:0 chroma."""

    name = "jpeg"
    suffix = ".jpg"
    label = "JPEG"
    pillow_format = "JPEG"
    knob = Knob("quality", 0, 100, integer=True, bigger_files_upward=True)

    def __init__(self, quality: int = 75):
        self.quality = self.knob.check(quality, self.name)

    def _options(self, image: Image.Image) -> dict:
        return {"quality": self.quality, "optimize": True}


class Jpeg2000(_PillowCodec):
    """Lossy JPEG 2000 (OpenJPEG via Pillow, 9/7 wavelet) as a bare codestream (``.j2k``).

    The knob is the compression ratio against the raw 8-bit samples: ratio 20 on an RGB image
    targets 24/20 = 1.2 bpp.  Ratio 1 puts no limit on the rate.  RGB uses the colour transform
    (``mct=1``); the raw codestream skips the ~85-byte JP2 box header.
    """

    name = "jpeg2000"
    suffix = ".j2k"
    label = "JPEG 2000"
    pillow_format = "JPEG2000"
    knob = Knob("ratio", 1.0, 2000.0, integer=False, bigger_files_upward=False)

    def __init__(self, ratio: float = 20.0):
        _require_pillow_feature("jpg_2000", "JPEG 2000")
        self.ratio = self.knob.check(ratio, self.name)

    def _options(self, image: Image.Image) -> dict:
        return {
            "irreversible": True,
            "quality_mode": "rates",
            "quality_layers": [self.ratio],
            "mct": 1 if image.mode == "RGB" else 0,
            "no_jp2": True,
        }


class WebP(_PillowCodec):
    """Lossy WebP (libwebp via Pillow) at its slowest, best-compressing method 6.

    WebP has no grey mode: a grey image is coded as RGB with neutral chroma, and ``decode``
    reports a file whose pixels all have R == B and |G - R| <= 1 (what neutral chroma decodes
    to) as grey.  So an RGB image whose reconstruction is exactly achromatic comes back with
    C = 1; this is the only codec here that cannot record C in the file.
    """

    name = "webp"
    suffix = ".webp"
    label = "WebP"
    pillow_format = "WEBP"
    knob = Knob("quality", 0, 100, integer=True, bigger_files_upward=True)

    def __init__(self, quality: int = 75):
        _require_pillow_feature("webp", "WebP")
        self.quality = self.knob.check(quality, self.name)

    def _options(self, image: Image.Image) -> dict:
        return {"quality": self.quality, "method": 6}

    def decode(self, data: bytes) -> np.ndarray:
        pixels = super().decode(data)
        return _grey_if_neutral(pixels)


class Avif(_PillowCodec):
    """AVIF (libavif/AV1 via Pillow's built-in plugin), 4:2:0 for RGB and 4:0:0 for grey.

    ``speed`` (0 slowest .. 10 fastest) defaults to Pillow's 6; on 96×128 crops speed 0 was
    ~50× slower with no consistent gain in size (within ±1%).
    """

    name = "avif"
    suffix = ".avif"
    label = "AVIF"
    pillow_format = "AVIF"
    knob = Knob("quality", 0, 100, integer=True, bigger_files_upward=True)

    def __init__(self, quality: int = 75, speed: int = 6):
        _require_pillow_feature("avif", "AVIF")
        self.quality = self.knob.check(quality, self.name)
        self.speed = Knob("speed", 0, 10, integer=True, bigger_files_upward=True).check(speed, self.name)

    def _options(self, image: Image.Image) -> dict:
        return {"quality": self.quality, "speed": self.speed}


class Heic(_PillowCodec):
    """HEIC: HEVC intra coding in a HEIF file (libheif/x265 via pillow-heif), our stand-in for BPG.

    The quality scale is libheif's 0..100 (pillow-heif's -1, lossless, is not offered: this is
    a lossy baseline).  Grey images are stored as monochrome HEVC.
    """

    name = "heic"
    suffix = ".heic"
    label = "HEIC"
    knob = Knob("quality", 0, 100, integer=True, bigger_files_upward=True)

    def __init__(self, quality: int = 75):
        self._heif = _require_module("pillow_heif", "pillow-heif", self.label)
        self.quality = self.knob.check(quality, self.name)

    def _save(self, image: Image.Image, buffer: io.BytesIO) -> None:
        self._heif.from_pillow(image).save(buffer, quality=self.quality)

    def _open(self, data: bytes) -> Image.Image:
        if not self._heif.get_file_mimetype(data).startswith(("image/heic", "image/heif")):
            raise ValueError("not a HEIC/HEIF file")
        return self._heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True).to_pillow()


class JpegXL(_PillowCodec):
    """Lossy JPEG XL (libjxl via pillow-jxl-plugin) as a bare codestream.

    The knob is libjxl's quality 0..99, which it maps to a Butteraugli distance; 100 would need
    lossless mode.  ``effort`` (1..9) defaults to libjxl's 7.  File size is not strictly monotone
    in quality on small images (steps of a few per cent back down occur).
    """

    name = "jxl"
    suffix = ".jxl"
    label = "JPEG XL"
    pillow_format = "JXL"
    knob = Knob("quality", 0, 99, integer=True, bigger_files_upward=True)

    def __init__(self, quality: int = 75, effort: int = 7):
        _require_module("pillow_jxl", "pillow-jxl-plugin", self.label)
        self.quality = self.knob.check(quality, self.name)
        self.effort = Knob("effort", 1, 9, integer=True, bigger_files_upward=False).check(effort, self.name)

    def _options(self, image: Image.Image) -> dict:
        return {"quality": self.quality, "effort": self.effort, "lossless": False}


CLASSICAL_IMAGE_CODECS: dict[str, type[_PillowCodec]] = {
    "jpeg": Jpeg,
    "jpeg2000": Jpeg2000,
    "webp": WebP,
    "avif": Avif,
    "heic": Heic,
    "jxl": JpegXL,
}


def encode_at_bpp(name: str, image: np.ndarray, bpp: float) -> tuple[bytes, float]:
    """The best-quality file of codec ``name`` whose size is at most ``bpp`` bits per pixel.

    Binary search on the codec's knob, bpp = 8 * len(file) / (H * W): exact over the integers
    for quality knobs (~log2(range) + 2 encodes), 20 bisection steps on log(ratio) for JPEG 2000.
    Returns ``(file bytes, knob value)``.  The search ends on a setting that fits next to one
    that does not, so where size is not monotone in the knob (JPEG XL) a better setting further
    up may also fit.  When even the lowest-quality setting is over budget, its (smallest) file
    is returned anyway: its bpp is above ``bpp``, and callers compare the measured bpp.
    """
    codec_class = _lookup(name)
    _check_image(image, name)
    if not (isinstance(bpp, (int, float, np.integer, np.floating)) and math.isfinite(bpp) and bpp > 0):
        raise UserError(f"{name}: target bpp must be a positive number, got {bpp!r}")
    knob = codec_class.knob
    budget_bits = bpp * image.shape[0] * image.shape[1]

    def attempt(value: float) -> tuple[bytes, bool]:
        data = codec_class(**{knob.name: value}).encode(image)
        return data, 8 * len(data) <= budget_bits

    fit, fits = attempt(knob.smallest)
    if not fits:
        return fit, knob.smallest
    best, fits = attempt(knob.largest)
    if fits:
        return best, knob.largest
    fit_value, over_value = knob.smallest, knob.largest
    steps = math.ceil(math.log2(knob.hi - knob.lo)) if knob.integer else _RATIO_STEPS
    for _ in range(steps):
        value = _midpoint(knob, fit_value, over_value)
        if value is None:
            break
        data, fits = attempt(value)
        if fits:
            fit, fit_value = data, value
        else:
            over_value = value
    return fit, fit_value


def _midpoint(knob: Knob, fit_value: float, over_value: float) -> float | None:
    """The setting halfway between a fitting and an over-budget one (geometric for the ratio);
    None once two integer settings are adjacent."""
    if knob.integer:
        return None if abs(over_value - fit_value) <= 1 else (fit_value + over_value) // 2
    return math.sqrt(fit_value * over_value)


def _lookup(name: str) -> type[_PillowCodec]:
    try:
        return CLASSICAL_IMAGE_CODECS[name]
    except KeyError:
        raise UserError(f"unknown classical image codec {name!r}; choose from {', '.join(CLASSICAL_IMAGE_CODECS)}") from None


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__


def _check_image(x: object, codec: str) -> np.ndarray:
    """``x`` if it is a non-empty uint8 (H, W, C) array with C in {1, 3}; UserError otherwise."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 3 and x.shape[2] in (1, 3) and x.size):
        raise UserError(f"{codec}: expects a non-empty uint8 image array of shape (H, W, C) with C = 1 or 3, got a {_describe(x)}")
    return x


def _to_pil(x: np.ndarray, codec: str) -> Image.Image:
    x = _check_image(x, codec)
    if x.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(x[:, :, 0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(x), mode="RGB")


def _to_array(image: Image.Image) -> np.ndarray:
    """A decoded image as uint8 (H, W, C): grey modes give C = 1, everything else RGB."""
    grey = image.getbands() in (("L",), ("L", "A"), ("1",), ("I",), ("I;16",))
    if grey:
        return np.array(image.convert("L"), dtype=np.uint8)[:, :, None]
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _grey_if_neutral(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[2] != 3:
        return pixels
    red, green, blue = (pixels[:, :, i].astype(np.int16) for i in range(3))
    if np.array_equal(red, blue) and np.abs(green - red).max() <= 1:
        return np.array(Image.fromarray(pixels, mode="RGB").convert("L"))[:, :, None]
    return pixels


def _require_module(module: str, package: str, label: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"the {label} codec needs the {package} package: pip install {package}") from exc


def _require_pillow_feature(feature: str, label: str) -> None:
    if not features.check(feature):
        raise UserError(f"this Pillow was built without {label} support; install a Pillow wheel that has it")
