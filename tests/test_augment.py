"""Augmentation: the report's Augmentor pipeline and the on-the-fly versions give the same
distribution over the eight orientations, preserve labels, and are reproducible."""

from __future__ import annotations

import collections
import importlib.util
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from allnet_lib import augment

CHI2_DF7_P001 = 24.32  # chi-square critical value, 7 degrees of freedom, alpha = 0.001


def _asymmetric(seed=0, size=6):
    """A small RGB image with no symmetry, so every orientation is distinguishable."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _chi2(counts, distribution):
    n = sum(counts.values())
    return sum((counts[k] - n * p) ** 2 / (n * p) for k, p in distribution.items())


@pytest.fixture
def source(tmp_path):
    """Class folders all/ (3 images) and hem/ (2 images) with C-NMC names."""
    names = {"all": ["UID_1_1_1_all.bmp", "UID_1_2_1_all.bmp", "UID_7_1_1_all.bmp"],
             "hem": ["UID_H2_1_1_hem.bmp", "UID_h3_4_2_hem.bmp"]}
    for i, (label, files) in enumerate(names.items()):
        (tmp_path / "src" / label).mkdir(parents=True)
        for j, name in enumerate(files):
            Image.fromarray(_asymmetric(10 * i + j)).save(tmp_path / "src" / label / name)
    return tmp_path / "src"


def test_array_operations_are_augmentors():
    from Augmentor.Operations import Flip, Rotate

    image = _asymmetric()
    ops = {"rotate90": Rotate(1, 90), "rotate270": Rotate(1, 270),
           "flip_left_right": Flip(1, "LEFT_RIGHT"), "flip_top_bottom": Flip(1, "TOP_BOTTOM")}
    for name, op in ops.items():
        theirs = np.asarray(op.perform_operation([Image.fromarray(image)])[0])
        assert np.array_equal(theirs, augment._ARRAY_OPS[name](image)), name


def test_augmentor_rounds_its_probabilities():
    assert augment.augmentor_probability(0.5) == pytest.approx(0.55)
    assert augment.augmentor_probability(0.0) == pytest.approx(0.05)
    assert augment.augmentor_probability(1.0) == 1.0
    draws = np.round(np.random.default_rng(0).uniform(0, 1, 200_000), 1)
    assert (draws <= 0.5).mean() == pytest.approx(0.55, abs=0.005)  # what Augmentor does


def test_distribution_analytically():
    exact = augment.flip_rotate_distribution(augmentor=False)
    assert all(p == pytest.approx(1 / 8) for p in exact.values())  # exactly .5: uniform
    real = augment.flip_rotate_distribution()
    assert sum(real.values()) == pytest.approx(1)
    q = 0.55
    assert real["identity"] == pytest.approx((q**2 + (1 - q) ** 2) * (1 - q) ** 2)
    assert real["rot180"] == pytest.approx((q**2 + (1 - q) ** 2) * q**2)  # no net rotation, both flips


def test_random_flip_rotate_matches_the_distribution():
    rng = np.random.default_rng(1)
    image = _asymmetric()
    before = image.copy()
    single = collections.Counter(
        augment.identify_orientation(image, augment.random_flip_rotate(image, rng)) for _ in range(2000)
    )
    assert np.array_equal(image, before)  # the input is not modified
    assert _chi2(single, augment.flip_rotate_distribution()) < CHI2_DF7_P001
    batch = augment.random_flip_rotate(np.repeat(image[None], 20_000, 0), rng)
    counts = augment.count_orientations(image, batch)
    assert _chi2(counts, augment.flip_rotate_distribution()) < CHI2_DF7_P001
    assert _chi2(counts, augment.flip_rotate_distribution(augmentor=False)) > CHI2_DF7_P001
    uniform = augment.random_flip_rotate(np.repeat(image[None], 20_000, 0), rng, augmentor=False)
    counts = augment.count_orientations(image, uniform)
    assert _chi2(counts, augment.flip_rotate_distribution(augmentor=False)) < CHI2_DF7_P001


def test_augmentor_sample_counts_labels_and_distribution(source, tmp_path):
    state = random.getstate(), np.random.get_state()[1].copy()
    table = augment.augmentor_sample(source, tmp_path / "out", 1000, progress=False)
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert len(table) == 1000 and table.attrs["class_counts"] == table.label.value_counts().to_dict()
    assert sum(table.attrs["class_counts"].values()) == 1000
    assert set(table.columns) >= {"path", "filename", "label", "y", "source", "subject", "sample"}
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.bmp"))
    assert written == sorted(f"{row.label}/{row.filename}" for row in table.itertuples())
    assert not (source / "output").exists() and sorted(p.name for p in source.iterdir()) == ["all", "hem"]
    counts = collections.Counter()
    for row in table.itertuples():
        original = source / row.label / row.source  # the label is the source image's class
        assert row.y == (1 if row.label == "all" else 0)
        counts[augment.identify_orientation(np.asarray(Image.open(original)), np.asarray(Image.open(row.path)))] += 1
    assert _chi2(counts, augment.flip_rotate_distribution()) < CHI2_DF7_P001
    assert set(table.subject) == {"1", "7", "H2", "H3"}


def test_augmentor_sample_is_reproducible(source, tmp_path):
    a = augment.augmentor_sample(source, tmp_path / "a", 40, progress=False)
    b = augment.augmentor_sample(source, tmp_path / "b", 40, progress=False)
    c = augment.augmentor_sample(source, tmp_path / "c", 40, seed=8, progress=False)
    assert a.filename.tolist() == b.filename.tolist()
    assert all(open(p, "rb").read() == open(q, "rb").read() for p, q in zip(a.path, b.path))
    assert a.filename.tolist() != c.filename.tolist()


def test_augmentor_sample_refuses_unsafe_outputs(source, tmp_path):
    with pytest.raises(ValueError, match="outside the source"):
        augment.augmentor_sample(source, source / "augmented", 5, progress=False)
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        augment.augmentor_sample(source, tmp_path / "exists", 5, progress=False)
    with pytest.raises(ValueError, match="not classes"):
        augment.augmentor_sample(tmp_path, tmp_path.parent / "x_out", 5, progress=False)
    (source / "output" / "all").mkdir(parents=True)
    with pytest.raises(ValueError, match="earlier Augmentor run"):
        augment.augmentor_sample(source, tmp_path / "new", 5, progress=False)
    with pytest.raises(ValueError, match="positive integer"):
        augment.augmentor_sample(source, tmp_path / "new", 0, progress=False)
    assert not (tmp_path / "new").exists()


def test_flip_rotate_layer_tensorflow_backend():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("checks the TensorFlow backend; JAX is checked in a subprocess")
    import tensorflow as tf

    from allnet_lib.augment import FlipRotate

    image = _asymmetric(size=5).astype("float32")
    batch = np.repeat(image[None], 4000, 0)
    out = keras.ops.convert_to_numpy(FlipRotate(seed=3)(batch))
    assert _chi2(augment.count_orientations(image, out), augment.flip_rotate_distribution()) < CHI2_DF7_P001
    assert np.array_equal(keras.ops.convert_to_numpy(FlipRotate()(batch[:4], training=False)), batch[:4])
    data = tf.data.Dataset.from_tensor_slices(batch[:64]).map(FlipRotate(seed=1)).batch(16)
    mapped = np.concatenate([x.numpy() for x in data])
    assert mapped.shape == (64, 5, 5, 3) and len({augment.identify_orientation(image, o) for o in mapped}) > 4
    with pytest.raises(ValueError, match="square"):
        FlipRotate()(np.zeros((2, 4, 6, 3), "float32"))


@pytest.mark.slow  # a fresh process importing JAX, Keras and TensorFlow: about a minute on 2 cores
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_flip_rotate_layer_jax_backend_and_tf_data():
    script = textwrap.dedent(
        """
        import collections, numpy as np, keras, tensorflow as tf
        from allnet_lib import augment
        from allnet_lib.augment import FlipRotate
        assert keras.backend.backend() == "jax"
        image = np.random.default_rng(0).random((5, 5, 3)).astype("float32")
        out = np.asarray(FlipRotate(seed=2)(np.repeat(image[None], 2000, 0)))
        kinds = collections.Counter(augment.identify_orientation(image, o) for o in out)
        n = sum(kinds.values()); d = augment.flip_rotate_distribution()
        assert sum((kinds[k] - n * p) ** 2 / (n * p) for k, p in d.items()) < 24.32, kinds
        data = tf.data.Dataset.from_tensor_slices(np.repeat(image[None], 32, 0)).map(FlipRotate(seed=1))
        assert len({augment.identify_orientation(image, x.numpy()) for x in data}) > 3
        print("ok")
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
