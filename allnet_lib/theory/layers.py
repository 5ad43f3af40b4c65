"""Layers, activations and losses of a convolutional network, written out in NumPy.

These are the definitions the theory chapters teach, kept short enough to read, and written to
match Keras exactly (same tensor layouts, same padding rule) so a chapter can set the same
weights in a Keras layer and assert the outputs are equal:

- images are ``(N, H, W, C)`` ("channels last"), convolution kernels ``(kh, kw, C_in, C_out)``
  and dense weights ``(n_in, n_out)``, as Keras stores them;
- "convolution" is cross-correlation (the kernel is not flipped), as in every deep-learning
  library;
- ``padding="same"`` follows TensorFlow's rule: the output has ``ceil(n / stride)`` positions and
  the missing rows/columns are added with one more at the bottom/right than at the top/left.
"""

from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------------------------
# Activations and their derivatives (derivatives take the pre-activation z)
# ----------------------------------------------------------------------------------------------


def relu(z):
    """max(0, z): cheap, and its gradient does not shrink for z > 0 (unlike sigmoid/tanh)."""
    return np.maximum(z, 0)


def relu_grad(z):
    """1 where z > 0, else 0 (at exactly 0 we use 0, as TensorFlow does)."""
    return (np.asarray(z) > 0).astype(np.result_type(z, np.float32))


def leaky_relu(z, alpha=0.01):
    """z for z > 0, alpha*z otherwise: a small slope keeps 'dead' units trainable."""
    return np.where(z > 0, z, alpha * z)


def leaky_relu_grad(z, alpha=0.01):
    return np.where(np.asarray(z) > 0, 1.0, alpha)


def sigmoid(z):
    """1 / (1 + exp(-z)), computed as exp(-log(1 + exp(-z))) so it never overflows."""
    z = np.asarray(z, dtype=np.result_type(z, np.float32))
    return np.exp(-np.logaddexp(0, -z))


def sigmoid_grad(z):
    """sigma(z) (1 - sigma(z)): at most 0.25, which is why deep sigmoid stacks learn slowly."""
    s = sigmoid(z)
    return s * (1 - s)


def tanh(z):
    return np.tanh(z)


def tanh_grad(z):
    """1 - tanh(z)^2: at most 1 (at z = 0), vanishing for |z| large."""
    return 1 - np.tanh(z) ** 2


def linear(z):
    return z


def linear_grad(z):
    return np.ones_like(z)


ACTIVATIONS = {
    "relu": (relu, relu_grad),
    "leaky_relu": (leaky_relu, leaky_relu_grad),
    "sigmoid": (sigmoid, sigmoid_grad),
    "tanh": (tanh, tanh_grad),
    "linear": (linear, linear_grad),
}


def get_activation(name: str):
    """(function, derivative) for an activation name; a clear error for unknown names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}: expected one of {sorted(ACTIVATIONS)}") from None


def softmax_naive(z, axis=-1):
    """exp(z) / sum exp(z), straight from the formula: overflows to inf/nan for logits >~ 710.

    Kept only to show why the stable version exists; never use it for training.
    """
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def softmax(z, axis=-1):
    """Stable softmax: subtracting max(z) changes nothing mathematically but keeps exp() <= 1."""
    z = np.asarray(z)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def logsumexp(z, axis=-1, keepdims=False):
    """log(sum(exp(z))) without overflow: m + log(sum(exp(z - m))) with m = max(z)."""
    z = np.asarray(z)
    m = z.max(axis=axis, keepdims=True)
    out = m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def log_softmax(z, axis=-1):
    """log(softmax(z)) = z - logsumexp(z): finite even when softmax(z) underflows to 0."""
    return z - logsumexp(z, axis=axis, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def one_hot(y, num_classes: int) -> np.ndarray:
    """Integer labels (N,) -> one-hot rows (N, num_classes), float64."""
    y = np.asarray(y, dtype=int)
    if y.ndim != 1:
        raise ValueError(f"one_hot expects integer labels of shape (N,), got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got min {y.min()} max {y.max()}")
    out = np.zeros((y.size, num_classes))
    out[np.arange(y.size), y] = 1.0
    return out


def _targets(y, logits):
    """Accept integer labels (N,) or one-hot/probability rows shaped like the logits."""
    y = np.asarray(y)
    if y.shape == np.shape(logits):
        return y.astype(np.result_type(logits, np.float64))
    return one_hot(y, np.shape(logits)[-1])


def softmax_cross_entropy_naive(logits, y):
    """-mean log softmax(z)[y] via the naive softmax: inf/nan as soon as one logit is large."""
    t = _targets(y, logits)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p = softmax_naive(logits)
        return float(-(t * np.log(p)).sum(axis=-1).mean())


def softmax_cross_entropy(logits, y):
    """Mean cross-entropy of softmax(logits) against labels, computed from log-softmax.

    Working with logits (not probabilities) is what ``from_logits=True`` means in Keras: the
    log of a probability that underflowed to 0 never appears.
    """
    t = _targets(y, logits)
    return float(-(t * log_softmax(logits)).sum(axis=-1).mean())


def softmax_cross_entropy_grad(logits, y):
    """d loss / d logits = (softmax(z) - y) / N: the whole backward pass of softmax + CE."""
    t = _targets(y, logits)
    return (softmax(logits) - t) / np.shape(logits)[0]


def binary_cross_entropy(p, y, eps=1e-12):
    """-mean[y log p + (1-y) log(1-p)] for probabilities p; clipped to avoid log(0)."""
    p = np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    y = np.asarray(y, dtype=float)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def binary_cross_entropy_with_logits(z, y):
    """The same loss from the logit z: max(z,0) - z y + log(1 + exp(-|z|)), never overflows."""
    z = np.asarray(z, dtype=float)
    y = np.asarray(y, dtype=float)
    return float((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).mean())


def categorical_cross_entropy(p, y, eps=1e-12):
    """-mean log p[y] for predicted class probabilities p (N, K), e.g. a softmax layer's output.

    Probabilities are clipped to [eps, 1] as Keras does, so a wrong prediction of exactly 0
    costs -log(eps) instead of inf.
    """
    t = _targets(y, p)
    return float(-(t * np.log(np.clip(p, eps, 1.0))).sum(axis=-1).mean())


def squared_error(p, y):
    """Mean squared error mean((p - y)^2), the regression loss (Keras 'mse')."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    return float(((p - y) ** 2).mean())


