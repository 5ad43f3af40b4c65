"""Evaluation: metrics with honest uncertainty, and the JSON result record.

Everything here treats ALL (``y == 1``, leukemic blast) as the positive class, so "sensitivity"
is the share of leukemic cells found and "specificity" the share of normal cells left alone.
Point metrics come from scikit-learn. Confidence intervals come from a bootstrap that resamples
*subjects*, not cells (see :func:`metrics_from_predictions`), and every metric also exists at the
subject level (one diagnosis per person by majority vote), which is what a clinic would use.

A *record* is one model evaluated on one table of images: config, data manifest hash, metrics,
timing and every prediction, saved as JSON (:data:`RECORD_SCHEMA`) so that comparisons, ROC
curves and ensembles can be redone later without re-running the model.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from allnet_lib.labels import CLASSES
from allnet_lib.messages import option

SCHEMA_ID = "allnet.evaluation/1"
CI_LEVEL = 0.95
# metrics that get a bootstrap confidence interval
CI_METRICS = (
    "accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1",
    "weighted_f1", "roc_auc", "subject_accuracy",
)
FEW_SUBJECTS = 10  # below this many subjects a bootstrap interval is a rough guide at best
#: The rule for trusting a subject-bootstrap interval: at least this many subjects of *each*
#: class. With k people of a class, resampling them can only reshuffle k values; below 5 the
#: interval is typically degenerate (e.g. [1.00, 1.00] when every person is diagnosed right) or
#: far narrower than the true uncertainty.
MIN_SUBJECTS_PER_CLASS = 5


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def metrics_from_predictions(
    y_true, p_all, *, subjects=None, threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """All the numbers for one set of predictions, as a JSON-ready dict.

    ``y_true``: 0 = hem, 1 = ALL; ``p_all``: the model's probability of ALL; a cell is called ALL
    when ``p_all >= threshold``. With ``subjects`` (one id per cell) the result also holds a
    per-subject table and a subject-level diagnosis (majority vote of each person's cells).

    Confidence intervals (95 %, percentile) come from a *cluster* bootstrap that resamples
    whole subjects, stratified by the subject's class: cells of one person share stain, lighting
    and biology, so they are not independent draws, and resampling cells would pretend we had
    thousands of independent samples when we have a few dozen people. Without ``subjects`` each
    cell is its own cluster (and the intervals are too narrow if cells are in fact grouped).
    Undefined metrics (e.g. ROC AUC with one class) are ``None`` with the reason in ``notes``.
    """
    y, p, subj = _check_inputs(y_true, p_all, subjects, threshold)
    y_pred = (p >= threshold).astype(int)
    notes: dict[str, str] = {}
    out: dict[str, Any] = {
        "positive_class": CLASSES[1],
        "threshold": float(threshold),
        "n_images": int(y.size),
        "counts": {CLASSES[0]: int((y == 0).sum()), CLASSES[1]: int((y == 1).sum())},
        "predicted_counts": {CLASSES[0]: int((y_pred == 0).sum()), CLASSES[1]: int((y_pred == 1).sum())},
    }
    out.update(_point_metrics(y, y_pred, p, notes))
    out["confusion_matrix"] = _labelled_confusion(y, y_pred)
    if subj is not None:
        table = _per_subject(y, y_pred, p, subj)
        out["n_subjects"] = int(len(table))
        out["per_subject"] = table.to_dict(orient="records")
        out["subject_level"] = _subject_level(table)
        out["subject_accuracy"] = out["subject_level"]["accuracy"]
    else:
        out["n_subjects"] = None
        out["per_subject"] = None
        out["subject_level"] = None
        out["subject_accuracy"] = None
        notes["subject_accuracy"] = "no subject ids given"
    out["ci"] = _bootstrap_ci(y, y_pred, p, subj, n_bootstrap, seed) if n_bootstrap else None
    out["notes"] = notes
    return _jsonable(out)


def always_all_baseline(table: pd.DataFrame) -> dict:
    """The metrics of a "model" that calls every cell ALL (the majority class of C-NMC), on the
    images of ``table`` (columns ``y`` and ``subject``). Any model worth its training must beat
    this, and accuracy alone cannot show it: on two thirds ALL the baseline scores about 0.68."""
    missing = sorted({"y", "subject"} - set(table.columns))
    if missing:
        raise ValueError(f"always_all_baseline: the table lacks column(s) {missing}; pass a split "
                         "part (e.g. split.test) or a table from allnet_lib.reader")
    return metrics_from_predictions(table["y"].to_numpy(), np.ones(len(table)),
                                    subjects=table["subject"].to_numpy(), n_bootstrap=0)


def _check_inputs(y_true, p_all, subjects, threshold):
    """Arrays of the right kind, or a ValueError that says which input is wrong and how."""
    y = np.asarray(y_true)
    p = np.asarray(p_all, dtype=float)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and p_all must be 1-D (got shapes {y.shape} and {p.shape}); "
                         "for a softmax output pass its column 1, P(ALL)")
    if y.size == 0:
        raise ValueError("no predictions to evaluate (empty y_true)")
    if y.size != p.size:
        raise ValueError(f"y_true has {y.size} entries but p_all has {p.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold 0 (hem) and 1 (ALL) only, found {sorted(set(y.tolist()))[:5]}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("p_all must be probabilities in [0, 1] (NaN or out-of-range values found)")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    subj = None
    if subjects is not None:
        subj = np.asarray(subjects).astype(str)
        if subj.shape != y.shape:
            raise ValueError(f"subjects has {subj.size} entries but y_true has {y.size}")
    return y.astype(int), p, subj


def _point_metrics(y, y_pred, p, notes) -> dict:
    """scikit-learn's metrics; None (with a reason in ``notes``) where a metric is undefined."""
    has = {c: bool((y == c).any()) for c in (0, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined cases are reported in notes instead
        res = {
            "accuracy": skm.accuracy_score(y, y_pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, y_pred) if all(has.values()) else None,
            "precision": skm.precision_score(y, y_pred, pos_label=1, zero_division=np.nan),
            "sensitivity": skm.recall_score(y, y_pred, pos_label=1, zero_division=np.nan),
            "specificity": skm.recall_score(y, y_pred, pos_label=0, zero_division=np.nan),
            "f1": skm.f1_score(y, y_pred, pos_label=1, zero_division=np.nan),
            "weighted_f1": skm.f1_score(y, y_pred, labels=[0, 1], average="weighted", zero_division=0),
            "roc_auc": skm.roc_auc_score(y, p) if all(has.values()) else None,
        }
    if not all(has.values()):
        missing = CLASSES[0] if not has[0] else CLASSES[1]
        reason = f"only one class present (no {missing!r} cells)"
        notes["roc_auc"] = notes["balanced_accuracy"] = reason
    reasons = {
        "precision": "no cell was predicted ALL",
        "sensitivity": "no ALL cells in the data",
        "specificity": "no hem cells in the data",
        "f1": "no ALL cells and none predicted",
    }
    for key, reason in reasons.items():
        if res[key] is not None and math.isnan(res[key]):
            res[key] = None
            notes[key] = reason
    res["recall"] = res["sensitivity"]  # the same number under its machine-learning name
    return res


def _labelled_confusion(y, y_pred) -> dict:
    """Confusion matrix with its reading attached, so nobody has to guess the order again."""
    cm = skm.confusion_matrix(y, y_pred, labels=[0, 1])
    return {
        "classes": list(CLASSES),
        "rows": "true class",
        "columns": "predicted class",
        "matrix": cm.tolist(),
        "tn": int(cm[0, 0]), "fp": int(cm[0, 1]), "fn": int(cm[1, 0]), "tp": int(cm[1, 1]),
    }


def _per_subject(y, y_pred, p, subj) -> pd.DataFrame:
    """One row per subject: its class, cells, cell accuracy, and the majority-vote diagnosis."""
    frame = pd.DataFrame({"subject": subj, "y": y, "y_pred": y_pred, "p_all": p})
    rows = []
    for name, g in frame.groupby("subject", sort=True):
        true_all = g["y"].mean()
        share_pred_all = g["y_pred"].mean()
        mean_p = g["p_all"].mean()
        # majority vote; an exact tie is broken by the mean probability
        vote = share_pred_all > 0.5 or (share_pred_all == 0.5 and mean_p >= 0.5)
        truth = int(true_all >= 0.5)
        rows.append({
            "subject": name,
            "label": CLASSES[truth],
            "mixed_labels": bool(0 < true_all < 1),
            "n": int(len(g)),
            "accuracy": float(skm.accuracy_score(g["y"], g["y_pred"])),
            "share_predicted_all": float(share_pred_all),
            "mean_p_all": float(mean_p),
            "diagnosis": CLASSES[int(vote)],
            "correct": bool(int(vote) == truth),
        })
    return pd.DataFrame(rows)


def _subject_level(table: pd.DataFrame) -> dict:
    """Accuracy of one diagnosis per person; the unit that matters to a patient."""
    truth = table["label"].map(CLASSES.index).to_numpy()
    pred = table["diagnosis"].map(CLASSES.index).to_numpy()
    return {
        "rule": "majority vote of the subject's cells (tie: mean P(ALL) >= 0.5)",
        "n_subjects": int(len(table)),
        "accuracy": float(skm.accuracy_score(truth, pred)),
        "confusion_matrix": _labelled_confusion(truth, pred),
        "mixed_label_subjects": table.loc[table["mixed_labels"], "subject"].tolist(),
    }


# ----------------------------------------------------------------------------------------------
# cluster bootstrap
# ----------------------------------------------------------------------------------------------


def _bootstrap_ci(y, y_pred, p, subj, n_bootstrap: int, seed: int) -> dict:
    """Percentile intervals from a stratified cluster bootstrap (clusters = subjects or cells).

    Each replicate draws, within each class of clusters, as many clusters as there are, with
    replacement. Metrics of a replicate are computed from its pooled counts (a cluster drawn twice
    counts twice), vectorised over all replicates at once; the test suite checks those formulas
    against scikit-learn on the unresampled data.
    """
    by_subject = subj is not None
    cluster_ids = subj if by_subject else np.arange(y.size).astype(str)
    codes, uniques = pd.factorize(cluster_ids, sort=True)
    n_clusters = len(uniques)
    counts = _cluster_counts(codes, n_clusters, y, y_pred)
    cluster_class = (np.bincount(codes, weights=y, minlength=n_clusters)
                     / np.bincount(codes, minlength=n_clusters) >= 0.5).astype(int)
    rng = np.random.default_rng(seed)
    mult = np.zeros((n_bootstrap, n_clusters))
    for c in (0, 1):
        members = np.flatnonzero(cluster_class == c)
        if members.size:
            mult[:, members] = rng.multinomial(members.size, np.full(members.size, 1 / members.size),
                                               size=n_bootstrap)
    replicates = _count_metrics(mult @ counts)
    replicates["roc_auc"] = _weighted_auc(mult, codes, y, p)
    if by_subject:
        correct = _subject_correct(codes, n_clusters, y, y_pred, p)
        replicates["subject_accuracy"] = (mult @ correct) / mult.sum(axis=1)
    intervals, undefined = {}, {}
    for name in CI_METRICS:
        values = replicates.get(name)
        if values is None:
            intervals[name] = None
            continue
        finite = values[np.isfinite(values)]
        undefined[name] = int(values.size - finite.size)
        tail = (1 - CI_LEVEL) / 2 * 100
        intervals[name] = (np.percentile(finite, [tail, 100 - tail]).tolist() if finite.size else None)
    per_class = {CLASSES[c]: int((cluster_class == c).sum()) for c in (0, 1)}
    short = {name: n for name, n in per_class.items() if n < MIN_SUBJECTS_PER_CLASS}
    trusted = by_subject and not short
    warning = None
    if by_subject and short:
        warning = (f"only {n_clusters} subjects ({per_class['all']} ALL, {per_class['hem']} hem): "
                   f"fewer than {MIN_SUBJECTS_PER_CLASS} of a class, so these intervals are not to be "
                   "trusted (often degenerate or too narrow)")
    elif by_subject and n_clusters < FEW_SUBJECTS:
        warning = f"only {n_clusters} subjects: intervals are a rough guide"
    return {
        "method": ("stratified cluster bootstrap over subjects" if by_subject
                   else "stratified bootstrap over cells (no subject ids: assumes independent cells)"),
        "level": CI_LEVEL,
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
        "n_clusters": int(n_clusters),
        "clusters_per_class": per_class,
        "trusted": bool(trusted),
        "rule": (f"trusted when at least {MIN_SUBJECTS_PER_CLASS} subjects of each class are resampled"
                 if by_subject else "cells resampled as if independent: never trusted for grouped data"),
        "intervals": intervals,
        "undefined_replicates": undefined,
        "warning": warning,
    }


def _cluster_counts(codes, n_clusters, y, y_pred) -> np.ndarray:
    """Per cluster (tn, fp, fn, tp): all any count-based metric of a resample needs."""
    cells = np.stack([(y == 0) & (y_pred == 0), (y == 0) & (y_pred == 1),
                      (y == 1) & (y_pred == 0), (y == 1) & (y_pred == 1)], axis=1)
    return np.stack([np.bincount(codes, weights=cells[:, k], minlength=n_clusters)
                     for k in range(4)], axis=1)


def _count_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Count-based metrics for many (tn, fp, fn, tp) rows at once; NaN where undefined."""
    tn, fp, fn, tp = (counts[..., k].astype(float) for k in range(4))
    n = tn + fp + fn + tp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        f1_all = 2 * tp / (2 * tp + fp + fn)
        f1_hem = 2 * tn / (2 * tn + fp + fn)
        weighted = (np.nan_to_num(f1_all) * (tp + fn) + np.nan_to_num(f1_hem) * (tn + fp)) / n
        return {
            "accuracy": (tp + tn) / n,
            "balanced_accuracy": (sens + spec) / 2,
            "sensitivity": sens,
            "specificity": spec,
            "precision": tp / (tp + fp),
            "f1": f1_all,
            "weighted_f1": weighted,
        }


def _weighted_auc(mult, codes, y, p) -> np.ndarray:
    """ROC AUC of every replicate: the weighted Mann-Whitney statistic (ties count one half),
    which is what ``roc_auc_score(..., sample_weight=...)`` computes, for all replicates at once."""
    from scipy import sparse  # a dependency of scikit-learn

    bins, bin_index = np.unique(p, return_inverse=True)
    shape = (mult.shape[1], bins.size)
    weights = []
    for c in (0, 1):
        keep = y == c
        indicator = sparse.csr_matrix((np.ones(keep.sum()), (codes[keep], bin_index[keep])), shape=shape)
        weights.append(np.asarray((indicator.T @ mult.T).T))  # (replicates, score bins)
    w_neg, w_pos = weights
    below = np.cumsum(w_neg, axis=1) - w_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w_pos * (below + 0.5 * w_neg)).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def _subject_correct(codes, n_clusters, y, y_pred, p) -> np.ndarray:
    """1.0 where a subject's majority-vote diagnosis is right (same rule as the per-subject table)."""
    size = np.bincount(codes, minlength=n_clusters)
    share = np.bincount(codes, weights=y_pred, minlength=n_clusters) / size
    mean_p = np.bincount(codes, weights=p, minlength=n_clusters) / size
    vote = (share > 0.5) | ((share == 0.5) & (mean_p >= 0.5))
    truth = np.bincount(codes, weights=y, minlength=n_clusters) / size >= 0.5
    return (vote == truth).astype(float)


def format_metrics(metrics_or_record: dict) -> str:
    """A few readable lines (value and 95 % CI) for the terminal and the book."""
    m = metrics_or_record.get("metrics", metrics_or_record)
    intervals = (m.get("ci") or {}).get("intervals", {})
    lines = [f"{m['n_images']} images ({m['counts']['all']} ALL, {m['counts']['hem']} hem)"
             + (f", {m['n_subjects']} subjects" if m.get("n_subjects") else "")]
    names = [("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
             ("sensitivity", "sensitivity (ALL recall)"), ("specificity", "specificity"),
             ("precision", "precision (ALL)"), ("weighted_f1", "weighted F1"),
             ("roc_auc", "ROC AUC"), ("subject_accuracy", "subject-level accuracy")]
    for key, label in names:
        value = m.get(key)
        text = "n/a" + (f" ({m['notes'][key]})" if key in m.get("notes", {}) else "") if value is None \
            else f"{value:.3f}"
        ci = intervals.get(key)
        if value is not None and ci:
            text += f"  [{ci[0]:.3f}, {ci[1]:.3f}]"
        lines.append(f"  {label:<26} {text}")
    cm = m["confusion_matrix"]
    lines.append("  confusion matrix (rows true, columns predicted; hem, all):")
    lines.extend(f"    {CLASSES[i]:>4} {row}" for i, row in enumerate(cm["matrix"]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# evaluating a model
# ----------------------------------------------------------------------------------------------


def predict_p_all(model, table: pd.DataFrame, *, image_size: int, crop: int = 400, batch_size: int = 64,
                  chunk_size: int = 512, progress: bool = True) -> np.ndarray:
    """P(ALL) for every row of ``table``; reads images in chunks so memory stays bounded."""
    from tqdm.auto import tqdm

    from allnet_lib import pipeline

    parts = []
    starts = range(0, len(table), chunk_size)
    for start in tqdm(starts, desc="predicting", unit="chunk", disable=not progress or len(starts) < 2):
        x, _ = pipeline.load_arrays(table.iloc[start:start + chunk_size], image_size=image_size,
                                    crop=crop, progress=False)
        out = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
        parts.append(_p_all_column(out))
    return np.concatenate(parts)


def _p_all_column(out: np.ndarray) -> np.ndarray:
    """Column 1 of a softmax output (P(ALL)); a single sigmoid column is taken as it is."""
    if out.ndim == 2 and out.shape[1] == 2:
        return out[:, 1].astype(float)
    if out.ndim == 2 and out.shape[1] == 1:
        return out[:, 0].astype(float)
    raise ValueError(f"model output has shape {out.shape}; expected (n, 2) softmax or (n, 1) sigmoid")


def evaluate_model(
    model, table: pd.DataFrame, *, image_size: int, crop: int = 400, batch_size: int = 64, name=None,
    config=None, split_name=None, manifest_hash=None, threshold: float = 0.5, n_bootstrap: int = 1000,
    seed: int = 0, progress: bool = True,
) -> dict:
    """Run ``model`` on every image of ``table`` and return the result record (see RECORD_SCHEMA).

    The record keeps every prediction, so ROC curves, other thresholds and ensembles can be
    computed later from the JSON alone; ``manifest_hash`` (computed from ``table`` when not given)
    ties it to exactly these images.
    """
    _check_table(table)
    if manifest_hash is None:
        from allnet_lib.split import manifest_hash as _hash

        manifest_hash = _hash(table)
    start = time.perf_counter()
    p_all = predict_p_all(model, table, image_size=image_size, crop=crop, batch_size=batch_size,
                          progress=progress)
    seconds = time.perf_counter() - start
    return record_from_predictions(
        name or getattr(model, "name", "model"), table[["filename", "subject", "y"]], p_all,
        config=config, seconds=seconds, image_size=image_size, crop=crop, split_name=split_name,
        manifest_hash=manifest_hash, threshold=threshold, n_bootstrap=n_bootstrap, seed=seed)


def _check_table(table) -> None:
    """The columns evaluation needs, with labels present (final-test images have none)."""
    missing = {"path", "filename", "y", "subject"} - set(table.columns)
    if missing:
        raise ValueError(f"table lacks columns {sorted(missing)}; build it with reader.index_dataset")
    if len(table) == 0:
        raise ValueError("the table to evaluate on is empty (is the test part of the split empty?)")
    if table["y"].isna().any():
        raise ValueError(f"{int(table['y'].isna().sum())} rows have no label (y); unlabelled images "
                         "(e.g. the C-NMC final test) cannot be evaluated: filter them out first")


def predictions_frame(record: dict) -> pd.DataFrame:
    """The record's per-image predictions as a DataFrame (filename, subject, y, p_all)."""
    return pd.DataFrame(record["predictions"])


def _versions() -> dict:
    """Library versions, so a record says what produced it (Keras only if already loaded: a
    stand-in model should not pay for importing a deep-learning framework)."""
    import sys

    import allnet_lib

    out = {"allnet": allnet_lib.__version__, "python": platform.python_version()}
    keras = sys.modules.get("keras")
    if keras is not None:
        out["keras"] = getattr(keras, "__version__", "?")
        try:
            out["keras_backend"] = keras.backend.backend()
        except Exception:  # noqa: BLE001 - versions are informative only
            pass
    return out


# ----------------------------------------------------------------------------------------------
# the record on disk
# ----------------------------------------------------------------------------------------------

_NUM = ["number", "null"]
_CI_PROPS = {key: {"type": ["array", "null"], "items": {"type": "number"}} for key in CI_METRICS}

RECORD_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "allnet evaluation record",
    "description": (
        "One model evaluated on one set of labelled cell images. Classes are ('hem', 'all'); "
        "y = 1 means ALL, the positive class. Metrics are fractions in [0, 1]; null means "
        "undefined for these data, with the reason in metrics.notes. Confidence intervals are "
        "95 % percentile intervals of a bootstrap that resamples subjects."
    ),
    "type": "object",
    "required": ["schema", "name", "created", "manifest_hash", "config", "n_images", "seconds",
                 "metrics", "predictions"],
    "properties": {
        "schema": {"type": "string", "enum": [SCHEMA_ID], "description": "record format and version"},
        "name": {"type": "string", "description": "model name (as in models.list_models())"},
        "created": {"type": "string", "description": "UTC time of the evaluation, ISO 8601"},
        "split": {"type": ["string", "null"], "description": "name of the split evaluated on"},
        "manifest_hash": {"type": "string", "description": "split.manifest_hash of the evaluated images"},
        "config": {"type": "object", "description": "training/evaluation configuration (profile, seed, ...)"},
        "image_size": {"type": "integer", "minimum": 1},
        "crop": {"type": ["integer", "null"]},
        "n_images": {"type": "integer", "minimum": 1},
        "seconds": {"type": "number", "minimum": 0, "description": "wall time of the predictions"},
        "images_per_second": {"type": _NUM},
        "training": {"type": "object", "description": "training time and throughput, when known"},
        "metrics": {
            "type": "object",
            "required": ["n_images", "counts", "accuracy", "sensitivity", "specificity",
                         "weighted_f1", "roc_auc", "confusion_matrix", "notes"],
            "properties": {
                "n_images": {"type": "integer"},
                "counts": {"type": "object", "required": list(CLASSES)},
                "accuracy": {"type": "number", "minimum": 0, "maximum": 1},
                "balanced_accuracy": {"type": _NUM},
                "precision": {"type": _NUM, "description": "ALL positive"},
                "sensitivity": {"type": _NUM, "description": "recall of ALL"},
                "recall": {"type": _NUM, "description": "same as sensitivity"},
                "specificity": {"type": _NUM, "description": "recall of hem"},
                "f1": {"type": _NUM, "description": "F1 of ALL"},
                "weighted_f1": {"type": "number", "description": "the C-NMC challenge metric"},
                "roc_auc": {"type": _NUM},
                "subject_accuracy": {"type": _NUM, "description": "majority vote per subject"},
                "confusion_matrix": {
                    "type": "object",
                    "required": ["classes", "matrix"],
                    "properties": {
                        "classes": {"type": "array", "items": {"type": "string"}},
                        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                    },
                    "description": "rows true class, columns predicted, order ('hem', 'all')",
                },
                "per_subject": {"type": ["array", "null"], "items": {"type": "object"}},
                "subject_level": {"type": ["object", "null"]},
                "ci": {
                    "type": ["object", "null"],
                    "properties": {"intervals": {"type": "object", "properties": _CI_PROPS}},
                },
                "notes": {"type": "object", "description": "metric -> why it is undefined"},
            },
        },
        "predictions": {
            "type": "object",
            "required": ["filename", "subject", "y", "p_all"],
            "properties": {
                "filename": {"type": "array", "items": {"type": "string"}},
                "subject": {"type": "array", "items": {"type": "string"}},
                "y": {"type": "array", "items": {"type": "integer"}},
                "p_all": {"type": "array", "items": {"type": "number"}},
            },
            "description": "one entry per image, columns of equal length",
        },
        "versions": {"type": "object"},
    },
}


class RecordError(ValueError):
    """A result record that does not follow RECORD_SCHEMA."""


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate_record(record: dict) -> None:
    """Check ``record`` against RECORD_SCHEMA (types, required keys, enums, bounds).

    A small interpreter of the JSON-Schema keywords the schema uses, so no extra dependency is
    needed; raises RecordError listing every problem with its location.
    """
    problems: list[str] = []
    _validate(record, RECORD_SCHEMA, "record", problems)
    if not problems:
        lengths = {k: len(v) for k, v in record["predictions"].items() if isinstance(v, list)}
        if len(set(lengths.values())) > 1:
            problems.append(f"record.predictions: columns differ in length {lengths}")
        elif lengths and next(iter(lengths.values())) != record["n_images"]:
            problems.append("record.predictions: length differs from n_images")
    if problems:
        raise RecordError("invalid result record:\n  " + "\n  ".join(problems[:20]))


def _validate(value, schema: dict, where: str, problems: list[str]) -> None:
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_TYPES[k](value) for k in kinds):
            problems.append(f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__}")
            return
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, dict):
        problems.extend(f"{where}: missing key {key!r}"
                        for key in schema.get("required", ()) if key not in value)
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _validate(value[key], sub, f"{where}.{key}", problems)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            before = len(problems)
            _validate(item, schema["items"], f"{where}[{i}]", problems)
            if len(problems) > before:
                break  # one bad item per list is enough to report


def _jsonable(value):
    """Plain JSON types: NumPy scalars to Python, tuples to lists, NaN/inf to None, paths to str."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _canonical(record: dict) -> str:
    return json.dumps(_jsonable(record), sort_keys=True)


def save_record(record: dict, path, *, overwrite: bool = False) -> Path:
    """Write ``record`` as JSON, atomically (temporary sibling, then rename).

    An existing file with the same content is left alone; a *different* record is never replaced
    unless ``overwrite=True``, because it may be the only copy of hours of training.
    """
    record = _jsonable(record)
    validate_record(record)
    path = Path(path)
    if path.exists() and not overwrite:
        try:
            same = _canonical(json.loads(path.read_text())) == _canonical(record)
        except (OSError, ValueError):
            same = False
        if same:
            return path
        raise FileExistsError(
            f"{path} already holds a different result record; pass {option('overwrite')} "
            "to replace it, or write to another path"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_record(path) -> dict:
    """Read and validate a record; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no result record at {path} "
                                "(evaluate a run first: allnet evaluate --run DIR)")
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise RecordError(f"{path} is not valid JSON ({error}); delete it and evaluate again") from error
    try:
        validate_record(record)
    except RecordError as error:
        raise RecordError(f"{path}: {error}") from None
    return record


def record_from_predictions(name: str, predictions: pd.DataFrame, p_all, *, config: dict | None = None,
                            seconds: float = 0.0, image_size: int | None = None,
                            crop: int | None = None, split_name: str | None = None,
                            manifest_hash: str | None = None, threshold: float = 0.5,
                            n_bootstrap: int = 1000, seed: int = 0, extra: dict | None = None,
                            versions: dict | None = None) -> dict:
    """A result record (RECORD_SCHEMA) for predictions that did not come from one model.

    ``predictions``: one row per image with ``filename``, ``subject``, ``y`` (as in a record's
    ``predictions``); ``p_all``: the combined P(ALL). ``extra`` keys are added to the record
    (e.g. ``"ensemble"``, ``"tta"``, ``"training"``); ``versions`` defaults to this library's.
    """
    p = np.asarray(p_all, dtype=float)
    y = predictions["y"].astype(int).to_numpy()
    subjects = predictions["subject"].astype(str).to_numpy()
    metrics = metrics_from_predictions(y, p, subjects=subjects, threshold=threshold,
                                       n_bootstrap=n_bootstrap, seed=seed)
    record = {
        "schema": SCHEMA_ID,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "split": split_name,
        "manifest_hash": manifest_hash or "",
        "config": config or {},
        "crop": crop,
        "n_images": int(len(predictions)),
        "seconds": float(seconds),
        "images_per_second": len(predictions) / seconds if seconds > 0 else None,
        "metrics": metrics,
        "predictions": {
            "filename": predictions["filename"].astype(str).tolist(),
            "subject": subjects.tolist(),
            "y": y.tolist(),
            "p_all": p.tolist(),
        },
        "versions": _versions() if versions is None else dict(versions),
    }
    if image_size is not None:
        record["image_size"] = int(image_size)
    record.update(extra or {})
    record = _jsonable(record)
    validate_record(record)
    return record
