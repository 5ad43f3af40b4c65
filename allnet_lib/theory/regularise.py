"""Regularisation: the tools against overfitting, in NumPy, and one small Keras experiment.

NumPy definitions (checked against Keras in the chapter and the tests):

- ``l1_penalty`` / ``l2_penalty`` and their gradients, with Keras's conventions:
  ``L1(l1)`` adds ``l1 * sum|w|`` and ``L2(l2)`` adds ``l2 * sum(w**2)`` to the loss;
- ``dropout``: "inverted" dropout, as Keras does it (survivors are scaled by 1/(1-rate) in
  training, so nothing changes at inference);
- ``batch_norm_train`` / ``batch_norm_inference`` and the moving averages that connect them;
- ``early_stopping``: the exact stopping rule of ``keras.callbacks.EarlyStopping``;
- ``flip_rotate``: the 8 flips and right-angle rotations, the augmentation a round cell allows
  (the experiment uses the report's own operations, ``allnet_lib.augment.FlipRotate``).

The experiment (``regularisation_experiment``) trains the same small Keras model with each of
these switched on, one at a time, and records train and validation curves per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------------------------
# Penalties
# ----------------------------------------------------------------------------------------------


def l1_penalty(weights, l1: float) -> float:
    """l1 * sum |w| over all weight arrays (biases are usually left out)."""
    return float(l1 * sum(np.abs(w).sum() for w in _as_list(weights)))


def l2_penalty(weights, l2: float) -> float:
    """l2 * sum w^2 over all weight arrays (Keras's L2; no 1/2, no 1/N)."""
    return float(l2 * sum((np.asarray(w) ** 2).sum() for w in _as_list(weights)))


def l1_grad(w, l1: float):
    """l1 * sign(w): a constant pull towards 0, whatever the size of w (so weights reach 0)."""
    return l1 * np.sign(w)


def l2_grad(w, l2: float):
    """2 * l2 * w: a pull proportional to w ("weight decay"), so weights shrink but rarely hit 0."""
    return 2 * l2 * np.asarray(w)


def _as_list(weights):
    return [weights] if isinstance(weights, np.ndarray) else list(weights)


# ----------------------------------------------------------------------------------------------
# Overfitting in one picture: polynomials, and what L2 / L1 do to their coefficients
# ----------------------------------------------------------------------------------------------


def make_curve(n: int = 15, *, noise: float = 0.25, seed: int = 0):
    """(x, y): n noisy samples of sin(2 pi x) on [0, 1], the classic overfitting example."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, n))
    return x, np.sin(2 * np.pi * x) + rng.normal(0, noise, n)


def polynomial_features(x, degree: int):
    """Columns x, x^2, ..., x^degree of (2x - 1) (in [-1, 1], so high powers stay of order 1)."""
    u = 2 * np.asarray(x, dtype=float) - 1
    return np.stack([u**k for k in range(1, degree + 1)], axis=1)


def ridge_fit(X, y, l2: float = 0.0):
    """Least squares + l2 * ||w||^2 (bias not penalised), in closed form; returns (w, b).

    Minimises mean((X w + b - y)^2) + l2 * sum(w^2). Centring X and y removes the bias, then
    (X^T X / N + l2 I) w = X^T y / N.
    """
    X, y = np.asarray(X, float), np.asarray(y, float)
    xm, ym = X.mean(axis=0), y.mean()
    Xc, yc = X - xm, y - ym
    n, d = X.shape
    w = np.linalg.solve(Xc.T @ Xc / n + l2 * np.eye(d), Xc.T @ yc / n)
    return w, float(ym - xm @ w)


def soft_threshold(w, t: float):
    """sign(w) * max(|w| - t, 0): the proximal step of the L1 penalty; small weights become exactly 0."""
    return np.sign(w) * np.maximum(np.abs(w) - t, 0.0)


def lasso_fit(X, y, l1: float, *, steps: int = 5000):
    """Least squares + l1 * ||w||_1 (bias not penalised) by proximal gradient descent (ISTA).

    Each step is a plain gradient step on the squared error followed by ``soft_threshold``:
    the L1 pull is constant, so weights that the data barely needs are set to exactly zero -
    the reason L1 gives sparse models and L2 does not.
    """
    X, y = np.asarray(X, float), np.asarray(y, float)
    xm, ym = X.mean(axis=0), y.mean()
    Xc, yc = X - xm, y - ym
    n = len(y)
    lr = 1.0 / (2 * np.linalg.eigvalsh(Xc.T @ Xc / n).max())  # 1 / Lipschitz constant
    w = np.zeros(X.shape[1])
    for _ in range(steps):
        grad = 2 * Xc.T @ (Xc @ w - yc) / n
        w = soft_threshold(w - lr * grad, lr * l1)
    return w, float(ym - xm @ w)


def l1_gradient_fit(X, y, l1: float, *, steps: int = 5000):
    """The same L1 problem as ``lasso_fit``, by plain (sub)gradient steps: ``grad + l1 * sign(w)``.

    This is what an optimiser does with ``keras.regularizers.L1``. The constant pull brings
    unneeded weights *near* zero, but a step of fixed length overshoots it, so they end up
    jittering around 0 (within about ``lr * l1``), not at exactly 0: exact zeros need the
    soft-threshold step of ``lasso_fit``.
    """
    X, y = np.asarray(X, float), np.asarray(y, float)
    xm, ym = X.mean(axis=0), y.mean()
    Xc, yc = X - xm, y - ym
    n = len(y)
    lr = 1.0 / (2 * np.linalg.eigvalsh(Xc.T @ Xc / n).max())
    w = np.zeros(X.shape[1])
    for _ in range(steps):
        w = w - lr * (2 * Xc.T @ (Xc @ w - yc) / n + l1_grad(w, l1))
    return w, float(ym - xm @ w)


def polynomial_errors(x, y, x_val, y_val, degrees, l2: float = 0.0):
    """Training and validation mean squared error of polynomial fits of each degree (a DataFrame)."""
    import pandas as pd

    rows = []
    for d in degrees:
        w, b = ridge_fit(polynomial_features(x, d), y, l2)
        mse = lambda xx, yy: float(np.mean((polynomial_features(xx, d) @ w + b - yy) ** 2))  # noqa: E731
        rows.append({"degree": d, "train": mse(x, y), "validation": mse(x_val, y_val)})
    return pd.DataFrame(rows).set_index("degree")


# ----------------------------------------------------------------------------------------------
# Dropout, batch normalisation
# ----------------------------------------------------------------------------------------------


def dropout(x, rate: float, rng: np.random.Generator, training: bool = True):
    """Inverted dropout: zero each unit with probability ``rate``, scale survivors by 1/(1-rate).

    The scaling keeps the expected value of every unit unchanged, so at inference time
    (``training=False``) the layer is simply the identity.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    x = np.asarray(x)
    if not training or rate == 0:
        return x
    keep = rng.random(x.shape) >= rate
    return np.where(keep, x / (1 - rate), 0.0)


def batch_norm_train(x, gamma, beta, eps: float = 1e-3):
    """Training-mode batch normalisation over all axes but the last (channels).

    Returns ``(out, batch_mean, batch_var)``: out = gamma * (x - mean) / sqrt(var + eps) + beta,
    with the mean and (biased) variance of *this batch*. ``eps=1e-3`` is Keras's default.
    """
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta, mean, var


def batch_norm_inference(x, gamma, beta, moving_mean, moving_var, eps: float = 1e-3):
    """Inference-mode batch normalisation: the same formula with the moving averages."""
    return gamma * (np.asarray(x) - moving_mean) / np.sqrt(moving_var + eps) + beta


def update_moving(moving, batch_value, momentum: float = 0.99):
    """moving <- momentum * moving + (1 - momentum) * batch_value (Keras's default momentum)."""
    return momentum * moving + (1 - momentum) * batch_value


# ----------------------------------------------------------------------------------------------
# Early stopping, augmentation
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlyStop:
    """Where early stopping ends training: ``stopped_epoch`` (None: ran to the end), ``best_epoch``."""

    stopped_epoch: int | None
    best_epoch: int
    best_value: float


def early_stopping(val_losses, patience: int, min_delta: float = 0.0) -> EarlyStop:
    """The rule of ``keras.callbacks.EarlyStopping(monitor='val_loss', patience=...)``, replayed.

    Epochs are 0-based. An epoch improves if its loss is below the best so far by more than
    ``min_delta``; training stops at the first epoch where ``patience`` epochs have passed
    without improvement. With ``restore_best_weights=True`` the model returned is the one of
    ``best_epoch``.
    """
    best, best_epoch, wait = np.inf, 0, 0
    for epoch, value in enumerate(val_losses):
        wait += 1
        if value + abs(min_delta) < best:
            best, best_epoch, wait = float(value), epoch, 0
            continue
        if wait >= patience and epoch > 0:
            return EarlyStop(epoch, best_epoch, best)
    return EarlyStop(None, best_epoch, best)


def flip_rotate(images, rng: np.random.Generator):
    """Each image of a batch (N, H, W, C) turned by a random multiple of 90 degrees and maybe mirrored.

    A cell on a black background has no "up": all 8 versions are equally real cells, so they
    are free extra training examples (the report's Augmentor pipeline did the same, with files).
    """
    images = np.asarray(images)
    out = np.empty_like(images)
    for i, im in enumerate(images):
        im = np.rot90(im, k=int(rng.integers(4)), axes=(0, 1))
        out[i] = im[:, ::-1] if rng.random() < 0.5 else im
    return out


# ----------------------------------------------------------------------------------------------
# The Keras experiment
# ----------------------------------------------------------------------------------------------

#: The variants compared in the chapter, one regulariser each; "baseline" has none.
VARIANTS = ("baseline", "L2", "L1", "dropout", "batch norm", "augmentation")


@dataclass(frozen=True)
class SmallNetConfig:
    """The small CNN of the experiment: conv -> pool -> dense -> softmax, and its regularisers."""

    filters: int = 8
    hidden: int = 64
    l2: float = 1e-2
    l1: float = 1e-3
    dropout: float = 0.5
    learning_rate: float = 3e-3
    #: Batch norm's moving averages: m <- momentum * m + (1 - momentum) * batch value. Keras's
    #: default 0.99 needs hundreds of steps to forget its start (mean 0, variance 1); this
    #: experiment makes 4 steps per epoch, so 0.9 (a start weight of 0.9^4 = 0.66 per epoch).
    bn_momentum: float = 0.9


def build_small_model(input_shape, variant: str = "baseline", config: SmallNetConfig = SmallNetConfig(),
                      seed: int = 0):
    """A compiled Keras model with exactly one regulariser switched on (or none).

    The curves are measured outside Keras's metrics (see ``train_curves``), so compiling needs
    only the optimiser and the loss.
    """
    import keras
    from keras import layers as kl

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: expected one of {VARIANTS}")
    keras.utils.set_random_seed(seed)
    reg = {"L2": keras.regularizers.L2(config.l2), "L1": keras.regularizers.L1(config.l1)}.get(variant)
    stack = [keras.Input(tuple(input_shape))]
    if variant == "augmentation":
        from allnet_lib.augment import FlipRotate

        stack += [FlipRotate(seed=seed)]  # the report's flips and right-angle rotations, training only
    stack += [kl.Conv2D(config.filters, 3, activation="relu", kernel_regularizer=reg), kl.MaxPooling2D(2)]
    if variant == "batch norm":
        stack += [kl.BatchNormalization(momentum=config.bn_momentum)]
    stack += [kl.Flatten(), kl.Dense(config.hidden, activation="relu", kernel_regularizer=reg)]
    if variant == "dropout":
        stack += [kl.Dropout(config.dropout, seed=seed)]
    stack += [kl.Dense(2, activation="softmax")]
    model = keras.Sequential(stack, name=variant.replace(" ", "_"))
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
    )
    return model


