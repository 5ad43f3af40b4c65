"""Training one model on one split under one profile, with everything a long run needs.

``train_model`` writes a run folder, by default ``runs_root()/<profile>/<split name>/<model>/``:
``config.json`` (what was run, its status and timings), ``history.csv`` (one row per epoch),
``best.keras`` (the epoch with the best ``profile.monitor``), ``last.keras`` (the final epoch) and,
while a run is in progress, ``backup/`` (Keras ``BackupAndRestore``, so a killed run resumes)
and ``.best.weights.h5`` (the best epoch's weights, made into best.keras at the end).

What happens when the run folder already exists:

=====================  =================  ==============================================
folder holds           ``resume=True``    ``resume=False``
=====================  =================  ==============================================
nothing                train              train
same config, finished  reuse it (load)    FileExistsError: never retrained silently
same config, stopped   continue from the  FileExistsError
                       last saved epoch
another config         ValueError naming the differences (use another ``run_dir``)
=====================  =================  ==============================================

``overwrite=True`` deletes the old run and trains from scratch, whatever it held.
A run killed mid-save can leave a temporary file (``.<name>.<hex>.tmp*``); the next run removes it
and says so. Resuming is said even with ``progress=False`` and recorded in config.json
(``resumed_after_epochs``), so a resumed run can always be told from an uninterrupted one.

Validation always uses ``split.val``; when a split has none, a subject-level validation part is
carved out of the training part (and said so). The test part is never looked at during
training. This fixes the 2019 report, which kept the epoch with the best accuracy on its test set,
so its test score was also a selection score.

Reproducibility: the same commit, profile (its ``seed``) and data give the same run on the same
kind of machine: the same weights, ``history.csv`` and records. ``_fit`` seeds Python, NumPy and
the backend (``keras.utils.set_random_seed(profile.seed)``) after clearing the Keras session, and
trains with TensorFlow's op determinism on (:func:`deterministic_ops`; it is switched back off
afterwards if it was off). The input pipelines draw every shuffle and augmentation from
``profile.seed``: ``data="arrays"`` from (seed, epoch), so a resumed run gets the batches an
uninterrupted one would; ``data="files"`` (tf.data) reshuffles from one seeded sequence, so a
run resumed after an interruption sees other (equally random) orders from there on.
oneDNN (TensorFlow's fast CPU kernels) stays on; it rounds differently from plain Eigen, so runs
are comparable only with the same setting, recorded in ``config.json`` (``environment.onednn``).

Backends and devices: ``data="files"`` streams images with ``tf.data`` (TensorFlow backend);
``data="arrays"``, and any other backend (JAX, PyTorch), decodes them into memory first (uint8);
``data="cache"`` (the ``gpu`` profile's ``feed``) decodes each file once into the decoded-image
cache (``paths.cache_dir()``), shared by every model and run at that input side, and feeds from
there on any backend. Mixed precision and XLA are used when a GPU is present (XLA on a CPU only
for the models in ``profile.xla_on_cpu``). With several GPUs (or a CPU split into
several logical devices on purpose) training is data-parallel through
``tf.distribute.MirroredStrategy`` (TensorFlow) or ``keras.distribution.DataParallel`` (JAX).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from allnet_lib.labels import CLASSES
from allnet_lib.messages import option
from allnet_lib.paths import display_path
# the run folder's names and readers belong to allnet_lib.runs (re-exported here for callers)
from allnet_lib.runs import (BACKUP_DIR, BEST_NAME, BEST_WEIGHTS, CONFIG_NAME, HISTORY_NAME,  # noqa: F401
                             LAST_NAME, default_run_dir, read_history)
from allnet_lib.runs import _jsonable, write_json as _write_json
from allnet_lib.split import training_parts  # which cells a model trains on: a question about the split

MAX_EPOCH_LINES = 25   # notebook progress: at most about this many epoch lines
# profile fields that do not change what a run computes (left out of config comparisons)
# (``feed``, like ``data=``, says how the images reach the model: recorded in config.json's environment)
NOT_COMPARED = ("description", "demo_images", "run_eagerly", "departures", "leakage_model", "leakage_seeds",
                "leakage_epochs", "feed")
DATA_MODES = ("files", "arrays", "cache")


def comparable_settings(profile, model_name: str | None = None) -> dict:
    """The profile's fields that decide what a run computes: two runs whose settings (and data,
    model and seed) are equal are the same experiment, so a finished one can be reused. With
    ``model_name``, the per-model fields hold that model's values only (:func:`settings_for_model`)."""
    settings = profile.to_dict() if hasattr(profile, "to_dict") else dataclasses.asdict(profile)
    settings = {key: value for key, value in settings.items() if key not in NOT_COMPARED}
    return settings if model_name is None else settings_for_model(settings, model_name)


