"""Looking inside a trained network: feature maps, learned filters and Grad-CAM.

Three views, each for any of the five models (nested sub-models included):

* :func:`feature_maps` / :func:`plot_feature_maps`: what successive layers compute for one cell.
  This is the 2019 report's Figure 22 done so that it can be read: every channel is normalised on
  its own (a channel's pattern is visible whatever its scale), a chosen subset of channels is shown
  (the most active ones by default, or any list you pass), one row per layer, and the channels
  that are silent (all zero after ReLU) are *counted* instead of drawn as black squares
  (:func:`activation_stats`).
* :func:`first_layer_filters` / :func:`plot_filters`: the first convolution's kernels as small
  RGB pictures.
* :func:`grad_cam` / :func:`plot_grad_cam`: Grad-CAM heat maps (Selvaraju et al., 2017): where in
  the cell the evidence for a class sits, according to the gradient of the class score with
  respect to the last spatial feature map.

How intermediate outputs are reached. Keras 3 treats a nested model (``ResNet50`` inside a
classifier head) as a single operation, so ``inner_layer.output`` is not connected to the outer
model's input and ``keras.Model(model.inputs, inner_layer.output)`` fails. Instead this module
temporarily wraps the ``call`` of the layers it wants to watch, runs the model once (eagerly,
``training=False``) and restores the layers; the wrapper records the output, and for Grad-CAM adds
a zero tensor ``eps`` to it, so that d(score)/d(eps) is exactly d(score)/d(feature map). That works
for any topology and nesting depth, on the TensorFlow backend (``tf.GradientTape``) and the JAX
backend (``jax.grad``).

Inputs: model-ready images, float32 in [0, 1], shape ``(N, H, W, 3)`` or one ``(H, W, 3)``; uint8
images are divided by 255, and images whose size differs from the model's input are resized
(bilinear). To get model-ready images from files use ``allnet_lib.pipeline.load_arrays``.
"""

from __future__ import annotations

import contextlib
import math
import re
import weakref
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "LayerInfo",
    "leaf_layers",
    "find_layer",
    "trace_layers",
    "spatial_layers",
    "conv_layers",
    "count_params",
    "layer_table",
    "last_conv_layer",
    "grad_cam_layer",
    "prepare_images",
    "feature_maps",
    "select_channels",
    "activation_stats",
    "plot_feature_maps",
    "first_conv_layer",
    "first_layer_filters",
    "filter_smoothness",
    "plot_filters",
    "grad_cam",
    "overlay_heatmap",
    "plot_grad_cam",
    "plot_grad_cam_grid",
    "cell_mask",
    "heat_inside_cell",
    "grad_cam_map_side",
    "heat_share_table",
    "heat_share_verdict",
]


# --------------------------------------------------------------------------------------------
# Walking a model's layers, nested models included
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerInfo:
    """One leaf layer as seen in a forward pass."""

    name: str  # qualified: "resnet50/conv5_block3_out" for a layer inside a nested model
    layer: object  # the keras layer
    kind: str  # class name: "Conv2D", "BatchNormalization", ...
    output_shape: tuple  # shape of its output in the traced pass, batch dimension included
    order: int  # position in the order the layers were called


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def leaf_layers(model, prefix: str = "") -> list[tuple[str, object]]:
    """``(qualified name, layer)`` for every non-model layer, descending into nested models.

    Input layers are skipped. Order is the order of ``model.layers`` (topological for
    functional and sequential models).
    """
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        name = f"{prefix}{layer.name}"
        if _is_model(layer):
            out.extend(leaf_layers(layer, prefix=f"{name}/"))
        else:
            out.append((name, layer))
    return out


def find_layer(model, name: str):
    """A layer by plain or qualified name, searching nested models.

    ``find_layer(m, "conv5_block3_out")`` and ``find_layer(m, "resnet50/conv5_block3_out")``
    both work; an ambiguous plain name (the same name in two nested models) is an error.
    """
    leaves = leaf_layers(model)
    exact = [layer for qname, layer in leaves if qname == name]
    if exact:
        return exact[0]
    plain = [(qname, layer) for qname, layer in leaves if qname.rsplit("/", 1)[-1] == name]
    if len(plain) == 1:
        return plain[0][1]
    if len(plain) > 1:
        raise ValueError(
            f"layer name {name!r} is ambiguous in model {model.name!r}: "
            f"{[q for q, _ in plain]}; pass the qualified name"
        )
    sample = ", ".join(q for q, _ in leaves[:8])
    raise ValueError(
        f"model {model.name!r} has no layer {name!r} (nested models searched). "
        f"Its layers start: {sample}, ...; list them with explain.leaf_layers(model)."
    )


