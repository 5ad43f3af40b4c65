"""What every benchmark shares: the run settings, the machine record, demo data, timing, tables.

Benchmarks are scripts that print tables, not tests: they measure, they do not assert. Each
benchmark module has ``run(cfg) -> list[Table]``; ``python -m benchmarks`` runs them, prints the
tables and writes one CSV per table plus ``runs.csv`` (when, with which command, on which machine
each table was measured) and ``results.md`` (everything together) to the output folder.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
WORK_DIR = ROOT / "benchmarks" / "_work"  # git-ignored: demo data, Augmentor output, job files
QUICK_RESULTS_DIR = WORK_DIR / "results-quick"  # --quick never overwrites the committed results


@dataclass
class Config:
    """How big a benchmark run is and where it writes."""

    quick: bool = False
    out: Path = RESULTS_DIR
    work: Path = WORK_DIR
    progress: bool = True
    # Training jobs run in a fresh Python each (so peak memory is per model) unless this is set;
    # --quick sets it, because a fresh TensorFlow import costs more than the whole tiny job.
    in_process: bool = False
    models: tuple = ()  # training: only these models (default: all)

    def say(self, *parts) -> None:
        if self.progress:
            print(*parts, flush=True)


@dataclass
class Table:
    """One result table: ``name`` is its file stem (``<name>.csv``)."""

    name: str
    title: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    # Rerunning part of a table (``--models``): rows of the existing CSV whose ``column`` holds
    # one of ``values`` are replaced, the others kept. (column, values) or None.
    replaces: tuple | None = None


# --------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    from importlib import metadata

    from importlib.util import find_spec

    try:
        if module not in sys.modules and find_spec(module) is None:
            return "not installed"
        mod = sys.modules.get(module) or __import__(module)
        return str(getattr(mod, "__version__", None) or metadata.version(module))
    except Exception:
        return "not installed"


def backend() -> str:
    """The Keras backend the benchmarks will use (without importing Keras)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def has_tensorflow() -> bool:
    from importlib.util import find_spec

    return find_spec("tensorflow") is not None


def gpus() -> list[str]:
    """The GPUs the Keras backend sees (empty on a CPU-only machine)."""
    name = backend()
    try:
        if name == "jax":
            import jax

            return [str(d) for d in jax.devices() if d.platform == "gpu"]
        if name == "torch":
            import torch

            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:
        return []


def gpu_models() -> str:
    """GPU model names from nvidia-smi, if there is one (any backend)."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return "; ".join(line.strip() for line in out.stdout.splitlines() if line.strip())


def machine_info() -> dict:
    """Where the numbers were measured: CPU, cores, memory, load, library versions, GPU."""
    import psutil

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    gpu_list = gpus()
    gpu_names = gpu_models() if gpu_list else ""
    return {
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": usable,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "ram_available_gb": round(psutil.virtual_memory().available / 2**30, 1),
        "load_1min_at_start": round(load[0], 2),
        "os": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "keras_backend": backend(),
        "jax": _version("jax") if backend() == "jax" else "",
        "numpy": _version("numpy"),
        "pillow": _version("PIL"),
        "augmentor": _augmentor_version(),
        "gpu": (gpu_names or ", ".join(gpu_list)) if gpu_list else "none",
    }


def _augmentor_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("Augmentor")
    except metadata.PackageNotFoundError:
        return "not installed"


def load_now() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def timestamp() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def demo_table(cfg: Config, n_images: int) -> pd.DataFrame:
    """The synthetic demo set of ``n_images`` 450x450 BMPs in the work folder (made once and
    reused by later runs), as a dataset table, in a fixed shuffled order."""
    from allnet_lib.demo import make_demo_dataset
    from allnet_lib.reader import index_dataset

    folder = cfg.work / f"demo-{n_images}"
    started = time.perf_counter()
    make_demo_dataset(folder, n_images=n_images, overwrite=True, progress=False)
    seconds = time.perf_counter() - started
    if seconds > 2:
        cfg.say(f"  made the demo set of {n_images} images in {folder} ({seconds:.0f} s, not timed)")
    table = index_dataset(folder, progress=False).table
    return table.sample(frac=1.0, random_state=0).reset_index(drop=True)


def take(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first ``n`` rows; if the table is shorter, its rows repeated (only in quick runs)."""
    if len(table) >= n:
        return table.iloc[:n].reset_index(drop=True)
    reps = math.ceil(n / len(table))
    return pd.concat([table] * reps, ignore_index=True).iloc[:n]


def warm_page_cache(paths) -> int:
    """Read every file once, so every method finds them in the OS page cache; returns bytes."""
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                total += len(chunk)
    return total


def disk_usage(path: Path) -> int:
    """Bytes of all files under ``path`` (0 if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove(path: Path) -> None:
    """Delete a folder of our own work directory (never anything outside it)."""
    path = Path(path).absolute()
    if path.exists():
        if WORK_DIR not in path.parents and not _is_temporary(path):
            raise RuntimeError(f"refusing to delete {path}: not inside the benchmark work folder")
        shutil.rmtree(path)


def _is_temporary(path: Path) -> bool:
    import tempfile

    return Path(tempfile.gettempdir()).absolute() in path.parents


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory of this process, sampled in a thread every ``interval`` seconds
    (``resource`` gives the lifetime peak; this gives the peak of a stretch of time)."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._process = psutil.Process()
        self.interval = interval
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def lifetime_peak_rss() -> int:
    """Peak RSS of this whole process so far, in bytes (Linux and macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def iterate_images(dataset, limit: int | None = None, epochs: int = 1) -> tuple[int, list[float]]:
    """Pull batches until ``limit`` images (or ``epochs`` full passes) have come out; touches
    every batch's values so nothing is left lazy. Returns (images, seconds per epoch)."""
    count, times = 0, []
    epoch = 0
    while True:
        started = time.perf_counter()
        for x, _ in dataset:
            _ = x.numpy()  # materialise
            count += int(x.shape[0])
            if limit is not None and count >= limit:
                break
        times.append(time.perf_counter() - started)
        epoch += 1
        if (limit is not None and count >= limit) or (limit is None and epoch >= epochs):
            return count, times


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def rounded(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Floats to ``digits`` significant digits (enough for timings that vary by +-20%)."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(lambda v: _significant(v, digits))
    return out


def _significant(value, digits: int):
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return value
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style markdown table (pandas + tabulate when installed, else our own)."""
    try:
        import tabulate  # noqa: F401

        return frame.to_markdown(index=False, floatfmt="g", missingval="")
    except ImportError:
        return _plain_markdown(frame)


def _plain_markdown(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = [str(c) for c in frame.columns]
    rows = [[cell(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def ratio(a: float, b: float) -> float:
    """a / b, NaN when either is missing or b is 0."""
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return float("nan")
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return float("nan")
    return a / b


def nan() -> float:
    return float(np.nan)
