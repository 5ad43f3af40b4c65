"""The built-in demo dataset: synthetic, C-NMC-like cell images that anyone can generate offline.

Why it exists: the real C-NMC 2019 data is about 10 GB behind a download that needs an account
or a mirror, and a course whose chapters only run after that download is a course few people
run. The demo set lets every chapter execute on any laptop (and in CI) in minutes, with the same
folder layout, file names and quirks as the real data, so the *same code* runs on both.

What it copies from the real data, on purpose (read :data:`DEMO_DESCRIPTION`):

- layout and names: ``C-NMC_training_data/fold_N/{all,hem}/UID_<subject>_<image>_<cell>_<label>.bmp``
  with one normal subject written lowercase (``h3``) as in the real data;
- one segmented cell per image on a pure black background, 450x450, the cell entirely inside the
  central 400x400 region (so the report's border crop loses nothing);
- blasts (``all``) and normal cells (``hem``) that differ the way they do under the microscope,
  with overlapping distributions, so a CNN can learn the task but not perfectly;
- people (subjects) with their own place between "normal-looking" and "blast-looking", their own
  tendencies and their own stain, focus and segmentation habits, so that a model can recognise a
  person and an image-level random split leaks (the lesson of the leakage chapter);
- 40 ALL and 20 normal subjects, about two ALL images for every normal one, skewed
  images-per-subject counts, three subject-disjoint folds.

Every image is seeded from ``(seed, subject, image index)``, so the output does not depend on the
number of worker processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

from allnet_lib.crop import scaled_crop_size  # noqa: F401  (re-exported: the demo's crop rule)
from allnet_lib.messages import option
from allnet_lib.paths import demo_dir
from allnet_lib.profiles import DEMO_IMAGES as DEFAULT_IMAGES

if TYPE_CHECKING:  # pandas is imported where it is used: render workers start faster without it
    import pandas as pd

log = logging.getLogger(__name__)

DEMO_VERSION = 3  # bump whenever the generated images change, so old sets are not reused
MANIFEST_NAME = "demo_manifest.json"
TRAINING_DIR = "C-NMC_training_data"
N_FOLDS = 3
REFERENCE_SIZE = 450  # the real training images are 450x450
REFERENCE_CROP = 400  # the report's centre crop
SUPPORTED_EXTS = ("bmp", "png", "tif", "jpg")

DEMO_DESCRIPTION = """\
The allnet demo dataset is SYNTHETIC. Its images are drawn by a small program
(allnet_lib.demo), not photographed: no patient, no microscope, no medical meaning. It exists
so that every chapter runs offline in minutes, and it is designed to teach the same lessons as
the real C-NMC 2019 data. Each choice imitates a fact of the real data:

* Same layout and file names as the real training set (C-NMC_training_data/fold_N/{all,hem}/
  UID_<subject>_<image>_<cell>_<label>.bmp), including a normal subject written lowercase
  ('h3'), so the code that reads the demo set reads the real one unchanged.
* One segmented cell per 450x450 image on a pure black background, always inside the central
  400x400 region, so the report's 450 -> 400 border crop is lossless.