def sigmoid_output_grads(z, y):
    """Gradient of each loss w.r.t. the logit z of a sigmoid output, per example.

    Returns ``(d_cross_entropy, d_squared_error)``:
    cross-entropy gives sigma(z) - y, squared error 2 (sigma(z) - y) sigma(z) (1 - sigma(z)).
    The extra sigma' factor makes squared error's gradient vanish exactly when the model is
    confidently wrong, which is why classifiers are trained with cross-entropy.
    """
    s = sigmoid(z)
    y = np.asarray(y, dtype=float)
    return s - y, 2 * (s - y) * s * (1 - s)


# ----------------------------------------------------------------------------------------------
# Dense, convolution, pooling
# ----------------------------------------------------------------------------------------------


def dense(x, w, b=None):
    """Fully connected layer x @ w + b, with w shaped (n_in, n_out) as Keras stores it."""
    out = np.asarray(x) @ w
    return out if b is None else out + b


def _check_nhwc(x, what="x"):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"{what} must be a batch of images shaped (N, H, W, C), got shape {x.shape}; "
            "add a batch axis with x[None] and a channel axis with x[..., None]"
        )
    return x


def conv_output_size(n: int, k: int, stride: int = 1, padding: str = "valid") -> int:
    """Output length along one axis: floor((n - k) / s) + 1 for 'valid', ceil(n / s) for 'same'."""
    if padding == "valid":
        if n < k:
            raise ValueError(f"input size {n} is smaller than the window {k} with padding='valid'")
        return (n - k) // stride + 1
    if padding == "same":
        return math.ceil(n / stride)
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def same_padding(n: int, k: int, stride: int = 1) -> tuple[int, int]:
    """(before, after) zeros that TensorFlow/Keras add for padding='same' along one axis."""
    out = math.ceil(n / stride)
    total = max((out - 1) * stride + k - n, 0)
    return total // 2, total - total // 2


def pad_images(x, kh: int, kw: int, stride: int, padding: str, value=0.0):
    """Pad (N, H, W, C) images the way Keras does for the given window, stride and padding."""
    if padding == "valid":
        return x
    if padding != "same":
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    _, h, w, _ = x.shape
    ph, pw = same_padding(h, kh, stride), same_padding(w, kw, stride)
    return np.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=value)


def conv2d_naive(x, w, b=None, stride: int = 1, padding: str = "valid"):
    """2-D convolution with explicit loops: the definition, one output number at a time.

    out[n, i, j, f] = b[f] + sum_{u, v, c} x_pad[n, i*s + u, j*s + v, c] * w[u, v, c, f]
    Slow (pure Python loops); use ``conv2d`` for anything but tiny inputs.
    """
    x = _check_nhwc(x)
    kh, kw, c_in, c_out = w.shape
    if x.shape[-1] != c_in:
        raise ValueError(f"x has {x.shape[-1]} channels but the kernel expects {c_in}")
    xp = pad_images(x, kh, kw, stride, padding)
    n, h, wd, _ = x.shape
    oh = conv_output_size(h, kh, stride, padding)
    ow = conv_output_size(wd, kw, stride, padding)
    out = np.zeros((n, oh, ow, c_out), dtype=np.result_type(x, w))
    for i in range(oh):
        for j in range(ow):
            tile = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            for f in range(c_out):
                out[:, i, j, f] = (tile * w[..., f]).sum(axis=(1, 2, 3))
    return out if b is None else out + b


