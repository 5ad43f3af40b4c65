"""allnet_lib.reader.index_dataset on small fake trees in every real C-NMC layout."""

import shutil

import pandas as pd
import pytest
from cnmc_fixtures import (
    N_FINAL,
    found,
    make_class_folders,
    make_kaggle,
    make_split_output,
    make_tcia,
    write_image,
)

from allnet_lib.reader import TABLE_COLUMNS, DatasetError, index_dataset


def _index(root, **kwargs):
    return index_dataset(root, progress=False, **kwargs)


def _kinds(index):
    return dict(zip(index.problems["path"].map(lambda p: p.rsplit("/", 1)[-1]), index.problems["kind"]))


@pytest.fixture(scope="module")
def tcia(tmp_path_factory):
    return make_tcia(tmp_path_factory.mktemp("tcia") / "cnmc")


def test_tcia_layout_is_indexed_completely(tcia):
    index = _index(tcia.root)
    assert list(index.table.columns) == TABLE_COLUMNS
    pd.testing.assert_frame_equal(found(index.table), tcia.expected)
    assert index.problems.empty and index.ok
    assert index.table["y"].tolist() == [int(label == "all") for label in index.table["label"]]
    assert index.table["path"].map(lambda p: p.startswith("/")).all()
    assert index.table.dtypes[["y", "image", "cell"]].tolist() == ["int64"] * 3


def test_lower_case_h3_is_kept_and_counted(tcia):
    index = _index(tcia.root)
    assert "H3" in set(index.table["subject"]) and "h3" not in set(index.table["subject"])
    assert index.normalised == {"h3": 3}
    assert "'h3' normalised to 'H3' (3 images)" in index.report()


def test_prelim_numbers_are_mapped_back_to_real_names(tcia):
    index = _index(tcia.root)
    prelim = index.table[index.table["fold"] == "prelim_test"]
    by_number = dict(zip(prelim["path"].map(lambda p: p.rsplit("/", 1)[-1]), prelim["filename"]))
    csv = pd.read_csv(tcia.root / "C-NMC_test_prelim_phase_data_labels.csv")
    assert by_number == dict(zip(csv["new_names"], csv["Patient_ID"]))
    assert dict(zip(prelim["filename"], prelim["y"])) == dict(zip(csv["Patient_ID"], csv["labels"]))


def test_final_test_is_kept_apart_as_unlabelled(tcia):
    index = _index(tcia.root)
    assert "final_test" not in set(index.table["fold"])
    assert len(index.unlabelled) == N_FINAL
    assert set(index.unlabelled["y"]) == {-1} and set(index.unlabelled["label"]) == {"unknown"}
    assert list(index.unlabelled.columns) == TABLE_COLUMNS


def test_summary_counts_images_and_subjects(tcia):
    summary = _index(tcia.root).summary().set_index(["fold", "label"])
    assert summary.loc[("fold_0", "all")].tolist() == [5, 2]
    assert summary.loc[("fold_2", "hem")].tolist() == [3, 1]
    assert summary.loc[("prelim_test", "hem")].tolist() == [2, 1]
    assert summary.loc[("final_test", "unknown"), "images"] == N_FINAL
    assert summary.loc[("total", "all")].tolist() == [11, 5]
    assert summary.loc[("total", "hem")].tolist() == [9, 4]
    assert list(summary.index.get_level_values(0).unique()) == [
        "fold_0", "fold_1", "fold_2", "prelim_test", "final_test", "total"]


def test_nested_fold_layout(tmp_path, tcia):
    nested = make_tcia(tmp_path / "nested", nested=True, prelim=False, final=False)
    index = _index(nested.root)
    assert index.problems.empty
    pd.testing.assert_frame_equal(found(index.table), nested.expected)
    assert "nested fold_N/fold_N/{all,hem}" in index.layouts


def test_kaggle_layout_reads_like_tcia(tmp_path, tcia):
    kaggle = make_kaggle(tmp_path / "kaggle")
    index = _index(kaggle.root)
    assert index.problems.empty
    pd.testing.assert_frame_equal(found(index.table), tcia.expected)
    assert len(index.unlabelled) == N_FINAL
    assert any("Kaggle" in layout for layout in index.layouts)


def test_plain_class_folders(tmp_path):
    fake = make_class_folders(tmp_path / "plain")
    index = _index(fake.root)
    pd.testing.assert_frame_equal(found(index.table), fake.expected)
    assert set(index.table["fold"]) == {"unknown"}


def test_split_output_is_read_back_with_its_parts_and_leakage_noted(tmp_path):
    fake = make_split_output(tmp_path / "split")
    (fake.root / "manifest.csv").write_text("path,filename,label,subject,fold,part\n")  # the splitter's
    index = _index(fake.root)
    assert index.problems.empty and any("manifest.csv" in note for note in index.notes)
    pd.testing.assert_frame_equal(found(index.table), fake.expected)
    assert set(index.table["fold"]) == {"train", "validation"}
    assert any("more than one fold" in note for note in index.notes)
    # pointing at one part keeps its name as the fold
    assert set(_index(fake.root / "train").table["fold"]) == {"train"}


