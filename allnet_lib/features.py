"""Hand-crafted cell features: what a haematologist looks at, measured by a small program.

A classical baseline ("what a CNN has to beat", :mod:`allnet_lib.baseline`) needs numbers that
describe one segmented cell. :func:`cell_features` computes :data:`FEATURE_NAMES` from one
``uint8`` RGB image with a single cell on a black background (the C-NMC format):

1. **Segmentation.** The image is reduced to about :data:`FEATURE_SIZE` pixels a side by
   averaging blocks of *cell* pixels only (a pixel is cell when its brightest channel is above
   :data:`BLACK_LEVEL`), so the black background never darkens the cell's edge. The cell is the
   largest connected non-black region, holes filled. The nucleus is the stained part of it: the
   optical density ``OD = -log((I + 1) / 256)`` summed over R, G, B, lightly smoothed, thresholded
   with Otsu's method *within the cell*, largest region kept and holes filled. When the two Otsu
   classes differ by less than :data:`MIN_NUCLEUS_CONTRAST` in OD the whole cell is taken as
   nucleus (no visible cytoplasm).
2. **Size**: cell and nucleus area and equivalent diameter, in pixels of the image as read
   (450x450 for C-NMC), the nucleus share of the cell and the nucleus-to-cytoplasm (N:C) ratio.
3. **Outline**: circularity ``4 pi A / P^2`` (1 for a disc; the perimeter ``P`` is the count of
   boundary edges times pi/4, exact for convex digital shapes on average), solidity (area over
   convex-hull area, :class:`scipy.spatial.ConvexHull`), eccentricity from second moments, and
   how far the nucleus sits from the cell's centre.
4. **Colour**: mean OD of each channel in nucleus and cytoplasm, the spread of OD in each, and
   the nucleus-cytoplasm contrast.
5. **Texture**: the standard deviation of high-pass OD. Fine: at full resolution, OD minus its
   Gaussian blur (sigma :data:`FINE_SIGMA` px of a 450-px image), inside the nucleus and the
   cytoplasm eroded by the kernel's reach (so neither the other region nor the background
   enters). Coarse: on the reduced grid, OD minus its blur within the nucleus (sigma
   :data:`COARSE_SIGMA` px of a 450-px image): clumped chromatin. And their ratio.

:func:`feature_table` does this for every row of an index table, in parallel for big tables, in
row order (the result does not depend on the number of processes). About 11-15 ms of CPU per
450x450 BMP (reading included). Only NumPy and SciPy are used.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import ConvexHull

#: Target side of the reduced copy used for segmentation and shape (450 -> 150, factor 3).
FEATURE_SIZE = 150
#: A pixel belongs to the cell when its brightest channel is above this (C-NMC backgrounds are 0).
BLACK_LEVEL = 10
#: Below this difference of mean OD (sum of R, G, B) between the two Otsu classes of a cell,
#: no separate nucleus is found and the whole cell counts as nucleus.
MIN_NUCLEUS_CONTRAST = 0.3
#: Tables at least this long are processed in parallel by default.
PARALLEL_FROM = 200
DEFAULT_WORKERS = 2
#: Texture scales (Gaussian sigmas) in pixels of a 450-pixel image, scaled with the image side.
FINE_SIGMA = 1.0
COARSE_SIGMA = 6.0
TRUNCATE = 2.5  # Gaussian kernels reach TRUNCATE sigmas
_REFERENCE_SIDE = 450
#: Optical density of each 8-bit intensity, -log((I + 1) / 256).
_OD_TABLE = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)

#: Name -> what it measures. Lengths and areas are in pixels of the image as read.
FEATURE_DESCRIPTIONS: dict[str, str] = {
    "cell_area": "cell area (pixels)",
    "nucleus_area": "nucleus area (pixels)",
    "cell_diameter": "diameter of a disc with the cell's area (pixels)",
    "nucleus_diameter": "diameter of a disc with the nucleus's area (pixels)",
    "nucleus_fraction": "nucleus area / cell area",
    "nc_ratio": "nucleus area / cytoplasm area (the N:C ratio)",
    "cell_circularity": "4 pi area / perimeter^2 of the cell (1 = disc)",
    "cell_solidity": "cell area / area of its convex hull (1 = convex)",
    "cell_eccentricity": "eccentricity of the cell's moment ellipse (0 = round)",
    "nucleus_circularity": "4 pi area / perimeter^2 of the nucleus",
    "nucleus_solidity": "nucleus area / area of its convex hull (lobes, clefts lower it)",
    "nucleus_eccentricity": "eccentricity of the nucleus's moment ellipse",
    "nucleus_offset": "distance of nucleus centre from cell centre / cell radius",
    "nucleus_od_red": "mean optical density of the red channel in the nucleus",
    "nucleus_od_green": "mean optical density of the green channel in the nucleus",
    "nucleus_od_blue": "mean optical density of the blue channel in the nucleus",
    "cytoplasm_od_red": "mean optical density of the red channel in the cytoplasm",
    "cytoplasm_od_green": "mean optical density of the green channel in the cytoplasm",
    "cytoplasm_od_blue": "mean optical density of the blue channel in the cytoplasm",
    "nucleus_od_std": "standard deviation of total OD in the nucleus",
    "cytoplasm_od_std": "standard deviation of total OD in the cytoplasm",
    "nucleus_cytoplasm_contrast": "mean total OD of the nucleus minus that of the cytoplasm",
    "nucleus_texture_fine": "std of fine high-pass OD in the nucleus (open chromatin, nucleoli)",
    "nucleus_texture_coarse": "std of coarse band-pass OD in the nucleus (clumped chromatin)",
    "cytoplasm_texture_fine": "std of fine high-pass OD in the cytoplasm",
    "nucleus_texture_ratio": "fine / coarse nucleus texture (open vs clumped chromatin)",
}
#: The order of :func:`cell_features`' output and of :func:`feature_table`'s columns.
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_DESCRIPTIONS)


@dataclass(frozen=True)
class Segmentation:
    """Masks on the reduced grid of the cell's window (``factor`` x ``factor`` image pixels per
    grid pixel; ``window`` = (y0, y1, x0, x1) in image pixels), and the window's optical density."""

    cell: np.ndarray  # bool (h, w)
    nucleus: np.ndarray  # bool (h, w), inside cell
    od: np.ndarray  # float32 (h, w, 3): optical density of the block means of cell pixels
    factor: int
    threshold: float | None  # Otsu threshold on total OD; None when no nucleus contrast was found
    window: tuple[int, int, int, int]
    image_shape: tuple[int, int]

    @property
    def cytoplasm(self) -> np.ndarray:
        return self.cell & ~self.nucleus

    def upsampled(self, part: str, *, full: bool = True) -> np.ndarray:
        """Mask ``part`` ("cell", "nucleus" or "cytoplasm") at image resolution: the whole image
        (``full=True``, e.g. to draw outlines) or only the window."""
        small = getattr(self, part)
        f = self.factor
        mask = np.repeat(np.repeat(small, f, axis=0), f, axis=1) if f > 1 else small
        if not full:
            return mask
        y0, y1, x0, x1 = self.window
        out = np.zeros(self.image_shape, bool)
        out[y0:y1, x0:x1] = mask
        return out


