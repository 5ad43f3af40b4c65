"""Every plot returns a figure with the expected axes and artists, on tiny inputs (Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from allnet_lib import plots  # noqa: E402
from allnet_lib.compare import REFERENCE_COLUMN, REPORT_TABLE2  # noqa: E402
from allnet_lib.evaluate import metrics_from_predictions  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    plots.use_style()
    yield
    plt.close("all")


def fake_record(name, seed=0, n=40, split="subject-s0-t20"):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)].astype(int)
    p = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.25, n), 0, 1)
    subjects = np.where(y == 1, (np.arange(n) % 4).astype(str), np.char.add("H", (np.arange(n) % 3).astype(str)))
    return {
        "name": name, "split": split,
        "metrics": metrics_from_predictions(y, p, subjects=subjects, n_bootstrap=50),
        "predictions": {"filename": [f"{i}.bmp" for i in range(n)], "subject": subjects.tolist(),
                        "y": y.tolist(), "p_all": p.tolist()},
        "training": {"seconds": 3.0, "images_per_second": 10.0},
        "images_per_second": 50.0,
    }


def test_colours_are_fixed_per_class_and_model():
    assert set(plots.CLASS_COLORS) == {"hem", "all"}
    assert set(REPORT_TABLE2) <= set(plots.MODEL_COLORS)
    assert plots.model_color("my_net") == plots.model_color("my_net")  # unknown names: stable colour


def test_show_images_keeps_one_axis_per_image():
    images = [np.full((8, 8, 3), v, np.uint8) for v in (0, 100, 200, 255, 50)]
    fig = plots.show_images(images, titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == list("abcde")
    with pytest.raises(ValueError, match="titles"):
        plots.show_images(images, titles=["x"])


def test_cell_gallery_by_label_and_subject(tmp_path):
    rows = []
    for subject, label in [("1", "all"), ("2", "all"), ("H1", "hem"), ("H2", "hem")]:
        for k in range(3):
            name = f"UID_{subject}_{k}_1_{label}.png"
            Image.fromarray(np.full((10, 10, 3), 40 * k, np.uint8)).save(tmp_path / name)
            rows.append({"path": str(tmp_path / name), "filename": name, "label": label, "subject": subject})
    table = pd.DataFrame(rows)
    fig = plots.cell_gallery(table, by="label", n=3)
    assert len(fig.axes) == 2 * 3
    assert sum(len(ax.images) for ax in fig.axes) == 6
    fig = plots.cell_gallery(table, by="subject", n=2, max_rows=3)
    assert len(fig.axes) == 3 * 2
    assert [fig.axes[i].get_ylabel().split("\n")[0] for i in (0, 2, 4)] == ["1", "H1", "2"]
    with pytest.raises(ValueError, match="by must be"):
        plots.cell_gallery(table, by="fold")


def test_plot_confusion_from_matrix_and_record():
    ax = plots.plot_confusion([[603, 71], [77, 1370]])
    cells = [t.get_text() for t in ax.texts if "\n" in t.get_text()]
    assert cells == ["603\n(89%)", "71\n(11%)", "77\n(5%)", "1370\n(95%)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["hem (normal)", "ALL (leukemic)"]
    ax = plots.plot_confusion(fake_record("vgg16"), normalize="true")
    assert len([t for t in ax.texts if "\n" in t.get_text()]) == 4 and "normalised" in ax.get_title()
    with pytest.raises(ValueError, match="normalize"):
        plots.plot_confusion([[1, 0], [0, 1]], normalize="rows")


def test_plot_roc_draws_one_curve_per_record_plus_chance():
    ax = plots.plot_roc([fake_record("vgg16"), fake_record("proposed", seed=1)])
    assert len(ax.lines) == 3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "chance" and labels[1].startswith("vgg16 (AUC")


def test_plot_history_single_and_several():
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.9, 0.6, 0.5], "accuracy": [0.5, 0.7, 0.8],
                            "val_loss": [0.8, 0.7, 0.7], "val_accuracy": [0.6, 0.65, 0.7]})
    fig = plots.plot_history(history)
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    fig = plots.plot_history({"vgg16": history, "proposed": history.drop(columns=["val_loss", "val_accuracy"])})
    assert [len(ax.lines) for ax in fig.axes] == [3, 3]
    with pytest.raises(ValueError, match="no 'loss'"):
        plots.plot_history(pd.DataFrame({"epoch": [0]}))


def test_plot_results_bars_with_report_markers():
    records = [fake_record("alexnet"), fake_record("proposed", seed=2), fake_record("my_net", seed=3)]
    fig = plots.plot_results(records)
    assert len(fig.axes) == 3
    accuracy_ax = fig.axes[0]
    assert len(accuracy_ax.patches) == 3
    markers = accuracy_ax.collections[-1].get_offsets()
    assert len(markers) == 2  # the report has no number for my_net
    assert markers[1][1] == pytest.approx(REPORT_TABLE2["proposed"] / 100)
    assert REFERENCE_COLUMN  # the table column the markers come from


def test_plot_leakage_shows_the_same_cells_seen_and_unseen():
    from allnet_lib.compare import _gap, _summary

    own, held = fake_record("vgg16")["metrics"], fake_record("vgg16", seed=9)["metrics"]
    results = {"image": {"test": _summary(own), "heldout": _summary(held)}}
    facts = {"name": "x", "test_subjects_seen_in_training": 3}
    result = {"model": "vgg16", "seed": 0, "results": results, "splits": {"image": facts},
              "optimism_gap": _gap(results["image"])}
    ax = plots.plot_leakage(result)
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([own["accuracy"], held["accuracy"]])
    assert "optimism of the image split" in ax.get_title()
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["people seen in training",
                                                                           "people never seen"]
    plots.plt.close(ax.figure)


def test_confusions_come_in_rows_of_three():
    records = [fake_record(name, seed=k) for k, name in
               enumerate(["alexnet", "vgg16", "resnet50", "inception_v3", "proposed"])]
    fig = plots.plot_confusions(records)
    assert len(fig.axes) == 5  # the sixth slot of the 2x3 grid is removed
    rows = sorted({round(ax.get_position().y0, 3) for ax in fig.axes})
    assert len(rows) == 2
    assert [ax.get_title() for ax in fig.axes] == ["alexnet", "vgg16", "resnet50", "inception_v3", "proposed"]
    with pytest.raises(ValueError, match="no records"):
        plots.plot_confusions([])
