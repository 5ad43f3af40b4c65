"""Cropping the black border around a segmented cell.

The 2019 report cropped every 450x450 image to its central 400x400 "to the maximum possible
amount while making sure not to remove any part of the nucleus": less black border means more
of the cell survives the later resize to the network's input size. This module does that crop
(:func:`center_crop`), checks that it really loses nothing (:func:`check_crop` counts the cell
pixels a crop would cut), offers an automatic alternative (:func:`tight_crop`, a square box around
the cell), and runs the report's step over a whole folder tree (:func:`crop_folder`).

Sizes are in pixels. The report's 400 refers to a 450-pixel image; :func:`scaled_crop_size`
gives the same fraction at another size (96 -> 85), the rule ``allnet_lib.pipeline`` uses too.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where it is used: render workers start faster without it
    import pandas as pd


REFERENCE_SIZE = 450
REFERENCE_CROP = 400
BLACK_THRESHOLD = 10  # a pixel whose brightest channel is above this counts as cell, not background


def scaled_crop_size(image_size: int, size: int = REFERENCE_CROP, reference: int = REFERENCE_SIZE) -> int:
    """The crop that keeps the same fraction as ``size`` of ``reference`` (400 of 450) at ``image_size``."""
    return min(int(image_size), int(round(size * image_size / reference)))


def _check_image(image: np.ndarray, where: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3, 4):
        raise ValueError(
            f"{where}: expected an image (H, W), (H, W, C) or a batch (N, H, W, C), got shape {image.shape}"
        )
    return image


def _window(height: int, width: int, size: int, where: str) -> tuple[int, int]:
    """Top-left corner of the centred ``size`` square; the same rounding as the pipeline."""
    if size <= 0 or size > min(height, width):
        raise ValueError(
            f"{where}: crop size {size} does not fit an image of {height}x{width}; use a size between "
            f"1 and {min(height, width)} (for a smaller image than 450, scaled_crop_size(side) keeps "
            "the report's 400/450 fraction)"
        )
    return (height - size) // 2, (width - size) // 2


def _spatial_axes(image: np.ndarray) -> tuple[int, int]:
    """Which axes are height and width: (H, W[, C]) -> 0, 1 ; (N, H, W, C) -> 1, 2."""
    return (1, 2) if image.ndim == 4 else (0, 1)


def center_crop(image: np.ndarray, size: int = REFERENCE_CROP) -> np.ndarray:
    """The central ``size`` x ``size`` square of an image (H, W[, C]) or a batch (N, H, W, C).

    A view, no copy (pure function: the input is not modified). For an odd margin the extra
    pixel is left at the bottom/right, as in ``allnet_lib.pipeline``.
    """
    image = _check_image(image, "center_crop")
    ay, ax = _spatial_axes(image)
    top, left = _window(image.shape[ay], image.shape[ax], int(size), "center_crop")
    index = [slice(None)] * image.ndim
    index[ay], index[ax] = slice(top, top + size), slice(left, left + size)
    return image[tuple(index)]


def foreground(image: np.ndarray, threshold: int = BLACK_THRESHOLD) -> np.ndarray:
    """Boolean mask of cell pixels: the brightest channel is above ``threshold``."""
    image = np.asarray(image)
    has_channels = image.ndim == 4 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4))
    return (image.max(axis=-1) if has_channels else image) > threshold


def check_crop(image: np.ndarray, size: int = REFERENCE_CROP, *, threshold: int = BLACK_THRESHOLD):
    """How many cell (non-black) pixels a centre crop to ``size`` would cut away.

    0 means the crop is lossless. Returns an int for one image, an int array for a batch.
    """
    image = _check_image(image, "check_crop")
    mask = foreground(image, threshold)
    batch = mask.ndim == 3
    if not batch:
        mask = mask[None]
    top, left = _window(mask.shape[1], mask.shape[2], int(size), "check_crop")
    inside = mask[:, top : top + size, left : left + size].sum(axis=(1, 2))
    cut = mask.sum(axis=(1, 2)) - inside
    return cut.astype(int) if batch else int(cut[0])


def tight_crop(image: np.ndarray, *, margin: int = 10, threshold: int = BLACK_THRESHOLD) -> np.ndarray:
    """Square crop around the cell: its bounding box, made square, plus ``margin`` pixels.

    The square is centred on the cell; where it reaches past the image edge it is padded with
    black, so the cell is never distorted or cut. Cells differ in size, so the output size varies:
    resize afterwards (note that this removes cell size as a cue, unlike :func:`center_crop`).
    """
    image = _check_image(image, "tight_crop")
    if image.ndim == 4:
        raise ValueError("tight_crop: works on one image (H, W[, C]); the crop differs per image, loop over a batch")
    if margin < 0:
        raise ValueError(f"tight_crop: margin={margin} must be 0 or more")
    ys, xs = np.nonzero(foreground(image, threshold))
    if ys.size == 0:
        raise ValueError(
            f"tight_crop: no pixel is brighter than threshold={threshold}: the image is all black "
            "(an empty or failed segmentation?). Check the file, or lower the threshold."
        )
    side = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 + 2 * margin
    top = (ys.min() + ys.max() + 1 - side) // 2
    left = (xs.min() + xs.max() + 1 - side) // 2
    out = np.zeros((side, side) + image.shape[2:], image.dtype)
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(top + side, image.shape[0]), min(left + side, image.shape[1])
    out[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
    return out


# ----------------------------------------------------------------------------- folders


def _read(path: Path) -> np.ndarray:
    """Read through the library's reader (same pixels everywhere); Pillow if it is unavailable."""
    try:
        from allnet_lib.imageio import read_image
    except ImportError:  # pragma: no cover - only while imageio is being written
        from PIL import Image

        with Image.open(path) as handle:
            return np.asarray(handle.convert("RGB"))
    return read_image(path)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _write(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(image).save(path, **options)


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def crop_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    size: int = REFERENCE_CROP,
    progress: bool = True,
) -> pd.DataFrame:
    """The report's crop step over a folder tree: every image in ``src`` -> its centre crop in ``dst``.

    The relative structure and the file format are kept (``src/fold_0/all/x.bmp`` ->
    ``dst/fold_0/all/x.bmp``); other files (label CSVs) are copied unchanged. ``size`` is in
    pixels of a 450-pixel image and scales with other sizes (:func:`scaled_crop_size`).
    ``dst`` must not exist yet (nothing is overwritten): the output is written to a temporary
    sibling and renamed at the end. Images whose cell the crop would cut are still cropped,
    flagged in the table (``cut_pixels > 0``) and counted in a warning; unreadable images are
    listed with their ``error`` and not written.

    Nothing is passed over silently: a sub-folder that is a symbolic link (not followed), a
    folder that cannot be read and a dangling file link each get an ``error`` row too, and images
    that :func:`allnet_lib.imageio.read_image` converts (16-bit, CMYK, alpha, grayscale...) say
    so in ``conversion`` (instead of one warning per file).

    Returns one row per file: ``path``, ``output``, ``action`` (cropped/copied/error),
    ``height``, ``width``, ``crop``, ``cut_pixels``, ``error``, ``conversion``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    src, dst = Path(src).expanduser().absolute(), Path(dst).expanduser().absolute()
    if not src.is_dir():
        raise FileNotFoundError(f"crop_folder: source folder {src} does not exist (or is not a folder)")
    if _inside(dst, src) or _inside(src, dst):
        raise ValueError(f"crop_folder: output {dst} and source {src} overlap; write the crops outside the source tree")
    if dst.exists():
        raise FileExistsError(f"crop_folder: {dst} already exists; choose a new output folder or remove it first")
    files, skipped = _walk_files(src)
    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    rows = [dict(path=str(path), output=None, action="error", height=None, width=None, crop=None,
                 cut_pixels=None, error=reason, conversion=None) for path, reason in skipped]
    try:
        for path in tqdm(files, desc="cropping", unit="file", disable=not progress):
            rel = path.relative_to(src)
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            rows.append(_crop_one(path, out, dst / rel, size))
        tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    table = pd.DataFrame(rows, columns=CROP_COLUMNS).sort_values("path", kind="stable").reset_index(drop=True)
    _warn_about(table, dst)
    return table


CROP_COLUMNS = ["path", "output", "action", "height", "width", "crop", "cut_pixels", "error", "conversion"]


def _walk_files(src: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every file under ``src`` (sorted), and what was passed over with the reason: folders that
    are symbolic links (not followed: nothing is cropped twice), folders that cannot be read,
    file links whose target is gone."""
    files, skipped, unreadable = [], [], []
    for dirpath, dirnames, filenames in os.walk(src, onerror=unreadable.append):
        folder = Path(dirpath)
        for name in list(dirnames):
            if (folder / name).is_symlink():
                dirnames.remove(name)
                skipped.append((folder / name, "folder is a symbolic link; links are not followed, so "
                                "its images were NOT cropped. Crop the folder it points to, or copy it here."))
        dirnames.sort()
        for name in filenames:
            path = folder / name
            if path.is_file():
                files.append(path)
            else:
                skipped.append((path, "a link whose target is missing (or not a file): fix or remove it."))
    for error in unreadable:
        skipped.append((Path(error.filename or src), f"folder cannot be read ({error.strerror}): its "
                        "images were NOT cropped. Fix its permissions (e.g. chmod -R u+rX) and run again."))
    return sorted(files), skipped