# ----------------------------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------------------------


def _where(source) -> str:
    return f"{source}: " if source is not None else ""


def _check_image(image, source) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{_where(source)}expected a uint8 RGB image of shape (H, W, 3), got "
                         f"{image.dtype} {image.shape}; read files with allnet_lib.imageio.read_image")
    if min(image.shape[:2]) < 8:
        raise ValueError(f"{_where(source)}image of {image.shape[0]}x{image.shape[1]} pixels is too "
                         "small to measure a cell (8x8 at least)")
    return image


def _factor(image: np.ndarray, size: int) -> int:
    return max(1, int(round(min(image.shape[:2]) / size)))


def _foreground(image: np.ndarray) -> np.ndarray:
    """Cell (non-black) pixels: brightest channel above :data:`BLACK_LEVEL`."""
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2]) > BLACK_LEVEL


def _cell_window(fg: np.ndarray, factor: int) -> tuple[int, int, int, int]:
    """Bounding box of the non-black pixels, one block of margin, aligned to ``factor``."""
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    h, w = fg.shape[0] // factor, fg.shape[1] // factor
    y0, x0 = max(rows[0] // factor - 1, 0), max(cols[0] // factor - 1, 0)
    y1, x1 = min(rows[-1] // factor + 2, h), min(cols[-1] // factor + 2, w)
    return y0 * factor, y1 * factor, x0 * factor, x1 * factor


def _reduce(crop: np.ndarray, fg: np.ndarray, factor: int):
    """Block means of the cell (non-black) pixels, and each block's share of cell pixels."""
    if factor == 1:
        return crop.astype(np.float32) * fg[..., None], fg.astype(np.float32)
    masked = (crop * fg[..., None]).astype(np.uint16)
    count = fg.astype(np.uint16)
    # block sums as strided slice additions (much faster than summing over small reshaped axes)
    rows = sum(masked[k::factor] for k in range(factor))
    sums = sum(rows[:, k::factor] for k in range(factor)).astype(np.float32)
    crows = sum(count[k::factor] for k in range(factor))
    counts = sum(crows[:, k::factor] for k in range(factor)).astype(np.float32)
    return sums / np.maximum(counts, 1)[..., None], counts / factor**2


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of ``mask`` (ties: the first in scan order), holes filled."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


def _otsu(values: np.ndarray, bins: int = 128) -> tuple[float, float]:
    """Otsu's threshold of ``values`` and the difference of the two class means there."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-6:
        return hi, 0.0
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    k = int(np.argmax(between[:-1]))
    return float(edges[k + 1]), float(mean1[k] - mean0[k])


def _smooth_within(values: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``values`` using only the pixels of ``mask`` (normalised convolution)."""
    m = mask.astype(np.float32)
    num = ndimage.gaussian_filter(values * m, sigma, mode="constant")
    den = ndimage.gaussian_filter(m, sigma, mode="constant")
    return num / np.maximum(den, 1e-6)


def segment_cell(image, *, size: int = FEATURE_SIZE, source=None) -> Segmentation:
    """Cell and nucleus masks of one cell image (see the module text for the method).

    Raises ValueError naming ``source`` (a file name, for messages) when the image holds no cell.
    """
    image = _check_image(image, source)
    factor = _factor(image, size)
    fg_full = _foreground(image)
    y0, y1, x0, x1 = _cell_window(fg_full, factor)
    cell = np.zeros((0, 0), bool)
    if y1 > y0 and x1 > x0:
        mean, share = _reduce(image[y0:y1, x0:x1], fg_full[y0:y1, x0:x1], factor)
        cell = _largest(share >= 0.5)
    if cell.sum() < 4:
        raise ValueError(
            f"{_where(source)}no cell found: the image is black (brightest channel <= {BLACK_LEVEL}) "
            "almost everywhere. Expected one segmented cell on a black background; check the file "
            "(or its segmentation) or leave it out of the table.")
    od = -np.log((mean + 1.0) / 256.0).astype(np.float32)
    total = _smooth_within(od.sum(axis=2), cell, 1.0)
    inner = ndimage.binary_erosion(cell)
    region = inner if inner.sum() >= 16 else cell
    threshold, contrast = _otsu(total[region])
    facts = dict(factor=factor, window=(y0, y1, x0, x1), image_shape=image.shape[:2])
    if contrast < MIN_NUCLEUS_CONTRAST:
        return Segmentation(cell, cell.copy(), od, threshold=None, **facts)
    nucleus = _largest(ndimage.binary_opening(cell & (total > threshold))) & cell
    if not nucleus.any():
        nucleus = _largest(cell & (total > threshold)) & cell
    return Segmentation(cell, nucleus, od, threshold=threshold, **facts)


# ----------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------


def _perimeter(mask: np.ndarray) -> float:
    """Boundary length: horizontal plus vertical pixel-edge crossings times pi/4."""
    m = np.pad(mask, 1).astype(np.int8)
    crossings = np.abs(np.diff(m, axis=0)).sum() + np.abs(np.diff(m, axis=1)).sum()
    return float(crossings) * math.pi / 4


def _hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the mask's pixels (as unit squares): the hull of the outer
    corners of each row's first and last pixel."""
    rows = np.flatnonzero(mask.any(axis=1))
    sub = mask[rows]
    left = np.argmax(sub, axis=1)
    right = sub.shape[1] - np.argmax(sub[:, ::-1], axis=1)
    corners = np.concatenate([np.stack([rows, left], 1), np.stack([rows + 1, left], 1),
                              np.stack([rows, right], 1), np.stack([rows + 1, right], 1)]).astype(float)
    return float(ConvexHull(corners).volume)


def _moments(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Centroid and eccentricity of the moment ellipse."""
    ys, xs = np.nonzero(mask)
    centre = np.array([ys.mean(), xs.mean()])
    if ys.size < 3:
        return centre, 0.0
    eig = np.sort(np.linalg.eigvalsh(np.cov(np.stack([ys, xs]).astype(float))))
    ecc = math.sqrt(max(0.0, 1.0 - eig[0] / eig[1])) if eig[1] > 0 else 0.0
    return centre, ecc


def _shape(mask: np.ndarray) -> tuple[float, float, float]:
    """circularity, solidity, eccentricity of a non-empty mask."""
    area = float(mask.sum())
    perimeter = _perimeter(mask)
    circularity = 4 * math.pi * area / perimeter**2 if perimeter > 0 else 0.0
    solidity = area / _hull_area(mask)
    return circularity, min(solidity, 1.0), _moments(mask)[1]


def _eroded(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` eroded ``steps`` times, or ``mask`` itself when nothing would be left."""
    inner = ndimage.binary_erosion(mask, iterations=steps) if steps > 0 else mask
    return inner if inner.sum() >= 4 else mask


def _textures(image: np.ndarray, seg: Segmentation) -> tuple[float, float, float]:
    """(nucleus fine, nucleus coarse, cytoplasm fine) texture: standard deviations of high-pass
    OD. Fine: full resolution, OD minus its Gaussian blur, on regions eroded by the kernel's
    reach plus one grid pixel (so neither the other region nor the background enters). Coarse:
    on the reduced grid, OD minus its blur within the nucleus, on the nucleus less one pixel."""
    f = seg.factor
    scale = min(seg.image_shape) / _REFERENCE_SIDE
    sigma = max(FINE_SIGMA * scale, 0.5)
    steps = math.ceil(int(TRUNCATE * sigma + 0.5) / f) + 1  # + 1: the blocky masks' edges
    y0, y1, x0, x1 = seg.window
    crop = image[y0:y1, x0:x1]
    od = _OD_TABLE[crop[..., 0]] + _OD_TABLE[crop[..., 1]] + _OD_TABLE[crop[..., 2]]
    high = od - ndimage.gaussian_filter(od, sigma, truncate=TRUNCATE)
    fg = _foreground(crop)

    def fine(part: np.ndarray) -> float:
        if not part.any():
            return 0.0
        inner = _eroded(part, steps)
        if f > 1:
            inner = np.repeat(np.repeat(inner, f, axis=0), f, axis=1)
        values = high[inner & fg]
        return float(values.std()) if values.size > 1 else 0.0

    coarse = 0.0
    if seg.nucleus.any():
        total = seg.od.sum(axis=2)
        band = total - _smooth_within(total, seg.nucleus, max(COARSE_SIGMA * scale / f, 0.5))
        values = band[_eroded(seg.nucleus, 1)]
        coarse = float(values.std()) if values.size > 1 else 0.0
    return fine(seg.nucleus), coarse, fine(seg.cytoplasm)


def cell_features(image, *, size: int = FEATURE_SIZE, source=None) -> np.ndarray:
    """The :data:`FEATURE_NAMES` of one cell image, as a float64 array in that order.

    ``image``: ``uint8`` RGB, one cell on a black background (as :func:`imageio.read_image`
    gives). ``source`` (e.g. the file path) only names the image in error messages. Deterministic.
    """
    image = _check_image(image, source)
    seg = segment_cell(image, size=size, source=source)
    f = seg.factor
    px = float(f * f)
    cell, nucleus, cyto = seg.cell, seg.nucleus, seg.cytoplasm
    cell_area = float(cell.sum()) * px
    nucleus_area = float(nucleus.sum()) * px
    cyto_area = float(cyto.sum()) * px
    out = {
        "cell_area": cell_area,
        "nucleus_area": nucleus_area,
        "cell_diameter": 2 * math.sqrt(cell_area / math.pi),
        "nucleus_diameter": 2 * math.sqrt(nucleus_area / math.pi),
        "nucleus_fraction": nucleus_area / cell_area,
        "nc_ratio": nucleus_area / max(cyto_area, px),
    }
    out["cell_circularity"], out["cell_solidity"], out["cell_eccentricity"] = _shape(cell)
    if nucleus.any():
        out["nucleus_circularity"], out["nucleus_solidity"], out["nucleus_eccentricity"] = _shape(nucleus)
        c_cell, _ = _moments(cell)
        c_nuc, _ = _moments(nucleus)
        radius = math.sqrt(cell.sum() / math.pi)
        out["nucleus_offset"] = float(np.hypot(*(c_nuc - c_cell))) / radius
    else:
        out.update(nucleus_circularity=0.0, nucleus_solidity=0.0, nucleus_eccentricity=0.0,
                   nucleus_offset=0.0)

    od = seg.od
    total = od.sum(axis=2)
    for part, mask in (("nucleus", nucleus), ("cytoplasm", cyto)):
        has = bool(mask.any())
        for k, channel in enumerate(("red", "green", "blue")):
            out[f"{part}_od_{channel}"] = float(od[..., k][mask].mean()) if has else 0.0
        out[f"{part}_od_std"] = float(total[mask].std()) if has else 0.0
    out["nucleus_cytoplasm_contrast"] = (
        float(total[nucleus].mean() - total[cyto].mean()) if nucleus.any() and cyto.any() else 0.0)

    (out["nucleus_texture_fine"], out["nucleus_texture_coarse"],
     out["cytoplasm_texture_fine"]) = _textures(image, seg)
    out["nucleus_texture_ratio"] = out["nucleus_texture_fine"] / max(out["nucleus_texture_coarse"], 1e-6)
    values = np.array([out[name] for name in FEATURE_NAMES], dtype=np.float64)
    if not np.isfinite(values).all():  # should not happen; a clear message if it does
        bad = [n for n, v in zip(FEATURE_NAMES, values) if not np.isfinite(v)]
        raise ValueError(f"{_where(source)}features {bad} are not finite; the cell could not be "
                         "measured (check the image)")
    return values


# ----------------------------------------------------------------------------------------------
# many images
# ----------------------------------------------------------------------------------------------


def _features_of_file(task) -> np.ndarray:
    """Worker: read one file and measure it (module level, so it pickles)."""
    from allnet_lib.imageio import read_image

    path, size = task
    return cell_features(read_image(path), size=size, source=path)


def _mp_context():
    """``fork`` when safe (Linux, no threads of TensorFlow/JAX/PyTorch running), else ``spawn``."""
    import sys
    import threading

    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and t.name != "tqdm_monitor"]
    threaded = bool(others) or any(m in sys.modules for m in ("tensorflow", "jax", "torch"))
    return get_context("spawn" if threaded or sys.platform != "linux" else "fork")


def feature_table(table: pd.DataFrame, *, progress: bool = True, workers: int | None = None,
                  size: int = FEATURE_SIZE) -> pd.DataFrame:
    """:data:`FEATURE_NAMES` of every image of ``table`` (an index table with a ``path`` column).

    One row per row of ``table``, same index, in the same order; the values do not depend on
    ``workers`` (default: :data:`DEFAULT_WORKERS` processes for tables of :data:`PARALLEL_FROM`
    rows or more, else 1). A file that cannot be read raises :class:`imageio.ImageReadError`, an
    image without a cell a ValueError; both name the file.
    """
    from tqdm.auto import tqdm

    if "path" not in table.columns:
        raise ValueError("feature_table: the table has no 'path' column; pass an index table "
                         "(allnet_lib.reader.index_dataset(...).table) or a split part")
    paths = table["path"].astype(str).tolist()
    if workers is None:
        workers = min(DEFAULT_WORKERS, os.cpu_count() or 1) if len(paths) >= PARALLEL_FROM else 1
    workers = max(1, int(workers))
    tasks = [(p, int(size)) for p in paths]
    rows: list[np.ndarray] = []
    with tqdm(total=len(tasks), desc="cell features", unit="img", disable=not progress) as bar:
        if workers == 1 or len(tasks) < 2:
            for task in tasks:
                rows.append(_features_of_file(task))
                bar.update()
        else:
            chunk = max(1, min(32, len(tasks) // (4 * workers)))
            with ProcessPoolExecutor(workers, mp_context=_mp_context()) as pool:
                for values in pool.map(_features_of_file, tasks, chunksize=chunk):
                    rows.append(values)
                    bar.update()
    data = np.vstack(rows) if rows else np.empty((0, len(FEATURE_NAMES)))
    return pd.DataFrame(data, index=table.index, columns=list(FEATURE_NAMES))
