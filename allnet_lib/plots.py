"""The one place for plot style and the book's standard figures.

Why one module: every chapter shows the same classes and models, so the same colour must mean
the same thing everywhere (``CLASS_COLORS``, ``MODEL_COLORS``), and a style change should reach
every figure at once. Functions return matplotlib ``Figure`` or ``Axes`` objects and never call
``plt.show()``: notebooks display the returned figure, the CLI saves it.

Inputs follow the library's conventions: classes ``("hem", "all")`` with ALL positive, result
records from :mod:`allnet_lib.evaluate`, histories as written by :mod:`allnet_lib.train`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from allnet_lib import catalogue
from allnet_lib.labels import CLASSES

CLASS_COLORS = {"hem": "#2a9d8f", "all": "#c8553d"}  # normal: teal, leukemic: brick red
CLASS_NAMES = {"hem": "hem (normal)", "all": "ALL (leukemic)"}
MODEL_COLORS = catalogue.model_colors()  # each model's colour lives in its catalogue entry
EXTRA_COLORS = ("#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
REFERENCE_COLOR = "#222222"  # markers for the 2019 report's numbers
METRIC_LABELS = {
    "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "sensitivity": "sensitivity",
    "specificity": "specificity", "precision": "precision", "weighted_f1": "weighted F1",
    "roc_auc": "ROC AUC", "subject_accuracy": "subject-level accuracy",
}


def use_style() -> None:
    """Seaborn's white grid, readable sizes and the class palette; call once per session."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid",
                  palette=list(MODEL_COLORS.values()) + list(EXTRA_COLORS))
    matplotlib.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
        "axes.titlesize": 12, "axes.titleweight": "bold", "axes.labelsize": 11,
        "legend.frameon": False, "image.cmap": "viridis",
    })


def model_color(name: str) -> str:
    """The model's colour; unknown names get a stable colour from the spare palette."""
    if name in catalogue.CATALOGUE:
        return catalogue.CATALOGUE[name].color
    return EXTRA_COLORS[sum(map(ord, str(name))) % len(EXTRA_COLORS)]


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------


def show_images(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, ncols: int = 6,
                *, size: float = 2.0, suptitle: str | None = None, title_colors=None):
    """A grid of images (uint8 RGB, or float in [0, 1]) with optional titles; returns the Figure.

    Only as many axes as images are kept, so ``len(fig.axes) == len(images)``.
    """
    images = list(images)
    if not images:
        raise ValueError("show_images: no images to show")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"show_images: {len(images)} images but {len(titles)} titles")
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(images):
            fig.delaxes(ax)
            continue
        ax.imshow(images[i], cmap="gray" if np.ndim(images[i]) == 2 else None)
        ax.set_axis_off()
        if titles is not None:
            style = {"color": title_colors[i]} if title_colors is not None else {}
            ax.set_title(str(titles[i]), fontsize=9, **style)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def cell_gallery(table: pd.DataFrame, by: str = "label", n: int = 6, *, max_rows: int = 6,
                 seed: int = 0, size: float = 1.8):
    """Example cells, one row per class (``by="label"``) or per subject (``by="subject"``).

    Rows by subject make the point of the leakage chapter visible: cells of one person look
    alike (stain, lighting, size), so a model can learn the person instead of the cell type.
    Images are read with :func:`allnet_lib.imageio.read_image`; the sample is seeded.
    """
    from allnet_lib.imageio import read_image

    if by not in ("label", "subject"):
        raise ValueError(f"cell_gallery: by must be 'label' or 'subject', got {by!r}")
    if table is None or len(table) == 0:
        raise ValueError("cell_gallery: the table is empty; index a dataset first (reader.index_dataset)")
    rng = np.random.default_rng(seed)
    groups = _gallery_groups(table, by, max_rows)
    nrows = len(groups)
    fig, axes = plt.subplots(nrows, n, figsize=(size * n, size * nrows + 0.2), squeeze=False)
    for row, (key, rows) in enumerate(groups):
        pick = rows.iloc[np.sort(rng.choice(len(rows), size=min(n, len(rows)), replace=False))]
        label = str(rows["label"].iloc[0])
        for col in range(n):
            ax = axes[row, col]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(pick):
                ax.imshow(read_image(pick["path"].iloc[col], warn=False))
            if col == 0:
                text = CLASS_NAMES.get(key, key) if by == "label" else f"{key}\n{label}"
                ax.set_ylabel(text, color=CLASS_COLORS.get(label), fontsize=10)
    fig.suptitle("cells by class" if by == "label" else "cells by subject (one person per row)")
    fig.tight_layout()
    return fig


