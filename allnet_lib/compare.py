"""Comparing models, the leakage experiment, and the 2019 report's numbers as references.

:func:`compare_models` trains and evaluates several models on one split and keeps one result
record per model in its run folder; running it again with the same configuration (profile, data
manifest, model, seed) reuses the finished records instead of training again, and says so.

:func:`leakage_experiment` measures what a random image-level split does to a score: the same
model and budget trained on an image-level and on a subject-level split of the same data, each
tested on its own test part *and* on subjects that neither model ever saw. The difference for the
image-level split is its *optimism gap*: how much of its score came from recognising people.
"""

from __future__ import annotations

import gc
import math
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from allnet_lib import catalogue, evaluate, runs
from allnet_lib.paths import display_path
from allnet_lib.labels import CLASSES
from allnet_lib.split import DEFAULT_TEST_SIZE, DEFAULT_VAL_SIZE, training_parts

#: The 2019 report's Table 2: test accuracy in percent, on a *random image-level* 80/20 split
#: (cells of the same person in train and test), so not a score on new patients.
#: Kept in the model catalogue (``catalogue.ModelEntry.report_accuracy``); this is its view.
REPORT_TABLE2: dict[str, float] = catalogue.report_table2()
REPORT_TABLE2_NOTE = ("2019 report, Table 2: accuracy (%) on a random image-level 80/20 split that "
                      "shares subjects between train and test")
#: Column of :func:`results_table` holding REPORT_TABLE2 (as a fraction, like the other metrics).
REFERENCE_COLUMN = "report_2019_accuracy_image_split"

#: The report's printed confusion matrix and how to read it (see shared notes).
REPORT_CONFUSION: dict[str, Any] = {
    "matrix": [[1370, 77], [71, 603]],
    "class_order": ("all", "hem"),  # Keras folder order of the report: all = 0, hem = 1
    "rows": "true class",
    "columns": "predicted class",
    "matrix_hem_all": [[603, 71], [77, 1370]],  # the same numbers in this library's order
    "printed": {"precision": "0.89%", "recall": "0.89%", "accuracy": "93.02%"},
    "reading": (
        "Rows are true classes and columns predictions, in folder order all = 0, hem = 1. The "
        "printed precision and recall (0.89, fractions not percent) are for hem as the positive "
        "class: 603/680 = 0.887 and 603/674 = 0.895. With ALL (the disease) as the positive class: "
        "precision 1370/1441 = 0.951, recall (sensitivity) 1370/1447 = 0.947, specificity "
        "603/674 = 0.895; accuracy 1973/2121 = 0.9302."
    ),
    "all_positive": {"precision": 1370 / 1441, "sensitivity": 1370 / 1447, "specificity": 603 / 674,
                     "accuracy": 1973 / 2121},
}

RECORD_NAME = runs.RECORD_NAME  # kept for callers; the run folder's names live in allnet_lib.runs
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "weighted_f1",
                   "roc_auc", "subject_accuracy")
TABLE_METRICS = ("accuracy", "sensitivity", "specificity", "weighted_f1", "roc_auc", "subject_accuracy")


class ExperimentConflict(RuntimeError):
    """A run folder already holds results of a different configuration."""


# ----------------------------------------------------------------------------------------------
# splits and configuration
# ----------------------------------------------------------------------------------------------


def make_split(table: pd.DataFrame, method: str, *, seed: int = 0, test_size: float = DEFAULT_TEST_SIZE,
               val_size: float = DEFAULT_VAL_SIZE):
    """:func:`allnet_lib.split.make_split` (the one registry of splits by name), kept for callers;
    here ``seed`` defaults to 0 for every method, as it always did."""
    from allnet_lib import split as splits

    return splits.make_split(table, method, seed=seed, test_size=test_size, val_size=val_size)


def experiment_config(model_name: str, split, profile) -> dict:
    """What decides a result: model, profile settings, exactly which images, and the seed.

    Two runs with equal configs are the same experiment, so a finished record can be reused.
    """
    from allnet_lib.split import manifest_hash
    from allnet_lib.train import comparable_settings

    settings = comparable_settings(profile, model_name)
    return evaluate._jsonable({
        "model": model_name,
        "profile": settings,
        "split": split.name,
        "split_method": split.method,
        "seed": split.seed,
        "manifest_hash": manifest_hash(split),
    })


def default_run_dir(model_name: str, split, profile) -> Path:
    """Deprecated: use :func:`allnet_lib.runs.default_run_dir` ``(profile, split, model_name)``."""
    import warnings

    warnings.warn("compare.default_run_dir(model, split, profile) is deprecated; use "
                  "allnet_lib.runs.default_run_dir(profile, split, model)", DeprecationWarning, stacklevel=2)
    return runs.default_run_dir(profile, split, model_name)


# ----------------------------------------------------------------------------------------------
# one model: train, evaluate, record
# ----------------------------------------------------------------------------------------------


