"""allnet_lib.theory.regularise, NumPy side: penalties, dropout, batch norm, early stopping,
augmentation and the polynomial picture of overfitting."""

import numpy as np
import pytest

from allnet_lib.theory import gradcheck, regularise as R


def test_penalties_and_their_gradients():
    w = np.array([[1.0, -2.0], [0.5, 0.0]])
    assert R.l1_penalty(w, 0.1) == pytest.approx(0.35)
    assert R.l2_penalty([w, w], 0.1) == pytest.approx(2 * 0.1 * 5.25)
    np.testing.assert_allclose(R.l2_grad(w, 0.1), 0.2 * w)
    w2 = np.array([1.0, -2.0, 0.5])  # no zero: |w| has no derivative there
    numeric = gradcheck.numerical_gradient(lambda: R.l1_penalty(w2, 0.3), w2)
    np.testing.assert_allclose(R.l1_grad(w2, 0.3), numeric, rtol=1e-6)


def test_inverted_dropout_keeps_the_expected_value():
    rng = np.random.default_rng(0)
    x = np.ones(100_000)
    out = R.dropout(x, 0.4, rng)
    assert (out == 0).mean() == pytest.approx(0.4, abs=0.01)
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.6])
    assert out.mean() == pytest.approx(1.0, abs=0.01)
    assert (R.dropout(x, 0.4, rng, training=False) == x).all()  # identity at inference
    with pytest.raises(ValueError, match="rate"):
        R.dropout(x, 1.0, rng)


def test_batch_norm_normalises_each_channel():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(64, 4, 4, 2))
    out, mean, var = R.batch_norm_train(x, np.ones(2), np.zeros(2))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-3)  # eps = 1e-3 makes it a hair below 1
    scaled, _, _ = R.batch_norm_train(x, np.array([2.0, 2.0]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(scaled, 2 * out + 1)
    inf = R.batch_norm_inference(x, np.ones(2), np.zeros(2), mean, var)
    np.testing.assert_allclose(inf, out)  # with the batch's own statistics: the same
    assert R.update_moving(0.0, 1.0, momentum=0.9) == pytest.approx(0.1)


@pytest.mark.parametrize("curve,patience,expected", [
    ([1.0, 0.9, 0.8, 0.7], 2, (None, 3)),  # always improving: never stops
    ([1.0, 0.8, 0.85, 0.9, 0.95], 2, (3, 1)),  # best at 1, two bad epochs -> stop at 3
    ([1.0, 0.8, 0.85, 0.79, 0.9, 0.91, 0.92], 3, (6, 3)),
    ([0.5, 0.6], 1, (1, 0)),
])
def test_early_stopping_rule(curve, patience, expected):
    stop = R.early_stopping(curve, patience)
    assert (stop.stopped_epoch, stop.best_epoch) == expected
    assert stop.best_value == min(curve[: (stop.stopped_epoch or len(curve)) + 1])


def test_early_stopping_min_delta():
    # 0.79 improves on 0.8 by less than min_delta: not an improvement
    assert R.early_stopping([1.0, 0.8, 0.79, 0.795], 2, min_delta=0.05).stopped_epoch == 3


def test_flip_rotate_gives_one_of_the_eight_symmetries():
    rng = np.random.default_rng(0)
    img = np.arange(16).reshape(1, 4, 4, 1)
    variants = {tuple(np.rot90(im, k).ravel()) for k in range(4) for im in (img[0], img[0][:, ::-1])}
    assert len(variants) == 8
    seen = {tuple(R.flip_rotate(img, rng)[0].ravel()) for _ in range(200)}
    assert seen == variants


def test_polynomials_overfit_and_penalties_tame_them():
    x, y = R.make_curve(15, seed=0)
    xv, yv = R.make_curve(200, seed=1)
    errors = R.polynomial_errors(x, y, xv, yv, [1, 3, 12])
    assert errors.loc[12, "train"] < errors.loc[3, "train"] < errors.loc[1, "train"]
    assert errors.loc[12, "validation"] > 10 * errors.loc[3, "validation"]
    tamed = R.polynomial_errors(x, y, xv, yv, [12], l2=1e-3)
    assert tamed.loc[12, "validation"] < errors.loc[12, "validation"] / 10
    X = R.polynomial_features(x, 12)
    w_ridge, _ = R.ridge_fit(X, y, 1e-3)
    w_lasso, _ = R.lasso_fit(X, y, 1e-2)
    assert (w_ridge != 0).all() and (w_lasso == 0).sum() >= 4  # L1 zeroes weights, L2 only shrinks
    X5 = R.polynomial_features(x, 5)
    w_free, b_free = R.ridge_fit(X5, y, 0.0)
    exact = np.linalg.lstsq(np.c_[X5, np.ones(len(x))], y, rcond=None)[0]
    np.testing.assert_allclose(np.append(w_free, b_free), exact, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(R.soft_threshold(np.array([-2.0, 0.5, 3.0]), 1.0), [-1.0, 0.0, 2.0])


def test_l1_gives_exact_zeros_only_with_the_soft_threshold_step():
    """Plain (sub)gradient steps with the L1 pull leave no weight at exactly 0; ISTA does."""
    x, t = R.make_curve(15, seed=0)
    X = R.polynomial_features(x, 12)
    w_prox, _ = R.lasso_fit(X, t, 1e-2)
    w_grad, _ = R.l1_gradient_fit(X, t, 1e-2)
    assert (w_prox == 0).sum() >= 3
    assert (w_grad == 0).sum() == 0
    # ... but the weights ISTA zeroes are small under plain steps too
    assert np.abs(w_grad[w_prox == 0]).max() < 0.1 * np.abs(w_grad).max()


def test_summaries_rank_by_best_validation_loss_not_by_gap():
    import pandas as pd

    idx = pd.RangeIndex(1, 4, name="epoch")
    learns = pd.DataFrame({"loss": [0.5, 0.2, 0.05], "accuracy": [0.7, 0.9, 1.0],
                           "val_loss": [0.5, 0.3, 0.4], "val_accuracy": [0.7, 0.85, 0.8]}, index=idx)
    flat = pd.DataFrame({"loss": [0.69] * 3, "accuracy": [0.5] * 3,
                         "val_loss": [0.69] * 3, "val_accuracy": [0.5] * 3}, index=idx)
    summary = R.summarise_curves({"no learning": flat, "learns": learns})
    assert list(summary.index) == ["learns", "no learning"]  # although its gap is far larger
    assert summary.loc["learns", "gap"] > summary.loc["no learning", "gap"]
    assert summary.loc["learns", "val accuracy at best"] == 0.85
    seeds = R.summarise_seeds({0: {"no learning": flat, "learns": learns},
                               1: {"no learning": flat, "learns": learns * 1.1}})
    assert list(seeds.index) == ["learns", "no learning"] and (seeds["seeds"] == 2).all()
    assert seeds.loc["learns", "best val loss (mean)"] == pytest.approx((0.3 + 0.33) / 2)
