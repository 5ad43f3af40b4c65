"""Train / validation / test splits of a dataset table, and the report's folder splitter.

Every splitter returns a :class:`Split` (three DataFrames with the index table's columns plus how
they were made), so training, evaluation and the book treat all splits alike.

* :func:`random_image_split` is the 2019 report's algorithm, exactly: per class, sort the file
  names, ``random.seed(seed); random.shuffle(...)``, cut at ``int(split_ratio * n)``. Because C-NMC
  has many images per subject and every subject belongs to one class, this puts cells of the same
  person on both sides, and the test score rewards recognising the person.
* :func:`seed_split_folders` is the report's ``train_validation_split`` on folders, made safe: it
  copies or links (never moves), refuses an existing output folder, and appears only when complete.
* :func:`subject_split` is the right way for new patients: whole subjects go to one side.
* :func:`fold_split` uses the organisers' subject-disjoint folds.
* :func:`manifest_hash` fingerprints a split independently of where the files live.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from allnet_lib.labels import CLASSES, label_to_index, parse_cnmc_name

PARTS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "filename", "label", "subject", "fold", "part")
MANIFEST_NAME = "manifest.csv"
REPORT_FOLDERS = {"train": "train", "val": "val", "test": "validation"}  # the report's names
_REQUIRED = ("path", "filename", "label", "subject")
_N_TRIALS = 200  # random greedy fills tried per class by subject_split
_TOLERANCE = 0.01  # ... of which the first within 1% of the class's images of the best is kept


# --------------------------------------------------------------------------------------------
# the Split object
# --------------------------------------------------------------------------------------------
@dataclass
class Split:
    """Three tables (``val`` may be empty) and the recipe that made them.

    ``method`` is ``"image"``, ``"subject"``, ``"fold"`` or ``"manifest"``; ``params`` holds the
    arguments, so that :attr:`name` and a run folder say which split a model was trained on.
    """

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    method: str
    seed: int | None = None
    params: dict = field(default_factory=dict)

    def parts(self) -> dict[str, pd.DataFrame]:
        """The three tables by part name, in the order train, val, test."""
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def name(self) -> str:
        """A short, file-system-safe id, e.g. ``subject-s0-t20`` or ``fold-t2-v1``."""
        p = self.params
        if self.method == "fold":
            text = "fold-t" + "+".join(_short_fold(f) for f in p.get("test_folds", ()))
            if p.get("val_folds"):
                text += "-v" + "+".join(_short_fold(f) for f in p["val_folds"])
            return text
        if self.method == "manifest":
            return str(p.get("name", "manifest"))
        text = f"{self.method}-s{self.seed}-t{_percent(p.get('test_size', 0))}"
        if p.get("val_size"):
            text += f"-v{_percent(p['val_size'])}"
        return text

    def manifest(self) -> pd.DataFrame:
        """One row per image: path, filename, label, subject, fold, part (train/val/test)."""
        frames = []
        for part, table in self.parts().items():
            frame = pd.DataFrame({col: _column(table, col) for col in MANIFEST_COLUMNS[:-1]})
            frame["part"] = part
            frames.append(frame)
        out = pd.concat(frames, ignore_index=True)
        return out.astype({c: str for c in MANIFEST_COLUMNS}).reset_index(drop=True)

    def write_manifest(self, path) -> Path:
        """Write :meth:`manifest` as CSV; an identical existing file is left as is, a different
        one is never overwritten (a run folder may already point at it)."""
        path = Path(path).expanduser()
        text = self.manifest().to_csv(index=False, lineterminator="\n")
        if path.exists():
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                return path
            raise FileExistsError(
                f"{path} already exists and holds a different split manifest; it was left "
                "untouched. Choose another file name, or delete that file yourself if it is no "
                "longer needed."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path

    def summary(self) -> pd.DataFrame:
        """Images and subjects per part and class, the share of images, and a total row."""
        rows = {}
        for part, table in list(self.parts().items()) + [("total", self._all())]:
            if part == "val" and table.empty:
                continue
            row = {}
            for label in ("all", "hem"):
                row[f"images_{label}"] = int((_column(table, "label") == label).sum())
            for label in ("all", "hem"):
                sub = _column(table, "subject")[_column(table, "label") == label]
                row[f"subjects_{label}"] = sub.nunique()
            row["images"] = len(table)
            row["subjects"] = _column(table, "subject").nunique()
            rows[part] = row
        out = pd.DataFrame.from_dict(rows, orient="index")
        total = max(int(out.loc["total", "images"]), 1)
        out["fraction"] = (out["images"] / total).round(3)
        out.index.name = "part"
        return out

    def subject_overlap(self) -> set[str]:
        """Subjects with images on more than one side (empty for a subject-level split)."""
        seen: dict[str, int] = {}
        for table in self.parts().values():
            for subject in set(_column(table, "subject")):
                seen[subject] = seen.get(subject, 0) + 1
        return {s for s, n in seen.items() if n > 1}

    def _all(self) -> pd.DataFrame:
        return pd.concat(list(self.parts().values()), ignore_index=True)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.parts().items())
        return f"Split({self.name!r}, {sizes})"


# --------------------------------------------------------------------------------------------
# splitters on a table
# --------------------------------------------------------------------------------------------
def random_image_split(table: pd.DataFrame, *, test_size: float = 0.2, val_size: float = 0.0,
                       seed: int = 120) -> Split:
    """The report's split, on a table: per class, sort the file names, shuffle them with
    ``random.seed(seed)``, and cut at ``int((1 - test_size) * n)``.

    With ``val_size`` the validation images are the last ``val_size`` of the training part, so
    the test part is exactly the report's whatever ``val_size`` is. Subjects end up on several
    sides: this split measures how well a model recognises people it has already seen.
    """
    check_sizes(test_size, val_size)
    return _image_split(_checked(table), 1 - test_size, val_size, seed, test_size)


def subject_split(table: pd.DataFrame, *, test_size: float = 0.2, val_size: float = 0.0,
                  seed: int = 0) -> Split:
    """Whole subjects to one side, stratified by class, for estimating performance on new people.

    For each class separately, subjects are assigned so that the test (and validation) part holds
    as close to ``test_size`` (``val_size``) of that class's images as subject sizes allow, with at
    least one subject of that class on every side. The seed picks among near-equal assignments:
    ``_N_TRIALS`` random subject orders are filled greedily, and the first whose total miss is
    within 1% of the class's images (at least one image) of the best miss is kept.
    """
    check_sizes(test_size, val_size)
    table = _checked(table)
    _check_one_class_per_subject(table)
    rng = random.Random(seed)
    sides: dict[str, list[str]] = {part: [] for part in PARTS}
    for label in _labels_present(table):
        counts = table.loc[table["label"] == label].groupby("subject").size().sort_index()
        assigned = _assign_subjects(counts, label, test_size, val_size, rng)
        for part in PARTS:
            sides[part] += assigned[part]
    parts = {part: _rows(table, table["subject"].isin(sides[part])) for part in PARTS}
    split = Split(parts["train"], parts["val"], parts["test"], "subject", seed,
                  {"test_size": test_size, "val_size": val_size})
    assert_subject_disjoint(split)
    return split


def fold_split(table: pd.DataFrame, *, test_folds: Iterable[str] = ("fold_2",),
               val_folds: Iterable[str] = ()) -> Split:
    """The organisers' subject-disjoint folds: ``test_folds`` and ``val_folds`` as named, every
    other training fold (``fold_*``) to train. Preliminary/final test rows are never trained on."""
    test_folds, val_folds = _fold_names(test_folds), _fold_names(val_folds)
    table = _checked(table, need=("fold",))
    folds = table["fold"].astype(str)
    known = sorted(set(folds))
    if not test_folds:
        raise ValueError("fold_split needs at least one test fold, e.g. test_folds=('fold_2',)")
    for name in test_folds + val_folds:
        if name not in known:
            raise ValueError(f"fold {name!r} is not in the table; folds present: {known}")
    both = set(test_folds) & set(val_folds)
    if both:
        raise ValueError(f"folds {sorted(both)} are named as both test and validation folds")
    is_train = folds.str.startswith("fold_") & ~folds.isin(test_folds + val_folds)
    if not is_train.any():
        raise ValueError(f"no training fold left: the table has folds {known} and all of the "
                         "training folds were named as test or validation folds")
    parts = {"train": is_train, "val": folds.isin(val_folds), "test": folds.isin(test_folds)}
    tables = {}
    for part, mask in parts.items():
        tables[part] = _rows(table, mask)
        _check_labelled(tables[part], f"the {part} folds")
    split = Split(tables["train"], tables["val"], tables["test"], "fold", None,
                  {"test_folds": test_folds, "val_folds": val_folds})
    assert_subject_disjoint(split)
    return split


# ----------------------------------------------------------------------------------------------
# the registry: splits by name (the CLI, compare and the chapters make them here)
# ----------------------------------------------------------------------------------------------

#: The splits the CLI, :mod:`allnet_lib.compare` and the chapters make by name.
SPLIT_METHODS = ("subject", "image", "fold")
#: Each method's default seed: 120 is the report's for its random image split; fold splits have none.
DEFAULT_SEEDS = {"subject": 0, "image": 120, "fold": None}
DEFAULT_TEST_SIZE = 0.2
DEFAULT_VAL_SIZE = 0.0
DEFAULT_TEST_FOLDS = ("fold_2",)
#: The split the book's experiments (chapters 5-9) and the experiment commands (``allnet train``,
#: ``compare``) train on unless told otherwise: whole subjects, 20 % test, 20 % validation (which
#: picks the best epoch), seed 0. One name, one split, one run folder for both.
EXPERIMENT_SPLIT = {"method": "subject", "seed": 0, "test_size": 0.2, "val_size": 0.2}


def experiment_split(table: pd.DataFrame, *, seed: int = EXPERIMENT_SPLIT["seed"],
                     test_size: float = EXPERIMENT_SPLIT["test_size"],
                     val_size: float = EXPERIMENT_SPLIT["val_size"]) -> Split:
    """The split chapters 5-9 train on (:data:`EXPERIMENT_SPLIT`), for the chapters and for
    anything that reads their run folders (e.g. ``stored_runs``)."""
    return make_split(table, EXPERIMENT_SPLIT["method"], seed=seed, test_size=test_size, val_size=val_size)


def default_seed(method: str) -> int | None:
    """The seed a split ``method`` uses when none is given (see :data:`DEFAULT_SEEDS`)."""
    _check_method(method)
    return DEFAULT_SEEDS[method]


def make_split(table: pd.DataFrame, method: str, *, seed: int | None = None,
               test_size: float = DEFAULT_TEST_SIZE, val_size: float = DEFAULT_VAL_SIZE,
               test_folds: Iterable[str] = DEFAULT_TEST_FOLDS, val_folds: Iterable[str] = ()) -> Split:
    """The split called ``method``, the same for every caller (CLI, compare, chapters):

    * ``subject``: :func:`subject_split`; ``image``: :func:`random_image_split` (the report's), both
      of the official training folds only when the table has them (:func:`training_rows`: the
      preliminary and final test sets stay untouched);
    * ``fold``: :func:`fold_split` (``test_folds``, ``val_folds``; sizes and seed do not apply).

    ``seed=None`` takes the method's :data:`DEFAULT_SEEDS`. ``make_split(table, **split_settings(s))``
    makes ``s`` again from the same data.
    """
    _check_method(method)
    if method == "fold":
        return fold_split(table, test_folds=test_folds, val_folds=val_folds)
    seed = DEFAULT_SEEDS[method] if seed is None else int(seed)
    splitter = subject_split if method == "subject" else random_image_split
    return splitter(training_rows(table), test_size=test_size, val_size=val_size, seed=seed)


def split_settings(split: Split) -> dict:
    """What :func:`make_split` needs to make ``split`` again (kept in a run's ``config.json``)."""
    params = {key: list(value) if isinstance(value, (tuple, list)) else value
              for key, value in split.params.items()}
    return {"method": split.method, "seed": split.seed, **params}


def _check_method(method: str) -> None:
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; use one of {', '.join(SPLIT_METHODS)}")


def manifest_hash(table_or_split) -> str:
    """sha256 over the sorted (filename, label, part) triples: the same split gives the same hash
    on any machine, wherever the files are (paths are left out on purpose).

    A table without a ``part`` column is hashed with an empty part."""
    frame = table_or_split.manifest() if isinstance(table_or_split, Split) else table_or_split
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"manifest_hash needs a Split or a DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("filename", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest_hash: the table has no column(s) {missing}")
    parts = frame["part"] if "part" in frame.columns else pd.Series("", index=frame.index)
    lines = sorted(f"{f}\t{lab}\t{p}" for f, lab, p in
                   zip(frame["filename"].astype(str), frame["label"].astype(str), parts.astype(str)))
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def training_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows to split into train/val/test: the official training folds (``fold_*``) when the
    table has them (the preliminary and final test sets stay for testing), otherwise every
    labelled row (a plain ``{all,hem}`` folder)."""
    if "fold" in table.columns:
        is_training = table["fold"].astype(str).str.startswith("fold_")
        if is_training.any():
            return table[is_training].reset_index(drop=True)
    return table[table["label"].isin(CLASSES)].reset_index(drop=True)


#: Share of training images moved to validation (whole subjects) when a split has none.
CARVED_VAL_SIZE = 0.2


def training_parts(split, profile, notes: list | None = None):
    """(train, val, where val came from): ``split.val``, or carved from train by subject when
    empty; then at most ``profile.max_train_images`` training images (stratified by class)."""
    notes = notes if notes is not None else []
    train, val = split.train, split.val
    _check_part(train, "training")
    if val is None or len(val) == 0:
        train, val = carve_validation(train, seed=profile.seed)
        source = f"carved from train ({CARVED_VAL_SIZE:.0%} of images, whole subjects)"
        notes.append(f"split {split.name!r} has no validation part: {len(val)} images of "
                     f"{val['subject'].nunique()} training subjects are used to pick the best "
                     "epoch instead (never the test set)")
    else:
        source = "split.val"
    if profile.max_train_images and len(train) > profile.max_train_images:
        notes.append(f"training on {profile.max_train_images} of {len(train)} training images "
                     f"(profile {profile.name!r}, max_train_images)")
        train = stratified_sample(train, profile.max_train_images, seed=profile.seed)
    return train.reset_index(drop=True), val.reset_index(drop=True), source


def carve_validation(train: pd.DataFrame, *, seed: int = 0):
    """Move whole subjects (about 20% of images, both classes) from train to validation."""
    try:
        carved = subject_split(train, test_size=CARVED_VAL_SIZE, seed=seed)
    except ValueError as error:
        raise ValueError(f"the split has no validation part, and none could be carved out of its "
                         f"training part ({error}). Make a split with val_size > 0, e.g. "
                         "subject_split(table, test_size=0.2, val_size=0.15).") from error
    return carved.train, carved.test


def stratified_sample(table: pd.DataFrame, n: int, *, seed: int = 0) -> pd.DataFrame:
    """``n`` rows keeping the class shares (largest remainder), reproducible from ``seed``."""
    counts = table["label"].value_counts().sort_index()
    share = counts / counts.sum() * n
    take = np.floor(share).astype(int)
    for label in (share - take).sort_values(ascending=False).index[: n - take.sum()]:
        take[label] += 1
    parts = [table[table["label"] == label].sample(int(k), random_state=seed)
             for label, k in take.items() if k > 0]
    return pd.concat(parts).sort_index()


def _check_part(table, what: str) -> None:
    if table is None or len(table) == 0:
        raise ValueError(f"the split's {what} part is empty; nothing to train on")
    missing = [c for c in ("path", "label", "subject") if c not in table.columns]
    if missing:
        raise ValueError(f"the {what} table has no column(s) {missing}; use tables made by "
                         "allnet_lib.reader.index_dataset and allnet_lib.split")
    labels = set(table["label"])
    if not labels <= set(CLASSES):
        raise ValueError(f"the {what} part has unknown labels {sorted(labels - set(CLASSES))}")


def assert_subject_disjoint(split: Split) -> None:
    """Raise AssertionError naming the subjects found on more than one side."""
    overlap = split.subject_overlap()
    if overlap:
        raise AssertionError(
            f"split {split.name!r} is not subject-disjoint: {len(overlap)} subject(s) on more "
            f"than one side: {sorted(overlap)[:20]}"
        )


def read_manifest(path) -> Split:
    """Rebuild a Split from a manifest CSV written by :meth:`Split.write_manifest`.

    Integer label ``y`` and, for C-NMC names, ``image`` and ``cell`` are recomputed, so the
    result can go straight to training and evaluation."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"split manifest {path} does not exist; write one with "
                                "`allnet split DATA --manifest FILE`")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} is not a split manifest: column(s) {missing} are missing "
                         f"(expected {list(MANIFEST_COLUMNS)})")
    bad = sorted(set(frame["part"]) - set(PARTS))
    if bad:
        raise ValueError(f"{path}: unknown part(s) {bad}; expected {list(PARTS)}")
    frame = _with_derived_columns(_checked(frame))
    parts = {p: frame[frame["part"] == p].drop(columns="part").reset_index(drop=True)
             for p in PARTS}
    return Split(parts["train"], parts["val"], parts["test"], "manifest", None,
                 {"name": path.stem, "manifest": str(path)})


