"""Reading one cell image, the same way whatever its format.

Every model, plot and check reads pixels through :func:`read_image`, so BMP, PNG, JPEG and TIFF
files give identical arrays: ``uint8``, shape ``(H, W, 3)``, RGB. Anything else is converted
*with a warning that names the file* (grayscale, alpha, palette, 16-bit, CMYK), because a silent
conversion can change what a model sees without anyone noticing. Broken files raise
:class:`ImageReadError`, whose message says which file, what is wrong and what to do.

The C-NMC final-test images are 600x600 while every training image is 450x450; they are centre
cropped to 450x450 here (see :func:`read_image`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: File extensions treated as images everywhere in the library (lower case).
IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Pillow format names of the formats C-NMC data is found in (BMP originals, re-encoded copies).
KNOWN_FORMATS = ("BMP", "PNG", "JPEG", "MPO", "TIFF")
#: Training and preliminary-test images are this size; final-test images are FINAL_TEST_SIZE.
CNMC_SIZE = 450
FINAL_TEST_SIZE = 600


class ImageReadError(ValueError):
    """A file that cannot be read as an image: the message names the file, the problem, the fix."""


class ImageConversionWarning(UserWarning):
    """An image was converted to 8-bit RGB (the warning names the file and the conversion)."""


@dataclass(frozen=True)
class ImageInfo:
    """What a fully decoded file is, before any conversion (used by the dataset checks)."""

    path: str
    format: str
    mode: str
    width: int
    height: int
    bits16: bool  # 16 bits per channel in the file (Pillow may already have reduced it)
    #: what :func:`read_image` changes to make it 8-bit RGB (its warnings, without the path)
    conversions: tuple[str, ...] = ()


def is_image_name(name: str | os.PathLike) -> bool:
    """True for file names with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return str(name).lower().endswith(IMAGE_EXTENSIONS)


def _sniff(head: bytes) -> str:
    """A hint for files that are not images, from their first bytes (common download accidents)."""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return (
            " It is an HTML page: a download probably saved an error or login page instead of "
            "the image. Download the file again."
        )
    if text.startswith(b"version https://git-lfs"):
        return " It is a Git LFS pointer, not the image: run `git lfs pull` in that repository."
    return ""


