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

import logging
import os
import platform
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from allnet_lib import __version__, paths

if TYPE_CHECKING:
    from allnet_lib.profiles import Profile

#: Profiles that are meant for the real C-NMC data (the others are sized for the demo set).
REAL_DATA_PROFILES = ("seed",)
#: Environment that keeps TensorFlow's C++ start-up log out of notebook outputs. Both are needed:
#: TF_CPP_MIN_LOG_LEVEL alone still lets the oneDNN notice through.
QUIET_TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}


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
    """Silence TensorFlow's start-up chatter; effective only before TensorFlow is imported."""
    for key, value in QUIET_TF_ENV.items():
        os.environ.setdefault(key, value)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


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
    seed_everything(seed)  # imports keras, hence the backend: after quiet_tensorflow()
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
        f"profile {ctx.profile.name} · data {ctx.data_dir} ({data})"
    )
