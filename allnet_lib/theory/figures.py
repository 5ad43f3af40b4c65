"""The figures of the theory chapters, in the book's style (``allnet_lib.plots``).

Each function draws one kind of picture and returns the matplotlib ``Figure`` (never calls
``plt.show()``), so chapters stay one line per figure and the pictures look alike across
chapters: the same class colours as part 2, one colour per optimiser variant or regulariser.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from allnet_lib.plots import CLASS_COLORS, CLASS_NAMES, EXTRA_COLORS, MODEL_COLORS, REFERENCE_COLOR

#: Okabe and Ito's colour-blind-safe palette (blue, orange, green, vermillion, pink, sky blue,
#: black): distinct under every common colour-vision deficiency. Lines also differ in style
#: and marker (``line_style``, ``marker``), so no curve is told apart by colour alone.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"]
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
CLASS_MARKERS = {"hem": "o", "all": "^"}
#: Resolution of the theory figures: sharp on high-density screens, and figures are sized (at
#: most ~10 inches wide) so that, shrunk to the book's width, tick labels stay legible.
DPI = 150
#: The widest figure, in inches: wider ones are shrunk at the book's width until their tick
#: labels are too small to read, so wide strips are laid out as grids instead.
MAX_WIDTH = 10.5
TRAIN_STYLE = {"ls": "-", "lw": 1.8}
VAL_STYLE = {"ls": "--", "lw": 1.8}


def color(i: int) -> str:
    """The i-th colour of the colour-blind-safe palette (cycled)."""
    return PALETTE[i % len(PALETTE)]


def line_style(i: int) -> str:
    """The i-th line style (the second cue next to ``color(i)``)."""
    return LINE_STYLES[i % len(LINE_STYLES)]


def marker(i: int) -> str:
    """The i-th marker (a third cue, for lines with points and for scatter plots)."""
    return MARKERS[i % len(MARKERS)]


def use_style() -> None:
    """The book's style (``plots.use_style``) plus the theory chapters' settings: the figures
    at ``DPI``, and a property cycle of colour-blind-safe colours *and* line styles, so even
    hand-made plots (``DataFrame.plot``) get a second cue. Called once by every theory chapter."""
    import matplotlib
    from cycler import cycler

    from allnet_lib import plots

    plots.use_style()
    matplotlib.rcParams.update({
        "figure.dpi": DPI, "savefig.dpi": DPI,
        "axes.prop_cycle": cycler(color=PALETTE)
        + cycler(linestyle=[line_style(i) for i in range(len(PALETTE))]),
    })


# ----------------------------------------------------------------------------------------------
# Chapter 1: the task, features, a linear classifier
# ----------------------------------------------------------------------------------------------


def plot_class_balance(counts: dict, *, title: str = "C-NMC 2019 training folds"):
    """Images per class (left), and the scores of always answering the larger class (right).

    The right panel is the reference every accuracy must be read against: with ALL the larger
    class, "always all" has accuracy = share of ALL, sensitivity 1, specificity 0.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.3), gridspec_kw={"width_ratios": [1, 1.4]})
    names = ["all", "hem"]
    values = [counts[k] for k in names]
    ax1.bar([CLASS_NAMES[k] for k in names], values, color=[CLASS_COLORS[k] for k in names])
    for i, v in enumerate(values):
        ax1.text(i, v, f"{v:,}", ha="center", va="bottom")
    ax1.set_ylabel("images")
    ax1.set_ylim(0, max(values) * 1.15)
    ax1.set_title(title)
    share = counts["all"] / sum(values)
    scores = {"accuracy": share, "sensitivity": 1.0, "specificity": 0.0, "balanced accuracy": 0.5}
    labels = list(scores)[::-1]
    ax2.barh(labels, [scores[k] for k in labels], color=REFERENCE_COLOR, alpha=0.75)
    for i, k in enumerate(labels):
        ax2.text(scores[k] + 0.01, i, f"{scores[k]:.1%}", va="center")
    ax2.set_xlim(0, 1.15)
    ax2.set_xlabel("score")
    ax2.set_title("always answering 'all'")
    fig.tight_layout()
    return fig


