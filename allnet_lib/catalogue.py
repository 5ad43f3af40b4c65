"""The model catalogue: every fact about a model except how to build it, in one place.

Pure Python (no Keras, no NumPy), so that profiles, compare, plots, the CLI's help and the
chapters can read it without importing a deep-learning framework. :mod:`allnet_lib.models` adds
the builders (``models.MODEL_SPECS``); ``profiles.MODEL_NAMES``, ``compare.REPORT_TABLE2`` and
``plots.MODEL_COLORS`` are derived from here. Adding a model means one entry here and one builder
in :mod:`allnet_lib.models` (``models.BUILDERS``); the report's figures are optional per model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelEntry:
    """What the book and the CLI know about a model, besides building it."""

    name: str
    title: str
    report_size: int          # the input side the 2019 report used (the ``seed`` profile's)
    min_size: int             # smallest input side the architecture accepts (the ``smoke`` profile's)
    demo_size: int            # side used by the CPU ``demo`` profile
    year: int
    introduced: str           # one sentence: what the architecture brought
    color: str                # its colour in every figure
    report_accuracy: float | None = None  # the report's Table 2 (random image-level split), percent


CATALOGUE: dict[str, ModelEntry] = {entry.name: entry for entry in (
    ModelEntry(
        "alexnet", "AlexNet", 227, 67, 96, 2012,
        "Showed that a deep CNN trained on GPUs with ReLU, dropout and data augmentation could win "
        "ImageNet by a wide margin, starting the deep-learning era of computer vision.",
        "#4c72b0", 81.62),
    ModelEntry(
        "vgg16", "VGG16", 224, 32, 64, 2014,
        "Showed that depth matters, building a 16-layer network only from stacked 3x3 "
        "convolutions and 2x2 max-pooling.",
        "#dd8452", 84.8),
    ModelEntry(
        "resnet50", "ResNet50", 224, 32, 64, 2015,
        "Introduced residual (skip) connections, which let gradients flow through very deep "
        "networks so that 50 and more layers train well.",
        "#55a868", 84.77),
    ModelEntry(
        "inception_v3", "Inception v3", 299, 75, 75, 2015,
        "Refined the Inception module (parallel convolutions of several sizes) with factorised "
        "convolutions, batch-normalised auxiliary classifiers and label smoothing.",
        "#8172b3", 83.67),
    ModelEntry(
        "proposed", "Proposed model (2019 report)", 300, 32, 64, 2019,
        "The report's own VGG-style network: six blocks of 3x3 convolutions with batch "
        "normalisation after every convolution, then a large dense head with dropout.",
        "#c44e52", 93.02),
)}


def model_names() -> tuple[str, ...]:
    """Every model, in the report's order of Table 2."""
    return tuple(CATALOGUE)


def report_sizes() -> dict[str, int]:
    """The report's input side of every model (the ``seed`` profile's sizes)."""
    return {name: entry.report_size for name, entry in CATALOGUE.items()}


def min_sizes() -> dict[str, int]:
    """The smallest input side of every model (the ``smoke`` profile's sizes)."""
    return {name: entry.min_size for name, entry in CATALOGUE.items()}


def demo_sizes() -> dict[str, int]:
    """The ``demo`` profile's input side of every model."""
    return {name: entry.demo_size for name, entry in CATALOGUE.items()}


def report_table2() -> dict[str, float]:
    """The report's Table 2 accuracy (percent) of the models it reported."""
    return {name: entry.report_accuracy for name, entry in CATALOGUE.items()
            if entry.report_accuracy is not None}


def model_colors() -> dict[str, str]:
    """Every model's colour in figures."""
    return {name: entry.color for name, entry in CATALOGUE.items()}


#: Module-level views for the names that other modules have always exported.
MODEL_NAMES = model_names()
