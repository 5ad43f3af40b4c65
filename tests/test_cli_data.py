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


# --------------------------------------------------------------------------------------------
# issue 15: exit codes, crashes, messages, problems found late or not shown


def test_exit_codes_are_one_table_in_help_and_readme(capsys):
    import re
    from pathlib import Path

    from allnet_lib import cli

    codes = [code for code, _ in cli.EXIT_CODES]
    assert len(set(codes)) == len(codes)
    assert {cli.EXIT_PROBLEMS, cli.EXIT_USAGE, cli.EXIT_INTERNAL} == {1, 2, 3}
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, flags=re.MULTILINE))
    assert {int(k): v for k, v in rows.items()} == dict(cli.EXIT_CODES)
    for code, text in cli.EXIT_CODES:
        assert f"{code} {text}" in help_text


def test_a_crash_is_one_message_with_the_traceback_kept(demo, monkeypatch, capsys):
    import re

    from allnet_lib import reader

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(reader, "index_dataset", broken)
    code, out, err = run(capsys, "index", demo)
    assert code == 3
    assert "internal error: RuntimeError: a bug" in err and "Traceback" not in err
    saved = re.search(r"traceback saved to (\S+\.traceback\.txt)", err)
    assert saved, err
    from pathlib import Path

    text = Path(saved[1]).read_text()
    assert "Traceback" in text and "RuntimeError: a bug" in text
    Path(saved[1]).unlink()
    code, _, err = run(capsys, "--debug", "index", demo)
    assert code == 3 and "Traceback" in err and "in broken" in err


def test_sigterm_is_an_interruption_not_a_vanishing(demo, monkeypatch, capsys):
    import os
    import signal

    from allnet_lib import reader

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(reader, "index_dataset", killed)
    code, _, err = run(capsys, "index", demo)
    assert code == 130 and "interrupted" in err


def test_an_unknown_option_after_a_subcommand_shows_that_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["index", "--bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: allnet index" in err and "unrecognized arguments: --bogus" in err


def test_index_with_no_usable_image_exits_1(tmp_path, capsys):
    (tmp_path / "data" / "all").mkdir(parents=True)
    (tmp_path / "data" / "all" / "UID_1_1_1_all.bmp").write_bytes(b"")
    code, out, err = run(capsys, "index", tmp_path / "data")
    assert code == 1
    assert "UID_1_1_1_all.bmp" in out and "empty file" in out and "no usable labelled image" in err


def test_problems_csv_is_checked_before_indexing(demo, tmp_path, monkeypatch, capsys):
    from allnet_lib import reader

    def never(*args, **kwargs):
        raise AssertionError("indexed before checking --problems-csv")

    monkeypatch.setattr(reader, "index_dataset", never)
    existing = tmp_path / "problems.csv"
    existing.write_text("mine")
    code, _, err = run(capsys, "index", demo, "--problems-csv", existing)
    assert code == 2 and "already exists" in err and existing.read_text() == "mine"


def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])


def test_split_lists_unreadable_images_and_leaves_them_out(demo, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo, data)
    victim = sorted((data / "C-NMC_training_data" / "fold_0" / "all").glob("*.bmp"))[0]
    _truncate(victim)
    manifest = tmp_path / "m.csv"
    code, out, err = run(capsys, "split", data, "--manifest", manifest)
    assert code == 0, err
    assert victim.name in err and "truncated or corrupt" in err
    assert victim.name not in set(pd.read_csv(manifest)["filename"])
    assert "(59 images)" in out


def test_split_by_fold_says_which_images_it_leaves_out(tmp_path, capsys):
    from cnmc_fixtures import PRELIM_SUBJECTS, make_tcia

    fake = make_tcia(tmp_path / "cnmc")
    n_prelim = sum(n for _, _, n in PRELIM_SUBJECTS)
    code, out, err = run(capsys, "split", fake.root, "--by", "fold", "--manifest", tmp_path / "m.csv")
    assert code == 0, err
    assert f"note: {n_prelim} image(s)" in err and f"prelim_test: {n_prelim}" in err
    total = len(pd.read_csv(tmp_path / "m.csv"))
    assert f"({total} images)" in out


def test_the_manifest_exists_error_fits_the_command_line(demo, data_root, tmp_path, capsys):
    target = tmp_path / "split.csv"
    assert run(capsys, "split", demo, "--manifest", target)[0] == 0
    code, _, err = run(capsys, "split", demo, "--test-size", "0.3", "--manifest", target)
    assert code == 2 and "different split manifest" in err and "--manifest" not in err
    assert run(capsys, "split", demo)[0] == 0  # the default location
    code, _, err = run(capsys, "split", demo, "--test-size", "0.3", "--seed", "0")
    assert code == 0  # another split name, another default file
    default = data_root / "splits" / "demo-subject-s0-t20.csv"
    default.write_text(default.read_text().replace("train", "test", 1))
    code, _, err = run(capsys, "split", demo)
    assert code == 2 and "pass --manifest FILE" in err


def test_demo_data_names_the_flag_not_the_python_argument(tmp_path, capsys):
    out = tmp_path / "d"
    assert run(capsys, "demo-data", "--out", out, *SMALL)[0] == 0
    code, _, err = run(capsys, "demo-data", "--out", out, "--n-images", "61", "--size", "32")
    assert code == 2 and "pass --overwrite" in err and "overwrite=True" not in err


def test_index_and_crop_report_images_converted_when_read(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "data" / "all"
    folder.mkdir(parents=True)
    cell = np.zeros((32, 32, 3), np.uint8)
    cell[10:22, 10:22] = (200, 100, 150)
    Image.fromarray(cell).save(folder / "UID_1_1_1_all.bmp")
    Image.fromarray(cell).convert("CMYK").save(folder / "UID_1_1_2_all.jpg")
    Image.fromarray(cell[..., 0].astype(np.uint16) * 257).save(folder / "UID_1_1_3_all.png")
    code, out, err = run(capsys, "index", tmp_path / "data", "--verify")
    assert code == 0, err
    assert "converted when read" in out and "UID_1_1_2_all.jpg" in out and "CMYK" in out
    assert "UID_1_1_3_all.png" in out and "16-bit" in out
    code, out, err = run(capsys, "crop", tmp_path / "data", tmp_path / "cropped")
    assert code == 0, out + err
    assert "2 image(s) were not 8-bit RGB" in out and "CMYK" in out and "16-bit" in out


def test_a_path_that_cannot_be_written_is_a_usage_error_not_a_crash(demo, tmp_path, monkeypatch, capsys):
    from allnet_lib import crop

    def refused(src, dst, **kwargs):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(crop, "crop_folder", refused)
    code, _, err = run(capsys, "crop", demo, tmp_path / "out")
    assert code == 2 and "Permission denied" in err and str(tmp_path / "out") in err
    assert "internal error" not in err
