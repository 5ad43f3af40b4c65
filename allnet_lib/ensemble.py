"""The 2019 report's future work, done: ensembles of trained models and test-time augmentation.

Two ways to get more out of models that are already trained, without training anything again:

* **Soft voting** (:func:`ensemble_from_records`): average the members' P(ALL) for every cell
  and call the cell ALL when the average is at least 0.5. The members' result records
  (``record.json`` of each run, from :func:`allnet_lib.evaluate.evaluate_model`) already hold
  every test prediction, so an ensemble of saved runs costs no model evaluation at all.
  ``rule="hard"`` gives majority voting of the members' decisions instead, for comparison.
  :func:`ensemble_from_models` runs saved models first when there are no records.
* **Test-time augmentation** (:func:`tta_evaluate`): show a model every cell in the 8 poses of
  the square's symmetry group (identity, three rotations by 90 degrees, and the mirror image of
  each) and average its 8 answers. A segmented cell has no "up", so these poses are equally
  valid pictures of the same cell; the training augmentation (random flips and 90-degree turns,
  :mod:`allnet_lib.augment`) drew from exactly these poses.

Both return ordinary result records (:data:`allnet_lib.evaluate.RECORD_SCHEMA`), with the
cluster-bootstrap intervals of :func:`allnet_lib.evaluate.metrics_from_predictions`, so they sit
in the same comparison tables and plots as the single models. Ensemble weights, if used, must
come from validation data: weights tuned on the test records make the test score optimistic,
which is the mistake of picking the best epoch on the test set all over again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from allnet_lib import evaluate

__all__ = [
    "D4_TRANSFORMS",
    "d4_transform",
    "soft_vote",
    "hard_vote",
    "align_records",
    "ensemble_from_records",
    "ensemble_from_models",
    "tta_predict",
    "tta_evaluate",
    "load_model",
    "record_from_predictions",
    "paired_difference",
]

#: The 8 poses of a square (the dihedral group D4), named as in ``allnet_lib.augment.ORIENTATIONS``:
#: quarter turns counter-clockwise, the two mirror images and the two diagonal reflections.
D4_TRANSFORMS: tuple[str, ...] = (
    "identity", "rot90", "rot180", "rot270", "flip_lr", "flip_tb", "transpose", "antitranspose",
)


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
# the record of combined predictions: evaluate.record_from_predictions (one builder for every
# record that did not come from one Keras model: ensembles, TTA, the classical baseline)
record_from_predictions = evaluate.record_from_predictions


def _as_records(records) -> dict[str, dict]:
    """name -> record from a mapping, a list of records or a list of record paths."""
    if isinstance(records, Mapping) and "predictions" in records:
        raise TypeError("ensemble needs several records; got a single record")
    items = records.items() if isinstance(records, Mapping) else enumerate(records)
    out: dict[str, dict] = {}
    for key, rec in items:
        if isinstance(rec, (str, Path)):
            rec = evaluate.load_record(rec)
        name = str(key) if isinstance(records, Mapping) else str(rec.get("name", f"model{key}"))
        base, k = name, 2
        while name in out:
            name, k = f"{base}#{k}", k + 1
        out[name] = rec
    if len(out) < 2:
        raise ValueError(f"an ensemble needs at least 2 member records, got {len(out)}")
    return out


def align_records(records) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Line the members' predictions up image by image.

    Returns ``(images, p)``: ``images`` has ``filename, subject, y`` in the first record's order,
    ``p`` one column of P(ALL) per member. The records must cover the same images (same
    ``manifest_hash`` when they carry one, and the same file names with the same labels);
    otherwise a ValueError says which member differs and how.
    """
    recs = _as_records(records)
    names = list(recs)
    first = evaluate.predictions_frame(recs[names[0]])
    if first["filename"].duplicated().any():
        dup = first.loc[first["filename"].duplicated(), "filename"].head(3).tolist()
        raise ValueError(f"record {names[0]!r} lists some file names twice (e.g. {dup}); "
                         "cannot align predictions by file name")
    hashes = {n: r.get("manifest_hash") for n, r in recs.items() if r.get("manifest_hash")}
    if len(set(hashes.values())) > 1:
        raise ValueError(
            "the records were evaluated on different images (manifest hashes "
            + ", ".join(f"{n}: {h[:10]}" for n, h in hashes.items())
            + "); an ensemble needs every member evaluated on the same test set"
        )
    images = first[["filename", "subject", "y"]].copy()
    p = pd.DataFrame(index=images.index)
    keyed = images.set_index("filename")
    for name in names:
        frame = evaluate.predictions_frame(recs[name]).set_index("filename")
        missing = keyed.index.difference(frame.index)
        extra = frame.index.difference(keyed.index)
        if len(missing) or len(extra):
            raise ValueError(
                f"record {name!r} covers other images than {names[0]!r}: "
                f"{len(missing)} missing (e.g. {list(missing[:2])}), {len(extra)} extra "
                f"(e.g. {list(extra[:2])}); evaluate all members on the same test table"
            )
        frame = frame.loc[keyed.index]
        if not (frame["y"].astype(int).to_numpy() == keyed["y"].astype(int).to_numpy()).all():
            raise ValueError(f"record {name!r} gives other labels than {names[0]!r} for the same files")
        p[name] = frame["p_all"].astype(float).to_numpy()
    return images.reset_index(drop=True), p.reset_index(drop=True)


