"""allnet_lib.theory.mlp and gradcheck: the hand-written backward pass is right, and the
gradient check would catch it if it were not."""

import numpy as np
import pytest

from allnet_lib.theory import gradcheck, mlp, toy_data


@pytest.mark.parametrize("activation,sizes,l2", [
    ("tanh", (4, 5, 3), 0.0),
    ("relu", (3, 6, 5, 2), 0.01),
    ("sigmoid", (2, 4, 2), 0.1),
])
def test_backward_pass_matches_finite_differences(activation, sizes, l2):
    rng = np.random.default_rng(1)
    net = mlp.MLP(sizes, activation=activation, seed=3, l2=l2)
    x = rng.normal(size=(7, sizes[0]))
    y = rng.integers(0, sizes[-1], 7)
    loss, grads = net.loss_and_grads(x, y)
    assert loss == pytest.approx(net.loss(x, y))
    numeric = gradcheck.numerical_gradients(lambda: net.loss(x, y), net.params)
    assert list(grads) == list(net.params)
    table = gradcheck.compare_gradients(grads, finite_diff=numeric)
    assert (table["finite_diff"] < 1e-7).all(), table


def test_gradient_check_catches_a_bug():
    rng = np.random.default_rng(0)
    net = mlp.MLP((3, 4, 2), seed=0)
    x, y = rng.normal(size=(5, 3)), rng.integers(0, 2, 5)
    _, grads = net.loss_and_grads(x, y)
    numeric = gradcheck.numerical_gradient(lambda: net.loss(x, y), net.params["W1"])
    assert gradcheck.relative_error(grads["W1"], numeric) < 1e-7
    assert gradcheck.relative_error(grads["W1"].T.reshape(grads["W1"].shape), numeric) > 1e-2  # a transposition bug
    assert gradcheck.relative_error(2 * grads["W1"], numeric) == pytest.approx(1 / 3, rel=1e-4)  # a factor of 2


def test_numerical_gradient_restores_parameters_and_checks_dtype():
    p = np.array([1.0, 2.0])
    g = gradcheck.numerical_gradient(lambda: float((p**2).sum()), p)
    np.testing.assert_allclose(g, [2.0, 4.0], rtol=1e-8)
    assert p.tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match="float"):
        gradcheck.numerical_gradient(lambda: 0.0, np.array([1, 2]))


def test_relative_error_properties():
    a = np.array([1.0, -2.0, 3.0])
    assert gradcheck.relative_error(a, a) == 0.0
    assert gradcheck.relative_error(a, -a) == pytest.approx(1.0)
    assert gradcheck.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        gradcheck.relative_error(a, a[:2])
    with pytest.raises(KeyError, match="b1"):
        gradcheck.compare_gradients({"b1": a}, other={})


def test_a_hidden_layer_learns_what_a_linear_model_cannot():
    X, y = toy_data.make_moons(300, noise=0.1, seed=0)
    linear = mlp.MLP((2, 2), seed=0)
    hidden = mlp.MLP((2, 16, 2), activation="tanh", seed=0)
    h_lin = linear.fit(X, y, learning_rate=0.5, epochs=150, batch_size=32)
    h_hid = hidden.fit(X, y, learning_rate=0.5, epochs=150, batch_size=32)
    assert h_hid["loss"][-1] < h_hid["loss"][0]
    acc_lin = (linear.predict(X) == y).mean()
    acc_hid = (hidden.predict(X) == y).mean()
    assert acc_lin < 0.9 < acc_hid
    assert len(h_lin["loss"]) == 150 and h_lin["val_loss"] == []
    np.testing.assert_allclose(hidden.predict_proba(X).sum(axis=1), 1.0)


def test_dead_units():
    acts = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    assert mlp.dead_unit_fraction(acts) == pytest.approx(1 / 3)
    net = mlp.MLP((2, 8, 2), activation="relu", seed=0)
    net.params["b1"][:4] = -100.0  # pushed far negative: these four never fire
    X, _ = toy_data.make_moons(50, seed=1)
    assert mlp.dead_unit_fraction(net.hidden_activations(X)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="hidden layers"):
        net.hidden_activations(X, layer=2)


def test_mlp_validates_sizes_and_is_seeded():
    with pytest.raises(ValueError, match="at least"):
        mlp.MLP((3,))
    a, b = mlp.MLP((3, 4, 2), seed=5), mlp.MLP((3, 4, 2), seed=5)
    np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
    assert a.params["W1"].dtype == np.float64


def test_finite_differences_need_float64():
    X, y = toy_data.make_moons(12, seed=0)
    errors = {}
    for dtype in (np.float64, np.float32):
        net = mlp.MLP((2, 4, 2), seed=0, dtype=dtype)
        _, grads = net.loss_and_grads(X, y)
        errors[dtype] = gradcheck.error_vs_eps(lambda: net.loss(X, y), net.params, grads, eps_values=(1e-2, 1e-5, 1e-9))
    e64, e32 = errors[np.float64]["max relative error"], errors[np.float32]["max relative error"]
    assert e64[1e-5] < 1e-7 < e64[1e-2]  # truncation error at large eps
    assert e64[1e-9] > e64[1e-5]  # rounding error at tiny eps
    assert e32.min() > 1e-6  # float32 never reaches the 1e-6 bar


def test_backward_pass_costs_about_twice_the_forward_pass():
    from allnet_lib.theory.mlp import matmul_costs

    forward, backward = matmul_costs((2, 16, 2), n=10)
    assert (forward, backward) == (10 * (32 + 32), 10 * (32 + 32 + 32))  # ratio 1.5
    f, b = matmul_costs((784,) + (512,) * 8 + (10,), n=1)
    assert 1.8 < b / f < 2.0


def test_initialisations_and_the_gradient_flow_they_give():
    from allnet_lib.theory import toy_data
    from allnet_lib.theory.mlp import INITS, MLP, init_scale, initialisation_table

    assert init_scale("glorot", 30, 20) == pytest.approx(np.sqrt(2 / 50))
    assert init_scale("he", 32, 8) == pytest.approx(0.25) and init_scale("zeros", 3, 3) == 0
    with pytest.raises(ValueError, match="unknown init"):
        init_scale("lecun", 3, 3)
    default = MLP((2, 8, 2), activation="relu", seed=1)
    assert np.array_equal(default.params["W1"], MLP((2, 8, 2), activation="relu", init="he", seed=1).params["W1"])
    X, y = toy_data.make_moons(200, seed=0)
    table = initialisation_table(X, y, depth=10, width=32)
    assert list(table.index.get_level_values("init").unique()) == list(INITS)
    std = table["activation std, last hidden"]
    g1 = table["|dL/dW1|"]
    assert g1["tanh", "zeros"] == 0 and g1["relu", "zeros"] == 0  # symmetry: nothing moves
    assert std["relu", "normal"] > 1e3 and g1["relu", "normal"] > 1e3  # exploding
    assert 0.1 < std["relu", "he"] < 10  # kept on scale
    assert std["relu", "glorot"] < std["relu", "he"] / 5  # Glorot halves ReLU's variance per layer
    assert std["tanh", "normal"] > 0.8  # saturated at +-1
