"""allnet_lib.theory.toy_data and classify: the small data sets and the scorecard."""

import numpy as np
import pytest
from sklearn import metrics as skm

from allnet_lib.theory import classify, toy_data


def test_line_and_moons_are_seeded():
    x1, y1 = toy_data.make_line(50, seed=3)
    x2, y2 = toy_data.make_line(50, seed=3)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape == y1.shape == (50,)
    X, y = toy_data.make_moons(101, seed=0)
    assert X.shape == (101, 2) and set(np.unique(y)) == {0, 1} and y.sum() == 51


def test_rendered_cells_copy_the_class_balance_and_differ_by_class():
    images, y = toy_data.render_cells(60, image_size=32, seed=0)
    assert images.shape == (60, 32, 32, 3) and images.dtype == np.uint8
    assert y.sum() == round(60 * toy_data.P_ALL_CNMC) == 41
    assert (images[:, 0, 0] == 0).all()  # black background, as in C-NMC
    X = toy_data.cell_features(images)
    assert X.shape == (60, 2)
    assert X[y == 1, 0].mean() > X[y == 0, 0].mean()  # blasts are larger
    assert X[y == 1, 1].mean() < X[y == 0, 1].mean()  # ... with a finer chromatin
    assert ((X[:, 0] > 0) & (X[:, 0] < 100)).all() and ((X[:, 1] > 0) & (X[:, 1] < 0.5)).all()
    dark = toy_data.stain_darkness(images)
    assert dark.shape == (60,) and ((dark > 0) & (dark < 1)).all()
    X2, y2, _ = toy_data.cell_feature_data(60, image_size=32, seed=0)
    np.testing.assert_array_equal(X, X2)
    with pytest.raises(ValueError, match="RGB"):
        toy_data.cell_features(images[..., 0])


def test_standardise_and_split():
    X = np.array([[1.0, 10.0], [3.0, 10.0]])
    Xs, mean, std = toy_data.standardise(X)
    assert Xs[:, 0].tolist() == [-1.0, 1.0] and Xs[:, 1].tolist() == [0.0, 0.0]  # constant column stays finite
    Xt, _, _ = toy_data.standardise(np.array([[5.0, 10.0]]), mean, std)
    assert Xt[0, 0] == 3.0
    a, b = np.arange(10), np.arange(10) * 2
    a_tr, a_va, b_tr, b_va = toy_data.train_val_split(a, b, val_fraction=0.3, seed=0)
    assert len(a_va) == 3 and sorted(np.r_[a_tr, a_va]) == list(range(10))
    np.testing.assert_array_equal(b_tr, 2 * a_tr)
    with pytest.raises(ValueError, match="same length"):
        toy_data.train_val_split(a, b[:5])


def test_scores_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.68).astype(int)
    pred = np.where(rng.random(200) < 0.8, y, 1 - y)
    s = classify.scores(y, pred)
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert s["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert s["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert s["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert s["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert s["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert s["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))


def test_always_all_is_68_percent_accurate_on_cnmc_and_finds_no_normal_cell():
    assert classify.majority_share() == pytest.approx(0.682, abs=5e-4)
    y = np.r_[np.ones(7272, int), np.zeros(3389, int)]
    s = classify.scores(y, np.ones_like(y))
    assert s["accuracy"] == pytest.approx(classify.majority_share())
    assert s["specificity"] == 0.0 and s["balanced_accuracy"] == 0.5
    assert s["weighted_f1"] < 0.56
    assert classify.confusion_counts([1, 0], [1, 1]) == {"tp": 1, "fn": 0, "fp": 1, "tn": 0}
    with pytest.raises(ValueError, match="shape"):
        classify.confusion_counts([1, 0], [1])


def test_balanced_class_weight_and_threshold_table():
    from allnet_lib.theory import classify

    y = np.array([1] * 6 + [0] * 2)
    cw = classify.balanced_class_weight(y)
    assert cw == {0: 2.0, 1: 8 / 12}
    assert cw[0] * 2 == pytest.approx(cw[1] * 6)  # each class weighs the same in total
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.55, 0.2])
    table = classify.threshold_table(y, p, [0.0, 0.5, 1.01])
    assert table.loc[0.0, "sensitivity"] == 1 and table.loc[0.0, "specificity"] == 0
    assert table.loc[0.5, "sensitivity"] == pytest.approx(4 / 6) and table.loc[0.5, "specificity"] == 0.5
    assert table.loc[1.01, "sensitivity"] == 0 and table.loc[1.01, "specificity"] == 1