def _open_loaded(path: Path) -> tuple[Image.Image, bool]:
    """Open and fully decode ``path``; map every failure to an ImageReadError with a fix."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image file. Check the path (or re-index the dataset).")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file.")
    if path.stat().st_size == 0:
        raise ImageReadError(
            f"{path}: the file is empty (0 bytes), probably from an interrupted download or copy. "
            "Fetch or copy it again, or remove it from the dataset."
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both are refused
            # here, with the file's name, before any pixel is decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(
            f"{path}: the file claims an image far too large to be a cell picture ({error}). "
            "It is probably corrupt or not a microscope image (C-NMC images are 450x450 or "
            "600x600): remove it from the dataset."
        ) from None
    except UnidentifiedImageError:
        with open(path, "rb") as handle:
            hint = _sniff(handle.read(64))
        raise ImageReadError(
            f"{path}: not an image Pillow can read (expected BMP, PNG, JPEG or TIFF).{hint or ' '}"
            + ("" if hint else "Replace the file with a valid image or remove it from the dataset.")
        ) from None
    # 16-bit detection must look at the raw mode before load() replaces the tile list.
    bits16 = image.mode.startswith("I;16") or any(";16" in str(tile.args) for tile in image.tile)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(
            f"{path}: the image data is truncated or corrupt ({error}). "
            "Download or copy the file again, or remove it from the dataset."
        ) from None
    return image, bits16


def inspect_image(path: str | os.PathLike) -> ImageInfo:
    """Decode ``path`` completely (so truncation is caught) and report format, mode, size and
    the conversions :func:`read_image` would warn about (16-bit, CMYK, alpha, grayscale...)."""
    path = Path(path)
    image, bits16 = _open_loaded(path)
    with image:
        conversions: list[str] = []
        _as_rgb_array(image, path, bits16, conversions)
        return ImageInfo(str(path), image.format or "?", image.mode, image.width, image.height, bits16,
                         tuple(conversions))


def _warn(path: Path, what: str, enabled) -> None:
    """Warn about a conversion; ``enabled`` may be a list, which collects ``what`` instead."""
    if isinstance(enabled, list):
        enabled.append(what)
    elif enabled:
        warnings.warn(f"{path}: {what}", ImageConversionWarning, stacklevel=4)


def _sixteen_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit (or 32-bit integer) values to 0..255: full range 65535 maps to 255."""
    return np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    """Float images: values in [0, 1] are scaled by 255, larger ranges are clipped to 0..255."""
    array = np.nan_to_num(array.astype(np.float64))
    if array.size and array.max() <= 1.0:
        array = array * 255.0
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _over_black(rgba: np.ndarray) -> np.ndarray:
    """Composite RGBA onto black: transparent pixels become the black C-NMC background."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgba[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


def _to_rgb(image: Image.Image, path: Path, bits16: bool, warn: bool) -> np.ndarray:
    """Convert any Pillow mode to a uint8 RGB array, warning about every real conversion."""
    mode = image.mode
    if mode == "RGB":
        if bits16:
            _warn(path, "16 bits per channel reduced to 8 bits (high byte kept)", warn)
        return np.asarray(image, dtype=np.uint8)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        gray = _sixteen_to_uint8(np.asarray(image))
        _warn(path, f"16-bit grayscale (mode {mode}) scaled to 8 bits (value/257) and repeated to RGB", warn)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        _warn(path, "32-bit float grayscale scaled to 8 bits and repeated to RGB", warn)
        return np.repeat(_float_to_uint8(np.asarray(image))[..., None], 3, axis=2)
    if mode in ("1", "L"):
        _warn(path, f"grayscale (mode {mode}) converted to RGB by repeating the channel", warn)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        _warn(path, f"alpha channel (mode {mode}) composited onto black, the C-NMC background", warn)
        return _over_black(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    if mode == "P":
        _warn(path, "palette image converted to RGB", warn)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    _warn(path, f"mode {mode} converted to RGB", warn)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def center_crop_final(array: np.ndarray) -> np.ndarray:
    """Centre 450x450 of a 600x600 image; any other size is returned unchanged."""
    if array.shape[:2] != (FINAL_TEST_SIZE, FINAL_TEST_SIZE):
        return array
    start = (FINAL_TEST_SIZE - CNMC_SIZE) // 2
    return array[start : start + CNMC_SIZE, start : start + CNMC_SIZE]


def read_image(path: str | os.PathLike, *, warn: bool = True) -> np.ndarray:
    """Read one image file as a ``uint8`` RGB array of shape ``(H, W, 3)``.

    - BMP, PNG, JPEG and TIFF give identical arrays for identical pixels. JPEG EXIF rotation is
      applied, so the array looks like the picture a viewer shows.
    - Grayscale, alpha (composited onto black), palette, 16-bit (scaled to 8 bits), CMYK and
      other modes are converted with an :class:`ImageConversionWarning` naming the file and the
      conversion (``warn=False`` silences it). Multi-page TIFFs give their first page, with a warning.
    - A 600x600 image is centre-cropped to 450x450. The C-NMC final-test images are 600x600
      while all training and preliminary-test images are 450x450 with the cell centred on black;
      the winning team cropped them the same way, so a model trained on 450x450 sees cells at
      the same scale. No other size is changed.
    - Zero-byte, truncated and non-image files raise :class:`ImageReadError` (a ValueError)
      naming the file, the problem and the fix; a missing file raises FileNotFoundError.
    """
    path = Path(path)
    image, bits16 = _open_loaded(path)
    with image:
        array = _as_rgb_array(image, path, bits16, warn)
    return np.ascontiguousarray(center_crop_final(array))


def _as_rgb_array(image: Image.Image, path: Path, bits16: bool, warn) -> np.ndarray:
    """The decoded ``image`` as uint8 RGB, warning (or collecting, see :func:`_warn`) every change."""
    if getattr(image, "n_frames", 1) > 1:
        _warn(path, f"{image.n_frames} pages/frames: only the first one is used", warn)
    if image.format not in KNOWN_FORMATS:
        _warn(path, f"{image.format} is not a C-NMC format (BMP/PNG/JPEG/TIFF); read anyway", warn)
    if image.format in ("JPEG", "MPO"):
        rotated = ImageOps.exif_transpose(image)
        if rotated is not image:
            image = rotated
    return _to_rgb(image, path, bits16, warn)
