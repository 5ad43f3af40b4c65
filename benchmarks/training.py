"""Benchmark 2, training throughput: images/s for training and inference, and peak memory, for
every model at the demo profile's size and at the report's size, (i) fed by the real pipeline
from files and (ii) from tensors already in memory. The ratio (i)/(ii) says how much the input
pipeline slows training down; target >= 0.9 on a CPU for every model.

Each (model, size, feed) runs in a fresh Python (``benchmarks.worker``), so that peak memory
(RSS, sampled every 20 ms over the job) is that job's alone. A few warm-up steps (graph tracing,
optimiser set-up) are excluded from the timing; then a fixed number of whole epochs is timed:
at the demo size two epochs (epoch 1 reads the files, epoch 2 comes from the pipeline's cache, as
in ``train_model``), at the report's sizes one short epoch only, because a CPU trains those
networks at 1.5 to 20 images/s.

GPU variants (float32 or mixed precision, with or without XLA; data in memory) run only when
the Keras backend sees a GPU; otherwise their table says "no GPU here". On a GPU the main table
uses ``train_model``'s own settings (mixed precision, XLA) and more steps.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid

import pandas as pd

from benchmarks.common import (ROOT, Config, Table, demo_table, gpus, nan, ratio, rounded, take,
                               warm_page_cache)
from benchmarks.worker import RESULT_PREFIX

TARGET_RATIO = 0.9
#: steps per epoch (timed), warm-up steps, epochs, per profile; quick: tiny.
FULL = {"demo": dict(steps=12, warmup=2, epochs=2), "seed": dict(steps=2, warmup=1, epochs=1)}
QUICK = {"demo": dict(steps=2, warmup=1, epochs=2)}
GPU_FULL = {"demo": dict(steps=30, warmup=3, epochs=2), "seed": dict(steps=20, warmup=3, epochs=2)}
FULL_DEMO_IMAGES, QUICK_DEMO_IMAGES = 1800, 60
QUICK_MODEL = "vgg16"  # the cheapest to trace at the smoke profile's size (32px)
#: (precision, XLA) variants on a GPU, per backend (JAX always compiles with XLA).
GPU_VARIANTS = {
    "tensorflow": (("float32", False), ("float32", True), ("mixed_float16", False),
                   ("mixed_float16", True)),
    "jax": (("float32", True), ("mixed_float16", True)),
    "torch": (("float32", False), ("mixed_float16", False)),
}


def train_model_settings(backend: str, gpu: bool) -> tuple[str, bool]:
    """(precision, XLA) as ``allnet_lib.train`` chooses them: mixed precision on a GPU; XLA on a
    GPU under TensorFlow, always under JAX."""
    precision = "mixed_float16" if gpu else "float32"
    jit = True if backend == "jax" else (gpu if backend == "tensorflow" else False)
    return precision, jit


def plan(cfg: Config) -> list[dict]:
    """The jobs: one per model and profile, timing both feeds after one warm-up (quick: one
    model at the smoke profile's size)."""
    from allnet_lib import models, profiles
    from benchmarks.common import backend, gpus, has_tensorflow

    precision, jit = train_model_settings(backend(), bool(gpus()))
    feeds = ["files", "cache", "memory"] if has_tensorflow() else ["cache", "memory"]
    jobs = []
    if cfg.quick:
        names, settings = [QUICK_MODEL], QUICK
    else:
        names, settings = models.list_models(), (GPU_FULL if gpus() else FULL)
    if cfg.models:
        unknown = sorted(set(cfg.models) - set(models.list_models()))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; models are {', '.join(models.list_models())}")
        names = list(cfg.models)
    for name in names:
        for profile_name, steps in settings.items():
            profile = profiles.get_profile("smoke" if cfg.quick else profile_name)
            jobs.append(dict(kind="throughput", model=name, profile=profile_name,
                             image_size=profile.image_size(name), batch=profile.batch_size,
                             optimizer=profile.optimizer, learning_rate=profile.learning_rate,
                             crop=profile.crop, feeds=feeds, precision=precision, jit=jit,
                             images=steps["steps"] * profile.batch_size, **steps))
    return jobs


def run_job(cfg: Config, job: dict) -> dict:
    """A job in a fresh Python (default) or in this process (``cfg.in_process``)."""
    if cfg.in_process:
        from benchmarks import worker

        return worker.run(job)
    path = cfg.work / "jobs" / f"{job['kind']}-{job.get('model', '')}-{uuid.uuid4().hex[:8]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", str(path)], cwd=ROOT,
                          capture_output=True, text=True)
    path.unlink(missing_ok=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"ok": False, "error": f"worker exited with {proc.returncode}: {tail[0][:300]}"}


