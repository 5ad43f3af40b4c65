"""``allnet train / evaluate / compare / leakage`` run in-process on a tiny demo set (smoke profile).

One real training (the module fixture) is shared: the other tests evaluate it, reuse it, or
check errors, so the whole file costs about one smoke training.
"""

from __future__ import annotations

import contextlib
import io
import re
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from allnet_lib.cli import main

SMOKE = ["--profile", "smoke", "--no-progress"]


def run(capsys, *argv):
    """Run ``allnet argv``; return (exit code, stdout + stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from allnet_lib.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("data") / "demo", n_images=60, image_size=96,
                             progress=False)


@pytest.fixture(scope="module")
def compared(demo, tmp_path_factory):
    """`allnet compare` of one model, trained for real once: (exit code, output, out folder)."""
    out = tmp_path_factory.mktemp("runs") / "cmp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALLNET_DATA", str(tmp_path_factory.mktemp("empty_root")))
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main(["compare", "--models", "proposed", "--split", "subject", "--data", str(demo),
                         "--out", str(out), *SMOKE])
    return code, buffer.getvalue(), out


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path, monkeypatch):
    """Default data and runs locations inside tmp_path, never the user's."""
    monkeypatch.setenv("ALLNET_DATA", str(tmp_path / "allnet_data"))
    monkeypatch.delenv("ALLNET_RUNS", raising=False)
    monkeypatch.delenv("ALLNET_PROFILE", raising=False)


def test_compare_prints_the_table_and_writes_results(compared):
    code, out, folder = compared
    assert code == 0, out
    assert "proposed: training" in out
    assert "report 2019 acc. (image split)" in out and "93.0" in out
    for name in ("results.csv", "results.md", "results.png", "roc.png", "confusion.png", "history.png",
                 "proposed/record.json", "proposed/best.keras"):
        assert (folder / name).is_file(), name
    table = pd.read_csv(folder / "results.csv")
    assert table.loc[0, "model"] == "proposed" and 0 <= table.loc[0, "accuracy"] <= 1
    assert "| model |" in (folder / "results.md").read_text()
    baseline = re.search(r"baseline, always answering 'all' on the same test images: accuracy ([\d.]+), "
                         r"weighted F1 ([\d.]+), balanced accuracy 50\.0", out)
    assert baseline, out
    accuracy, weighted_f1 = map(float, baseline.groups())
    share = accuracy / 100  # the baseline's accuracy is the ALL share; its weighted F1 follows
    assert weighted_f1 == pytest.approx(100 * share * 2 * share / (1 + share), abs=0.1)
    assert baseline.group(0) in (folder / "results.md").read_text()


def test_compare_again_reuses_the_record_without_training(compared, demo, capsys):
    _, _, folder = compared
    record = folder / "proposed" / "record.json"
    before = record.read_bytes()
    code, out = run(capsys, "compare", "--models", "proposed", "--data", demo, "--out", folder, *SMOKE)
    assert code == 0, out
    assert "reusing the finished record" in out and "proposed: training" not in out
    assert record.read_bytes() == before
    assert pd.read_csv(folder / "results.csv")["reused"].tolist() == [True]


def test_train_finds_the_finished_run(compared, demo, capsys):
    _, _, folder = compared
    code, out = run(capsys, "train", "--model", "proposed", "--data", demo, "--out", folder / "proposed", *SMOKE)
    assert code == 0, out
    assert "reused proposed" in out and "next: allnet evaluate --run" in out


def test_evaluate_shows_or_redoes_the_record(compared, demo, capsys):
    _, _, folder = compared
    run_dir = folder / "proposed"
    code, out = run(capsys, "evaluate", "--run", run_dir, "--data", demo, "--no-progress")
    assert code == 0, out
    assert "already holds this run's evaluation" in out and "weighted F1" in out
    old = json.loads((run_dir / "record.json").read_text())
    code, out = run(capsys, "evaluate", "--run", run_dir, "--data", demo, "--overwrite", "--no-progress")
    assert code == 0, out
    new = json.loads((run_dir / "record.json").read_text())
    assert "subject-level accuracy" in out and "record:" in out
    assert new["predictions"]["filename"] == old["predictions"]["filename"]
    assert np.allclose(new["predictions"]["p_all"], old["predictions"]["p_all"], atol=1e-5)
    assert new["config"]["experiment"] == old["config"]["experiment"]


@pytest.mark.parametrize("argv, expected", [
    (["train", "--model", "lenet", "--profile", "smoke"],
     "valid models: alexnet, vgg16, resnet50, inception_v3, proposed"),
    (["train", "--model", "alexnet", "--profile", "smoke", "--image-size", "32"],
     "needs images of at least 67x67 pixels, profile 'smoke' gives 32x32; use --image-size 67"),
    (["compare", "--models", "vgg16,nope", "--profile", "smoke"], "unknown model 'nope'"),
    (["train", "--model", "vgg16", "--profile", "huge"], "unknown profile 'huge'"),
    (["train", "--model", "vgg16", "--profile", "smoke", "--data", "/nonexistent/folder"], "allnet demo-data"),
    (["evaluate", "--run", "/nonexistent/run"], "not a training run"),
])
def test_bad_input_exits_2_with_a_helpful_message(argv, expected, capsys):
    code, out = run(capsys, *argv)
    assert code == 2
    assert expected in out