def train_curves(model, x, y, x_val, y_val, *, epochs: int, batch_size: int = 32, seed: int = 0):
    """Train ``model`` and measure it after every epoch: a DataFrame with one row per epoch.

    Columns ``loss``/``accuracy`` (training set) and ``val_loss``/``val_accuracy``: the plain
    cross-entropy (no L1/L2 penalty) and accuracy, both measured in inference mode (dropout off,
    batch norm on its moving averages, no augmentation), so the gap between the curves is
    overfitting and nothing else. Uses ``train_on_batch`` and one ``predict_on_batch`` per epoch:
    on a data set this small, ``fit`` spends more time setting up each epoch than computing it.
    """
    import pandas as pd

    from allnet_lib.theory import layers

    rng = np.random.default_rng(seed)
    n = len(x)
    both = np.concatenate([x, x_val])
    rows = []
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            model.train_on_batch(x[idx], y[idx])
        p = np.asarray(model.predict_on_batch(both), dtype=np.float64)
        p_tr, p_va = p[:n], p[n:]
        rows.append({
            "loss": layers.categorical_cross_entropy(p_tr, y),
            "accuracy": float((p_tr.argmax(1) == y).mean()),
            "val_loss": layers.categorical_cross_entropy(p_va, y_val),
            "val_accuracy": float((p_va.argmax(1) == y_val).mean()),
        })
    out = pd.DataFrame(rows)
    out.index = pd.RangeIndex(1, epochs + 1, name="epoch")
    return out