def settings_for_model(settings: dict, model_name: str) -> dict:
    """``settings`` with the per-model fields cut down to ``model_name``'s own input side,
    learning rate and XLA flag, so that changing another model's setting does not make this
    model's finished runs look like another experiment (and train them again). Idempotent, so a
    stored configuration written before this existed compares equal once cut down too."""
    out = dict(settings)
    sizes = settings.get("image_sizes") or {}
    if model_name in sizes:
        out["image_sizes"] = {model_name: sizes[model_name]}
    if "learning_rate" in settings:
        out["learning_rate"] = (settings.get("learning_rates") or {}).get(model_name, settings["learning_rate"])
        out["learning_rates"] = {}
    if "xla_on_cpu" in settings:
        out["xla_on_cpu"] = [model_name] if model_name in (settings["xla_on_cpu"] or []) else []
    return out


def for_comparison(config: dict | None) -> dict:
    """A stored run or experiment configuration (``{"model", "profile", ...}``) as it is compared:
    its profile settings cut down to its model (:func:`settings_for_model`)."""
    config = dict(config or {})
    if isinstance(config.get("profile"), dict) and config.get("model"):
        config["profile"] = settings_for_model(config["profile"], config["model"])
    return config


@dataclass
class TrainResult:
    """What a training run produced. ``model`` holds the best epoch's weights."""

    model_name: str
    model: object
    history: pd.DataFrame
    run_dir: Path
    best_path: Path
    last_path: Path
    seconds: float             # training time summed over epochs (all sessions of the run)
    images_per_second: float   # training images per second in a typical (median) epoch
    config: dict
    reused: bool = False       # True when a finished run was loaded instead of trained
    best_epoch: int | None = None  # 1-based (history.csv's "epoch" column is 0-based, as Keras)
    notes: list = field(default_factory=list)
    best_train_accuracy: float | None = None  # training accuracy of the best epoch (best.keras)


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------
def train_model(model_name: str, split, profile, *, run_dir=None, resume: bool = True,
                data: str | None = None, progress: bool = True, overwrite: bool = False,
                callbacks=(), weights=None) -> TrainResult:
    """Train ``model_name`` on ``split`` (a :class:`allnet_lib.split.Split`) with ``profile``.

    See the module docstring for the run folder and how ``resume`` / ``overwrite`` treat an
    existing one. ``callbacks`` are extra Keras callbacks; ``weights`` is passed to
    :func:`allnet_lib.models.build_model` (e.g. ``"imagenet"``). ``data`` (default: the
    profile's ``feed``): ``"files"`` streams with tf.data, ``"arrays"`` decodes into memory,
    ``"cache"`` decodes once into ``paths.cache_dir()`` and feeds from there (any backend)."""
    import keras

    from allnet_lib import models

    spec = models.get_spec(model_name)
    data = data or profile.feed
    if data not in DATA_MODES:
        raise ValueError(f"data must be 'files' (tf.data), 'arrays' (NumPy in memory) or 'cache' "
                         f"(NumPy from the decoded-image cache), got {data!r}")
    notes: list[str] = []
    backend = keras.backend.backend()
    if data == "files" and backend != "tensorflow":
        data = "arrays"
        notes.append(f"{backend} backend: images are loaded into memory (data='arrays')")
    train, val, val_source = training_parts(split, profile, notes)
    run_dir = Path(run_dir) if run_dir else default_run_dir(profile, split, spec.name)
    config = run_config(spec.name, split, profile, train, val, val_source, weights)
    state = _prepare_run_dir(run_dir, config, resume=resume, overwrite=overwrite)
    if state == "finished":
        return _reuse(run_dir, spec.name, config, progress)
    _remove_stale_temporaries(run_dir)
    resumed = _resumed_record(run_dir, state)
    _write_json(run_dir / CONFIG_NAME, {"config": config, "status": "running",
                                        "environment": environment(backend, data),
                                        "resumed_after_epochs": resumed,
                                        "split_settings": _split_settings(split)})
    _say(progress, *notes)
    if resumed:  # said even without progress output: it changes what the run is
        notes.append(f"resumed an interrupted run after epoch {resumed[-1]}")
        print(f"resuming the interrupted run in {display_path(run_dir)} after epoch {resumed[-1]} "
              f"(resumed {len(resumed)} time(s); recorded in {CONFIG_NAME})", flush=True)
    return _fit(spec, train, val, profile, run_dir, config, data=data, progress=progress,
                extra_callbacks=list(callbacks), weights=weights, notes=notes)