def conv2d(x, w, b=None, stride: int = 1, padding: str = "valid"):
    """The same convolution, vectorised: every window at once, then one tensor contraction.

    ``sliding_window_view`` gives a view (no copy) of all kh x kw tiles; ``einsum`` multiplies
    each tile by each filter and sums over rows, columns and input channels.
    """
    x = _check_nhwc(x)
    kh, kw, c_in, _ = w.shape
    if x.shape[-1] != c_in:
        raise ValueError(f"x has {x.shape[-1]} channels but the kernel expects {c_in}")
    xp = pad_images(x, kh, kw, stride, padding)
    tiles = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
    tiles = tiles[:, ::stride, ::stride]  # (N, OH, OW, C, kh, kw)
    out = np.einsum("nhwcij,ijcf->nhwf", tiles, w, optimize=True)
    return out if b is None else out + b


def max_pool2d(x, pool_size: int = 2, stride: int | None = None, padding: str = "valid"):
    """Max pooling: the largest value of each pool_size x pool_size window, per channel.

    ``stride`` defaults to ``pool_size`` (non-overlapping windows), as in Keras. With
    ``padding='same'`` the border is padded with -inf, so padding never wins the max.
    """
    x = _check_nhwc(x)
    stride = pool_size if stride is None else stride
    xp = pad_images(x.astype(np.result_type(x, np.float32)), pool_size, pool_size, stride, padding,
                    value=-np.inf)
    tiles = np.lib.stride_tricks.sliding_window_view(xp, (pool_size, pool_size), axis=(1, 2))
    return tiles[:, ::stride, ::stride].max(axis=(-2, -1))


def flatten(x):
    """(N, H, W, C) -> (N, H*W*C), in the same (row-major, channels-last) order as Keras."""
    x = np.asarray(x)
    return x.reshape(x.shape[0], -1)


def filter2d(image, kernel, padding: str = "same"):
    """Apply one 2-D kernel to a single-channel image (H, W) -> (H', W'), for demonstrations."""
    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise ValueError(f"filter2d expects a grey-scale image (H, W), got shape {image.shape}")
    k = np.asarray(kernel, dtype=float)[:, :, None, None]
    return conv2d(image[None, :, :, None], k, padding=padding)[0, :, :, 0]


def to_gray(image):
    """uint8 RGB (H, W, 3) -> float grey-scale in [0, 1] (ITU-R 601 luma weights)."""
    image = np.asarray(image, dtype=float)
    if image.ndim == 2:
        return image / 255.0 if image.max() > 1 else image
    return image[..., :3] @ np.array([0.299, 0.587, 0.114]) / 255.0


# The classic hand-designed 3x3 filters; a CNN learns kernels like these from data.
FILTERS: dict[str, np.ndarray] = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=float),
    "blur": np.full((3, 3), 1 / 9),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=float),
    "edge_x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float),  # Sobel: vertical edges
    "edge_y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=float),  # Sobel: horizontal edges
    "laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float),
}


# ----------------------------------------------------------------------------------------------
# Counting parameters by hand
# ----------------------------------------------------------------------------------------------


def conv2d_params(kh: int, kw: int, c_in: int, c_out: int, bias: bool = True) -> int:
    """kh*kw*c_in weights per filter, c_out filters, plus one bias per filter."""
    return kh * kw * c_in * c_out + (c_out if bias else 0)


def dense_params(n_in: int, n_out: int, bias: bool = True) -> int:
    """One weight per (input, output) pair plus one bias per output."""
    return n_in * n_out + (n_out if bias else 0)


def batchnorm_params(channels: int) -> tuple[int, int]:
    """(trainable, non-trainable): gamma and beta are learned; the moving mean and variance are not."""
    return 2 * channels, 2 * channels


# -- why convolutions: a dense layer with locality and shared weights; receptive fields -------


def conv_as_dense(kernel, height: int, width: int, stride: int = 1, padding: str = "same") -> np.ndarray:
    """The dense weight matrix (H*W, H'*W') that computes the same map as a 2-D convolution.

    ``flatten(image) @ M == flatten(filter2d(image, kernel))``: a convolution *is* a dense layer,
    one whose matrix is mostly zeros (each output sees only a k x k neighbourhood: locality) and
    whose non-zero entries are the same k*k numbers in every column (weight sharing).
    """
    kernel = np.asarray(kernel, dtype=float)
    kh, kw = kernel.shape
    oh = conv_output_size(height, kh, stride, padding)
    ow = conv_output_size(width, kw, stride, padding)
    top, left = (same_padding(height, kh, stride)[0], same_padding(width, kw, stride)[0]) \
        if padding == "same" else (0, 0)
    M = np.zeros((height * width, oh * ow))
    for i in range(oh):
        for j in range(ow):
            for u in range(kh):
                for v in range(kw):
                    r, c = i * stride + u - top, j * stride + v - left
                    if 0 <= r < height and 0 <= c < width:  # outside: a padded zero
                        M[r * width + c, i * ow + j] = kernel[u, v]
    return M


def receptive_field(spec) -> list[int]:
    """Side of the input window that one unit sees, after each layer of ``spec`` [(kernel, stride)...].

    r_0 = 1; each layer adds (k - 1) times the product of the strides before it ("jump"):
    r_l = r_{l-1} + (k_l - 1) * j_{l-1}, j_l = j_{l-1} * s_l. Padding does not change it.
    """
    r, jump, out = 1, 1, []
    for k, s in spec:
        r += (k - 1) * jump
        jump *= s
        out.append(r)
    return out