def plot_features(X, y, *, names=("feature 1", "feature 2"), theta=None, ax=None, title=None):
    """Scatter of two features coloured by class; with ``theta = (w1, w2, b)`` also the decision line."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 4.2))
    else:
        fig = ax.figure
    X, y = np.asarray(X), np.asarray(y)
    for label, k in (("hem", 0), ("all", 1)):
        sel = y == k
        ax.scatter(X[sel, 0], X[sel, 1], s=16, alpha=0.7, color=CLASS_COLORS[label], marker=CLASS_MARKERS[label],
                   label=CLASS_NAMES[label])
    if theta is not None:
        w1, w2, b = theta
        xs = np.linspace(X[:, 0].min(), X[:, 0].max(), 50)
        if abs(w2) > 1e-12:
            ax.plot(xs, -(w1 * xs + b) / w2, color=REFERENCE_COLOR, lw=1.5, label="P(ALL) = 0.5")
            ax.set_ylim(X[:, 1].min() - 0.1 * np.ptp(X[:, 1]), X[:, 1].max() + 0.1 * np.ptp(X[:, 1]))
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(fontsize=9)
    if title:
        ax.set_title(title)
    return fig


def plot_decision_regions(predict_proba, X, y, *, ax=None, title=None, resolution: int = 150):
    """P(class 1) over the plane as a background, the decision boundary, and the points."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4))
    else:
        fig = ax.figure
    X, y = np.asarray(X), np.asarray(y)
    pad = 0.5
    xs = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, resolution)
    ys = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, resolution)
    gx, gy = np.meshgrid(xs, ys)
    p = np.asarray(predict_proba(np.c_[gx.ravel(), gy.ravel()])).reshape(gx.shape)
    ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
    ax.contour(gx, gy, p, levels=[0.5], colors=REFERENCE_COLOR, linewidths=1.5)
    for k in (0, 1):
        ax.scatter(X[y == k, 0], X[y == k, 1], s=14, color=color(k), marker=marker(k), edgecolor="white",
                   lw=0.3, label=f"class {k}")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------------------------
# Chapter 2: gradient descent
# ----------------------------------------------------------------------------------------------


def draw_contours(ax, surface, optimum=None):
    """Contour lines of a loss surface (W, B, L) from ``descent.loss_surface``, and its minimum."""
    W, B, L = surface
    levels = np.quantile(L, np.linspace(0, 1, 25) ** 2.5)
    ax.contour(W, B, L, levels=np.unique(levels), colors="#9a9a9a", linewidths=0.8)
    if optimum is not None:
        ax.plot(*optimum, marker="*", ms=13, color=REFERENCE_COLOR, ls="none", label="minimum")
    ax.set_xlabel("slope $w$")
    ax.set_ylabel("intercept $b$")


def plot_paths(surface, runs: dict, *, optimum=None, max_points: int = 2000, titles=None,
               ncols: int | None = None):
    """One panel per run: its path over the contour lines of the loss, start to end.

    Panels are laid out in a grid of ``ncols`` columns (default: 3, or 2 for four runs), so
    the figure stays legible at the book's width.
    """
    n = len(runs)
    ncols = ncols or (2 if n == 4 else min(n, 3))
    nrows = -(-n // ncols)
    panel = 4.0 if ncols <= 2 else MAX_WIDTH / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, 0.9 * panel * nrows), squeeze=False)
    W, B, _ = surface
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for i, (ax, (name, run)) in enumerate(zip(axes.flat, runs.items())):
        draw_contours(ax, surface, optimum)
        path = run.path[:max_points]
        ax.plot(path[:, 0], path[:, 1], color=color(i), lw=1, ls=line_style(i), marker=marker(i), ms=2.5,
                alpha=0.8)
        ax.plot(*path[0], marker="s", color=color(i), ms=6, ls="none")
        ax.set_xlim(W.min(), W.max())
        ax.set_ylim(B.min(), B.max())
        label = titles[i] if titles else f"{name}"
        note = " (diverged)" if run.diverged else ""
        ax.set_title(f"{label}{note}\n{run.n_updates} updates, final loss {run.final_loss:.3g}", fontsize=10)
    fig.tight_layout()
    return fig


