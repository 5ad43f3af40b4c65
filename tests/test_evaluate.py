"""Metrics, the subject bootstrap and result records, on prediction sets small enough to check by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from allnet_lib import evaluate
from allnet_lib.evaluate import (RECORD_SCHEMA, RecordError, load_record, metrics_from_predictions,
                                 save_record, validate_record)


def report_predictions():
    """The 2019 report's test predictions rebuilt from its confusion matrix [[1370, 77], [71, 603]]
    (rows true all, hem; columns predicted all, hem): in our order tn=603 fp=71 fn=77 tp=1370."""
    y = np.r_[np.zeros(603 + 71), np.ones(77 + 1370)].astype(int)
    p = np.r_[np.full(603, 0.2), np.full(71, 0.8), np.full(77, 0.3), np.full(1370, 0.9)]
    return y, p


def grouped_predictions(seed=0, n_subjects=12, per_subject=30, subject_effect=0.25):
    """Cells grouped by subject, each subject shifting its cells' scores the same way."""
    rng = np.random.default_rng(seed)
    ys, ps, subjects = [], [], []
    for s in range(n_subjects):
        label = s % 2
        shift = rng.normal(0, subject_effect)
        p = np.clip(0.5 + (0.2 if label else -0.2) + shift + rng.normal(0, 0.1, per_subject), 0, 1)
        ys += [label] * per_subject
        ps += p.tolist()
        subjects += [f"{'' if label else 'H'}{s}"] * per_subject
    return np.array(ys), np.array(ps), np.array(subjects)


def test_report_confusion_matrix_read_with_all_positive():
    y, p = report_predictions()
    m = metrics_from_predictions(y, p, n_bootstrap=0)
    assert m["confusion_matrix"]["matrix"] == [[603, 71], [77, 1370]]
    assert m["confusion_matrix"]["classes"] == ["hem", "all"]
    assert m["accuracy"] == pytest.approx(1973 / 2121)  # 93.02 %
    assert m["precision"] == pytest.approx(1370 / 1441)  # 0.951
    assert m["sensitivity"] == pytest.approx(1370 / 1447) == pytest.approx(m["recall"])  # 0.947
    assert m["specificity"] == pytest.approx(603 / 674)  # 0.895
    assert m["balanced_accuracy"] == pytest.approx((1370 / 1447 + 603 / 674) / 2)
    f1_all, f1_hem = 2 * 1370 / (2 * 1370 + 71 + 77), 2 * 603 / (2 * 603 + 71 + 77)
    assert m["weighted_f1"] == pytest.approx((1447 * f1_all + 674 * f1_hem) / 2121)
    assert m["counts"] == {"hem": 674, "all": 1447}
    # the report's printed "0.89" was hem as the positive class
    assert skm.precision_score(y, (p >= 0.5).astype(int), pos_label=0) == pytest.approx(603 / 680)


def test_threshold_moves_the_decision():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.55, 0.9])
    assert metrics_from_predictions(y, p, n_bootstrap=0)["accuracy"] == 0.75
    assert metrics_from_predictions(y, p, threshold=0.58, n_bootstrap=0)["accuracy"] == 0.5
    assert metrics_from_predictions(y, p, n_bootstrap=0)["roc_auc"] == 0.75


def test_one_class_only_gives_none_with_reasons():
    m = metrics_from_predictions([1, 1, 1], [0.9, 0.2, 0.7], n_bootstrap=50)
    assert m["roc_auc"] is None and "one class" in m["notes"]["roc_auc"]
    assert m["specificity"] is None and "hem" in m["notes"]["specificity"]
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["ci"]["intervals"]["roc_auc"] is None
    json.dumps(m, allow_nan=False)  # JSON-ready: no NaN anywhere


def test_no_positive_prediction_makes_precision_undefined():
    m = metrics_from_predictions([0, 1, 1], [0.1, 0.2, 0.3], n_bootstrap=0)
    assert m["precision"] is None and "predicted ALL" in m["notes"]["precision"]
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0


@pytest.mark.parametrize("y, p, match", [
    ([], [], "empty"),
    ([0, 1], [0.5], "entries"),
    ([0, 2], [0.1, 0.2], "0 \\(hem\\) and 1"),
    ([0, 1], [0.1, 1.2], "probabilities"),
    ([0, 1], [0.1, np.nan], "probabilities"),
])
def test_bad_inputs_are_refused_clearly(y, p, match):
    with pytest.raises(ValueError, match=match):
        metrics_from_predictions(y, p)


