"""Splitters: the report's image split reproduced exactly, subject/fold splits disjoint, manifests
stable and never overwritten, folder splits safe."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest

from allnet_lib import split as S


# ---------------------------------------------------------------------------------------------
# small generated tables and folders
# ---------------------------------------------------------------------------------------------
def make_table(n_all=12, n_hem=6, seed=1, folds=3, extra_rows=()):
    """A table with the index columns: subjects of random sizes, spread over ``folds`` folds."""
    rng = random.Random(seed)
    rows = []
    specs = [(str(i + 1), "all") for i in range(n_all)] + [(f"H{i + 1}", "hem") for i in range(n_hem)]
    for k, (subject, label) in enumerate(specs):
        fold = f"fold_{k % folds}"
        for image in range(rng.randint(5, 40)):
            name = f"UID_{subject}_{image}_1_{label}.bmp"
            rows.append(dict(path=f"/data/{fold}/{label}/{name}", filename=name, label=label,
                             y=int(label == "all"), subject=subject, fold=fold, image=image, cell=1))
    rows += list(extra_rows)
    return pd.DataFrame(rows)


def report_split_names(imgs, split_ratio, seed=120):
    """The core of the report's train_validation_split (Figure 9), copied from the seed text."""
    imgs = list(imgs)
    imgs.sort()
    random.seed(seed)
    random.shuffle(imgs)
    train_split = imgs[:int(split_ratio * len(imgs))]
    test_split = imgs[int(split_ratio * len(imgs)):]
    return train_split, test_split


def train_validation_split(dataset_path, output_path, split_ratio, seed=120):
    """The report's function (Figure 9) with its two typos fixed ("import rando", "ing_category")."""
    img_categories = os.listdir(dataset_path)
    if os.path.exists(output_path):
        print('Dataset already exists at the given path')
    os.makedirs(output_path)
    os.mkdir(output_path + '/train')
    os.mkdir(output_path + '/validation')
    for img_category in img_categories:
        imgs = os.listdir(dataset_path + '/' + img_category)
        imgs.sort()
        random.seed(seed)
        random.shuffle(imgs)
        train_split = imgs[:int(split_ratio * len(imgs))]
        test_split = imgs[int(split_ratio * len(imgs)):]
        if not os.path.exists(os.path.join(output_path, 'train', img_category)):
            os.mkdir(os.path.join(output_path, 'train', img_category))
        for img in train_split:
            shutil.copy(os.path.join(dataset_path, img_category, img),
                        os.path.join(output_path, 'train', img_category, img))
        if not os.path.exists(os.path.join(output_path, 'validation', img_category)):
            os.mkdir(os.path.join(output_path, 'validation', img_category))
        for img in test_split:
            shutil.copy(os.path.join(dataset_path, img_category, img),
                        os.path.join(output_path, 'validation', img_category, img))


def make_class_folders(root: Path, n_all=23, n_hem=11):
    """A plain {all,hem} folder of tiny valid BMPs with C-NMC names, like the report's data."""
    from PIL import Image

    image = Image.new("RGB", (4, 4), (120, 30, 90))
    for label, count, prefix in (("all", n_all, ""), ("hem", n_hem, "H")):
        (root / label).mkdir(parents=True)
        for i in range(count):
            subject = f"{prefix}{i % 4 + 1}"
            image.save(root / label / f"UID_{subject}_{i}_1_{label}.bmp")
    return root


def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def names(table, label=None):
    if label is not None:
        table = table[table["label"] == label]
    return list(table["filename"])


# ---------------------------------------------------------------------------------------------
# random_image_split: the report's algorithm
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_all,n_hem,test_size,seed", [
    (12, 6, 0.2, 120), (12, 6, 0.3, 7), (20, 9, 0.1, 0), (7, 5, 0.25, 2019)])
def test_random_image_split_is_the_reports_split(n_all, n_hem, test_size, seed):
    table = make_table(n_all, n_hem, seed=seed)
    split = S.random_image_split(table, test_size=test_size, seed=seed)
    for label in ("all", "hem"):
        train, test = report_split_names(names(table, label), 1 - test_size, seed)
        assert names(split.train, label) == train  # same images, same (shuffled) order
        assert names(split.test, label) == test
    assert split.val.empty and split.method == "image"