* 60 subjects by default, 40 ALL and 20 normal (C-NMC's training set: 47 + 26), about two ALL
  images per normal one (C-NMC: 68 % ALL), a skewed number of images per subject (C-NMC: 9 to
  757) but no subject above 8 % of its class, three subject-disjoint folds.
* Blasts ('all') are drawn larger, with a thin rim of cytoplasm around a large nucleus, fine
  open chromatin, visible nucleoli and an irregular outline; normal cells ('hem') smaller,
  rounder, with dark clumped chromatin. Every feature overlaps between the classes.
* Each person sits somewhere on the normal-to-blast axis ('maturity'): most patients' cells look
  like blasts and most donors' like normal cells, but some patients' blasts look mature and some
  donors' cells look blast-like, as in real marrow and blood. A person also has their own
  tendencies in size, nucleus share, texture and outline, and one person's cells resemble each
  other more than two people's do.
* Each person's slide has its own stain colour and strength, brightness and focus, and their
  segmentation masks their own habits (drawn a little wider or tighter than the cell, ragged
  edges). C-NMC was stain-normalised by its organisers, but such residual differences remain.
  Together with the previous point this is what can let a model recognise a person, and so make
  a random image-level split leak; chapters 5 and 7 measure how much it helps on people seen
  in training.
Numbers measured on the demo set say how the code behaves, not how well a model detects leukemia.
"""

# The two ends of the maturity axis, in units of a 450-pixel image: a typical normal B cell
# (``hem``, maturity 0) and a typical blast (``all``, maturity 1). A cell's parameters are drawn
# around the point of the axis where its subject sits (see :class:`SubjectStyle`), so the class
# means differ, the spreads overlap, and some people's cells sit closer to the other class.
CLASS_PARAMS = {
    "all": dict(
        radius=(98.0, 0.12),  # cell radius: mean px, log-normal spread
        nucleus_fraction=(0.86, 0.045),  # nucleus radius / cell radius: a thin rim of cytoplasm
        contour=(0.06, 0.025),  # outline irregularity (harmonic amplitude)
        nucleus_contour=(0.055, 0.025),
        cleft=0.35,  # probability of an indented (cleft) nucleus
        nucleus_density=(0.92, 0.10),  # stain density of the nucleus (darkness)
        fine=(0.15, 0.04),  # fine (open) chromatin texture amplitude
        coarse=(0.07, 0.04),  # coarse (clumped) chromatin texture amplitude
        nucleoli=1.5,  # mean number of visible nucleoli (Poisson)
        cytoplasm_density=(0.85, 0.12),
    ),
    "hem": dict(
        radius=(80.0, 0.12),
        nucleus_fraction=(0.72, 0.05),
        contour=(0.03, 0.018),
        nucleus_contour=(0.03, 0.015),
        cleft=0.10,
        nucleus_density=(1.08, 0.10),
        fine=(0.08, 0.04),
        coarse=(0.17, 0.05),
        nucleoli=0.25,
        cytoplasm_density=(0.95, 0.12),
    ),
}
MATURITY = {"hem": 0.0, "all": 1.0}
#: Parameters that get a per-subject offset (in units of their per-cell spread).
_SPREAD_PARAMS = tuple(k for k, v in CLASS_PARAMS["all"].items() if isinstance(v, tuple))

# Optical densities (Beer-Lambert) of the two "stains": a purple-blue nuclear stain and a paler
# lilac cytoplasm. Intensity = white * exp(-OD * density): no stain -> white, more -> darker.
NUCLEUS_OD = np.array([0.95, 1.15, 0.42])
CYTOPLASM_OD = np.array([0.36, 0.46, 0.16])
_ANGLES = 1024  # resolution of the outline lookup tables
_HARMONICS = np.arange(2, 13)
_HARMONIC_WEIGHTS = (_HARMONICS / 2.0) ** -0.8 / np.sqrt(np.sum((_HARMONICS / 2.0) ** -1.6))
#: Optical density of the plasma around a cell, relative to the cytoplasm stain: what a mask drawn
#: a little wider than the cell picks up (pale pixels at the edge, as in C-NMC's segmentations).
BACKGROUND_DENSITY = 0.08


@dataclass(frozen=True)
class SubjectStyle:
    """What makes one subject's images recognisable, and how typical of its class they are.

    ``maturity`` places the person's cells on the normal (0) to blast (1) axis: most patients'
    blasts sit near 1 and most donors' cells near 0, but some patients' blasts look mature and
    some donors' cells look blast-like (None: the class's end of the axis). ``offsets`` are the
    person's own tendencies in each shape/texture parameter, ``(name, z)`` pairs in units of the
    parameter's per-cell spread. Stain, brightness, focus (``blur``, pixels at 450) and the
    segmentation mask's habits (``mask_offset``: a mask drawn wider (+) or tighter (-) than the
    cell; ``mask_jitter``: how ragged its edge is) come from the person's slide and scanner."""

    subject: str = "neutral"
    label: str = "all"
    size_scale: float = 1.0
    brightness: float = 0.96
    stain_density: float = 1.0
    nucleus_od: tuple = tuple(NUCLEUS_OD)
    cytoplasm_od: tuple = tuple(CYTOPLASM_OD)
    maturity: float | None = None
    offsets: tuple = ()
    blur: float = 0.8
    mask_offset: float = 0.0
    mask_jitter: float = 0.006


# How much subjects differ (standard deviations, log scale for the factors). The stain signature
# is what lets a model recognise a person; the maturity spread and the offsets are what make a
# seen person's new cells easier than a stranger's: together they are the leak of an image split.
SUBJECT_VARIATION = dict(tint=0.24, nucleus_tint=0.10, cytoplasm_tint=0.14, size=0.10, brightness=0.06,
                         density=0.15, maturity=0.26, offset=0.8, blur=0.4, mask_offset=0.03,
                         mask_jitter=0.5)
#: Spread of a single cell's maturity around its subject's.
CELL_MATURITY_SD = 0.10
#: A cell's spread around its subject's typical values, as a share of the class spreads of
#: CLASS_PARAMS: one person's cells resemble each other more than two people's do.
CELL_SPREAD = 0.5


