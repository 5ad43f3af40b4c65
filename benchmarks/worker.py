"""One training-speed job, normally in a fresh Python (``python -m benchmarks.worker JOB.json``),
so that its peak memory is its own and one model's graphs do not slow the next one.

Two kinds of job:

``throughput``: build and compile one model as ``allnet_lib.train`` does (the profile's optimiser,
sparse cross-entropy, accuracy; mixed precision and XLA only when asked, on a GPU), run a few
warm-up training and prediction steps on in-memory batches (graph tracing, optimiser set-up:
excluded from the timing), then, for each feed in ``job["feeds"]``, time whole epochs of
training and one pass of prediction over the same images, fed

* ``files``: by the real pipeline, exactly as ``train_model`` feeds it: ``make_dataset(...,
  shuffle=True, augment=True, cache=True)``; epoch 1 reads the files, later epochs the cache.
  Prediction: ``make_dataset(..., cache=False)`` (the evaluation path).
* ``cache``: as ``train_model(data="cache")`` feeds it (the ``gpu`` profile): the images decoded
  once into a file cache (``pipeline.decoded_images``, time in ``load_s``), then memory-mapped and
  cut into shuffled, augmented batches by ``array_batches`` (threads as in training).
* ``memory``: by tensors already in memory (``load_arrays`` beforehand, then
  ``tf.data.Dataset.from_tensor_slices``): no input work at all during the timing.

``step_sizes``: the time of one training step (in-memory data) for each of several input sides.

Prints one line ``BENCH-RESULT {json}``; the parent reads it.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback

from allnet_lib.notebook import quiet_tensorflow

quiet_tensorflow()  # TF_CPP_MIN_LOG_LEVEL=3 and oneDNN on, as everywhere (notebook.TF_ENV)

RESULT_PREFIX = "BENCH-RESULT "


def _callback_class():
    import keras

    class Clock(keras.callbacks.Callback):
        """Wall time of every epoch and batch, synchronised on the step's outputs."""

        def __init__(self):
            super().__init__()
            self.epochs, self.batches = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_start = self.epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(time.perf_counter() - self._epoch_start)

        def on_train_batch_end(self, batch, logs=None):
            _sync(logs)
            self.batches.append(time.perf_counter())

        def on_predict_begin(self, logs=None):
            self._epoch_start = time.perf_counter()

        def on_predict_batch_end(self, batch, logs=None):
            _sync(logs)
            self.batches.append(time.perf_counter())

        def on_predict_end(self, logs=None):
            self.epochs.append(time.perf_counter() - self._epoch_start)

    return Clock


def _sync(logs) -> None:
    """Wait for the step's results (a value we read cannot still be computing)."""
    import numpy as np

    for value in (logs or {}).values():
        try:
            np.asarray(value)
        except Exception:
            pass
        break


def _compile(model, job):
    import keras

    if job.get("optimizer", "adam") == "sgd":
        optimizer = keras.optimizers.SGD(job.get("learning_rate", 2e-4))
    else:
        optimizer = keras.optimizers.Adam(job.get("learning_rate", 1e-4))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=bool(job.get("jit", False)))
    return model


def _build(job, side):
    import keras

    from allnet_lib import models

    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(0)
    previous = keras.config.dtype_policy()
    if job.get("precision", "float32") != "float32":
        keras.config.set_dtype_policy(job["precision"])
    try:
        model = models.build_model(job["model"], side)
    finally:
        keras.config.set_dtype_policy(previous)
    return _compile(model, job)


