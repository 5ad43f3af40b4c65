"""The model zoo: every model builds, the proposed model is the report's, inputs are checked."""

import numpy as np
import pytest

import keras

from allnet_lib import models
from allnet_lib.models import MODEL_SPECS, build_model, list_models


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def test_model_names_and_report_numbers():
    assert list_models() == ["alexnet", "vgg16", "resnet50", "inception_v3", "proposed"]
    table2 = {"alexnet": 81.62, "vgg16": 84.8, "resnet50": 84.77, "inception_v3": 83.67,
              "proposed": 93.02}
    assert {n: s.reference_accuracy for n, s in MODEL_SPECS.items()} == table2
    for name, spec in MODEL_SPECS.items():
        assert spec.name == name and spec.title and spec.introduced.endswith(".")
        assert spec.min_size <= spec.demo_size <= spec.report_size


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_at_its_smallest_size(name):
    size = MODEL_SPECS[name].min_size
    model = build_model(name, size)
    assert model.output_shape == (None, 2)
    assert model.input_shape == (None, size, size, 3)
    out = np.asarray(model(np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32)))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert MODEL_SPECS[name].feature_layer in [layer.name for layer in model.layers] or \
        name == "proposed"


def test_proposed_model_has_the_reports_figures():
    model = build_model("proposed", (300, 300, 3))
    assert model.count_params() == 64_066_938
    assert _count(model.trainable_weights) == 64_061_370
    assert _count(model.non_trainable_weights) == 5_568
    base = model.get_layer("conv_base")
    assert isinstance(base, keras.Model)
    assert base.count_params() == 7_535_040
    assert base.output.shape[1:] == (5, 5, 512)
    conv = base.get_layer("block4_conv1")
    assert conv.output.shape[1:] == (38, 38, 256) and conv.count_params() == 295_168
    assert base.get_layer("block4_pool1").output.shape[1:] == (19, 19, 256)
    assert model.get_layer("flatten").output.shape[1:] == (12800,)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [4096, 1000, 2]
    assert [d.count_params() for d in dense] == [52_432_896, 4_097_000, 2_002]
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == 2


def test_alexnet_is_krizhevsky_2012_at_227():
    model = build_model("alexnet")
    assert model.input_shape == (None, 227, 227, 3)
    assert model.get_layer("conv1").output.shape[1:] == (55, 55, 96)
    assert model.get_layer("pool5").output.shape[1:] == (6, 6, 256)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    denses = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert len(convs) == 5 and len(denses) == 3
    assert [d.units for d in denses] == [4096, 4096, 2]


@pytest.mark.parametrize("name, side", [("inception_v3", 64), ("alexnet", 66), ("vgg16", 31)])
def test_too_small_inputs_are_refused_with_a_fix(name, side):
    minimum = MODEL_SPECS[name].min_size
    message = (f"{name} needs at least {minimum}x{minimum} input, got {side}x{side}; "
               f"use --image-size {minimum} or more")
    with pytest.raises(ValueError, match=message):
        build_model(name, side)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown model 'lenet'; valid names: alexnet, vgg16"):
        build_model("lenet")


def test_input_shape_forms_and_classes():
    assert build_model("proposed", (40, 40)).input_shape == (None, 40, 40, 3)
    assert build_model("proposed", 40, num_classes=3).output_shape == (None, 3)
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        build_model("proposed", 40, num_classes=1)


def test_imagenet_download_failure_is_explained(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(models.WeightsUnavailableError,
                       match=r"could not download the ImageNet weights of vgg16.*weights=None"):
        build_model("vgg16", 64, weights="imagenet")


def test_no_imagenet_weights_for_the_report_own_models():
    with pytest.raises(ValueError, match="no ImageNet weights exist for 'proposed'"):
        build_model("proposed", 64, weights="imagenet")


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model("resnet50", 64, weights=tmp_path / "nope.h5")


def test_custom_layers_compute_and_round_trip(tmp_path):
    x = np.random.default_rng(1).random((1, 4, 4, 7)).astype("float32")
    lrn = models.LocalResponseNormalization()
    squares = np.pad(x ** 2, [(0, 0), (0, 0), (0, 0), (2, 2)])
    window = sum(squares[..., i:i + 7] for i in range(5))
    np.testing.assert_allclose(np.asarray(lrn(x)), x / (2 + 1e-4 * window) ** 0.75, rtol=1e-5)

    pixel = np.array([[[[1.0, 0.5, 0.0]]]], dtype="float32")
    caffe = np.asarray(models.ImagePreprocess("caffe")(pixel)).ravel()
    np.testing.assert_allclose(caffe, [0 - 103.939, 127.5 - 116.779, 255 - 123.68], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(models.ImagePreprocess("tf")(pixel)).ravel(), [1, 0, -1])

    inputs = keras.Input((8, 8, 3))
    y = models.ImagePreprocess("tf")(inputs)
    y = keras.layers.Conv2D(4, 3)(y)
    y = models.LocalResponseNormalization(depth=3)(y)
    tiny = keras.Model(inputs, y)
    tiny.save(tmp_path / "tiny.keras")
    again = keras.saving.load_model(tmp_path / "tiny.keras")
    batch = np.random.default_rng(2).random((2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(again(batch)), np.asarray(tiny(batch)), rtol=1e-5)


def test_balanced_accuracy_ignores_the_class_balance():
    metric = models.BalancedAccuracy()
    y = np.array([1, 1, 1, 0])
    always_all = np.array([[0.2, 0.8]] * 4, dtype="float32")
    metric.update_state(y, always_all)
    assert float(metric.result()) == pytest.approx(0.5)  # plain accuracy would say 0.75
    metric.reset_state()
    metric.update_state(y, np.array([[0.1, 0.9], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], "float32"))
    assert float(metric.result()) == pytest.approx((2 / 3 + 1) / 2)
    assert models.BalancedAccuracy.from_config(metric.get_config()).num_classes == 2


def test_vgg16_from_scratch_starts_from_he_normal_kernels():
    """Glorot-uniform (keras.applications' default) would give 1/fan_in-ish variances; He gives
    2/fan_in, which keeps a ReLU network's signal from shrinking layer by layer."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_model("vgg16", 32)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13
    for layer in convs:
        kernel = np.asarray(layer.kernel)
        fan_in = int(np.prod(kernel.shape[:-1]))
        # HeNormal is a truncated normal with stddev sqrt(2 / fan_in) after truncation
        assert kernel.std() == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.1), layer.name
        assert not np.asarray(layer.bias).any()
    keras.utils.set_random_seed(0)
    again = build_model("vgg16", 32)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights()))