def test_root_can_be_one_fold_or_one_class_folder(tcia):
    fold_1 = tcia.root / "C-NMC_training_data" / "fold_1"
    assert set(_index(fold_1).table["fold"]) == {"fold_1"}
    hem = _index(fold_1 / "hem").table
    assert set(hem["fold"]) == {"fold_1"} and set(hem["label"]) == {"hem"}


def test_problem_files_are_listed_not_dropped(tmp_path):
    root = tmp_path / "bad"
    make_tcia(root, prelim=False, final=False)
    fold_0 = root / "C-NMC_training_data" / "fold_0"
    write_image(fold_0 / "all" / "IMG_0001.bmp")  # not a C-NMC name
    write_image(fold_0 / "all" / "UID_H9_1_1_hem.bmp")  # a hem cell in the all folder
    write_image(fold_0 / "all" / "UID_H8_1_1_all.bmp")  # H subject called all
    (fold_0 / "all" / "notes.txt").write_text("hi")
    (fold_0 / "all" / "UID_1_9_1_all.bmp").touch()  # zero bytes
    (fold_0 / "all" / "UID_1_8_1_all.bmp").symlink_to(tmp_path / "gone.bmp")  # dangling link
    (fold_0 / "hem" / ".DS_Store").write_text("x")  # OS litter: noted, not a problem
    (root / "C-NMC_training_data" / "fold_1" / "all" / "UID_1_1_1_all.bmp").write_bytes(
        (fold_0 / "all" / "UID_1_1_1_all.bmp").read_bytes())  # same cell in two folds
    (root / "C-NMC_training_data" / "fold_3" / "hem").mkdir(parents=True)  # empty class folder
    write_image(root / "stray.png")  # image with no label anywhere
    index = _index(root)
    kinds = _kinds(index)
    assert kinds == {
        "IMG_0001.bmp": "name", "UID_H9_1_1_hem.bmp": "label-mismatch", "UID_H8_1_1_all.bmp": "name",
        "notes.txt": "not-image", "UID_1_9_1_all.bmp": "empty-file", "UID_1_1_1_all.bmp": "duplicate",
        "hem": "empty-folder", "stray.png": "no-label", "UID_1_8_1_all.bmp": "unreadable",
    }
    for reason in index.problems["reason"]:
        assert len(reason) > 20  # every reason says what is wrong and what to do
    duplicate = index.problems[index.problems["kind"] == "duplicate"].iloc[0]
    assert "fold_1" in duplicate["path"] and "fold_0" in duplicate["reason"]
    assert not index.table["filename"].isin(["IMG_0001.bmp", "UID_H9_1_1_hem.bmp", "UID_1_9_1_all.bmp"]).any()
    assert any("operating-system" in note for note in index.notes)
    assert not index.ok and "problems: 9" in index.report()


def test_prelim_csv_problems(tmp_path):
    root = tmp_path / "prelim"
    make_tcia(root, final=False)
    folder = root / "C-NMC_test_prelim_phase_data"
    csv_path = root / "C-NMC_test_prelim_phase_data_labels.csv"
    csv = pd.read_csv(csv_path)
    (folder / "4.bmp").unlink()  # listed but missing
    write_image(folder / "99.bmp")  # present but not listed
    csv.loc[0, "labels"] = 1 - csv.loc[0, "labels"]  # CSV label contradicts the real name
    csv.to_csv(csv_path, index=False)
    kinds = _kinds(_index(root))
    assert kinds == {"4.bmp": "missing", "99.bmp": "unlisted", csv.loc[0, "new_names"]: "label-mismatch"}


def test_prelim_without_csv_cannot_be_labelled(tmp_path):
    root = tmp_path / "nocsv"
    make_tcia(root, final=False)
    (root / "C-NMC_test_prelim_phase_data_labels.csv").unlink()
    index = _index(root)
    assert "prelim_test" not in set(index.table["fold"])
    labels = index.problems[index.problems["kind"] == "labels"]
    assert len(labels) == 5  # the missing CSV + its 4 images
    missing_csv = labels[labels["path"].str.endswith("C-NMC_test_prelim_phase_data_labels.csv")]
    assert "not found" in missing_csv["reason"].item()


def test_verify_finds_broken_odd_sized_and_copied_images(tmp_path):
    root = tmp_path / "verify"
    make_tcia(root, prelim=False)
    hem = root / "C-NMC_training_data" / "fold_0" / "hem"
    broken = hem / "UID_H1_1_1_hem.bmp"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated
    write_image(hem / "UID_H1_5_1_hem.bmp", size=20)  # wrong size
    shutil.copy(hem / "UID_H1_1_2_hem.bmp", hem / "UID_H1_6_1_hem.bmp")  # same bytes, new name
    assert _index(root).problems.empty  # the fast index does not open images
    index = _index(root, verify=True)
    assert _kinds(index) == {"UID_H1_1_1_hem.bmp": "unreadable", "UID_H1_5_1_hem.bmp": "size",
                             "UID_H1_6_1_hem.bmp": "duplicate"}
    assert "truncated" in index.problems["reason"].iloc[0]
    assert len(index.unlabelled) == N_FINAL  # final test (4/3 of the size) is accepted