def _remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files a killed run left in ``run_dir`` (``.<name>.<hex>.tmp*``: a
    half-written checkpoint, config or history); nothing else uses them. Says what it removed."""
    stale = sorted(p for p in run_dir.glob(".*.tmp*") if p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        print(f"removed {len(stale)} unfinished temporary file(s) left in {display_path(run_dir)} by an "
              f"interrupted run: {', '.join(p.name for p in stale)}", flush=True)
    return stale


def _backup_epoch(run_dir: Path) -> int:
    """Epochs saved in the run's backup (Keras BackupAndRestore); 0 when there is none."""
    meta = run_dir / BACKUP_DIR / "training_metadata.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return int(json.loads(meta.read_text())["epoch"])
    return 0


def _resumed_record(run_dir: Path, state: str) -> list[int]:
    """The epochs after which this run was resumed so far, this session's included (kept in
    config.json as ``resumed_after_epochs``, so a resumed run can always be told apart)."""
    if state != "interrupted":
        return []
    stored = _check_is_run(run_dir)
    return list(stored.get("resumed_after_epochs") or []) + [_backup_epoch(run_dir)]


# --------------------------------------------------------------------------------------------
# configuration and the run folder
# --------------------------------------------------------------------------------------------
def run_config(model_name, split, profile, train, val, val_source, weights=None) -> dict:
    """Everything that determines the result of a run; two runs with equal configs are the
    same experiment (file locations and machines are left out on purpose)."""
    from allnet_lib.split import manifest_hash

    return {
        "model": model_name,
        "image_size": profile.image_size(model_name),
        "weights": None if weights is None else str(weights),
        "profile": comparable_settings(profile, model_name),
        "split": split.name,
        "split_hash": manifest_hash(split),
        "train_hash": manifest_hash(train),
        "val_hash": manifest_hash(val),
        "val_source": val_source,
        "n_train": int(len(train)),
        "n_val": int(len(val)),
        "train_classes": {c: int((train["label"] == c).sum()) for c in CLASSES},
    }


