"""Hand-crafted cell features and the classical baseline (features.py, baseline.py, `allnet baseline`).

Cells are drawn here with known sizes, so the features can be checked against the truth; a small
painted C-NMC tree with subject-specific looks stands in for data with subjects (the demo set is
used only for an end-to-end run, without relying on its numbers).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from allnet_lib import baseline, compare, evaluate
from allnet_lib.features import FEATURE_NAMES, cell_features, feature_table, segment_cell
from allnet_lib.imageio import ImageReadError


def drawn_cell(size=150, radius=40.0, nucleus_radius=25.0, *, cell_rgb=(200, 190, 230),
               nucleus_rgb=(90, 60, 150), centre=None, noise=0.0, seed=0) -> np.ndarray:
    """A disc cell with a darker disc nucleus on black (radii in pixels)."""
    rng = np.random.default_rng(seed)
    cy, cx = centre if centre is not None else (size / 2, size / 2)
    yy, xx = np.mgrid[:size, :size] + 0.5
    r = np.hypot(yy - cy, xx - cx)
    image = np.zeros((size, size, 3), float)
    image[r <= radius] = cell_rgb
    image[r <= nucleus_radius] = nucleus_rgb
    if noise:
        image += rng.normal(0, noise, image.shape) * (r <= radius)[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def feature(values, name):
    return values[FEATURE_NAMES.index(name)]


# ----------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------


def test_feature_names_are_unique_and_match_the_vector():
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) >= 20
    values = cell_features(drawn_cell())
    assert values.shape == (len(FEATURE_NAMES),) and values.dtype == np.float64
    assert np.isfinite(values).all()


@pytest.mark.parametrize("size", [150, 450])
def test_areas_follow_the_drawn_discs(size):
    s = size / 150
    big = cell_features(drawn_cell(size, 50 * s, 30 * s))
    small = cell_features(drawn_cell(size, 25 * s, 15 * s))
    for values, radius in ((big, 50 * s), (small, 25 * s)):
        assert feature(values, "cell_area") == pytest.approx(math.pi * radius**2, rel=0.05)
        assert feature(values, "cell_diameter") == pytest.approx(2 * radius, rel=0.03)
        assert 0.9 < feature(values, "cell_circularity") < 1.1
        assert feature(values, "cell_solidity") > 0.9
        assert feature(values, "cell_eccentricity") < 0.3
    assert feature(big, "cell_area") / feature(small, "cell_area") == pytest.approx(4, rel=0.08)
    assert feature(big, "nucleus_area") > 3 * feature(small, "nucleus_area")


@pytest.mark.parametrize("nucleus_radius", [55.0, 80.0])
def test_nucleus_fraction_and_nc_ratio_are_close_to_the_truth(nucleus_radius):
    radius = 100.0
    image = drawn_cell(450, radius, nucleus_radius, noise=4.0)
    values = cell_features(image)
    truth = nucleus_radius**2 / radius**2
    assert feature(values, "nucleus_fraction") == pytest.approx(truth, abs=0.03)
    assert feature(values, "nc_ratio") == pytest.approx(truth / (1 - truth), rel=0.12)
    assert feature(values, "nucleus_diameter") == pytest.approx(2 * nucleus_radius, rel=0.04)
    # the darker nucleus has the higher optical density
    assert feature(values, "nucleus_cytoplasm_contrast") > 0.5
    seg = segment_cell(image)
    assert seg.nucleus.sum() < seg.cell.sum() and not (seg.nucleus & ~seg.cell).any()
    assert seg.upsampled("cell").shape == image.shape[:2]


def test_off_centre_nucleus_and_texture_are_measured():
    radius = 60.0
    plain = drawn_cell(300, radius, 30, cell_rgb=(210, 200, 235), nucleus_rgb=(90, 60, 150))
    shifted = np.zeros_like(plain)
    yy, xx = np.mgrid[:300, :300] + 0.5
    shifted[np.hypot(yy - 150, xx - 150) <= radius] = (210, 200, 235)
    shifted[np.hypot(yy - 150, xx - 175) <= 30] = (90, 60, 150)
    assert feature(cell_features(shifted), "nucleus_offset") > feature(cell_features(plain), "nucleus_offset") + 0.2
    grainy = drawn_cell(300, radius, 30, noise=25.0)
    assert (feature(cell_features(grainy), "nucleus_texture_fine")
            > 3 * feature(cell_features(plain), "nucleus_texture_fine"))


def test_features_are_deterministic_and_do_not_depend_on_position():
    a = drawn_cell(200, 50, 30, noise=10.0, seed=3)
    assert np.array_equal(cell_features(a), cell_features(a.copy()))
    moved = np.roll(a, (17, -11), axis=(0, 1))
    assert feature(cell_features(moved), "cell_area") == pytest.approx(feature(cell_features(a), "cell_area"), rel=0.03)


def test_bad_images_give_clear_errors(tmp_path):
    black = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(ValueError, match=r"cell_0\.png: no cell found"):
        cell_features(black, source="cell_0.png")
    with pytest.raises(ValueError, match="uint8 RGB"):
        cell_features(np.zeros((50, 50), np.float32))
    path = tmp_path / "UID_1_1_1_all.png"
    Image.fromarray(black).save(path)
    broken = tmp_path / "UID_1_2_1_all.bmp"
    broken.write_bytes(b"BM not really")
    with pytest.raises(ValueError, match=str(path.name) + ".*no cell"):
        feature_table(pd.DataFrame({"path": [str(path)]}), progress=False)
    with pytest.raises(ImageReadError, match=broken.name):
        feature_table(pd.DataFrame({"path": [str(broken)]}), progress=False)
    with pytest.raises(ValueError, match="'path' column"):
        feature_table(pd.DataFrame({"file": ["x"]}), progress=False)


def test_feature_table_keeps_the_index_and_does_not_depend_on_workers(tmp_path):
    rows = []
    for k in range(6):
        path = tmp_path / f"cell{k}.png"
        Image.fromarray(drawn_cell(120, 30 + 3 * k, 15 + 2 * k, noise=5.0, seed=k)).save(path)
        rows.append(str(path))
    table = pd.DataFrame({"path": rows}, index=[50, 7, 3, 99, 12, 0])
    one = feature_table(table, progress=False, workers=1)
    two = feature_table(table, progress=False, workers=2)
    assert list(one.index) == list(table.index) and list(one.columns) == list(FEATURE_NAMES)
    pd.testing.assert_frame_equal(one, two)
    assert np.array_equal(one.loc[99].to_numpy(), cell_features(np.asarray(Image.open(rows[3]))))
    assert feature_table(table.iloc[:0], progress=False).shape == (0, len(FEATURE_NAMES))


# ----------------------------------------------------------------------------------------------
# a painted data set with subjects
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def painted(tmp_path_factory):
    """6 ALL and 6 normal subjects, 8 cells each, 120 px; blasts larger with a larger nucleus,
    every subject with its own stain tint and size. Returns (root, index table)."""
    from allnet_lib.reader import index_dataset

    root = tmp_path_factory.mktemp("painted")
    rng = np.random.default_rng(0)
    for label, prefix, radius, fraction in (("all", "", 38, 0.80), ("hem", "H", 31, 0.68)):
        for s in range(1, 7):
            subject = f"{prefix}{s}"
            fold = f"fold_{s % 3}"
            tint = rng.normal(0, 18, 3)
            scale = math.exp(rng.normal(0, 0.06))
            folder = root / "C-NMC_training_data" / fold / label
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(8):
                r = radius * scale * math.exp(rng.normal(0, 0.08))
                nr = r * float(np.clip(rng.normal(fraction, 0.04), 0.5, 0.92))
                centre = 60 + rng.uniform(-8, 8, 2)
                image = drawn_cell(120, r, nr, cell_rgb=np.clip((205, 195, 232) + tint, 0, 255),
                                   nucleus_rgb=np.clip((95, 65, 150) + tint, 0, 255), centre=centre,
                                   noise=6.0, seed=int(rng.integers(1 << 30)))
                Image.fromarray(image).save(folder / f"UID_{subject}_{k + 1}_1_{label}.bmp")
    return root, index_dataset(root, progress=False).table


@pytest.fixture(scope="module")
def painted_features(painted):
    _, table = painted
    return feature_table(table, progress=False, workers=1)


def test_classical_baseline_records_fit_the_record_schema(painted, painted_features):
    _, table = painted
    split = compare.make_split(table, "subject", seed=0)
    features = baseline.features_by_path(table, painted_features)
    records = baseline.classical_baseline(split, features=features, n_bootstrap=200)
    assert set(records) == {"features+logreg", "features+forest"}
    for name, record in records.items():
        evaluate.validate_record(record)
        assert record["name"] == name and record["config"]["classical_baseline"] is True
        assert record["config"]["fit_on"] == "train+val" and record["baseline"] == "classical"
        assert record["n_images"] == len(split.test)
        assert record["predictions"]["filename"] == split.test["filename"].tolist()
        assert record["metrics"]["n_subjects"] == split.test["subject"].nunique()
        assert record["metrics"]["ci"]["method"].startswith("stratified cluster bootstrap over subjects")
        assert 0 <= record["training"]["train_accuracy"] <= 1
        assert record["metrics"]["balanced_accuracy"] > 0.75  # separable by construction
    table_of_results = compare.results_table(records)
    assert list(table_of_results["model"]) == ["features+logreg", "features+forest"]
    again = baseline.classical_baseline(split, features=features, models=("forest",), n_bootstrap=0)
    assert again["features+forest"]["predictions"]["p_all"] == records["features+forest"]["predictions"]["p_all"]


def test_given_a_profile_the_baseline_fits_on_the_cnns_training_cells(painted, painted_features):
    from allnet_lib.profiles import get_profile
    from allnet_lib.split import training_parts

    _, table = painted
    split = compare.make_split(table, "subject", seed=0, val_size=0.2)
    features = baseline.features_by_path(table, painted_features)
    profile = get_profile("demo", max_train_images=12)
    cnn_cells = training_parts(split, profile)[0]
    assert len(cnn_cells) == 12 < len(split.train)
    same = baseline.classical_baseline(split, features=features, models=("logistic",), n_bootstrap=0,
                                       profile=profile)["features+logreg"]
    more = baseline.classical_baseline(split, features=features, models=("logistic",), n_bootstrap=0)["features+logreg"]
    assert same["config"]["fit_on"] == baseline.FIT_ON_CNN_CELLS and more["config"]["fit_on"] == "train+val"
    assert same["training"]["n_images"] == 12
    assert same["training"]["n_subjects"] == cnn_cells["subject"].nunique()
    assert more["training"]["n_images"] == len(split.train) + len(split.val)
    assert more["training"]["n_subjects"] == split.train["subject"].nunique() + split.val["subject"].nunique()
    fitted = baseline.fit_classical("logistic", cnn_cells, features)  # the same cells give the same model
    assert same["predictions"]["p_all"] == pytest.approx(
        baseline.evaluate_classical(fitted, split.test, features, n_bootstrap=0)["predictions"]["p_all"])


def test_features_are_looked_up_by_path_not_by_position(painted, painted_features):
    _, table = painted
    split = compare.make_split(table, "subject", seed=1)
    model = baseline.fit_classical("logistic", split.train, baseline.features_by_path(table, painted_features))
    assert model.allnet_facts["n_fit"] == len(split.train)
    # feature_table(table) of the very table works as well (same index) ...
    direct = baseline.evaluate_classical(model, table, painted_features, n_bootstrap=0)
    by_path = baseline.evaluate_classical(model, table, baseline.features_by_path(table, painted_features),
                                          n_bootstrap=0)
    assert direct["predictions"]["p_all"] == by_path["predictions"]["p_all"]
    # ... but features of another table are refused, not silently misaligned
    with pytest.raises(ValueError, match="no features for"):
        baseline.evaluate_classical(model, split.test, painted_features, n_bootstrap=0)
    with pytest.raises(ValueError, match="unknown classical model"):
        baseline.fit_classical("svm", split.train, painted_features)
    with pytest.raises(ValueError, match="one class"):
        baseline.fit_classical("logistic", table[table["y"] == 1], painted_features)


def test_classical_leakage_results_work_with_the_leakage_tools(painted, painted_features):
    from allnet_lib import plots

    _, table = painted
    result = baseline.classical_leakage(table, model="logistic", seeds=(0, 1), features=painted_features,
                                        n_bootstrap=100, progress=False)
    assert result["model"] == "features+logreg" and result["fit_on"] == "train+val"
    assert [r["seed"] for r in result["seeds"]] == [0, 1]
    for seed_result in result["seeds"]:
        halves = compare.leakage_halves(table, seed=seed_result["seed"])
        people = {h: set(pd.concat([s.train, s.val, s.test])["subject"]) for h, s in halves.items()}
        assert not people["A"] & people["B"]  # whole people to one half
        assert people["A"] | people["B"] == set(table["subject"])
        for h, split in halves.items():
            assert seed_result["halves"][h]["subjects"] == sorted(people[h])
            assert seed_result["halves"][h]["split"] == compare._split_facts(split)
            assert seed_result["halves"][h]["split"]["test_subjects_seen_in_training"] > 0
            assert 0 <= seed_result["halves"][h]["fit"]["train_accuracy"] <= 1
        # both scores are of the same cells: every test cell of both halves
        own, held = seed_result["results"]["image"]["test"], seed_result["results"]["image"]["heldout"]
        n_test = sum(len(split.test) for split in halves.values())
        assert own["n_images"] == held["n_images"] == n_test
        assert own["n_subjects"] == held["n_subjects"]
        assert seed_result["optimism_gap"]["accuracy"] == pytest.approx(own["accuracy"] - held["accuracy"])
        assert seed_result["fit"]["image"]["train_accuracy"] == min(
            seed_result["halves"][h]["fit"]["train_accuracy"] for h in halves)
        assert "people seen in training" in compare.leakage_verdict(seed_result)
        rows = compare.leakage_table(seed_result)
        assert len(rows) == 2 and rows["accuracy"].between(0, 1).all()
    ax = plots.plot_leakage(result["seeds"][0])
    plots.plt.close(ax.figure)
    summary = result["summary"]
    assert summary["n_seeds"] == 2 and summary["model"] == "features+logreg"
    seeds_table = baseline.leakage_seeds_table(result["seeds"])
    assert list(seeds_table["seed"]) == [0, 1]
    assert seeds_table["optimism_gap"].tolist() == pytest.approx(summary["optimism_gap"]["values"])
    assert "Over 2 seeds (features+logreg)" in baseline.leakage_seeds_verdict(summary)


# ----------------------------------------------------------------------------------------------
# summaries over seeds, on hand-made results
# ----------------------------------------------------------------------------------------------


def fake_result(seed, own, held, n_subjects=6, train_accuracy=0.95):
    def summary(v):
        return {"accuracy": v, "accuracy_ci": None}

    return {"model": "m", "seed": seed,
            "halves": {h: {"subjects": [f"{h}{i}" for i in range(n_subjects // 2)]} for h in "AB"},
            "splits": {"image": {"n_test": 10 * n_subjects}},
            "results": {"image": {"test": summary(own), "heldout": summary(held)}},
            "fit": {"image": {"train_accuracy": train_accuracy}},
            "optimism_gap": {"accuracy": None if own is None else own - held}}


def test_leakage_over_seeds_arithmetic():
    per_seed = [fake_result(0, 0.9, 0.8), fake_result(1, 0.95, 0.75), fake_result(2, 0.8, 0.8, train_accuracy=0.7)]
    s = baseline.leakage_over_seeds(per_seed)
    gaps = [0.1, 0.2, 0.0]
    assert s["n_seeds"] == 3 and s["seeds"] == [0, 1, 2] and s["n_undefined"] == 0
    assert s["optimism_gap"]["values"] == pytest.approx(gaps)
    assert s["optimism_gap"]["mean"] == pytest.approx(0.1)
    assert s["optimism_gap"]["std"] == pytest.approx(np.std(gaps, ddof=1))
    assert (s["optimism_gap"]["min"], s["optimism_gap"]["max"]) == pytest.approx((0.0, 0.2))
    assert s["optimism_gap"]["n_positive"] == 2
    low, high = s["optimism_gap"]["ci95"]
    assert low < 0.1 < high and (low + high) / 2 == pytest.approx(0.1)
    assert s["train_accuracy"] == [0.95, 0.95, 0.7]
    assert s["mean_heldout"] == pytest.approx((0.8 + 0.75 + 0.8) / 3)
    assert s["mean_score"]["image"]["test"] == pytest.approx((0.9 + 0.95 + 0.8) / 3)
    table = baseline.leakage_seeds_table(per_seed)
    assert table.shape[0] == 3 and table["subjects"].tolist() == [6, 6, 6]
    assert table["test_images"].tolist() == [60, 60, 60] and table["train_accuracy"].tolist() == [0.95, 0.95, 0.7]
    assert table["optimism_gap"].tolist() == pytest.approx(gaps)
    # undefined seeds are counted, not averaged in
    s2 = baseline.leakage_over_seeds(per_seed + [fake_result(3, None, 0.8)])
    assert s2["n_seeds"] == 3 and s2["undefined_seeds"] == [3]
    one = baseline.leakage_over_seeds(per_seed[:1])
    assert one["optimism_gap"]["std"] is None and one["optimism_gap"]["ci95"] is None


def test_leakage_seeds_verdict_claims_only_what_was_measured():
    clear = baseline.leakage_over_seeds([fake_result(i, 0.9 + 0.01 * i, 0.75) for i in range(5)])
    text = baseline.leakage_seeds_verdict(clear)
    assert "Over 5 seeds (m) the same test cells scored 0.170" in text
    assert "gap positive in 5 of 5 seeds" in text and "excludes zero" in text
    mixed = baseline.leakage_over_seeds([fake_result(0, 0.9, 0.8), fake_result(1, 0.7, 0.8),
                                         fake_result(2, 0.75, 0.8)])
    text = baseline.leakage_seeds_verdict(mixed)
    assert "not reliably higher" in text and "positive in only 1 of 3 seeds" in text
    assert "do not show" in text and "scored" not in text
    noisy = baseline.leakage_over_seeds([fake_result(0, 0.9, 0.8), fake_result(1, 0.81, 0.8),
                                         fake_result(2, 0.7, 0.8)])
    assert "includes zero" in baseline.leakage_seeds_verdict(noisy)
    assert "nothing can be said" in baseline.leakage_seeds_verdict(baseline.leakage_over_seeds([]))


# ----------------------------------------------------------------------------------------------
# end to end: the demo set and the command line
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from allnet_lib.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("data") / "demo", n_images=60, image_size=96,
                             progress=False)


def test_baseline_command_on_the_demo_set(demo, capsys):
    from allnet_lib.cli import main

    code = main(["baseline", str(demo), "--no-progress"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 0, text
    assert "features+logreg" in text and "features+forest" in text
    assert "always answering 'all'" in text and "balanced accuracy" in text
    assert "models fitted on train+val (" in text
    code = main(["baseline", str(demo), "--no-progress", "--cnn-cells", "smoke"])
    text = "".join(capsys.readouterr())
    assert code == 0, text
    assert f"models fitted on {baseline.FIT_ON_CNN_CELLS} (8 images of" in text  # smoke: max_train_images 8


def test_baseline_leakage_command(painted, capsys):
    from allnet_lib.cli import main

    root, _ = painted
    code = main(["baseline", str(root), "--leakage", "--seeds", "0", "1", "--model", "logistic",
                 "--no-progress"])
    text = "".join(capsys.readouterr())
    assert code == 0, text
    assert "optimism_gap" in text and "Over 2 seeds (features+logreg)" in text
    code = main(["baseline", str(root / "missing"), "--no-progress"])
    assert code == 2 and "does not exist" in "".join(capsys.readouterr())
