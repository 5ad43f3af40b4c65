"""The same computations done by Keras, so each NumPy definition can be checked against it.

Every function takes and returns NumPy arrays; inside, it builds the Keras layer (in float64,
so a comparison can be tight), loads the given weights and runs it. Keras is imported inside the
functions, keeping ``allnet_lib.theory`` importable without it.

Gradients use the backend's automatic differentiation: ``tf.GradientTape`` with TensorFlow,
``jax.grad`` (through ``model.stateless_call``) with JAX, ``loss.backward()`` with PyTorch.
"""

from __future__ import annotations

import numpy as np

F64 = "float64"


def _float64() -> str:
    """The dtype name for Keras layers here; under JAX, first switch on its 64-bit mode.

    JAX computes in float32 unless ``jax_enable_x64`` is set, and would silently turn these
    float64 checks into float32 ones (errors near 1e-7 instead of 1e-16). The flag only changes
    the precision of arrays created afterwards; models built in float32 stay float32.
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
    return F64


def _np(t) -> np.ndarray:
    import keras

    if isinstance(t, keras.Variable):
        return np.asarray(t.numpy())
    return np.asarray(keras.ops.convert_to_numpy(t))


# ----------------------------------------------------------------------------------------------
# Layers and activations
# ----------------------------------------------------------------------------------------------


def dense(x, w, b):
    """``keras.layers.Dense`` with kernel ``w`` (n_in, n_out) and bias ``b``."""
    import keras

    layer = keras.layers.Dense(w.shape[1], dtype=_float64())
    layer.build((None, w.shape[0]))
    layer.set_weights([w, b])
    return _np(layer(np.asarray(x, np.float64)))


def conv2d(x, w, b, stride: int = 1, padding: str = "valid"):
    """``keras.layers.Conv2D`` with kernel ``w`` (kh, kw, C_in, C_out) and bias ``b``."""
    import keras

    x = np.asarray(x, np.float64)
    layer = keras.layers.Conv2D(w.shape[3], w.shape[:2], strides=stride, padding=padding, dtype=_float64())
    layer.build((None,) + x.shape[1:])
    layer.set_weights([w, b])
    return _np(layer(x))


def max_pool2d(x, pool_size: int = 2, stride: int | None = None, padding: str = "valid"):
    """``keras.layers.MaxPooling2D`` (``strides`` defaults to ``pool_size``, as in Keras)."""
    import keras

    layer = keras.layers.MaxPooling2D(pool_size, strides=stride, padding=padding, dtype=_float64())
    return _np(layer(np.asarray(x, np.float64)))


def activation(name: str, z):
    """``keras.activations.<name>`` applied to z (float64)."""
    import keras

    _float64()
    z = keras.ops.convert_to_tensor(np.asarray(z, np.float64))
    return _np(keras.activations.get(name)(z))


def softmax_cross_entropy(logits, y) -> float:
    """``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``: the stable version."""
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=_float64())
    return float(_np(loss(np.asarray(y), np.asarray(logits, np.float64))))


def binary_cross_entropy(p, y) -> float:
    """``keras.losses.BinaryCrossentropy`` on probabilities."""
    import keras

    loss = keras.losses.BinaryCrossentropy(dtype=_float64())
    return float(_np(loss(np.asarray(y, np.float64)[:, None], np.asarray(p, np.float64)[:, None])))


def count_params(layer, input_shape) -> int:
    """Build a Keras layer for ``input_shape`` (without the batch axis) and count its weights."""
    layer.build((None,) + tuple(input_shape))
    return int(layer.count_params())


# ----------------------------------------------------------------------------------------------
# Models and gradients
# ----------------------------------------------------------------------------------------------


def mlp_model(mlp):
    """A Keras ``Sequential`` equal to an ``allnet_lib.theory.mlp.MLP``: same layers, same weights.

    The last Dense layer outputs logits, as in the MLP; L2 is attached as ``kernel_regularizer``.
    """
    import keras

    reg = keras.regularizers.L2(mlp.l2) if mlp.l2 else None
    stack = [keras.Input((mlp.sizes[0],), dtype=_float64())]
    for i, n_out in enumerate(mlp.sizes[1:], start=1):
        act = None if i == mlp.n_layers else mlp.activation
        stack.append(keras.layers.Dense(n_out, activation=act, kernel_regularizer=reg, dtype=_float64(),
                                        name=f"dense_{i}"))
    model = keras.Sequential(stack)
    for i in range(1, mlp.n_layers + 1):
        model.get_layer(f"dense_{i}").set_weights([mlp.params[f"W{i}"], mlp.params[f"b{i}"]])
    return model


def gradients(model, x, y, loss_fn=None) -> list[np.ndarray]:
    """d loss / d (each trainable variable) by the backend's autodiff, in variable order.

    ``loss_fn(y, logits)`` defaults to sparse softmax cross-entropy from logits; regularisation
    losses the model collected (``model.losses``) are added, as ``fit`` would.
    """
    import keras

    if loss_fn is None:
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=_float64())
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = loss_fn(y, out) + sum(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
    elif backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def f(tv):
            out, _, losses = model.stateless_call(tv, frozen, x, training=True, return_losses=True)
            return loss_fn(y, out) + sum(losses)

        grads = jax.grad(f)(trainable)
    elif backend == "torch":
        for v in model.trainable_variables:
            v.value.grad = None
        out = model(x, training=True)
        loss = loss_fn(y, out) + sum(model.losses)
        loss.backward()
        grads = [v.value.grad for v in model.trainable_variables]
    else:
        raise NotImplementedError(
            f"gradients() supports the tensorflow, jax and torch backends, not {backend!r}")
    return [_np(g) for g in grads]


def mlp_gradients(mlp, x, y) -> dict[str, np.ndarray]:
    """Keras's gradients for the network of an ``MLP``, keyed like ``mlp.params`` (W1, b1, ...)."""
    model = mlp_model(mlp)
    grads = gradients(model, x, y)
    names = [f"{p}{i}" for i in range(1, mlp.n_layers + 1) for p in ("W", "b")]
    return {name: g for name, g in zip(names, grads)}