def test_subject_majority_vote_and_per_subject_table():
    # subject 1 (ALL): 2 of 3 cells called ALL -> diagnosed ALL; H2: 2 of 3 called ALL -> wrong;
    # H3: 1 of 2 called ALL, a tie broken by mean P(ALL) = 0.35 -> hem, right
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.1, 0.7, 0.6, 0.2, 0.6, 0.1]
    subjects = ["1", "1", "1", "H2", "H2", "H2", "H3", "H3"]
    m = metrics_from_predictions(y, p, subjects=subjects, n_bootstrap=0)
    table = pd.DataFrame(m["per_subject"]).set_index("subject")
    assert table.loc["1", "accuracy"] == pytest.approx(2 / 3)
    assert table.loc["H2", "diagnosis"] == "all" and not table.loc["H2", "correct"]
    assert table.loc["H3", "diagnosis"] == "hem" and table.loc["H3", "correct"]
    assert m["subject_accuracy"] == pytest.approx(2 / 3)
    assert m["subject_level"]["confusion_matrix"]["matrix"] == [[1, 1], [0, 1]]
    assert m["n_subjects"] == 3


def test_count_formulas_of_the_bootstrap_agree_with_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 2)  # rounding makes ties, which the AUC must count as halves
    y_pred = (p >= 0.5).astype(int)
    counts = skm.confusion_matrix(y, y_pred).ravel()  # tn, fp, fn, tp
    got = evaluate._count_metrics(counts[None, :])
    point = metrics_from_predictions(y, p, n_bootstrap=0)
    for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "weighted_f1"):
        assert got[key][0] == pytest.approx(point[key]), key
    codes = np.arange(300) % 7  # 7 clusters with random multiplicities
    mult = rng.integers(0, 3, size=(4, 7)).astype(float)
    mult[:, 0] += 1
    aucs = evaluate._weighted_auc(mult, codes, y, p)
    for b in range(4):
        assert aucs[b] == pytest.approx(skm.roc_auc_score(y, p, sample_weight=mult[b, codes]))


def test_bootstrap_is_deterministic_and_resamples_subjects():
    y, p, subjects = grouped_predictions()
    a = metrics_from_predictions(y, p, subjects=subjects, n_bootstrap=300, seed=5)
    b = metrics_from_predictions(y, p, subjects=subjects, n_bootstrap=300, seed=5)
    c = metrics_from_predictions(y, p, subjects=subjects, n_bootstrap=300, seed=6)
    assert a["ci"] == b["ci"]
    assert a["ci"]["intervals"] != c["ci"]["intervals"]
    low, high = a["ci"]["intervals"]["accuracy"]
    assert low <= a["accuracy"] <= high
    assert a["ci"]["n_clusters"] == 12 and "subjects" in a["ci"]["method"]
    # cells of one subject move together, so resampling cells claims far more certainty
    cells = metrics_from_predictions(y, p, n_bootstrap=300, seed=5)["ci"]["intervals"]["accuracy"]
    assert (high - low) > 1.5 * (cells[1] - cells[0])


def test_few_subjects_are_flagged():
    y, p, subjects = grouped_predictions(n_subjects=4)
    m = metrics_from_predictions(y, p, subjects=subjects, n_bootstrap=100)
    assert "only 4 subjects" in m["ci"]["warning"]
    assert m["ci"]["trusted"] is False and "not to be trusted" in m["ci"]["warning"]
    assert sum(m["ci"]["clusters_per_class"].values()) == 4


def test_intervals_are_trusted_only_with_enough_subjects_of_each_class():
    y, p, subjects = grouped_predictions(n_subjects=16)
    ci = metrics_from_predictions(y, p, subjects=subjects, n_bootstrap=100)["ci"]
    per_class = ci["clusters_per_class"]
    assert sum(per_class.values()) == 16
    assert ci["trusted"] == (min(per_class.values()) >= evaluate.MIN_SUBJECTS_PER_CLASS)
    assert "at least 5 subjects of each class" in ci["rule"]
    assert metrics_from_predictions(y, p, n_bootstrap=100)["ci"]["trusted"] is False  # cells only


# ----------------------------------------------------------------------------------------------
# records
# ----------------------------------------------------------------------------------------------


def make_record(**changes):
    y = [0, 0, 1, 1, 1]
    p = [0.2, 0.7, 0.8, 0.9, 0.4]
    subjects = ["H1", "H1", "2", "2", "3"]
    record = {
        "schema": evaluate.SCHEMA_ID, "name": "proposed", "created": "2026-01-01T00:00:00+00:00",
        "split": "subject-s0-t20", "manifest_hash": "abc", "config": {"seed": 0},
        "image_size": 64, "crop": 400, "n_images": 5, "seconds": 0.5, "images_per_second": 10.0,
        "metrics": metrics_from_predictions(y, p, subjects=subjects, n_bootstrap=20),
        "predictions": {"filename": [f"{i}.bmp" for i in range(5)], "subject": subjects, "y": y, "p_all": p},
    }
    record.update(changes)
    return record