def _weights(names: Sequence[str], weights) -> np.ndarray:
    if weights is None:
        return np.full(len(names), 1.0 / len(names))
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(names)
        if unknown:
            raise ValueError(f"weights given for unknown members {sorted(unknown)}; members: {names}")
        w = np.array([float(weights.get(n, 0.0)) for n in names])
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape != (len(names),):
            raise ValueError(f"{len(names)} members but {w.size} weights")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative and not all zero, got {w.tolist()}")
    return w / w.sum()


def soft_vote(p: pd.DataFrame | np.ndarray, weights=None) -> np.ndarray:
    """Weighted mean of the members' P(ALL) (columns of ``p``); equal weights by default."""
    frame = p if isinstance(p, pd.DataFrame) else pd.DataFrame(np.asarray(p, float))
    w = _weights([str(c) for c in frame.columns], weights if not isinstance(weights, Mapping)
                 else {str(k): v for k, v in weights.items()})
    return frame.to_numpy(float) @ w


def hard_vote(p: pd.DataFrame | np.ndarray, threshold: float = 0.5, weights=None) -> np.ndarray:
    """Share of (weighted) members that call a cell ALL; >= 0.5 means a majority says ALL."""
    frame = p if isinstance(p, pd.DataFrame) else pd.DataFrame(np.asarray(p, float))
    w = _weights([str(c) for c in frame.columns], weights)
    return (frame.to_numpy(float) >= threshold).astype(float) @ w


