"""Where data, training runs and caches live.

One place decides, from environment variables with sensible defaults, so the book, the CLI and
the tests agree. ``ALLNET_DATA`` is the data root (real C-NMC under ``cnmc/``, the demo set under
``demo/``); ``ALLNET_RUNS`` holds checkpoints, logs and result records.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "ALLNET_DATA"
RUNS_ENV = "ALLNET_RUNS"
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