def make_subject_style(rng: np.random.Generator, subject: str, label: str) -> SubjectStyle:
    """Draw a subject's look and tendencies (see :class:`SubjectStyle` and SUBJECT_VARIATION)."""
    v = SUBJECT_VARIATION
    tint = np.exp(rng.normal(0.0, v["tint"], size=3))  # per-channel tint of both stains
    size_scale = float(np.exp(rng.normal(0.0, v["size"])))
    brightness = float(np.clip(rng.normal(0.95, v["brightness"]), 0.82, 1.05))
    stain_density = float(np.exp(rng.normal(0.0, v["density"])))
    nucleus_od = tuple(float(x) for x in NUCLEUS_OD * tint * np.exp(rng.normal(0, v["nucleus_tint"], 3)))
    cytoplasm_od = tuple(float(x) for x in CYTOPLASM_OD * tint * np.exp(rng.normal(0, v["cytoplasm_tint"], 3)))
    maturity = float(MATURITY[label] + rng.normal(0.0, v["maturity"]))
    offsets = tuple((name, float(rng.normal(0.0, v["offset"]))) for name in _SPREAD_PARAMS)
    return SubjectStyle(
        subject=subject, label=label, size_scale=size_scale, brightness=brightness,
        stain_density=stain_density, nucleus_od=nucleus_od, cytoplasm_od=cytoplasm_od,
        maturity=maturity, offsets=offsets,
        blur=float(0.8 * np.exp(rng.normal(0.0, v["blur"]))),
        mask_offset=float(rng.normal(0.0, v["mask_offset"])),
        mask_jitter=float(0.006 * np.exp(rng.normal(0.0, v["mask_jitter"]))),
    )


def cell_params(maturity: float, offsets=()) -> dict:
    """The drawing parameters of a cell at ``maturity`` (0 normal, 1 blast; a little beyond
    either end is allowed), shifted by a subject's ``offsets``: ``(mean, sd)`` pairs for the
    spread parameters, plain numbers for the cleft probability and the nucleoli rate."""
    t = float(np.clip(maturity, -0.6, 1.6))
    shift = dict(offsets)
    out = {}
    for key, hem in CLASS_PARAMS["hem"].items():
        blast = CLASS_PARAMS["all"][key]
        if isinstance(hem, tuple):
            sd = hem[1] + min(max(t, 0.0), 1.0) * (blast[1] - hem[1])
            out[key] = (hem[0] + t * (blast[0] - hem[0]) + shift.get(key, 0.0) * sd, sd * CELL_SPREAD)
        else:
            out[key] = max(0.0, hem + t * (blast - hem))
    return out


def _normal(rng: np.random.Generator, mean_sd: tuple, low: float = 0.0, high: float = np.inf) -> float:
    mean, sd = mean_sd
    return float(np.clip(rng.normal(mean, sd), low, high))


def _outline(rng: np.random.Generator, irregularity: float, cleft: float = 0.0) -> np.ndarray:
    """Radius factor around the circle (a lookup table over angle): random harmonics + a notch."""
    theta = np.linspace(-np.pi, np.pi, _ANGLES, endpoint=False)
    amps = irregularity * _HARMONIC_WEIGHTS * rng.normal(size=_HARMONICS.size)
    phases = rng.uniform(0, 2 * np.pi, size=_HARMONICS.size)
    factor = 1.0 + (amps[:, None] * np.cos(_HARMONICS[:, None] * theta + phases[:, None])).sum(0)
    if cleft > 0:
        where = rng.uniform(-np.pi, np.pi)
        gap = np.angle(np.exp(1j * (theta - where)))
        factor -= cleft * np.exp(-((gap / 0.35) ** 2))
    return np.clip(factor, 0.55, 1.6).astype(np.float32)


def _polar(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float):
    """Distance and lookup-table index of the angle, around (cy, cx)."""
    dy, dx = yy - cy, xx - cx
    r = np.hypot(dy, dx)
    idx = ((np.arctan2(dy, dx) + np.pi) * (_ANGLES / (2 * np.pi))).astype(np.int32) % _ANGLES
    return r, idx


