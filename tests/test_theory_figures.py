"""allnet_lib.theory.figures: every theory figure draws from the library's own outputs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from allnet_lib.theory import classify, descent as D, figures as F, layers as L, toy_data  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    # every figure a test drew fits the book's width (wide strips are reflowed into grids)
    widths = [plt.figure(n).get_size_inches()[0] for n in plt.get_fignums()]
    plt.close("all")
    assert all(w <= F.MAX_WIDTH for w in widths), widths


def test_chapter_1_figures():
    fig = F.plot_class_balance(classify.CNMC_TRAIN_COUNTS)
    assert len(fig.axes) == 2 and "68.2%" in [t.get_text() for t in fig.axes[1].texts]
    X, y = toy_data.make_moons(40, seed=0)
    fig = F.plot_features(X, y, names=("a", "b"), theta=(1.0, 1.0, 0.0))
    assert fig.axes[0].get_xlabel() == "a" and len(fig.axes[0].lines) == 1
    fig = F.plot_decision_regions(lambda P: L.sigmoid(P[:, 0]), X, y, resolution=20)
    assert len(fig.axes) == 1


def test_chapter_2_figures():
    x, y = toy_data.make_line(30, seed=0)
    runs = D.compare_variants(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.05, epochs=2)
    surface = D.loss_surface(D.mse_loss, x, y, (-1, 3), (-2, 2), n=15)
    fig = F.plot_paths(surface, runs, optimum=D.least_squares(x, y))
    assert len(fig.axes) == 3 and "updates" in fig.axes[1].get_title()
    fig = F.plot_loss_curves(runs, optimum_loss=D.mse_loss(D.least_squares(x, y), x, y))
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 4


def test_chapter_4_to_6_figures():
    fig = F.plot_activations({n: L.get_activation(n) for n in ("relu", "tanh")})
    assert len(fig.axes[0].lines) == 3  # two curves and the zero line
    z = np.linspace(-5, 5, 11)
    ce, mse = L.sigmoid_output_grads(z, np.ones_like(z))
    fig = F.plot_saturation(z, {"ce": z, "mse": z}, {"ce": ce, "mse": mse})
    assert len(fig.axes) == 2
    shown = F.for_display(np.array([[-5.0, 0.0], [1.0, 7.0]]))
    assert shown.min() == 0.0 and shown.max() == 1.0
    fig = F.plot_polynomial_fits([0, 1], [0, 1], {"line": ([0, 1], [0, 1])}, x_true=[0, 1], y_true=[0, 1])
    assert len(fig.axes) == 1
    fig = F.plot_coefficients({"a": np.array([1.0, -200.0, 0.0]), "b": np.zeros(3)})
    assert len(fig.axes[0].patches) == 6
    curve = pd.DataFrame({"loss": [1.0, 0.5], "val_loss": [1.1, 0.9]}, index=[1, 2])
    fig = F.plot_regularisation_curves({"a": curve, "b": curve}, stops={"a": 2}, ncols=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2 and "+0.40" in visible[0].get_title()


# -- one style for every theory figure -------------------------------------------------------

THEORY = __import__("pathlib").Path(__file__).resolve().parents[1] / "book" / "theory"


def _code_cells(path):
    import json

    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_style_is_colour_blind_safe_sharp_and_has_a_second_cue():
    F.use_style()
    rc = matplotlib.rcParams
    assert rc["figure.dpi"] == F.DPI >= 150
    cycle = rc["axes.prop_cycle"].by_key()
    assert cycle["color"] == F.PALETTE and len(set(F.PALETTE)) == len(F.PALETTE)
    assert len(set(zip(cycle["color"], cycle["linestyle"]))) == len(F.PALETTE)
    assert len(set(cycle["linestyle"])) >= 4  # neighbours in the cycle differ in style too
    # the library's multi-line figures give each line its own colour *and* line style
    x, y = toy_data.make_line(30, seed=0)
    runs = D.compare_variants(D.mse_loss, D.mse_grad, [0.0, 0.0], x, y, learning_rate=0.05, epochs=2)
    fig = F.plot_loss_curves(runs, per="update")
    lines = [ln for ln in fig.axes[0].lines if ln.get_label() in runs]
    assert len({(ln.get_color(), ln.get_linestyle()) for ln in lines}) == len({ln.get_linestyle() for ln in lines}) == 3


@pytest.mark.parametrize("chapter", sorted(p.stem for p in THEORY.glob("0*.ipynb")))
def test_theory_chapter_uses_the_style_and_fits_the_page(chapter):
    import re

    cells = _code_cells(THEORY / f"{chapter}.ipynb")
    assert any("figures.use_style()" in c for c in cells), f"{chapter}: call figures.use_style() after the imports"
    code = "\n".join(cells)
    for width in re.findall(r"figsize=\(([\d.]+)", code):
        assert float(width) <= F.MAX_WIDTH, f"{chapter}: figure {width} inches wide"
    for call in re.findall(r"show_images\((.*?)\)\s*;?\s*$", code, flags=re.S | re.M):
        ncols = re.search(r"ncols=(\d+)", call)
        size = re.search(r"size=([\d.]+)", call)
        n = int(ncols.group(1)) if ncols else 6  # show_images's defaults: 6 columns of 2 inches
        inches = float(size.group(1)) if size else 2.0
        assert n * inches <= F.MAX_WIDTH, f"{chapter}: image strip {n} x {inches} inches"


def test_computational_graph_figure():
    nodes = {"x": (0, 0, "$x$"), "f": (1.6, 0, "$f$")}
    fig = F.plot_computational_graph(nodes, [("x", "f")], {"x": 2.0, "f": 4.0}, {"x": 4.0, "f": 1.0})
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "2.000" in texts and "+4.000" in texts and "+1.000" in texts
    assert len(fig.axes[0].patches) + len(fig.axes[0].texts) >= 6


def test_convolution_figures():
    fig = F.plot_conv_geometry(n=5, k=3, cases=(("valid", 1), ("same", 2)))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["valid, stride 1: 5x5 -> 3x3", "same, stride 2: 5x5 -> 3x3"]
    M = L.conv_as_dense(L.FILTERS["edge_x"], 4, 4)
    fig = F.plot_dense_as_conv(M, L.FILTERS["edge_x"])
    assert "256 entries" in fig.axes[1].get_title()
