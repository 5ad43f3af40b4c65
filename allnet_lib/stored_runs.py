"""Stored runs: the result records of a book run made on other hardware (the ``gpu`` profile on a
GPU), kept in the package as small JSON so that a page rendered on a CPU can show them beside its
own run, labelled with where, when and from which commit they came.

A stored run is a folder ``allnet_lib/stored/<profile>/``: one result record per model (every
prediction, the metrics, the training facts; no weights) and ``provenance.json`` (profile,
machine, devices, backend and versions, date, commit, each model's training time and images/s).

* After ``ALLNET_PROFILE=gpu ./run book`` on a GPU, ``python -m allnet_lib.stored_runs gpu``
  copies that run's records of chapter 5's split into the package (commit them).
* :func:`load` reads one back (None when there is none); :func:`summary_table` is what chapter 7
  shows; :func:`discrepancies` recomputes every metric from the stored predictions (a test runs
  it on every stored run, so a stored table cannot drift from its predictions).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

STORED_DIR = Path(__file__).resolve().parent / "stored"
PROVENANCE_NAME = "provenance.json"
#: metrics compared when a stored record is checked against its own predictions
CHECKED_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "weighted_f1", "roc_auc")


@dataclass
class StoredRun:
    """A stored run: its records (model name -> result record) and where they came from."""

    profile: str
    records: dict
    provenance: dict
    folder: Path


def store(profile_name: str, *, out_dir=None, models=None, overwrite: bool = False) -> Path:
    """Copy the records of chapter 5's run under ``profile_name`` (from ``$ALLNET_RUNS``) into
    ``out_dir`` (default ``STORED_DIR/<profile>``), with their provenance. Refuses to replace an
    existing stored run unless ``overwrite``."""
    from allnet_lib import catalogue, evaluate, paths, reader, runs
    from allnet_lib.profiles import get_profile
    from allnet_lib.split import experiment_split

    profile = get_profile(profile_name)
    out = Path(out_dir) if out_dir else STORED_DIR / profile.name
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds a stored run; pass overwrite=True (--overwrite) "
                              "to replace it")
    data_dir, _ = paths.data_dir_for(profile)
    table = reader.index_dataset(data_dir, progress=False).table
    split = experiment_split(table)
    names = list(models or catalogue.model_names())
    records, trained = {}, {}
    for name in names:
        run_dir = runs.default_run_dir(profile, split, name)
        path = runs.record_path(run_dir)
        if not path.is_file():
            raise FileNotFoundError(f"no result record for {name} in {paths.display_path(run_dir)}: "
                                    f"run chapter 5 (or ALLNET_PROFILE={profile.name} ./run book) first")
        record = evaluate.load_record(path)
        training = dict(record.get("training") or {})
        training.pop("run_dir", None)  # the build machine's folder says nothing to a reader
        record["training"] = training
        records[name] = record
        config = json.loads(runs.config_path(run_dir).read_text()) if runs.config_path(run_dir).is_file() else {}
        trained[name] = {"seconds": training.get("seconds"), "images_per_second": training.get("images_per_second"),
                         "epochs": training.get("epochs"), "best_epoch": training.get("best_epoch"),
                         "environment": config.get("environment")}
    provenance = {
        "profile": profile.name,
        "stored": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "gpu": _gpu_names()},
        "split": split.name,
        "models": trained,
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, record in records.items():
        (out / f"{name}.json").write_text(json.dumps(record, separators=(",", ":")))
    (out / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=1))
    return out


def load(profile_name: str, folder=None) -> StoredRun | None:
    """The stored run of ``profile_name`` (from ``folder``, default ``STORED_DIR/<profile>``), or
    None when there is none."""
    from allnet_lib import evaluate

    folder = Path(folder) if folder else STORED_DIR / profile_name
    provenance_path = folder / PROVENANCE_NAME
    if not provenance_path.is_file():
        return None
    provenance = json.loads(provenance_path.read_text())
    records = {path.stem: evaluate.load_record(path) for path in sorted(folder.glob("*.json"))
               if path.name != PROVENANCE_NAME}
    return StoredRun(profile_name, records, provenance, folder)


def available(root=None) -> list[str]:
    """Profiles with a stored run in ``root`` (default ``STORED_DIR``)."""
    root = Path(root) if root else STORED_DIR
    return sorted(p.name for p in root.glob("*") if (p / PROVENANCE_NAME).is_file()) if root.is_dir() else []


def discrepancies(stored: StoredRun, tolerance: float = 1e-9) -> list[str]:
    """Every stored metric that its own stored predictions do not reproduce (empty: all agree)."""
    from allnet_lib import evaluate

    problems = []
    for name, record in stored.records.items():
        pred = evaluate.predictions_frame(record)
        again = evaluate.metrics_from_predictions(pred["y"].to_numpy(), pred["p_all"].to_numpy(),
                                                  subjects=pred["subject"].astype(str).to_numpy(),
                                                  threshold=record["metrics"].get("threshold", 0.5),
                                                  n_bootstrap=0)
        for metric in CHECKED_METRICS:
            a, b = record["metrics"].get(metric), again.get(metric)
            if a is None and b is None:
                continue
            if a is None or b is None or not np.isclose(a, b, atol=tolerance, equal_nan=True):
                problems.append(f"{name}: {metric} stored {a!r}, recomputed {b!r}")
    return problems


def summary_table(stored: StoredRun) -> pd.DataFrame:
    """One row per model: test metrics and training facts of the stored run (for chapter 7)."""
    rows = []
    for name, record in stored.records.items():
        m, t = record["metrics"], stored.provenance.get("models", {}).get(name, {})
        rows.append({"model": name, "test images": record.get("n_images"),
                     "balanced accuracy": m.get("balanced_accuracy"), "accuracy": m.get("accuracy"),
                     "sensitivity": m.get("sensitivity"), "specificity": m.get("specificity"),
                     "ROC AUC": m.get("roc_auc"), "training s": t.get("seconds"),
                     "train images/s": t.get("images_per_second")})
    return pd.DataFrame(rows).set_index("model")


def provenance_line(stored: StoredRun) -> str:
    """Where, when and from which commit a stored run came, in one line."""
    p = stored.provenance
    gpus = ", ".join(p.get("machine", {}).get("gpu") or []) or "no GPU recorded"
    backends = {(m.get("environment") or {}).get("backend") for m in p.get("models", {}).values()} - {None}
    return (f"stored run: profile {p.get('profile')}, {gpus}, backend {', '.join(sorted(backends)) or '?'}, "
            f"stored {p.get('stored', '?')[:10]}, commit {str(p.get('commit') or '?')[:10]}, split {p.get('split')}")


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _gpu_names() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m allnet_lib.stored_runs",
                                     description="Store the result records of chapter 5's run under a "
                                                 "profile in the package (after the book ran on a GPU).")
    parser.add_argument("profile", help="the profile whose run to store, e.g. gpu")
    parser.add_argument("--out", type=Path, help="folder (default: allnet_lib/stored/<profile>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a stored run that is there")
    args = parser.parse_args(argv)
    try:
        out = store(args.profile, out_dir=args.out, overwrite=args.overwrite)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stored = load(args.profile, out)
    print(provenance_line(stored))
    print(summary_table(stored).round(3).to_string())
    problems = discrepancies(stored)
    if problems:
        print("error: stored metrics disagree with their predictions:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"stored in {out}; commit it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