def _prepare_data(cfg: Config, jobs: list[dict]) -> None:
    """Write the images every job reads (a CSV of paths) and point the jobs at it."""
    table = demo_table(cfg, QUICK_DEMO_IMAGES if cfg.quick else FULL_DEMO_IMAGES)
    needed = max(j["images"] for j in jobs)
    data_path = cfg.work / "jobs" / "training_images.csv"
    data_path.parent.mkdir(parents=True, exist_ok=True)
    take(table, needed)[["path", "label", "y"]].to_csv(data_path, index=False)
    warm_page_cache(take(table, needed)["path"])
    for job in jobs:
        job["table"] = str(data_path)
        job["cache_dir"] = str(cfg.work / "decoded-cache")


def run(cfg: Config) -> list[Table]:
    """The main table; the GPU table too when there is a GPU. Without one, a GPU table already
    in the results (measured elsewhere, e.g. with ``--only gpu`` on a GPU machine) is kept, and
    a "no GPU here" table is written only if there is none."""
    jobs = plan(cfg)
    _prepare_data(cfg, jobs)
    results = []
    for i, job in enumerate(jobs, 1):
        cfg.say(f"  [{i}/{len(jobs)}] {job['model']} {job['image_size']}px batch {job['batch']} "
                f"({job['profile']}): {job['epochs']} epoch(s) of {job['images']} images per feed ...")
        result = run_job(cfg, job)
        if not result.get("ok"):
            cfg.say(f"    failed: {result.get('error')}")
        results.append((job, result))
    tables = [summary_table(cfg, results)]
    if gpus() or not _gpu_table_from_elsewhere(cfg):
        tables.append(gpu_table(cfg, jobs))
    else:
        cfg.say("  no GPU here: keeping training_gpu.csv, measured on a GPU machine")
    return tables


def run_gpu_only(cfg: Config) -> list[Table]:
    """``--only gpu``: just the GPU variants (for a GPU machine, leaving the CPU tables alone)."""
    jobs = plan(cfg)
    if gpus():
        _prepare_data(cfg, jobs)
    elif _gpu_table_from_elsewhere(cfg):
        cfg.say("  no GPU here: keeping training_gpu.csv, measured on a GPU machine")
        return []
    return [gpu_table(cfg, jobs)]


def _gpu_table_from_elsewhere(cfg: Config) -> bool:
    """Whether the results already hold a GPU table measured on a machine with a GPU."""
    runs = cfg.out / "runs.csv"
    if not (runs.is_file() and (cfg.out / "training_gpu.csv").is_file()):
        return False
    frame = pd.read_csv(runs, dtype=str).fillna("")
    rows = frame[frame["table"] == "training_gpu"]
    return bool(len(rows)) and rows.iloc[0]["gpu"] not in ("", "none")


def summary_table(cfg: Config, results) -> Table:
    rows = []
    for job, result in results:
        files, memory = result.get("files") or {}, result.get("memory") or {}
        cache = result.get("cache") or {}
        f_ips, m_ips = files.get("train_ips") or [], memory.get("train_ips") or []
        train_files = f_ips[0] if f_ips else nan()
        train_cached = _median(f_ips[1:]) if len(f_ips) > 1 else nan()
        train_memory = _median(m_ips)
        r_train = ratio(train_files, train_memory)
        rows.append({
            "model": job["model"], "profile": job["profile"], "image_size": job["image_size"],
            "batch": job["batch"], "timed_images": job["images"], "epochs": job["epochs"],
            "precision": job["precision"], "xla": job["jit"],
            "train_ips_files": train_files, "train_ips_files_cached": train_cached,
            "train_ips_memory": train_memory, "ratio_train": r_train,
            "train_ips_cache": _median(cache.get("train_ips") or []),
            "ratio_cache": ratio(_median(cache.get("train_ips") or []), train_memory),
            "cache_fill_s": cache.get("load_s", nan()),
            "infer_ips_files": files.get("infer_ips", nan()),
            "infer_ips_memory": memory.get("infer_ips", nan()),
            "ratio_infer": ratio(files.get("infer_ips"), memory.get("infer_ips")),
            "peak_rss_gb": result.get("peak_rss_mb", nan()) / 1024,
            "gpu_peak_gb": (result.get("gpu_peak_mb") or nan()) / 1024,
            "warmup_s": result.get("warmup_s", nan()),
            "target_ratio_0.9": ("met" if r_train >= TARGET_RATIO else "NOT met")
            if math.isfinite(r_train) else "",
            "error": "" if result.get("ok") else result.get("error", "failed"),
        })
    frame = pd.DataFrame(rows)
    if frame["gpu_peak_gb"].isna().all():
        frame = frame.drop(columns="gpu_peak_gb")
    missed = frame[frame["target_ratio_0.9"] == "NOT met"]
    notes = [
        "Images/s: training images per second over whole timed epochs (train_ips_files: epoch 1, "
        "decoding the files; train_ips_files_cached: epoch 2, from make_dataset's cache, as "
        "train_model runs; train_ips_memory: median epoch from in-memory tensors; "
        "train_ips_cache: median epoch fed as the gpu profile feeds it, from the decoded-image "
        "file cache, memory-mapped, shuffled and augmented by array_batches, filled once in "
        "cache_fill_s). ratio_cache = cache / memory: whether that feed keeps the model busy "
        "(target >= 0.9 on a GPU). infer: one predict pass. Warm-up steps (warmup_s: graph "
        "tracing, optimiser set-up) are not timed.",
        "Peak memory: resident set size of the job's own process (a fresh Python per model and "
        "size, both feeds), sampled every 20 ms."
        + (" QUICK run: all jobs in one process, so the peaks mix." if cfg.in_process else ""),
        f"Target: ratio_train = files / memory >= {TARGET_RATIO} for every model: "
        + ("not measured (no files feed)." if not frame["ratio_train"].notna().any() else
           "met by all." if missed.empty else
           "NOT met by " + ", ".join(f"{r.model} at {r.image_size}px ({r.ratio_train:.2f})"
                                     for r in missed.itertuples()) + "."),
    ]
    if cfg.quick:
        notes.append(f"QUICK run: {QUICK_MODEL} at the smoke profile's size and batch only.")
    elif not gpus():
        seed_rows = frame[frame["profile"] == "seed"]
        sides = ", ".join(f"{r.model} {r.image_size}px" for r in seed_rows.itertuples())
        notes.append(
            f"At the report's sizes (profile seed: {sides}) only one epoch of "
            f"{FULL['seed']['steps']} steps of batch 30 per feed, after {FULL['seed']['warmup']} "
            "warm-up step(s): a 2-core CPU trains VGG16 at 224px at about 1.5 images/s, so longer "
            "runs would take most of an hour. Expect +-20% from run to run.")
    if not feeds_files(results):
        notes.append("TensorFlow is not installed here, so the tf.data pipeline (feed 'files') "
                     "could not run: only the in-memory feed was timed.")
    if frame["error"].str.len().gt(0).any():
        notes.append("Some jobs failed: see the error column.")
    else:
        frame = frame.drop(columns="error")
    return Table("training", "Training throughput: images/s and peak memory, pipeline from files "
                 "vs tensors in memory", rounded(frame), notes, replaces=_replaces(cfg))


