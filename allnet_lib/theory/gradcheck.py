"""Checking gradients: finite differences and the relative error between two gradients.

A hand-written backward pass is easy to get subtly wrong (a missing transpose, a factor of 2).
The finite-difference estimate

    df/dx_i ~= (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)

needs only the forward pass, so it is an independent check. Central differences have error
O(eps^2); in float64 with eps = 1e-6 the estimate agrees with the true gradient to about 1e-9
relative error, while a real bug gives errors near 1. That gap is why the check works - and
why it must run in float64: in float32 rounding alone gives errors near 1e-3.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` w.r.t. the array ``x``.

    ``x`` is perturbed in place, one element at a time, and restored afterwards, so ``f`` can
    read it from wherever it lives (e.g. a model's parameter dict). Costs 2 * x.size calls.
    """
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a float array to be perturbed, got {x.dtype}")
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = f()
        flat[i] = old - eps
        f_minus = f()
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def relative_error(a, b, tiny: float = 1e-300) -> float:
    """||a - b|| / (||a|| + ||b||): 0 for equal gradients, 1 for unrelated ones.

    Measured on the whole array rather than element by element, so a gradient component that
    is almost exactly 0 does not blow the ratio up; symmetric in a and b.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"gradients have different shapes: {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), tiny))


def numerical_gradients(loss: Callable[[], float], params: dict[str, np.ndarray], eps: float = 1e-6):
    """Finite-difference gradients for every array in ``params`` (perturbed in place)."""
    return {name: numerical_gradient(loss, p, eps) for name, p in params.items()}


def compare_gradients(reference: dict[str, np.ndarray], **others: dict[str, np.ndarray]):
    """A table (pandas DataFrame) of relative errors, one row per parameter.

    ``compare_gradients(manual, finite_diff=fd, keras=kg)`` gives columns ``shape``,
    ``finite_diff`` and ``keras``: the relative error of each against ``reference``.
    """
    import pandas as pd

    rows = []
    for name, g in reference.items():
        row = {"parameter": name, "shape": tuple(np.shape(g))}
        for label, grads in others.items():
            if name not in grads:
                raise KeyError(f"{label} has no gradient for parameter {name!r}")
            row[label] = relative_error(g, grads[name])
        rows.append(row)
    return pd.DataFrame(rows).set_index("parameter")


def error_vs_eps(loss: Callable[[], float], params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                 eps_values=(1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)):
    """Worst relative error of finite differences against ``grads``, for each step size eps.

    Too large an eps and the difference quotient is a poor approximation of the slope
    (truncation error ~ eps^2); too small and the two losses agree in all but their last digits,
    so rounding dominates (~ machine epsilon / eps). The sweet spot depends on the precision.
    """
    import pandas as pd

    rows = []
    for eps in eps_values:
        numeric = numerical_gradients(loss, params, eps)
        worst = max(relative_error(grads[k], numeric[k]) for k in grads)
        rows.append({"eps": eps, "max relative error": worst})
    return pd.DataFrame(rows).set_index("eps")
