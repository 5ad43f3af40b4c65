"""Gradient descent, three ways, on small problems whose loss surface we can draw.

Batch, stochastic and mini-batch gradient descent are one loop with one knob, the batch size:
the whole training set (batch), one example (stochastic), or something in between. Every
update is recorded - the parameters and the loss on the *full* training set - so the chapters
can plot the path across the loss surface and the loss curve of each variant side by side.

Models are linear in the features: ``theta = (w_1, ..., w_d, b)`` and the prediction is
``X @ w + b``; with one feature, theta has two numbers and the loss surface is a 2-D picture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from allnet_lib.theory import layers

LossFn = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
GradFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _as_2d(X):
    X = np.asarray(X, dtype=np.float64)
    return X[:, None] if X.ndim == 1 else X


def predict_linear(theta, X):
    """X @ w + b for theta = (w..., b)."""
    X = _as_2d(X)
    return X @ theta[:-1] + theta[-1]


# -- least squares (a regression problem with a bowl-shaped loss) ------------------------------


def mse_loss(theta, X, y) -> float:
    """mean((X w + b - y)^2): Keras's 'mse', a quadratic bowl in theta."""
    r = predict_linear(theta, X) - y
    return float(np.mean(r**2))


def mse_grad(theta, X, y) -> np.ndarray:
    """d mse / d theta = (2/N) [X 1]^T (X w + b - y)."""
    X = _as_2d(X)
    r = predict_linear(theta, X) - y
    return 2.0 / len(y) * np.append(X.T @ r, r.sum())


def critical_learning_rate(X) -> float:
    """Largest learning rate for which batch gradient descent on ``mse_loss`` converges: 2/lambda_max.

    The loss is quadratic with Hessian H = (2/N) [X 1]^T [X 1]. One step multiplies the error
    along each eigenvector of H by (1 - lr * lambda); if lr > 2 / lambda_max that factor is
    below -1 for the steepest direction, and the iterates oscillate with growing amplitude.
    """
    X1 = np.hstack([_as_2d(X), np.ones((len(X), 1))])
    hessian = 2.0 / len(X1) * X1.T @ X1
    return float(2.0 / np.linalg.eigvalsh(hessian).max())


def least_squares(X, y) -> np.ndarray:
    """The exact minimiser of ``mse_loss`` (normal equations), to mark the bottom of the bowl."""
    X1 = np.hstack([_as_2d(X), np.ones((len(X), 1))])
    return np.linalg.lstsq(X1, np.asarray(y, dtype=float), rcond=None)[0]


# -- logistic regression (a classifier) -------------------------------------------------------


def logistic_loss(theta, X, y) -> float:
    """Binary cross-entropy of sigmoid(X w + b), computed from the logits (stable)."""
    return layers.binary_cross_entropy_with_logits(predict_linear(theta, X), y)


def logistic_grad(theta, X, y) -> np.ndarray:
    """d loss / d theta = (1/N) [X 1]^T (sigmoid(X w + b) - y)."""
    X = _as_2d(X)
    r = layers.sigmoid(predict_linear(theta, X)) - y
    return np.append(X.T @ r, r.sum()) / len(y)


def class_weighted_logistic(class_weight: dict):
    """(loss, grad) of the class-weighted binary cross-entropy, as Keras's ``class_weight`` computes it.

    Example i counts ``w_i = class_weight[y_i]`` times: loss = (1/N) sum_i w_i l_i (Keras
    divides by the number of examples, not by the sum of the weights), and the gradient is
    (1/N) [X 1]^T (w * (sigmoid(X w + b) - y)). With balanced weights n / (2 n_c) each class
    contributes half of the loss, whatever its size.
    """
    cw = {int(k): float(v) for k, v in class_weight.items()}

    def weights(y):
        y = np.asarray(y).astype(int)
        return np.array([cw[k] for k in (0, 1)])[y]

    def loss(theta, X, y) -> float:
        z = predict_linear(theta, X)
        per_example = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))  # stable BCE from logits
        return float(np.mean(weights(y) * per_example))

    def grad(theta, X, y) -> np.ndarray:
        X = _as_2d(X)
        r = weights(y) * (layers.sigmoid(predict_linear(theta, X)) - y)
        return np.append(X.T @ r, r.sum()) / len(y)

    return loss, grad


def predict_proba_logistic(theta, X):
    """P(class 1) = sigmoid(X w + b)."""
    return layers.sigmoid(predict_linear(theta, X))


def sigmoid_mse_loss(theta, X, y) -> float:
    """mean((sigmoid(X w + b) - y)^2): squared error on a probability, the wrong loss for a classifier."""
    return layers.squared_error(predict_proba_logistic(theta, X), y)