def environment(backend: str, data: str) -> dict:
    """Where a run happened (recorded, not compared)."""
    import platform

    import keras

    return {"backend": backend, "keras": keras.__version__, "python": platform.python_version(),
            "data": data, "devices": [str(d) for d in _devices(backend)],
            "onednn": onednn_enabled() if backend == "tensorflow" else None}


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels (TensorFlow's own default depends on the
    CPU; ``TF_ENABLE_ONEDNN_OPTS`` overrides it); None when it cannot tell."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def _prepare_run_dir(run_dir: Path, config: dict, *, resume: bool, overwrite: bool) -> str:
    """'new', 'finished' or 'interrupted'; raises for anything that must not be touched."""
    if overwrite and run_dir.exists():
        _check_is_run(run_dir)
        shutil.rmtree(run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        run_dir.mkdir(parents=True, exist_ok=True)
        return "new"
    stored = _check_is_run(run_dir)
    found = for_comparison(stored.get("config"))
    if found != _jsonable(config):
        diff = _differences(found, _jsonable(config))
        raise ValueError(f"{run_dir} holds a run with another configuration (differs in: "
                         f"{', '.join(diff)}); it was left untouched. Use another "
                         f"{option('run_dir', 'run_dir')}, or {option('overwrite')} to delete it "
                         "and train again.")
    finished = stored.get("status") == "finished" and (run_dir / BEST_NAME).is_file()
    if not resume:
        what = "a finished run" if finished else "an interrupted run"
        action = "reuse it" if finished else "continue it"
        raise FileExistsError(f"{run_dir} already holds {what} with this configuration; pass "
                              f"{option('resume')} to {action}, or {option('overwrite')} to train "
                              "from scratch.")
    return "finished" if finished else "interrupted"


def _check_is_run(run_dir: Path) -> dict:
    """The stored config.json; refuses folders that are not run folders."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise FileExistsError(f"{run_dir} is not empty and has no {CONFIG_NAME}, so it is not a "
                              "training run folder; it was left untouched. Choose another "
                              f"{option('run_dir', 'run_dir')}.")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete that run folder or pass "
                         f"{option('overwrite')}") from error


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _reuse(run_dir: Path, model_name: str, config: dict, progress: bool) -> TrainResult:
    import keras

    from allnet_lib import models  # noqa: F401  (registers the custom layers for loading)

    stored = json.loads((run_dir / CONFIG_NAME).read_text())
    _say(progress, f"reusing the finished run in {display_path(run_dir)} (same configuration; pass "
                   f"{option('overwrite')} to train again)")
    model = keras.saving.load_model(run_dir / BEST_NAME)
    history = read_history(run_dir)
    best_train_accuracy = stored.get("best_train_accuracy")
    if best_train_accuracy is None:  # a run finished before this was recorded
        best_train_accuracy = _best_row(history, config["profile"]["monitor"])[1]
    return TrainResult(model_name, model, history, run_dir, run_dir / BEST_NAME,
                       run_dir / LAST_NAME, float(stored.get("seconds", 0.0)),
                       float(stored.get("images_per_second") or 0.0), config, reused=True,
                       best_epoch=stored.get("best_epoch"), best_train_accuracy=best_train_accuracy)


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------
def _fit(spec, train, val, profile, run_dir, config, *, data, progress, extra_callbacks,
         weights, notes) -> TrainResult:
    import keras

    backend = keras.backend.backend()
    # Keras turns XLA off while TensorFlow's op determinism is on; XLA on a CPU is reproducible
    # by itself (tests/test_reproducible.py), so a model the profile compiles with XLA trains without it
    xla = _xla_on_cpu(spec.name, profile, backend) and not profile.run_eagerly
    with contextlib.nullcontext() if xla else deterministic_ops(backend):
        return _fit_deterministic(spec, train, val, profile, run_dir, config, data=data,
                                  progress=progress, extra_callbacks=extra_callbacks,
                                  weights=weights, notes=notes)


@contextlib.contextmanager
def deterministic_ops(backend: str):
    """TensorFlow's op determinism (``tf.config.experimental.enable_op_determinism``) inside the
    block, restored afterwards. With it every TensorFlow op picks a run-to-run reproducible
    algorithm (e.g. the loss is computed as log-softmax + gather instead of the fused kernel, so
    weights differ slightly from a run without it) and tf.data keeps its order. Measured on the
    2-core CPU with oneDNN on (demo profile, 64 images, 3 epochs, 4 alternating runs each): no
    slower, median training time with/without 0.88 (AlexNet) and 0.97 (proposed), 1.06 with
    data="arrays"; within the machine's noise. JAX and PyTorch on a CPU are deterministic
    already (JAX on a GPU would need XLA_FLAGS=--xla_gpu_deterministic_ops=true).

    InceptionV3 (parallel branches that TensorFlow may run concurrently in its inter-op thread
    pool) is the model to watch. An earlier measurement on the 2-core CPU saw two of its runs
    agree on the first step and drift apart by about 1e-8 after a few; on 1 December (oneDNN on,
    TensorFlow 2.21) the demo profile's InceptionV3 (6 epochs, 600 images) trained twice gave
    bit-identical histories and test predictions, and tests/test_reproducible.py checks it at
    smoke size. Should the drift come back, ``TF_NUM_INTEROP_THREADS=1`` (set before TensorFlow
    starts) removes it, at a cost measured on that CPU of about 25 % (InceptionV3) to 40 %
    (ResNet50) of training speed. AlexNet and VGG16 (with or without XLA), ResNet50 and the
    proposed model were identical without it."""
    if backend != "tensorflow":
        yield
        return
    import tensorflow as tf

    try:  # only enable_op_determinism is public; without the rest it stays on
        from tensorflow.python.framework import config as tf_config

        was_on, disable = tf_config.is_op_determinism_enabled(), tf_config.disable_op_determinism
    except (ImportError, AttributeError):
        was_on, disable = True, None
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            disable()


def _fit_deterministic(spec, train, val, profile, run_dir, config, *, data, progress,
                       extra_callbacks, weights, notes) -> TrainResult:
    import keras

    backend = keras.backend.backend()
    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(profile.seed)  # after clear_session, which resets Keras' seeds
    restored_epoch = _trim_history_to_backup(run_dir)
    gpu = has_gpu(backend)
    distribution = _distribution(backend)
    n_devices = _replicas(distribution)
    if n_devices > 1:
        _say(progress, f"data-parallel training on {n_devices} devices")
    with _precision(gpu), _scope(distribution, backend):
        model = _build_and_compile(spec, profile, config, weights, backend, gpu)
    train_data, val_data = _datasets(train, val, profile, config["image_size"], data,
                                     n_devices, progress, first_epoch=restored_epoch, gpu=gpu)
    history_so_far = read_history(run_dir)
    best = _BestCheckpoint(run_dir / BEST_WEIGHTS, profile.monitor,
                           best_score(history_so_far, profile.monitor))
    timer = _EpochTimer()
    callbacks = [timer, keras.callbacks.CSVLogger(str(run_dir / HISTORY_NAME), append=True), best]
    if profile.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(profile.monitor,
                                                       patience=profile.early_stopping_patience))
    callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / BACKUP_DIR)))
    verbose = 0
    if progress:
        if _is_terminal():
            verbose = 1
        else:
            callbacks.insert(1, EpochLines(spec.name, config, profile.epochs, profile.monitor))
    with _scope(distribution, backend):
        model.fit(train_data, validation_data=val_data, epochs=profile.epochs,
                  class_weight=_class_weight(train) if profile.class_weight else None,
                  callbacks=callbacks + extra_callbacks, verbose=verbose,
                  shuffle=False)  # the datasets shuffle themselves, every epoch
    _save_atomic(model, run_dir / LAST_NAME)
    _write_best(model, run_dir, best)
    return _finish(spec.name, model, run_dir, config, backend, data, notes)


def _write_best(model, run_dir: Path, best: "_BestCheckpoint") -> None:
    """best.keras from the best epoch's weights; a plain copy of last.keras when the last epoch
    was the best (or no epoch had a score), which saves serialising the model twice."""
    weights = run_dir / BEST_WEIGHTS
    if weights.is_file() and not best.last_epoch_was_best:
        model.load_weights(weights)
        _save_atomic(model, run_dir / BEST_NAME)
    else:
        tmp = run_dir / f".{BEST_NAME}.{uuid.uuid4().hex[:8]}.tmp"
        shutil.copyfile(run_dir / LAST_NAME, tmp)
        os.replace(tmp, run_dir / BEST_NAME)
    weights.unlink(missing_ok=True)


def _finish(model_name, model, run_dir, config, backend, data, notes) -> TrainResult:
    history = read_history(run_dir)
    monitor = config["profile"]["monitor"]
    seconds = float(history["seconds"].sum()) if "seconds" in history else 0.0
    speed = images_per_second(history, config["n_train"])
    best_epoch, best_train_accuracy = _best_row(history, monitor)
    _write_json(run_dir / CONFIG_NAME, {
        "config": config, "status": "finished", "environment": environment(backend, data),
        "epochs_run": int(len(history)), "best_epoch": best_epoch,
        "best_train_accuracy": best_train_accuracy, "seconds": seconds,
        "images_per_second": speed, "notes": notes,
        "resumed_after_epochs": _stored_resumed(run_dir),
        "split_settings": _stored(run_dir).get("split_settings")})
    return TrainResult(model_name, model, history, run_dir, run_dir / BEST_NAME,
                       run_dir / LAST_NAME, seconds, speed, config, best_epoch=best_epoch,
                       notes=notes, best_train_accuracy=best_train_accuracy)


def _stored(run_dir: Path) -> dict:
    """The run's config.json as written so far ({} when unreadable)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        return dict(json.loads((run_dir / CONFIG_NAME).read_text()))
    return {}


def _stored_resumed(run_dir: Path) -> list[int]:
    return list(_stored(run_dir).get("resumed_after_epochs") or [])


def _split_settings(split) -> dict | None:
    """How to make the run's split again (split.make_split), kept beside its config: not compared,
    so runs made before it was recorded stay reusable. None for a split made by hand."""
    from allnet_lib.split import SPLIT_METHODS, split_settings

    return split_settings(split) if getattr(split, "method", None) in SPLIT_METHODS else None


def _best_row(history: pd.DataFrame, monitor: str) -> tuple[int | None, float | None]:
    """(best epoch, 1-based; training accuracy at that epoch): the epoch best.keras holds, the
    first of equal scores (as :class:`_BestCheckpoint` keeps it). (None, None) without scores."""
    if monitor not in history or not history[monitor].notna().any():
        return None, None
    index = history[monitor].idxmax() if higher_is_better(monitor) else history[monitor].idxmin()
    accuracy = history.loc[index, "accuracy"] if "accuracy" in history else None
    accuracy = None if accuracy is None or pd.isna(accuracy) else float(accuracy)
    return int(history.loc[index, "epoch"]) + 1, accuracy  # 1-based, as printed


def images_per_second(history: pd.DataFrame, n_train: int) -> float:
    """Training images per second of a median epoch; the first epoch (graph tracing, start-up)
    is left out when there are others."""
    if "train_seconds" not in history or history.empty:
        return float("nan")
    times = history["train_seconds"].to_numpy(dtype=float)
    times = times[1:] if len(times) > 1 else times
    return float(n_train / np.median(times)) if np.median(times) > 0 else float("nan")


def _build_and_compile(spec, profile, config, weights, backend, gpu):
    import keras

    from allnet_lib import models

    model = models.build_model(spec.name, config["image_size"], weights=weights)
    if profile.bn_momentum is not None:
        set_bn_momentum(model, profile.bn_momentum)
    rate = profile.learning_rate_for(spec.name)
    if profile.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=profile.momentum)
    else:
        optimizer = keras.optimizers.Adam(rate)
    if backend == "jax":
        jit = True
    elif backend == "tensorflow":  # XLA on a GPU; on a CPU only where the profile measured it faster
        jit = gpu or _xla_on_cpu(spec.name, profile, backend)
    else:
        jit = False
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", models.BalancedAccuracy()],
                  jit_compile=jit and not profile.run_eagerly,
                  run_eagerly=profile.run_eagerly)
    return model


