"""Stored runs (a gpu book run kept as result records): stored from chapter 5's run folders, read
back, shown, and checked against their own predictions; every stored run in the package agrees."""

import json

import numpy as np
import pytest

from allnet_lib import evaluate, paths, reader, runs, stored_runs
from allnet_lib.demo import make_demo_dataset
from allnet_lib.profiles import get_profile
from allnet_lib.split import experiment_split

MODELS = ["alexnet", "proposed"]


@pytest.fixture
def finished_runs(tmp_path, monkeypatch):
    """Chapter 5's run folders under the smoke profile, with records of made-up predictions."""
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "runs"))
    make_demo_dataset(paths.demo_dir(), n_images=60, image_size=64, progress=False)
    table = reader.index_dataset(paths.demo_dir(), progress=False).table
    split = experiment_split(table)
    profile = get_profile("smoke")
    rng = np.random.default_rng(0)
    for name in MODELS:
        run_dir = runs.default_run_dir(profile, split, name)
        run_dir.mkdir(parents=True)
        record = evaluate.record_from_predictions(name, split.test[["filename", "subject", "y"]],
                                                  rng.random(len(split.test)), n_bootstrap=20)
        record["training"] = {"seconds": 12.5, "images_per_second": 800.0, "epochs": 8, "best_epoch": 6,
                              "train_accuracy": 0.9, "run_dir": str(run_dir)}
        runs.write_json(runs.record_path(run_dir), record)
        runs.write_json(runs.config_path(run_dir), {"environment": {"backend": "jax", "devices": ["cuda:0"]}})
    return split


def test_store_load_show_and_check(finished_runs, tmp_path):
    out = stored_runs.store("smoke", out_dir=tmp_path / "stored", models=MODELS)
    stored = stored_runs.load("smoke", out)
    assert sorted(stored.records) == MODELS
    assert stored_runs.discrepancies(stored) == []
    table = stored_runs.summary_table(stored)
    assert list(table.index) == MODELS and (table["training s"] == 12.5).all()
    assert table.loc["alexnet", "balanced accuracy"] == stored.records["alexnet"]["metrics"]["balanced_accuracy"]
    line = stored_runs.provenance_line(stored)
    assert "profile smoke" in line and "backend jax" in line and finished_runs.name in line
    assert "run_dir" not in stored.records["alexnet"]["training"], "the build machine's folder must not be stored"
    assert stored_runs.available(tmp_path / "stored") == []  # out is the profile folder itself
    assert stored_runs.available(out.parent) == [out.name]

    with pytest.raises(FileExistsError, match="already holds a stored run"):
        stored_runs.store("smoke", out_dir=out, models=MODELS)
    stored_runs.store("smoke", out_dir=out, models=MODELS, overwrite=True)


def test_a_stored_metric_that_its_predictions_do_not_give_is_reported(finished_runs, tmp_path):
    out = stored_runs.store("smoke", out_dir=tmp_path / "stored", models=MODELS)
    path = out / "proposed.json"
    record = json.loads(path.read_text())
    record["metrics"]["accuracy"] += 0.05  # a typed-in number
    path.write_text(json.dumps(record))
    problems = stored_runs.discrepancies(stored_runs.load("smoke", out))
    assert len(problems) == 1 and problems[0].startswith("proposed: accuracy")


def test_storing_without_a_run_says_what_to_run(finished_runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="run chapter 5"):
        stored_runs.store("smoke", out_dir=tmp_path / "stored", models=["vgg16"])
    assert stored_runs.main(["smoke", "--out", str(tmp_path / "cli")]) == 2  # three models have no run


def test_no_stored_run_is_none(tmp_path):
    assert stored_runs.load("gpu", tmp_path / "nothing") is None


@pytest.mark.parametrize("profile", stored_runs.available() or [None])
def test_every_stored_run_in_the_package_agrees_with_its_predictions(profile):
    if profile is None:
        pytest.skip("no stored run in the package yet (made on a GPU: see allnet_lib.stored_runs)")
    stored = stored_runs.load(profile)
    assert stored_runs.discrepancies(stored) == []
    assert stored.provenance.get("commit") and stored.provenance.get("machine", {}).get("gpu")