def test_schema_is_json_and_accepts_a_good_record():
    json.dumps(RECORD_SCHEMA)
    assert "y = 1 means ALL" in RECORD_SCHEMA["description"]
    validate_record(make_record())


@pytest.mark.parametrize("change, match", [
    ({"n_images": "5"}, "record.n_images: expected integer"),
    ({"schema": "other/9"}, "not one of"),
    ({"predictions": {"filename": ["a"], "subject": ["1"], "y": [1], "p_all": ["x"]}}, "p_all\\[0\\]"),
    ({"n_images": 4}, "length differs"),
])
def test_validate_record_names_the_problem(change, match):
    with pytest.raises(RecordError, match=match):
        validate_record(make_record(**change))


def test_validate_record_reports_missing_keys():
    record = make_record()
    del record["metrics"]["roc_auc"], record["manifest_hash"]
    with pytest.raises(RecordError) as info:
        validate_record(record)
    assert "missing key 'manifest_hash'" in str(info.value) and "'roc_auc'" in str(info.value)


def test_save_and_load_round_trip_and_never_overwrite_silently(tmp_path):
    path = tmp_path / "run" / "record.json"
    record = make_record()
    assert save_record(record, path) == path
    assert load_record(path) == json.loads(json.dumps(record))
    save_record(record, path)  # the same record again: fine, nothing changes
    with pytest.raises(FileExistsError, match="different result record"):
        save_record(make_record(name="vgg16"), path)
    assert load_record(path)["name"] == "proposed"
    save_record(make_record(name="vgg16"), path, overwrite=True)
    assert load_record(path)["name"] == "vgg16"
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temporary files left


def test_load_record_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no result record"):
        load_record(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="bad.json is not valid JSON"):
        load_record(bad)
    bad.write_text(json.dumps({"schema": evaluate.SCHEMA_ID}))
    with pytest.raises(RecordError, match="bad.json"):
        load_record(bad)


def test_format_metrics_mentions_the_headline_numbers():
    text = evaluate.format_metrics(make_record())
    assert "weighted F1" in text and "subject-level accuracy" in text and "[" in text


class BrightnessModel:
    """A stand-in model: P(ALL) grows with the image's mean brightness (softmax-shaped output)."""

    name = "brightness"

    def predict(self, x, batch_size=32, verbose=0):
        p = x.reshape(len(x), -1).mean(axis=1)
        return np.stack([1 - p, p], axis=1)


def test_evaluate_model_on_image_files(tmp_path):
    pytest.importorskip("allnet_lib.pipeline")
    from PIL import Image

    rows = []
    for i, (subject, label, value) in enumerate([("1", "all", 220), ("1", "all", 200), ("H2", "hem", 30),
                                                  ("H2", "hem", 150), ("3", "all", 90)]):
        name = f"UID_{subject}_{i}_1_{label}.png"
        Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(tmp_path / name)
        rows.append({"path": str(tmp_path / name), "filename": name, "label": label, "y": int(label == "all"),
                     "subject": subject, "fold": "fold_0", "image": i, "cell": 1})
    table = pd.DataFrame(rows)
    record = evaluate.evaluate_model(BrightnessModel(), table, image_size=32, crop=None, n_bootstrap=50,
                                     config={"profile": "test"}, split_name="tiny", progress=False)
    validate_record(record)
    assert record["name"] == "brightness" and record["n_images"] == 5
    assert record["predictions"]["y"] == [1, 1, 0, 0, 1]
    p = np.array(record["predictions"]["p_all"])
    assert np.all(np.diff(p[:2]) < 0) and p[0] == pytest.approx(220 / 255, abs=0.02)
    assert record["metrics"]["confusion_matrix"]["matrix"] == [[1, 1], [1, 2]]
    assert len(record["manifest_hash"]) == 64 and record["images_per_second"] > 0
    save_record(record, tmp_path / "record.json")
    with pytest.raises(ValueError, match="no label"):
        evaluate.evaluate_model(BrightnessModel(), table.assign(y=np.nan), image_size=32, progress=False)


def test_always_all_baseline_scores_the_majority_share():
    table = pd.DataFrame({"y": [1, 1, 1, 0], "subject": ["a", "a", "b", "H1"]})
    base = evaluate.always_all_baseline(table)
    assert base["accuracy"] == 0.75 and base["sensitivity"] == 1.0 and base["specificity"] == 0.0
    assert base["weighted_f1"] == pytest.approx(0.75 * (2 * 0.75 / 1.75))  # F1 of hem is 0
    assert base["balanced_accuracy"] == 0.5
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['subject'\]"):
        evaluate.always_all_baseline(table.drop(columns="subject"))