def _plain_log_axis(ax) -> None:
    """A log y axis labelled 0.2, 0.5, 1, 2 ... instead of 2 x 10^-1 (call after plotting)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high / low < 1e3:  # few decades: label 1, 2, 5 of each
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_loss_curves(runs: dict, *, optimum_loss: float | None = None, logy: bool = True,
                     per: str = "both"):
    """Full-data loss per update and/or per epoch (i.e. per examples seen), one line per run.

    ``per``: "both" (two panels), "update" or "epoch". When the runs make very different
    numbers of updates, the update axis is logarithmic beyond 10 so all of them fit.
    """
    panels = {"both": ("update", "epoch"), "update": ("update",), "epoch": ("epoch",)}[per]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    counts = [run.n_updates for run in runs.values()]
    for ax, kind in zip(axes.flat, panels):
        for i, (name, run) in enumerate(runs.items()):
            if kind == "update":
                ax.plot(np.arange(len(run.loss)), run.loss, color=color(i), ls=line_style(i), lw=1.4,
                        label=name)
            else:
                per_epoch = run.loss_per_epoch()
                ax.plot(np.arange(len(per_epoch)), per_epoch, color=color(i), ls=line_style(i),
                        marker=marker(i), ms=3.5, label=name)
        if optimum_loss is not None:
            ax.axhline(optimum_loss, color=REFERENCE_COLOR, ls=":", lw=1, label="minimum")
        if logy:
            _plain_log_axis(ax)
        if kind == "update" and max(counts) > 20 * max(min(counts), 1):
            ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.set_xlabel("update (gradient step)" if kind == "update" else "epoch (passes over the data)")
        ax.set_ylabel("training loss (all examples)")
        ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Chapter 4: activations and losses
# ----------------------------------------------------------------------------------------------


def plot_activations(functions: dict, z=None):
    """Each activation (left) and its derivative (right) over z."""
    z = np.linspace(-5, 5, 401) if z is None else z
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    styles = ("-", "--", "-.", ":")  # curves that coincide (ReLU, leaky ReLU) stay visible
    for i, (name, (f, df)) in enumerate(functions.items()):
        ax1.plot(z, f(z), color=color(i), lw=2, ls=styles[i % 4], label=name)
        ax2.plot(z, df(z), color=color(i), lw=2, ls=styles[i % 4], label=name)
    ax1.set_title("activation $f(z)$")
    ax2.set_title("derivative $f'(z)$")
    for ax in (ax1, ax2):
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("$z$")
        ax.legend(fontsize=9)
    ax1.set_ylim(-1.5, 3)
    fig.tight_layout()
    return fig


def plot_saturation(z, losses: dict, grads: dict):
    """Loss (left) and |d loss / d z| (right) against the logit z, for a true label of 1."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for i, name in enumerate(losses):
        ax1.plot(z, losses[name], color=color(i), ls=line_style(i), lw=2, label=name)
        ax2.plot(z, np.abs(grads[name]), color=color(i), ls=line_style(i), lw=2, label=name)
    ax1.set_title("loss when the true class is ALL")
    ax2.set_title("gradient size $|\\partial L / \\partial z|$")
    for ax in (ax1, ax2):
        ax.set_xlabel("logit $z$ (negative: confidently wrong)")
        ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Chapter 5: filters
# ----------------------------------------------------------------------------------------------


def for_display(image):
    """Stretch any real-valued map to [0, 1] for imshow (filter outputs can be negative)."""
    image = np.asarray(image, dtype=float)
    lo, hi = np.percentile(image, [1, 99])
    return np.clip((image - lo) / (hi - lo + 1e-12), 0, 1)


# ----------------------------------------------------------------------------------------------
# Chapter 6: regularisation
# ----------------------------------------------------------------------------------------------


