"""The run folder: its place, its file names, and reading what a run left there.

One owner, so that :mod:`allnet_lib.train` (which writes a run), :mod:`allnet_lib.compare`
(which evaluates it and writes result records), the ``allnet`` command and the chapters (which
read it) agree on every name. A run folder is ``runs_root()/<profile>/<split name>/<model>/``:

* ``config.json``: what was run, its status, environment and timings (written by train);
* ``history.csv``: one row per epoch;
* ``best.keras`` / ``last.keras``: the best and the final epoch; ``backup/`` and
  ``.best.weights.h5`` while a run is in progress;
* ``record.json``: the result record on the split's own test part; ``record_<name>.json``: on
  another test table (e.g. the leakage experiment's ``record_heldout.json``).

Every JSON file is written to a temporary sibling and renamed (:func:`write_json`).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from allnet_lib import paths

CONFIG_NAME = "config.json"
HISTORY_NAME = "history.csv"
BEST_NAME = "best.keras"
LAST_NAME = "last.keras"
BACKUP_DIR = "backup"
BEST_WEIGHTS = ".best.weights.h5"  # during training; becomes best.keras when the run ends
RECORD_NAME = "record.json"        # the record on the split's own test part
TEST = "test"                      # the name of that evaluation


def default_run_dir(profile, split, model_name: str) -> Path:
    """``runs_root()/<profile>/<split name>/<model>/`` (the one place that says so)."""
    return paths.runs_root() / profile.name / split.name / model_name


def record_name(evaluated_on: str = TEST) -> str:
    """``record.json`` for the split's own test part, ``record_<evaluated_on>.json`` otherwise."""
    return RECORD_NAME if evaluated_on == TEST else f"record_{evaluated_on}.json"


def record_path(run_dir, evaluated_on: str = TEST) -> Path:
    """Where a run's result record on ``evaluated_on`` lives."""
    return Path(run_dir) / record_name(evaluated_on)


def config_path(run_dir) -> Path:
    return Path(run_dir) / CONFIG_NAME


def history_path(run_dir) -> Path:
    return Path(run_dir) / HISTORY_NAME


def best_path(run_dir) -> Path:
    return Path(run_dir) / BEST_NAME


def last_path(run_dir) -> Path:
    return Path(run_dir) / LAST_NAME


def read_config(run_dir) -> dict | None:
    """The run's ``config.json`` as a dict; None when there is none. Invalid JSON raises ValueError."""
    path = config_path(run_dir)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def is_finished(run_dir) -> bool:
    """Whether the run's training finished (status ``finished`` and ``best.keras`` present)."""
    try:
        stored = read_config(run_dir)
    except ValueError:
        return False
    return bool(stored) and stored.get("status") == "finished" and best_path(run_dir).is_file()


def read_history(run_dir):
    """history.csv as a DataFrame, one row per epoch (a repeated epoch keeps its last row)."""
    import pandas as pd

    path = history_path(run_dir)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=["epoch"])
    history = pd.read_csv(path)
    return history.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def load_best(run_dir, *, compile: bool = False):
    """The run's ``best.keras``, for inference (not compiled unless asked)."""
    import keras

    from allnet_lib import augment, models  # noqa: F401  (register the custom layers for loading)

    path = best_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path}; train it first (allnet train ...)")
    return keras.saving.load_model(path, compile=compile)


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
    return (f"Not trained yet in {paths.display_path(runs_dir)}: {', '.join(missing)} "
            f"({len(missing)} of {len(names)}). Training them now under profile {name}: {said}.\n"
            "(Chapter 5 trains and saves these models; run after it, in the same runtime or with the "
            f"same ${paths.RUNS_ENV}, a chapter reuses them instead.)")


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def write_json(path, value: dict) -> Path:
    """Atomic write: a temporary sibling, then rename (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(_jsonable(value), indent=2) + "\n")
    os.replace(tmp, path)
    return path