def _xla_on_cpu(model_name: str, profile, backend: str) -> bool:
    """Whether TensorFlow compiles ``model_name`` with XLA on a CPU: the profile's ``xla_on_cpu``
    (the one place that decides, read by the compile and by the choice of op determinism)."""
    return backend == "tensorflow" and model_name in profile.xla_on_cpu


def set_bn_momentum(model, momentum: float) -> int:
    """Set the momentum of every BatchNormalization layer (nested models included); returns
    how many. Keras' default 0.99 averages over about 100 steps: a short run from scratch ends
    with running statistics that lag behind its weights, so inference-mode outputs collapse."""
    import keras

    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            count += set_bn_momentum(layer, momentum)
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count


def _datasets(train, val, profile, image_size, data, n_devices, progress, first_epoch=0, gpu=False):
    from allnet_lib import pipeline
    from allnet_lib.paths import cache_dir

    batch = profile.batch_size
    if data == "files":
        common = dict(image_size=image_size, crop=profile.crop, batch_size=batch)
        return (pipeline.make_dataset(train, shuffle=True, augment=profile.augment,
                                      seed=profile.seed, **common),
                pipeline.make_dataset(val, **common))
    multiple = max(1, n_devices)
    batch = max(multiple, batch - batch % multiple)
    where = dict(image_size=image_size, crop=profile.crop, progress=progress,
                 cache_dir=cache_dir() if data == "cache" else None)
    x, xv = pipeline.decoded_images(train, **where), pipeline.decoded_images(val, **where)
    workers = pipeline.feed_workers(gpu)
    return (pipeline.array_batches(x, pipeline.labels_of(train), batch_size=batch, shuffle=True,
                                   augment=profile.augment, seed=profile.seed, multiple_of=multiple,
                                   epoch=first_epoch, workers=workers),
            pipeline.array_batches(xv, pipeline.labels_of(val), batch_size=batch,
                                   multiple_of=multiple, workers=workers))