def _unit_noise(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Smoothed white noise scaled to unit standard deviation (a texture of grain ``sigma``)."""
    field = ndimage.gaussian_filter(noise, sigma=max(sigma, 0.3), truncate=3.0)
    return field / (field.std() + 1e-8)


def _add_nucleolus(rng, chromatin, y0, x0, ny, nx, nuc_radius, s) -> None:
    """Lighten a small round spot with a dark rim inside the nucleus (in place, local window)."""
    ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.55) * nuc_radius
    rad = rng.uniform(4.0, 8.0) * s + 0.4
    py, px = ny + dist * math.sin(ang) - y0, nx + dist * math.cos(ang) - x0
    reach = rad + 3 * (0.8 * s + 0.4) + 1
    ya, yb = max(int(py - reach), 0), min(int(py + reach) + 1, chromatin.shape[0])
    xa, xb = max(int(px - reach), 0), min(int(px + reach) + 1, chromatin.shape[1])
    if ya >= yb or xa >= xb:
        return
    yy, xx = np.ogrid[ya:yb, xa:xb]
    d = np.hypot(yy - py, xx - px).astype(np.float32)
    window = chromatin[ya:yb, xa:xb]
    window *= 1 - 0.45 * np.clip(rad - d + 0.5, 0, 1)
    window += 0.15 * np.exp(-np.square((d - rad) / (0.8 * s + 0.4)))


def _safe_window(image_size: int) -> tuple[int, int]:
    """First and last pixel a cell may touch so the centre crop keeps all of it (1px slack)."""
    crop = scaled_crop_size(image_size)
    start = (image_size - crop) // 2
    return start + 1, start + crop - 2


def render_cell(
    rng: np.random.Generator,
    label: str,
    subject_style: SubjectStyle | None = None,
    image_size: int = REFERENCE_SIZE,
) -> np.ndarray:
    """Draw one synthetic segmented cell: uint8 (image_size, image_size, 3), black background.

    ``label`` is ``"all"`` (blast) or ``"hem"`` (normal); ``subject_style`` gives the subject's
    stain, focus, mask habits and where its cells sit between normal and blast (a neutral style
    of that class when None). The same generator state gives the same image. The cell always lies
    inside the central 400/450 of the image.
    """
    if label not in CLASS_PARAMS:
        raise ValueError(f"render_cell: unknown label {label!r}; expected 'all' or 'hem'")
    if image_size < 16:
        raise ValueError(f"render_cell: image_size={image_size} is too small; use 16 or more")
    style = subject_style or SubjectStyle(label=label)
    base = MATURITY[label] if style.maturity is None else style.maturity
    p = cell_params(base + rng.normal(0.0, CELL_MATURITY_SD), style.offsets)
    s = image_size / REFERENCE_SIZE

    # Shape: cell outline, nucleus size, position and outline (all in pixels of this image).
    radius = p["radius"][0] * style.size_scale * math.exp(rng.normal(0, p["radius"][1])) * s
    cell_outline = _outline(rng, _normal(rng, p["contour"], 0.0, 0.2))
    frac = _normal(rng, p["nucleus_fraction"], 0.55, 0.95)
    cleft = rng.uniform(0.08, 0.25) if rng.random() < p["cleft"] else 0.0
    nuc_outline = _outline(rng, _normal(rng, p["nucleus_contour"], 0.0, 0.15), cleft)
    mask_outline = cell_outline * np.float32(1.0 + style.mask_offset) + _ragged(rng, style.mask_jitter)
    blur = style.blur * math.exp(rng.normal(0.0, 0.25)) * s  # this cell's focus
    low, high = _safe_window(image_size)
    max_half = (high - low) / 2 - 1.5
    extent = radius * max(cell_outline.max(), mask_outline.max()) + 0.5
    if extent > max_half:  # shrink rather than cut: the crop must stay lossless
        radius *= max_half / extent
        extent = max_half
    slack = (high - low) / 2 - extent - 1.0
    centre = (low + high) / 2 + rng.uniform(-slack, slack, size=2) * 0.6
    cy, cx = float(centre[0]), float(centre[1])
    nuc_radius = radius * frac
    nuc_shift = rng.uniform(0, 0.8) * (radius - nuc_radius)
    nuc_dir = rng.uniform(0, 2 * np.pi)
    ny, nx = cy + nuc_shift * math.sin(nuc_dir), cx + nuc_shift * math.cos(nuc_dir)

    # Work only in the cell's bounding box.
    y0, y1 = max(int(math.floor(cy - extent)) - 1, low), min(int(math.ceil(cy + extent)) + 1, high)
    x0, x1 = max(int(math.floor(cx - extent)) - 1, low), min(int(math.ceil(cx + extent)) + 1, high)
    yy, xx = np.ogrid[y0 : y1 + 1, x0 : x1 + 1]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    r, idx = _polar(yy, xx, cy, cx)
    f32 = np.float32
    cell_alpha = np.clip(f32(radius) * cell_outline[idx] - r + 0.5, 0.0, 1.0)
    mask = np.clip(f32(radius) * mask_outline[idx] - r + 0.5, 0.0, 1.0) > 0.5  # the segmentation
    rn, nidx = _polar(yy, xx, ny, nx)
    nuc_edge = f32(nuc_radius) * nuc_outline[nidx] - rn
    nuc_alpha = np.clip(nuc_edge + 0.5, 0.0, 1.0) * cell_alpha

    # Texture: fine open chromatin vs coarse clumps; nucleoli; a slightly darker membrane.
    noise = rng.standard_normal(r.shape, dtype=np.float32)
    fine = _unit_noise(noise, 1.1 * s)
    coarse = _unit_noise(noise, 4.0 * s)
    chromatin = f32(_normal(rng, p["nucleus_density"], 0.6, 1.5)) * (
        1 + f32(_normal(rng, p["fine"], 0, 0.4)) * fine + f32(_normal(rng, p["coarse"], 0, 0.5)) * coarse
    ) + f32(0.18) * np.exp(-np.square(nuc_edge * f32(1 / (2.5 * s + 0.5))))
    for _ in range(int(rng.poisson(p["nucleoli"]))):
        _add_nucleolus(rng, chromatin, y0, x0, ny, nx, nuc_radius, s)
    cytoplasm = f32(_normal(rng, p["cytoplasm_density"], 0.4, 1.5)) * (1 + f32(0.08) * fine)

    # Colour: Beer-Lambert mix of the two stains over pale plasma, out of focus by the cell's
    # blur, then cut out by the segmentation mask (black outside it, as in C-NMC).
    density = f32(style.stain_density)
    cyto_w = ((cell_alpha - nuc_alpha) * cytoplasm + (1 - cell_alpha) * f32(BACKGROUND_DENSITY)) * density
    nuc_w = nuc_alpha * np.maximum(chromatin, f32(0.05)) * density
    od = (
        cyto_w[..., None] * np.asarray(style.cytoplasm_od, f32)
        + nuc_w[..., None] * np.asarray(style.nucleus_od, f32)
    )
    white = f32(255.0 * style.brightness * rng.normal(1.0, 0.03))
    rgb = np.exp(-od) * white
    if blur > 0.3:
        rgb = ndimage.gaussian_filter(rgb, sigma=(blur, blur, 0), truncate=2.5)
    rgb += rng.standard_normal(rgb.shape, dtype=f32) * f32(1.5)
    rgb *= mask[..., None]
    image = np.zeros((image_size, image_size, 3), np.uint8)
    image[y0 : y1 + 1, x0 : x1 + 1] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    image[y0 : y1 + 1, x0 : x1 + 1][mask & (image[y0 : y1 + 1, x0 : x1 + 1].max(axis=2) == 0)] = 1
    return image


def _ragged(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """High-frequency wobble of a segmentation mask's edge (relative radius, lookup over angle)."""
    theta = np.linspace(-np.pi, np.pi, _ANGLES, endpoint=False)
    harmonics = np.arange(8, 40)
    amps = amplitude * rng.normal(size=harmonics.size) / np.sqrt(harmonics.size / 4)
    phases = rng.uniform(0, 2 * np.pi, size=harmonics.size)
    return (amps[:, None] * np.cos(harmonics[:, None] * theta + phases[:, None])).sum(0).astype(np.float32)


# ----------------------------------------------------------------------------- planning


def _subject_rng(seed: int, subject_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0, subject_index])


