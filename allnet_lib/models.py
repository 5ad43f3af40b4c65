"""The model zoo: the four classic networks of the 2019 report and its proposed model.

Every builder returns an uncompiled ``keras.Model`` that takes ``float32`` images in ``[0, 1]``
and ends in a softmax over ``num_classes`` (column 1 = P(ALL)). Model-specific input scaling
(ImageNet "caffe" or "tf" modes, needed by pre-trained weights) happens inside the model, so
callers never need to know it.
Only the Keras 3 API is used, so the models build under the TensorFlow, JAX and PyTorch backends.

* ``alexnet``: Krizhevsky et al. 2012, 5 conv + 3 fully connected layers, with local response
  normalisation; one tower instead of the paper's two-GPU split.
* ``vgg16``, ``resnet50``, ``inception_v3``: ``keras.applications`` bases (``include_top=False``)
  with a small 2-class head (global average pooling, dropout, softmax). ``weights=None`` trains
  from scratch (what the report did); ``weights="imagenet"`` downloads ImageNet weights.
* ``proposed``: the report's own network, rebuilt layer for layer so that it has exactly the
  report's parameter counts (64,066,938 at 300x300x3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
from keras import layers, ops

from allnet_lib import catalogue

_PACKAGE = "allnet"


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
class WeightsUnavailableError(RuntimeError):
    """Pre-trained weights were asked for but could not be obtained (e.g. no internet)."""


# --------------------------------------------------------------------------------------------
# custom layers (registered, so saved ``.keras`` files load once this module is imported)
# --------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=_PACKAGE)
class ImagePreprocess(layers.Layer):
    """Maps ``[0, 1]`` RGB input to what a ``keras.applications`` network expects.

    ``caffe`` (VGG16, ResNet50): 0..255, RGB -> BGR, minus the ImageNet channel means.
    ``tf`` (InceptionV3): -1..1. Kept inside the model so pipelines stay model-agnostic.
    """

    MODES = ("caffe", "tf")
    _CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {self.MODES}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x * 2.0 - 1.0
        bgr = ops.flip(x * 255.0, axis=-1)
        return bgr - ops.cast(ops.convert_to_tensor(self._CAFFE_MEAN_BGR), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LocalResponseNormalization(layers.Layer):
    """AlexNet's across-channel normalisation (Krizhevsky et al. 2012, section 3.3).

    ``b_c = a_c / (k + alpha * sum_{c' near c} a_c'^2) ** beta`` over ``depth`` neighbouring
    channels, with the paper's k=2, depth=5, alpha=1e-4, beta=0.75. Written with ``keras.ops``
    so it runs on every backend (TensorFlow's ``tf.nn.lrn`` would tie the model to TF).
    """

    def __init__(self, depth: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75,
                 **kwargs):
        super().__init__(**kwargs)
        self.depth, self.k, self.alpha, self.beta = int(depth), float(k), float(alpha), float(beta)

    def call(self, inputs):
        half = self.depth // 2
        channels = inputs.shape[-1]
        squared = ops.pad(ops.square(inputs), [[0, 0], [0, 0], [0, 0], [half, half]])
        total = sum(squared[..., i:i + channels] for i in range(self.depth))
        return inputs / ops.power(self.k + self.alpha * total, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth": self.depth, "k": self.k,
                "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BalancedAccuracy(keras.metrics.Metric):
    """Mean of the per-class recalls (sensitivity and specificity for two classes).

    Always answering "all" scores 0.5 whatever the class balance, while plain accuracy gives it
    about 0.68 on C-NMC: picking the best epoch by balanced accuracy cannot reward a model for
    ignoring the minority class. Sample weights are ignored (the metric is balanced already).
    Lives here so that saved models load wherever the model layers load."""

    def __init__(self, num_classes: int = 2, name: str = "balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.correct = self.add_variable((self.num_classes,), initializer="zeros", name="correct")
        self.total = self.add_variable((self.num_classes,), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        y_hat = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        onehot = ops.one_hot(y_true, self.num_classes, dtype=self.dtype)
        hit = ops.cast(ops.equal(y_hat, y_true), self.dtype)
        self.total.assign_add(ops.sum(onehot, axis=0))
        self.correct.assign_add(ops.sum(onehot * ops.expand_dims(hit, -1), axis=0))

    def result(self):
        seen = ops.cast(self.total > 0, self.dtype)
        recall = self.correct / ops.maximum(self.total, 1.0)
        return ops.sum(recall * seen) / ops.maximum(ops.sum(seen), 1.0)

    def reset_state(self):
        self.correct.assign(ops.zeros((self.num_classes,), dtype=self.dtype))
        self.total.assign(ops.zeros((self.num_classes,), dtype=self.dtype))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


# --------------------------------------------------------------------------------------------
# the catalogue
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """A catalogue entry (:class:`allnet_lib.catalogue.ModelEntry`) with its builder."""

    name: str
    title: str
    report_size: int          # the input side the 2019 report used
    min_size: int             # smallest input side the architecture accepts
    demo_size: int            # side used by the CPU demo profile
    year: int
    introduced: str           # one sentence: what the architecture brought
    reference_accuracy: float | None  # the report's Table 2 (random image-level split), percent
    builder: Callable[..., keras.Model]
    feature_layer: str = ""   # last convolutional feature map (for Grad-CAM / feature maps)
    imagenet: bool = False    # whether ImageNet weights exist for it


def list_models() -> list[str]:
    """Model names in the report's order of Table 2."""
    return list(MODEL_SPECS)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; unknown names raise a ValueError listing valid ones."""
    key = str(name).strip().lower()
    if key not in MODEL_SPECS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_SPECS)}")
    return MODEL_SPECS[key]


def build_model(name: str, input_shape=None, *, num_classes: int = 2, weights=None,
                dropout: float = 0.5) -> keras.Model:
    """Build model ``name`` (uncompiled) for ``input_shape`` (``(H, W, 3)``, ``(H, W)`` or an int
    side; default: the report's size). ``weights``: None (random init), ``"imagenet"`` (VGG16,
    ResNet50, InceptionV3 only; downloaded) or a path to a weights file (see the builders)."""
    spec = get_spec(name)
    shape = _input_shape(input_shape, spec)
    _check_size(spec, shape)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (softmax output), got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if weights == "imagenet" and not spec.imagenet:
        raise ValueError(f"no ImageNet weights exist for {spec.name!r} (the report trained it from"
                         " scratch); use weights=None")
    return spec.builder(shape, num_classes=num_classes, weights=weights, dropout=dropout)


def _input_shape(input_shape, spec: ModelSpec) -> tuple[int, int, int]:
    """Normalise None / int / (H, W) / (H, W, C) to (H, W, C)."""
    if input_shape is None:
        return (spec.report_size, spec.report_size, 3)
    if isinstance(input_shape, int):
        return (input_shape, input_shape, 3)
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 2:
        shape = shape + (3,)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), (height, width) or an "
                         f"int side, got {input_shape!r}")
    return shape


def _check_size(spec: ModelSpec, shape: tuple[int, int, int]) -> None:
    """Refuse inputs the architecture cannot shrink through its layers, before Keras does so
    with a less helpful message."""
    height, width, _ = shape
    if min(height, width) < spec.min_size:
        raise ValueError(
            f"{spec.name} needs at least {spec.min_size}x{spec.min_size} input, got "
            f"{height}x{width}; use --image-size {spec.min_size} or more "
            f"(image_size={spec.min_size} in a profile override)")


def _head(x, num_classes: int, name: str = "predictions"):
    """Softmax output kept in float32, so mixed precision never rounds the probabilities."""
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)(x)


# --------------------------------------------------------------------------------------------
# AlexNet
# --------------------------------------------------------------------------------------------
def _build_alexnet(shape, *, num_classes, weights, dropout) -> keras.Model:
    """Krizhevsky, Sutskever & Hinton 2012 at 227x227: conv 96/11 s4, LRN, pool; conv 256/5,
    LRN, pool; conv 384, 384, 256 (3x3); pool; FC 4096, 4096 with dropout; softmax."""
    inputs = keras.Input(shape, dtype="float32", name="image")
    x = layers.Conv2D(96, 11, strides=4, activation="relu", name="conv1")(inputs)
    x = LocalResponseNormalization(name="lrn1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = layers.Conv2D(256, 5, padding="same", activation="relu", name="conv2")(x)
    x = LocalResponseNormalization(name="lrn2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dropout(dropout, name="dropout6")(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    x = layers.Dropout(dropout, name="dropout7")(x)
    model = keras.Model(inputs, _head(x, num_classes, "fc8"), name="alexnet")
    return _load_full_weights(model, weights)


# --------------------------------------------------------------------------------------------
# the report's proposed model
# --------------------------------------------------------------------------------------------
PROPOSED_BLOCKS = ((32, 3), (64, 2), (128, 2), (256, 2), (384, 2), (512, 2))


def proposed_conv_base(shape) -> keras.Model:
    """The convolutional part as its own model (the report's ``model_1``): per block,
    3x3 conv (same padding, bias, ReLU) + BatchNorm after each conv, then 2x2 'same' max-pool."""
    inputs = keras.Input(shape, dtype="float32", name="image")
    x = inputs
    for block, (filters, n_convs) in enumerate(PROPOSED_BLOCKS, start=1):
        for i in range(1, n_convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              name=f"block{block}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{i}")(x)
        x = layers.MaxPooling2D(2, padding="same", name=f"block{block}_pool1")(x)
    return keras.Model(inputs, x, name="conv_base")


def _build_proposed(shape, *, num_classes, weights, dropout) -> keras.Model:
    """Conv base, Flatten, Dense 4096, Dropout, Dense 1000, Dropout, softmax (report fig. 19)."""
    inputs = keras.Input(shape, dtype="float32", name="image")
    x = proposed_conv_base(shape)(inputs)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", name="dense1")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Dense(1000, activation="relu", name="dense2")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    model = keras.Model(inputs, _head(x, num_classes), name="proposed")
    return _load_full_weights(model, weights)


def _load_full_weights(model: keras.Model, weights) -> keras.Model:
    """For models without ImageNet weights: ``weights`` may name a ``.weights.h5`` of this model."""
    if weights is None:
        return model
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found; pass weights=None to start "
                                "from random weights")
    model.load_weights(path)
    return model


# --------------------------------------------------------------------------------------------
# keras.applications networks
# --------------------------------------------------------------------------------------------
_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET_NOTOP = {  # file name, URL, md5 (as in keras.applications)
    "vgg16": ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
              _KERAS_WEIGHTS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
              "6d6bbae143d832006294945121d1f1fc"),
    "resnet50": ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 _KERAS_WEIGHTS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "4d473c1dd8becc155b73f8504c6f6626"),
    "inception_v3": ("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     _KERAS_WEIGHTS + "inception_v3/"
                     "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "bcbd6486424b2319ff4ef7d526e38f63"),
}


def imagenet_weights_path(name: str) -> Path:
    """Download (once, into ``~/.keras/models``) the ImageNet weights of a base without its top.

    Raises :class:`WeightsUnavailableError` saying what to do when the download fails."""
    fname, origin, md5 = IMAGENET_NOTOP[name]
    try:
        return Path(keras.utils.get_file(fname, origin, cache_subdir="models", file_hash=md5))
    except Exception as error:  # network, DNS, proxy, hash: all mean "not available here"
        raise WeightsUnavailableError(
            f"could not download the ImageNet weights of {name} ({origin}): {error}. "
            f"Without internet, copy {fname} into ~/.keras/models/ (or pass its path as "
            "weights=...), or use weights=None to train from scratch as the report did."
        ) from error


def _application(name: str, app: Callable, mode: str, shape, *, num_classes, weights,
                 dropout) -> keras.Model:
    """A keras.applications base on our own input plus a 2-class head: global average pooling
    (works at any input size) -> dropout -> softmax.

    With pre-trained weights, the ImageNet input scaling is applied inside the model. Trained
    from scratch, the network sees the [0, 1] input directly, like AlexNet and the proposed
    model: the 'caffe' scaling (0..255 minus means) with random initial weights makes VGG16's
    first losses explode (about 80 instead of 0.7) since VGG16 has no batch normalisation."""
    base_weights = imagenet_weights_path(name) if weights == "imagenet" else weights
    if base_weights is not None and not Path(base_weights).expanduser().is_file():
        raise FileNotFoundError(f"weights file {base_weights} not found; use weights=None, "
                                "'imagenet', or the path of a no-top .h5 weights file")
    inputs = keras.Input(shape, dtype="float32", name="image")
    x = inputs
    if base_weights is not None:  # pre-trained filters expect ImageNet's input scaling
        x = ImagePreprocess(mode, name="preprocess")(inputs)
    base = app(include_top=False, weights=None if base_weights is None else str(base_weights),
               input_tensor=x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return keras.Model(inputs, _head(x, num_classes), name=name)


def _build_vgg16(shape, **kwargs) -> keras.Model:
    model = _application("vgg16", keras.applications.VGG16, "caffe", shape, **kwargs)
    if kwargs.get("weights") is None:
        he_initialise(model)
    return model


def he_initialise(model: keras.Model) -> keras.Model:
    """Redraw every convolution kernel from He's normal distribution (He et al. 2015), biases 0.

    keras.applications' VGG16 draws its kernels Glorot-uniform, which for a ReLU layer halves the
    signal's variance; without batch normalisation, 13 such layers shrink it about 2**13 = 8000
    times in variance, and the network barely moves in a short run from scratch (Simonyan and
    Zisserman trained their deepest nets by starting from shallower ones; He et al. showed that
    their scaling trains VGG-style nets from scratch). Drawn from Keras' seeded generator, so
    ``keras.utils.set_random_seed`` makes it reproducible."""
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kernel = layer.kernel
            kernel.assign(keras.initializers.HeNormal()(kernel.shape, dtype=kernel.dtype))
            if layer.bias is not None:
                layer.bias.assign(keras.ops.zeros(layer.bias.shape, dtype=layer.bias.dtype))
    return model


def _build_resnet50(shape, **kwargs) -> keras.Model:
    return _application("resnet50", keras.applications.ResNet50, "caffe", shape, **kwargs)


def _build_inception_v3(shape, **kwargs) -> keras.Model:
    return _application("inception_v3", keras.applications.InceptionV3, "tf", shape, **kwargs)


#: How to build each catalogued model, and what Keras needs to know about it (the rest of a
#: model's facts live in :mod:`allnet_lib.catalogue`): builder, last convolutional feature map,
#: whether ImageNet weights exist.
BUILDERS: dict[str, tuple[Callable[..., keras.Model], str, bool]] = {
    "alexnet": (_build_alexnet, "conv5", False),
    "vgg16": (_build_vgg16, "block5_conv3", True),
    "resnet50": (_build_resnet50, "conv5_block3_out", True),
    "inception_v3": (_build_inception_v3, "mixed10", True),
    "proposed": (_build_proposed, "conv_base", False),
}


def _spec(entry: catalogue.ModelEntry) -> ModelSpec:
    if entry.name not in BUILDERS:
        raise ValueError(f"model {entry.name!r} is in allnet_lib.catalogue but has no builder in "
                         "allnet_lib.models.BUILDERS; add one")
    builder, feature_layer, imagenet = BUILDERS[entry.name]
    return ModelSpec(entry.name, entry.title, entry.report_size, entry.min_size, entry.demo_size,
                     entry.year, entry.introduced, entry.report_accuracy, builder,
                     feature_layer=feature_layer, imagenet=imagenet)


MODEL_SPECS: dict[str, ModelSpec] = {name: _spec(entry) for name, entry in catalogue.CATALOGUE.items()}
