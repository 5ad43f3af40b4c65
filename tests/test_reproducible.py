"""Reproducible training: the same commit, profile and seeds give the same run on the same kind of
machine. Two runs from scratch end with identical weights (bit for bit) and identical histories.

Run with oneDNN on (conftest.py sets TF_ENABLE_ONEDNN_OPTS=1 unless it is set already), as
training is run everywhere: the fast CPU kernels must not cost reproducibility. The in-memory
path (data="arrays") draws its shuffles and flips per epoch from the seed:
tests/test_pipeline.py::test_array_batches_are_reproducible_per_epoch.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from allnet_lib import train
from allnet_lib.demo import make_demo_dataset
from allnet_lib.profiles import get_profile
from allnet_lib.reader import index_dataset
from allnet_lib.split import subject_split

TIMING_COLUMNS = ("seconds", "train_seconds")  # wall-clock times: the only columns allowed to differ


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_images=30, image_size=96,
                             progress=False)
    return subject_split(index_dataset(root, progress=False).table, test_size=0.2, val_size=0.2, seed=0)


def _assert_same_run(first, second):
    a, b = first.model.get_weights(), second.model.get_weights()
    assert len(a) == len(b) > 0
    different = [w.name for w, x, y in zip(first.model.weights, a, b) if not np.array_equal(x, y)]
    assert different == [], f"weights differ between two identical runs: {different}"
    columns = [c for c in first.history.columns if c not in TIMING_COLUMNS]
    assert set(columns) >= {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    assert first.history[columns].equals(second.history[columns]), \
        f"history.csv differs:\n{first.history[columns]}\n{second.history[columns]}"
    assert first.best_epoch == second.best_epoch
    assert first.best_train_accuracy == second.best_train_accuracy


@pytest.mark.parametrize("model, xla", [
    pytest.param("alexnet", False, id="alexnet-graph"),
    pytest.param("alexnet", True, id="alexnet-xla"),
    # about 3 minutes (tracing InceptionV3 three times): ./run test-slow
    pytest.param("inception_v3", False, id="inception_v3-graph", marks=pytest.mark.slow),
])
def test_two_runs_from_scratch_are_identical(split, tmp_path, model, xla):
    """The graph-compiled path of the demo and seed profiles (tf.data, shuffled and augmented
    every epoch, random initial weights, dropout, Adam), twice in one process: nothing carries
    over from the first run. AlexNet: the quickest model to trace (about 15 s a run here). The
    demo profile compiles AlexNet with XLA on a CPU (``xla_on_cpu``), which must stay
    reproducible; InceptionV3's parallel branches are where a drift was once seen
    (train.deterministic_ops)."""
    profile = get_profile("smoke", epochs=2, batch_size=4, max_train_images=8, augment=True,
                          optimizer="adam", run_eagerly=False, xla_on_cpu=(model,) if xla else ())
    first, second = (train.train_model(model, split, profile, run_dir=tmp_path / name,
                                       resume=False, progress=False) for name in ("a", "b"))
    _assert_same_run(first, second)
    assert first.run_dir != second.run_dir
    assert bool(first.model.jit_compile) is xla  # the profile's xla_on_cpu reached model.compile

    stored = json.loads((first.run_dir / "config.json").read_text())
    best = first.history.loc[first.best_epoch - 1]
    assert stored["best_train_accuracy"] == first.best_train_accuracy == float(best["accuracy"])
    assert stored["best_epoch"] == first.best_epoch
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1":
        assert stored["environment"]["onednn"] is True
    # and a finished run reused later reports the same
    reused = train.train_model(model, split, profile, run_dir=first.run_dir, progress=False)
    assert reused.reused and reused.best_train_accuracy == first.best_train_accuracy
