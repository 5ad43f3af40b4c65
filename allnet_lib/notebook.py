"""The fixed opening of every chapter: ``ctx = notebook.setup(PROFILE)``.

Why one function: every chapter must start from the same state (same profile resolution, seeds,
plot style, quiet TensorFlow, same data folders), whether it runs in the book build, under
``pytest --nbval-lax``, in Jupyter on a laptop, or on Colab. Putting that in the library keeps the
chapters' first cells identical and short, and lets a change here reach all of them.

The profile comes from the argument (the chapter's papermill ``PROFILE`` parameter), else from
``$ALLNET_PROFILE``, else ``"demo"``. The data follows the one data-folder rule
(``paths.data_dir_for``): the real C-NMC set when the profile asks for it (``seed``, the report's
recipe) and it is present under ``paths.cnmc_dir()``; otherwise the synthetic demo set under
``paths.demo_dir()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from allnet_lib import ONEDNN_ENV, __version__, paths
# the data-folder rule lives in allnet_lib.paths (one rule for the book, the CLI and the build)
from allnet_lib.paths import REAL_DATA_PROFILES, data_dir_for, display_path, has_real_data  # noqa: F401
from allnet_lib.runs import TRAINING_TIME, training_notice  # noqa: F401  (kept here for callers)
from allnet_lib.split import EXPERIMENT_SPLIT  # the split of chapters 5-9 and the experiment commands

if TYPE_CHECKING:
    import pandas as pd

    from allnet_lib.profiles import Profile
    from allnet_lib.split import Split

#: Environment that quiets TensorFlow's C++ log. It does not stop the lines TensorFlow writes
#: before its log is initialised (the oneDNN notice, absl's "All log messages before ..."):
#: those are filtered out by their text (:data:`TF_STARTUP_NOISE`). Never add
#: ``TF_ENABLE_ONEDNN_OPTS=0`` here: it hides the oneDNN notice by switching off oneDNN's fast
#: CPU kernels, and training gets slower. Silence a log line by filtering it, not
#: by disabling a fast path.
QUIET_TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}
#: The environment TensorFlow gets wherever the library starts it (chapters, the ``allnet``
#: command, the book build's kernels, ``./run``, the tests), each value only where the variable
#: is not set already: quiet logs, and oneDNN's fast CPU kernels on. TensorFlow switches oneDNN on
#: by itself only on CPUs with AVX-512 VNNI/BF16 or AMX and leaves it off elsewhere (e.g. on an
#: AVX2-only AMD EPYC); turned on everywhere, every x86 CPU runs the same fast kernels and rounds
#: the same way (oneDNN on and off give slightly different weights: see train.py).
TF_ENV = {**QUIET_TF_ENV, **ONEDNN_ENV}

#: TensorFlow's C++ start-up lines that readers never need (regular expressions, searched in one
#: line each). The one list used everywhere: :func:`filtered_stderr` (chapter openings, the
#: ``allnet`` command) and ``book_build.strip_tf_noise`` (executed chapters, before rendering).
TF_STARTUP_NOISE = (
    r"oneDNN custom operations are on",
    r"You may see slightly different numerical results due to floating-point round-off",
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"rebuild TensorFlow with the appropriate compiler flags",
    r"failed call to cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"Could not find cuda drivers on your machine",
    r"TF-TRT Warning: Could not find TensorRT",
)
TF_STARTUP_NOISE_RE = re.compile("|".join(f"(?:{p})" for p in TF_STARTUP_NOISE))


@dataclass
class Context:
    """What a chapter needs after its opening cell: the profile and where things live."""

    profile: Profile
    data_dir: Path  # the dataset's root, for reader.index_dataset (C-NMC_training_data/ inside)
    runs_dir: Path  # this profile's runs: runs_root()/<profile name>
    real_data: bool  # True: data_dir is the real C-NMC set; False: the synthetic demo set
    on_colab: bool
    seed: int

    def ensure_demo_data(self, *, progress: bool = False) -> Path:
        """Make sure ``data_dir`` holds images and return it.

        With the real data there is nothing to do; otherwise the demo set is generated once at the
        profile's size (a second call, or a later chapter, finds it and returns at once).
        """
        if self.real_data:
            return self.data_dir
        return ensure_demo_data(self.profile, progress=progress)


def ensure_demo_data(profile: Profile, *, progress: bool = False) -> Path:
    """:func:`allnet_lib.demo.ensure_demo_data`: the demo set at the profile's size."""
    from allnet_lib.demo import ensure_demo_data as ensure

    return ensure(profile, progress=progress)