def sigmoid_mse_grad(theta, X, y) -> np.ndarray:
    """(2/N) [X 1]^T ((p - y) p (1 - p)): the extra p (1 - p) vanishes when p is confidently wrong."""
    X = _as_2d(X)
    p = predict_proba_logistic(theta, X)
    r = 2 * (p - y) * p * (1 - p)
    return np.append(X.T @ r, r.sum()) / len(y)


# -- the descent loop ------------------------------------------------------------------------


@dataclass
class DescentRun:
    """One optimisation run: every parameter vector visited and the full-data loss there.

    ``path[0]`` is the start; ``path[k]`` the parameters after k updates. ``epoch_end[e]`` is
    the index into ``path`` at the end of epoch e+1, so curves of different batch sizes can be
    compared per epoch (same number of examples seen) as well as per update.
    """

    method: str
    learning_rate: float
    batch_size: int
    path: np.ndarray
    loss: np.ndarray
    epoch_end: np.ndarray
    diverged: bool

    @property
    def theta(self) -> np.ndarray:
        return self.path[-1]

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])

    @property
    def n_updates(self) -> int:
        return len(self.path) - 1

    def loss_per_epoch(self) -> np.ndarray:
        """Full-data loss at the start and at the end of every epoch (length epochs + 1)."""
        return self.loss[np.concatenate([[0], self.epoch_end])]


def method_name(batch_size: int, n: int) -> str:
    if batch_size >= n:
        return "batch"
    if batch_size == 1:
        return "stochastic"
    return f"mini-batch ({batch_size})"


def run_descent(loss: LossFn, grad: GradFn, theta0, X, y, *, learning_rate, epochs: int,
                batch_size: int | None = None, seed: int = 0, max_loss: float = 1e8,
                optimizer: "Optimizer | None" = None) -> DescentRun:
    """Gradient descent with a given batch size; records every update.

    Each epoch shuffles the examples (unless the batch is the whole set) and takes one step
    per batch: ``theta <- theta - learning_rate * grad(theta, X_batch, y_batch)``. A run whose
    loss exceeds ``max_loss`` (or becomes nan) is stopped and marked ``diverged``.

    ``learning_rate`` is a number or a schedule, a function of the update count t = 0, 1, ...
    (``inverse_time_decay``, ``exponential_decay``). ``optimizer`` (``SGD``, ``Adam``) replaces
    the plain step by its own rule; ``None`` is plain gradient descent, ``SGD()``.
    """
    X = _as_2d(X)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    bs = n if batch_size is None else int(batch_size)
    if not 1 <= bs:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bs = min(bs, n)
    rng = np.random.default_rng(seed)
    theta = np.array(theta0, dtype=np.float64)
    opt = SGD() if optimizer is None else optimizer
    opt.reset(theta)
    lr_at = learning_rate if callable(learning_rate) else (lambda t: learning_rate)
    path, losses, epoch_end = [theta.copy()], [loss(theta, X, y)], []
    diverged = False
    for _ in range(epochs):
        order = rng.permutation(n) if bs < n else np.arange(n)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            theta = opt.step(theta, grad(theta, X[idx], y[idx]), lr_at(len(path) - 1))
            with np.errstate(over="ignore", invalid="ignore"):
                value = loss(theta, X, y)
            path.append(theta.copy())
            losses.append(value)
            if not np.isfinite(value) or value > max_loss:
                diverged = True
                break
        epoch_end.append(len(path) - 1)
        if diverged:
            break
    method = method_name(bs, n) if optimizer is None else f"{opt.name}, {method_name(bs, n)}"
    return DescentRun(method, learning_rate, bs, np.array(path), np.array(losses),
                      np.array(epoch_end), diverged)


# -- better steps: momentum, Nesterov, Adam; learning-rate schedules -------------------------


class SGD:
    """Gradient descent with optional (Nesterov) momentum, written as ``keras.optimizers.SGD`` does it.

    With ``momentum = beta > 0`` the step keeps a velocity v (starting at 0)::

        v     <- beta * v - lr * g
        theta <- theta + v                          (classical momentum)
        theta <- theta + beta * v - lr * g          (nesterov=True)

    v is a running sum of past steps, each shrunk by beta per update: gradient components that
    keep their sign (along a valley) add up, to about 1 / (1 - beta) times one step; those that
    flip sign (across it) cancel. Nesterov's version applies the new velocity once more, i.e.
    it looks one step ahead. With ``momentum=0`` this is plain descent, ``theta - lr * g``.
    """

    def __init__(self, momentum: float = 0.0, nesterov: bool = False):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.velocity = None

    @property
    def name(self) -> str:
        if self.momentum == 0:
            return "plain"
        return f"{'Nesterov' if self.nesterov else 'momentum'} {self.momentum:g}"

    def reset(self, theta) -> None:
        self.velocity = np.zeros_like(np.asarray(theta, dtype=np.float64))

    def step(self, theta, g, lr: float) -> np.ndarray:
        if self.momentum == 0:
            return theta - lr * g
        self.velocity = self.momentum * self.velocity - lr * g
        if self.nesterov:
            return theta + self.momentum * self.velocity - lr * g
        return theta + self.velocity