def linear_model_sgd(X, y, theta0, *, learning_rate: float, epochs: int, loss: str = "mse",
                     batch_size: int | None = None, class_weight: dict | None = None):
    """Train ``Dense(1)`` with ``keras.optimizers.SGD`` and return theta = (w..., b).

    ``loss="mse"``: least squares (``descent.mse_loss``); ``loss="logistic"``: binary
    cross-entropy on the logit (``descent.logistic_loss``, Keras's ``from_logits=True``).
    Batches are taken in order, without shuffling; with ``batch_size=None`` (the whole set)
    this is batch gradient descent and must land where ``descent.run_descent`` lands.
    Steps go through ``train_on_batch``: on a few hundred numbers, ``fit`` would spend its time
    setting up epochs. ``class_weight`` ({class: weight}) is passed on, as to ``fit``.
    """
    import keras

    losses = {"mse": "mse", "logistic": keras.losses.BinaryCrossentropy(from_logits=True)}
    if loss not in losses:
        raise ValueError(f"loss must be one of {sorted(losses)}, got {loss!r}")
    X = np.asarray(X, np.float64)
    X = X[:, None] if X.ndim == 1 else X
    y = np.asarray(y, np.float64)
    theta0 = np.asarray(theta0, np.float64)
    f64 = _float64()
    model = keras.Sequential([keras.Input((X.shape[1],), dtype=f64), keras.layers.Dense(1, dtype=f64)])
    model.layers[0].set_weights([theta0[:-1, None], theta0[-1:]])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=losses[loss])
    bs = batch_size or len(X)
    for _ in range(epochs):
        for start in range(0, len(X), bs):
            model.train_on_batch(X[start : start + bs], y[start : start + bs, None], class_weight=class_weight)
    w, b = model.layers[0].get_weights()
    return np.append(w[:, 0], b)