def _with_derived_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``y``, ``image`` and ``cell`` (from the C-NMC file name; -1 when it has another form)
    so that a table read back from a manifest has the index table's columns."""
    frame = frame.copy()
    frame["y"] = [label_to_index(label) for label in frame["label"]]
    images, cells = [], []
    for filename in frame["filename"]:
        try:
            parsed = parse_cnmc_name(filename)
            images.append(parsed.image)
            cells.append(parsed.cell)
        except ValueError:  # e.g. the numbered preliminary-test files, "1.bmp"
            images.append(-1)
            cells.append(-1)
    frame["image"], frame["cell"] = images, cells
    return frame


# --------------------------------------------------------------------------------------------
# splits on folders
# --------------------------------------------------------------------------------------------
def seed_split_folders(dataset_path, output_path, *, split_ratio: float = 0.8, seed: int = 120,
                       mode: str = "copy", progress: bool = True) -> Split:
    """The report's ``train_validation_split`` (Figure 9), faithfully but safely.

    Reads ``dataset_path`` (a plain ``{all,hem}`` folder or any layout :mod:`allnet_lib.reader`
    understands), splits every class as the report did, and writes
    ``output_path/train/<class>/`` and ``output_path/validation/<class>/`` plus ``manifest.csv``.
    Files are copied (``mode="copy"``) or linked (``"link"`` hard links, ``"symlink"``), never
    moved. An existing ``output_path`` is refused, and the folder appears only once complete.
    The returned Split points at the written files (``source_path`` keeps the originals).

    Two differences from the report's code, both deliberate: when the folder has the official
    training folds only those are split (the report split the training set; test sets stay out),
    and files the reader cannot use (non-images, OS litter) are left out with a warning, where
    the report's ``os.listdir`` would have shuffled them in too.
    """
    if not 0 < split_ratio < 1:
        raise ValueError(f"split_ratio must be between 0 and 1 (the training share, e.g. 0.8), "
                         f"got {split_ratio!r}")
    dataset_path = Path(dataset_path).expanduser()
    output_path = Path(output_path).expanduser()
    check_output_folder(dataset_path, output_path)
    table = training_rows(_index_folder(dataset_path, progress=progress))
    split = _image_split(_checked(table), split_ratio, 0.0, seed, round(1 - split_ratio, 10))
    split.params["split_ratio"] = split_ratio
    return export_split(split, output_path, mode=mode, folders=REPORT_FOLDERS, progress=progress)


