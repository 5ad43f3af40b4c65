"""allnet_lib.theory.descent: the three gradient-descent variants and the learning-rate story."""

import numpy as np
import pytest

from allnet_lib.theory import descent as D, gradcheck, toy_data


@pytest.fixture(scope="module")
def line():
    return toy_data.make_line(60, seed=0)


@pytest.mark.parametrize("loss,grad", [(D.mse_loss, D.mse_grad), (D.logistic_loss, D.logistic_grad),
                                       (D.sigmoid_mse_loss, D.sigmoid_mse_grad)])
def test_gradients_match_finite_differences(loss, grad):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    y = rng.normal(size=30) if loss is D.mse_loss else (rng.random(30) < 0.5).astype(float)
    theta = rng.normal(size=3)
    numeric = gradcheck.numerical_gradient(lambda: loss(theta, X, y), theta)
    assert gradcheck.relative_error(grad(theta, X, y), numeric) < 1e-8


def test_batch_descent_reaches_least_squares_below_the_critical_rate(line):
    x, y = line
    lr_max = D.critical_learning_rate(x)
    run = D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.9 * lr_max, epochs=400)
    np.testing.assert_allclose(run.theta, D.least_squares(x, y), atol=1e-4)
    assert not run.diverged
    assert np.all(np.diff(run.loss) <= 1e-12)  # on a quadratic, below 2/lambda_max every step goes downhill


def test_above_the_critical_rate_it_diverges(line):
    x, y = line
    lr_max = D.critical_learning_rate(x)
    run = D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=1.1 * lr_max, epochs=500)
    assert run.diverged and run.final_loss > 1e8
    assert run.n_updates < 500  # stopped early, no overflow warnings
    slow = D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.01 * lr_max, epochs=50)
    good = D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.5 * lr_max, epochs=50)
    assert good.final_loss < slow.final_loss


def test_variants_take_the_expected_number_of_steps(line):
    x, y = line
    runs = D.compare_variants(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.01, epochs=3, mini_batch=16)
    assert list(runs) == ["batch", "stochastic", "mini-batch"]
    assert runs["batch"].n_updates == 3
    assert runs["stochastic"].n_updates == 3 * 60
    assert runs["mini-batch"].n_updates == 3 * 4  # ceil(60 / 16)
    assert runs["mini-batch"].method == "mini-batch (16)"
    for run in runs.values():
        assert run.path.shape == (run.n_updates + 1, 2)
        assert run.loss.shape == (run.n_updates + 1,)
        assert len(run.loss_per_epoch()) == 4
        assert run.loss_per_epoch()[-1] < run.loss[0]
    # per update, stochastic descent gets further than batch descent in the same epochs
    assert runs["stochastic"].final_loss < runs["batch"].final_loss


def test_runs_are_seeded(line):
    x, y = line
    a = D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.01, epochs=2, batch_size=1, seed=4)
    b = D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.01, epochs=2, batch_size=1, seed=4)
    c = D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.01, epochs=2, batch_size=1, seed=5)
    np.testing.assert_array_equal(a.path, b.path)
    assert not np.array_equal(a.path, c.path)
    with pytest.raises(ValueError, match="batch_size"):
        D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.01, epochs=1, batch_size=0)


def test_sweep_and_surface(line):
    x, y = line
    sweep = D.learning_rate_sweep(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, [0.001, 0.1], epochs=5)
    assert list(sweep) == [0.001, 0.1] and sweep[0.1].final_loss < sweep[0.001].final_loss
    W, B, Lgrid = D.loss_surface(D.mse_loss, x, y, (-1, 3), (-2, 2), n=20)
    assert W.shape == B.shape == Lgrid.shape == (20, 20)
    i, j = np.unravel_index(Lgrid.argmin(), Lgrid.shape)
    w_opt, b_opt = D.least_squares(x, y)
    assert abs(W[i, j] - w_opt) < 0.25 and abs(B[i, j] - b_opt) < 0.25
    with pytest.raises(ValueError, match="one-feature"):
        D.loss_surface(D.mse_loss, np.c_[x, x], y, (0, 1), (0, 1))


def test_logistic_regression_draws_a_line():
    X, y = toy_data.make_moons(200, noise=0.1, seed=0)
    run = D.run_descent(D.logistic_loss, D.logistic_grad, np.zeros(3), X, y, learning_rate=1.0, epochs=300)
    acc = ((D.predict_proba_logistic(run.theta, X) > 0.5) == y).mean()
    assert 0.8 < acc < 0.95  # a line does well on moons, but not perfectly