def initializer_std(name: str, shape, seed: int = 0) -> float:
    """Standard deviation of one draw of ``keras.initializers.get(name)`` (e.g. "glorot_normal")."""
    import keras

    init = keras.initializers.get({"class_name": name, "config": {"seed": seed}}) if name != "zeros" \
        else keras.initializers.Zeros()
    return float(np.std(_np(init(tuple(shape), dtype="float32"))))


def linear_model_path(X, y, theta0, optimizer, *, steps: int, loss: str = "mse") -> np.ndarray:
    """Train ``Dense(1)`` with a Keras ``optimizer`` on the whole set, one step at a time.

    Returns every theta = (w..., b) visited, shape ``(steps + 1, d + 1)``, the start included,
    to compare step by step with ``descent.run_descent(..., optimizer=...)`` (batch descent).
    ``optimizer`` is any Keras optimizer, e.g. ``keras.optimizers.Adam(0.1)`` or
    ``SGD(schedule, momentum=0.9, nesterov=True)``; it must be fresh (no steps taken).
    """
    import keras

    losses = {"mse": "mse", "logistic": keras.losses.BinaryCrossentropy(from_logits=True)}
    if loss not in losses:
        raise ValueError(f"loss must be one of {sorted(losses)}, got {loss!r}")
    X = np.asarray(X, np.float64)
    X = X[:, None] if X.ndim == 1 else X
    y = np.asarray(y, np.float64)[:, None]
    theta0 = np.asarray(theta0, np.float64)
    f64 = _float64()
    model = keras.Sequential([keras.Input((X.shape[1],), dtype=f64), keras.layers.Dense(1, dtype=f64)])
    model.layers[0].set_weights([theta0[:-1, None], theta0[-1:]])
    model.compile(optimizer=optimizer, loss=losses[loss])
    path = [theta0.copy()]
    for _ in range(steps):
        model.train_on_batch(X, y)
        w, b = model.layers[0].get_weights()
        path.append(np.append(w[:, 0], b))
    return np.array(path)


def batch_norm(x, gamma, beta, *, training: bool, moving_mean=None, moving_var=None):
    """``keras.layers.BatchNormalization`` (default epsilon 1e-3) with the given gamma, beta."""
    import keras

    x = np.asarray(x, np.float64)
    c = x.shape[-1]
    layer = keras.layers.BatchNormalization(dtype=_float64())
    layer.build((None,) + x.shape[1:])
    mm = np.zeros(c) if moving_mean is None else moving_mean
    mv = np.ones(c) if moving_var is None else moving_var
    layer.set_weights([gamma, beta, mm, mv])
    out = _np(layer(x, training=training))
    return out, _np(layer.moving_mean), _np(layer.moving_variance)


def dropout(x, rate: float, seed: int = 0):
    """``keras.layers.Dropout`` in training mode."""
    import keras

    layer = keras.layers.Dropout(rate, seed=seed, dtype=_float64())
    return _np(layer(np.asarray(x, np.float64), training=True))


def penalty(w, *, l1: float = 0.0, l2: float = 0.0) -> float:
    """What ``keras.regularizers.L1L2(l1, l2)`` adds to the loss for weight array w."""
    import keras

    _float64()
    w = keras.ops.convert_to_tensor(np.asarray(w, np.float64))
    return float(_np(keras.regularizers.L1L2(l1=l1, l2=l2)(w)))


def early_stopping(val_losses, patience: int, min_delta: float = 0.0):
    """Replay a validation curve through ``keras.callbacks.EarlyStopping``; (stopped_epoch, best_epoch).

    No training needed: the callback only reads ``logs['val_loss']``. ``stopped_epoch`` is None
    when the callback never stopped.
    """
    import keras

    class _Stub:  # the callback only needs these attributes of a model
        stop_training = False

        def get_weights(self):
            return []

        def set_weights(self, w):
            pass

    cb = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, min_delta=min_delta)
    stub = _Stub()
    cb._model = stub  # set_model() wants a real Model; the stub is all on_epoch_end touches
    cb.on_train_begin()
    for epoch, value in enumerate(val_losses):
        cb.on_epoch_end(epoch, {"val_loss": float(value)})
        if stub.stop_training:
            return epoch, cb.best_epoch
    return None, cb.best_epoch