def _cell_rng(seed: int, subject_index: int, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1, subject_index, k])


def _apportion(total: int, weights: np.ndarray, minimum: int, cap: int | None = None) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights``, each at least ``minimum``
    and (when ``cap`` is given) at most ``cap``: parts over the cap are fixed at it and the rest
    is shared again among the others."""
    weights = np.asarray(weights, float)
    n = len(weights)
    minimum = min(minimum, total // n)
    if cap is not None:
        cap = max(int(cap), -(-total // n))  # a cap below the mean cannot be met
    fixed = np.zeros(n, bool)
    while True:
        free = total - minimum * (~fixed).sum() - (cap or 0) * fixed.sum()
        raw = weights * ~fixed / weights[~fixed].sum() * free
        parts = np.floor(raw).astype(int)
        order = np.argsort(-(raw - parts) + fixed * 2, kind="stable")
        parts[order[: free - parts.sum()]] += 1
        parts = np.where(fixed, cap or 0, parts + minimum)
        over = (parts > cap) & ~fixed if cap is not None else np.zeros(n, bool)
        if not over.any():
            return parts
        fixed |= over


def _assign_folds(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Subject-disjoint folds with similar image counts: each fold gets at least one subject,
    then the largest remaining subject goes to the fold with the fewest images (ties at random)."""
    order = rng.permutation(len(counts))
    folds = np.empty(len(counts), int)
    load = np.zeros(N_FOLDS)
    folds[order[:N_FOLDS]] = np.arange(N_FOLDS)
    load[np.arange(N_FOLDS)] = counts[order[:N_FOLDS]]
    rest = order[N_FOLDS:]
    for j in rest[np.argsort(-counts[rest], kind="stable")]:
        fold = int(np.argmin(load + rng.uniform(0, 1e-3, N_FOLDS)))
        folds[j] = fold
        load[fold] += counts[j]
    return folds


