"""The synthetic demo set: layout, names, determinism, safety, and the properties the book relies on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allnet_lib import demo
from allnet_lib.labels import parse_cnmc_name


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return demo.make_demo_dataset(out, n_images=60, image_size=96, progress=False)


def _files(root):
    return sorted((root / demo.TRAINING_DIR).rglob("*.bmp"))


def test_layout_names_and_folds(small_set):
    files = _files(small_set)
    assert len(files) == 60
    rows = []
    for path in files:
        fold, label = path.parent.parent.name, path.parent.name
        name = parse_cnmc_name(path.name)  # raises if a name does not fit the C-NMC pattern
        assert name.label == label
        rows.append((fold, label, name.subject))
    assert any(p.name.startswith("UID_h3_") for p in files), "the lowercase 'h3' subject is missing"
    folds = {f for f, _, _ in rows}
    assert folds == {"fold_0", "fold_1", "fold_2"}
    for fold in folds:
        assert {lab for f, lab, _ in rows if f == fold} == {"all", "hem"}
    subject_folds = {}
    for fold, label, subject in rows:
        subject_folds.setdefault(subject, set()).add((fold, label))
    assert all(len(v) == 1 for v in subject_folds.values()), "a subject spans folds or classes"
    n_all = sum(lab == "all" for _, lab, _ in rows)
    assert 36 <= n_all <= 44  # about 2:1


def test_images_are_segmented_cells_inside_the_crop(small_set):
    window = demo.scaled_crop_size(96)
    start = (96 - window) // 2
    for path in _files(small_set)[:30]:
        image = np.asarray(Image.open(path))
        assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
        nonzero = image.max(axis=2) > 0
        assert nonzero.sum() > 200, f"{path.name}: no cell"
        ys, xs = np.nonzero(nonzero)
        assert ys.min() > start and xs.min() > start
        assert ys.max() < start + window - 1 and xs.max() < start + window - 1


def test_manifest_and_reuse(small_set):
    manifest = demo.read_demo_manifest(small_set)
    assert manifest["synthetic"] is True and manifest["n_files"] == 60
    assert manifest["params"]["image_size"] == 96
    assert sum(manifest["counts"].values()) == 60
    stamp = (small_set / demo.MANIFEST_NAME).stat().st_mtime_ns
    assert demo.make_demo_dataset(small_set, n_images=60, image_size=96, progress=False) == small_set
    assert (small_set / demo.MANIFEST_NAME).stat().st_mtime_ns == stamp  # not regenerated


def test_refuses_then_overwrites_only_with_permission(tmp_path):
    out = tmp_path / "d"
    demo.make_demo_dataset(out, n_images=12, image_size=48, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        demo.make_demo_dataset(out, n_images=15, image_size=48, progress=False)
    demo.make_demo_dataset(out, n_images=15, image_size=48, progress=False, overwrite=True)
    assert len(_files(out)) == 15
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary siblings left behind


def test_never_deletes_a_folder_that_is_not_a_demo_set(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a demo"):
        demo.make_demo_dataset(tmp_path, n_images=12, image_size=48, progress=False, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    def boom(task):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "_render_task", boom)
    with pytest.raises(RuntimeError):
        demo.make_demo_dataset(tmp_path / "d", n_images=12, image_size=48, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_deterministic_and_independent_of_workers(tmp_path):
    a = demo.make_demo_dataset(tmp_path / "a", n_images=30, image_size=48, progress=False, workers=1)
    b = demo.make_demo_dataset(tmp_path / "b", n_images=30, image_size=48, progress=False, workers=2)
    c = demo.make_demo_dataset(tmp_path / "c", n_images=30, image_size=48, seed=1, progress=False)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert [p.name for p in fa] == [p.name for p in fb]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(fa, fb))
    assert json.loads((a / demo.MANIFEST_NAME).read_text()) == json.loads((b / demo.MANIFEST_NAME).read_text())
    assert [p.read_bytes() for p in fa] != [p.read_bytes() for p in fc]


def test_classes_differ_as_designed_but_overlap():
    """Blasts are larger with a bigger nucleus on average, yet the size ranges overlap."""
    areas = {"all": [], "hem": []}
    for label in areas:
        for k in range(40):
            image = demo.render_cell(np.random.default_rng([5, k]), label, image_size=96)
            areas[label].append((image.max(axis=2) > 0).sum())
    big, small = np.array(areas["all"]), np.array(areas["hem"])
    assert big.mean() > 1.2 * small.mean()
    assert big.min() < small.max()  # overlapping distributions


def test_subjects_have_their_own_look():
    plan = demo.plan_demo_dataset(2400, seed=0)
    styles = demo.subject_styles(plan, seed=0)
    by_class = plan.drop_duplicates("subject").groupby("label").size()
    assert (by_class["all"], by_class["hem"]) == (40, 20)  # about 2:1, as C-NMC's 47 + 26
    assert plan.groupby("label").size()["all"] == 1600
    counts = plan.groupby("subject").size()
    assert counts.max() > 4 * counts.min()  # skewed images per subject
    share = plan.groupby(["label", "subject"]).size() / plan.groupby("label").size()
    assert share.max() <= demo.MAX_SUBJECT_SHARE  # no person dominates a class
    hues = np.array([np.asarray(s.nucleus_od) / np.sum(s.nucleus_od) for s in styles.values()])
    assert hues.std(axis=0).max() > 0.02


def test_subjects_sit_along_the_normal_to_blast_axis():
    """Patients' cells sit near the blast end, donors' near the normal end, with overlap: some
    subjects are atypical of their class, which is what an unseen-subject test must cope with."""
    styles = demo.subject_styles(demo.plan_demo_dataset(2400, seed=0), seed=0)
    maturity = {c: np.array([s.maturity for s in styles.values() if s.label == c]) for c in ("all", "hem")}
    assert maturity["all"].mean() - maturity["hem"].mean() > 0.7
    assert maturity["all"].min() < 0.75 and maturity["hem"].max() > 0.25
    typical, mature_looking = demo.cell_params(1.0), demo.cell_params(0.0)
    assert typical == {k: v for k, v in demo.cell_params(1.0, ()).items()}
    assert typical["radius"][0] > mature_looking["radius"][0]
    shifted = demo.cell_params(1.0, (("radius", 1.0),))
    # offsets are in units of the class spread; a cell varies CELL_SPREAD times as much around them
    assert shifted["radius"][0] == pytest.approx(typical["radius"][0] + demo.CLASS_PARAMS["all"]["radius"][1])
    assert typical["radius"][1] == pytest.approx(demo.CELL_SPREAD * demo.CLASS_PARAMS["all"]["radius"][1])


def test_apportion_respects_minimum_total_and_cap():
    weights = np.array([50.0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    parts = demo._apportion(200, weights, minimum=2, cap=30)
    assert parts.sum() == 200 and parts.min() >= 2 and parts.max() <= 30
    assert demo._apportion(200, weights, minimum=2).max() > 30  # the cap is what limits it


def test_segmentation_mask_cuts_the_cell_out_cleanly():
    """Black outside the mask, never black inside it, whatever the subject's mask habits."""
    style = demo.SubjectStyle(label="all", mask_offset=0.04, mask_jitter=0.02, blur=1.5)
    image = demo.render_cell(np.random.default_rng(3), "all", style, image_size=120)
    inside = image.max(axis=2) > 0
    assert 0.05 < inside.mean() < 0.6
    assert image[~inside].max() == 0