def _record_paths(run_dir: Path, extra_tests: Mapping[str, pd.DataFrame]) -> dict[str, Path]:
    return {name: runs.record_path(run_dir, name) for name in (runs.TEST, *extra_tests)}


def _finished(paths: Mapping[str, Path], config: dict) -> tuple[dict | None, str | None]:
    """(records, None) when every record exists with this config; (None, why not) when one was
    made with another config; (None, None) when some are missing (then the run is redone)."""
    records = {}
    for name, path in paths.items():
        if path.exists():
            record = evaluate.load_record(path)
            found = _for_comparison(record.get("config", {}).get("experiment"))
            if found != config:
                return None, _difference(found or {}, config, path)
            records[name] = record
    return (records, None) if len(records) == len(paths) else (None, None)


def _for_comparison(found: dict | None) -> dict | None:
    """train.for_comparison, imported on use: importing allnet_lib.train starts TensorFlow."""
    from allnet_lib.train import for_comparison

    return None if found is None else for_comparison(found)


def _same_experiment(path: Path, config: dict) -> bool:
    """Whether ``path`` holds a record of this very configuration (safe to refresh)."""
    try:
        return _for_comparison(evaluate.load_record(path).get("config", {}).get("experiment")) == config
    except (OSError, ValueError):
        return False


def _difference(old: dict, new: dict, path: Path) -> str:
    """A one-line account of how two experiment configs differ."""
    keys = []
    for key in sorted(set(old) | set(new)):
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            keys += [f"{key}.{k}" for k in sorted(set(old[key]) | set(new[key]))
                     if old[key].get(k) != new[key].get(k)]
        elif old.get(key) != new.get(key):
            keys.append(key)
    return f"{path} was made with a different configuration (differs in: {', '.join(keys) or '?'})"


def run_model(model_name: str, split, profile, run_dir=None, *, reuse: bool = True,
              extra_tests: Mapping[str, pd.DataFrame] | None = None, progress: bool = True,
              log=print) -> tuple[dict[str, dict], bool]:
    """Train ``model_name`` on ``split`` (unless finished records exist) and evaluate it on
    ``split.test`` and on every table of ``extra_tests``. Returns ``({name: record}, reused)``.

    Records are written to ``run_dir/record.json`` and ``run_dir/record_<name>.json``. A folder
    holding results of another configuration is never silently replaced: that raises
    :class:`ExperimentConflict` unless ``reuse=False`` (retrain and replace, on purpose).
    """
    extra_tests = dict(extra_tests or {})
    if len(split.test) == 0:
        raise ValueError(f"split {split.name!r} has an empty test part: nothing to evaluate on")
    run_dir = Path(run_dir) if run_dir is not None else runs.default_run_dir(profile, split, model_name)
    config = experiment_config(model_name, split, profile)
    paths = _record_paths(run_dir, extra_tests)
    if reuse:
        records, conflict = _finished(paths, config)
        if records is not None:
            log(f"{model_name}: reusing the finished record in {display_path(run_dir)} (same profile, data "
                "manifest, model and seed): not retrained. Use --no-reuse (reuse=False) to retrain.")
            return records, True
        if conflict:
            raise ExperimentConflict(f"{conflict}. Choose another output folder, or retrain and "
                                     "replace it with --no-reuse (reuse=False).")
    action = "training" if reuse else "retraining from scratch (reuse off: any earlier run there is replaced)"
    log(f"{model_name}: {action} (profile {profile.name}, split {split.name}, "
        f"training part of {len(split.train)} images) in {display_path(run_dir)}")
    records = _train_and_evaluate(model_name, split, profile, run_dir, config, reuse, extra_tests,
                                  progress, log)
    for name, record in records.items():
        path = paths[name]
        refresh = path.exists() and _same_experiment(path, config)  # e.g. a run cut short before
        evaluate.save_record(record, path, overwrite=not reuse or refresh)
    return records, False


def _train_and_evaluate(model_name, split, profile, run_dir, config, reuse, extra_tests, progress, log):
    """Train once (or load a finished training run), evaluate on every test table, free memory."""
    from allnet_lib.split import manifest_hash
    from allnet_lib.train import train_model

    # reuse=False replaces the run on purpose; otherwise a finished run is loaded, a stopped one resumed
    result = train_model(model_name, split, profile, run_dir=run_dir, resume=True, overwrite=not reuse,
                         progress=progress)
    try:
        if getattr(result, "reused", False):
            log(f"{model_name}: training was already finished in {display_path(run_dir)}: loaded best.keras, evaluating")
        training = {
            "seconds": result.seconds,
            "images_per_second": result.images_per_second,
            "epochs": int(len(result.history)),
            "best_epoch": getattr(result, "best_epoch", None),
            "train_accuracy": getattr(result, "best_train_accuracy", None),
            "run_dir": str(result.run_dir),
        }
        tests = {"test": split.test, **extra_tests}
        records = {}
        for name, table in tests.items():
            record = evaluate.evaluate_model(
                result.model, table, image_size=profile.image_size(model_name), crop=profile.crop,
                batch_size=max(int(profile.batch_size), 64), name=model_name,
                config={"experiment": config, "training": result.config},
                split_name=split.name if name == "test" else f"{split.name}:{name}",
                manifest_hash=manifest_hash(table), progress=progress)
            record["evaluated_on"] = name
            record["training"] = training
            records[name] = record
        return records
    finally:
        del result
        _free_memory()


