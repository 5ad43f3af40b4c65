"""A tiny multilayer perceptron with a hand-written backward pass.

The point is to see backpropagation as nothing more than the chain rule applied layer by
layer, from the loss back to the input. The forward pass keeps what the backward pass needs
(each layer's input and pre-activation) in a ``cache``; the backward pass walks the layers in
reverse and produces one gradient per parameter, named like the parameters (``W1``, ``b1``...).

Shapes follow Keras: weights ``W`` are ``(n_in, n_out)``, so the same numbers can be loaded
into ``keras.layers.Dense`` layers and compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from allnet_lib.theory import layers


@dataclass
class MLP:
    """Dense layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``, softmax cross-entropy output.

    Hidden layers use ``activation``; the last layer outputs logits (no activation), and the
    loss applies the softmax, as ``from_logits=True`` does in Keras. ``l2`` adds
    ``l2 * sum(W**2)`` over the weight matrices (not the biases), exactly Keras's
    ``kernel_regularizer=L2(l2)``.
    """

    sizes: tuple[int, ...]
    activation: str = "tanh"
    seed: int = 0
    dtype: type = np.float64
    l2: float = 0.0
    params: dict[str, np.ndarray] = field(default_factory=dict)
    #: Weight initialisation (``INITS``): None picks He for ReLU-like units, Glorot otherwise.
    init: str | None = None

    def __post_init__(self):
        if len(self.sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {self.sizes}")
        self.act, self.act_grad = layers.get_activation(self.activation)
        if not self.params:
            self.params = self.init_params()

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def init_params(self) -> dict[str, np.ndarray]:
        """Weights drawn from N(0, init_scale(...)^2), zero biases (``init`` chooses the scale).

        The default (He for ReLU-like units, Glorot otherwise) keeps the variance of activations
        roughly constant from layer to layer, so signals neither explode nor die out at the
        start of training.
        """
        rng = np.random.default_rng(self.seed)
        init = self.init or ("he" if self.activation in ("relu", "leaky_relu") else "glorot")
        params = {}
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            scale = init_scale(init, n_in, n_out)
            params[f"W{i}"] = (rng.standard_normal((n_in, n_out)) * scale).astype(self.dtype)
            params[f"b{i}"] = np.zeros(n_out, dtype=self.dtype)
        return params

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x):
        """Logits for a batch x (N, n_in), and the cache the backward pass needs."""
        a = np.asarray(x, dtype=self.dtype)
        cache = []
        for i in range(1, self.n_layers + 1):
            z = layers.dense(a, self.params[f"W{i}"], self.params[f"b{i}"])
            cache.append((a, z))
            a = z if i == self.n_layers else self.act(z)
        return a, cache

    def predict_proba(self, x):
        """Class probabilities softmax(logits), shape (N, n_classes)."""
        return layers.softmax(self.forward(x)[0])

    def predict(self, x):
        return self.predict_proba(x).argmax(axis=-1)

    def penalty(self) -> float:
        return float(self.l2 * sum((self.params[f"W{i}"] ** 2).sum() for i in range(1, self.n_layers + 1)))

    def loss(self, x, y) -> float:
        """Mean softmax cross-entropy (+ the L2 penalty, if any)."""
        logits, _ = self.forward(x)
        return layers.softmax_cross_entropy(logits, y) + self.penalty()

    # -- backward --------------------------------------------------------------------------
    def backward(self, logits, cache, y) -> dict[str, np.ndarray]:
        """Gradients of the loss w.r.t. every parameter, by the chain rule, last layer first.

        For layer i with input a and pre-activation z = a W + b, given delta = dL/dz:
        dL/dW = a^T delta, dL/db = sum(delta over the batch), dL/da = delta W^T;
        and through the activation of the layer below: delta_below = dL/da * f'(z_below).
        """
        grads = {}
        delta = layers.softmax_cross_entropy_grad(logits, y)  # dL/dz of the output layer
        for i in range(self.n_layers, 0, -1):
            a_in, _ = cache[i - 1]
            grads[f"W{i}"] = a_in.T @ delta + 2 * self.l2 * self.params[f"W{i}"]
            grads[f"b{i}"] = delta.sum(axis=0)
            if i > 1:
                _, z_below = cache[i - 2]
                delta = (delta @ self.params[f"W{i}"].T) * self.act_grad(z_below)
        return {k: grads[k] for k in self.params}  # same order as params

    def loss_and_grads(self, x, y):
        """(loss, gradients) in one forward and one backward pass."""
        logits, cache = self.forward(x)
        loss = layers.softmax_cross_entropy(logits, y) + self.penalty()
        return loss, self.backward(logits, cache, y)

    # -- training --------------------------------------------------------------------------
    def step(self, grads, learning_rate: float) -> None:
        """One gradient-descent update, in place: theta <- theta - lr * grad."""
        for k, g in grads.items():
            self.params[k] -= learning_rate * g

    def fit(self, x, y, *, learning_rate=0.1, epochs=100, batch_size=None, seed=0, x_val=None,
            y_val=None):
        """Mini-batch gradient descent; returns the history {'loss': [...], 'val_loss': [...]}.

        ``batch_size=None`` uses the whole training set per step (batch gradient descent).
        The losses are recorded once per epoch on the full sets, after the epoch's updates.
        """
        x = np.asarray(x, dtype=self.dtype)
        y = np.asarray(y)
        n = len(x)
        bs = n if batch_size is None else batch_size
        rng = np.random.default_rng(seed)
        history = {"loss": [], "val_loss": []}
        for _ in range(epochs):
            order = rng.permutation(n) if bs < n else np.arange(n)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                _, grads = self.loss_and_grads(x[idx], y[idx])
                self.step(grads, learning_rate)
            history["loss"].append(self.loss(x, y))
            if x_val is not None:
                history["val_loss"].append(self.loss(x_val, y_val))
        return history

    def hidden_activations(self, x, layer: int = 1):
        """Outputs of hidden layer ``layer`` (1-based) for a batch, e.g. to count dead ReLUs."""
        if not 1 <= layer < self.n_layers:
            raise ValueError(f"hidden layers are 1..{self.n_layers - 1}, got {layer}")
        _, cache = self.forward(x)
        return self.act(cache[layer - 1][1])


def dead_unit_fraction(activations, tol: float = 0.0) -> float:
    """Fraction of units (columns) that output <= tol for every example: 'dead' ReLUs.

    A dead ReLU has a negative pre-activation for all inputs, so its gradient is 0 everywhere
    and no gradient step can revive it.
    """
    a = np.asarray(activations)
    return float((a <= tol).all(axis=0).mean())


def matmul_costs(sizes, n: int = 1) -> tuple[int, int]:
    """Multiply-adds of the matrix products in one forward and one backward pass of a dense net.

    Forward: one product per layer, ``A @ W`` (n * n_in * n_out). Backward: per layer, the
    weights' gradient ``A.T @ delta`` (the same size) and, for every layer but the first, the
    gradient passed down, ``delta @ W.T`` (the same size again). So the backward pass costs
    about twice the forward pass, a little less because the input needs no gradient.
    (Element-wise work, activations and biases, is of lower order and not counted.)
    """
    shapes = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(n * a * b for a, b in shapes)
    backward = forward + sum(n * a * b for a, b in shapes[1:])
    return forward, backward


#: Weight initialisations: all zeros, the standard normal, Glorot (Xavier) and He.
INITS = ("zeros", "normal", "glorot", "he")


def init_scale(init: str, n_in: int, n_out: int) -> float:
    """Standard deviation of the initial weights of a layer with ``n_in`` inputs, ``n_out`` outputs.

    - ``zeros``: 0. Every unit of a layer computes the same thing and gets the same gradient:
      the symmetry is never broken (with tanh or ReLU, whose value at 0 is 0, nothing moves).
    - ``normal``: 1. A unit sums n_in inputs, so its output variance is n_in times its input's:
      activations blow up (ReLU) or saturate (tanh, sigmoid) within a few layers.
    - ``glorot`` (Glorot and Bengio, 2010): sqrt(2 / (n_in + n_out)), variance kept for
      activations linear around 0 (tanh, sigmoid), forward and backward on average.
    - ``he`` (He et al., 2015): sqrt(2 / n_in), for ReLU, which zeroes half of its inputs.

    Keras's ``GlorotNormal`` and ``HeNormal`` draw from a normal truncated at two standard
    deviations, rescaled to the same variance.
    """
    scales = {"zeros": 0.0, "normal": 1.0, "glorot": float(np.sqrt(2.0 / (n_in + n_out))),
              "he": float(np.sqrt(2.0 / n_in))}
    if init not in scales:
        raise ValueError(f"unknown init {init!r}: expected one of {INITS}")
    return scales[init]


def initialisation_table(X, y, *, activations=("tanh", "relu"), inits=INITS, depth: int = 10,
                         width: int = 32, seed: int = 0):
    """Gradient flow at initialisation, one row per (activation, init), for a deep MLP.

    Columns: the standard deviation of the last hidden layer's activations (the forward
    signal), the gradient norms at the first and last weight matrices, and their ratio (the
    backward signal: below 1 vanishing, above 1 exploding). A DataFrame.
    """
    import pandas as pd

    rows = []
    sizes = (np.asarray(X).shape[1],) + (width,) * depth + (int(np.max(y)) + 1,)
    for activation in activations:
        for init in inits:
            net = MLP(sizes, activation=activation, init=init, seed=seed)
            with np.errstate(over="ignore", invalid="ignore"):
                _, grads = net.loss_and_grads(X, y)
                last_hidden = net.hidden_activations(X, depth)
            first, last = np.linalg.norm(grads["W1"]), np.linalg.norm(grads[f"W{depth + 1}"])
            rows.append({
                "activation": activation, "init": init,
                "activation std, last hidden": float(last_hidden.std()),
                "|dL/dW1|": float(first), f"|dL/dW{depth + 1}|": float(last),
                "ratio first/last": float(first / last) if last > 0 else float("nan"),
            })
    return pd.DataFrame(rows).set_index(["activation", "init"])
