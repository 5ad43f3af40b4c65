"""Small data sets for the theory chapters: big enough to show an idea, small enough for seconds.

- ``make_line``: a noisy straight line (one feature), for gradient descent on a drawable bowl.
- ``make_moons``: two interleaving half circles, a 2-D problem no straight line separates.
- ``render_cells`` / ``cell_features``: synthetic C-NMC-like cells (``allnet_lib.demo``), and two
  hand-crafted features of them (cell area, chromatin texture) for a first classifier.

Everything is seeded: the same arguments give the same arrays.
"""

from __future__ import annotations

import numpy as np

CELL_FEATURES = ("cell area (% of image)", "chromatin texture")
# Share of ALL images in the C-NMC 2019 training folds (7,272 of 10,661; shared/notes): the
# class balance the synthetic samples copy by default.
P_ALL_CNMC = 7272 / (7272 + 3389)


def make_line(n: int = 100, *, slope: float = 1.5, intercept: float = -0.5, noise: float = 0.5,
              x_mean: float = 1.0, x_std: float = 1.0, seed: int = 0):
    """(x, y) with y = slope * x + intercept + Gaussian noise; x ~ N(x_mean, x_std^2).

    An off-centre x (x_mean != 0) couples slope and intercept, giving the elongated loss bowl on
    which plain gradient descent zig-zags - the typical situation, not the easy one.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(x_mean, x_std, n)
    y = slope * x + intercept + rng.normal(0, noise, n)
    return x, y


def make_moons(n: int = 200, *, noise: float = 0.15, seed: int = 0):
    """(X, y): two interleaving half moons, n points, labels 0/1 in equal numbers."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    t0 = rng.uniform(0, np.pi, n0)
    t1 = rng.uniform(0, np.pi, n - n0)
    upper = np.c_[np.cos(t0), np.sin(t0)]
    lower = np.c_[1 - np.cos(t1), 0.5 - np.sin(t1)]
    X = np.vstack([upper, lower]) + rng.normal(0, noise, (n, 2))
    y = np.r_[np.zeros(n0, int), np.ones(n - n0, int)]
    order = rng.permutation(n)
    return X[order], y[order]


def render_cells(n: int, *, image_size: int = 64, p_all: float = P_ALL_CNMC, seed: int = 0):
    """n synthetic cells from ``allnet_lib.demo.render_cell``: (images uint8 (n, s, s, 3), y).

    ``y == 1`` is ALL. round(n * p_all) cells are ALL, the others normal, in random order.
    Every cell gets its own randomly drawn subject style (stain, brightness, size), so no two
    cells share a "person" and any split of them is free of subject leakage.
    """
    from allnet_lib import demo

    rng = np.random.default_rng(seed)
    n_all = int(round(n * p_all))
    y = np.r_[np.ones(n_all, int), np.zeros(n - n_all, int)]
    y = y[rng.permutation(n)]
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    for i, yi in enumerate(y):
        label = "all" if yi == 1 else "hem"
        style = demo.make_subject_style(rng, f"toy{i}", label)
        images[i] = demo.render_cell(rng, label, style, image_size=image_size)
    return images, y


def cell_mask(images, threshold: float = 10.0):
    """Boolean (n, H, W): pixels that belong to the cell (C-NMC backgrounds are pure black)."""
    return np.asarray(images).max(axis=-1) > threshold


def cell_features(images) -> np.ndarray:
    """Two hand-crafted features per image, (n, 2): cell area and chromatin texture.

    - cell area: percentage of the image covered by the cell (blasts are larger);
    - chromatin texture: standard deviation of the grey level over the cell's pixels (normal
      lymphocytes have coarse, clumped, contrasted chromatin; blasts a fine, open one).
    These are what a pathologist looks at first, and what a CNN must learn by itself.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"cell_features expects RGB images (n, H, W, 3), got shape {images.shape}")
    mask = cell_mask(images)
    grey = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    pixels = np.maximum(mask.sum(axis=(1, 2)), 1)
    area = 100.0 * mask.mean(axis=(1, 2))
    mean = (grey * mask).sum(axis=(1, 2)) / pixels
    var = (((grey - mean[:, None, None]) ** 2) * mask).sum(axis=(1, 2)) / pixels
    return np.c_[area, np.sqrt(var)]


def stain_darkness(images) -> np.ndarray:
    """Mean of 1 - grey level over each cell's pixels, (n,): a third feature for the exercises."""
    images = np.asarray(images)
    mask = cell_mask(images)
    grey = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    return ((1 - grey) * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)


def cell_feature_data(n: int = 400, *, image_size: int = 64, p_all: float = P_ALL_CNMC, seed: int = 0):
    """(X, y, images): ``cell_features`` of ``render_cells(n, ...)``, with the images kept."""
    images, y = render_cells(n, image_size=image_size, p_all=p_all, seed=seed)
    return cell_features(images), y, images


def standardise(X, mean=None, std=None):
    """(X - mean) / std per column; returns (X_std, mean, std) so a test set reuses the training stats.

    Gradient descent needs features on similar scales: otherwise the loss surface is a long
    narrow valley and one learning rate is too large for one direction, too small for the other.
    """
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0) if mean is None else mean
    std = X.std(axis=0) if std is None else std
    return (X - mean) / np.where(std > 0, std, 1.0), mean, std


def train_val_split(*arrays, val_fraction: float = 0.3, seed: int = 0):
    """Shuffle and split arrays of equal length: returns (a_train, a_val, b_train, b_val, ...)."""
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("train_val_split: all arrays must have the same length")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    val, train = order[:n_val], order[n_val:]
    out = []
    for a in arrays:
        a = np.asarray(a)
        out += [a[train], a[val]]
    return tuple(out)