def _gallery_groups(table: pd.DataFrame, by: str, max_rows: int) -> list[tuple[str, pd.DataFrame]]:
    """Row groups in a stable order: classes as in CLASSES, subjects alternating by class."""
    if by == "label":
        return [(c, table[table["label"] == c]) for c in CLASSES if (table["label"] == c).any()]
    by_class = {c: sorted(table.loc[table["label"] == c, "subject"].astype(str).unique()) for c in CLASSES}
    order = [s for pair in _zip_longest(by_class["all"], by_class["hem"]) for s in pair if s]
    subjects = table["subject"].astype(str)
    return [(s, table[subjects == s]) for s in order[:max_rows]]


def _zip_longest(a, b):
    from itertools import zip_longest

    return zip_longest(a, b)


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------


def _confusion_counts(source) -> np.ndarray:
    """A 2x2 array (rows true, columns predicted, order hem, all) from an array, metrics or record."""
    if isinstance(source, Mapping):
        source = source.get("metrics", source)
        if "confusion_matrix" not in source:
            raise ValueError("plot_confusion: the dict has no 'confusion_matrix' (pass a record or metrics)")
        cm = source["confusion_matrix"]
        source = cm["matrix"] if isinstance(cm, Mapping) else cm
    cm = np.asarray(source, dtype=float)
    if cm.shape != (2, 2):
        raise ValueError(f"plot_confusion: expected a 2x2 matrix (order hem, all), got shape {cm.shape}")
    return cm


def panel_grid(n: int, *, ncols: int = 3, panel: tuple[float, float] = (4.2, 3.6)):
    """A figure of ``n`` panels, at most ``ncols`` per row, and its axes (a flat list of ``n``).

    Five panels in one row shrink to unreadable strips on a book page; rows of three stay legible."""
    if n < 1:
        raise ValueError(f"panel_grid: need at least one panel, got {n}")
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False)
    axes = list(axes.flat)
    for extra in axes[n:]:
        fig.delaxes(extra)
    return fig, axes[:n]


def plot_confusions(records, *, ncols: int = 3, normalize: str | None = None):
    """One confusion matrix per record (a list or a {name: record} dict), in rows of ``ncols``."""
    by_name = _records_by_name(records)
    if not by_name:
        raise ValueError("plot_confusions: no records to plot")
    fig, axes = panel_grid(len(by_name), ncols=ncols)
    for ax, (name, record) in zip(axes, by_name.items()):
        plot_confusion(record, ax=ax, normalize=normalize, title=name)
    fig.tight_layout()
    return fig


