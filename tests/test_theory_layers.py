"""allnet_lib.theory.layers: the NumPy definitions the theory chapters teach (no Keras here;
tests/test_theory_keras.py checks the same functions against Keras)."""

import numpy as np
import pytest

from allnet_lib.theory import gradcheck, layers as L


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_vectorised_conv_equals_the_loop_definition(stride, padding):
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(2, 9, 7, 3))
    w = rng.normal(size=(3, 2, 3, 4))
    b = rng.normal(size=4)
    fast = L.conv2d(x, w, b, stride, padding)
    slow = L.conv2d_naive(x, w, b, stride, padding)
    assert fast.shape == slow.shape
    assert fast.shape[1:3] == (L.conv_output_size(9, 3, stride, padding), L.conv_output_size(7, 2, stride, padding))
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_conv_by_hand():
    x = np.arange(16, dtype=float).reshape(1, 4, 4, 1)
    ones = np.ones((2, 2, 1, 1))
    out = L.conv2d(x, ones, stride=2)[0, :, :, 0]
    # sums of the four non-overlapping 2x2 blocks
    assert out.tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    # 'same' with a 3x3 kernel keeps the size and pads one zero on each side
    same = L.conv2d(x, np.ones((3, 3, 1, 1)), padding="same")[0, :, :, 0]
    assert same.shape == (4, 4)
    assert same[0, 0] == 0 + 1 + 4 + 5
    assert same[1, 1] == x[0, :3, :3, 0].sum()


def test_same_padding_follows_tensorflow_rule():
    assert L.same_padding(5, 3, 1) == (1, 1)
    assert L.same_padding(6, 3, 2) == (0, 1)  # the extra zero goes at the end
    assert L.same_padding(4, 2, 2) == (0, 0)
    # the proposed model's 2x2 'same' pooling: 300 -> 150 -> 75 -> 38 -> 19 -> 10 -> 5
    sizes = [300]
    for _ in range(6):
        sizes.append(L.conv_output_size(sizes[-1], 2, 2, "same"))
    assert sizes == [300, 150, 75, 38, 19, 10, 5]
    with pytest.raises(ValueError, match="padding"):
        L.conv_output_size(5, 3, 1, "full")


def test_max_pool_by_hand_and_same_padding_never_wins():
    x = np.array([[1, 2, 5, 0], [3, 4, 1, 1], [0, 0, 9, 8], [0, 1, 7, 6]], float).reshape(1, 4, 4, 1)
    assert L.max_pool2d(x, 2)[0, :, :, 0].tolist() == [[4, 5], [1, 9]]
    neg = -np.ones((1, 3, 3, 1))
    out = L.max_pool2d(neg, 2, padding="same")
    assert out.shape == (1, 2, 2, 1) and (out == -1).all()


def test_conv_rejects_unbatched_input_with_a_hint():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\).*x\[None\]"):
        L.conv2d(np.zeros((4, 4, 1)), np.zeros((3, 3, 1, 1)))
    with pytest.raises(ValueError, match="channels"):
        L.conv2d(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 1, 1)))


def test_flatten_and_dense():
    x = np.arange(12.0).reshape(1, 2, 2, 3)
    assert L.flatten(x).tolist() == [list(range(12))]
    w = np.ones((3, 2))
    assert L.dense(np.array([[1.0, 2.0, 3.0]]), w, np.array([1.0, -1.0])).tolist() == [[7.0, 5.0]]


def test_filters_on_a_constant_image():
    img = np.full((8, 8), 0.5)
    blur = L.filter2d(img, L.FILTERS["blur"], padding="valid")
    np.testing.assert_allclose(blur, 0.5)
    for name in ("edge_x", "edge_y", "laplacian"):
        np.testing.assert_allclose(L.filter2d(img, L.FILTERS[name], padding="valid"), 0, atol=1e-12)
    np.testing.assert_allclose(L.filter2d(img, L.FILTERS["sharpen"], padding="valid"), 0.5)
    assert L.to_gray(np.full((2, 2, 3), 255, np.uint8)).max() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "linear"])
def test_activation_derivatives_match_finite_differences(name):
    f, df = L.get_activation(name)
    z = np.array([-3.0, -0.7, 0.4, 2.5])  # away from the kink of ReLU at 0
    numeric = (f(z + 1e-6) - f(z - 1e-6)) / 2e-6
    np.testing.assert_allclose(df(z), numeric, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="unknown activation"):
        L.get_activation("swishy")


