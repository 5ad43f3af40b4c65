"""Data augmentation: the report's random flips and 90-degree rotations, three ways.

The 2019 report augmented its training images with the Augmentor library::

    p = Augmentor.Pipeline(train_dir); p.set_seed(7)
    p.rotate90(probability=.5); p.rotate270(probability=.5)
    p.flip_left_right(probability=.5); p.flip_top_bottom(probability=.5)
    p.sample(20000)

A cell has no "up" under the microscope, so every rotation and mirror image of a cell is an
equally valid example of its class: these eight orientations (the dihedral group of the square)
are free extra training data. Which tool to use:

- :func:`augmentor_sample` runs that exact pipeline, seeded and reproducible, and writes the
  samples to a folder of your choice (never inside the source tree, unlike Augmentor's default).
  Use it to reproduce the report, or to look at augmented samples. It costs disk space and the
  model sees the same fixed set of variants every epoch.
- :func:`random_flip_rotate` (NumPy) and :class:`FlipRotate` (a Keras 3 layer, any backend,
  also inside a ``tf.data`` map) draw a new orientation every time an image is used: nothing is
  written to disk and every epoch sees new variants. Use these for training.

All three give the same distribution over the eight orientations
(:func:`flip_rotate_distribution`). One subtlety, found by reading Augmentor 0.2.12's source:
it applies an operation when ``round(random.uniform(0, 1), 1) <= probability``, so
``probability=.5`` really means 0.55 (:func:`augmentor_probability`). The on-the-fly versions
copy that by default (``augmentor=True``) so their samples match the report's; pass
``augmentor=False`` for exactly 0.5, which makes all eight orientations equally likely.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REPORT_PROBABILITY = 0.5
REPORT_SEED = 7
#: The four operations, in the report's order, as Augmentor names them.
OPERATIONS = ("rotate90", "rotate270", "flip_left_right", "flip_top_bottom")
#: The eight orientations of a square image (the dihedral group D4).
ORIENTATIONS = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_tb", "transpose", "antitranspose")
_IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")

# Array versions of Augmentor's operations on (H, W, ...) arrays. PIL's rotate(90) turns the
# picture counter-clockwise, as np.rot90 does; the tests check these against Augmentor itself.
_ARRAY_OPS = {
    "rotate90": lambda a: np.rot90(a, 1),
    "rotate270": lambda a: np.rot90(a, 3),
    "flip_left_right": lambda a: a[:, ::-1],
    "flip_top_bottom": lambda a: a[::-1],
}
_ORIENT = {
    "identity": lambda a: a,
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
    "flip_lr": lambda a: a[:, ::-1],
    "flip_tb": lambda a: a[::-1],
    "transpose": lambda a: np.swapaxes(a, 0, 1),
    "antitranspose": lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),
}


def augmentor_probability(probability: float) -> float:
    """How often Augmentor 0.2.12 really applies an operation given ``probability``.

    It draws ``r = round(random.uniform(0, 1), 1)`` and applies the operation if
    ``r <= probability``: 0.5 -> 0.55, 0 -> 0.05 (!), 1 -> 1.
    """
    if probability >= 1:
        return 1.0
    if probability < 0:
        return 0.0
    tenths = math.floor(probability * 10 + 1e-9)  # the largest rounded draw that passes
    return min(1.0, (tenths + 0.5) / 10)


def _effective(probability: float, augmentor: bool) -> float:
    if not 0 <= probability <= 1:
        raise ValueError(f"probability={probability} must be between 0 and 1")
    return augmentor_probability(probability) if augmentor else float(probability)


def identify_orientation(original: np.ndarray, transformed: np.ndarray) -> str:
    """Which of the eight :data:`ORIENTATIONS` turns ``original`` into ``transformed``.

    Needs an image without symmetry (else several match and the first is returned); raises
    ValueError if none matches.
    """
    original, transformed = np.asarray(original), np.asarray(transformed)
    for name, op in _ORIENT.items():
        candidate = op(original)
        if candidate.shape == transformed.shape and np.array_equal(candidate, transformed):
            return name
    raise ValueError("identify_orientation: the second image is not a rotation or mirror image of the first")


def count_orientations(original: np.ndarray, images) -> dict[str, int]:
    """How many of ``images`` (a batch or a list, same size as ``original``) are each orientation
    of ``original``; vectorised, for checking augmented samples against the distribution."""
    original = np.asarray(original)
    images = np.asarray(images)
    candidates = np.stack([op(original) for op in _ORIENT.values()])  # needs a square original
    match = (images[:, None] == candidates[None]).reshape(len(images), len(candidates), -1).all(axis=2)
    if not match.any(axis=1).all():
        raise ValueError("count_orientations: some images are not a rotation or mirror image of the original")
    first = match.argmax(axis=1)
    return {name: int((first == i).sum()) for i, name in enumerate(ORIENTATIONS)}


def flip_rotate_distribution(probability: float = REPORT_PROBABILITY, *, augmentor: bool = True) -> dict[str, float]:
    """Exact probability of each of the eight orientations after the report's four operations.

    Each operation is applied independently (with Augmentor's real probability when
    ``augmentor``), in the report's order; the 16 combinations are composed and collected.
    With exactly 0.5 all eight orientations get 1/8 (rotate90 + rotate270 cancel out).
    """
    q = _effective(probability, augmentor)
    reference = np.arange(12).reshape(3, 4)  # no symmetry: every orientation is distinct
    result = dict.fromkeys(ORIENTATIONS, 0.0)
    for mask in range(16):
        applied = [(mask >> i) & 1 for i in range(4)]
        image, chance = reference, 1.0
        for op, on in zip(OPERATIONS, applied):
            chance *= q if on else 1 - q
            if on:
                image = _ARRAY_OPS[op](image)
        result[identify_orientation(reference, image)] += chance
    return result


def random_flip_rotate(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    probability: float = REPORT_PROBABILITY,
    augmentor: bool = True,
) -> np.ndarray:
    """The report's four operations on one image (H, W[, C]), drawn with ``rng``: on the fly.

    Same operations, probabilities and order as :func:`augmentor_sample`, so the same
    distribution over orientations. A batch (N, H, W[, C]) of square images gets an independent
    draw per image. Returns a new array (the input is not modified).
    """
    image = np.asarray(image)
    q = _effective(probability, augmentor)
    if image.ndim == 4:
        return _flip_rotate_batch(image, rng, q)
    if image.ndim not in (2, 3):
        raise ValueError(f"random_flip_rotate: expected (H, W), (H, W, C) or (N, H, W, C), got shape {image.shape}")
    coins = rng.random(len(OPERATIONS)) < q
    for op, on in zip(OPERATIONS, coins):
        if on:
            image = _ARRAY_OPS[op](image)
    return np.ascontiguousarray(image)


_BATCH_OPS = {  # the same operations on a batch (N, H, W, ...)
    "rotate90": lambda a: np.rot90(a, 1, axes=(1, 2)),
    "rotate270": lambda a: np.rot90(a, 3, axes=(1, 2)),
    "flip_left_right": lambda a: a[:, :, ::-1],
    "flip_top_bottom": lambda a: a[:, ::-1],
}


def _flip_rotate_batch(batch: np.ndarray, rng: np.random.Generator, q: float) -> np.ndarray:
    """Independent draws per image, applied group-wise (at most 16 vectorised groups)."""
    if batch.shape[1] != batch.shape[2]:
        raise ValueError(
            f"random_flip_rotate: a batch must hold square images to rotate them in place, got {batch.shape[1:3]}"
        )
    coins = rng.random((len(batch), len(OPERATIONS))) < q
    codes = coins @ (1 << np.arange(len(OPERATIONS)))
    out = np.empty_like(batch)
    for code in np.unique(codes):
        rows = codes == code
        part = batch[rows]
        for i, op in enumerate(OPERATIONS):
            if (code >> i) & 1:
                part = _BATCH_OPS[op](part)
        out[rows] = part
    return out


# ----------------------------------------------------------------------------- Augmentor


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _class_folders(source: Path) -> list[Path]:
    """The class folders Augmentor will see in ``source``; refuse layouts it would misread."""
    from allnet_lib.labels import CLASSES

    if not source.is_dir():
        raise FileNotFoundError(f"augmentor_sample: source folder {source} does not exist")
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(
            f"augmentor_sample: {source} has no class folders; it must hold all/ and hem/ "
            "(e.g. the train folder of a split)"
        )
    names = [p.name for p in folders]
    if "output" in names:
        raise ValueError(
            f"augmentor_sample: {source / 'output'} exists, probably from an earlier Augmentor run "
            "with its default output folder; Augmentor would count it as a third class. Move it out "
            "of the source folder."
        )
    unknown = [n for n in names if n.lower() not in CLASSES]
    if unknown:
        raise ValueError(
            f"augmentor_sample: {source} holds folders {unknown} that are not classes {CLASSES}; "
            "point source_dir at the folder that contains all/ and hem/"
        )
    return folders


class _Counter:
    """Stands in for the ``uuid`` module inside Augmentor: sequential, reproducible file names."""

    def __init__(self):
        self.count = 0

    def uuid4(self):
        self.count += 1
        return f"{self.count:06d}"


@contextlib.contextmanager
def _augmentor_session(seed: int):
    """Seed Augmentor (it seeds the global ``random`` and ``np.random``), name its files with a
    counter, and restore all of that afterwards so the caller's random state is untouched."""
    import sys

    import Augmentor  # noqa: F401

    module = sys.modules["Augmentor.Pipeline"]
    saved = random.getstate(), np.random.get_state(), module.uuid
    try:
        module.uuid = _Counter()
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        module.uuid = saved[2]