def test_empty_data_folder_says_how_to_get_data(tmp_path, capsys):
    code, out = run(capsys, "train", "--model", "vgg16", "--data", tmp_path, *SMOKE)
    assert code == 2
    assert str(tmp_path) in out and "fetch_cnmc.py" in out


def test_default_data_is_generated_and_leakage_checks_subjects(tmp_path, capsys):
    # the smoke demo set (60 images) has 3 normal subjects: too few for four disjoint groups
    code, out = run(capsys, "leakage", "--model", "vgg16", *SMOKE)
    assert "generating the synthetic demo set (60 images)" in out
    assert (tmp_path / "allnet_data" / "demo" / "C-NMC_training_data").is_dir()
    assert code == 2 and "at least 4 subjects of each class" in out


def test_leakage_command_with_a_stand_in_trainer(tmp_path, monkeypatch, capsys):
    """The leakage bookkeeping end to end through the CLI; the trainer is replaced (see
    test_compare.py for the same with the library) so that no network is trained here."""
    from allnet_lib.train import TrainResult

    class Brightness:
        def predict(self, x, batch_size=32, verbose=0):
            p = x.reshape(len(x), -1).mean(axis=1)
            return np.stack([1 - p, p], axis=1)

    def fake_train(model_name, split, profile, *, run_dir=None, resume=True, overwrite=False, progress=True):
        run_dir.mkdir(parents=True, exist_ok=True)
        history = pd.DataFrame({"epoch": [0], "loss": [0.5], "accuracy": [0.8]})
        return TrainResult(model_name, Brightness(), history, run_dir, run_dir / "best.keras",
                           run_dir / "last.keras", 1.0, 4.0, {})

    monkeypatch.setattr("allnet_lib.train.train_model", fake_train)
    data = tmp_path / "cells"
    for label, prefix in (("all", ""), ("hem", "H")):
        for s in range(1, 6):
            folder = data / "C-NMC_training_data" / f"fold_{s % 3}" / label
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(3):
                value = (160 if label == "all" else 80) + 10 * s + k  # no two files alike
                Image.fromarray(np.full((24, 24, 3), value, np.uint8)).save(folder / f"UID_{prefix}{s}_{k}_1_{label}.png")
    out = tmp_path / "leak"
    code, text = run(capsys, "leakage", "--model", "proposed", "--data", data, "--out", out, *SMOKE)
    assert code == 0, text
    assert "random image split (proposed, profile smoke)" in text and "never saw these people" in text
    for name in ("leakage.json", "leakage.csv", "leakage.png", "half_A/record_heldout.json", "half_B/record.json"):
        assert (out / name).is_file(), name
    code, text = run(capsys, "leakage", "--model", "proposed", "--data", data, "--out", out, *SMOKE)
    assert code == 0 and text.count("reusing the finished record") == 2


@pytest.mark.slow
def test_leakage_end_to_end_with_real_training(tmp_path, capsys):
    """Two real smoke trainings on a demo set with enough subjects (5 normal ones)."""
    from allnet_lib.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "demo", n_images=1200, image_size=32, progress=False)
    out = tmp_path / "leak"
    code, text = run(capsys, "leakage", "--model", "proposed", "--data", data, "--out", out, *SMOKE)
    assert code == 0, text
    result = json.loads((out / "leakage.json").read_text())
    assert result["splits"]["image"]["test_subjects_seen_in_training"] > 0
    assert result["results"]["image"]["test"]["n_images"] == result["results"]["image"]["heldout"]["n_images"]
    assert result["optimism_gap"]["accuracy"] is not None


def test_train_lists_unreadable_images_before_training_and_leaves_them_out(demo, tmp_path, monkeypatch,
                                                                           capsys):
    import shutil

    from allnet_lib.train import TrainResult

    data = tmp_path / "data"
    shutil.copytree(demo, data)
    victim = sorted((data / "C-NMC_training_data" / "fold_1" / "hem").glob("*.bmp"))[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated
    seen = {}

    def fake_train(model_name, split, profile, *, run_dir=None, progress=True, overwrite=False, **kwargs):
        seen["paths"] = set(split.train["path"]) | set(split.val["path"]) | set(split.test["path"])
        seen["said_before"] = capsys.readouterr()
        run_dir.mkdir(parents=True, exist_ok=True)
        return TrainResult(model_name, None, pd.DataFrame({"epoch": [0]}), run_dir, run_dir / "best.keras",
                           run_dir / "last.keras", 1.0, 4.0, {})

    monkeypatch.setattr("allnet_lib.train.train_model", fake_train)
    code, text = run(capsys, "train", "--model", "proposed", "--data", data, "--out", tmp_path / "run", *SMOKE)
    assert code == 0, text
    before = seen["said_before"].err
    assert str(victim) in before and "truncated or corrupt" in before  # said before training started
    assert str(victim) not in seen["paths"] and len(seen["paths"]) == 59


def test_train_in_a_folder_of_another_run_names_the_flags(compared, demo, capsys):
    _, _, folder = compared
    code, out = run(capsys, "train", "--model", "proposed", "--data", demo, "--out", folder / "proposed",
                    "--profile", "smoke", "--no-progress", "--epochs", "7")
    assert code == 2 and "another configuration" in out
    assert "--overwrite" in out and "--out DIR" in out and "overwrite=True" not in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--overwrite" in capsys.readouterr().out