def test_bad_input_is_explained(tmp_path):
    with pytest.raises(ValueError, match="at least 9"):
        demo.make_demo_dataset(tmp_path / "x", n_images=3)
    with pytest.raises(ValueError, match="ext"):
        demo.make_demo_dataset(tmp_path / "x", ext="gif")
    with pytest.raises(ValueError, match="label"):
        demo.render_cell(np.random.default_rng(0), "blast")
    assert not (tmp_path / "x").exists()


def test_an_abandoned_temporary_set_is_removed_and_said(tmp_path, caplog):
    """A killed run leaves .<name>.tmp-<pid>-*; the next run removes it when that process is gone."""
    stale = tmp_path / ".d.tmp-999999999-abcd1234"
    (stale / "C-NMC_training_data").mkdir(parents=True)
    alive = tmp_path / f".d.tmp-{os.getpid()}-abcd1234"  # a live writer's folder is left alone
    alive.mkdir()
    with caplog.at_level("WARNING", logger="allnet_lib.demo"):
        demo.make_demo_dataset(tmp_path / "d", n_images=12, image_size=48, progress=False)
    assert not stale.exists() and alive.exists()
    assert "unfinished demo set left by an interrupted run" in caplog.text


def test_workers_that_cannot_start_fall_back_to_one_process(tmp_path, monkeypatch, caplog):
    from concurrent.futures.process import BrokenProcessPool

    class Broken:
        def __init__(self, *args, **kwargs):
            raise BrokenProcessPool("a child process terminated abruptly")

    monkeypatch.setattr(demo, "ProcessPoolExecutor", Broken)
    with caplog.at_level("WARNING", logger="allnet_lib.demo"):
        out = demo.make_demo_dataset(tmp_path / "d", n_images=12, image_size=48, progress=False, workers=2)
    assert len(list(out.rglob("*.bmp"))) == 12
    assert '__name__ == "__main__"' in caplog.text


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc to find the workers")
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_killed_demo_data_leaves_no_workers_behind(tmp_path, signal_name):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / f"killed-{signal_name}"
    child = subprocess.Popen([sys.executable, "-m", "allnet_lib.cli", "demo-data", "--out", str(out),
                              "--n-images", "3000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f".{out.name}.tmp-*/C-NMC_training_data/fold_*/*/*.bmp")):
        assert time.monotonic() < deadline and child.poll() is None, "the generator never started writing"
        time.sleep(0.2)
    child.send_signal(getattr(signal, signal_name))
    child.wait(timeout=30)
    deadline = time.monotonic() + 15
    while _processes_mentioning(str(out)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(out)) == []
    if signal_name == "SIGTERM":  # caught: the run cleans up after itself
        assert not list(tmp_path.glob(f".{out.name}.tmp-*"))
        assert child.returncode == 130  # "interrupted" in the exit-code table


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_set_with_an_emptied_or_truncated_file_is_not_reused(tmp_path, damage):
    out = demo.make_demo_dataset(tmp_path / "d", n_images=12, image_size=48, progress=False)
    victim = _files(out)[3]
    victim.write_bytes(b"" if damage == "empty" else victim.read_bytes()[:100])
    with pytest.raises(FileExistsError, match=r"incomplete .*empty or truncated.*overwrite=True") as info:
        demo.make_demo_dataset(out, n_images=12, image_size=48, progress=False)
    assert victim.name in str(info.value)
    demo.make_demo_dataset(out, n_images=12, image_size=48, progress=False, overwrite=True)
    assert victim.stat().st_size == _files(out)[0].stat().st_size  # regenerated whole


def test_messages_name_the_option_the_caller_can_pass(tmp_path):
    from allnet_lib.messages import cli_spelling

    out = demo.make_demo_dataset(tmp_path / "d", n_images=12, image_size=48, progress=False)
    with pytest.raises(FileExistsError) as from_python:
        demo.make_demo_dataset(out, n_images=15, image_size=48, progress=False)
    assert "pass overwrite=True" in str(from_python.value) and "--overwrite" not in str(from_python.value)
    with cli_spelling({"overwrite": "--overwrite", "out_dir": "--out DIR"}), \
            pytest.raises(FileExistsError) as from_cli:
        demo.make_demo_dataset(out, n_images=15, image_size=48, progress=False)
    assert "pass --overwrite" in str(from_cli.value) and "overwrite=True" not in str(from_cli.value)
    assert "--out DIR" in str(from_cli.value)