def plot_polynomial_fits(x, y, fits: dict, *, x_true=None, y_true=None):
    """One panel per fitted curve (name -> (xs, ys)), with the training points and the truth."""
    width = min(3.6, MAX_WIDTH / len(fits))
    fig, axes = plt.subplots(1, len(fits), figsize=(width * len(fits), 3.2), squeeze=False, sharey=True)
    for i, (ax, (name, (xs, ys))) in enumerate(zip(axes.flat, fits.items())):
        if x_true is not None:
            ax.plot(x_true, y_true, color="grey", lw=1, ls=":", label="truth")
        ax.plot(xs, ys, color=color(i), lw=2, label="fit")
        ax.scatter(x, y, s=18, color=REFERENCE_COLOR, zorder=3, label="training points")
        ax.set_ylim(-2, 2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("$x$")
    axes.flat[0].legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_coefficients(weights: dict, *, title: str = "fitted coefficients"):
    """Grouped bars: one group per coefficient, one bar per fit (name -> weight vector)."""
    fig, ax = plt.subplots(figsize=(9, 3.3))
    n = len(weights)
    width = 0.8 / n
    for i, (name, w) in enumerate(weights.items()):
        idx = np.arange(len(w))
        ax.bar(idx + (i - (n - 1) / 2) * width, w, width=width, color=color(i), label=name,
               hatch=("", "//", "..", "xx")[i % 4], edgecolor="white", linewidth=0.3)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xticks(np.arange(len(next(iter(weights.values())))))
    ax.set_xticklabels([f"$u^{{{k + 1}}}$" for k in range(len(next(iter(weights.values()))))])
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylabel("coefficient (symlog scale)")
    ax.set_title(title)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_regularisation_curves(curves: dict, *, metric: str = "loss", stops: dict | None = None,
                               ncols: int = 2):
    """Small multiples: train (solid) and validation (dashed) curves, one panel per variant.

    ``stops`` (variant -> epoch, 1-based) marks where early stopping would have ended training.
    All panels share the y axis, so the gaps can be compared at a glance.
    """
    n = len(curves)
    nrows = -(-n // ncols)
    panel = min(4.0, MAX_WIDTH / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, 0.75 * panel * nrows), sharey=True,
                             squeeze=False)
    for i, (ax, (name, c)) in enumerate(zip(axes.flat, curves.items())):
        ax.plot(c.index, c[metric], color=color(i), label="train", **TRAIN_STYLE)
        ax.plot(c.index, c[f"val_{metric}"], color=color(i), label="validation", **VAL_STYLE)
        if stops and stops.get(name):
            ax.axvline(stops[name], color=REFERENCE_COLOR, lw=1, ls=":", label="early stop")
        gap = c[f"val_{metric}"].iloc[-1] - c[metric].iloc[-1]
        ax.set_title(f"{name}  (final gap {gap:+.2f})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=9)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric if metric != "loss" else "cross-entropy")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Chapter 3: a computational graph
# ----------------------------------------------------------------------------------------------


def plot_computational_graph(nodes: dict, edges, values: dict, grads: dict, *, title: str | None = None):
    """A small computational graph: one box per node with its forward value (above) and the
    gradient of the loss with respect to it (below, in a second colour and in italics).

    ``nodes``: {name: (x, y, label)} in data coordinates; ``edges``: (from, to) pairs, drawn as
    arrows in the forward direction; ``values`` / ``grads``: {name: number}.
    """
    fig, ax = plt.subplots(figsize=(MAX_WIDTH * 0.9, 3.2))
    xs = [p[0] for p in nodes.values()]
    ys = [p[1] for p in nodes.values()]
    boxes = {}
    for name, (x, y, label) in nodes.items():
        boxes[name] = ax.text(x, y, label, ha="center", va="center", fontsize=12,
                              bbox={"boxstyle": "round,pad=0.35", "fc": "white", "ec": REFERENCE_COLOR,
                                    "lw": 1.2})
        if name in values:
            ax.text(x, y + 0.42, f"{values[name]:.3f}", ha="center", va="bottom", fontsize=10,
                    color=color(0), fontweight="bold")
        if name in grads:
            ax.text(x, y - 0.42, f"{grads[name]:+.3f}", ha="center", va="top", fontsize=10,
                    color=color(3), style="italic")
    for a, b in edges:  # from the right edge of one box to the left edge of the next
        ax.annotate("", xy=(0, 0.5), xycoords=boxes[b], xytext=(1, 0.5), textcoords=boxes[a],
                    arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 1.2, "shrinkA": 6,
                                "shrinkB": 6})
    ax.text(min(xs) - 0.6, max(ys) + 0.95, "forward value", color=color(0), fontweight="bold", fontsize=9)
    ax.text(min(xs) - 0.6, min(ys) - 1.0, "gradient dL/d(node), backward", color=color(3), style="italic",
            fontsize=9)
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 1.15, max(ys) + 1.15)
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Chapter 5: convolution geometry, a convolution as a dense matrix
# ----------------------------------------------------------------------------------------------