def test_random_image_split_ignores_row_order_and_keeps_global_random_state():
    table = make_table()
    shuffled = table.sample(frac=1, random_state=3)
    random.seed(5)
    expected = random.random()
    random.seed(5)
    split = S.random_image_split(shuffled)
    assert random.random() == expected
    assert S.manifest_hash(split) == S.manifest_hash(S.random_image_split(table))


def test_random_image_split_validation_comes_from_train_and_test_is_unchanged():
    table = make_table()
    plain = S.random_image_split(table, test_size=0.2)
    with_val = S.random_image_split(table, test_size=0.2, val_size=0.1)
    assert names(with_val.test) == names(plain.test)
    assert set(names(with_val.train)) | set(names(with_val.val)) == set(names(plain.train))
    assert 0.08 < len(with_val.val) / len(table) < 0.12
    assert with_val.name == "image-s120-t20-v10"


def test_random_image_split_mixes_subjects():
    split = S.random_image_split(make_table())
    assert split.subject_overlap()  # the leak the book is about
    with pytest.raises(AssertionError, match="not subject-disjoint"):
        S.assert_subject_disjoint(split)


# ---------------------------------------------------------------------------------------------
# subject_split and fold_split
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("test_size,val_size,seed", [(0.2, 0.0, 0), (0.25, 0.15, 3), (0.3, 0.1, 11)])
def test_subject_split_is_disjoint_stratified_and_close_to_the_sizes(test_size, val_size, seed):
    table = make_table(n_all=20, n_hem=10)
    split = S.subject_split(table, test_size=test_size, val_size=val_size, seed=seed)
    assert split.subject_overlap() == set()
    assert sum(len(t) for t in split.parts().values()) == len(table)
    summary = split.summary()
    parts = ["train", "test"] + (["val"] if val_size else [])
    for part in parts:
        assert summary.loc[part, "subjects_all"] >= 1 and summary.loc[part, "subjects_hem"] >= 1
    for label in ("all", "hem"):
        n = (table["label"] == label).sum()
        for part, size in (("test", test_size), ("val", val_size)):
            if size:
                share = summary.loc[part, f"images_{label}"] / n
                assert abs(share - size) < 0.06, (label, part, share)


def test_subject_split_is_seeded():
    table = make_table(n_all=20, n_hem=10)
    a, b = S.subject_split(table, seed=1), S.subject_split(table.iloc[::-1], seed=1)
    assert S.manifest_hash(a) == S.manifest_hash(b)
    hashes = {S.manifest_hash(S.subject_split(table, seed=s)) for s in range(5)}
    assert len(hashes) > 1
    assert a.name == "subject-s1-t20"


def test_subject_split_needs_enough_subjects_per_class():
    table = make_table(n_all=5, n_hem=2)
    S.subject_split(table)  # two hem subjects: one each side is fine
    with pytest.raises(ValueError, match=r"class 'hem' has 2 subject\(s\).*at least 3"):
        S.subject_split(table, val_size=0.1)


def test_subject_split_rejects_a_subject_with_both_classes():
    bad = dict(path="/x/UID_1_99_1_hem.bmp", filename="UID_1_99_1_hem.bmp", label="hem", y=0,
               subject="1", fold="fold_0", image=99, cell=1)
    with pytest.raises(ValueError, match=r"subject\(s\) \['1'\] have images of both classes"):
        S.subject_split(make_table(extra_rows=[bad]))


def test_fold_split_uses_the_official_folds_and_never_trains_on_test_sets():
    prelim = dict(path="/p/1.bmp", filename="1.bmp", label="all", y=1, subject="99",
                  fold="prelim_test", image=1, cell=1)
    table = make_table(extra_rows=[prelim])
    split = S.fold_split(table)
    assert set(split.train["fold"]) == {"fold_0", "fold_1"}
    assert set(split.test["fold"]) == {"fold_2"} and split.val.empty
    assert split.name == "fold-t2"
    split = S.fold_split(table, test_folds=["prelim_test"], val_folds=["fold_2"])
    assert len(split.test) == 1 and set(split.val["fold"]) == {"fold_2"}
    assert split.name == "fold-tprelim_test-v2"
    assert split.subject_overlap() == set()