def _free_memory() -> None:
    """Drop Keras' global state and collect garbage, so the next model starts with free memory."""
    try:
        import keras

        keras.backend.clear_session()
    except Exception:  # noqa: BLE001 - freeing memory is best effort
        pass
    gc.collect()


# ----------------------------------------------------------------------------------------------
# comparing models
# ----------------------------------------------------------------------------------------------


def compare_models(model_names: Iterable[str] | None, split, profile, *, out_dir=None, reuse: bool = True,
                   progress: bool = True, log=print) -> pd.DataFrame:
    """Train and evaluate each model on ``split`` and return :func:`results_table` of them
    (``model_names=None``: every model of :mod:`allnet_lib.catalogue`).

    Each model gets ``out_dir/<model>/`` (default ``runs_root()/<profile>/<split name>/<model>/``)
    with its checkpoints and ``record.json``. Finished records of the same configuration are
    reused (the ``reused`` column and the log say which) unless ``reuse=False``.
    """
    names = list(catalogue.model_names()) if model_names is None else [str(n) for n in model_names]
    if not names:
        raise ValueError("compare_models: no model names given")
    _check_model_names(names)
    run_dirs = {n: Path(out_dir) / n if out_dir is not None else runs.default_run_dir(profile, split, n) for n in names}
    missing = [n for n in names if not runs.record_path(run_dirs[n]).is_file()]
    if missing and reuse:
        log(runs.training_notice(  # say what will be trained, and how long, first
            missing, names, profile, run_dirs[missing[0]].parent))
    records, reused, where = [], [], []
    for i, name in enumerate(names, 1):
        log(f"[{i}/{len(names)}] {name}")
        run_dir = run_dirs[name]
        recs, was_reused = run_model(name, split, profile, run_dir, reuse=reuse, progress=progress, log=log)
        records.append(recs["test"])
        reused.append(was_reused)
        where.append(str(runs.record_path(run_dir)))
    table = results_table(records)
    table["reused"] = reused
    table["record_path"] = where
    return table


def _check_model_names(names: list[str]) -> None:
    from allnet_lib.models import list_models

    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; valid names: {', '.join(list_models())}")


def _as_record_list(records) -> list[dict]:
    if isinstance(records, Mapping) and "metrics" in records:
        return [records]
    if isinstance(records, Mapping):
        return list(records.values())
    return list(records)


def results_table(records) -> pd.DataFrame:
    """One row per record: the headline metrics with 95 % CIs, subject-level accuracy, training
    time and speed, and the 2019 report's Table 2 accuracy as a reference column
    (:data:`REFERENCE_COLUMN`; measured on a random image split that shares people between
    training and test, on other data and another recipe: a reference, not a comparison).

    All metrics are fractions in [0, 1]; missing values are NaN.
    """
    rows = []
    for record in _as_record_list(records):
        m = record["metrics"]
        intervals = (m.get("ci") or {}).get("intervals") or {}
        training = record.get("training") or {}
        row = {"model": record["name"], "split": record.get("split"), "n_images": m["n_images"],
               "n_subjects": m.get("n_subjects")}
        for key in TABLE_METRICS:
            ci = intervals.get(key) or (None, None)
            row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"] = m.get(key), ci[0], ci[1]
        ci = m.get("ci") or {}
        row["ci_trusted"] = ci.get("trusted")
        row["ci_subjects"] = (" + ".join(f"{n} {c}" for c, n in ci["clusters_per_class"].items())
                              if ci.get("clusters_per_class") else None)
        row["train_seconds"] = training.get("seconds")
        row["train_images_per_second"] = training.get("images_per_second")
        row["eval_images_per_second"] = record.get("images_per_second")
        reference = catalogue.report_table2().get(record["name"])
        row[REFERENCE_COLUMN] = reference / 100 if reference is not None else None
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        numeric = [c for c in table.columns if c not in ("model", "split", "ci_trusted", "ci_subjects")]
        table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
    table.attrs["reference_note"] = REPORT_TABLE2_NOTE
    return table


