"""The NumPy definitions of allnet_lib.theory agree with Keras (float64, tight tolerances)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from allnet_lib.theory import descent as D, gradcheck, keras_ref as K, layers as L, mlp  # noqa: E402
from allnet_lib.theory import regularise as R, toy_data  # noqa: E402


@pytest.mark.parametrize("stride,padding", [(1, "valid"), (1, "same"), (2, "same"), (3, "valid")])
def test_conv_pool_dense_equal_keras(stride, padding):
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(2, 9, 8, 3))
    w, b = rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4)
    np.testing.assert_allclose(L.conv2d(x, w, b, stride, padding), K.conv2d(x, w, b, stride, padding),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(L.max_pool2d(x, 2, stride, padding), K.max_pool2d(x, 2, stride, padding))
    wd, bd = rng.normal(size=(3, 5)), rng.normal(size=5)
    np.testing.assert_allclose(L.dense(x[:, 0, 0], wd, bd), K.dense(x[:, 0, 0], wd, bd), rtol=1e-12)


def test_activations_and_losses_equal_keras():
    z = np.linspace(-6, 6, 25)
    for name in ("relu", "sigmoid", "tanh"):
        np.testing.assert_allclose(L.get_activation(name)[0](z), K.activation(name, z), rtol=1e-7, atol=1e-12)
    logits = np.array([[1000.0, 0.0, -5.0], [0.5, 0.1, 2.0]])
    y = np.array([1, 2])
    assert L.softmax_cross_entropy(logits, y) == pytest.approx(K.softmax_cross_entropy(logits, y), rel=1e-9)
    np.testing.assert_allclose(L.softmax(logits), K.activation("softmax", logits), rtol=1e-9)
    p = np.array([0.9, 0.2, 0.6])
    t = np.array([1, 0, 0])
    assert L.binary_cross_entropy(p, t) == pytest.approx(K.binary_cross_entropy(p, t), rel=1e-6)


@pytest.mark.parametrize("activation,l2", [("tanh", 0.0), ("relu", 0.01)])
def test_manual_backprop_equals_keras_autodiff(activation, l2):
    rng = np.random.default_rng(0)
    net = mlp.MLP((4, 6, 5, 3), activation=activation, seed=1, l2=l2)
    x, y = rng.normal(size=(9, 4)), rng.integers(0, 3, 9)
    _, grads = net.loss_and_grads(x, y)
    table = gradcheck.compare_gradients(grads, keras=K.mlp_gradients(net, x, y))
    assert (table["keras"] < 1e-6).all(), table


def test_batch_norm_dropout_penalty_equal_keras():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(16, 3, 3, 2))
    gamma, beta = rng.normal(size=2), rng.normal(size=2)
    out, mean, var = R.batch_norm_train(x, gamma, beta)
    k_out, k_mean, k_var = K.batch_norm(x, gamma, beta, training=True)
    np.testing.assert_allclose(out, k_out, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(R.update_moving(np.zeros(2), mean), k_mean, rtol=1e-9)
    np.testing.assert_allclose(R.update_moving(np.ones(2), var), k_var, rtol=1e-9)  # biased variance
    inf, _, _ = K.batch_norm(x, gamma, beta, training=False, moving_mean=mean, moving_var=var)
    np.testing.assert_allclose(R.batch_norm_inference(x, gamma, beta, mean, var), inf, rtol=1e-9)
    d = K.dropout(np.ones(10_000), 0.3)
    np.testing.assert_allclose(np.unique(d), [0.0, 1 / 0.7])
    assert (d == 0).mean() == pytest.approx(0.3, abs=0.02)
    w = rng.normal(size=(3, 4))
    assert K.penalty(w, l1=0.1, l2=0.2) == pytest.approx(R.l1_penalty(w, 0.1) + R.l2_penalty(w, 0.2), rel=1e-6)


def test_early_stopping_replays_like_keras():
    rng = np.random.default_rng(0)
    for _ in range(20):
        curve = 1 / np.arange(1, 31) + 0.01 * np.arange(30) + rng.normal(0, 0.02, 30)
        for patience in (1, 3, 5):
            ours = R.early_stopping(curve, patience)
            assert (ours.stopped_epoch, ours.best_epoch) == K.early_stopping(curve, patience)


def test_batch_gradient_descent_equals_keras_sgd():
    x, y = toy_data.make_line(40, seed=2)
    run = D.run_descent(D.mse_loss, D.mse_grad, [0.5, -0.5], x, y, learning_rate=0.05, epochs=8)
    theta = K.linear_model_sgd(x, y, [0.5, -0.5], learning_rate=0.05, epochs=8)
    # Keras keeps the learning rate in float32 (0.05 -> 0.0500000007): agreement to ~1e-8
    np.testing.assert_allclose(run.theta, theta, rtol=1e-6)
    assert gradcheck.relative_error(run.theta, run.path[0]) > 0.1  # it did move
    X, yc = toy_data.make_moons(30, seed=0)
    run = D.run_descent(D.logistic_loss, D.logistic_grad, [0.1, -0.2, 0.0], X, yc, learning_rate=0.5, epochs=6)
    theta = K.linear_model_sgd(X, yc, [0.1, -0.2, 0.0], learning_rate=0.5, epochs=6, loss="logistic")
    np.testing.assert_allclose(run.theta, theta, rtol=1e-6)
    with pytest.raises(ValueError, match="loss must be"):
        K.linear_model_sgd(X, yc, [0, 0, 0], learning_rate=0.1, epochs=1, loss="hinge")


def test_parameter_counts_equal_keras():
    assert K.count_params(keras.layers.Conv2D(256, 3), (38, 38, 128)) == L.conv2d_params(3, 3, 128, 256)
    assert K.count_params(keras.layers.Conv2D(256, 3), (5, 5, 128)) == 295_168  # size-independent
    assert K.count_params(keras.layers.Dense(1000), (4096,)) == L.dense_params(4096, 1000)
    assert K.count_params(keras.layers.BatchNormalization(), (7, 7, 256)) == sum(L.batchnorm_params(256))


def test_small_model_experiment_runs_and_measures_in_inference_mode():
    images, y = toy_data.render_cells(24, image_size=16, p_all=0.5, seed=0)
    x = images.astype("float32") / 255
    curves = R.regularisation_experiment(x[:16], y[:16], x[16:], y[16:], variants=("dropout",),
                                         epochs=2, batch_size=8)
    curves["copy"] = curves["dropout"]
    assert list(curves) == ["dropout", "copy"]
    for c in curves.values():
        assert list(c.columns) == ["loss", "accuracy", "val_loss", "val_accuracy"]
        assert list(c.index) == [1, 2] and np.isfinite(c.to_numpy()).all()
    summary = R.summarise_curves(curves, patience=1)
    assert list(summary.index) == ["dropout", "copy"] and "gap" in summary
    with pytest.raises(ValueError, match="unknown variant"):
        R.build_small_model((16, 16, 3), "weight decay")
    model = R.build_small_model((16, 16, 3), "L2")
    assert any(layer.kernel_regularizer is not None for layer in model.layers if hasattr(layer, "kernel_regularizer"))


def test_small_model_augments_with_the_reports_flips_and_batch_norm_fits_the_run():
    from allnet_lib.augment import FlipRotate

    model = R.build_small_model((16, 16, 3), "augmentation")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert isinstance(model.layers[0], FlipRotate) and "RandomRotation" not in kinds
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")
    out = np.asarray(model.layers[0](x, training=True))
    for a, b in zip(x, out):  # each output is one of the 8 flips/rotations of its input
        assert any(np.array_equal(b, v) for v in
                   [np.rot90(m, k) for m in (a, a[:, ::-1]) for k in range(4)])
    bn = [layer for layer in R.build_small_model((16, 16, 3), "batch norm").layers
          if type(layer).__name__ == "BatchNormalization"]
    assert len(bn) == 1 and bn[0].momentum == R.SmallNetConfig().bn_momentum == 0.9


def test_class_weighted_loss_equals_keras_class_weight():
    from allnet_lib.theory import classify, toy_data

    X, y = toy_data.make_moons(60, seed=1)
    y = np.where(np.arange(60) < 15, 0, 1)  # imbalanced: 45 ALL, 15 hem
    cw = classify.balanced_class_weight(y)
    loss, grad = D.class_weighted_logistic(cw)
    ours = D.run_descent(loss, grad, [0.1, -0.2, 0.0], X, y, learning_rate=0.5, epochs=10).theta
    theirs = K.linear_model_sgd(X, y, [0.1, -0.2, 0.0], learning_rate=0.5, epochs=10, loss="logistic",
                                class_weight=cw)
    # Keras keeps the learning rate in float32: agreement to ~1e-7 of the parameters' size
    assert np.abs(ours - theirs).max() < 1e-6 * np.abs(theirs).max()
    plain = D.run_descent(D.logistic_loss, D.logistic_grad, [0.1, -0.2, 0.0], X, y, learning_rate=0.5,
                          epochs=10).theta
    assert np.abs(plain - ours).max() > 1e-2  # the weights do change the fit
    # weights of 1 are the plain loss
    one = D.class_weighted_logistic({0: 1.0, 1: 1.0})[0]
    assert one(plain, X, y) == pytest.approx(D.logistic_loss(plain, X, y), rel=1e-12)


def test_initialisation_scales_equal_keras_initializers():
    from allnet_lib.theory import mlp as M

    for name, ours in (("glorot_normal", "glorot"), ("he_normal", "he")):
        assert K.initializer_std(name, (256, 128)) == pytest.approx(M.init_scale(ours, 256, 128), rel=0.03)