def quiet_tensorflow() -> None:
    """Set :data:`TF_ENV` (quiet C++ log, oneDNN on) where not set already, and lower
    TensorFlow's Python log level; effective only before TensorFlow is imported. The lines it
    writes anyway while it loads are removed by :func:`filtered_stderr` / :func:`import_keras`."""
    for key, value in TF_ENV.items():
        os.environ.setdefault(key, value)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def drop_tf_noise(text: str) -> str:
    """``text`` without the lines that match :data:`TF_STARTUP_NOISE` (other lines unchanged)."""
    if not text or not TF_STARTUP_NOISE_RE.search(text):
        return text
    return "".join(line for line in text.splitlines(keepends=True)
                   if not TF_STARTUP_NOISE_RE.search(line))


@contextlib.contextmanager
def filtered_stderr():
    """Catch what is written to file descriptor 2 inside the block (TensorFlow's C++ code writes
    there directly, past ``sys.stderr``), then write it back without the
    :data:`TF_STARTUP_NOISE` lines. In a Jupyter kernel, fd 2 is the pipe that becomes the
    cell's stderr output, so this works there too. Anything else written to fd 2 inside the
    block (Python warnings, in a terminal) comes out, in order, when the block ends."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = drop_tf_noise(caught.read().decode("utf-8", errors="replace"))
            if kept:
                with contextlib.suppress(OSError):
                    os.write(2, kept.encode("utf-8"))


def import_keras():
    """``import keras`` (which imports the backend, TensorFlow by default) with TensorFlow's
    start-up lines filtered out (:func:`filtered_stderr`); returns the module."""
    if "keras" not in sys.modules:
        with filtered_stderr():
            import keras  # noqa: F401
    return sys.modules["keras"]


def settle_tensorflow_logger() -> None:
    """Keep TensorFlow's Python warnings (e.g. "N out of the last M calls ... triggered
    tf.function retracing") off the page. In an interactive kernel TensorFlow resets its logger
    to INFO, on stdout, the first time it configures it, undoing :func:`quiet_tensorflow`; so
    configure it now and lower it again."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "get_logger"):
        tf.get_logger().setLevel(logging.ERROR)


def on_colab() -> bool:
    """Whether this kernel runs on Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend, so a chapter gives the same numbers twice."""
    import keras
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def device_name(backend: str) -> str:
    """``"GPU"``, ``"GPU x2"``, ``"TPU"`` or ``"CPU"``: what the Keras backend will compute on."""
    count, kind = 0, "GPU"
    if backend == "tensorflow":
        import tensorflow as tf

        count = len(tf.config.list_physical_devices("GPU"))
    elif backend == "jax":
        import jax

        kind = jax.default_backend().upper()
        count = jax.device_count() if kind != "CPU" else 0
    elif backend == "torch":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "CPU"
    return kind if count == 1 else f"{kind} x{count}"


def apply_plot_style() -> None:
    """Use the book's one plot style (``allnet_lib.plots.use_style``), if that module exists yet."""
    try:
        from allnet_lib import plots
    except ModuleNotFoundError as exc:
        if exc.name != "allnet_lib.plots":
            raise
        return
    plots.use_style()


def setup(profile: str | Profile | None = None, *, seed: int = 0, verbose: bool = True) -> Context:
    """The opening of every chapter: resolve the profile, seed, style, print the environment.

    ``profile`` is a profile name (``"smoke"``, ``"demo"``, ``"seed"``), a ``Profile`` or ``None``
    (then ``$ALLNET_PROFILE``, else ``"demo"``). Prints two short lines: library, Python, Keras backend
    and version, device; then profile and data folder: every executed chapter records what it ran on.
    """
    from allnet_lib.profiles import get_profile

    quiet_tensorflow()
    prof = get_profile(profile or None)
    import_keras()  # imports the backend: after quiet_tensorflow(), start-up lines filtered
    seed_everything(seed)
    settle_tensorflow_logger()
    apply_plot_style()
    data_dir, real = data_dir_for(prof)
    ctx = Context(
        profile=prof,
        data_dir=data_dir,
        runs_dir=paths.runs_root() / prof.name,
        real_data=real,
        on_colab=on_colab(),
        seed=seed,
    )
    if verbose:
        print(environment_summary(ctx))
    return ctx