#: No subject holds more than this share of its class's images (the real data's largest HEM
#: subject holds about 12 % of HEM; a cap keeps one person from dominating a small test part).
MAX_SUBJECT_SHARE = 0.08


def _n_subjects(n_images: int) -> tuple[int, int]:
    """ALL and HEM subject counts, about 2:1 as in C-NMC (47 + 26): 40 + 20 for the default
    2,400 images (one subject per 40 images), fewer (at least 6 + 3) for tiny sets."""
    total = int(np.clip(n_images // 40, 9, 60))
    n_hem = max(3, round(total / 3))
    return total - n_hem, n_hem


def plan_demo_dataset(n_images: int = DEFAULT_IMAGES, seed: int = 0) -> pd.DataFrame:
    """One row per image the generator will write: subject, label, fold, image, cell, filename.

    Depends only on ``n_images`` and ``seed``. Columns ``subject_index`` and ``k`` (the image's
    index within its subject) are what seeds each image.
    """
    if int(n_images) != n_images or n_images < 9:
        raise ValueError(
            f"make_demo_dataset: n_images={n_images!r} is too small; the demo needs at least 9 "
            "images (3 folds, both classes in each)"
        )
    n_images = int(n_images)
    n_all_subj, n_hem_subj = _n_subjects(n_images)
    n_all = int(round(n_images * 2 / 3))
    plan_rng = np.random.default_rng([seed, 2])
    rows = []
    index = 0
    for label, n_subj, n_cls in (("all", n_all_subj, n_all), ("hem", n_hem_subj, n_images - n_all)):
        counts = _apportion(n_cls, plan_rng.lognormal(0.0, 0.8, size=n_subj), minimum=2,
                            cap=math.floor(MAX_SUBJECT_SHARE * n_cls))
        folds = _assign_folds(counts, plan_rng)
        for j in range(n_subj):
            number = j + 1
            subject = str(number) if label == "all" else f"H{number}"
            written = "h3" if subject == "H3" else subject  # the real data's lowercase subject
            rng = _subject_rng(seed, index)
            image_no, cell_no = 1, 1
            for k in range(int(counts[j])):
                rows.append(
                    dict(
                        subject=subject,
                        label=label,
                        fold=f"fold_{folds[j]}",
                        image=image_no,
                        cell=cell_no,
                        filename=f"UID_{written}_{image_no}_{cell_no}_{label}",
                        subject_index=index,
                        k=k,
                    )
                )
                if cell_no < 3 and rng.random() < 0.35:  # several cells from one microscope image
                    cell_no += 1
                else:
                    image_no, cell_no = image_no + 1 + int(rng.integers(0, 2)), 1
            index += 1
    import pandas as pd

    return pd.DataFrame(rows)


def subject_styles(plan: pd.DataFrame, seed: int = 0) -> dict[str, SubjectStyle]:
    """The style of every subject in a plan (from ``plan_demo_dataset``)."""
    first = plan.drop_duplicates("subject")
    return {
        row.subject: make_subject_style(_subject_rng(seed, 10_000 + row.subject_index), row.subject, row.label)
        for row in first.itertuples()
    }


# ----------------------------------------------------------------------------- writing


def _write_image(image: np.ndarray, path: Path, ext: str) -> None:
    options = {"compress_level": 1} if ext == "png" else {"quality": 95} if ext == "jpg" else {}
    Image.fromarray(image).save(path, **options)


def _render_task(task: tuple) -> None:
    """Worker: render one planned image and write it (module level so it pickles)."""
    seed, subject_index, k, label, style, image_size, path, ext = task
    _write_image(render_cell(_cell_rng(seed, subject_index, k), label, style, image_size), Path(path), ext)


def _read_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{path}: unreadable demo manifest ({exc}). If {out_dir} is a generated demo set, "
            "delete it and generate it again"
        ) from exc


def _count_images(out_dir: Path, ext: str) -> int:
    return sum(1 for _ in (out_dir / TRAINING_DIR).rglob(f"*.{ext}"))


def _damaged_images(out_dir: Path, ext: str) -> list[Path]:
    """Images of a finished set that are no longer whole: empty files (a copy or disk that ran
    out, a file emptied by hand) and, for BMP (every file the same size), truncated ones. File
    sizes only, no decoding: the check stays instant."""
    from collections import Counter

    damaged, sizes = [], {}
    for path in (out_dir / TRAINING_DIR).rglob(f"*.{ext}"):
        try:
            sizes[path] = path.stat().st_size
        except OSError:
            damaged.append(path)
    usual = Counter(sizes.values()).most_common(1)[0][0] if sizes else 0
    damaged += [p for p, n in sizes.items() if n == 0 or (ext == "bmp" and n != usual)]
    return sorted(damaged)


def _mp_context():
    """``fork`` (fast start) when it is safe, else ``spawn``: forking a process that runs
    threads (TensorFlow, JAX, PyTorch pools) can deadlock the children."""
    import sys
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread() and t.name != "tqdm_monitor"]
    threaded = bool(others) or any(m in sys.modules for m in ("tensorflow", "jax", "torch"))
    if threaded or sys.platform != "linux":
        return get_context("spawn")
    return get_context("fork")