def augmentor_sample(
    source_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = REPORT_SEED,
    progress: bool = True,
) -> pd.DataFrame:
    """Run the report's Augmentor pipeline on ``source_dir`` and write ``n`` samples to ``output_dir``.

    ``source_dir`` holds class folders ``all/`` and ``hem/``. The pipeline is the report's:
    rotate90, rotate270, flip_left_right, flip_top_bottom (each ``probability=.5``), then
    ``sample(n)``, single-threaded after ``set_seed(seed)`` so the same seed gives the same
    files (Augmentor's multi-threaded sampling does not). Output goes to
    ``output_dir/<class>/aug<NNNNNN>_<source name>``; ``output_dir`` must be outside the source
    tree and must not exist yet (files are written to a temporary sibling and renamed).

    ``sample(n)`` picks source images at random across classes, so the class counts vary around
    the source proportions: they are logged and stored in ``table.attrs["class_counts"]``.
    Returns one row per written file: ``path``, ``filename``, ``label``, ``y``, ``source``,
    ``subject``, ``image``, ``cell`` (from the source's C-NMC name when it has one), ``sample``.
    """
    from allnet_lib.labels import label_to_index

    source, output = Path(source_dir).expanduser().absolute(), Path(output_dir).expanduser().absolute()
    if int(n) != n or n < 1:
        raise ValueError(f"augmentor_sample: n={n!r} must be a positive integer (the number of samples)")
    folders = _class_folders(source)
    if _inside(output, source) or _inside(source, output):
        raise ValueError(
            f"augmentor_sample: output {output} overlaps the source {source}. Augmentor's default "
            "writes into the source tree, where later readers count 'output' as a class; choose a "
            "folder outside the source."
        )
    if output.exists():
        raise FileExistsError(f"augmentor_sample: {output} already exists; choose a new folder or remove it first")
    if not any(p.suffix.lower() in _IMAGE_SUFFIXES for f in folders for p in f.iterdir()):
        raise ValueError(f"augmentor_sample: no images in the class folders of {source}")

    tmp = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run_pipeline(source, tmp, int(n), seed, progress)
        rows = _collect(tmp, output)
        tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _table(rows, label_to_index)