@pytest.mark.parametrize("kwargs,message", [
    (dict(test_folds=("fold_7",)), r"fold 'fold_7' is not in the table; folds present"),
    (dict(test_folds=("fold_1",), val_folds=("fold_1",)), "both test and validation"),
    (dict(test_folds=()), "at least one test fold"),
    (dict(test_folds=("fold_0", "fold_1", "fold_2")), "no training fold left"),
])
def test_fold_split_explains_bad_folds(kwargs, message):
    with pytest.raises(ValueError, match=message):
        S.fold_split(make_table(), **kwargs)


def test_fold_split_checks_subjects_really_are_disjoint():
    table = make_table()
    table.loc[table.index[0], "fold"] = "fold_2"  # one image of a fold_0 subject moved
    with pytest.raises(AssertionError, match=r"\['1'\]"):
        S.fold_split(table)


@pytest.mark.parametrize("func", [S.random_image_split, S.subject_split])
@pytest.mark.parametrize("kwargs,message", [
    (dict(test_size=0), r"test_size must be a fraction of the images in \(0, 1\)"),
    (dict(test_size=1.0), "test_size"),
    (dict(test_size="0.2"), "test_size must be a number"),
    (dict(val_size=-0.1), r"val_size must be a fraction .* \[0, 1\)"),
    (dict(test_size=0.6, val_size=0.4), "test_size \\+ val_size must be below 1"),
])
def test_bad_sizes_are_explained(func, kwargs, message):
    with pytest.raises(ValueError, match=message):
        func(make_table(), **kwargs)


def test_bad_tables_are_explained():
    with pytest.raises(ValueError, match=r"no column\(s\) \['subject'\]"):
        S.subject_split(make_table().drop(columns="subject"))
    with pytest.raises(ValueError, match="empty"):
        S.random_image_split(make_table().iloc[:0])
    unlabelled = make_table()
    unlabelled.loc[0, "label"] = None
    with pytest.raises(ValueError, match="have no class label"):
        S.random_image_split(unlabelled)
    with pytest.raises(TypeError, match="DataFrame"):
        S.random_image_split([1, 2, 3])
    with pytest.raises(ValueError, match="too few"):
        S.random_image_split(make_table().head(1), test_size=0.2)


# ---------------------------------------------------------------------------------------------
# Split: manifest, hash, summary
# ---------------------------------------------------------------------------------------------
def test_manifest_columns_and_summary_counts():
    table = make_table()
    split = S.subject_split(table, val_size=0.2)
    manifest = split.manifest()
    assert list(manifest.columns) == ["path", "filename", "label", "subject", "fold", "part"]
    assert manifest["part"].value_counts().to_dict() == {
        "train": len(split.train), "val": len(split.val), "test": len(split.test)}
    summary = split.summary()
    assert list(summary.index) == ["train", "val", "test", "total"]
    assert summary.loc["total", "images"] == len(table)
    assert summary.loc["total", "subjects"] == table["subject"].nunique()
    assert summary.loc["test", "images_all"] == (split.test["label"] == "all").sum()
    assert abs(summary["fraction"].iloc[:3].sum() - 1) < 0.01