def plot_conv_geometry(n: int = 5, k: int = 3, cases=(("valid", 1), ("same", 1), ("same", 2))):
    """How a k x k filter slides over an n x n input: one panel per (padding, stride).

    Left in each panel, the input (white) with its zero padding (grey, hatched); the window of
    the first output (solid, colour 1) and of the next one along the row (dashed, colour 2),
    ``stride`` cells further. Right, the output grid, with those two outputs in the same colours.
    """
    from matplotlib.patches import Rectangle

    from allnet_lib.theory import layers

    ncols = min(len(cases), 3)
    nrows = -(-len(cases) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(MAX_WIDTH, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(cases):]:
        ax.set_visible(False)
    for ax, (padding, stride) in zip(axes.flat, cases):
        top, bottom = layers.same_padding(n, k, stride) if padding == "same" else (0, 0)
        size = n + top + bottom
        out = layers.conv_output_size(n, k, stride, padding)
        for r in range(size):
            for c in range(size):
                pad = not (top <= r < top + n and top <= c < top + n)
                ax.add_patch(Rectangle((c, -r - 1), 1, 1, fc="#dddddd" if pad else "white", ec="#777777",
                                       lw=0.6, hatch="///" if pad else None))
        windows = [(0, 0)] + ([(0, stride)] if out > 1 else [])
        for i, (r0, c0) in enumerate(windows):
            ax.add_patch(Rectangle((c0 + 0.08 * i, -r0 - k + 0.08 * i), k - 0.16 * i, k - 0.16 * i, fill=False,
                                   ec=color(i), lw=2.4, ls=line_style(i)))
        x0 = size + 1.2
        for r in range(out):
            for c in range(out):
                hit = (r, c) in [(0, 0), (0, 1)][: len(windows)]
                fc = color([(0, 0), (0, 1)].index((r, c))) if hit else "white"
                ax.add_patch(Rectangle((x0 + c, -r - 1), 1, 1, fc=fc, ec="#777777", lw=0.6, alpha=0.8 if hit else 1))
        ax.annotate("", xy=(x0 - 0.15, -0.5), xytext=(size + 0.15, -0.5),
                    arrowprops={"arrowstyle": "-|>", "color": "#555555"})
        ax.set_xlim(-0.3, x0 + max(out, 1) + 0.3)
        ax.set_ylim(-size - 0.3, 0.3)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{padding}, stride {stride}: {n}x{n} -> {out}x{out}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_dense_as_conv(matrix, kernel, *, title: str = "the same map as a dense weight matrix"):
    """The k x k kernel (left) and the dense matrix that computes the same convolution (right):
    mostly zeros (locality), the same few numbers repeated along diagonals (weight sharing)."""
    lim = float(np.abs(matrix).max()) or 1.0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(MAX_WIDTH * 0.85, 4.2), gridspec_kw={"width_ratios": [1, 3]})
    ax1.imshow(kernel, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for (r, c), v in np.ndenumerate(kernel):
        ax1.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=9,
                 color="white" if abs(v) > 0.6 * lim else "black")
    ax1.set_title("3x3 kernel: 9 weights" if kernel.shape == (3, 3) else "kernel")
    ax1.set_xticks([])
    ax1.set_yticks([])
    ax1.grid(False)
    im = ax2.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax2.grid(False)
    ax2.set_xlabel("output pixel (flattened)")
    ax2.set_ylabel("input pixel (flattened)")
    ax2.set_title(f"{title}: {matrix.size:,} entries, {int((matrix != 0).sum()):,} non-zero", fontsize=10)
    fig.colorbar(im, ax=ax2, shrink=0.8)
    fig.tight_layout()
    return fig