def test_missing_root_and_file_root_and_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*fetch_cnmc.py"):
        _index(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError):
        _index(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no C-NMC images found"):
        _index(tmp_path / "empty")


def test_hidden_and_macos_folders_are_skipped_and_noted(tmp_path):
    root = tmp_path / "mac"
    make_class_folders(root)
    write_image(root / "__MACOSX" / "all" / "._UID_1_1_1_all.bmp")
    write_image(root / ".ipynb_checkpoints" / "all" / "UID_1_1_1_all.bmp")
    index = _index(root)
    assert index.problems.empty and len(index.table) == 16
    assert any("__MACOSX" in note and ".ipynb_checkpoints" in note for note in index.notes)


def test_progress_false_is_silent(tcia, capsys):
    _index(tcia.root, verify=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_badly_encoded_name_is_a_problem_not_an_abort(tmp_path):
    import os

    from cnmc_fixtures import write_image as _write

    folder = tmp_path / "data" / "all"
    _write(folder / "UID_1_1_1_all.bmp")
    bad = os.fsencode(str(folder)) + b"/UID_1_8_1_all\xff.bmp"
    with open(bad, "wb") as handle:
        handle.write((folder / "UID_1_1_1_all.bmp").read_bytes())
    index = _index(tmp_path / "data")
    assert list(index.table["filename"]) == ["UID_1_1_1_all.bmp"]
    problem = index.problems.loc[index.problems["kind"] == "bad-name"].iloc[0]
    assert problem["path"].endswith("UID_1_8_1_all\\xff.bmp") and "Rename it" in problem["reason"]
    problem["path"].encode("utf-8")  # printable: a report or CSV can hold it
    assert not index.ok


def test_a_linked_class_folder_is_reported_not_silently_skipped(tmp_path):
    from cnmc_fixtures import write_image as _write

    _write(tmp_path / "elsewhere" / "hem" / "UID_H1_1_1_hem.bmp")
    _write(tmp_path / "data" / "all" / "UID_1_1_1_all.bmp")
    (tmp_path / "data" / "hem").symlink_to(tmp_path / "elsewhere" / "hem", target_is_directory=True)
    index = _index(tmp_path / "data")
    linked = index.problems.loc[index.problems["kind"] == "linked-folder"]
    assert len(linked) == 1 and linked.iloc[0]["path"].endswith("hem")
    assert "not followed" in linked.iloc[0]["reason"] and "problems: none" not in index.report()


def test_an_unreadable_folder_is_reported(tmp_path, monkeypatch):
    """Root reads every folder, so the refusal is simulated where os.walk reports it."""
    import os

    from allnet_lib import reader
    from cnmc_fixtures import write_image as _write

    _write(tmp_path / "data" / "all" / "UID_1_1_1_all.bmp")
    real_walk = os.walk

    def walk(top, onerror=None, **kwargs):
        onerror(PermissionError(13, "Permission denied", str(tmp_path / "data" / "hem")))
        yield from real_walk(top, onerror=onerror, **kwargs)

    monkeypatch.setattr(reader.os, "walk", walk)
    index = _index(tmp_path / "data")
    unreadable = index.problems.loc[index.problems["kind"] == "unreadable"]
    assert len(unreadable) == 1 and "Permission denied" in unreadable.iloc[0]["reason"]
    assert "NOT indexed" in unreadable.iloc[0]["reason"] and len(index.table) == 1


def test_verify_reports_images_that_are_converted_when_read(tmp_path):
    """16-bit, CMYK, alpha and grayscale files are usable, but read_image changes them: the index
    says which and how (in .conversions and its report), instead of only warning at load time."""
    import numpy as np
    from PIL import Image

    from cnmc_fixtures import cell_array

    folder = tmp_path / "data" / "all"
    write_image(folder / "UID_1_1_1_all.bmp")
    Image.fromarray(cell_array("a")).convert("CMYK").save(folder / "UID_1_1_2_all.jpg")
    Image.fromarray(cell_array("b")[..., 0].astype(np.uint16) * 257).save(folder / "UID_1_1_3_all.png")
    Image.fromarray(cell_array("c")).convert("RGBA").save(folder / "UID_1_1_4_all.png")
    Image.fromarray(cell_array("d")).convert("L").save(folder / "UID_1_1_5_all.png")
    index = _index(tmp_path / "data", verify=True)
    assert len(index.table) == 5 and index.ok
    converted = dict(zip(index.conversions["path"].map(lambda p: p.rsplit("/", 1)[-1]),
                         index.conversions["conversion"]))
    assert set(converted) == {"UID_1_1_2_all.jpg", "UID_1_1_3_all.png", "UID_1_1_4_all.png",
                              "UID_1_1_5_all.png"}
    assert "CMYK" in converted["UID_1_1_2_all.jpg"] and "16-bit" in converted["UID_1_1_3_all.png"]
    assert "alpha" in converted["UID_1_1_4_all.png"] and "grayscale" in converted["UID_1_1_5_all.png"]
    assert "converted when read: 4 image(s)" in index.report()
