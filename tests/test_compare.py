"""Comparing models and the leakage experiment, with a stand-in trainer so that the bookkeeping
(records, reuse, conflicts, held-out subjects, gaps) is tested in seconds, not minutes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from allnet_lib import compare, evaluate
from allnet_lib.compare import (REFERENCE_COLUMN, REPORT_CONFUSION, REPORT_TABLE2, ExperimentConflict,
                                compare_models, leakage_experiment, load_records, results_table)
from allnet_lib.profiles import get_profile
from allnet_lib.split import training_parts
from allnet_lib.train import TrainResult


class BrightnessModel:
    """P(ALL) = mean brightness; the tiny images below make ALL cells bright."""

    name = "stand-in"

    def predict(self, x, batch_size=32, verbose=0):
        p = x.reshape(len(x), -1).mean(axis=1)
        return np.stack([1 - p, p], axis=1)


@pytest.fixture
def fake_train(monkeypatch):
    """Replace train.train_model; ``calls`` lists the models actually trained."""
    calls = []

    def train_model(model_name, split, profile, *, run_dir=None, resume=True, overwrite=False, progress=True):
        calls.append(model_name)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({"status": "finished"}))
        history = pd.DataFrame({"epoch": [0], "loss": [0.5], "accuracy": [0.8]})
        return TrainResult(model_name, BrightnessModel(), history, run_dir, run_dir / "best.keras",
                           run_dir / "last.keras", 2.0, 8.0, {"n_train": len(split.train)})

    monkeypatch.setattr("allnet_lib.train.train_model", train_model)
    return calls


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """5 ALL and 5 normal subjects, 4 tiny images each; brightness depends on class and subject."""
    folder = tmp_path_factory.mktemp("cells")
    rng = np.random.default_rng(0)
    rows = []
    for label, prefix in (("all", ""), ("hem", "H")):
        for s in range(1, 6):
            subject = f"{prefix}{s}"
            level = (150 if label == "all" else 90) + 12 * s
            for k in range(4):
                name = f"UID_{subject}_{k}_1_{label}.png"
                pixels = np.clip(level + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / name)
                rows.append({"path": str(folder / name), "filename": name, "label": label,
                             "y": int(label == "all"), "subject": subject, "fold": f"fold_{s % 3}",
                             "image": k, "cell": 1})
    return pd.DataFrame(rows)


@pytest.fixture
def profile():
    return get_profile("smoke", image_size=16)


def test_reference_numbers_match_the_report():
    from allnet_lib.models import MODEL_SPECS

    assert {name: spec.reference_accuracy for name, spec in MODEL_SPECS.items()} == REPORT_TABLE2
    tn, fp = REPORT_CONFUSION["matrix_hem_all"][0]
    fn, tp = REPORT_CONFUSION["matrix_hem_all"][1]
    y = np.r_[np.zeros(tn + fp), np.ones(fn + tp)]
    p = np.r_[np.zeros(tn), np.ones(fp), np.zeros(fn), np.ones(tp)]
    m = evaluate.metrics_from_predictions(y, p, n_bootstrap=0)
    for key, value in REPORT_CONFUSION["all_positive"].items():
        assert m[key] == pytest.approx(value)
    assert "hem as the positive" in REPORT_CONFUSION["reading"]


def test_make_split_by_name(table):
    assert compare.make_split(table, "subject").subject_overlap() == set()
    assert compare.make_split(table, "image", seed=120).subject_overlap()
    assert compare.make_split(table, "fold").name == "fold-t2"
    with pytest.raises(ValueError, match="unknown split method"):
        compare.make_split(table, "random")


def test_compare_trains_records_and_reuses(table, profile, tmp_path, fake_train, capsys, monkeypatch):
    monkeypatch.setenv("ALLNET_RUNS", str(tmp_path))  # logs show run folders relative to it
    split = compare.make_split(table, "subject")
    out = tmp_path / "cmp"
    first = compare_models(["alexnet", "proposed"], split, profile, out_dir=out, progress=False)
    assert fake_train == ["alexnet", "proposed"]
    assert list(first["model"]) == ["alexnet", "proposed"] and not first["reused"].any()
    assert first[REFERENCE_COLUMN].tolist() == pytest.approx([0.8162, 0.9302])
    assert first["accuracy"].between(0, 1).all() and (first["accuracy_ci_low"] <= first["accuracy"]).all()
    assert first["train_seconds"].tolist() == [2.0, 2.0]
    record = evaluate.load_record(out / "alexnet" / "record.json")
    assert record["config"]["experiment"]["manifest_hash"] == compare.experiment_config(
        "alexnet", split, profile)["manifest_hash"]
    capsys.readouterr()

    again = compare_models(["alexnet", "proposed"], split, profile, out_dir=out, progress=False)
    assert fake_train == ["alexnet", "proposed"]  # nothing trained a second time
    assert again["reused"].all()
    assert again["accuracy"].tolist() == first["accuracy"].tolist()
    logged = capsys.readouterr().out
    assert logged.count("reusing the finished record") == 2
    assert "in $ALLNET_RUNS/cmp/alexnet (" in logged and str(tmp_path) not in logged

    compare_models(["alexnet"], split, profile, out_dir=out, reuse=False, progress=False)
    assert fake_train == ["alexnet", "proposed", "alexnet"]
    assert len(load_records(out)) == 2


def test_a_different_configuration_is_never_silently_replaced(table, profile, tmp_path, fake_train):
    split = compare.make_split(table, "subject")
    compare_models(["vgg16"], split, profile, out_dir=tmp_path, progress=False)
    before = (tmp_path / "vgg16" / "record.json").read_text()
    with pytest.raises(ExperimentConflict, match="profile.epochs"):
        compare_models(["vgg16"], split, profile.replace(epochs=3), out_dir=tmp_path, progress=False)
    assert (tmp_path / "vgg16" / "record.json").read_text() == before
    assert fake_train == ["vgg16"]


def test_another_models_setting_keeps_this_models_finished_run(table, profile, tmp_path, fake_train):
    """Changing VGG16's input side, learning rate or XLA flag must not retrain AlexNet; changing
    AlexNet's own is another experiment. Records written before the per-model cut (the whole
    profile in their config) are still recognised."""
    split = compare.make_split(table, "subject")
    compare_models(["alexnet"], split, profile, out_dir=tmp_path, progress=False)
    others = profile.replace(image_sizes={**profile.image_sizes, "vgg16": 24},
                             learning_rates={"vgg16": 5e-4}, xla_on_cpu=("vgg16",))
    again = compare_models(["alexnet"], split, others, out_dir=tmp_path, progress=False)
    assert fake_train == ["alexnet"] and again["reused"].all()
    with pytest.raises(ExperimentConflict, match="profile.learning_rate"):
        compare_models(["alexnet"], split, profile.replace(learning_rates={"alexnet": 5e-4}),
                       out_dir=tmp_path, progress=False)
    with pytest.raises(ExperimentConflict, match="profile.xla_on_cpu"):
        compare_models(["alexnet"], split, profile.replace(xla_on_cpu=("alexnet",)), out_dir=tmp_path,
                       progress=False)

    path = tmp_path / "alexnet" / "record.json"
    record = evaluate.load_record(path)
    experiment = record["config"]["experiment"]
    assert experiment["profile"]["image_sizes"] == {"alexnet": profile.image_size("alexnet")}
    from allnet_lib.train import comparable_settings

    experiment["profile"] = comparable_settings(others)  # as written before: every model's settings
    path.write_text(json.dumps(record))
    assert compare_models(["alexnet"], split, profile, out_dir=tmp_path, progress=False)["reused"].all()
    assert fake_train == ["alexnet"]


def test_unknown_model_lists_the_valid_ones(table, profile, fake_train):
    with pytest.raises(ValueError, match="valid names: alexnet, vgg16"):
        compare_models(["alexnet", "lenet"], compare.make_split(table, "subject"), profile)
    assert fake_train == []


def test_results_table_and_its_readable_form():
    y = np.array([0, 0, 1, 1, 1, 1])
    rec = {"name": "resnet50", "split": "s", "metrics": evaluate.metrics_from_predictions(
        y, [0.1, 0.6, 0.9, 0.8, 0.7, 0.2], subjects=["H1", "H2", "1", "1", "2", "2"], n_bootstrap=50)}
    table = results_table({"resnet50": rec})
    assert table.loc[0, "accuracy"] == pytest.approx(4 / 6)
    assert table.loc[0, REFERENCE_COLUMN] == pytest.approx(0.8477)
    assert np.isnan(table.loc[0, "train_seconds"])
    assert "random image-level" in table.attrs["reference_note"]
    text = compare.format_results(table)
    assert text.loc[0, "accuracy"].startswith("66.7 [")
    assert text.loc[0, "report 2019 acc. (image split)"] == "84.8"


def test_leakage_experiment_bookkeeping(table, profile, tmp_path, fake_train, capsys):
    result = leakage_experiment("proposed", table, profile, out_dir=tmp_path, seed=0, progress=False)
    assert fake_train == ["proposed", "proposed"]  # one model per half
    people = {h: set(result["halves"][h]["subjects"]) for h in compare.HALVES}
    assert not people["A"] & people["B"] and people["A"] | people["B"] == set(table["subject"])
    for h in compare.HALVES:
        assert {s[0] == "H" for s in people[h]} == {True, False}  # both classes in each half
    for h, other in (("A", "B"), ("B", "A")):
        own = evaluate.load_record(tmp_path / f"half_{h}" / "record.json")
        held = evaluate.load_record(tmp_path / f"half_{h}" / "record_heldout.json")
        assert set(own["predictions"]["subject"]) <= people[h]  # its own people ...
        assert set(held["predictions"]["subject"]) <= people[other]  # ... and the other half's test cells
        other_own = evaluate.load_record(tmp_path / f"half_{other}" / "record.json")
        assert held["predictions"]["filename"] == other_own["predictions"]["filename"]
        assert result["halves"][h]["split"]["test_subjects_seen_in_training"] > 0
        # the fit: the chosen weights scoring exactly the cells they were trained on
        trained = evaluate.load_record(tmp_path / f"half_{h}" / "record_train.json")
        used = training_parts(compare.leakage_halves(table, seed=0)[h], profile)[0]
        assert sorted(trained["predictions"]["filename"]) == sorted(used["filename"])
        fit = result["halves"][h]["fit"]
        assert fit["train_accuracy"] == pytest.approx(trained["metrics"]["accuracy"])
        assert fit["fitted"] == (trained["metrics"]["accuracy"] >= compare.FIT_THRESHOLD)
        assert "train_accuracy_while_training" in fit
    assert result["fit"]["image"]["train_accuracy"] == min(
        result["halves"][h]["fit"]["train_accuracy"] for h in compare.HALVES)
    image = result["results"]["image"]
    assert image["test"]["n_images"] == image["heldout"]["n_images"]
    assert result["splits"]["image"]["n_test"] == image["test"]["n_images"]
    assert result["optimism_gap"]["accuracy"] == pytest.approx(image["test"]["accuracy"] - image["heldout"]["accuracy"])
    assert compare.load_leakage(tmp_path) == result
    rows = compare.leakage_table(result)
    assert len(rows) == 2 and list(rows["evaluated_on"]) == list(compare.EVALUATED_ON.values())
    capsys.readouterr()

    again = leakage_experiment("proposed", table, profile, out_dir=tmp_path, seed=0, progress=False)
    assert fake_train == ["proposed", "proposed"] and all(again["reused"].values())
    assert again["results"] == result["results"]


def test_leakage_refuses_too_few_subjects_before_training(table, profile, fake_train):
    small = table[~table["subject"].isin(["H4", "H5"])]
    with pytest.raises(ValueError, match="at least 4 subjects of each class"):
        leakage_experiment("proposed", small, profile)
    assert fake_train == []


def _leakage_result(own, own_ci, held, held_ci):
    part = lambda value, ci: {"accuracy": value, "accuracy_ci": ci}
    return {"model": "alexnet", "profile": "demo",
            "results": {"image": {"test": part(own, own_ci), "heldout": part(held, held_ci)}}}


@pytest.mark.parametrize("own, own_ci, held, held_ci, expected", [
    (0.95, [0.92, 0.97], 0.80, [0.72, 0.86], "overstates its score on new people: accuracy 0.950"),
    (0.85, [0.78, 0.90], 0.80, [0.72, 0.86], "the intervals overlap, so this run cannot tell"),
    (0.70, [0.58, 0.81], 0.76, [0.71, 0.85], "measured no optimism"),
    (0.90, None, 0.80, None, "so this run cannot tell the gap from noise"),
])
def test_leakage_verdict_follows_the_numbers(own, own_ci, held, held_ci, expected):
    verdict = compare.leakage_verdict(_leakage_result(own, own_ci, held, held_ci))
    assert expected in verdict
    assert f"gap {own - held:+.3f}" in verdict


def test_leakage_seeds_trains_both_halves_per_seed_and_reuses(table, profile, tmp_path, fake_train, capsys):
    profile = profile.replace(leakage_seeds=(0, 1, 2), leakage_epochs=3)
    result = compare.leakage_seeds("proposed", table, profile, out_dir=tmp_path, progress=False)
    assert fake_train == ["proposed"] * 6  # two halves for each of 3 seeds
    assert result["epochs"] == 3 and [r["seed"] for r in result["seeds"]] == [0, 1, 2]
    assert {r["halves"]["A"]["manifest_hash"] for r in result["seeds"]} != {result["seeds"][0]["halves"]["A"]["manifest_hash"]}
    gaps = [r["optimism_gap"]["accuracy"] for r in result["seeds"]]
    assert result["summary"]["optimism_gap"]["values"] == pytest.approx(gaps)
    assert result["summary"]["optimism_gap"]["mean"] == pytest.approx(np.mean(gaps))
    assert json.loads((tmp_path / compare.LEAKAGE_SEEDS_NAME.format(model="proposed")).read_text()) == result
    assert len(compare.leakage_seeds_table(result["seeds"])) == 3
    assert "3 seeds" in compare.leakage_seeds_verdict(result["summary"])
    capsys.readouterr()
    again = compare.leakage_seeds("proposed", table, profile, out_dir=tmp_path, progress=False)
    assert len(fake_train) == 6 and again["summary"] == result["summary"]


def test_leakage_seeds_verdict_says_when_the_model_did_not_fit():
    per_seed = [{"seed": s, "model": "alexnet", "optimism_gap": {"accuracy": g},
                 "fit": {"image": {"train_accuracy": a}}}
                for s, g, a in ((0, 0.02, 0.71), (1, 0.01, 0.95), (2, 0.03, 0.93))]
    verdict = compare.leakage_seeds_verdict(compare.leakage_over_seeds(per_seed))
    assert "did not fit its training part" in verdict and "1 of 3 seeds" in verdict
    assert "scored 0.710 of their own training cells" in verdict
    assert "the gap may understate the leak" in verdict  # a gap shown by a model that fitted poorly
    no_gap = [dict(r, optimism_gap={"accuracy": -r["optimism_gap"]["accuracy"]}) for r in per_seed]
    verdict = compare.leakage_seeds_verdict(compare.leakage_over_seeds(no_gap))
    assert "did not fit" in verdict and "a small gap says little about the leak" in verdict
    fitted = [dict(r, fit={"image": {"train_accuracy": 0.99}}) for r in per_seed]
    assert "did not fit" not in compare.leakage_seeds_verdict(compare.leakage_over_seeds(fitted))
