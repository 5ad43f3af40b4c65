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


# -- momentum, Nesterov, Adam, schedules -----------------------------------------------------


def test_momentum_zero_and_constant_schedule_are_plain_descent(line):
    x, y = line
    plain = D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.05, epochs=20)
    same = D.run_descent(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=lambda t: 0.05, epochs=20,
                         optimizer=D.SGD(0.0))
    np.testing.assert_array_equal(plain.path, same.path)
    with pytest.raises(ValueError, match="momentum"):
        D.SGD(1.0)


def test_momentum_and_adam_by_hand_two_steps():
    X, y = np.array([[1.0], [2.0]]), np.array([1.0, 3.0])
    theta0 = np.array([0.0, 0.0])
    g0 = D.mse_grad(theta0, X, y)
    run = D.run_descent(D.mse_loss, D.mse_grad, theta0, X, y, learning_rate=0.1, epochs=2,
                        optimizer=D.SGD(0.9))
    v1 = -0.1 * g0
    np.testing.assert_allclose(run.path[1], theta0 + v1)
    v2 = 0.9 * v1 - 0.1 * D.mse_grad(run.path[1], X, y)
    np.testing.assert_allclose(run.path[2], run.path[1] + v2)
    nest = D.run_descent(D.mse_loss, D.mse_grad, theta0, X, y, learning_rate=0.1, epochs=1,
                         optimizer=D.SGD(0.9, nesterov=True))
    np.testing.assert_allclose(nest.path[1], theta0 + 0.9 * v1 - 0.1 * g0)
    adam = D.run_descent(D.mse_loss, D.mse_grad, theta0, X, y, learning_rate=0.1, epochs=1, optimizer=D.Adam())
    # first Adam step: m = 0.1 g, v = 0.001 g^2, bias-corrected: a step of lr * sign(g) (up to epsilon)
    np.testing.assert_allclose(adam.path[1], theta0 - 0.1 * np.sign(g0), rtol=1e-5)


def test_schedules_match_their_formulas():
    inv = D.inverse_time_decay(0.1, 100, 1.0)
    assert inv(0) == 0.1 and np.isclose(inv(100), 0.05)
    exp = D.exponential_decay(0.1, 10, 0.5)
    assert np.isclose(exp(10), 0.05) and np.isclose(exp(20), 0.025)


def test_momentum_and_adam_beat_plain_descent_in_the_valley(line):
    x, y = line
    eta = 0.1 * D.critical_learning_rate(x)
    best = D.least_squares(x, y)
    runs = D.compare_optimizers(D.mse_loss, D.mse_grad, [-1.0, 2.0], x, y, {
        "plain": (D.SGD(), eta), "momentum": (D.SGD(0.9), eta), "nesterov": (D.SGD(0.9, nesterov=True), eta),
        "adam": (D.Adam(), 0.1)}, epochs=100)
    dist = {k: np.linalg.norm(r.theta - best) for k, r in runs.items()}
    assert max(dist["momentum"], dist["nesterov"], dist["adam"]) < dist["plain"] / 5, dist
    assert runs["adam"].method == "Adam, batch" and runs["nesterov"].method == "Nesterov 0.9, batch"


def _keras_path(x, y, start, optimizer, steps):
    pytest.importorskip("keras")
    from allnet_lib.theory import keras_ref

    return keras_ref.linear_model_path(x, y, start, optimizer, steps=steps)


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_optimizers_equal_keras_step_by_step(line):
    keras = pytest.importorskip("keras")
    x, y = line
    start, steps = [-1.0, 2.0], 30
    eta = 0.1 * D.critical_learning_rate(x)
    sched = keras.optimizers.schedules
    cases = [
        (D.SGD(0.9), eta, keras.optimizers.SGD(eta, momentum=0.9), 1e-6),
        (D.SGD(0.9, nesterov=True), eta, keras.optimizers.SGD(eta, momentum=0.9, nesterov=True), 1e-6),
        (D.SGD(), D.inverse_time_decay(5 * eta, 10, 1.0),
         keras.optimizers.SGD(sched.InverseTimeDecay(5 * eta, 10, 1.0)), 1e-6),
        (D.SGD(0.9), D.exponential_decay(eta, 10, 0.5),
         keras.optimizers.SGD(sched.ExponentialDecay(eta, 10, 0.5), momentum=0.9), 1e-6),
        (D.Adam(), 0.1, keras.optimizers.Adam(0.1), 1e-4),
    ]
    for ours_opt, lr, theirs_opt, tol in cases:
        ours = D.run_descent(D.mse_loss, D.mse_grad, start, x, y, learning_rate=lr, epochs=steps,
                             optimizer=ours_opt).path
        theirs = _keras_path(x, y, start, theirs_opt, steps)
        assert ours.shape == theirs.shape == (steps + 1, 2)
        assert _rel(ours, theirs) < tol, (ours_opt.name, _rel(ours, theirs))


class _AdamFloat32Powers(D.Adam):
    """Adam with the bias corrections computed from float32-rounded betas, as Keras 3 does."""

    def step(self, theta, g, lr):
        b1, b2 = self.beta_1, self.beta_2
        self.t += 1
        self.m = self.m + (1 - b1) * (g - self.m)
        self.v = self.v + (1 - b2) * (g * g - self.v)
        p1, p2 = float(np.float32(b1)) ** self.t, float(np.float32(b2)) ** self.t
        alpha = lr * np.sqrt(1 - p2) / (1 - p1)
        return theta - alpha * self.m / (np.sqrt(self.v) + self.epsilon)


def test_adam_difference_from_keras_is_its_float32_betas(line):
    """Why Adam agrees with Keras to 1e-4 only: Keras's bias corrections use beta_2 = 0.999
    rounded to float32 (1 - beta_2 off by 1.3e-5). Rounding the same way, the two agree to 1e-8."""
    keras = pytest.importorskip("keras")
    x, y = line
    lr = 0.125  # exact in float32, so the learning rate is not a second source of difference
    ours = D.run_descent(D.mse_loss, D.mse_grad, [-1.0, 2.0], x, y, learning_rate=lr, epochs=20,
                         optimizer=_AdamFloat32Powers()).path
    theirs = _keras_path(x, y, [-1.0, 2.0], keras.optimizers.Adam(lr), 20)
    assert _rel(ours, theirs) < 1e-8
