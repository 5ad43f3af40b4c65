"""The classical baseline: what a CNN has to beat, and a leakage experiment that runs in seconds.

Hand-crafted cell features (:mod:`allnet_lib.features`: size, N:C ratio, outline, stain colour,
chromatin texture) go into a scikit-learn model (:data:`CLASSICAL_MODELS`: a standardised
logistic regression and a random forest, both with balanced class weights). The models are
evaluated with exactly the function the CNNs are (:func:`evaluate.metrics_from_predictions`,
subject-bootstrap intervals), and the result is a record of the same schema
(:data:`evaluate.RECORD_SCHEMA`), so :func:`compare.results_table` puts it beside the CNNs.

:func:`classical_leakage` repeats the leakage experiment of :func:`compare.leakage_experiment`
with a classical model over several seeds, on the very same halves and splits
(:func:`compare.leakage_halves`): features are computed once, each fit takes a second, so the
spread of the optimism gap over seeds can be measured, not guessed. :func:`leakage_over_seeds`,
:func:`leakage_seeds_table` and :func:`leakage_seeds_verdict` summarise per-seed leakage results
of any model family (they read only the result dicts).

The classical models have no early stopping and no tuned hyperparameters, so they need no
validation part: by default a split's validation images are added to its training images
(``fit_on`` says so in every record and result). Given a training profile,
:func:`classical_baseline` fits on exactly the cells that profile's CNNs train on
(:func:`split.training_parts`: no validation people, the ``max_train_images`` sample), so that
the comparison with the CNNs differs in the learner only, not in how many cells and people it
learned from.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from allnet_lib import evaluate
from allnet_lib.compare import (  # noqa: F401  (re-exported: the seed summary serves every model family)
    leakage_over_seeds, leakage_seeds_table, leakage_seeds_verdict)
from allnet_lib.features import FEATURE_NAMES
from allnet_lib.split import training_parts

#: Record names of the models, as they appear in tables next to the CNNs.
MODEL_NAMES = {"logistic": "features+logreg", "forest": "features+forest"}
FIT_ON = "train+val"
FIT_ON_CNN_CELLS = "the CNNs' training cells"  # fit_on when classical_baseline is given a profile
DESCRIPTION = ("classical baseline: hand-crafted cell features (allnet_lib.features) and a "
               "scikit-learn model; what a CNN has to beat")
PROFILE_NAME = "classical"  # the "profile" of a classical leakage result (there is no training profile)


def _logistic(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(),
                         LogisticRegression(class_weight="balanced", C=1.0, max_iter=5000,
                                            random_state=seed))


def _forest(seed: int):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=300, class_weight="balanced", min_samples_leaf=2,
                                  max_features="sqrt", n_jobs=2, random_state=seed)


#: name -> factory(seed) -> an unfitted scikit-learn classifier (deterministic for a given seed).
CLASSICAL_MODELS: dict[str, Callable[[int], Any]] = {"logistic": _logistic, "forest": _forest}


# ----------------------------------------------------------------------------------------------
# features of the images of a table
# ----------------------------------------------------------------------------------------------


def features_by_path(table: pd.DataFrame, features: pd.DataFrame | None = None, *,
                     progress: bool = True, workers: int | None = None) -> pd.DataFrame:
    """The features of ``table``'s images indexed by image path, the key every function here
    looks features up by (split parts are re-indexed, paths are not).

    ``features``: :func:`features.feature_table` of ``table`` (same index), or already indexed by
    path; computed when None. Duplicate paths are kept once."""
    from allnet_lib.features import feature_table

    paths = table["path"].astype(str)
    if features is None:
        unique = table.loc[~paths.duplicated()]
        features = feature_table(unique, progress=progress, workers=workers)
        features.index = unique["path"].astype(str).to_numpy()
    elif not _indexed_by_path(features, paths):
        if not features.index.equals(table.index):
            raise ValueError("features must be feature_table(table) of this very table (same index) "
                             "or be indexed by image path (baseline.features_by_path)")
        features = features.set_axis(paths.to_numpy())
    features = features[~features.index.duplicated()]
    _check_columns(features)
    return features


def _indexed_by_path(features: pd.DataFrame, paths: pd.Series) -> bool:
    return len(paths) > 0 and bool(paths.isin(features.index).all())


def _check_columns(features: pd.DataFrame) -> None:
    missing = [n for n in FEATURE_NAMES if n not in features.columns]
    if missing:
        raise ValueError(f"the feature table lacks columns {missing[:5]}; compute it with "
                         "allnet_lib.features.feature_table (it may be from another version)")


def _rows(features: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """The feature matrix of ``table``'s rows, looked up by path (or by index for
    ``feature_table(table)`` itself); an error names the images without features."""
    paths = table["path"].astype(str)
    if _indexed_by_path(features, paths):
        frame = features.loc[paths.to_numpy()]
    elif features.index.equals(table.index):  # feature_table(table) of this very table
        frame = features
    else:
        missing = paths[~paths.isin(features.index)]
        raise ValueError(
            f"no features for {len(missing)} of {len(table)} images (e.g. {missing.iloc[0] if len(missing) else '?'}); "
            "pass features computed on a table that holds these images: "
            "baseline.features_by_path(table) or feature_table(table) of this table")
    _check_columns(frame)
    return frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# fit and evaluate one model
# ----------------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in CLASSICAL_MODELS:
        raise ValueError(f"unknown classical model {name!r}; use one of {', '.join(CLASSICAL_MODELS)}")


def _labelled(table: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = sorted({"path", "filename", "y", "subject"} - set(table.columns))
    if missing:
        raise ValueError(f"{where}: the table lacks columns {missing}; use an index table or a split part")
    if len(table) == 0:
        raise ValueError(f"{where}: the table is empty")
    if table["y"].isna().any() or not table["y"].isin((0, 1)).all():
        raise ValueError(f"{where}: every row needs a label y of 0 (hem) or 1 (all); unlabelled "
                         "images (e.g. the C-NMC final test) cannot be used: filter them out first")
    return table


def fit_classical(name: str, train_table: pd.DataFrame, features: pd.DataFrame, *, seed: int = 0,
                  fit_on: str = FIT_ON):
    """Fit :data:`CLASSICAL_MODELS` ``[name]`` on the images of ``train_table``.

    Returns the fitted scikit-learn estimator, with ``allnet_facts`` (name, seed, images, time,
    training accuracy, ``fit_on``: which part of the split ``train_table`` is) attached."""
    _check_name(name)
    _labelled(train_table, "fit_classical")
    y = train_table["y"].astype(int).to_numpy()
    if len(np.unique(y)) < 2:
        raise ValueError("fit_classical: the training images are all of one class; a classifier "
                         "needs both 'all' and 'hem' images")
    x = _rows(features, train_table)
    model = CLASSICAL_MODELS[name](int(seed))
    start = time.perf_counter()
    model.fit(x, y)
    seconds = time.perf_counter() - start
    if "n_jobs" in model.get_params():
        # threads add the trees' votes in whatever order they finish: predict in one thread so
        # that probabilities are bit-identical from run to run (fitting is seeded per tree)
        model.set_params(n_jobs=1)
    model.allnet_facts = {
        "model": name, "name": MODEL_NAMES[name], "seed": int(seed), "n_fit": int(len(y)),
        "fit_seconds": seconds, "train_accuracy": float((model.predict(x) == y).mean()),
        "fit_subjects": int(train_table["subject"].nunique()), "fit_on": str(fit_on),
    }
    return model


def _p_all(model, x: np.ndarray) -> np.ndarray:
    classes = list(model.classes_)
    return model.predict_proba(x)[:, classes.index(1)].astype(float)


def evaluate_classical(model, table: pd.DataFrame, features: pd.DataFrame, *, name: str | None = None,
                       split_name: str | None = None, threshold: float = 0.5,
                       n_bootstrap: int = 1000, seed: int = 0, config: Mapping | None = None) -> dict:
    """Evaluate a fitted classical model on ``table``: a result record of
    :data:`evaluate.RECORD_SCHEMA`, with the same metrics and subject-bootstrap intervals as
    :func:`evaluate.evaluate_model` gives a CNN. ``seconds`` is the prediction time (features
    are computed beforehand); ``training`` holds the fit time and training accuracy."""
    from allnet_lib.split import manifest_hash

    _labelled(table, "evaluate_classical")
    facts = dict(getattr(model, "allnet_facts", {}))
    x = _rows(features, table)
    start = time.perf_counter()
    p_all = _p_all(model, x)
    seconds = time.perf_counter() - start
    predictions = table[["filename", "subject", "y"]]
    return evaluate.record_from_predictions(
        name or facts.get("name") or type(model).__name__, predictions, p_all,
        config={"classical_baseline": True, "description": DESCRIPTION,
                "model": facts.get("model"), "estimator": _estimator_text(model),
                "features": list(FEATURE_NAMES), "seed": facts.get("seed"),
                "fit_on": facts.get("fit_on", FIT_ON), **dict(config or {})},
        seconds=seconds, split_name=split_name, manifest_hash=manifest_hash(table), threshold=threshold,
        n_bootstrap=n_bootstrap, seed=seed, versions=_versions(),
        extra={"training": {"seconds": facts.get("fit_seconds"),
                            "images_per_second": (facts["n_fit"] / facts["fit_seconds"]
                                                  if facts.get("fit_seconds") else None),
                            "n_images": facts.get("n_fit"), "train_accuracy": facts.get("train_accuracy"),
                            "n_subjects": facts.get("fit_subjects"), "fit_on": facts.get("fit_on", FIT_ON)},
               "baseline": "classical"})


def _estimator_text(model) -> str:
    return " ".join(repr(model).split())


def _versions() -> dict:
    import sklearn

    out = evaluate._versions()
    out["scikit-learn"] = sklearn.__version__
    return out


def _fit_part(split) -> pd.DataFrame:
    """A split's training images plus its validation images (the classical models need no
    validation part: no early stopping, no tuning)."""
    return pd.concat([split.train, split.val], ignore_index=True) if len(split.val) else split.train


def classical_baseline(split, *, features: pd.DataFrame | None = None,
                       models: Iterable[str] = ("logistic", "forest"), seed: int = 0,
                       n_bootstrap: int = 1000, progress: bool = True, profile=None) -> dict[str, dict]:
    """Fit each classical model on ``split``'s training + validation part, or, given a training
    ``profile``, on the very cells that profile's CNNs train on (:func:`split.training_parts`),
    and evaluate it on the test part: ``{model name: record}``; :func:`compare.results_table` of
    the records gives the same table as for the CNNs.

    Features are computed once for all images of the split unless given (indexed by path, as
    :func:`features_by_path` returns, or ``feature_table`` of a table holding these images)."""
    models = list(models)
    for name in models:
        _check_name(name)
    if len(split.test) == 0:
        raise ValueError(f"split {split.name!r} has an empty test part: nothing to evaluate on")
    everything = pd.concat([split.train, split.val, split.test], ignore_index=True)
    if features is None:
        features = features_by_path(everything, progress=progress)
    elif not _indexed_by_path(features, everything["path"].astype(str)):
        raise ValueError("the features do not cover every image of the split; pass features indexed "
                         "by path that include them (baseline.features_by_path(table) of the whole "
                         "table), or none to compute them")
    if profile is None:
        fit_table, fit_on = _fit_part(split), FIT_ON
    else:
        fit_table, fit_on = training_parts(split, profile)[0], FIT_ON_CNN_CELLS
    records = {}
    for name in models:
        model = fit_classical(name, fit_table, features, seed=seed, fit_on=fit_on)
        record = evaluate_classical(model, split.test, features, split_name=split.name,
                                    n_bootstrap=n_bootstrap, seed=seed,
                                    config={"split_method": split.method, "split_seed": split.seed})
        record["evaluated_on"] = "test"
        records[MODEL_NAMES[name]] = record
    return records


# ----------------------------------------------------------------------------------------------
# the leakage experiment over seeds
# ----------------------------------------------------------------------------------------------


def classical_leakage(table: pd.DataFrame, *, model: str = "forest", seeds: Iterable[int] = (0, 1, 2, 3, 4),
                      features: pd.DataFrame | None = None, n_bootstrap: int = 1000,
                      progress: bool = True) -> dict:
    """The leakage experiment of :func:`compare.leakage_experiment` with a classical model, for
    several seeds: ``{"model", "fit_on", "seeds", "summary"}``.

    For each seed, :func:`compare.leakage_halves` puts whole subjects into two halves and splits
    each half at random by image; the model is fitted on each half's training + validation part,
    and every test cell is scored by its own half's model (people seen) and by the other half's
    (people never seen). Each entry of ``"seeds"`` has the format of ``leakage_experiment``'s
    result (so :func:`compare.leakage_verdict`, :func:`compare.leakage_table` and
    :func:`plots.plot_leakage` read it). ``"summary"`` is :func:`leakage_over_seeds`.
    Features are computed once (or taken from ``features``: ``feature_table(table)`` or indexed
    by path)."""
    from allnet_lib import compare
    from allnet_lib import split as splits

    _check_name(model)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("classical_leakage: no seeds given")
    rows = splits.training_rows(table)
    features = features_by_path(table if features is not None else rows, features, progress=progress)
    name = MODEL_NAMES[model]
    per_seed = []
    for seed in seeds:
        halves = compare.leakage_halves(table, seed=seed)
        result = compare.leakage_result_header(name, PROFILE_NAME, seed, halves)
        result["fit_on"] = FIT_ON
        fitted = {h: fit_classical(model, _fit_part(split), features, seed=seed) for h, split in halves.items()}
        own, held = [], []
        for h, other in zip(compare.HALVES, reversed(compare.HALVES)):
            test = halves[h].test
            x = _rows(features, test)
            base = {"filename": test["filename"].astype(str).to_numpy(), "subject": test["subject"].astype(str).to_numpy(),
                    "y": test["y"].astype(int).to_numpy()}
            own.append(pd.DataFrame({**base, "p_all": _p_all(fitted[h], x)}))
            held.append(pd.DataFrame({**base, "p_all": _p_all(fitted[other], x)}))
            facts = fitted[h].allnet_facts
            result["halves"][h]["split"] = compare._split_facts(halves[h])
            result["halves"][h]["fit"] = {"train_accuracy": facts["train_accuracy"], "n_fit": facts["n_fit"],
                                          "fit_seconds": facts["fit_seconds"], "fit_on": FIT_ON}
            result["records"][h] = None  # nothing written to disk: refitting takes a second
            result["reused"][h] = False
        per_seed.append(compare._finish_leakage(result, own, held, seed=seed, n_bootstrap=n_bootstrap))
    return {"model": name, "description": DESCRIPTION, "fit_on": FIT_ON,
            "seeds": per_seed, "summary": leakage_over_seeds(per_seed)}


# ----------------------------------------------------------------------------------------------
# summaries over seeds (any model family: they read only leakage result dicts)
# ----------------------------------------------------------------------------------------------