def test_write_manifest_is_idempotent_and_refuses_a_different_one(tmp_path):
    table = make_table()
    a, b = S.subject_split(table, seed=0), S.subject_split(table, seed=4)
    assert S.manifest_hash(a) != S.manifest_hash(b)
    path = a.write_manifest(tmp_path / "splits" / "m.csv")
    before = path.read_bytes()
    assert a.write_manifest(path) == path  # same content: fine
    with pytest.raises(FileExistsError, match="different split manifest; it was left untouched"):
        b.write_manifest(path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["m.csv"]  # no temporary files left


def test_manifest_hash_ignores_paths_and_order_and_round_trips(tmp_path):
    table = make_table()
    split = S.subject_split(table)
    moved = table.assign(path=table["path"].str.replace("/data", "/elsewhere"))
    assert S.manifest_hash(S.subject_split(moved)) == S.manifest_hash(split)
    manifest = split.manifest()
    assert S.manifest_hash(manifest.iloc[::-1]) == S.manifest_hash(split)
    assert S.manifest_hash(table) != S.manifest_hash(split)  # no parts: a different thing
    again = S.read_manifest(split.write_manifest(tmp_path / "m.csv"))
    assert S.manifest_hash(again) == S.manifest_hash(split)
    assert again.name == "m" and again.test["y"].isin([0, 1]).all()


# ---------------------------------------------------------------------------------------------
# seed_split_folders and export_split
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def reader():
    """The folder splitter reads folders with allnet_lib.reader."""
    return pytest.importorskip("allnet_lib.reader", reason="allnet_lib.reader not written yet")


def test_seed_split_folders_writes_what_the_reports_code_writes(tmp_path, reader):
    data = make_class_folders(tmp_path / "data")
    before = listing(data)
    train_validation_split(str(data), str(tmp_path / "report"), 0.8, seed=120)
    split = S.seed_split_folders(data, tmp_path / "ours", split_ratio=0.8, seed=120,
                                 progress=False)
    assert listing(tmp_path / "ours") == listing(tmp_path / "report") | {"manifest.csv"}
    assert listing(data) == before  # sources untouched
    assert split.name == "image-s120-t20"
    manifest = pd.read_csv(tmp_path / "ours" / "manifest.csv")
    assert all(Path(p).is_file() for p in manifest["path"])
    assert all(str(tmp_path / "ours") in p for p in manifest["path"])
    assert S.manifest_hash(manifest) == S.manifest_hash(split)


@pytest.mark.parametrize("mode", ["link", "symlink"])
def test_seed_split_folders_links(tmp_path, reader, mode):
    data = make_class_folders(tmp_path / "data", n_all=6, n_hem=5)
    S.seed_split_folders(data, tmp_path / "out", mode=mode, progress=False)
    some = next((tmp_path / "out" / "train" / "all").iterdir())
    if mode == "symlink":
        assert some.is_symlink() and some.resolve().parent == (data / "all").resolve()
    else:
        assert os.stat(some).st_ino == os.stat(data / "all" / some.name).st_ino


def test_seed_split_folders_refuses_existing_or_nested_outputs(tmp_path, reader):
    data = make_class_folders(tmp_path / "data", n_all=6, n_hem=5)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists; nothing was written"):
        S.seed_split_folders(data, tmp_path / "out", progress=False)
    assert listing(tmp_path / "out") == {"keep.txt"}
    with pytest.raises(ValueError, match="inside the dataset folder"):
        S.seed_split_folders(data, data / "split", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        S.seed_split_folders(tmp_path / "nope", tmp_path / "out2", progress=False)
    with pytest.raises(ValueError, match="split_ratio"):
        S.seed_split_folders(data, tmp_path / "out2", split_ratio=80, progress=False)
    with pytest.raises(ValueError, match="mode must be"):
        S.seed_split_folders(data, tmp_path / "out2", mode="move", progress=False)


def test_interrupted_export_leaves_nothing_that_looks_complete(tmp_path, reader, monkeypatch):
    data = make_class_folders(tmp_path / "data", n_all=6, n_hem=5)
    calls = []

    def failing_copy(src, dst):
        calls.append(src)
        if len(calls) > 3:
            raise OSError("disk full (simulated)")
        return shutil.copyfile(src, dst)

    monkeypatch.setattr(S.shutil, "copy2", failing_copy)
    with pytest.raises(OSError, match="simulated"):
        S.seed_split_folders(data, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_export_split_writes_train_val_test_folders(tmp_path, reader):
    data = make_class_folders(tmp_path / "data", n_all=12, n_hem=8)
    table = reader.index_dataset(data, progress=False).table
    split = S.subject_split(table, val_size=0.25)
    out = S.export_split(split, tmp_path / "out", progress=False)
    files = listing(tmp_path / "out")
    assert {f.split("/")[0] for f in files} == {"train", "val", "test", "manifest.csv"}
    assert len(files) == len(table) + 1
    assert S.manifest_hash(out) == S.manifest_hash(split)
    assert (out.test["source_path"].str.startswith(str(data))).all()


def test_training_rows_keep_test_sets_out():
    prelim = dict(path="/p/1.bmp", filename="1.bmp", label="all", y=1, subject="99",
                  fold="prelim_test", image=1, cell=1)
    table = make_table(extra_rows=[prelim])
    assert set(S.training_rows(table)["fold"]) == {"fold_0", "fold_1", "fold_2"}
    plain = make_table().assign(fold="unknown")
    assert len(S.training_rows(plain)) == len(plain)
