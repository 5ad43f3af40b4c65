"""The data subcommands of ``allnet``, run in-process: demo-data, index, split, crop, augment."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from allnet_lib.cli import main

pytest.importorskip("allnet_lib.reader", reason="allnet_lib.reader not written yet")
pytest.importorskip("allnet_lib.demo", reason="allnet_lib.demo not written yet")

SMALL = ["--n-images", "60", "--size", "32"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small demo set made through the command itself (shared, never modified by tests)."""
    out = tmp_path_factory.mktemp("shared") / "demo"
    assert main(["demo-data", "--out", str(out), *SMALL]) == 0
    return out


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty ALLNET_DATA for this test, so default locations land in tmp_path."""
    root = tmp_path / "allnet_data"
    monkeypatch.setenv("ALLNET_DATA", str(root))
    return root


def run(capsys, *argv):
    """Run ``allnet argv`` and return (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_data_then_split_by_subject_gives_a_subject_disjoint_manifest(data_root, capsys):
    code, out, _ = run(capsys, "demo-data", *SMALL)
    assert code == 0 and str(data_root / "demo") in out
    code, out, err = run(capsys, "split", "--by", "subject", "--val-size", "0.2")  # default DATA
    assert code == 0, err
    assert "subject-s0-t20-v20" in out and "images_all" in out
    manifest_path = data_root / "splits" / "demo-subject-s0-t20-v20.csv"
    manifest = pd.read_csv(manifest_path, dtype=str)
    assert list(manifest.columns) == ["path", "filename", "label", "subject", "fold", "part"]
    assert len(manifest) == 60
    sides = manifest.groupby("subject")["part"].nunique()
    assert (sides == 1).all(), sides[sides > 1]
    for part in ("train", "val", "test"):
        assert set(manifest.loc[manifest["part"] == part, "label"]) == {"all", "hem"}
    # running it again is harmless; the same split gives the same file
    before = manifest_path.read_bytes()
    assert run(capsys, "split", "--by", "subject", "--val-size", "0.2")[0] == 0
    assert manifest_path.read_bytes() == before


def test_split_never_overwrites_a_different_manifest(demo, data_root, tmp_path, capsys):
    target = tmp_path / "split.csv"
    assert run(capsys, "split", demo, "--manifest", target)[0] == 0
    before = target.read_bytes()
    code, _, err = run(capsys, "split", demo, "--test-size", "0.3", "--manifest", target)
    assert code == 2
    assert "different split manifest" in err and str(target) in err
    assert target.read_bytes() == before


def test_split_by_image_warns_and_writes_the_reports_folders(demo, data_root, tmp_path, capsys):
    out_dir = tmp_path / "report_split"
    code, out, err = run(capsys, "split", demo, "--by", "image", "--out", out_dir)
    assert code == 0, err
    assert "mixes subjects" in err and "image-s120-t20" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["manifest.csv", "train", "validation"]
    assert len(list(out_dir.rglob("*.bmp"))) == 60
    manifest = pd.read_csv(out_dir / "manifest.csv")
    assert manifest["path"].str.startswith(str(out_dir)).all()
    # the output folder is never written twice
    code, _, err = run(capsys, "split", demo, "--by", "image", "--out", out_dir)
    assert code == 2 and "already exists" in err
    # nor inside the data folder
    code, _, err = run(capsys, "split", demo, "--by", "image", "--out", demo / "split")
    assert code == 2 and "inside the dataset folder" in err


def test_split_by_subject_with_out_writes_train_val_test_links(demo, data_root, tmp_path, capsys):
    out_dir = tmp_path / "subject_split"
    code, _, err = run(capsys, "split", demo, "--by", "subject", "--val-size", "0.2",
                       "--out", out_dir, "--mode", "symlink", "--manifest", tmp_path / "m.csv")
    assert code == 0, err
    assert {p.name for p in out_dir.iterdir()} == {"manifest.csv", "train", "val", "test"}
    assert all(p.is_symlink() for p in out_dir.rglob("*.bmp"))
    assert (tmp_path / "m.csv").read_text() == (out_dir / "manifest.csv").read_text()


def test_split_by_fold(demo, data_root, capsys):
    code, out, err = run(capsys, "split", demo, "--by", "fold", "--val-folds", "fold_1")
    assert code == 0, err
    manifest = pd.read_csv(data_root / "splits" / "demo-fold-t2-v1.csv")
    assert manifest.groupby("part")["fold"].unique().map(list).to_dict() == {
        "train": ["fold_0"], "val": ["fold_1"], "test": ["fold_2"]}
    code, _, err = run(capsys, "split", demo, "--by", "fold", "--test-folds", "fold_9")
    assert code == 2 and "fold 'fold_9' is not in the table" in err


@pytest.mark.parametrize("argv,message", [
    (["index", "{tmp}/missing"], "does not exist"),
    (["split", "{tmp}/missing"], "does not exist"),
    (["split", "--data", "{tmp}/missing"], "does not exist"),
    (["index"], "allnet demo-data"),  # no data anywhere
    (["split", "{demo}", "--test-size", "1.5"], "test_size must be a fraction"),
    (["split", "{demo}", "--by", "subject", "--val-size", "0.3", "--test-size", "0.7"],
     "test_size + val_size must be below 1"),
    (["demo-data", "--out", "{tmp}/d", "--ext", "gif"], "not supported"),
])
def test_bad_input_exits_2_with_a_helpful_message(argv, message, demo, data_root, tmp_path,
                                                   capsys):
    argv = [a.format(tmp=tmp_path, demo=demo) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and f"allnet {argv[0]}: error:" in err


def test_option_values_are_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["split", "--test-size", "a fifth"])
    assert exit_info.value.code == 2
    assert "not a number" in capsys.readouterr().err


def test_index_lists_problems_and_strict_exits_1(demo, data_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo, data)
    (data / "C-NMC_training_data" / "fold_0" / "all" / "notes.txt").write_text("not an image")
    code, out, _ = run(capsys, "index", data)
    assert code == 0 and "notes.txt" in out and "fold_0" in out
    problems_csv = tmp_path / "problems.csv"
    code, out, _ = run(capsys, "index", data, "--strict", "--problems-csv", problems_csv)
    assert code == 1
    assert "notes.txt" in pd.read_csv(problems_csv)["path"].str.cat()
    code, _, err = run(capsys, "index", data, "--problems-csv", problems_csv)
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize("command,expected", [
    ("demo-data", ["--n-images", "--overwrite"]),
    ("index", ["--verify", "--problems-csv", "--strict"]),
    ("split", ["--by", "--test-size", "--val-size", "--out", "--mode", "--manifest", "same person"]),
    ("crop", ["SRC", "DST", "--size"]),
    ("augment", ["-n", "--seed"]),
])
def test_every_subcommand_explains_its_options(command, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in expected:
        assert word in text, word


def test_crop_writes_cropped_images(demo, tmp_path, capsys):
    pytest.importorskip("allnet_lib.crop", reason="allnet_lib.crop not written yet")
    src = demo / "C-NMC_training_data" / "fold_0"
    code, out, err = run(capsys, "crop", src, tmp_path / "cropped")
    assert code in (0, 1), err  # 1 only if a crop cut into a cell
    written = list((tmp_path / "cropped").rglob("*.bmp"))
    assert len(written) == len(list(src.rglob("*.bmp"))) and "centre-cropped" in out
    from PIL import Image

    assert Image.open(written[0]).size == (28, 28)  # 400/450 of the 32-pixel demo images
    code, out, _ = run(capsys, "crop", src, tmp_path / "tight", "--size", "100")
    assert code == 1 and "lost cell (non-black) pixels" in out
    code, _, err = run(capsys, "crop", tmp_path / "missing", tmp_path / "c2")
    assert code == 2 and "does not exist" in err


def test_augment_writes_n_images(demo, tmp_path, capsys):
    pytest.importorskip("allnet_lib.augment", reason="allnet_lib.augment not written yet")
    src = demo / "C-NMC_training_data" / "fold_0"
    code, out, err = run(capsys, "augment", src, tmp_path / "aug", "-n", "6", "--seed", "7")
    assert code == 0, err
    written = [p for p in (tmp_path / "aug").rglob("*") if p.is_file()]
    assert len(written) == 6 and {p.parent.name for p in written} <= {"all", "hem"}
    assert "6 augmented image(s)" in out
    code, _, err = run(capsys, "augment", tmp_path / "missing", tmp_path / "a2", "-n", "2")
    assert code == 2 and "does not exist" in err