def _run_pipeline(source: Path, tmp: Path, n: int, seed: int, progress: bool) -> None:
    """The report's pipeline, verbatim except for the output folder and single threading."""
    import Augmentor

    quiet = contextlib.ExitStack()
    quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))  # "Initialised with ..." lines
    if not progress:
        quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))  # Augmentor's own tqdm bar
    with _augmentor_session(seed), quiet:
        p = Augmentor.Pipeline(str(source), output_directory=str(tmp))  # absolute: used as is
        p.set_seed(seed)
        p.rotate90(probability=REPORT_PROBABILITY)
        p.rotate270(probability=REPORT_PROBABILITY)
        p.flip_left_right(probability=REPORT_PROBABILITY)
        p.flip_top_bottom(probability=REPORT_PROBABILITY)
        p.sample(n, multi_threaded=False)


def _collect(tmp: Path, output: Path) -> list[dict]:
    """Rename Augmentor's ``<class>_original_<name>_<counter>.<ext>`` files to ``aug<counter>_<name>``."""
    rows = []
    for class_dir in sorted(p for p in tmp.iterdir() if p.is_dir()):
        label = class_dir.name
        prefix = f"{label}_original_"
        for path in sorted(class_dir.iterdir()):
            stem = path.name[len(prefix):] if path.name.startswith(prefix) else path.name
            original, _, rest = stem.rpartition("_")
            counter = rest.split(".")[0]
            name = f"aug{counter}_{original}"
            path.rename(class_dir / name)
            rows.append(dict(path=str(output / label / name), filename=name, label=label,
                             source=original, sample=int(counter)))
    return rows


def _table(rows: list[dict], label_to_index) -> pd.DataFrame:
    import pandas as pd

    from allnet_lib.labels import parse_cnmc_name

    for row in rows:
        row["y"] = label_to_index(row["label"])
        try:
            parsed = parse_cnmc_name(row["source"])
            row.update(subject=parsed.subject, image=parsed.image, cell=parsed.cell)
        except ValueError:
            row.update(subject=None, image=None, cell=None)
    columns = ["path", "filename", "label", "y", "source", "subject", "image", "cell", "sample"]
    table = pd.DataFrame(rows, columns=columns).sort_values("sample", ignore_index=True)
    counts = {label: int(c) for label, c in table.label.value_counts().sort_index().items()}
    table.attrs["class_counts"] = counts
    log.info("augmentor_sample: wrote %d images: %s", len(table), counts)
    return table