def regularisation_experiment(x, y, x_val, y_val, *, variants=VARIANTS, epochs: int = 60,
                              batch_size: int = 32, config: SmallNetConfig = SmallNetConfig(),
                              seed: int = 0):
    """Train one model per variant on the same data from the same seed; returns {variant: curves}."""
    curves = {}
    for variant in variants:
        model = build_small_model(x.shape[1:], variant, config, seed=seed)
        curves[variant] = train_curves(model, x, y, x_val, y_val, epochs=epochs,
                                       batch_size=batch_size, seed=seed)
    return curves


def summarise_curves(curves, patience: int = 10):
    """One row per variant: final train/val loss and accuracy, best val loss and its epoch,
    the validation accuracy at that epoch, the train-val loss gap at the end, and where early
    stopping would have stopped. Rows are ranked by the best validation loss (the model early
    stopping would keep), best first: a small gap alone can also mean a model that learned
    nothing."""
    import pandas as pd

    rows = []
    for name, c in curves.items():
        stop = early_stopping(c["val_loss"].to_numpy(), patience)
        rows.append({
            "variant": name,
            "train loss": c["loss"].iloc[-1],
            "val loss": c["val_loss"].iloc[-1],
            "gap": c["val_loss"].iloc[-1] - c["loss"].iloc[-1],
            "best val loss": c["val_loss"].min(),
            "best epoch": int(c["val_loss"].to_numpy().argmin()) + 1,
            "val accuracy at best": c["val_accuracy"].iloc[int(c["val_loss"].to_numpy().argmin())],
            "val accuracy": c["val_accuracy"].iloc[-1],
            "early stop at": None if stop.stopped_epoch is None else stop.stopped_epoch + 1,
        })
    out = pd.DataFrame(rows).set_index("variant")
    out["early stop at"] = out["early stop at"].astype("Int64")  # None -> <NA>, not a float NaN
    return out.sort_values("best val loss", kind="stable")


def summarise_seeds(curves_by_seed: dict, patience: int = 10):
    """Best-epoch metrics over several seeds: ``{seed: {variant: curves}}`` -> one row per variant
    with the mean and standard deviation (over seeds) of the best validation loss and of the
    validation accuracy at that epoch, ranked by the mean best validation loss."""
    import pandas as pd

    per_seed = pd.concat({seed: summarise_curves(c, patience) for seed, c in curves_by_seed.items()},
                         names=["seed"])
    grouped = per_seed.groupby(level="variant", sort=False)
    out = pd.DataFrame({
        "best val loss (mean)": grouped["best val loss"].mean(),
        "best val loss (std)": grouped["best val loss"].std(ddof=0),
        "val accuracy at best (mean)": grouped["val accuracy at best"].mean(),
        "val accuracy at best (std)": grouped["val accuracy at best"].std(ddof=0),
        "best epoch (mean)": grouped["best epoch"].mean(),
        "seeds": grouped.size(),
    })
    return out.sort_values("best val loss (mean)", kind="stable")