@dataclass
class Experiment:
    """What chapters 5-9 start from (:func:`experiment`): the data, chapter 5's split, and the
    models trained on it (their results table, run folders and result records)."""

    models: list[str]
    table: "pd.DataFrame"           # every labelled image of ctx.data_dir (reader.index_dataset)
    split: "Split"                  # split.make_split(table, "subject", ...): the same name, the same split
    results: "pd.DataFrame | None"  # compare.compare_models (None when train=False)
    run_dirs: dict                  # model -> its run folder
    records: dict                   # model -> its result record on split.test

    def load_models(self) -> dict:
        """Each model's best epoch (``best.keras`` of its run folder), for inference."""
        from allnet_lib import runs

        return {name: runs.load_best(self.run_dirs[name]) for name in self.models}


def experiment(ctx: Context, models=None, *, seed: int = EXPERIMENT_SPLIT["seed"],
               test_size: float = EXPERIMENT_SPLIT["test_size"],
               val_size: float = EXPERIMENT_SPLIT["val_size"], train: bool = True) -> Experiment:
    """The opening of chapters 5-9, one call: index ``ctx``'s data (made if needed), make the
    subject split (``split.make_split``, as ``allnet compare --split subject`` does), then train
    ``models`` on it or reuse chapter 5's runs (``compare.compare_models``, which says which) and
    read their records. ``models=None``: every model of the catalogue. ``train=False`` stops after
    the split (chapter 5 shows it before training)."""
    from allnet_lib import catalogue, compare, evaluate, reader, runs
    from allnet_lib.split import experiment_split

    names = list(catalogue.model_names() if models is None else models)
    table = reader.index_dataset(ctx.ensure_demo_data(), progress=False).table
    split = experiment_split(table, seed=seed, test_size=test_size, val_size=val_size)
    run_dirs = {name: runs.default_run_dir(ctx.profile, split, name) for name in names}
    if not train:
        return Experiment(names, table, split, None, run_dirs, {})
    results = compare.compare_models(names, split, ctx.profile)
    run_dirs = {row.model: Path(row.record_path).parent for row in results.itertuples()}
    records = {name: evaluate.load_record(runs.record_path(run_dirs[name])) for name in names}
    return Experiment(names, table, split, results, run_dirs, records)


def environment_summary(ctx: Context) -> str:
    """Where and how a chapter runs, in two lines short enough for the book's code column."""
    import keras

    backend = keras.backend.backend()
    backend_module = sys.modules.get(backend)
    backend_version = getattr(backend_module, "__version__", "?")
    data = "real C-NMC" if ctx.real_data else "synthetic demo set"
    place = " · Colab" if ctx.on_colab else ""
    return (
        f"allnet {__version__} · Python {platform.python_version()} · Keras {keras.__version__} "
        f"({backend} {backend_version}) · {device_name(backend)}{place}\n"
        f"profile {ctx.profile.name} · data {display_path(ctx.data_dir)} ({data})"
    )


#: The MIME prefix of a glued value that is not shown where it is computed (myst-nb's
#: ``myst_nb.ext.glue.GLUE_PREFIX``; copied so that chapters need no myst-nb on Colab).
GLUE_PREFIX = "application/papermill.record/"


def glue(name: str, value, fmt: str | None = None) -> None:
    """Hand a number computed by a chapter to its prose: ``notebook.glue("minutes", m, ".0f")`` in
    a code cell, `` {glue:text}`minutes` `` in a markdown cell of the same chapter (book/CHAPTER_GUIDE.md,
    'Numbers in prose').

    The output is what ``myst_nb.glue(name, value, display=False)`` writes (a display output
    under :data:`GLUE_PREFIX` with ``scrapbook`` metadata), so Jupyter Book pastes it into the
    role, but this works without myst-nb (Colab). The value is glued as plain text, formatted
    with ``fmt`` when given (``format(value, fmt)``); NumPy scalars become Python numbers first,
    so the page never shows ``np.float64(...)``. In plain Jupyter nothing is shown for it, and the
    markdown shows the role as written; the cell that computes a glued number also prints it.
    """
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    text = format(value, fmt) if fmt else str(value)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # no IPython: nothing to glue into
        return
    if get_ipython() is None:  # plain Python (a script, a test): no notebook to glue into
        return
    display({GLUE_PREFIX + "text/plain": repr(text)}, raw=True,
            metadata={"scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX}})