def test_sigmoid_and_softmax_never_overflow():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert L.sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]
        p = L.softmax(np.array([[1000.0, 0.0, -1000.0]]))
    assert p[0, 0] == 1.0 and np.isfinite(p).all()
    z = np.array([[0.3, -1.2, 2.0]])
    np.testing.assert_allclose(L.softmax(z), L.softmax_naive(z))
    np.testing.assert_allclose(L.softmax(z).sum(), 1.0)
    with np.errstate(all="ignore"):
        assert np.isnan(L.softmax_naive(np.array([[1000.0, 0.0]]))).any()


def test_stable_cross_entropy_where_the_naive_one_fails():
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    y = np.array([0, 0])
    assert L.softmax_cross_entropy(logits, y) == pytest.approx(500.0)  # (0 + 1000) / 2
    assert np.isnan(L.softmax_cross_entropy_naive(logits, y))
    small = np.array([[0.2, 1.0, -0.5]])
    assert L.softmax_cross_entropy(small, [1]) == pytest.approx(L.softmax_cross_entropy_naive(small, [1]))
    # one-hot targets give the same loss as integer labels
    assert L.softmax_cross_entropy(small, L.one_hot([1], 3)) == pytest.approx(L.softmax_cross_entropy(small, [1]))


def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3))
    y = rng.integers(0, 3, 5)
    numeric = gradcheck.numerical_gradient(lambda: L.softmax_cross_entropy(z, y), z)
    assert gradcheck.relative_error(L.softmax_cross_entropy_grad(z, y), numeric) < 1e-8


def test_binary_losses_agree_and_squared_error_saturates():
    z = np.array([-4.0, -0.5, 0.0, 3.0])
    y = np.array([1, 0, 1, 1])
    assert L.binary_cross_entropy_with_logits(z, y) == pytest.approx(L.binary_cross_entropy(L.sigmoid(z), y))
    assert np.isfinite(L.binary_cross_entropy_with_logits(np.array([-1000.0]), np.array([1])))
    ce, mse = L.sigmoid_output_grads(np.array([-10.0]), np.array([1.0]))
    assert ce[0] == pytest.approx(-1.0, abs=1e-4)  # confidently wrong: a full-size push
    assert abs(mse[0]) < 1e-4  # squared error barely moves
    assert L.squared_error([0.5, 1.0], [0.0, 1.0]) == pytest.approx(0.125)
    assert L.categorical_cross_entropy(np.array([[0.25, 0.75]]), [1]) == pytest.approx(-np.log(0.75))


def test_one_hot_validates_labels():
    assert L.one_hot([0, 2], 3).tolist() == [[1, 0, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="labels must be in"):
        L.one_hot([3], 3)


def test_parameter_counts_of_the_report():
    assert L.conv2d_params(3, 3, 128, 256) == 295_168  # block4_conv1
    assert L.conv2d_params(3, 3, 384, 512) == 1_769_984  # block6_conv1
    assert L.dense_params(12_800, 4096) == 52_432_896  # dense_1
    assert L.dense_params(4096, 1000) == 4_097_000
    assert sum(L.batchnorm_params(256)) == 1024
    assert L.conv2d_params(3, 3, 3, 32, bias=False) == 864


def test_convolution_is_a_sparse_shared_dense_layer():
    rng = np.random.default_rng(0)
    image, kernel = rng.normal(size=(6, 7)), rng.normal(size=(3, 3))
    for stride, padding in ((1, "same"), (1, "valid"), (2, "same"), (2, "valid")):
        M = L.conv_as_dense(kernel, 6, 7, stride, padding)
        out = L.conv2d(image[None, :, :, None], kernel[:, :, None, None], stride=stride, padding=padding)[0, :, :, 0]
        np.testing.assert_allclose(image.reshape(-1) @ M, out.reshape(-1), rtol=1e-12, atol=1e-12)
    M = L.conv_as_dense(kernel, 6, 7)
    assert (M != 0).sum(axis=0).max() == 9  # locality: at most k*k inputs per output
    assert set(np.unique(M[M != 0])) <= set(kernel.ravel())  # sharing: the same 9 numbers


def test_receptive_field_matches_what_an_output_unit_depends_on():
    spec = [(3, 1), (3, 1), (2, 2), (3, 1)]
    r = L.receptive_field(spec)
    assert r == [3, 5, 6, 10]

    def stack(img):  # linear, positive: every input in the window changes the output
        h = img[None, :, :, None]
        for k, s in spec:
            h = L.conv2d(h, np.ones((k, k, 1, 1)), stride=s)
        return h[0, :, :, 0]

    base = np.zeros((16, 16))
    out0 = stack(base)[0, 0]
    inside, outside = base.copy(), base.copy()
    inside[r[-1] - 1, r[-1] - 1] = 1.0
    outside[r[-1], 0] = 1.0
    outside[0, r[-1]] = 1.0
    assert stack(inside)[0, 0] != out0 and stack(outside)[0, 0] == out0