def ensemble_from_records(records, *, weights=None, rule: str = "soft", name: str | None = None,
                          threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """An ensemble's result record, computed from its members' result records alone.

    ``records``: a list of records (or record paths), or a mapping name -> record. ``rule``:
    ``"soft"`` (mean P(ALL)) or ``"hard"`` (majority of decisions; P(ALL) is then the share of
    votes). ``weights``: None (equal), a list, or name -> weight (choose them on validation data,
    never on the test records). The record's ``ensemble`` entry lists the members, the weights
    and each member's own accuracy, weighted F1 and ROC AUC on these images.
    """
    if rule not in ("soft", "hard"):
        raise ValueError(f"rule must be 'soft' or 'hard', got {rule!r}")
    recs = _as_records(records)
    images, p = align_records(recs)
    members = list(p.columns)
    w = _weights(members, weights)
    combined = soft_vote(p, w) if rule == "soft" else hard_vote(p, threshold, w)
    first = recs[members[0]]
    sizes = {m: recs[m].get("image_size") for m in members}
    extra = {
        "ensemble": {
            "rule": "soft voting: weighted mean of P(ALL)" if rule == "soft"
            else "hard voting: weighted share of members calling ALL",
            "members": members,
            "weights": dict(zip(members, w.tolist())),
            "member_metrics": {
                m: {k: recs[m]["metrics"].get(k) for k in ("accuracy", "weighted_f1", "roc_auc",
                                                           "sensitivity", "specificity")}
                for m in members
            },
            "image_sizes": sizes,
            "agreement": float((p.to_numpy() >= threshold).all(axis=1).mean()
                               + (p.to_numpy() < threshold).all(axis=1).mean()),
        }
    }
    config = {"kind": "ensemble", "rule": rule, "members": members,
              "profile": (first.get("config") or {}).get("profile")}
    return record_from_predictions(
        name or f"ensemble ({rule}, {len(members)} models)", images, combined, config=config,
        seconds=float(sum(recs[m].get("seconds") or 0.0 for m in members)), crop=first.get("crop"),
        split_name=first.get("split"), manifest_hash=first.get("manifest_hash"),
        threshold=threshold, n_bootstrap=n_bootstrap, seed=seed, extra=extra)


def load_model(path):
    """Load a saved ``.keras`` model (best.keras of a run) for inference, without compiling it.

    Imports the library modules that define custom layers first, so they deserialise."""
    import keras

    import allnet_lib.models  # noqa: F401 - registers ImagePreprocess, LocalResponseNormalization

    try:
        import allnet_lib.augment  # noqa: F401 - registers FlipRotate, if a model contains it
    except ModuleNotFoundError:  # pragma: no cover - during development
        pass
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path}; train it first (allnet train ...) or "
                                "check the run folder")
    return keras.saving.load_model(path, compile=False)


def ensemble_from_models(models: Mapping[str, object], table: pd.DataFrame, *, image_sizes,
                         crop: int = 400, batch_size: int = 64, weights=None, rule: str = "soft",
                         split_name: str | None = None, n_bootstrap: int = 1000, seed: int = 0,
                         progress: bool = True) -> tuple[dict, dict[str, dict]]:
    """Evaluate each model (a keras.Model or a saved ``.keras`` path) on ``table``, then vote.

    ``image_sizes``: one int for all, or name -> input side. Returns ``(ensemble record,
    {name: member record})``. Prefer :func:`ensemble_from_records` when the members' records
    exist: it gives the same result without running any model.
    """
    member_records = {}
    for name, model in models.items():
        if isinstance(model, (str, Path)):
            model = load_model(model)
        size = image_sizes if isinstance(image_sizes, int) else image_sizes[name]
        member_records[name] = evaluate.evaluate_model(
            model, table, image_size=int(size), crop=crop, batch_size=batch_size, name=name,
            split_name=split_name, n_bootstrap=n_bootstrap, seed=seed, progress=progress)
    record = ensemble_from_records(member_records, weights=weights, rule=rule,
                                   n_bootstrap=n_bootstrap, seed=seed)
    return record, member_records


# --------------------------------------------------------------------------------------------
# test-time augmentation
# --------------------------------------------------------------------------------------------
def d4_transform(x: np.ndarray, name: str) -> np.ndarray:
    """One of :data:`D4_TRANSFORMS` applied to a batch ``(N, H, W, C)`` or one image ``(H, W, C)``.

    ``rotK``: K degrees counter-clockwise (``np.rot90``); ``flip_lr`` mirrors left-right,
    ``flip_tb`` top-bottom; ``transpose`` and ``antitranspose`` reflect about the diagonals. The
    same operations as :data:`allnet_lib.augment.ORIENTATIONS`, so TTA shows a model exactly the
    poses the training augmentation drew."""
    if name not in D4_TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose from {D4_TRANSFORMS}")
    x = np.asarray(x)
    h, w = (1, 2) if x.ndim == 4 else (0, 1)
    ops = {
        "identity": lambda a: a,
        "rot90": lambda a: np.rot90(a, 1, axes=(h, w)),
        "rot180": lambda a: np.rot90(a, 2, axes=(h, w)),
        "rot270": lambda a: np.rot90(a, 3, axes=(h, w)),
        "flip_lr": lambda a: np.flip(a, axis=w),
        "flip_tb": lambda a: np.flip(a, axis=h),
        "transpose": lambda a: np.swapaxes(a, h, w),
        "antitranspose": lambda a: np.swapaxes(np.rot90(a, 2, axes=(h, w)), h, w),
    }
    return np.ascontiguousarray(ops[name](x))