def _class_weight(train: pd.DataFrame) -> dict:
    """Balanced weights n / (classes * n_c): each class contributes equally to the loss."""
    y = train["label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    counts = np.bincount(y, minlength=len(CLASSES))
    present = counts > 0
    return {i: float(len(y) / (present.sum() * n)) for i, n in enumerate(counts) if n > 0}


def _trim_history_to_backup(run_dir: Path) -> int:
    """Epochs the backup holds; history rows after it (logged, then killed before the backup)
    are dropped so they are not counted twice when training continues."""
    meta = run_dir / BACKUP_DIR / "training_metadata.json"
    epoch = 0
    if meta.is_file():
        with contextlib.suppress(ValueError, KeyError):
            epoch = int(json.loads(meta.read_text())["epoch"])
    history_path = run_dir / HISTORY_NAME
    if history_path.is_file() and history_path.stat().st_size:
        history = read_history(run_dir)
        kept = history[history["epoch"] < epoch]
        if len(kept) != len(history):
            tmp = history_path.with_name(f".{HISTORY_NAME}.tmp")
            kept.to_csv(tmp, index=False)
            os.replace(tmp, history_path)
    return epoch


def higher_is_better(monitor: str) -> bool:
    """Accuracies (``val_accuracy``, ``val_balanced_accuracy``) are maximised, losses minimised."""
    return "accuracy" in monitor


def best_score(history: pd.DataFrame, monitor: str) -> float | None:
    """The best value of ``monitor`` in a run's history (the epoch best.keras kept); None if the
    history has no such column or only missing values."""
    if monitor not in history or history[monitor].isna().all():
        return None
    return float(history[monitor].max() if higher_is_better(monitor) else history[monitor].min())


def _save_atomic(model, path: Path, *, weights_only: bool = False) -> None:
    """Save to a temporary sibling, then rename: a crash mid-save never leaves a broken file."""
    suffix = ".weights.h5" if weights_only else ".keras"
    tmp = path.with_name(f".{path.name.lstrip('.').split('.')[0]}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        model.save_weights(tmp) if weights_only else model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------
# devices, precision, distribution
# --------------------------------------------------------------------------------------------
def _devices(backend: str) -> list:
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU")] or \
            [d.name for d in tf.config.list_logical_devices("CPU")]
    import keras

    try:
        return list(keras.distribution.list_devices())
    except Exception:  # backends without keras.distribution support (e.g. torch)
        return ["cpu:0"]


def has_gpu(backend: str | None = None) -> bool:
    """Whether the backend sees a GPU (decides mixed precision and XLA)."""
    import keras

    backend = backend or keras.backend.backend()
    return any("gpu" in str(d).lower() for d in _devices(backend))


def _distribution(backend: str):
    """A data-parallel strategy when several devices of one kind are visible, else None.

    Several logical CPUs exist only when someone split the CPU on purpose (to test multi-device
    code without GPUs), so they count as a request for data parallelism too."""
    devices = _devices(backend)
    if len(devices) < 2:
        return None
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy(devices)
    if backend == "jax":
        import keras

        return keras.distribution.DataParallel(devices=devices)
    return None


def _replicas(distribution) -> int:
    """How many devices share each batch (1 without a distribution)."""
    if distribution is None:
        return 1
    if hasattr(distribution, "num_replicas_in_sync"):  # tf.distribute
        return int(distribution.num_replicas_in_sync)
    return int(np.asarray(distribution.device_mesh.devices).size)  # keras.distribution


@contextlib.contextmanager
def _scope(distribution, backend: str):
    """Build, compile and fit inside the strategy (both kinds have ``.scope()``)."""
    if distribution is None:
        yield
    else:
        with distribution.scope():
            yield


@contextlib.contextmanager
def _precision(gpu: bool):
    """mixed_float16 while building on a GPU (the softmax stays float32), then back."""
    import keras

    if not gpu:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# --------------------------------------------------------------------------------------------
# callbacks
# --------------------------------------------------------------------------------------------
def _keras_callback():
    import keras

    return keras.callbacks.Callback


class _EpochTimer(_keras_callback()):
    """Adds ``seconds`` (whole epoch) and ``train_seconds`` (before validation) to the logs,
    so history.csv records the speed of every epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):
        if getattr(self, "_start", None) is not None and self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            now = time.perf_counter()
            logs["seconds"] = now - self._start
            logs["train_seconds"] = (self._train_end or now) - self._start
        self._start = None


class _BestCheckpoint(_keras_callback()):
    """Save the weights whenever ``monitor`` improves. Weights only (a third of a ``.keras``
    file with Adam's state, and much faster to write); the run's end turns them into
    best.keras. Written to a temporary file and renamed, so a crash mid-save breaks nothing."""

    def __init__(self, path: Path, monitor: str, best=None):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.maximise = higher_is_better(monitor)
        self.best = best
        self.last_epoch_was_best = False

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        self.last_epoch_was_best = False
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        better = self.best is None or (value > self.best if self.maximise else value < self.best)
        if better:
            self.best = float(value)
            _save_atomic(self.model, self.path, weights_only=True)
            self.last_epoch_was_best = True


class EpochLines(_keras_callback()):
    """One compact line per epoch (every k-th epoch beyond 25, so at most about 25 lines): renders
    cleanly in executed notebooks and logs, where batch-level bars would leave thousands of
    lines or widget placeholders."""

    def __init__(self, model_name: str, config: dict, epochs: int, monitor: str):
        super().__init__()
        self.model_name, self.config, self.epochs, self.monitor = model_name, config, epochs, monitor
        self.every = max(1, math.ceil(epochs / MAX_EPOCH_LINES))
        self.best = None

    def on_train_begin(self, logs=None):
        c = self.config
        print(f"{self.model_name}: {c['image_size']}px, {c['n_train']} training / {c['n_val']} "
              f"validation images, {self.epochs} epochs", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        maximise = higher_is_better(self.monitor)
        if value is not None and (self.best is None or
                                  (value > self.best[0] if maximise else value < self.best[0])):
            self.best = (value, epoch + 1)
        if (epoch + 1) % self.every and epoch + 1 != self.epochs:
            return
        parts = [f"epoch {epoch + 1:>{len(str(self.epochs))}}/{self.epochs}"]
        keys = ["loss", "accuracy", "val_loss", "val_accuracy"]
        keys += [self.monitor] if self.monitor not in keys else []
        for key in keys:
            if key in logs:
                parts.append(f"{key} {logs[key]:.3f}")
        parts.append(f"{logs.get('seconds', 0):.0f}s")
        if self.best is not None:
            parts.append(f"(best {self.monitor} {self.best[0]:.3f} at epoch {self.best[1]})")
        print("  ".join(parts), flush=True)


def _is_terminal() -> bool:
    """Keras's own batch-level bar is right in a terminal, not in notebooks or CI logs."""
    try:
        return sys.stdout.isatty() and "ipykernel" not in sys.modules
    except (AttributeError, ValueError):
        return False


def _say(progress: bool, *lines: str) -> None:
    if progress:
        for line in lines:
            print(line, flush=True)