def _memory_batches(x, y, batch):
    """In-memory batches: ``tf.data`` from tensors under TensorFlow (the same kind of dataset as
    the pipeline's, so the traced training step is reused); the library's ``array_batches``
    (what ``train_model(data="arrays")`` uses) under other backends."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).prefetch(tf.data.AUTOTUNE)
    from allnet_lib import pipeline

    return pipeline.array_batches(x, y, batch_size=batch)


def gpu_peak_mb() -> float | None:
    """Peak memory allocated on the first GPU so far (None without a GPU)."""
    import keras

    try:
        name = keras.backend.backend()
        if name == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        elif name == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "gpu":
                return device.memory_stats()["peak_bytes_in_use"] / 2**20
        elif name == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.max_memory_allocated() / 2**20
    except Exception:
        return None
    return None


def throughput(job: dict) -> dict:
    """Warm up once, then time training and prediction for each feed in ``job["feeds"]``."""
    import numpy as np
    import pandas as pd

    side, batch = int(job["image_size"]), int(job["batch"])
    table = pd.read_csv(job["table"]).iloc[:int(job["images"])].reset_index(drop=True)
    result = {"images": int(len(table))}

    t0 = time.perf_counter()
    model = _build(job, side)
    result["build_s"] = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    xw = rng.random((batch * job["warmup"], side, side, 3), dtype=np.float32)
    yw = rng.integers(0, 2, len(xw)).astype(np.int32)
    t0 = time.perf_counter()
    model.fit(_memory_batches(xw, yw, batch), epochs=1, verbose=0, shuffle=False)
    model.predict(_memory_batches(xw[:batch], yw[:batch], batch), verbose=0)
    result["warmup_s"] = time.perf_counter() - t0
    from benchmarks.common import PeakRSS

    for feed in job["feeds"]:
        with PeakRSS() as rss:
            result[feed] = _time_feed(model, table, job, feed)
        result[feed]["peak_rss_mb"] = rss.peak / 2**20
    result["gpu_peak_mb"] = gpu_peak_mb()
    return result


def _time_feed(model, table, job, feed: str) -> dict:
    import numpy as np

    from allnet_lib import pipeline

    side, batch, crop = int(job["image_size"]), int(job["batch"]), job.get("crop", 400)
    out = {}
    if feed == "files":  # exactly as train_model and evaluate feed a model
        train = pipeline.make_dataset(table, image_size=side, crop=crop, batch_size=batch,
                                      shuffle=True, augment=True, cache=True, seed=0)
        infer = pipeline.make_dataset(table, image_size=side, crop=crop, batch_size=batch,
                                      cache=False)
    elif feed == "cache":  # exactly as train_model(data="cache") feeds a model
        from pathlib import Path

        from allnet_lib.train import has_gpu

        t0 = time.perf_counter()
        x = pipeline.decoded_images(table, image_size=side, crop=crop, progress=False,
                                    cache_dir=Path(job["cache_dir"]))
        out["load_s"] = time.perf_counter() - t0
        y = pipeline.labels_of(table)
        workers = pipeline.feed_workers(has_gpu())
        train = pipeline.array_batches(x, y, batch_size=batch, shuffle=True, augment=True, seed=0,
                                       workers=workers)
        infer = pipeline.array_batches(x, y, batch_size=batch, workers=workers)
    elif feed == "memory":
        t0 = time.perf_counter()
        x, y = pipeline.load_arrays(table, image_size=side, crop=crop, progress=False)
        out["load_s"] = time.perf_counter() - t0
        train = infer = _memory_batches(x, y, batch)
    else:
        raise ValueError(f"unknown feed {feed!r}: expected 'files', 'cache' or 'memory'")
    clock = _callback_class()()
    model.fit(train, epochs=int(job["epochs"]), verbose=0, shuffle=False, callbacks=[clock])
    out["epoch_s"] = clock.epochs
    out["train_step_s"] = [float(v) for v in np.diff(clock.batches)]
    out["train_ips"] = [len(table) / s for s in clock.epochs]
    clock = _callback_class()()
    model.predict(infer, verbose=0, callbacks=[clock])
    out["infer_s"] = clock.epochs[0]
    out["infer_ips"] = len(table) / clock.epochs[0]
    return out


def step_sizes(job: dict) -> dict:
    """Median seconds per training step (in-memory data) at each side in ``job["sizes"]``."""
    import numpy as np

    batch, out = int(job["batch"]), {}
    for side in job["sizes"]:
        model = _build(job, side)
        rng = np.random.default_rng(0)
        x = rng.random((batch, side, side, 3), dtype=np.float32)
        y = rng.integers(0, 2, batch).astype(np.int32)
        warm = _memory_batches(np.repeat(x, job["warmup"], 0), np.repeat(y, job["warmup"]), batch)
        model.fit(warm, epochs=1, verbose=0, shuffle=False)
        timed = _memory_batches(np.repeat(x, job["steps"], 0), np.repeat(y, job["steps"]), batch)
        Clock = _callback_class()
        clock = Clock()
        model.fit(timed, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
        # the median step: one slow step (other work on the machine) does not move it
        steps = np.diff([clock.epoch_start, *clock.batches])
        out[str(side)] = float(np.median(steps))
        del model
    return {"step_s": out}


KINDS = {"throughput": throughput, "step_sizes": step_sizes}


def run(job: dict) -> dict:
    """Run a job here, with this process's peak memory over the job's duration."""
    from benchmarks.common import PeakRSS

    started = time.perf_counter()
    try:
        with PeakRSS() as rss:
            result = KINDS[job["kind"]](job)
        result["peak_rss_mb"] = rss.peak / 2**20
        result["ok"] = True
    except Exception as error:  # reported in the table, not fatal for the benchmark run
        result = {"ok": False, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}",
                  "traceback": traceback.format_exc()}
    result["seconds"] = time.perf_counter() - started
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as handle:
        job = json.load(handle)
    result = run(job)
    from benchmarks.common import lifetime_peak_rss

    result["lifetime_peak_rss_mb"] = lifetime_peak_rss() / 2**20
    print(RESULT_PREFIX + json.dumps(result, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
