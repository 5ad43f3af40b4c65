"""explain: feature maps, filters and Grad-CAM on tiny models (nested and flat), in seconds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib

matplotlib.use("Agg")

import keras
import numpy as np
import pytest

from allnet_lib import explain


def _nested_model(size=32):
    """A classifier whose convolutions sit in a nested sub-model, like a keras.applications base."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 5, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    base = keras.Model(inp, x, name="base")
    outer_in = keras.Input((size, size, 3))
    y = base(outer_in)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    y = keras.layers.Dense(2, activation="softmax", name="out")(y)
    return keras.Model(outer_in, y, name="outer")


def _flat_model_with_logits(size=24):
    keras.utils.set_random_seed(2)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(10, 3, padding="same", name="c2")(x)
    x = keras.layers.Activation("relu", name="act2")(x)
    x = keras.layers.Flatten()(x)
    logits = keras.layers.Dense(2, name="logits")(x)
    probs = keras.layers.Softmax(name="probs")(logits)
    return keras.Model(inp, probs, name="flat"), keras.Model(inp, logits)


def _images(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_nested_layers_are_found_and_restored():
    m = _nested_model()
    names = [i.name for i in explain.trace_layers(m)]
    assert names[:4] == ["base/c1", "base/bn1", "base/p1", "base/c2"]
    assert explain.last_conv_layer(m) == "base/c2"
    assert explain.first_conv_layer(m) == "base/c1"
    assert explain.find_layer(m, "c2") is explain.find_layer(m, "base/c2")
    with pytest.raises(ValueError, match="no layer"):
        explain.find_layer(m, "nope")
    explain.grad_cam(m, _images())
    # every wrapped call is gone again
    for _, layer in explain.leaf_layers(m):
        assert "call" not in layer.__dict__
    assert m.get_layer("out").activation.__name__ == "softmax"


def test_grad_cam_matches_reference_implementation():
    model, logit_model = _flat_model_with_logits()
    x = _images(4, 24).astype("float32") / 255.0
    cam = explain.grad_cam(model, x, layer="act2")
    # the textbook way, on the flat graph: gradients of the centred logit w.r.t. act2's output
    import tensorflow as tf

    grad_model = keras.Model(model.inputs, [model.get_layer("act2").output,
                                            logit_model.output])
    with tf.GradientTape() as tape:
        a, z = grad_model(x, training=False)
        score = tf.reduce_sum(z[:, 1] - tf.reduce_mean(z, axis=-1))
    g = tape.gradient(score, a).numpy()
    ref = np.maximum((g.mean(axis=(1, 2), keepdims=True) * a.numpy()).sum(-1), 0)
    ref = ref / np.where(ref.max(axis=(1, 2)) > 0, ref.max(axis=(1, 2)), 1)[:, None, None]
    # same spatial size here, so no resize: the maps must agree
    np.testing.assert_allclose(cam, ref, atol=1e-4)


def test_grad_cam_shapes_range_and_classes():
    m = _nested_model()
    imgs = _images(3, 40)  # not the model size: resized
    cam, probs = explain.grad_cam(m, imgs, return_probs=True)
    assert cam.shape == (3, 32, 32) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    cam0 = explain.grad_cam(m, imgs, class_index=0)
    assert cam0.shape == cam.shape
    single = explain.grad_cam(m, imgs[0])
    assert single.shape == (1, 32, 32)


def test_feature_maps_and_stats():
    m = _nested_model()
    maps = explain.feature_maps(m, _images(1)[0])
    assert list(maps) == ["base/c1", "base/c2"]
    assert maps["base/c1"].shape == (32, 32, 8) and maps["base/c2"].shape == (16, 16, 16)
    stats = explain.activation_stats(maps)
    assert list(stats["channels"]) == [8, 16]
    assert ((stats["zero values %"] >= 0) & (stats["zero values %"] <= 100)).all()
    fmap = maps["base/c2"]
    active = explain.select_channels(fmap, 4, "active")
    means = np.abs(fmap).reshape(-1, 16).mean(0)
    assert means[active[0]] == means.max()
    assert explain.select_channels(fmap, 4, "spread") == [0, 5, 10, 15]
    assert explain.select_channels(fmap, 4, [3, 1]) == [3, 1]
    with pytest.raises(ValueError):
        explain.select_channels(fmap, 4, [99])


def test_plots_return_figures():
    import matplotlib.pyplot as plt

    m = _nested_model()
    imgs = _images(2)
    fig = explain.plot_feature_maps(m, imgs[0], n_channels=3)
    assert len(fig.axes) == 2 * 4
    fig2 = explain.plot_filters(m, n=8, columns=4)
    kernel = explain.first_layer_filters(m)
    assert kernel.shape == (5, 5, 3, 8)
    cam = explain.grad_cam(m, imgs)
    fig3 = explain.plot_grad_cam(imgs, cam, titles=["a", "b"])
    over = explain.overlay_heatmap(imgs[0], cam[0])
    assert over.shape == (32, 32, 3) and 0 <= over.min() and over.max() <= 1
    for f in (fig, fig2, fig3):
        plt.close(f)


def test_sequential_model():
    seq = keras.Sequential([
        keras.Input((20, 20, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    assert explain.last_conv_layer(seq) == "conv"
    assert explain.grad_cam(seq, _images(2, 20)).shape == (2, 20, 20)


def test_grad_cam_predicted_and_per_image_classes():
    m = _nested_model()
    imgs = _images(4)
    cam1, probs = explain.grad_cam(m, imgs, class_index=1, return_probs=True)
    cam0 = explain.grad_cam(m, imgs, class_index=0)
    mixed = explain.grad_cam(m, imgs, class_index=[0, 1, 0, 1])
    np.testing.assert_allclose(mixed[[0, 2]], cam0[[0, 2]], atol=1e-5)
    np.testing.assert_allclose(mixed[[1, 3]], cam1[[1, 3]], atol=1e-5)
    pred = explain.grad_cam(m, imgs, class_index="predicted")
    chosen = np.where(probs.argmax(1)[:, None, None] == 1, cam1, cam0)
    np.testing.assert_allclose(pred, chosen, atol=1e-5)
    with pytest.raises(ValueError):
        explain.grad_cam(m, imgs, class_index=5)


def test_filter_smoothness_and_heat_inside_cell():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(11, 11, 3, 16))
    yy, xx = np.mgrid[-5:6, -5:6]
    smooth = np.repeat(np.exp(-(xx ** 2 + yy ** 2) / 20.0)[..., None, None], 3, axis=2)
    assert abs(np.nanmean(explain.filter_smoothness(noise))) < 0.2
    assert explain.filter_smoothness(smooth)[0] > 0.8
    assert np.isnan(explain.filter_smoothness(np.ones((1, 1, 3, 2)))).all()
    img = np.zeros((1, 10, 10, 3), np.uint8)
    img[0, 2:5, 2:5] = 200  # a 3x3 "cell"
    heat = np.zeros((1, 10, 10), np.float32)
    heat[0, 2:5, 2:5] = 1.0
    heat[0, 8, 8] = 1.0  # one hot pixel on the background
    np.testing.assert_allclose(explain.heat_inside_cell(img, heat), [9 / 10])
    assert np.isnan(explain.heat_inside_cell(img, np.zeros((1, 10, 10))))[0]
    # a heat map at another resolution is resized to the image first
    assert explain.heat_inside_cell(img, np.ones((1, 5, 5)))[0] == pytest.approx(9 / 100, abs=0.02)


def test_layer_table_sums_to_the_model():
    m = _nested_model()
    table = explain.layer_table(m)
    assert table["params"].sum() == m.count_params()
    assert list(table["layer"][:2]) == ["base/c1", "base/bn1"]
    grouped = explain.layer_table(m, group="auto")
    assert grouped["params"].sum() == m.count_params()
    counts = explain.count_params(m)
    assert counts["total"] == counts["trainable"] + counts["non_trainable"] == m.count_params()
    assert counts["non_trainable"] == 16  # BatchNorm's moving mean and variance, 8 channels


def test_the_proposed_model_nested_conv_base():
    from allnet_lib import models

    model = models.build_model("proposed", 64)
    assert explain.last_conv_layer(model) == "conv_base/block6_bn2"  # 2x2 at 64 px
    assert explain.last_conv_layer(models.build_model("proposed", 32)) == "conv_base/block5_bn2"  # block 6 is 1x1
    assert explain.first_conv_layer(model) == "conv_base/block1_conv1"
    cam = explain.grad_cam(model, _images(2, 64), class_index="predicted")
    assert cam.shape == (2, 64, 64) and np.isfinite(cam).all()
    maps = explain.feature_maps(model, _images(1, 64)[0], max_layers=3)
    assert list(maps) == ["conv_base/block1_conv1", "conv_base/block3_conv2", "conv_base/block6_conv2"]


def test_heat_share_table_and_verdict_follow_the_maps():
    """Heat on a centred square cell vs heat spread evenly: above chance vs at chance."""
    images = np.zeros((4, 20, 20, 3), np.uint8)
    images[:, 5:15, 5:15] = 200  # the cell covers a quarter of each image
    on_cell = np.zeros((4, 20, 20), np.float32)
    on_cell[:, 6:14, 6:14] = 1.0
    everywhere = np.ones((4, 20, 20), np.float32)
    y = np.array([1, 1, 0, 0])
    table = explain.heat_share_table({"a": images, "b": images}, {"a": on_cell, "b": everywhere}, y)
    assert table.loc[("a", "all"), "heat on the cell"] == pytest.approx(1.0)
    assert table.loc[("b", "hem"), "heat on the cell"] == pytest.approx(0.25)
    assert table.loc[("b", "hem"), "chance (cell's share)"] == pytest.approx(0.25)
    sentence, holds = explain.heat_share_verdict(table)
    assert holds is False and "above chance" in sentence and "near chance for b" in sentence
    sentence, holds = explain.heat_share_verdict(table.loc[["a"]])
    assert holds is True and sentence.startswith("Every model")


def test_a_two_by_two_grad_cam_map_puts_exactly_chance_heat_on_a_centred_cell():
    """Why heat_share_verdict leaves such maps out: the proposed model at 64 px ends in a 2x2 map."""
    from allnet_lib import models

    model = models.build_model("proposed", 64)
    assert explain.grad_cam_map_side(model) == 2
    yy, xx = np.mgrid[:64, :64]
    disc = np.hypot(yy - 31.5, xx - 31.5) < 18  # symmetric about the image centre
    images = np.random.default_rng(0).uniform(0.3, 0.9, size=(3, 64, 64, 3)).astype(np.float32) * disc[..., None]
    heat = explain.grad_cam(model, images, class_index=1)
    table = explain.heat_share_table({"proposed": images}, {"proposed": heat}, [1, 1, 1])
    row = table.loc[("proposed", "all")]
    assert row["heat on the cell"] == pytest.approx(row["chance (cell's share)"], abs=1e-3)


def test_the_verdict_leaves_out_maps_too_coarse_to_check():
    images = np.zeros((4, 20, 20, 3), np.uint8)
    images[:, 5:15, 5:15] = 200
    on_cell = np.zeros((4, 20, 20), np.float32)
    on_cell[:, 6:14, 6:14] = 1.0
    everywhere = np.ones((4, 20, 20), np.float32)
    y = np.array([1, 1, 0, 0])
    maps = {"a": on_cell, "coarse": everywhere, "b": everywhere}
    table = explain.heat_share_table({m: images for m in maps}, maps, y, map_sides={"a": 4, "coarse": 2, "b": 3})
    assert list(table["map side"].loc["coarse"]) == [2, 2]
    sentence, holds = explain.heat_share_verdict(table.loc[["a", "coarse"]])
    assert holds is None and sentence.startswith("Every model checked") and "Not checked: coarse" in sentence
    assert "2x2" in sentence
    sentence, holds = explain.heat_share_verdict(table)  # b (3x3) can be checked, and is at chance
    assert holds is False and "near chance for b" in sentence and "Not checked: coarse" in sentence
    sentence, holds = explain.heat_share_verdict(table.loc[["coarse"]])
    assert holds is None and sentence.startswith("No model could be checked")
    assert explain.heat_share_verdict(table.drop(columns="map side"))[1] is False  # without sides: as before
