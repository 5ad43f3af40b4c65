"""Where data, training runs and caches live.

One place decides, from environment variables with sensible defaults, so the book, the CLI and
the tests agree. ``ALLNET_DATA`` is the data root (real C-NMC under ``cnmc/``, the demo set under
``demo/``); ``ALLNET_RUNS`` holds checkpoints, logs and result records; ``ALLNET_CACHE`` holds
decoded images (``pipeline.decoded_images``), which can always be deleted and made again.

The data-folder rule (:func:`data_dir_for`), the same for the chapters, every ``allnet`` command
and the book build: the real C-NMC data under :func:`cnmc_dir` when the profile is meant for it
(:data:`REAL_DATA_PROFILES`) and something is there; otherwise the synthetic demo set under
:func:`demo_dir`, made at the profile's size where needed (``demo.ensure_demo_data``). A folder
given explicitly (``--data``, ``DATA``) always wins.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DATA_ENV = "ALLNET_DATA"
RUNS_ENV = "ALLNET_RUNS"
CACHE_ENV = "ALLNET_CACHE"
DEFAULT_DATA_ROOT = Path("~/allnet_data")


def data_root() -> Path:
    """The data root: ``$ALLNET_DATA`` if set, else ``~/allnet_data``."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else DEFAULT_DATA_ROOT.expanduser()


def cnmc_dir() -> Path:
    """Where the real C-NMC 2019 data is kept (TCIA layout)."""
    return data_root() / "cnmc"


def demo_dir() -> Path:
    """Where the built-in synthetic demo dataset is written."""
    return data_root() / "demo"


def runs_root() -> Path:
    """Training runs, checkpoints and result records: ``$ALLNET_RUNS`` or ``<data root>/runs``."""
    value = os.environ.get(RUNS_ENV)
    return Path(value).expanduser() if value else data_root() / "runs"


def cache_dir() -> Path:
    """Decoded, cropped, resized images kept between runs (``pipeline.decoded_images``):
    ``$ALLNET_CACHE`` or ``<data root>/cache``. Safe to delete: it is rebuilt from the files."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else data_root() / "cache"


#: Profiles that are meant for the real C-NMC data (the others are sized for the demo set).
REAL_DATA_PROFILES = ("seed",)


def has_real_data() -> bool:
    """Whether something is under :func:`cnmc_dir` (the reader copes with every mirror's layout)."""
    folder = cnmc_dir()
    return folder.is_dir() and any(folder.iterdir())


def data_dir_for(profile, *, say=print) -> tuple[Path, bool]:
    """``(data folder, is_real)`` for a profile (the one rule, see the module docstring): the real
    C-NMC data if the profile wants it and it is there, else the demo set's folder (which may not
    exist yet). Says so, through ``say``, when a real-data profile falls back to the demo set."""
    name = getattr(profile, "name", profile)
    if name in REAL_DATA_PROFILES:
        if has_real_data():
            return cnmc_dir(), True
        say(f"note: profile {name!r} is meant for the real C-NMC data, but {cnmc_dir()} is missing "
            "or empty; using the synthetic demo set instead. Put the data there (or point "
            f"${DATA_ENV} at the folder that holds cnmc/).")
    return demo_dir(), False


def display_path(path) -> str:
    """A folder as a reader should see it in a chapter's output: under ``$ALLNET_DATA`` /
    ``$ALLNET_RUNS`` (when set) as ``$ALLNET_DATA/...``, under the home folder as ``~/...``,
    else as it is. Keeps the build machine's (or a Colab runtime's) absolute paths off the pages."""
    path = Path(path).absolute()
    for variable in (RUNS_ENV, DATA_ENV):
        root = os.environ.get(variable)
        if root:
            with contextlib.suppress(ValueError):
                rel = path.relative_to(Path(root).absolute())
                return f"${variable}" + ("" if str(rel) == "." else f"/{rel.as_posix()}")
    with contextlib.suppress(ValueError, RuntimeError):
        rel = path.relative_to(Path.home())
        return "~" + ("" if str(rel) == "." else f"/{rel.as_posix()}")
    return str(path)