def _default_workers(n_images: int) -> int:
    if n_images < 200:
        return 1  # process start-up costs more than it saves
    return max(1, min(os.cpu_count() or 1, 8))


def ensure_demo_data(profile, *, progress: bool = False) -> Path:
    """The demo set under ``paths.demo_dir()`` at the profile's size (``profile.demo_images``),
    generated unless it is there (the data-folder rule's demo side: chapters, CLI, book build).

    A demo set of another size (left by another profile in the same data root) is replaced: it is
    synthetic and regenerated deterministically, so nothing of value is lost.
    """
    return make_demo_dataset(demo_dir(), n_images=profile.demo_images, overwrite=True,
                             progress=progress)


def make_demo_dataset(
    out_dir: str | os.PathLike | None = None,
    *,
    n_images: int = DEFAULT_IMAGES,
    image_size: int = REFERENCE_SIZE,
    seed: int = 0,
    ext: str = "bmp",
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write the synthetic C-NMC-like demo set to ``out_dir`` (default ``paths.demo_dir()``).

    Layout: ``out_dir/C-NMC_training_data/fold_N/{all,hem}/UID_<subject>_<image>_<cell>_<label>.<ext>``
    plus ``out_dir/demo_manifest.json`` (parameters, counts, subjects). Returns ``out_dir``.

    If the same dataset (same parameters) is already there, returns at once. Another dataset in
    ``out_dir`` is replaced only with ``overwrite=True``, and only if it is a demo set (a folder
    without a demo manifest is never deleted). Output is written to a temporary sibling folder and
    renamed at the end, so an interrupted run leaves nothing half-written in ``out_dir``.
    ``workers`` processes render in parallel (default: all cores for 200+ images); the images do
    not depend on it. ``ext`` is bmp (as C-NMC), png or tif (lossless), or jpg (lossy: the black
    background is then no longer exactly 0). See :data:`DEMO_DESCRIPTION` for what the data is.
    """
    out_dir = Path(out_dir if out_dir is not None else demo_dir()).expanduser().absolute()
    ext = ext.lower().lstrip(".")
    ext = {"jpeg": "jpg", "tiff": "tif"}.get(ext, ext)
    if ext not in SUPPORTED_EXTS:
        raise ValueError(f"make_demo_dataset: ext={ext!r} is not supported; use one of {SUPPORTED_EXTS}")
    if int(image_size) != image_size or image_size < 32:
        raise ValueError(f"make_demo_dataset: image_size={image_size!r}; use an integer of 32 or more")
    params = dict(version=DEMO_VERSION, n_images=int(n_images), image_size=int(image_size), seed=int(seed), ext=ext)
    plan = plan_demo_dataset(n_images, seed)  # validates n_images

    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} is a file, not a folder; choose another out_dir for the demo set")
        manifest = _read_manifest(out_dir)
        if manifest is not None and manifest.get("params") == params:
            found = _count_images(out_dir, ext)
            damaged = _damaged_images(out_dir, ext) if found == manifest.get("n_files") else []
            if found == manifest.get("n_files") and not damaged:
                log.info("demo dataset already present at %s", out_dir)
                return out_dir
            if not overwrite:
                what = (f"{len(damaged)} image(s) empty or truncated, e.g. {damaged[0]}" if damaged else
                        f"{found} of {manifest.get('n_files')} images")
                raise FileExistsError(
                    f"{out_dir}: the demo dataset is incomplete ({what}); pass "
                    f"{option('overwrite')} to regenerate it"
                )
        elif any(out_dir.iterdir()):
            if manifest is None:
                raise FileExistsError(
                    f"{out_dir} is not empty and holds no {MANIFEST_NAME}, so it is not a demo "
                    f"dataset; it is never deleted automatically. Choose another "
                    f"{option('out_dir', 'out_dir')} or empty it."
                )
            if not overwrite:
                raise FileExistsError(
                    f"{out_dir} already holds a demo dataset with other parameters "
                    f"({manifest.get('params')}); pass {option('overwrite')} to replace it, or choose "
                    f"another {option('out_dir', 'out_dir')}"
                )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with _terminate_as_exit():
            started = time.perf_counter()
            _generate(tmp, plan, params, progress=progress, workers=workers)
            log.info("demo dataset: %d images in %.1f s", len(plan), time.perf_counter() - started)
            _replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _remove_abandoned(out_dir: Path) -> None:
    """Delete unfinished sets that a killed run left beside ``out_dir`` (``.<name>.tmp-<pid>-*``
    whose process is gone), and say so: they are partial and nothing else uses them."""
    for folder in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        pid = folder.name.rsplit(".tmp-", 1)[-1].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue  # another process is writing it right now
        log.warning("removing %s: an unfinished demo set left by an interrupted run", folder)
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _terminate_as_exit():
    """Turn SIGTERM into SystemExit while generating, so ``finally`` blocks run: the worker pool is
    shut down and the temporary folder removed (SIGKILL cannot be caught: the workers then end
    by themselves, see :func:`_worker_init`, and the next run removes the folder)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker_init() -> None:
    """In each render worker: ask Linux to end this process when its parent dies (even by SIGKILL),
    so a killed ``allnet demo-data`` leaves no orphaned workers holding its output pipes."""
    import sys

    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker inherits the parent's handler
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError, ValueError):
            pass