def _crop_one(path: Path, tmp_out: Path, final_out: Path, size: int) -> dict:
    """Crop (or copy) one file into the temporary tree; return its table row."""
    row = dict(path=str(path), output=str(final_out), action="cropped", height=None, width=None,
               crop=None, cut_pixels=None, error=None, conversion=None)
    if not _is_image(path):
        shutil.copy2(path, tmp_out)
        row["action"] = "copied"
        return row
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = _read(path)
    except (OSError, ValueError) as exc:
        row.update(action="error", output=None, error=str(exc))
        return row
    from allnet_lib.imageio import ImageConversionWarning

    prefix = f"{path}: "
    notes = [str(w.message).removeprefix(prefix) for w in caught if issubclass(w.category, ImageConversionWarning)]
    for other in (w for w in caught if not issubclass(w.category, ImageConversionWarning)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    row["conversion"] = "; ".join(notes) or None
    height, width = image.shape[:2]
    crop = scaled_crop_size(min(height, width), size)
    row.update(height=height, width=width, crop=crop, cut_pixels=check_crop(image, crop))
    _write(np.ascontiguousarray(center_crop(image, crop)), tmp_out)
    return row


def _warn_about(table: pd.DataFrame, dst: Path) -> None:
    cut = table[table.cut_pixels.fillna(0) > 0]
    if len(cut):
        names = ", ".join(Path(p).name for p in cut.path[:5])
        warnings.warn(
            f"crop_folder: the crop cut cell pixels in {len(cut)} image(s) written to {dst} "
            f"(e.g. {names}); see the cut_pixels column, or use a larger size or tight_crop",
            stacklevel=3,
        )
    converted = table[table.conversion.notna()]
    if len(converted):
        warnings.warn(
            f"crop_folder: {len(converted)} image(s) were not 8-bit RGB and were converted when read "
            f"(e.g. {converted.path.iat[0]}: {converted.conversion.iat[0]}); see the conversion column",
            stacklevel=3,
        )
    errors = table[table.action == "error"]
    if len(errors):
        warnings.warn(
            f"crop_folder: {len(errors)} file(s) could not be read and were not written "
            f"(e.g. {errors.path.iat[0]}); see the error column",
            stacklevel=3,
        )