def plot_confusion(cm_or_record, ax=None, normalize: str | None = None, *, title: str | None = None):
    """Heatmap of a confusion matrix in the library's order (rows true, columns predicted; hem, all).

    ``normalize``: None (counts), ``"true"`` (rows sum to 1: per-class recall on the diagonal),
    ``"pred"`` (columns sum to 1: precision) or ``"all"``. Cells show the count and, in brackets,
    its share of the true class (the row).
    """
    import seaborn as sns

    counts = _confusion_counts(cm_or_record)
    sums = {None: None, "true": counts.sum(axis=1, keepdims=True), "pred": counts.sum(axis=0, keepdims=True),
            "all": counts.sum()}
    if normalize not in sums:
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        shown = counts if normalize is None else np.nan_to_num(counts / sums[normalize])
    share = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    labels = [[f"{int(counts[i, j])}\n({share[i, j]:.0%})" for j in range(2)] for i in range(2)]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.6))
    sns.heatmap(shown, annot=np.array(labels), fmt="", cmap="Blues", cbar=False, ax=ax,
                vmin=0, vmax=1 if normalize else None, linewidths=1, linecolor="white")
    names = [CLASS_NAMES[c] for c in CLASSES]
    ax.set_xticklabels(names)
    ax.set_yticklabels(names, rotation=0)
    ax.set_xlabel("predicted class  (%: share of the true class)")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix" + (f" (normalised by {normalize})" if normalize else ""))
    return ax


def _records_by_name(records) -> dict[str, dict]:
    """Accept one record, a list of records or a name -> record mapping."""
    if isinstance(records, Mapping) and "metrics" in records:
        records = [records]
    if isinstance(records, Mapping):
        return dict(records)
    out = {}
    for rec in records:
        name = rec.get("name", f"model {len(out) + 1}")
        key, k = name, 2
        while key in out:  # same model twice (e.g. two splits): keep both
            key, k = f"{name} ({rec.get('split') or k})", k + 1
        out[key] = rec
    return out