def _transforms(transforms) -> list[str]:
    names = list(D4_TRANSFORMS) if transforms in (None, "d4") else list(transforms)
    for n in names:
        if n not in D4_TRANSFORMS:
            raise ValueError(f"unknown transform {n!r}; choose from {D4_TRANSFORMS}")
    if not names:
        raise ValueError("no transforms given")
    return names


def tta_predict(model, x: np.ndarray, *, transforms="d4", batch_size: int = 64) -> np.ndarray:
    """P(ALL) of ``model`` for every image of ``x`` under every transform: ``(n_transforms, N)``.

    ``x``: model-ready images, float32 in [0, 1]. Non-square images only allow the transforms
    that keep their shape (identity, rot180, flip_lr, flip_tb)."""
    names = _transforms(transforms)
    x = np.asarray(x, dtype="float32")
    if x.shape[1] != x.shape[2] and any(n in ("rot90", "rot270", "transpose", "antitranspose")
                                        for n in names):
        raise ValueError(f"images of {x.shape[1]}x{x.shape[2]} are not square: a quarter turn or a "
                         "diagonal reflection changes their shape; use identity, rot180, flip_lr "
                         "or flip_tb")
    out = np.empty((len(names), len(x)))
    for i, n in enumerate(names):
        pred = np.asarray(model.predict(d4_transform(x, n), batch_size=batch_size, verbose=0))
        out[i] = evaluate._p_all_column(pred)  # noqa: SLF001 - the same column rule as evaluate
    return out


def tta_evaluate(model, table: pd.DataFrame, *, image_size: int, crop: int = 400,
                 transforms="d4", batch_size: int = 64, chunk_size: int = 256,
                 name: str | None = None, split_name: str | None = None,
                 threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0,
                 progress: bool = True) -> dict:
    """Test-time augmentation: the mean P(ALL) over the 8 poses of every cell, as a record.

    ``model``: a keras.Model or the path of a saved one. The record's ``tta`` entry holds, for
    every pose alone, the accuracy and ROC AUC: if they differ much, the model is not as
    rotation-invariant as the cells are. Images are read in chunks of ``chunk_size``.
    """
    from tqdm.auto import tqdm

    from allnet_lib import pipeline

    if isinstance(model, (str, Path)):
        model = load_model(model)
    names = _transforms(transforms)
    evaluate._check_table(table)  # noqa: SLF001 - same checks and messages as evaluate_model
    start = time.perf_counter()
    parts = []
    starts = range(0, len(table), chunk_size)
    for s in tqdm(starts, desc="tta", unit="chunk", disable=not progress or len(starts) < 2):
        x, _ = pipeline.load_arrays(table.iloc[s:s + chunk_size], image_size=image_size,
                                    crop=crop, progress=False)
        parts.append(tta_predict(model, x, transforms=names, batch_size=batch_size))
    per = np.concatenate(parts, axis=1)
    seconds = time.perf_counter() - start
    p_mean = per.mean(axis=0)
    y = table["y"].astype(int).to_numpy()
    per_pose = {}
    for i, n in enumerate(names):
        m = evaluate.metrics_from_predictions(y, per[i], threshold=threshold, n_bootstrap=0)
        per_pose[n] = {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"],
                       "weighted_f1": m["weighted_f1"]}
    flips = (per >= threshold) != (per[:1] >= threshold)
    from allnet_lib.split import manifest_hash as _hash

    base = name or getattr(model, "name", "model")
    extra = {"tta": {
        "transforms": names,
        "per_transform": per_pose,
        "changed_decisions": float(flips.any(axis=0).mean()),
        "mean_spread": float((per.max(axis=0) - per.min(axis=0)).mean()),
    }}
    predictions = table[["filename", "subject", "y"]].reset_index(drop=True)
    return record_from_predictions(
        f"{base} + TTA", predictions, p_mean,
        config={"kind": "tta", "model": base, "transforms": names}, seconds=seconds,
        image_size=image_size, crop=crop, split_name=split_name, manifest_hash=_hash(table),
        threshold=threshold, n_bootstrap=n_bootstrap, seed=seed, extra=extra)


