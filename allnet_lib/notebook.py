"""The fixed opening of every chapter: ``ctx = notebook.setup(PROFILE)``.

Why one function: every chapter must start from the same state (same profile resolution, seeds,
plot style, quiet TensorFlow, same data folders), whether it runs in the book build, under
``pytest --nbval-lax``, in Jupyter on a laptop, or on Colab. Putting that in the library keeps the
chapters' first cells identical and short, and lets a change here reach all of them.

The profile comes from the argument (the chapter's papermill ``PROFILE`` parameter), else from
``$ALLNET_PROFILE``, else ``"demo"``. The data is the real C-NMC set when the profile asks for it
(``seed``, the report's recipe) and it is present under ``paths.cnmc_dir()``; otherwise the
synthetic demo set under ``paths.demo_dir()``.
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

from allnet_lib import __version__, paths

if TYPE_CHECKING:
    from allnet_lib.profiles import Profile

#: Profiles that are meant for the real C-NMC data (the others are sized for the demo set).
REAL_DATA_PROFILES = ("seed",)
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
TF_ENV = {**QUIET_TF_ENV, "TF_ENABLE_ONEDNN_OPTS": "1"}

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


def has_real_data() -> bool:
    """Whether something is under ``paths.cnmc_dir()`` (the reader copes with every mirror's layout)."""
    folder = paths.cnmc_dir()
    return folder.is_dir() and any(folder.iterdir())


def data_dir_for(profile: Profile) -> tuple[Path, bool]:
    """``(data folder, is_real)`` for a profile: real C-NMC if the profile wants it and it exists."""
    if profile.name in REAL_DATA_PROFILES:
        if has_real_data():
            return paths.cnmc_dir(), True
        print(
            f"note: profile {profile.name!r} is meant for the real C-NMC data, but "
            f"{paths.cnmc_dir()} is missing or empty; using the synthetic demo set instead. "
            f"Put the data there (or point ${paths.DATA_ENV} at the folder that holds cnmc/)."
        )
    return paths.demo_dir(), False


def ensure_demo_data(profile: Profile, *, progress: bool = False) -> Path:
    """Generate the demo set at the profile's size (``profile.demo_images``) unless it is there.

    A demo set of another size (left by another profile in the same data root) is replaced: it is
    synthetic and regenerated deterministically, so nothing of value is lost.
    """
    from allnet_lib.demo import make_demo_dataset

    return make_demo_dataset(
        paths.demo_dir(), n_images=profile.demo_images, overwrite=True, progress=progress
    )


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


def display_path(path) -> str:
    """A folder as a reader should see it in a chapter's output: under ``$ALLNET_DATA`` /
    ``$ALLNET_RUNS`` (when set) as ``$ALLNET_DATA/...``, under the home folder as ``~/...``,
    else as it is. Keeps the build machine's (or a Colab runtime's) absolute paths off the pages."""
    path = Path(path).absolute()
    for variable in (paths.RUNS_ENV, paths.DATA_ENV):
        root = os.environ.get(variable)
        if root:
            with contextlib.suppress(ValueError):
                rel = path.relative_to(Path(root).absolute())
                return f"${variable}" + ("" if str(rel) == "." else f"/{rel.as_posix()}")
    with contextlib.suppress(ValueError, RuntimeError):
        rel = path.relative_to(Path.home())
        return "~" + ("" if str(rel) == "." else f"/{rel.as_posix()}")
    return str(path)


#: How long training all five models of chapter 5 takes, per profile: (minutes, how to say it).
#: Measured by the book build on a 2-core CPU (November 2026; build/*/timings.csv, benchmarks/).
TRAINING_TIME = {
    "smoke": (1.0, "under a minute on a CPU"),
    "demo": (19.0, "about 19 minutes on a 2-core CPU (VGG16 alone about 7), a few minutes on a GPU"),
    "seed": (None, "many hours on a CPU (the report's recipe, at full size): use a GPU"),
}


def training_notice(missing, model_names, profile, runs_dir) -> str:
    """What a chapter says before it trains models it expected to find (chapter 5's runs): which,
    where it looked, and about how long it will take; printed by ``compare.compare_models``
    before anything is trained, so that nothing long happens silently (chapters 6-9 opened
    alone on a fresh runtime retrain what chapter 5 would have left)."""
    missing, names = list(missing), list(model_names)
    name = getattr(profile, "name", str(profile))
    minutes, said = TRAINING_TIME.get(name, (None, "depends on the profile and the machine"))
    if minutes is not None and len(missing) < len(names):
        share = minutes * len(missing) / max(len(names), 1)
        said = f"about {max(share, 0.5):.0f} minute(s) for these {len(missing)} (all five: {said})"
    return (f"Not trained yet in {display_path(runs_dir)}: {', '.join(missing)} "
            f"({len(missing)} of {len(names)}). Training them now under profile {name}: {said}.\n"
            "(Chapter 5 trains and saves these models; run after it, in the same runtime or with the "
            f"same ${paths.RUNS_ENV}, a chapter reuses them instead.)")


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