def plot_roc(records, ax=None, *, title: str = "ROC curves (ALL positive)"):
    """ROC curve of every record (from its stored predictions), AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
    for name, rec in _records_by_name(records).items():
        pred = rec["predictions"]
        y, p = np.asarray(pred["y"]), np.asarray(pred["p_all"])
        if len(np.unique(y)) < 2:
            continue  # no curve without both classes
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color=model_color(rec.get("name", name)), lw=2,
                label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=9)
    return ax


def _history_columns(history: pd.DataFrame) -> dict[str, tuple[str, str | None]]:
    """metric -> (train column, validation column or None), for loss and the accuracy metric."""
    cols = list(history.columns)
    acc = next((c for c in cols if not c.startswith("val_") and c.endswith(("accuracy", "acc"))), None)
    out = {}
    for metric, train_col in (("loss", "loss" if "loss" in cols else None), ("accuracy", acc)):
        if train_col is not None:
            out[metric] = (train_col, f"val_{train_col}" if f"val_{train_col}" in cols else None)
    return out


def plot_history(history, *, title: str | None = None):
    """Loss and accuracy per epoch, training (solid) vs validation (dashed); one colour per model.

    ``history``: a DataFrame (a Keras history / ``history.csv``) or a dict name -> DataFrame.
    Returns a Figure with one axis per metric found (loss, accuracy).
    """
    histories = {"model": history} if isinstance(history, pd.DataFrame) else dict(history)
    if not histories:
        raise ValueError("plot_history: no histories given")
    metrics = {}
    for frame in histories.values():
        for metric, cols in _history_columns(pd.DataFrame(frame)).items():
            metrics.setdefault(metric, cols)
    if not metrics:
        raise ValueError("plot_history: no 'loss' or '*accuracy' column found in the history")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for name, frame in histories.items():
            frame = pd.DataFrame(frame)
            cols = _history_columns(frame).get(metric)
            if not cols:
                continue
            x = frame["epoch"] + 1 if "epoch" in frame else np.arange(1, len(frame) + 1)
            color = model_color(name)
            prefix = "" if len(histories) == 1 else f"{name} "
            ax.plot(x, frame[cols[0]], color=color, marker="o", ms=3, label=f"{prefix}train")
            if cols[1]:
                ax.plot(x, frame[cols[1]], color=color, ls="--", marker="s", ms=4, mfc="white",
                        label=f"{prefix}validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _results_frame(records_or_table) -> pd.DataFrame:
    if isinstance(records_or_table, pd.DataFrame):
        return records_or_table
    from allnet_lib.compare import results_table

    return results_table(records_or_table)


def plot_results(records_or_table, metrics: Sequence[str] = ("accuracy", "weighted_f1", "roc_auc"),
                 *, title: str | None = None):
    """One panel per metric, one bar per model with its 95 % CI; on the accuracy panel a black
    marker shows the 2019 report's Table 2 number (a random image split, so not comparable 1:1).

    Accepts records (list or dict) or :func:`allnet_lib.compare.results_table`'s DataFrame.
    """
    from allnet_lib.compare import REFERENCE_COLUMN

    table = _results_frame(records_or_table)
    if table.empty:
        raise ValueError("plot_results: no results to plot")
    fig, axes = panel_grid(len(metrics), panel=(max(4.0, 0.9 * len(table) + 1.5), 3.8))
    x = np.arange(len(table))
    for ax, metric in zip(axes, metrics):
        values = pd.to_numeric(table[metric], errors="coerce").to_numpy(dtype=float)
        low = pd.to_numeric(table.get(f"{metric}_ci_low"), errors="coerce")
        high = pd.to_numeric(table.get(f"{metric}_ci_high"), errors="coerce")
        yerr = None
        if low is not None and high is not None:
            yerr = np.vstack([values - low.to_numpy(float), high.to_numpy(float) - values])
            yerr = np.nan_to_num(np.clip(yerr, 0, None))
        colors = [model_color(m) for m in table["model"]]
        ax.bar(x, np.nan_to_num(values), yerr=yerr, color=colors, capsize=4, width=0.7)
        if metric == "accuracy" and REFERENCE_COLUMN in table:
            ref = pd.to_numeric(table[REFERENCE_COLUMN], errors="coerce").to_numpy(float)
            has = np.isfinite(ref)
            if has.any():
                ax.scatter(x[has], ref[has], marker="D", color=REFERENCE_COLOR, zorder=3,
                           label="2019 report (random image split)")
                ax.legend(fontsize=8, loc="upper center", ncol=1)
        ax.set_xticks(x, table["model"], rotation=30, ha="right")
        _unit_axis(ax)
        ax.set_title(METRIC_LABELS.get(metric, metric))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_leakage(result: dict, metric: str = "accuracy", *, ax=None):
    """The leakage experiment in one chart: the same test cells scored by models that had seen
    other cells of their people (a random image split) and by models that had not (a subject
    split), with 95 % subject-bootstrap intervals. The difference is the optimism a random split buys.
    """
    from allnet_lib.compare import EVALUATED_ON, leakage_table

    table = leakage_table(result).set_index("evaluated_on").reindex(list(EVALUATED_ON.values()))
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 4.0))
    labels = ["people seen in training\n(random image split)", "people never seen\n(subject split)"]
    values = table[metric].to_numpy(float)
    err = np.vstack([values - table[f"{metric}_ci_low"].to_numpy(float),
                     table[f"{metric}_ci_high"].to_numpy(float) - values])
    bars = ax.bar(np.arange(2), np.nan_to_num(values), 0.6, yerr=np.nan_to_num(np.clip(err, 0, None)),
                  capsize=4, color=["#9aa9c9", "#34495e"], hatch=["", "//"], edgecolor="white")
    ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "n/a" for v in values],
                 padding=2, fontsize=8, label_type="center", color="white")
    ax.set_xticks(np.arange(2), labels)
    _unit_axis(ax)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    gap = result.get("optimism_gap", {}).get(metric)
    gap_text = f"; optimism of the image split: {gap:+.3f}" if gap is not None else ""
    n = table["n_images"].iloc[0]
    ax.set_title(f"{result.get('model', '')}, seed {result.get('seed', '?')}: the same {n:.0f} test "
                 f"cells{gap_text}", fontsize=10)
    return ax


def _unit_axis(ax) -> None:
    """A [0, 1] score axis with headroom above 1 for the legend, so it never hides a bar."""
    ax.set_ylim(0, 1.16)
    ax.set_yticks(np.linspace(0, 1, 6))