@contextlib.contextmanager
def _wrapped_calls(layers_and_wrappers):
    """Temporarily replace ``layer.call`` with ``wrapper(original_call)`` for each pair."""
    patched = []
    try:
        for layer, make_wrapper in layers_and_wrappers:
            original = layer.call
            object.__setattr__(layer, "call", make_wrapper(original))
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            try:
                object.__delattr__(layer, "call")
            except AttributeError:  # pragma: no cover - defensive
                pass


def _model_input_size(model) -> tuple[int, int] | None:
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):
        shape = shape[0]
    if shape is None or len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def prepare_images(images, model=None) -> np.ndarray:
    """Model-ready batch: float32 in [0, 1], ``(N, H, W, 3)``, resized to the model's input."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(
            f"expected images of shape (H, W, 3) or (N, H, W, 3), got {x.shape}; "
            "load cells with allnet_lib.pipeline.load_arrays or allnet_lib.imageio.read_image"
        )
    if x.dtype == np.uint8:
        x = x.astype("float32") / 255.0
    x = x.astype("float32")
    size = _model_input_size(model) if model is not None else None
    if size is not None and tuple(x.shape[1:3]) != size:
        import keras

        x = np.asarray(keras.ops.convert_to_numpy(keras.ops.image.resize(x, size)), "float32")
    return x


_TRACES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def trace_layers(model, images=None) -> list[LayerInfo]:
    """Run one forward pass and report every leaf layer with its output shape, in call order.

    Nested models are entered. With ``images=None`` a zero image of the model's input size is
    used (the model needs a fixed input size then). The result depends only on the model and the
    image size, so it is remembered per model and size (Grad-CAM asks for it on every call).
    """
    import keras

    if images is None:
        size = _model_input_size(model)
        if size is None:
            raise ValueError(
                f"model {model.name!r} has no fixed input size: pass images to trace_layers"
            )
        images = np.zeros((1, *size, 3), "float32")
    x = prepare_images(images, model)
    key = tuple(x.shape[1:])
    try:
        cached = _TRACES.get(model, {}).get(key)
    except TypeError:  # not weak-referenceable: no cache
        cached = None
    if cached is not None:
        return list(cached)
    leaves = leaf_layers(model)
    seen: dict[int, tuple] = {}
    order: list[int] = []

    def recorder(key):
        def make(original):
            def call(*args, **kwargs):
                out = original(*args, **kwargs)
                if key not in seen:
                    order.append(key)
                seen[key] = tuple(int(d) for d in keras.ops.shape(out)) if hasattr(
                    out, "shape"
                ) else ()
                return out

            return call

        return make

    with _wrapped_calls([(layer, recorder(i)) for i, (_, layer) in enumerate(leaves)]):
        model(x, training=False)
    infos = []
    for rank, key in enumerate(order):
        qname, layer = leaves[key]
        infos.append(LayerInfo(qname, layer, type(layer).__name__, seen[key], rank))
    try:
        _TRACES.setdefault(model, {})[tuple(x.shape[1:])] = tuple(infos)
    except TypeError:
        pass
    return infos


_SKIP_SPATIAL = ("Pooling", "Dropout", "ZeroPadding", "Cropping", "FlipRotate", "Random",
                 "Rescaling", "Resizing", "Normalization")


def spatial_layers(model, images=None) -> list[LayerInfo]:
    """Layers whose output is a spatial feature map ``(N, h, w, c)`` with ``h, w >= 2``.

    Pooling, padding, dropout and augmentation/pre-processing layers are left out (they move or
    copy features; they do not compute new ones), except normalisation after a convolution.
    """
    out = []
    for info in trace_layers(model, images):
        if len(info.output_shape) != 4 or min(info.output_shape[1:3]) < 2:
            continue
        if info.kind == "BatchNormalization" or not any(s in info.kind for s in _SKIP_SPATIAL):
            out.append(info)
    return out


def conv_layers(model, images=None) -> list[LayerInfo]:
    """The convolution layers (Conv2D, SeparableConv2D, DepthwiseConv2D), in call order."""
    return [i for i in trace_layers(model, images) if "Conv" in i.kind and
            len(i.output_shape) == 4]


def last_conv_layer(model, images=None) -> str:
    """Qualified name of the layer Grad-CAM should look at (:func:`grad_cam_layer`)."""
    return grad_cam_layer(model, images).name


def grad_cam_layer(model, images=None) -> LayerInfo:
    """The layer Grad-CAM should look at, with its output shape: the last spatial feature map.

    That is the last layer (in call order, nested models entered) whose output is a feature map
    of at least 2x2 and that computes rather than moves features: for ResNet50 the block output
    ``conv5_block3_out`` (after the residual addition), for InceptionV3 the concatenation
    ``mixed10`` (all branches, not one branch's last convolution), for the proposed model and
    AlexNet the normalisation or activation after the last convolution. When the network's
    last map is 1x1 (small inputs), the last map of at least 2x2 is used instead, and if that
    size has module outputs (concatenations), the last of them: InceptionV3 at 75 px gives
    ``mixed7`` (3x3).
    """
    layers = spatial_layers(model, images)
    if not layers:
        raise ValueError(
            f"model {model.name!r} has no spatial feature-map layer (is it convolutional?)"
        )
    # At small inputs the last module's map can be 1x1 (InceptionV3 at 75 px): then the last map
    # of at least 2x2 may sit inside one branch of a later module; prefer the last whole module
    # output (a concatenation) of that size.
    final = layers[-1].output_shape[1:3]
    concats = [i for i in layers if i.output_shape[1:3] == final and i.kind == "Concatenate"]
    return concats[-1] if concats else layers[-1]


# --------------------------------------------------------------------------------------------
# Layer tables and parameter counts
# --------------------------------------------------------------------------------------------
def _n(weights) -> int:
    return int(sum(int(np.prod(w.shape)) for w in weights))


def count_params(model_or_layer) -> dict[str, int]:
    """``{"total", "trainable", "non_trainable"}`` parameter counts (BatchNorm's moving mean and
    variance are the non-trainable ones)."""
    trainable = _n(model_or_layer.trainable_weights)
    non_trainable = _n(model_or_layer.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable,
            "non_trainable": non_trainable}


_RESNET_BLOCK = re.compile(r"^(conv\d+_block\d+)_")
_VGG_BLOCK = re.compile(r"^(block\d+)_")
_INCEPTION_END = re.compile(r"^mixed\d+$")


def _auto_groups(infos: list[LayerInfo]) -> list[str]:
    """A group name per layer: ResNet blocks (``conv3_block2``), VGG/proposed blocks (``block4``),
    Inception modules (everything up to and including a ``mixedN`` concatenation); other layers
    stay on their own. Names inside nested models are matched without their prefix."""
    plain = [i.name.rsplit("/", 1)[-1] for i in infos]
    groups = [None] * len(infos)
    for k, name in enumerate(plain):
        m = _RESNET_BLOCK.match(name) or _VGG_BLOCK.match(name)
        if m:
            groups[k] = m.group(1)
    ends = [k for k, name in enumerate(plain) if _INCEPTION_END.match(name)]
    if ends:  # an Inception network: a module is the run of layers closed by its mixedN layer
        pools = [k for k in range(ends[0]) if infos[k].kind == "MaxPooling2D"]
        stem_end = pools[-1] if pools else -1  # the stem ends with its last max-pooling
        first_conv = next((k for k in range(len(infos)) if "Conv" in infos[k].kind), 0)
        for k in range(first_conv, stem_end + 1):
            groups[k] = "stem"
        prev = stem_end
        for end in ends:
            for k in range(prev + 1, end + 1):
                if groups[k] is None:
                    groups[k] = plain[end]
            prev = end
    return [g or name for g, name in zip(groups, plain)]


def layer_table(model, images=None, *, group: str | None = None):
    """One row per leaf layer (nested models entered), in call order: name, type, output shape
    (without the batch axis) and parameters (total and trainable).

    ``group="auto"`` collapses the rows into blocks (ResNet ``convN_blockM``, VGG/proposed
    ``blockN``, Inception ``mixedN`` modules; other layers keep their own row), listing how many
    layers of each type a block holds and its output shape. The parameter column always sums to
    ``model.count_params()``.
    """
    import pandas as pd

    infos = trace_layers(model, images)
    rows = []
    for info in infos:
        counts = count_params(info.layer)
        rows.append({"layer": info.name, "type": info.kind,
                     "output shape": "x".join(str(d) for d in info.output_shape[1:]),
                     "params": counts["total"], "trainable": counts["trainable"]})
    table = pd.DataFrame(rows)
    if group is None:
        return table
    if group != "auto":
        raise ValueError(f"group must be None or 'auto', got {group!r}")
    table["block"] = _auto_groups(infos)
    out = []
    for block, part in table.groupby("block", sort=False):
        kinds = part["type"].value_counts(sort=False)
        out.append({"block": block, "layers": len(part),
                    "types": ", ".join(f"{n} {k}" if n > 1 else k for k, n in kinds.items()),
                    "output shape": part["output shape"].iloc[-1],
                    "params": int(part["params"].sum()), "trainable": int(part["trainable"].sum())})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# Feature maps
# --------------------------------------------------------------------------------------------
def _record_outputs(model, x, names: Sequence[str]) -> dict[str, np.ndarray]:
    import keras

    layers = [find_layer(model, n) for n in names]
    store: dict[str, np.ndarray] = {}

    def recorder(name):
        def make(original):
            def call(*args, **kwargs):
                out = original(*args, **kwargs)
                store[name] = np.asarray(keras.ops.convert_to_numpy(out))
                return out

            return call

        return make

    with _wrapped_calls([(layer, recorder(n)) for n, layer in zip(names, layers)]):
        model(x, training=False)
    missing = [n for n in names if n not in store]
    if missing:
        raise RuntimeError(f"layers {missing} were not called in the forward pass of {model.name!r}")
    return store


def _evenly(items: list, k: int) -> list:
    if k >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in sorted(set(idx))]


def feature_maps(model, image, *, layers: Iterable[str] | None = None, max_layers: int = 6
                 ) -> dict[str, np.ndarray]:
    """Feature maps of successive layers for one cell: ``{layer name: array (h, w, c)}``.

    ``layers``: qualified or plain names; default: ``max_layers`` convolution layers spread
    evenly from the first to the last (all of them if there are fewer). Order is call order.
    """
    x = prepare_images(image, model)[:1]
    if layers is None:
        convs = conv_layers(model, x)
        if not convs:
            convs = spatial_layers(model, x)
        names = [i.name for i in _evenly(convs, max_layers)]
    else:
        names = list(layers)
    outs = _record_outputs(model, x, names)
    return {n: outs[n][0] for n in names}


def select_channels(fmap: np.ndarray, n: int = 8, how: str | Sequence[int] = "active") -> list[int]:
    """Which channels of one feature map ``(h, w, c)`` to show.

    ``how="active"``: the ``n`` channels with the largest mean absolute activation (what this
    cell switches on); ``"spread"``: ``n`` channels evenly spaced over 0..c-1; ``"first"``: 0..n-1;
    or an explicit list of channel indices.
    """
    c = fmap.shape[-1]
    if not isinstance(how, str):
        chosen = [int(i) for i in how]
        bad = [i for i in chosen if not 0 <= i < c]
        if bad:
            raise ValueError(f"channel indices {bad} out of range for a map with {c} channels")
        return chosen
    n = min(n, c)
    if how == "active":
        score = np.abs(fmap).reshape(-1, c).mean(axis=0)
        return [int(i) for i in np.argsort(-score, kind="stable")[:n]]
    if how == "spread":
        return [int(i) for i in np.linspace(0, c - 1, n).round().astype(int)]
    if how == "first":
        return list(range(n))
    raise ValueError(f"how must be 'active', 'spread', 'first' or a list of indices, not {how!r}")


def activation_stats(maps: dict[str, np.ndarray]):
    """Per layer: shape, channels, silent channels (all values <= 0) and the share of zeros.

    The 2019 report said that deeper layers "show fewer and fewer features being activated;
    most are set to zero"; this table measures it for one cell.
    """
    import pandas as pd

    rows = []
    for name, fmap in maps.items():
        c = fmap.shape[-1]
        flat = fmap.reshape(-1, c)
        silent = int((flat.max(axis=0) <= 0).sum())
        rows.append({
            "layer": name,
            "size": f"{fmap.shape[0]}x{fmap.shape[1]}",
            "channels": c,
            "silent channels": silent,
            "silent %": 100.0 * silent / c,
            "zero values %": 100.0 * float((flat <= 0).mean()),
        })
    return pd.DataFrame(rows)


def _normalise(channel: np.ndarray) -> np.ndarray:
    lo, hi = float(channel.min()), float(channel.max())
    if hi - lo < 1e-12:
        return np.zeros_like(channel, dtype="float32")
    return ((channel - lo) / (hi - lo)).astype("float32")


def plot_feature_maps(model, image, *, layers: Iterable[str] | None = None, max_layers: int = 6,
                      n_channels: int = 8, how: str | Sequence[int] = "active",
                      cmap: str = "viridis", title: str | None = None, maps=None):
    """One row per layer: the input cell, then ``n_channels`` chosen channels, each normalised
    to its own [min, max] (``viridis``: dark = low, yellow = high). Row labels give the layer,
    its size and how many of its channels are silent for this cell. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    x = prepare_images(image, model)[:1]
    if maps is None:
        maps = feature_maps(model, x, layers=layers, max_layers=max_layers)
    names = list(maps)
    cols = n_channels + 1
    fig, axes = plt.subplots(len(names), cols, figsize=(1.35 * cols, 1.45 * len(names) + 0.4),
                             squeeze=False)
    for r, name in enumerate(names):
        fmap = maps[name]
        chans = select_channels(fmap, n_channels, how)
        silent = int((fmap.reshape(-1, fmap.shape[-1]).max(axis=0) <= 0).sum())
        ax = axes[r, 0]
        ax.imshow(np.clip(x[0], 0, 1))
        ax.set_xticks([])
        ax.set_yticks([])
        short = name.rsplit("/", 1)[-1]
        ax.set_ylabel(f"{short}\n{fmap.shape[0]}x{fmap.shape[1]}x{fmap.shape[-1]}\n"
                      f"{silent} silent", fontsize=7, rotation=0, ha="right", va="center")
        for c in range(1, cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c - 1 < len(chans):
                ch = chans[c - 1]
                ax.imshow(_normalise(fmap[..., ch]), cmap=cmap, vmin=0, vmax=1,
                          interpolation="nearest")
                ax.set_title(f"ch {ch}", fontsize=7, pad=2)
            else:
                ax.axis("off")
    fig.suptitle(title or f"{model.name}: feature maps, {how if isinstance(how, str) else 'chosen'}"
                 " channels, each normalised on its own", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Learned filters
# --------------------------------------------------------------------------------------------
def first_conv_layer(model) -> str:
    """Qualified name of the first convolution that sees the image (nested models entered)."""
    for name, layer in leaf_layers(model):
        if type(layer).__name__ in ("Conv2D", "SeparableConv2D") and getattr(layer, "kernel", None) is not None:
            return name
    raise ValueError(f"model {model.name!r} has no Conv2D layer")


def first_layer_filters(model, layer: str | None = None) -> np.ndarray:
    """The kernel of the first convolution, ``(k, k, in_channels, n_filters)``, as NumPy."""
    import keras

    conv = find_layer(model, layer or first_conv_layer(model))
    return np.asarray(keras.ops.convert_to_numpy(conv.kernel))


def filter_smoothness(kernel: np.ndarray) -> np.ndarray:
    """Per filter: the correlation between horizontally and vertically neighbouring weights.

    Randomly initialised filters are noise (about 0); filters that learned edges, blobs or
    colour contrasts vary smoothly across space (clearly above 0). ``kernel``: ``(k, k, c, n)``;
    returns ``n`` values (NaN for constant filters or 1x1 kernels)."""
    k = np.asarray(kernel, dtype="float64")
    out = np.full(k.shape[-1], np.nan)
    if k.shape[0] < 2 or k.shape[1] < 2:
        return out
    for i in range(k.shape[-1]):
        f = k[..., i]
        a = np.concatenate([f[:, :-1].ravel(), f[:-1, :].ravel()])
        b = np.concatenate([f[:, 1:].ravel(), f[1:, :].ravel()])
        if a.std() > 0 and b.std() > 0:
            out[i] = float(np.corrcoef(a, b)[0, 1])
    return out


def plot_filters(model, *, n: int = 32, layer: str | None = None, columns: int = 8,
                 title: str | None = None):
    """The first ``n`` first-layer filters as RGB pictures, each normalised to its own range
    (grey = 0 only when a filter is symmetric around zero). Returns the Figure."""
    import matplotlib.pyplot as plt

    kernel = first_layer_filters(model, layer)
    k, _, cin, nf = kernel.shape
    n = min(n, nf)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.1 * rows + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        f = kernel[..., i]
        img = _normalise(f) if cin == 3 else _normalise(f.mean(axis=-1))
        ax.imshow(img, cmap=None if cin == 3 else "gray", interpolation="nearest")
        ax.set_title(str(i), fontsize=7, pad=1)
    fig.suptitle(title or f"{model.name}: first-layer filters ({k}x{k}x{cin}, {n} of {nf})",
                 fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------
def _logit_switch(model):
    """The layer holding the final softmax, to read pre-softmax scores (None if not found)."""
    import keras

    leaves = leaf_layers(model)
    for _, layer in reversed(leaves):
        act = getattr(layer, "activation", None)
        if act is None:
            if isinstance(layer, keras.layers.Softmax):
                return layer
            continue
        name = getattr(act, "__name__", str(act))
        if "softmax" in name:
            return layer
        return None
    return None


@contextlib.contextmanager
def _linear_output(layer):
    import keras

    if layer is None:
        yield False
        return
    if isinstance(layer, keras.layers.Softmax):
        with _wrapped_calls([(layer, lambda original: (lambda inputs, *a, **k: inputs))]):
            yield True
        return
    original = layer.activation
    object.__setattr__(layer, "activation", keras.activations.linear)
    try:
        yield True
    finally:
        object.__setattr__(layer, "activation", original)


def _class_score(out, onehot, logits: bool):
    """Score whose gradient Grad-CAM uses, per image: the logit of its class (``onehot`` row)
    minus the mean logit (softmax is unchanged by adding a constant to all logits, so only
    differences mean anything; for two classes this is half the log-odds). Without logits: the
    log of the class probability."""
    import keras

    onehot = keras.ops.convert_to_tensor(onehot, dtype=out.dtype)
    if logits:
        return keras.ops.sum(out * onehot, axis=-1) - keras.ops.mean(out, axis=-1)
    return keras.ops.log(keras.ops.sum(out * onehot, axis=-1) + 1e-12)


def _grads_wrt_layer(model, x, layer, class_index):
    """(feature map A, dScore/dA, model output probabilities), as NumPy.

    ``class_index``: an int (the same class for every image), a sequence of one class per
    image, or ``"predicted"`` (each image's most probable class)."""
    import keras

    backend = keras.backend.backend()
    # shape of the watched output, from a recording pass
    name_probe = {}

    def probe(original):
        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            name_probe["shape"] = tuple(int(d) for d in keras.ops.shape(out))
            return out

        return call

    with _wrapped_calls([(layer, probe)]):
        probs = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    shape = name_probe["shape"]
    n_classes = probs.shape[-1]
    if isinstance(class_index, str):
        if class_index != "predicted":
            raise ValueError(f"class_index must be an int, one int per image or 'predicted', "
                             f"not {class_index!r}")
        classes = probs.argmax(axis=-1)
    else:
        classes = np.broadcast_to(np.asarray(class_index, dtype=int), (len(x),))
    if classes.min() < 0 or classes.max() >= n_classes:
        raise ValueError(f"class_index {class_index!r} out of range for {n_classes} classes")
    onehot = np.eye(n_classes, dtype="float32")[classes]
    if len(shape) != 4:
        raise ValueError(f"layer {layer.name!r} outputs shape {shape}; Grad-CAM needs (N, h, w, c)")
    switch = _logit_switch(model)
    captured = {}

    def adder(eps):
        def make(original):
            def call(*args, **kwargs):
                out = original(*args, **kwargs)
                out = out + keras.ops.cast(eps, out.dtype)  # float16 maps under mixed precision
                captured["A"] = out
                return out

            return call

        return make

    if backend == "tensorflow":
        import tensorflow as tf

        eps = tf.zeros(shape, dtype=tf.float32)
        with _linear_output(switch) as logits, _wrapped_calls([(layer, adder(eps))]):
            with tf.GradientTape() as tape:
                tape.watch(eps)
                out = model(tf.convert_to_tensor(x), training=False)
                score = tf.reduce_sum(_class_score(out, onehot, logits))
            grads = tape.gradient(score, eps)
        if grads is None:
            raise RuntimeError(f"no gradient reached layer {layer.name!r}: is it on the path to the output?")
        return captured["A"].numpy(), grads.numpy(), probs
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def f(eps):
            with _wrapped_calls([(layer, adder(eps))]):
                out = model(jnp.asarray(x), training=False)
                return jnp.sum(_class_score(out, onehot, logits_flag)), captured["A"]

        with _linear_output(switch) as logits_flag:
            grads, a = jax.grad(f, has_aux=True)(jnp.zeros(shape, jnp.float32))
        return np.asarray(a), np.asarray(grads), probs
    raise NotImplementedError(
        f"Grad-CAM is implemented for the tensorflow and jax backends, not {backend!r}: "
        "set KERAS_BACKEND=tensorflow"
    )


def grad_cam(model, images, *, class_index=1, layer: str | None = None,
             return_probs: bool = False):
    """Grad-CAM heat maps, ``(N, H, W)`` in [0, 1] at the model's input size.

    For each image: the feature map ``A`` of ``layer`` (default: :func:`last_conv_layer`), the
    gradient ``g`` of the class score (pre-softmax, see ``_class_score``) with respect to ``A``,
    channel weights ``w_k = mean over positions of g_k``, and ``ReLU(sum_k w_k A_k)``, upsampled
    bilinearly to the input and divided by its maximum. ``class_index=1`` asks "where is the
    evidence for ALL"; 0 for "hem"; ``"predicted"`` explains each image's own decision; a list
    gives one class per image. A map that is zero everywhere means no positive evidence for
    that class. With ``return_probs=True`` returns ``(heatmaps, probabilities (N, classes))``.
    """
    import keras

    x = prepare_images(images, model)
    target = find_layer(model, layer or last_conv_layer(model, x[:1]))
    a, g, probs = _grads_wrt_layer(model, x, target, class_index)
    a, g = a.astype("float32"), g.astype("float32")
    weights = g.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((weights * a).sum(axis=-1), 0.0)[..., None]
    cam = np.asarray(keras.ops.convert_to_numpy(
        keras.ops.image.resize(cam.astype("float32"), x.shape[1:3], interpolation="bilinear")))[..., 0]
    cam = np.maximum(cam, 0.0)
    peak = cam.reshape(len(cam), -1).max(axis=1)
    cam = cam / np.where(peak > 0, peak, 1.0)[:, None, None]
    cam = cam.astype("float32")
    return (cam, probs) if return_probs else cam


def overlay_heatmap(image, heatmap, *, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """The image with a heat map blended over it, float RGB in [0, 1]."""
    import matplotlib

    img = np.asarray(image, dtype="float32")
    if img.max() > 1.5:
        img = img / 255.0
    heat = np.asarray(heatmap, dtype="float32")
    if heat.shape != img.shape[:2]:
        from PIL import Image

        heat = np.asarray(Image.fromarray(heat, mode="F").resize(
            (img.shape[1], img.shape[0]), Image.BILINEAR))
    colour = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    return np.clip((1 - alpha) * img + alpha * colour, 0, 1)


def plot_grad_cam(images, heatmaps, *, titles: Sequence[str] | None = None, columns: int = 4,
                  alpha: float = 0.45, show_image: bool = True, suptitle: str | None = None):
    """Each cell and its Grad-CAM overlay side by side (or overlays only). Returns the Figure."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    n = len(images)
    per = 2 if show_image else 1
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns * per, figsize=(1.7 * columns * per, 1.9 * rows + 0.3),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, columns)
        img = images[i].astype("float32")
        if img.max() > 1.5:
            img = img / 255.0
        if show_image:
            axes[r, c * per].imshow(np.clip(img, 0, 1))
            axes[r, c * per].axis("on")
        ax = axes[r, c * per + per - 1]
        ax.imshow(overlay_heatmap(img, heatmaps[i], alpha=alpha))
        ax.axis("on")
        if titles is not None:
            (axes[r, c * per] if show_image else ax).set_title(titles[i], fontsize=7, loc="left")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def plot_grad_cam_grid(images, heatmaps: dict, *, titles: Sequence[str] | None = None,
                       probabilities: dict | None = None, alpha: float = 0.45, size: float = 1.6,
                       suptitle: str | None = None):
    """Rows: the cells themselves, then one row of overlays per model (``heatmaps``: model name ->
    ``(N, h, w)``). Columns: cells, titled with ``titles``. ``probabilities`` (model name -> one
    P(ALL) per cell) labels every overlay with that model's answer. Returns the Figure."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    n = len(images)
    rows = 1 + len(heatmaps)
    fig, axes = plt.subplots(rows, n, figsize=(size * n + 0.8, size * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for j in range(n):
        img = images[j].astype("float32")
        img = img / 255.0 if img.max() > 1.5 else img
        axes[0, j].imshow(np.clip(img, 0, 1))
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=7)
        for r, (name, heat) in enumerate(heatmaps.items(), start=1):
            axes[r, j].imshow(overlay_heatmap(img, heat[j], alpha=alpha))
            if probabilities is not None and name in probabilities:
                axes[r, j].set_title(f"P(ALL) {float(probabilities[name][j]):.2f}", fontsize=7, pad=2)
    axes[0, 0].set_ylabel("cell", fontsize=8)
    for r, name in enumerate(heatmaps, start=1):
        axes[r, 0].set_ylabel(name, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def cell_mask(images, *, threshold: int = 10) -> np.ndarray:
    """Boolean ``(N, H, W)``: pixels that belong to the segmented cell (not the black background).

    C-NMC images are segmented cells on pure black; a pixel is "cell" when its brightest channel
    exceeds ``threshold`` (of 255; images in [0, 1] are scaled first)."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.dtype != np.uint8:
        x = np.clip(x * 255.0 if x.max() <= 1.5 else x, 0, 255)
    return x.max(axis=-1) > threshold


def heat_inside_cell(images, heatmaps, *, threshold: int = 10) -> np.ndarray:
    """Share of each Grad-CAM map's total heat that falls on the cell rather than the background.

    A model that looks at the cell scores near 1; heat on the black border means the evidence came
    from somewhere a pathologist would not look (or from nothing: background is the same black in
    every image). Heat maps are resized to the images first. NaN where a map is all zero."""
    masks = cell_mask(images, threshold=threshold)
    heat = np.asarray(heatmaps, dtype="float32")
    if heat.ndim == 2:
        heat = heat[None]
    if heat.shape[1:] != masks.shape[1:]:
        from PIL import Image

        heat = np.stack([np.asarray(Image.fromarray(h, mode="F").resize(
            (masks.shape[2], masks.shape[1]), Image.BILINEAR)) for h in heat])
    total = heat.reshape(len(heat), -1).sum(axis=1)
    inside = (heat * masks).reshape(len(heat), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


#: How far above chance (the cell's share of the image) a model's heat share on the cell must be
#: for the book to say that the model's evidence lies on the cell.
HEAT_MARGIN = 0.05
#: Grad-CAM maps from a layer this many positions across (or fewer) cannot be checked by the heat
#: share: upsampled bilinearly, a 2x2 map is a bilinear function of position, whose mean over any
#: region symmetric about the image centre (a centred cell) equals its mean over the whole image.
#: Its heat on a centred cell is near the chance level whatever the model looks at.
BLIND_MAP_SIDE = 2


def grad_cam_map_side(model, images=None) -> int:
    """Positions across the feature map Grad-CAM uses for ``model`` (:func:`grad_cam_layer`)."""
    return int(min(grad_cam_layer(model, images).output_shape[1:3]))


def heat_share_table(images_by_model: dict, heatmaps_by_model: dict, y,
                     map_sides: dict | None = None) -> "pd.DataFrame":
    """Per model and true class: the mean share of Grad-CAM heat on the cell, the chance level
    (the mean share of the image the cell covers: what a map that ignored the image would score),
    their difference, and how many maps were empty (all zero). ``images_by_model[m]`` are the
    images model ``m`` saw (its own input size), ``heatmaps_by_model[m]`` its maps, ``y`` the
    labels (1 = ALL) of the same cells. ``map_sides[m]`` (:func:`grad_cam_map_side`), when given,
    becomes a column ``map side``, so that :func:`heat_share_verdict` can leave out maps too
    coarse to check (:data:`BLIND_MAP_SIDE`)."""
    import pandas as pd

    from allnet_lib.labels import CLASSES

    y = np.asarray(y).astype(int)
    rows = []
    for name, heat in heatmaps_by_model.items():
        images = np.asarray(images_by_model[name])
        inside = heat_inside_cell(images, heat)
        share = cell_mask(images).reshape(len(images), -1).mean(axis=1)
        for c in (1, 0):
            sel = y == c
            if not sel.any():
                continue
            on_cell = float(np.nanmean(inside[sel])) if np.isfinite(inside[sel]).any() else float("nan")
            rows.append({"model": name, "class": CLASSES[c], "cells": int(sel.sum()),
                         "heat on the cell": on_cell, "chance (cell's share)": float(share[sel].mean()),
                         "above chance": on_cell - float(share[sel].mean()),
                         "empty maps": int(np.isnan(inside[sel]).sum())})
            if map_sides is not None:
                rows[-1]["map side"] = map_sides.get(name, np.nan)
    return pd.DataFrame(rows).set_index(["model", "class"])


def heat_share_verdict(table) -> tuple[str, bool | None]:
    """A sentence on where the models' evidence lies, from :func:`heat_share_table`, and whether
    every model put its heat on the cell by more than :data:`HEAT_MARGIN` above chance in every
    class: False if a model that can be checked did not; None when nothing could be measured, or
    when the others did but some maps were too coarse to check (a ``map side`` of at most
    :data:`BLIND_MAP_SIDE`)."""
    above = table["above chance"]
    if above.isna().all():
        return "No Grad-CAM map had any heat: nothing can be said about where the evidence lies.", None
    sides = table["map side"] if "map side" in table else None
    on_cell, near_chance, blind = [], [], []
    for model, part in above.groupby(level="model", sort=False):
        if sides is not None and (sides.loc[model] <= BLIND_MAP_SIDE).all():
            blind.append(model)
        else:
            (on_cell if (part > HEAT_MARGIN).all() else near_chance).append(model)
    chance = table["chance (cell's share)"]
    facts = "; ".join(f"{m} {table.loc[m, 'heat on the cell'].mean():.2f} vs chance {chance.loc[m].mean():.2f}"
                      for m in dict.fromkeys(table.index.get_level_values("model")))
    unchecked = ""
    if blind:
        side = int(sides.loc[blind].max())
        unchecked = (f" Not checked: {', '.join(blind)}, whose Grad-CAM layer is {side}x{side}. Upsampled, such "
                     "a map has the same mean over any region symmetric about the image centre as over the "
                     "whole image, so its heat on a centred cell stays near chance whatever the model looks at.")
    if not near_chance and not on_cell:
        return f"No model could be checked: {facts}.{unchecked}", None
    if not near_chance:
        return (f"Every model checked puts more of its heat on the cell than chance (by more than "
                f"{HEAT_MARGIN:.2f} in each class): {facts}.{unchecked}", None if blind else True)
    if not on_cell:
        return (f"No model's heat lies on the cell clearly more than chance (margin {HEAT_MARGIN:.2f}): "
                f"{facts}. At these input sizes Grad-CAM does not show where the evidence lies.{unchecked}", False)
    return (f"Heat on the cell above chance (margin {HEAT_MARGIN:.2f}) for {', '.join(on_cell)}; "
            f"near chance for {', '.join(near_chance)}: {facts}.{unchecked}", False)
