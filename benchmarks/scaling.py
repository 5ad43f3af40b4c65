"""Benchmark 4, scaling: does time grow in proportion to the work?

* The demo pipeline (``make_dataset`` as ``train_model`` uses it under the demo profile: shuffle,
  flips/rotations, the proposed model's 64px side, no cache, so every image is read) over 1x, 2x
  and 4x as many images. Expected: time proportional to the number of images.
* One training step (batch 16, in-memory data, so only the model's work) at input sides 64, 96,
  128 and 192 for the proposed model and VGG16. Expected: time proportional to the number of
  pixels (side squared): every convolution's work is, and so is the proposed model's first dense
  layer, whose input is the flattened last feature map.

``measured / expected`` near 1 means linear growth; the table says where it is not and why.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from benchmarks.common import (Config, Table, demo_table, iterate_images, ratio, rounded, take,
                               warm_page_cache)

FULL = dict(demo_images=1800, base_images=200, batch=16, side=64,
            models=("proposed", "vgg16"), sizes=(64, 96, 128, 192), warmup=2, steps=5)
QUICK = dict(demo_images=60, base_images=8, batch=4, side=32,
             models=("vgg16",), sizes=(32, 48), warmup=1, steps=2)
MULTIPLES = (1, 2, 4)
REPEATS = 2  # each pass timed twice, the faster kept (a busy moment on the machine is dropped)
LINEAR_BAND = (0.8, 1.25)  # measured/expected inside this band counts as linear


def run(cfg: Config) -> list[Table]:
    s = QUICK if cfg.quick else FULL
    return [pipeline_scaling(cfg, s), training_scaling(cfg, s)]


def _verdict(value: float) -> str:
    if value != value:  # NaN
        return ""
    low, high = LINEAR_BAND
    if value < low:
        return "sub-linear"
    if value > high:
        return "super-linear"
    return "linear"


def pipeline_scaling(cfg: Config, s: dict) -> Table:
    import tensorflow as tf  # noqa: F401  (imported before the clock starts)

    from allnet_lib import pipeline

    table = demo_table(cfg, s["demo_images"])
    biggest = take(table, s["base_images"] * MULTIPLES[-1])
    warm_page_cache(biggest["path"])
    common = dict(image_size=s["side"], crop=400, batch_size=s["batch"], shuffle=True,
                  augment=True, cache=False)
    iterate_images(pipeline.make_dataset(biggest.iloc[:2], **common))  # TensorFlow start-up
    rows = []
    for k in MULTIPLES:
        part = biggest.iloc[: s["base_images"] * k]
        cfg.say(f"  pipeline over {len(part)} images, best of {REPEATS} ...")
        best = float("inf")
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            got, _ = iterate_images(pipeline.make_dataset(part, **common))
            best = min(best, time.perf_counter() - t0)
        rows.append(dict(images=got, multiple=k, seconds=best))
    frame = pd.DataFrame(rows)
    base = frame.iloc[0]
    fixed, per_image = np.polyfit(frame["images"], frame["seconds"], 1)[::-1]
    frame["images_per_s"] = frame["images"] / frame["seconds"]
    frame["time_ratio"] = frame["seconds"] / base.seconds
    frame["expected_ratio"] = frame["images"] / base.images
    frame["measured_vs_expected"] = frame["time_ratio"] / frame["expected_ratio"]
    frame["growth"] = frame["measured_vs_expected"].map(_verdict)
    frame.loc[0, "growth"] = "(reference)"
    notes = [f"make_dataset(shuffle=True, augment=True, cache=False), {s['side']}px, batch "
             f"{s['batch']}, one pass (best of {REPEATS}) over {', '.join(map(str, frame['images']))} "
             "demo images "
             "(450x450 BMP, warm page cache), including building the pipeline.",
             f"A straight line through the points: {fixed:.2f} s fixed cost per pass + "
             f"{per_image * 1000:.1f} ms per image."]
    odd = frame.iloc[1:][frame.iloc[1:]["growth"] != "linear"]
    if not odd.empty:
        notes.append(
            "Not linear: " + "; ".join(f"{r.images} images took {r.time_ratio:.2f}x the time of "
                                       f"{int(base.images)} ({r.measured_vs_expected:.2f} of the "
                                       "expected)" for r in odd.itertuples())
            + ". Sub-linear: the fixed cost per pass (building the pipeline, tracing its "
            "functions, starting its threads) weighs more on a small pass, so bigger passes are "
            "cheaper per image. Super-linear growth would mean memory pressure or other work on "
            "the machine.")
    else:
        notes.append("Time grows in proportion to the number of images.")
    return Table("scaling_pipeline", "Scaling: the demo input pipeline vs number of images",
                 rounded(frame), notes)


def training_scaling(cfg: Config, s: dict) -> Table:
    from benchmarks.training import run_job

    rows = []
    for model in s["models"]:
        cfg.say(f"  {model}: one training step at sides {', '.join(map(str, s['sizes']))} ...")
        job = dict(kind="step_sizes", model=model, sizes=list(s["sizes"]), batch=s["batch"],
                   warmup=s["warmup"], steps=s["steps"], optimizer="adam", learning_rate=1e-4)
        result = run_job(cfg, job)
        if not result.get("ok"):
            rows.append(dict(model=model, image_size=None, error=result.get("error")))
            continue
        steps = result["step_s"]
        first = s["sizes"][0]
        for side in s["sizes"]:
            seconds = steps[str(side)]
            rows.append(dict(model=model, image_size=side, step_s=seconds,
                             images_per_s=s["batch"] / seconds,
                             time_ratio=ratio(seconds, steps[str(first)]),
                             expected_ratio=(side / first) ** 2))
    frame = pd.DataFrame(rows)
    if "step_s" in frame:
        frame["measured_vs_expected"] = frame["time_ratio"] / frame["expected_ratio"]
        frame["growth"] = frame["measured_vs_expected"].map(_verdict)
        frame.loc[frame["image_size"] == s["sizes"][0], "growth"] = "(reference)"
    notes = [f"Seconds per training step (median of {s['steps']} timed steps, after "
             f"{s['warmup']} warm-up step(s)), batch {s['batch']}, in-memory data (no input "
             "cost), Adam; expected "
             "time ratio = pixel ratio (side / smallest side) squared."]
    odd = frame[frame.get("growth", pd.Series(dtype=str)).isin(["sub-linear", "super-linear"])]
    if not odd.empty:
        for model, part in odd.groupby("model", sort=False):
            kinds = set(part["growth"])
            detail = ", ".join(f"{r.image_size}px {r.measured_vs_expected:.2f}"
                               for r in part.itertuples())
            why = []
            if "sub-linear" in kinds:
                why.append("grows more slowly than the pixel count: a per-step cost that does "
                           "not depend on the side (launching hundreds of small operations, the "
                           "optimiser update of every weight) dominates small inputs, and larger "
                           "convolutions use the cores more efficiently")
            if "super-linear" in kinds:
                why.append("grows faster than the pixel count: activations no longer fit the "
                           "CPU caches, so memory traffic grows faster than arithmetic")
            notes.append(f"{model} is not linear (measured/expected: {detail}): it "
                         + "; ".join(why) + ".")
    elif "step_s" in frame:
        notes.append("Step time grows in proportion to the number of pixels for every model.")
    return Table("scaling_training", "Scaling: one training step vs input size", rounded(frame),
                 notes)