def gpu_table(cfg: Config, jobs) -> Table:
    """Mixed precision and XLA variants, on a GPU only."""
    from benchmarks.common import backend, gpu_models

    found = gpus()
    title = "Training throughput on a GPU: float32 vs mixed precision vs mixed precision + XLA"
    if not found:
        frame = pd.DataFrame([{"variant": "all", "result": "no GPU here"}])
        return Table("training_gpu", title, frame,
                     ["The Keras backend sees no GPU on this machine, so the mixed-precision and "
                      "XLA variants were not run."])
    rows = []
    for job in jobs:
        for precision, jit in GPU_VARIANTS.get(backend(), GPU_VARIANTS["tensorflow"]):
            variant = dict(job, precision=precision, jit=jit, feeds=["memory"])
            cfg.say(f"  GPU {job['model']} {job['image_size']}px {precision}{' + XLA' if jit else ''} ...")
            result = run_job(cfg, variant)
            ips = (result.get("memory") or {}).get("train_ips") or []
            rows.append({"model": job["model"], "profile": job["profile"],
                         "image_size": job["image_size"], "batch": job["batch"],
                         "precision": precision, "xla": jit,
                         "train_ips_memory": _median(ips) if ips else nan(),
                         "infer_ips_memory": (result.get("memory") or {}).get("infer_ips", nan()),
                         "gpu_peak_gb": (result.get("gpu_peak_mb") or nan()) / 1024,
                         "warmup_s": result.get("warmup_s", nan()),
                         "error": result.get("error", "")})
    frame = pd.DataFrame(rows)
    if not frame["error"].astype(bool).any():
        frame = frame.drop(columns="error")
    notes = [f"GPU(s): {gpu_models() or ', '.join(found)}; Keras backend {backend()}. Data in "
             "memory, so the numbers are the model's own speed. gpu_peak_gb: peak memory "
             "allocated on the GPU by the job's process; warmup_s includes XLA compilation.",
             "Precision and XLA as labelled; train_model itself uses mixed precision on a GPU, "
             "with XLA under TensorFlow and JAX.",
             "Rough numbers: the timed epochs last well under a second at the demo sizes, and "
             + ("under JAX the in-memory batches come through the library's array_batches "
                "(batched in Python), which may limit the fastest models; "
                if backend() != "tensorflow" else "")
             + "read them as lower bounds for the small models and compare precisions and "
             "sizes rather than exact values."]
    return Table("training_gpu", title, rounded(frame), notes, replaces=_replaces(cfg))


def _median(values) -> float:
    values = sorted(v for v in values if v is not None and math.isfinite(v))
    if not values:
        return nan()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def feeds_files(results) -> bool:
    return any("files" in job.get("feeds", []) for job, _ in results)


def _replaces(cfg: Config):
    """With ``--models``, only those models' rows of an existing table are replaced."""
    return ("model", list(cfg.models)) if cfg.models else None