# ----------------------------------------------------------------------------- Keras layer


def __getattr__(name: str):
    """``FlipRotate`` is built on first use, so importing this module does not import Keras."""
    if name == "FlipRotate":
        cls = _make_flip_rotate_class()
        globals()["FlipRotate"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _data_layer_base():
    """Keras' base class for layers that also run inside ``tf.data`` under any backend.

    It is not public API; its name changed (TFDataLayer -> DataLayer), so fall back to a plain
    Layer (fine inside models; in ``tf.data`` then only with the TensorFlow backend).
    """
    try:
        from keras.src.layers.preprocessing.data_layer import DataLayer

        return DataLayer
    except ImportError:
        pass
    try:
        from keras.src.layers.preprocessing.tf_data_layer import TFDataLayer

        return TFDataLayer
    except ImportError:
        import keras

        return keras.layers.Layer


def _make_flip_rotate_class():
    import keras

    base = _data_layer_base()

    class FlipRotate(base):
        """The report's random flips and 90-degree rotations as a Keras 3 layer (any backend).

        Input: a batch ``(N, H, W, C)`` of square images, or one image ``(H, W, C)`` (e.g. in a
        ``tf.data`` map). Each image independently gets rotate90, rotate270, flip left-right and
        flip top-bottom, each with Augmentor's probability (see :func:`augmentor_probability`;
        ``augmentor=False`` for exactly ``probability``), in that order.

        When is it active? Like Keras' own ``RandomFlip``: ``training`` defaults to True, so a
        direct call (a ``tf.data`` map, a NumPy batch) transforms. Inside a model, ``fit`` passes
        ``training=True`` (transform) and ``predict``/``evaluate`` pass ``training=False``
        (identity), so it can sit at the start of a model. Under JAX or PyTorch it also works
        inside ``tf.data`` (it switches to TensorFlow ops there, as Keras' preprocessing layers do).
        """

        def __init__(self, probability=REPORT_PROBABILITY, *, augmentor=True, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.probability = float(probability)
            self.augmentor = bool(augmentor)
            self._q = _effective(self.probability, self.augmentor)
            self.seed = seed
            self.generator = keras.random.SeedGenerator(seed)
            self.supports_masking = True

        def call(self, inputs, training=True):
            if not training:
                return inputs
            ops = _Ops(getattr(self, "backend", None))
            x = ops.convert(inputs)
            single = len(x.shape) == 3
            if single:
                x = ops.np.expand_dims(x, 0)
            if hasattr(self, "_get_seed_generator"):
                seed = self._get_seed_generator(getattr(self.backend, "_backend", None))
            else:
                seed = self.generator
            coins = ops.np.less(ops.random.uniform((ops.shape(x)[0], len(OPERATIONS)), seed=seed), self._q)
            x = _apply_dihedral_ops(ops.np, x, coins)
            return ops.np.squeeze(x, 0) if single else x

        def build(self, input_shape):
            h, w = (input_shape[-3], input_shape[-2]) if input_shape and len(input_shape) >= 3 else (None, None)
            if h is not None and w is not None and h != w:
                raise ValueError(
                    f"FlipRotate: images must be square to rotate them in place, got {h}x{w}; "
                    "centre-crop or resize first"
                )
            super().build(input_shape)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            config = super().get_config()
            config.update(probability=self.probability, augmentor=self.augmentor, seed=self.seed)
            return config

    FlipRotate.__module__ = __name__
    FlipRotate.__qualname__ = "FlipRotate"
    return keras.saving.register_keras_serializable(package="allnet")(FlipRotate)


class _Ops:
    """Tensor functions of the backend in use: Keras' switching backend inside ``tf.data``
    (a DataLayer's ``self.backend``), else ``keras.ops``."""

    def __init__(self, backend=None):
        import keras

        if backend is None:
            self.np, self.random, self.shape = keras.ops, keras.random, keras.ops.shape
            self.convert = keras.ops.convert_to_tensor
        else:
            self.np, self.random, self.shape = backend.numpy, backend.random, backend.core.shape
            self.convert = backend.convert_to_tensor


def _apply_dihedral_ops(np_, x, coins):
    """Apply the four operations to a batch (N, H, W, C), image by image where ``coins`` say so."""

    def rot90(a):  # counter-clockwise, as np.rot90 and PIL's rotate(90)
        return np_.transpose(np_.flip(a, axis=2), (0, 2, 1, 3))

    def rot270(a):
        return np_.flip(np_.transpose(a, (0, 2, 1, 3)), axis=2)

    transforms = (rot90, rot270, lambda a: np_.flip(a, axis=2), lambda a: np_.flip(a, axis=1))
    for i, op in enumerate(transforms):
        on = np_.reshape(coins[:, i], (-1, 1, 1, 1))
        x = np_.where(on, op(x), x)
    return x