# --------------------------------------------------------------------------------------------
# is B better than A? a paired comparison on the same cells
# --------------------------------------------------------------------------------------------
PAIRED_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "weighted_f1")


def _count_metric(counts: np.ndarray, metric: str) -> np.ndarray:
    """A count-based metric from (..., 4) arrays of (tn, fp, fn, tp); NaN where undefined."""
    tn, fp, fn, tp = (counts[..., k].astype(float) for k in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        sens, spec = tp / (tp + fn), tn / (tn + fp)
        if metric == "accuracy":
            return (tp + tn) / (tn + fp + fn + tp)
        if metric == "sensitivity":
            return sens
        if metric == "specificity":
            return spec
        if metric == "balanced_accuracy":
            return (sens + spec) / 2
        if metric == "weighted_f1":
            f1_all = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
            f1_hem = np.nan_to_num(2 * tn / (2 * tn + fp + fn))
            return (f1_all * (tp + fn) + f1_hem * (tn + fp)) / (tn + fp + fn + tp)
    raise ValueError(f"metric must be one of {PAIRED_METRICS}, got {metric!r}")


def paired_difference(record_a: dict, record_b: dict, *, metric: str = "accuracy",
                      threshold: float = 0.5, n_bootstrap: int = 2000, seed: int = 0) -> dict:
    """How much better is B than A on the same cells, with a 95 % interval over subjects?

    Both records must cover the same images (as for an ensemble). Each bootstrap replicate draws
    whole subjects with replacement (stratified by the subject's class, as
    :func:`allnet_lib.evaluate.metrics_from_predictions` does) and computes the metric of *both*
    models on that same draw, so the interval is for the difference itself: much narrower than
    comparing two separate intervals, because the hard subjects are hard for both models.
    Returns ``{"metric", "a", "b", "difference", "ci", "share_b_better", "n_subjects"}``;
    ``share_b_better`` is the share of replicates in which B scores higher.
    """
    images, p = align_records([record_a, record_b])
    y = images["y"].astype(int).to_numpy()
    codes, uniques = pd.factorize(images["subject"].astype(str), sort=True)
    n = len(uniques)
    per_model = []
    for col in p.columns:
        pred = (p[col].to_numpy() >= threshold).astype(int)
        cells = np.stack([(y == 0) & (pred == 0), (y == 0) & (pred == 1),
                          (y == 1) & (pred == 0), (y == 1) & (pred == 1)], axis=1)
        per_model.append(np.stack([np.bincount(codes, weights=cells[:, k], minlength=n)
                                   for k in range(4)], axis=1))
    point = [float(_count_metric(c.sum(axis=0), metric)) for c in per_model]
    subject_class = (np.bincount(codes, weights=y, minlength=n) / np.bincount(codes, minlength=n)) >= 0.5
    rng = np.random.default_rng(seed)
    mult = np.zeros((n_bootstrap, n))
    for c in (False, True):
        members = np.flatnonzero(subject_class == c)
        if members.size:
            mult[:, members] = rng.multinomial(members.size, np.full(members.size, 1 / members.size),
                                               size=n_bootstrap)
    a_rep = _count_metric(mult @ per_model[0], metric)
    b_rep = _count_metric(mult @ per_model[1], metric)
    diff = b_rep - a_rep
    finite = diff[np.isfinite(diff)]
    ci = np.percentile(finite, [2.5, 97.5]).tolist() if finite.size else None
    return {"metric": metric, "a": record_a.get("name"), "b": record_b.get("name"),
            "a_value": point[0], "b_value": point[1], "difference": point[1] - point[0],
            "ci": ci, "share_b_better": float((finite > 0).mean()) if finite.size else None,
            "n_subjects": int(n), "n_bootstrap": int(n_bootstrap)}