class Adam:
    """Adam (Kingma and Ba, 2015), exactly as ``keras.optimizers.Adam`` computes it.

    Running averages of the gradient (m) and of its square (v), both starting at 0; at update
    t = 1, 2, ...::

        m     <- m + (1 - beta_1) (g - m)
        v     <- v + (1 - beta_2) (g^2 - v)
        alpha  = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)      (bias correction of m and v)
        theta <- theta - alpha * m / (sqrt(v) + epsilon)

    Each parameter gets its own step size: divided by the root of its recent squared gradients,
    a step is about ``lr`` long whatever the scale of that parameter's gradient. (Keras adds
    ``epsilon`` to sqrt(v) before the bias correction of v, the paper after: the two differ
    only in the size of epsilon's effect.)
    """

    name = "Adam"

    def __init__(self, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.m = self.v = None
        self.t = 0

    def reset(self, theta) -> None:
        self.m = np.zeros_like(np.asarray(theta, dtype=np.float64))
        self.v = np.zeros_like(self.m)
        self.t = 0

    def step(self, theta, g, lr: float) -> np.ndarray:
        self.t += 1
        self.m = self.m + (1 - self.beta_1) * (g - self.m)
        self.v = self.v + (1 - self.beta_2) * (g * g - self.v)
        alpha = lr * np.sqrt(1 - self.beta_2**self.t) / (1 - self.beta_1**self.t)
        return theta - alpha * self.m / (np.sqrt(self.v) + self.epsilon)


Optimizer = SGD | Adam


def inverse_time_decay(initial: float, decay_steps: float, decay_rate: float = 1.0):
    """lr(t) = initial / (1 + decay_rate * t / decay_steps): ``keras.optimizers.schedules.InverseTimeDecay``."""
    return lambda t: initial / (1 + decay_rate * t / decay_steps)


def exponential_decay(initial: float, decay_steps: float, decay_rate: float):
    """lr(t) = initial * decay_rate ** (t / decay_steps): ``keras.optimizers.schedules.ExponentialDecay``."""
    return lambda t: initial * decay_rate ** (t / decay_steps)


def compare_optimizers(loss: LossFn, grad: GradFn, theta0, X, y, optimizers: dict, *, epochs: int,
                       batch_size: int | None = None, seed: int = 0) -> dict[str, DescentRun]:
    """One run per ``{name: (optimizer, learning_rate)}``, from the same start on the same batches."""
    return {
        name: run_descent(loss, grad, theta0, X, y, learning_rate=lr, epochs=epochs,
                          batch_size=batch_size, seed=seed, optimizer=opt)
        for name, (opt, lr) in optimizers.items()
    }


def compare_variants(loss: LossFn, grad: GradFn, theta0, X, y, *, learning_rate: float, epochs: int,
                     mini_batch: int = 16, seed: int = 0) -> dict[str, DescentRun]:
    """Batch, stochastic and mini-batch descent from the same start, same rate, same epochs."""
    n = len(y)
    return {
        "batch": run_descent(loss, grad, theta0, X, y, learning_rate=learning_rate, epochs=epochs,
                             batch_size=n, seed=seed),
        "stochastic": run_descent(loss, grad, theta0, X, y, learning_rate=learning_rate,
                                  epochs=epochs, batch_size=1, seed=seed),
        "mini-batch": run_descent(loss, grad, theta0, X, y, learning_rate=learning_rate,
                                  epochs=epochs, batch_size=mini_batch, seed=seed),
    }


def learning_rate_sweep(loss: LossFn, grad: GradFn, theta0, X, y, learning_rates, *, epochs: int,
                        batch_size: int | None = None, seed: int = 0) -> dict[float, DescentRun]:
    """One run per learning rate, everything else equal."""
    return {
        lr: run_descent(loss, grad, theta0, X, y, learning_rate=lr, epochs=epochs,
                        batch_size=batch_size, seed=seed)
        for lr in learning_rates
    }


def loss_surface(loss: LossFn, X, y, w_range, b_range, n: int = 80):
    """(W, B, L): the loss on an n x n grid of (w, b), for contour plots of a 1-feature model."""
    X = _as_2d(X)
    if X.shape[1] != 1:
        raise ValueError(f"loss_surface draws one-feature models (theta = (w, b)), X has {X.shape[1]}")
    ws, bs = np.linspace(*w_range, n), np.linspace(*b_range, n)
    W, B = np.meshgrid(ws, bs)
    L = np.array([[loss(np.array([w, b]), X, y) for w in ws] for b in bs])
    return W, B, L
