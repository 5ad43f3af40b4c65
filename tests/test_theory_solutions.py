"""The exercise solutions of part 1 are run, not only shown: each code block of a chapter's
solutions is executed here in a namespace like the chapter's, and the checks inside them
(asserts) must hold. Guards against solutions that contradict their own text (chapter 5's
blob detector once flipped its sign and peaked on bright spots)."""

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from allnet_lib import demo, plots  # noqa: E402
from allnet_lib.theory import descent, figures, layers, toy_data  # noqa: E402

THEORY = Path(__file__).resolve().parents[1] / "book" / "theory"


def solution_blocks(chapter: str) -> list[str]:
    """The ```python blocks inside the chapter's ':::{solution}' blocks (and everything after the
    first, which is only exercises and solutions)."""
    nb = json.loads((THEORY / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    sol = text[text.index(":::{solution"):]
    return re.findall(r"```python\n(.*?)```", sol, flags=re.S)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


class _Ctx:
    seed = 0


def test_chapter_2_solutions_run_and_support_their_text(capsys):
    blocks = solution_blocks("02_gradient_descent")
    assert len(blocks) == 3
    x, y = toy_data.make_line(100, seed=0)
    best = descent.least_squares(x, y)
    start = np.array([-1.0, 2.0])
    ns = dict(np=np, descent=descent, figures=figures, x=x, y=y, best=best, start=start,
              best_loss=descent.mse_loss(best, x, y), critical=descent.critical_learning_rate(x),
              LEARNING_RATE=0.05, EPOCHS=30, ctx=_Ctx())
    for block in blocks:
        exec(block, ns)
    out = capsys.readouterr().out.splitlines()
    # exercise 1: momentum 0.9 converges at 1.8 x critical and diverges at 2.0 x critical
    assert out[0].startswith("1.8 distance") and out[1] == "2.0 diverged"
    # exercise 3: Adam's first step is about lr long in every coordinate
    firsts = [line for line in out if "first step" in line]
    assert len(firsts) == 3


def test_chapter_5_blob_detector_peaks_on_dark_spots(capsys):
    blocks = solution_blocks("05_convolutional_networks")
    log_block = next(b for b in blocks if "log =" in b)
    assert "-layers.filter2d" not in log_block.replace(" ", "")
    cell = demo.render_cell(np.random.default_rng(0), "all", image_size=64)
    ns = dict(np=np, layers=layers, figures=figures, plots=plots, grey=layers.to_gray(cell))
    exec(log_block, ns)  # its asserts: dark spot > 0 > bright spot, maximum at the dark spot
    assert ns["dark"] > 0 > ns["bright"]
    assert "dark spot +" in capsys.readouterr().out


def test_chapter_6_solutions_run_with_the_reports_augmentation():
    pytest.importorskip("keras")
    from allnet_lib.theory import regularise

    blocks = solution_blocks("06_overfitting_and_regularisation")
    assert len(blocks) == 2 and "FlipRotate" in blocks[1] and "RandomRotation" not in blocks[1]
    images, labels = toy_data.render_cells(24, image_size=16, p_all=0.5, seed=0)
    x = images.astype("float32") / 255
    ns = dict(np=np, regularise=regularise, figures=figures, ctx=_Ctx(), EPOCHS=1,
              x_train=x[:16], y_train=labels[:16], x_val=x[16:], y_val=labels[16:])
    ns["curves"] = regularise.regularisation_experiment(ns["x_train"], ns["y_train"], ns["x_val"], ns["y_val"],
                                                        variants=("augmentation",), epochs=1, batch_size=8)
    for block in blocks:
        exec(block, ns)
    assert list(ns["both"].columns) == ["loss", "accuracy", "val_loss", "val_accuracy"]