def _generate(tmp: Path, plan: pd.DataFrame, params: dict, *, progress: bool, workers: int | None) -> None:
    """Render every planned image into ``tmp`` and write the manifest last."""
    from tqdm.auto import tqdm

    ext, size, seed = params["ext"], params["image_size"], params["seed"]
    styles = subject_styles(plan, seed)
    root = tmp / TRAINING_DIR
    for fold in range(N_FOLDS):
        for label in ("all", "hem"):
            (root / f"fold_{fold}" / label).mkdir(parents=True, exist_ok=True)
    tasks = [
        (seed, row.subject_index, row.k, row.label, styles[row.subject], size,
         str(root / row.fold / row.label / f"{row.filename}.{ext}"), ext)
        for row in plan.itertuples()
    ]
    workers = _default_workers(len(tasks)) if workers is None else max(1, int(workers))
    bar = tqdm(total=len(tasks), desc="demo images", unit="img", disable=not progress)
    if workers == 1:
        for task in tasks:
            _render_task(task)
            bar.update()
    else:
        try:
            with ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_worker_init) as pool:
                for _ in pool.map(_render_task, tasks, chunksize=16):
                    bar.update()
        except BrokenProcessPool:
            # e.g. a script without `if __name__ == "__main__":` under the spawn start method:
            # render in this process instead (the images do not depend on the number of workers)
            log.warning("the demo's worker processes could not start (a script calling "
                        "make_demo_dataset needs an `if __name__ == \"__main__\":` guard to use "
                        "them); rendering in this process instead")
            bar.reset()
            for task in tasks:
                _render_task(task)
                bar.update()
    bar.close()
    counts = plan.groupby(["fold", "label"]).size()
    manifest = dict(
        generator="allnet_lib.demo.make_demo_dataset",
        synthetic=True,
        params=params,
        n_files=len(tasks),
        counts={f"{f}/{l}": int(n) for (f, l), n in counts.items()},
        subjects=[
            dict(subject=st.subject, label=st.label, fold=plan.loc[plan.subject == name, "fold"].iat[0],
                 n_images=int((plan.subject == name).sum()), **{k: v for k, v in asdict(st).items()
                                                                if k not in ("subject", "label")})
            for name, st in styles.items()
        ],
        description=DEMO_DESCRIPTION,
    )
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old ``target`` is set aside first and removed only after."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
    try:
        new.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        log.warning("replaced the demo dataset in %s (overwrite=True)", target)
        shutil.rmtree(old)


def read_demo_manifest(out_dir: str | os.PathLike | None = None) -> dict:
    """The manifest of a generated demo set (parameters, counts per fold/class, subjects)."""
    out_dir = Path(out_dir if out_dir is not None else demo_dir()).expanduser()
    manifest = _read_manifest(out_dir)
    if manifest is None:
        raise FileNotFoundError(f"{out_dir / MANIFEST_NAME} not found; generate the set with make_demo_dataset()")
    return manifest
