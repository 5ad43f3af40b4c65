"""A classifier's scorecard from scratch: confusion counts and the metrics built on them.

ALL (``y == 1``) is the positive class, as everywhere in allnet. On C-NMC about two images in
three are ALL, so a "model" that always answers "all" is right 68% of the time while finding
no normal cell at all: accuracy flatters. Balanced accuracy and the weighted F1 score (the
challenge's metric) do not.
"""

from __future__ import annotations

import numpy as np

#: Images per class in the three C-NMC 2019 training folds (shared/notes/cnmc-facts.md).
CNMC_TRAIN_COUNTS = {"all": 7272, "hem": 3389}


def majority_share(counts=CNMC_TRAIN_COUNTS) -> float:
    """Accuracy of always answering the largest class: 7272 / 10661 = 0.682 on C-NMC."""
    return max(counts.values()) / sum(counts.values())


def confusion_counts(y_true, y_pred) -> dict[str, int]:
    """True/false positives/negatives with ALL (1) as positive: {'tp', 'fn', 'fp', 'tn'}."""
    t = np.asarray(y_true).astype(int)
    p = np.asarray(y_pred).astype(int)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    return {
        "tp": int(((t == 1) & (p == 1)).sum()),
        "fn": int(((t == 1) & (p == 0)).sum()),
        "fp": int(((t == 0) & (p == 1)).sum()),
        "tn": int(((t == 0) & (p == 0)).sum()),
    }


def _div(a, b) -> float:
    return float(a / b) if b else 0.0


def scores(y_true, y_pred) -> dict[str, float]:
    """accuracy, sensitivity (recall of ALL), specificity (recall of hem), balanced accuracy,
    precision (of ALL), F1 (of ALL) and weighted F1 (per-class F1 weighted by class size)."""
    c = confusion_counts(y_true, y_pred)
    n = sum(c.values())
    sens = _div(c["tp"], c["tp"] + c["fn"])
    spec = _div(c["tn"], c["tn"] + c["fp"])
    prec_all = _div(c["tp"], c["tp"] + c["fp"])
    prec_hem = _div(c["tn"], c["tn"] + c["fn"])
    f1_all = _div(2 * prec_all * sens, prec_all + sens)
    f1_hem = _div(2 * prec_hem * spec, prec_hem + spec)
    n_all, n_hem = c["tp"] + c["fn"], c["tn"] + c["fp"]
    return {
        "accuracy": _div(c["tp"] + c["tn"], n),
        "sensitivity": sens,
        "specificity": spec,
        "balanced_accuracy": (sens + spec) / 2,
        "precision": prec_all,
        "f1": f1_all,
        "weighted_f1": _div(n_all * f1_all + n_hem * f1_hem, n),
    }


def balanced_class_weight(y) -> dict[int, float]:
    """{class: n / (2 n_class)}: each class weighs half of the loss (scikit-learn's "balanced",
    and what part 2's ``train`` passes to Keras as ``class_weight`` when a profile asks for it)."""
    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2)
    return {k: float(len(y) / (2 * counts[k])) for k in (0, 1) if counts[k] > 0}


def threshold_table(y_true, p_all, thresholds):
    """Scores of the rule "ALL if P(ALL) >= t" for each threshold t: a DataFrame, one row per t.

    Lowering t finds more ALL cells (sensitivity up) and fewer normal ones (specificity down);
    the ROC curve of part 2 is this table for every possible t.
    """
    import pandas as pd

    p_all = np.asarray(p_all, dtype=float)
    rows = [{"threshold": float(t), **scores(y_true, (p_all >= t).astype(int))} for t in thresholds]
    cols = ["threshold", "accuracy", "sensitivity", "specificity", "balanced_accuracy", "weighted_f1"]
    return pd.DataFrame(rows)[cols].set_index("threshold")