def export_split(split: Split, output_path, *, mode: str = "copy",
                 folders: Mapping[str, str] | None = None, progress: bool = True) -> Split:
    """Write a split as class folders, ``output_path/<part>/<class>/<file>``, and its manifest.

    For tools that want folders (``image_dataset_from_directory``, Augmentor). ``folders`` renames
    the parts (the report's layout uses ``validation`` for its test part); an empty part gets no
    folder. Written into a temporary sibling and renamed at the end, so an interrupted export
    never looks complete; sources are copied or linked, never moved.
    """
    if mode not in ("copy", "link", "symlink"):
        raise ValueError(f"mode must be 'copy', 'link' or 'symlink', got {mode!r}")
    output_path = Path(output_path).expanduser().absolute()
    if output_path.exists():
        raise FileExistsError(_exists_message(output_path))
    folders = {**{p: p for p in PARTS}, **dict(folders or {})}
    plan = _export_plan(split, output_path, folders)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        _write_files(plan, output_path, tmp, mode, progress)
        result = _relocated(split, plan, output_path, mode)
        result.write_manifest(tmp / MANIFEST_NAME)
        os.rename(tmp, output_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # only our own half-written folder
        raise
    return result


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _image_split(table: pd.DataFrame, split_ratio: float, val_size: float, seed: int,
                 test_size: float) -> Split:
    """The report's per-class sort, seed, shuffle and cut; ``split_ratio`` is the train share
    (before validation is taken from the end of it), used as given to keep the cut exact."""
    sides: dict[str, list] = {part: [] for part in PARTS}
    for label in _labels_present(table):
        rows = table.loc[table["label"] == label]
        order = sorted(zip(rows["filename"].astype(str), rows["path"].astype(str), rows.index))
        keys = [key for *_, key in order]
        # random.Random(seed) is the same generator as the report's random.seed(seed), without
        # touching the global one that other code may rely on
        random.Random(seed).shuffle(keys)
        n = len(keys)
        cut = int(split_ratio * n)
        cut_val = int((split_ratio - val_size) * n) if val_size else cut
        if cut_val < 1 or cut >= n or (val_size and cut_val >= cut):
            raise ValueError(
                f"class {label!r} has only {n} image(s): too few to cut into the requested "
                "parts (each part needs at least one image of every class); use more images or "
                "other sizes"
            )
        sides["train"] += keys[:cut_val]
        sides["val"] += keys[cut_val:cut]
        sides["test"] += keys[cut:]
    parts = {part: table.loc[sides[part]].reset_index(drop=True) for part in PARTS}
    return Split(parts["train"], parts["val"], parts["test"], "image", seed,
                 {"test_size": test_size, "val_size": val_size})


def _assign_subjects(counts: pd.Series, label: str, test_size: float, val_size: float,
                     rng: random.Random) -> dict[str, list[str]]:
    """Pick test and validation subjects of one class whose image counts come closest to the
    targets: the best of ``_N_TRIALS`` greedy fills over random subject orders."""
    wanted = [("test", test_size)] + ([("val", val_size)] if val_size else [])
    if len(counts) < len(wanted) + 1:
        raise ValueError(
            f"class {label!r} has {len(counts)} subject(s) ({', '.join(counts.index)}); a "
            f"subject-level split into {len(wanted) + 1} parts needs at least {len(wanted) + 1} "
            "subjects of every class. Use val_size=0, another dataset with more subjects, or "
            "fold_split."
        )
    total = int(counts.sum())
    subjects = list(counts.index)
    counts = {subject: int(n) for subject, n in counts.items()}  # dict lookups: 200 trials fast
    trials = []
    for _ in range(_N_TRIALS):
        order = subjects[:]
        rng.shuffle(order)
        trials.append(_greedy_fill(order, counts, wanted, total))
    best_error = min(error for _, error in trials)
    tolerance = max(1.0, _TOLERANCE * total)
    # the first fill (in seeded order) that is about as good as the best: the seed matters
    return next(assigned for assigned, error in trials if error <= best_error + tolerance)


def _greedy_fill(order: list[str], counts: dict[str, int], wanted, total: int):
    """Fill each requested part in turn from ``order``, taking a subject when it brings the
    part's image count nearer its target; always one subject per part and one left for train."""
    remaining = order[:]
    assigned = {part: [] for part in PARTS}
    error = 0.0
    for index, (part, size) in enumerate(wanted):
        target = size * total
        reserve = len(wanted) - index  # later parts plus train each need a subject
        got = 0
        for subject in list(remaining):
            if len(remaining) <= reserve:
                break
            n = counts[subject]
            if not assigned[part] or abs(got + n - target) < abs(got - target):
                assigned[part].append(subject)
                remaining.remove(subject)
                got += n
        error += abs(got - target)
    assigned["train"] = remaining
    return assigned, error


def check_sizes(test_size: float, val_size: float) -> None:
    """Sizes are fractions of the images: test in (0, 1), val in [0, 1), together below 1."""
    for name, value, low_ok in (("test_size", test_size, False), ("val_size", val_size, True)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
        if not ((0 <= value if low_ok else 0 < value) and value < 1):
            rng = "[0, 1)" if low_ok else "(0, 1)"
            raise ValueError(f"{name} must be a fraction of the images in {rng}, e.g. 0.2, "
                             f"got {value!r}")
    if test_size + val_size >= 1:
        raise ValueError(f"test_size + val_size must be below 1 so that images are left to "
                         f"train on, got {test_size} + {val_size}")


def _checked(table, need: tuple[str, ...] = ()) -> pd.DataFrame:
    """A clean copy of an index table: required columns present, only known labels."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a dataset table (pandas DataFrame), got {type(table).__name__};"
                        " make one with allnet_lib.reader.index_dataset(root).table")
    missing = [c for c in _REQUIRED + tuple(need) if c not in table.columns]
    if missing:
        raise ValueError(f"the dataset table has no column(s) {missing}; expected the columns of "
                         "allnet_lib.reader.index_dataset(...).table")
    if table.empty:
        raise ValueError("the dataset table is empty: no images to split. Check the data folder "
                         "with `allnet index DATA`.")
    table = table.reset_index(drop=True).copy()
    _check_labelled(table, "the table")
    table["subject"] = table["subject"].astype(str)
    return table


def _check_labelled(table: pd.DataFrame, where: str) -> None:
    """Every row has a class label (final-test images, for one, have none)."""
    bad = ~table["label"].isin(CLASSES)
    if bad.any():
        examples = table.loc[bad, "filename"].astype(str).head(3).tolist()
        raise ValueError(
            f"{int(bad.sum())} image(s) in {where} have no class label {list(CLASSES)} "
            f"(e.g. {examples}); unlabelled images (such as the final test set) cannot be "
            "split for training: leave them out of the table"
        )


def _check_one_class_per_subject(table: pd.DataFrame) -> None:
    """In C-NMC every subject has one class; a subject with both means mislabelled files."""
    classes = table.groupby("subject")["label"].nunique()
    mixed = sorted(classes[classes > 1].index)
    if mixed:
        raise ValueError(f"subject(s) {mixed[:10]} have images of both classes; every C-NMC "
                         "subject belongs to one class. Check those files' names and folders.")


def _labels_present(table: pd.DataFrame) -> list[str]:
    """Class labels in the table, in the fixed order of CLASSES (so results never depend on
    the order files were listed)."""
    present = set(table["label"])
    return [label for label in CLASSES if label in present]


def _rows(table: pd.DataFrame, mask) -> pd.DataFrame:
    return table.loc[mask].reset_index(drop=True)


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    """A column as strings, empty where the table lacks it (e.g. ``fold`` of a plain folder)."""
    if name in table.columns:
        return table[name].astype(object).where(table[name].notna(), "").astype(str)
    return pd.Series([""] * len(table), index=table.index, dtype=object)


def _fold_names(folds) -> list[str]:
    if isinstance(folds, str):
        folds = [folds]
    return [str(f) for f in folds]


def _short_fold(fold: str) -> str:
    return fold[len("fold_"):] if fold.startswith("fold_") else fold


def _percent(value: float) -> str:
    return f"{value * 100:g}"


def _exists_message(output_path: Path) -> str:
    return (f"{output_path} already exists; nothing was written. A split is written to a new "
            "folder only: choose another output folder, or delete that one yourself first.")


def check_output_folder(dataset_path, output_path) -> None:
    """Refuse outputs that exist or lie inside the dataset (a later read would count them)."""
    dataset_path, output_path = Path(dataset_path).expanduser(), Path(output_path).expanduser()
    if not dataset_path.is_dir():
        raise FileNotFoundError(f"dataset folder {dataset_path} does not exist or is not a "
                                "folder; give the folder that holds the class folders")
    if output_path.exists():
        raise FileExistsError(_exists_message(output_path))
    src, out = dataset_path.resolve(), output_path.resolve()
    if out == src or src in out.parents:
        raise ValueError(f"output folder {output_path} is inside the dataset folder "
                         f"{dataset_path}; reading the dataset again would count the split "
                         "copies as more images. Choose a folder outside it.")


def _index_folder(dataset_path: Path, *, progress: bool) -> pd.DataFrame:
    """The table of a data folder, via the reader; its problems are warned about, not hidden."""
    from allnet_lib.reader import index_dataset

    index = index_dataset(dataset_path, progress=progress)
    if len(index.problems):
        examples = index.problems.head(3).to_dict("records")
        warnings.warn(f"{len(index.problems)} file(s) in {dataset_path} were not used "
                      f"(e.g. {examples}); see `allnet index {dataset_path}`", stacklevel=3)
    return index.table


def _export_plan(split: Split, output_path: Path, folders: Mapping[str, str]) -> dict:
    """part -> list of (row index, source, relative destination); refuses name clashes."""
    plan = {}
    for part, table in split.parts().items():
        items, seen = [], {}
        for index, path, label, filename in zip(table.index, table["path"].astype(str),
                                                table["label"], table["filename"].astype(str)):
            rel = Path(folders[part]) / str(label) / filename
            if rel in seen:
                raise ValueError(f"two images would both be written to {output_path / rel}: "
                                 f"{seen[rel]} and {path}; file names must be unique "
                                 "within a class")
            seen[rel] = path
            items.append((index, Path(path), rel))
        plan[part] = items
    return plan


def _write_files(plan: dict, output_path: Path, tmp: Path, mode: str, progress: bool) -> None:
    """Copy or link every planned file into ``tmp`` (symlinks point at absolute sources)."""
    from tqdm.auto import tqdm

    jobs = [item for items in plan.values() for item in items]
    tmp.mkdir(parents=True)
    for _, source, rel in tqdm(jobs, desc=f"{mode} -> {output_path.name}", unit="file",
                               disable=not progress):
        if not source.is_file():
            raise FileNotFoundError(f"{source} is listed in the split but is not a file; "
                                    "re-index the dataset (`allnet index DATA`)")
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if mode == "copy":
            shutil.copy2(source, dest)
        elif mode == "symlink":
            os.symlink(source.resolve(), dest)
        else:
            try:
                os.link(source, dest)
            except OSError as error:
                raise OSError(f"cannot hard-link {source} into {output_path.parent} ({error}); "
                              "they are probably on different disks: use mode='copy' or "
                              "'symlink'") from error


def _relocated(split: Split, plan: dict, output_path: Path, mode: str) -> Split:
    """The same split with ``path`` pointing at the exported files (originals in source_path)."""
    parts = {}
    for part, table in split.parts().items():
        table = table.copy()
        table["source_path"] = table["path"].astype(str)
        table["path"] = [str(output_path / rel) for _, _, rel in plan[part]]
        parts[part] = table
    params = {**split.params, "mode": mode, "output": str(output_path)}
    return Split(parts["train"], parts["val"], parts["test"], split.method, split.seed, params)