def format_results(table: pd.DataFrame) -> pd.DataFrame:
    """``results_table`` for reading: percentages with CIs as text, seconds rounded."""
    out = pd.DataFrame({"model": table["model"]})

    def pct(v):
        return "n/a" if pd.isna(v) else f"{100 * v:.1f}"

    for key in TABLE_METRICS:
        if key not in table:
            continue
        out[key.replace("_", " ")] = [
            pct(v) + (f" [{pct(lo)}, {pct(hi)}]" if not pd.isna(lo) else "")
            for v, lo, hi in zip(table[key], table[f"{key}_ci_low"], table[f"{key}_ci_high"])]
    if "ci_trusted" in table:
        out["intervals"] = ["trusted" if t is True else f"not trusted: {n} subjects" if t is False else "n/a"
                            for t, n in zip(table["ci_trusted"], table["ci_subjects"])]
    out["train s"] = table["train_seconds"].round(1)
    out["train img/s"] = table["train_images_per_second"].round(1)
    out["report 2019 acc. (image split)"] = [pct(v) for v in table[REFERENCE_COLUMN]]
    if "reused" in table:
        out["reused"] = table["reused"]
    return out


def load_records(out_dir, pattern: str = RECORD_NAME) -> list[dict]:
    """Every result record under ``out_dir`` (recursively), in path order.

    The default pattern finds each run's main record (its own test part); use
    ``"record*.json"`` to include extra evaluations such as the leakage experiment's held-out set.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"{out_dir} is not a folder; run `allnet compare` or compare_models first")
    return [evaluate.load_record(p) for p in sorted(out_dir.rglob(pattern))]


# ----------------------------------------------------------------------------------------------
# the leakage experiment
# ----------------------------------------------------------------------------------------------

LEAKAGE_NAME = "leakage.json"
LEAKAGE_MIN_SUBJECTS = 4
LEAKAGE_VAL_SIZE = 0.15  # each half gets its own validation part: picking the epoch is part of the method
HALVES = ("A", "B")
TRAINED_ON = {"image": "random image split of one half of the people"}
EVALUATED_ON = {"test": "own test cells (people seen in training)",
                "heldout": "the same cells, scored by the model that never saw these people"}


def leakage_experiment(model_name: str, table: pd.DataFrame, profile, *, out_dir=None, seed: int = 0,
                       test_size: float = DEFAULT_TEST_SIZE, val_size: float = LEAKAGE_VAL_SIZE,
                       reuse: bool = True, progress: bool = True, log=print) -> dict:
    """Does a random image split overstate performance on new people, and by how much?

    A paired design ("crossed halves"), so that the two scores compared are scores of the same
    cells and differ only in whether the model had seen the person:

    1. Split the people into two halves, A and B (whole subjects, classes balanced).
    2. Within each half, split the images at random into train, validation and test, as the 2019
       report split all of its images; train the same model with the same profile on each half.
    3. Every test cell is scored twice: by its own half's model, which saw other cells of that
       person (*own test*), and by the other half's model, which never saw the person
       (*held-out*). The *optimism gap* is own-test minus held-out score over all test cells.

    Comparing a random split's test part with *other* held-out people instead mixes the leak with
    how hard those particular people happen to be, which varies more from seed to seed than the
    leak itself. The result dict (also written to ``out_dir/leakage.json``) holds both pooled
    scores with subject-level bootstrap CIs, each half's split facts and fit; records go to
    ``out_dir/half_{A,B}/``. Reuse works as in compare_models.
    """
    _check_model_names([model_name])
    halves = leakage_halves(table, seed=seed, test_size=test_size, val_size=val_size)
    out_dir = Path(out_dir) if out_dir is not None else _default_leakage_dir(model_name, profile, seed)
    result = leakage_result_header(model_name, profile.name, seed, halves)
    records = {}
    for name, other in zip(HALVES, reversed(HALVES)):
        split = halves[name]
        log(f"leakage experiment: half {name} ({split.name}; its test cells are also scored by "
            f"half {other}'s model)")
        extra = {"heldout": halves[other].test, FIT_PART: training_parts(split, profile)[0]}
        recs, was_reused = run_model(model_name, split, profile, out_dir / f"half_{name}", reuse=reuse,
                                     extra_tests=extra, progress=progress, log=log)
        records[name] = recs
        result["halves"][name]["split"] = _split_facts(split)
        result["halves"][name]["fit"] = _fit_facts(recs)
        result["records"][name] = {k: str(p) for k, p in
                                   _record_paths(out_dir / f"half_{name}", extra).items()}
        result["reused"][name] = was_reused
    own = [evaluate.predictions_frame(records[h]["test"]) for h in HALVES]
    # half A's test cells scored by B's model are B's "heldout" predictions, and vice versa
    held = [evaluate.predictions_frame(records[other]["heldout"]) for other in reversed(HALVES)]
    return _finish_leakage(result, own, held, seed=seed, out_dir=out_dir)


def _finish_leakage(result: dict, own: list[pd.DataFrame], held: list[pd.DataFrame], *, seed: int,
                    out_dir=None, n_bootstrap: int = 1000) -> dict:
    """Pool each half's own-test and held-out predictions (the same cells in the same order) into
    ``results["image"]``, ``splits["image"]``, ``fit["image"]`` and ``optimism_gap``."""
    own_frame, held_frame = pd.concat(own, ignore_index=True), pd.concat(held, ignore_index=True)
    if list(own_frame["filename"]) != list(held_frame["filename"]):
        raise AssertionError("leakage experiment: the own-test and held-out predictions are not of the same cells")
    result["results"]["image"] = {
        part: _summary(evaluate.metrics_from_predictions(
            frame["y"].astype(int).to_numpy(), frame["p_all"].astype(float).to_numpy(),
            subjects=frame["subject"].astype(str).to_numpy(), n_bootstrap=n_bootstrap, seed=seed))
        for part, frame in (("test", own_frame), ("heldout", held_frame))}
    facts = [result["halves"][h]["split"] for h in HALVES]
    result["splits"]["image"] = {
        "name": " + ".join(f["name"] for f in facts),
        **{k: sum(f[k] for f in facts) for k in ("n_train", "n_val", "n_test", "test_subjects",
                                                  "test_subjects_seen_in_training")}}
    fits = [result["halves"][h]["fit"] for h in HALVES]
    accuracies = [f["train_accuracy"] for f in fits if f.get("train_accuracy") is not None]
    result["fit"] = {"image": {"train_accuracy": min(accuracies) if accuracies else None,
                               "fitted": None if not accuracies else min(accuracies) >= FIT_THRESHOLD,
                               "per_half": {h: f.get("train_accuracy") for h, f in zip(HALVES, fits)}}}
    result["optimism_gap"] = _gap(result["results"]["image"])
    result = evaluate._jsonable(result)
    if out_dir is not None:
        _write_json(Path(out_dir) / LEAKAGE_NAME, result)
    return result


def leakage_halves(table: pd.DataFrame, *, seed: int = 0, test_size: float = DEFAULT_TEST_SIZE,
                   val_size: float = LEAKAGE_VAL_SIZE) -> dict:
    """The leakage experiment's data: ``{"A": Split, "B": Split}``, each a random image split of
    one half of the people (whole subjects to a half, each class halved).

    One function for every model family (CNNs and the classical baseline), so their gaps are
    measured on the same cells for the same seed."""
    from allnet_lib import split as splits

    table = splits.training_rows(table)
    _check_leakage_subjects(table)
    try:
        halves = splits.subject_split(table, test_size=0.5, seed=seed)
        parts = {"A": halves.train, "B": halves.test}
        return {name: splits.random_image_split(part, test_size=test_size, val_size=val_size, seed=seed)
                for name, part in parts.items()}
    except ValueError as error:
        raise ValueError(f"cannot make the leakage experiment's halves (whole subjects to two halves, "
                         f"then a random image split of each): {error}") from error


def leakage_result_header(model_name: str, profile_name: str, seed: int, halves: Mapping) -> dict:
    """The start of a leakage result dict: who was in which half. ``halves[h]["split"]`` and
    ``["fit"]``, ``records`` and ``reused`` are filled per half, then the pooled ``results``,
    ``splits``, ``fit`` and ``optimism_gap`` by :func:`_finish_leakage`."""
    from allnet_lib import split as splits

    def people(split) -> dict:
        rows = pd.concat([split.train, split.val, split.test], ignore_index=True)
        return {"subjects": sorted(set(rows["subject"].astype(str))), "n_images": len(rows),
                "counts": {c: int((rows["label"] == c).sum()) for c in CLASSES},
                "manifest_hash": splits.manifest_hash(rows)}

    return {
        "model": model_name, "profile": profile_name, "seed": seed, "design": "crossed halves",
        "note": ("optimism_gap = score of the test cells by the model of their own half (which saw "
                 "other cells of the same people) - score of the same cells by the other half's "
                 "model (which never saw these people)"),
        "halves": {name: people(split) for name, split in halves.items()},
        "splits": {}, "results": {}, "records": {}, "reused": {},
    }


#: A model "fits" its training part when it classifies this share of its own training cells
#: correctly: below it, a small optimism gap may only mean the model learnt too little to memorise anyone.
FIT_THRESHOLD = 0.90
#: The record (``record_train.json``) of a leakage model scoring the very cells it was trained on.
FIT_PART = "train"


def _fit_facts(records: Mapping[str, dict]) -> dict:
    """How well the trained model fitted its training part: the chosen weights scoring their own
    training cells as they score test cells (no augmentation, no dropout), the way the classical
    baseline's fit is measured. Keras' running training accuracy (averaged over an epoch while the
    weights change, with dropout and augmentation on) is kept beside it; it reads lower."""
    training = next(iter(records.values())).get("training") or {}
    scored = (records.get(FIT_PART) or {}).get("metrics") or {}
    accuracy = scored.get("accuracy")
    return {"train_accuracy": accuracy,
            "fitted": None if accuracy is None else bool(accuracy >= FIT_THRESHOLD),
            "train_accuracy_while_training": training.get("train_accuracy"),
            "epochs": training.get("epochs"), "best_epoch": training.get("best_epoch")}


LEAKAGE_SEEDS_NAME = "leakage_seeds_{model}.json"  # one per model: several models may share a leakage folder


def leakage_seeds(model_name: str, table: pd.DataFrame, profile, *, seeds: Iterable[int] | None = None,
                  out_dir=None, reuse: bool = True, progress: bool = True, log=print) -> dict:
    """The leakage experiment of a CNN over several seeds (each seed: other halves of people, other
    splits, other initial weights), as the classical baseline's :func:`allnet_lib.baseline.classical_leakage`.

    Every seed trains the model twice (once per half, see :func:`leakage_experiment`). ``seeds``
    defaults to the profile's ``leakage_seeds``; the profile's ``leakage_epochs`` (when set) replaces its ``epochs``, so the
    model is trained until it fits its training part. Returns ``{"model", "profile", "seeds":
    [per-seed results as leakage_experiment's], "summary": leakage_over_seeds(...)}``, also written
    to ``out_dir/leakage_seeds_<model>.json``."""
    seeds = [int(s) for s in (profile.leakage_seeds if seeds is None else seeds)]
    if not seeds:
        raise ValueError("leakage_seeds needs at least one seed")
    if getattr(profile, "leakage_epochs", None):
        profile = profile.replace(epochs=int(profile.leakage_epochs))
    base = Path(out_dir) if out_dir is not None else _default_leakage_dir(model_name, profile, "seeds").parent
    per_seed = []
    for k, seed in enumerate(seeds):
        log(f"leakage experiment, seed {seed} ({k + 1} of {len(seeds)})")
        per_seed.append(leakage_experiment(model_name, table, profile.replace(seed=seed),
                                           out_dir=base / f"{model_name}-s{seed}", seed=seed,
                                           reuse=reuse, progress=progress, log=log))
    result = {"model": model_name, "profile": profile.name, "epochs": profile.epochs, "seeds": per_seed,
              "summary": leakage_over_seeds(per_seed)}
    result = evaluate._jsonable(result)
    _write_json(base / LEAKAGE_SEEDS_NAME.format(model=model_name), result)
    return result


def _check_leakage_subjects(table: pd.DataFrame) -> None:
    """Fail before any training when the data has too few people for two halves, each with
    people of both classes in its training, validation and test parts."""
    counts = table.groupby("label")["subject"].nunique()
    short = {c: int(counts.get(c, 0)) for c in CLASSES if counts.get(c, 0) < LEAKAGE_MIN_SUBJECTS}
    if short:
        raise ValueError(
            f"the leakage experiment needs at least {LEAKAGE_MIN_SUBJECTS} subjects of each class "
            "(two halves of people, each split at random into training, validation and test "
            "cells), but the data has "
            f"{short}. Use the real data or a larger demo set (`allnet demo-data --n-images 1200` "
            "or more).")


def _default_leakage_dir(model_name: str, profile, seed: int) -> Path:
    from allnet_lib.paths import runs_root

    return runs_root() / profile.name / "leakage" / f"{model_name}-s{seed}"


def _split_facts(split) -> dict:
    """Sizes, and how many test subjects the model also saw in training (the leak)."""
    train_subjects = set(split.train["subject"].astype(str)) | set(split.val["subject"].astype(str))
    test_subjects = set(split.test["subject"].astype(str))
    return {"name": split.name, "n_train": len(split.train), "n_val": len(split.val),
            "n_test": len(split.test), "test_subjects": len(test_subjects),
            "test_subjects_seen_in_training": len(test_subjects & train_subjects)}


def _summary(metrics: dict) -> dict:
    """The headline numbers of a metrics dict, each with its CI."""
    intervals = (metrics.get("ci") or {}).get("intervals") or {}
    out = {"n_images": metrics["n_images"], "n_subjects": metrics.get("n_subjects")}
    for key in SUMMARY_METRICS:
        out[key] = metrics.get(key)
        out[f"{key}_ci"] = intervals.get(key)
    return out


def _gap(results: dict) -> dict:
    """Own-test score minus held-out score, per metric (None where either is undefined)."""
    own, held = results["test"], results["heldout"]
    return {k: (own[k] - held[k] if own[k] is not None and held[k] is not None else None)
            for k in SUMMARY_METRICS}


def _write_json(path: Path, data: dict) -> None:
    """Atomic write of a summary derived from the records (recomputed on every run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


def load_leakage(out_dir) -> dict:
    """Read a leakage experiment's ``leakage.json``."""
    path = Path(out_dir) / LEAKAGE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {LEAKAGE_NAME} in {out_dir}; run `allnet leakage` first")
    return json.loads(path.read_text())


def leakage_verdict(result: dict, metric: str = "accuracy") -> str:
    """One sentence saying what the leakage experiment found, from its numbers alone.

    The optimism gap is the test cells' score by the models that saw their people minus the same
    cells' score by the models that did not (see :func:`leakage_experiment`). Whether that gap means anything depends on the two 95 % intervals (over
    subjects): a gap whose intervals overlap is not told apart from noise by this run. The
    sentence is computed, so a page never claims a direction the run did not show."""
    image = result["results"]["image"]
    own, held = image["test"].get(metric), image["heldout"].get(metric)
    if own is None or held is None:
        return f"leakage experiment ({result['model']}): {metric} could not be computed on both parts"
    own_ci = image["test"].get(f"{metric}_ci") or (None, None)
    held_ci = image["heldout"].get(f"{metric}_ci") or (None, None)
    gap = own - held
    facts = (f"{metric} {own:.3f} on test cells of people seen in training vs {held:.3f} on the "
             f"same cells by the model that never saw these people, gap {gap:+.3f}")
    if None not in (*own_ci, *held_ci):
        facts += f"; 95% intervals [{own_ci[0]:.3f}, {own_ci[1]:.3f}] and [{held_ci[0]:.3f}, {held_ci[1]:.3f}]"
        separated = own_ci[0] > held_ci[1] if gap > 0 else own_ci[1] < held_ci[0]
    else:
        separated = False
    who = f"random image split ({result['model']}, profile {result['profile']})"
    if gap > 0 and separated:
        return f"The {who} overstates its score on new people: {facts}; the intervals do not overlap."
    if gap > 0:
        return (f"The {who} scored higher on people it had seen: {facts}; the intervals overlap, "
                "so this run cannot tell the gap from noise.")
    return (f"This run measured no optimism of the {who}: {facts}. Seeing the test people in "
            "training did not help this model at this budget; more subjects, epochs or seeds "
            "would be needed to find a gap, if there is one.")


def leakage_table(result: dict) -> pd.DataFrame:
    """The leakage experiment as rows (trained on x evaluated on) with CIs, for tables and plots."""
    rows = []
    for kind, by_test in result["results"].items():
        facts = result["splits"][kind]
        for test, s in by_test.items():
            row = {"trained_on": TRAINED_ON.get(kind, kind), "evaluated_on": EVALUATED_ON.get(test, test),
                   "n_images": s["n_images"], "n_subjects": s["n_subjects"],
                   "test_subjects_seen_in_training": (facts["test_subjects_seen_in_training"]
                                                      if test == "test" else 0)}
            for key in SUMMARY_METRICS:
                ci = s.get(f"{key}_ci") or (None, None)
                row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"] = s.get(key), ci[0], ci[1]
            rows.append(row)
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("trained_on", "evaluated_on")]
    table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
    return table


# ----------------------------------------------------------------------------------------------
# the leakage experiment over seeds (CNNs and the classical baseline alike)
# ----------------------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict:
    """mean, sample standard deviation (ddof=1; None for one value), min, max, positives, and a
    95 % t-interval of the mean over the values (None for fewer than two)."""
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n_positive": 0, "n": 0,
                "ci95": None}
    out = {"mean": float(arr.mean()), "std": None, "min": float(arr.min()), "max": float(arr.max()),
           "n_positive": int((arr > 0).sum()), "n": int(arr.size), "ci95": None}
    if arr.size > 1:
        out["std"] = float(arr.std(ddof=1))
        half = float(stats.t.ppf(0.975, arr.size - 1)) * out["std"] / math.sqrt(arr.size)
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out


def _score(result: dict, kind: str, test: str, metric: str):
    return ((result.get("results") or {}).get(kind) or {}).get(test, {}).get(metric)


def leakage_over_seeds(per_seed: list[dict], metric: str = "accuracy") -> dict:
    """The leakage experiment over seeds: the optimism gap's mean, sample standard deviation
    (ddof=1; None for one seed), min, max, a 95 % t-interval of the mean over seeds (``ci95``; the
    seeds share one data set, so it describes split-to-split variation), each seed's value and how
    many seeds had a positive gap; the mean own-test and held-out scores; each seed's training
    accuracy (the lower of its two halves). Seeds where ``metric`` is undefined are left out of
    the numbers and counted in ``n_undefined``."""
    seeds, gaps, undefined = [], [], []
    scores: dict[str, list[float]] = {"test": [], "heldout": []}
    for result in per_seed:
        gap = (result.get("optimism_gap") or {}).get(metric)
        if gap is None:
            undefined.append(result.get("seed"))
            continue
        seeds.append(result.get("seed"))
        gaps.append(float(gap))
        for test in scores:
            value = _score(result, "image", test, metric)
            if value is not None:
                scores[test].append(float(value))
    optimism = _spread(gaps)
    optimism["values"] = gaps
    mean = {test: (float(np.mean(v)) if v else None) for test, v in scores.items()}
    return {
        "metric": metric, "n_seeds": len(seeds), "seeds": seeds, "n_undefined": len(undefined),
        "undefined_seeds": undefined, "optimism_gap": optimism,
        "mean_score": {"image": mean}, "mean_heldout": mean["heldout"],
        "train_accuracy": [((r.get("fit") or {}).get("image") or {}).get("train_accuracy") for r in per_seed],
        "model": per_seed[0].get("model") if per_seed else None,
    }


def leakage_seeds_table(per_seed: list[dict], metric: str = "accuracy") -> pd.DataFrame:
    """One row per seed: ``metric`` of the test cells scored by the model that saw their people
    (own test) and by the one that did not (held-out), the gap, the training accuracy (the lower
    half's), and how many people and test cells the seed scored."""
    rows = []
    for result in per_seed:
        facts = (result.get("splits") or {}).get("image") or {}
        halves = result.get("halves") or {}
        rows.append({"seed": result.get("seed"),
                     "own_test": _score(result, "image", "test", metric),
                     "heldout": _score(result, "image", "heldout", metric),
                     "optimism_gap": (result.get("optimism_gap") or {}).get(metric),
                     "train_accuracy": ((result.get("fit") or {}).get("image") or {}).get("train_accuracy"),
                     "subjects": sum(len(h.get("subjects") or []) for h in halves.values()),
                     "test_images": facts.get("n_test")})
    columns = ["seed", "own_test", "heldout", "optimism_gap", "train_accuracy", "subjects", "test_images"]
    return pd.DataFrame(rows, columns=columns).apply(pd.to_numeric, errors="coerce")


def leakage_shown(summary: dict) -> bool | None:
    """Whether :func:`leakage_over_seeds` shows the same cells scoring higher when the model had
    seen their people (own test) than when it had not (held-out): a positive gap in more than half of the seeds and on average (the
    rule :func:`leakage_seeds_verdict` words). None when no seed gave a defined gap."""
    gap = summary.get("optimism_gap") or {}
    n = int(gap.get("n") or 0)
    if n == 0:
        return None
    return bool(int(gap["n_positive"]) * 2 > n and gap["mean"] > 0)


def leakage_fitted(summary: dict) -> bool | None:
    """Whether the models fitted their training parts (FIT_THRESHOLD) in every seed."""
    fits = [a for a in summary.get("train_accuracy") or [] if a is not None]
    return None if not fits else all(a >= FIT_THRESHOLD for a in fits)


def leakage_seeds_verdict(summary: dict) -> str:
    """One sentence on the optimism gap over seeds, computed from :func:`leakage_over_seeds`.

    A direction is claimed only when the gap was positive in more than half of the seeds *and*
    its mean is positive, and the sentence then says whether the 95 % t-interval over seeds
    excludes zero; otherwise it says plainly that these seeds did not show a gap."""
    metric = summary.get("metric", "accuracy")
    gap = summary.get("optimism_gap") or {}
    n = int(gap.get("n") or 0)
    who = f" ({summary['model']})" if summary.get("model") else ""
    if n == 0:
        return f"No seed gave a defined {metric} gap{who}: nothing can be said about leakage."
    mean, sd, pos = gap["mean"], gap.get("std"), int(gap["n_positive"])
    spread = f" ± {sd:.3f} (SD)" if sd is not None else ""
    seeds = "seed" if n == 1 else "seeds"
    rng = f", range {gap['min']:+.3f} to {gap['max']:+.3f}" if n > 1 else ""
    contrast = ""
    ci = gap.get("ci95")
    if ci is None:
        noise = " One seed shows no spread: run more seeds before drawing a conclusion."
    elif ci[0] > 0 or ci[1] < 0:
        noise = f" The 95% t-interval of the mean over seeds, [{ci[0]:+.3f}, {ci[1]:+.3f}], excludes zero."
    else:
        noise = (f" The 95% t-interval of the mean over seeds, [{ci[0]:+.3f}, {ci[1]:+.3f}], includes "
                 "zero: these seeds do not tell the gap from split-to-split noise.")
    fits = [a for a in summary.get("train_accuracy") or [] if a is not None]
    unfit = [a for a in fits if a < FIT_THRESHOLD]
    shown = leakage_shown(summary)
    if unfit:
        contrast += (f" In {len(unfit)} of {len(fits)} seeds a model did not fit its "
                     f"training part (the chosen weights scored {min(unfit):.3f} of their own training "
                     f"cells, below {FIT_THRESHOLD:.2f}): a model that has not learnt its training cells "
                     "profits less from having seen a person, so "
                     + ("the gap may understate the leak." if shown else
                        "a small gap says little about the leak."))
    if shown:
        return (f"Over {n} {seeds}{who} the same test cells scored {mean:.3f}{spread} higher "
                f"{metric} when the model had seen other cells of their people (a random image "
                f"split) than when it had not (a subject split): gap positive in {pos} of "
                f"{n} {seeds}{rng}.{noise}{contrast}")
    direction = "lower" if mean < 0 else "higher"
    return (f"Over {n} {seeds}{who} the test cells' {metric} was not reliably higher when the "
            f"model had seen their people than when it had not: mean gap {mean:+.3f}{spread} ({abs(mean):.3f} "
            f"{direction} on average), positive in only {pos} of {n} {seeds}{rng}. These runs do "
            f"not show that the image split overstates the score on new people.{contrast}")
