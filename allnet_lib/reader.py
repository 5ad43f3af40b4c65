"""Index a C-NMC 2019 folder, whatever layout it came in, into one table.

The same data circulates in several layouts (see ``data_scripts/README.md``):

- TCIA: ``C-NMC_training_data/fold_N/{all,hem}/UID_*.bmp``; some copies nest ``fold_0/fold_0/all``.
- Kaggle: ``training_data/fold_N/{all,hem}``, ``validation_data/`` (the preliminary test with its
  label CSV), ``testing_data/`` (the final test).
- Preliminary test: ``C-NMC_test_prelim_phase_data/1.bmp ...`` plus
  ``C-NMC_test_prelim_phase_data_labels.csv`` (``Patient_ID,new_names,labels``; 1 = ALL), which
  maps ``1.bmp`` back to its real name, e.g. ``UID_57_29_1_all.bmp``.
- Final test: ``C-NMC_test_final_phase_data/*.bmp``, labels never published.
- A plain ``{all,hem}`` folder, or the report's splitter output ``train/{all,hem}``,
  ``validation/{all,hem}``.

:func:`index_dataset` walks all of them and returns a :class:`DatasetIndex`: the image table
(columns of DESIGN.md: path, filename, label, y, subject, fold, image, cell) and a ``problems``
table listing every file it could not use and why. Nothing is dropped silently, because a
reader that quietly skips files (one real subject is written ``h3``) changes the dataset.

Fold values: ``fold_0``..``fold_2`` from the nearest ``fold_N`` folder; ``prelim_test``; for
other layouts the name of the folder holding the class folders (``train``, ``validation``), or
``unknown`` for class folders directly in the root (unless the root itself is ``fold_N`` or a
split part such as ``train``).

Final-test images are *not* put in ``table`` (their labels were never published, and a table
with ``y == -1`` rows would leak into splits and metrics); they are listed in
``DatasetIndex.unlabelled`` (label ``"unknown"``, y ``-1``) so a model can still predict them,
and they appear in :meth:`DatasetIndex.summary`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .imageio import CNMC_SIZE, FINAL_TEST_SIZE, ImageReadError, inspect_image, is_image_name
from .labels import CLASSES, label_to_index, parse_cnmc_name

TABLE_COLUMNS = ["path", "filename", "label", "y", "subject", "fold", "image", "cell"]
#: ``kind`` is a short category for counting: name, label-mismatch, not-image, empty-file,
#: empty-folder, labels, unlisted, missing, no-label, duplicate, unreadable, size.
PROBLEM_COLUMNS = ["path", "reason", "kind"]
CONVERSION_COLUMNS = ["path", "conversion"]
PRELIM_DIR = "C-NMC_test_prelim_phase_data"
PRELIM_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
PRELIM_COLUMNS = ("Patient_ID", "new_names", "labels")
FINAL_DIR = "C-NMC_test_final_phase_data"
FOLD_ORDER = ("fold_0", "fold_1", "fold_2", "prelim_test", "final_test")
SPLIT_PART_NAMES = ("train", "training", "validation", "val", "valid", "test", "testing")
#: Operating-system litter: counted in ``notes``, not listed as problems.
CLUTTER_NAMES = (".DS_Store", "Thumbs.db", "desktop.ini")
#: Files our own tools write beside the images (the splitter's manifest, the demo generator's record): noted, not problems.
METADATA_NAMES = ("manifest.csv", "demo_manifest.json")
SKIPPED_DIRS = ("__MACOSX", ".ipynb_checkpoints")
_FOLD = re.compile(r"^fold_?(\d+)$", re.IGNORECASE)
_LAYOUT_HELP = (
    "Expected one of: C-NMC_training_data/fold_N/{all,hem}/UID_*.bmp (TCIA), "
    "training_data/fold_N/{all,hem} (Kaggle), C-NMC_test_prelim_phase_data/ with its labels CSV, "
    "a plain folder with all/ and hem/ sub-folders, or a train/validation split folder. "
    "To get the data run `python data_scripts/fetch_cnmc.py --help`; for a small synthetic set "
    "use allnet_lib.demo.make_demo_dataset()."
)


class DatasetError(ValueError):
    """The folder holds no usable C-NMC data at all (the message says what was expected)."""


@dataclass
class DatasetIndex:
    """The result of :func:`index_dataset`: what was found, and what could not be used.

    ``table``: one row per usable labelled image (columns :data:`TABLE_COLUMNS`).
    ``problems``: ``path, reason, kind`` for every file or folder that could not be used.
    ``unlabelled``: final-test images (same columns, label ``"unknown"``, y ``-1``).
    ``normalised``: subject spellings changed to the canonical upper case -> number of images
    (e.g. ``{"h3": 36}`` on the real data). ``layouts``: the layouts recognised. ``notes``:
    other remarks (skipped OS litter, subjects found in more than one fold).
    """

    root: Path
    table: pd.DataFrame
    problems: pd.DataFrame
    unlabelled: pd.DataFrame
    normalised: dict[str, int] = field(default_factory=dict)
    layouts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: ``path, conversion``: usable images that :func:`~allnet_lib.imageio.read_image` converts to
    #: 8-bit RGB (16-bit, CMYK, alpha, grayscale, palette...); found by ``verify=True`` only.
    conversions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CONVERSION_COLUMNS))

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ok(self) -> bool:
        """True when every file found could be used."""
        return self.problems.empty

    def summary(self) -> pd.DataFrame:
        """Images and subjects per fold and class, then totals per class (fold ``"total"``)."""
        frames = [f for f in (self.table, self.unlabelled) if not f.empty]
        rows = pd.concat(frames, ignore_index=True) if frames else self.table
        out = []
        for fold in _ordered(rows["fold"].unique()):
            part = rows[rows["fold"] == fold]
            for label in _label_order(part["label"].unique()):
                cell = part[part["label"] == label]
                subjects = cell["subject"][cell["subject"] != ""].nunique()
                out.append((fold, label, len(cell), subjects))
        for label in CLASSES[::-1]:
            cell = self.table[self.table["label"] == label]
            if len(cell):
                out.append(("total", label, len(cell), cell["subject"].nunique()))
        return pd.DataFrame(out, columns=["fold", "label", "images", "subjects"])

    def report(self) -> str:
        """A short human-readable account (for the CLI and notebooks)."""
        lines = [
            f"C-NMC index of {self.root}",
            f"  layouts: {', '.join(self.layouts) or 'none recognised'}",
            f"  labelled images: {len(self.table)} "
            f"({(self.table['label'] == 'all').sum()} all, {(self.table['label'] == 'hem').sum()} hem), "
            f"subjects: {self.table['subject'].nunique()}",
        ]
        if len(self.unlabelled):
            lines.append(f"  unlabelled final-test images: {len(self.unlabelled)} (see .unlabelled)")
        if len(self.conversions):
            lines.append(f"  converted when read: {self.conversions['path'].nunique()} image(s) are not 8-bit "
                         "RGB and are converted (see .conversions; re-export them as 8-bit RGB to "
                         "see the same pixels everywhere)")
        for spelling, count in sorted(self.normalised.items()):
            lines.append(f"  subject {spelling!r} normalised to {spelling.upper()!r} ({count} images)")
        if self.problems.empty:
            lines.append("  problems: none")
        else:
            counts = self.problems["kind"].value_counts()
            lines.append(f"  problems: {len(self.problems)} files or folders could not be used:")
            lines += [f"    {kind}: {n}" for kind, n in counts.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# walking


def _ordered(folds) -> list[str]:
    """Official folds first in their order, anything else alphabetically after them."""
    known = [f for f in FOLD_ORDER if f in set(folds)]
    return known + sorted(set(folds) - set(FOLD_ORDER))


def _label_order(labels) -> list[str]:
    order = ["all", "hem", "unknown"]
    return [l for l in order if l in set(labels)] + sorted(set(labels) - set(order))


class _Collector:
    """Accumulates rows, problems and remarks while walking (keeps the walk functions small)."""

    def __init__(self, root: Path):
        self.root = root
        self.rows: list[dict] = []
        self.unlabelled: list[dict] = []
        self.problems: list[tuple[str, str, str]] = []
        self.normalised: Counter = Counter()
        self.layouts: set[str] = set()
        self.clutter = 0
        self.metadata: list[str] = []
        self.skipped_dirs: list[str] = []
        self.conversions: list[tuple[str, str]] = []

    def problem(self, path, reason: str, kind: str) -> None:
        self.problems.append((str(path), reason, kind))

    def add(self, path: Path, filename: str, fold: str, *, label: str | None = None) -> None:
        """Parse a C-NMC name and add it; ``label`` is what the folder or CSV says it is."""
        try:
            name = parse_cnmc_name(filename)
        except ValueError as error:
            self.problem(path, f"{error}. Rename the file or move it out of the dataset.", "name")
            return
        if label is not None and name.label != label:
            self.problem(
                path,
                f"the file name says {name.label!r} but its folder/label file says {label!r}: "
                "move the file to the right class folder or fix the name.",
                "label-mismatch",
            )
            return
        spelled = filename.split("_")[1]
        if spelled != name.subject:
            self.normalised[spelled] += 1
        self.rows.append(
            {
                "path": str(path),
                "filename": filename,
                "label": name.label,
                "y": label_to_index(name.label),
                "subject": name.subject,
                "fold": fold,
                "image": name.image,
                "cell": name.cell,
            }
        )


def _walk(root: Path):
    """os.walk in sorted order, skipping hidden and tool folders (they are reported in notes).

    Nothing is skipped silently: a folder that is a symbolic link (not followed, so that a link
    cannot make the index loop or count images twice) and a folder that cannot be read are
    yielded as ``"linked-dir"`` and ``"unreadable-dir"`` for the index to report."""
    unreadable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append):
        while unreadable:
            error = unreadable.pop()
            yield "unreadable-dir", Path(error.filename or dirpath), [error.strerror or str(error)]
        kept = []
        for d in sorted(dirnames):
            if d.startswith(".") or d in SKIPPED_DIRS:
                yield "skipped-dir", Path(dirpath) / d, []
            elif (Path(dirpath) / d).is_symlink():
                yield "linked-dir", Path(dirpath) / d, []
            else:
                kept.append(d)
        dirnames[:] = kept
        yield "dir", Path(dirpath), sorted(filenames)
    while unreadable:  # the root itself, or a last folder
        error = unreadable.pop()
        yield "unreadable-dir", Path(error.filename or root), [error.strerror or str(error)]


def printable_path(path) -> str:
    """``path`` as text that can be printed and written anywhere: bytes of a name that is not
    valid UTF-8 appear as ``\\xNN`` escapes instead of making a later write fail."""
    return os.fsencode(str(path)).decode("utf-8", errors="backslashreplace")


def _fold_for(class_dir: Path, root: Path) -> str:
    """Fold of the images in ``class_dir`` (see the module docstring for the rule)."""
    parent = class_dir.parent
    chain = [parent]
    while root in chain[-1].parents:  # up to and including the root
        chain.append(chain[-1].parent)
    for folder in chain:
        match = _FOLD.match(folder.name)
        if match:
            return f"fold_{int(match[1])}"
    if root in parent.parents:
        return parent.name
    return parent.name.lower() if parent.name.lower() in SPLIT_PART_NAMES else "unknown"


def _layout_for(class_dir: Path, root: Path, fold: str) -> str:
    parts = [p.lower() for p in class_dir.relative_to(root).parts[:-1]] if class_dir != root else []
    if len(parts) >= 2 and _FOLD.match(parts[-1]) and parts[-1] == parts[-2]:
        return "nested fold_N/fold_N/{all,hem}"
    if "training_data" in parts:
        return "Kaggle training_data/fold_N/{all,hem}"
    if fold.startswith("fold_"):
        return "TCIA fold_N/{all,hem}"
    if fold in SPLIT_PART_NAMES or parts and parts[-1] in SPLIT_PART_NAMES:
        return "split output train/validation/{all,hem}"
    return "plain {all,hem} class folders"


def _usable_file(col: _Collector, path: Path) -> bool:
    """Common checks for every file: a name that is not valid text, litter, non-images, zero bytes."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        col.problem(printable_path(path), "the file or folder name is not valid UTF-8 (bytes shown as \\xNN); "
                    "it cannot be stored in a table or manifest. Rename it (C-NMC names are plain "
                    "ASCII, e.g. UID_1_1_1_all.bmp).", "bad-name")
        return False
    if path.name in CLUTTER_NAMES or path.name.startswith("._"):
        col.clutter += 1
        return False
    if path.name in METADATA_NAMES:
        col.metadata.append(str(path.relative_to(col.root)) if col.root in path.parents else path.name)
        return False
    if not is_image_name(path.name):
        col.problem(path, "not an image file (expected .bmp/.png/.jpg/.tif): ignored.", "not-image")
        return False
    try:
        size = path.stat().st_size
    except OSError as error:  # a dangling link, or no permission
        col.problem(path, f"cannot be read ({error.strerror}): fix the link or the permissions.", "unreadable")
        return False
    if size == 0:
        col.problem(path, "empty file (0 bytes), probably an interrupted copy: fetch it again.", "empty-file")
        return False
    return True


def _read_class_dir(col: _Collector, folder: Path, files: list[str], subdirs: bool) -> None:
    label = folder.name.lower()
    fold = _fold_for(folder, col.root)
    if not files and not subdirs:
        col.problem(folder, f"empty class folder: no {label!r} images in it.", "empty-folder")
        return
    col.layouts.add(_layout_for(folder, col.root, fold))
    for name in files:
        path = folder / name
        if _usable_file(col, path):
            col.add(path, name, fold, label=label)


def _find_prelim_csv(folder: Path) -> Path | None:
    for candidate in (folder.parent / PRELIM_LABELS, folder / PRELIM_LABELS):
        if candidate.is_file():
            return candidate
    return None


def _load_prelim_csv(col: _Collector, csv_path: Path) -> pd.DataFrame | None:
    """The label CSV as a frame with the three expected columns, or None (a problem is added)."""
    try:
        frame = pd.read_csv(csv_path, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        col.problem(csv_path, f"cannot read the label CSV ({error}): download it again.", "labels")
        return None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in PRELIM_COLUMNS if c not in frame.columns]
    if missing:
        col.problem(
            csv_path,
            f"label CSV lacks columns {missing} (found {list(frame.columns)}; expected "
            f"{','.join(PRELIM_COLUMNS)}): download the original file again.",
            "labels",
        )
        return None
    return frame[list(PRELIM_COLUMNS)].apply(lambda s: s.str.strip())


def _read_prelim_dir(col: _Collector, folder: Path, files: list[str]) -> None:
    """Map numbered preliminary-test files back to their real names through the label CSV."""
    col.layouts.add("preliminary test + labels CSV")
    csv_path = _find_prelim_csv(folder)
    frame = _load_prelim_csv(col, csv_path) if csv_path else None
    if csv_path is None:
        col.problem(
            folder / PRELIM_LABELS,
            f"label file {PRELIM_LABELS} not found next to {folder.name}/ or inside it: the "
            "numbered test images cannot be labelled. Put the CSV from the dataset beside the folder.",
            "labels",
        )
    mapping: dict[str, tuple[str, str]] = {}
    if frame is not None:
        for original, new, value in frame.itertuples(index=False):
            if new in mapping:
                col.problem(folder / new, f"listed twice in {csv_path.name}: first row kept.", "labels")
                continue
            mapping[new] = (original, value)
    files = [name for name in files if name != PRELIM_LABELS]
    present = set(files)
    for name in files:
        path = folder / name
        if not _usable_file(col, path):
            continue
        if name in mapping:
            original, value = mapping[name]
            if value not in ("0", "1"):
                col.problem(path, f"{csv_path.name} gives label {value!r} (expected 1 = ALL, 0 = HEM).", "labels")
                continue
            col.add(path, original, "prelim_test", label=CLASSES[int(value)])
        elif name.upper().startswith("UID_"):
            col.add(path, name, "prelim_test")
        elif frame is not None:
            col.problem(path, f"not listed in {csv_path.name}: its label is unknown.", "unlisted")
        else:
            col.problem(path, "no label CSV, so its label is unknown.", "labels")
    for new in sorted(set(mapping) - present):
        col.problem(folder / new, f"listed in {csv_path.name} but the file is missing.", "missing")


def _read_final_dir(col: _Collector, folder: Path, files: list[str]) -> None:
    col.layouts.add("final test (unlabelled)")
    for name in files:
        path = folder / name
        if _usable_file(col, path):
            col.unlabelled.append(
                dict(path=str(path), filename=name, label="unknown", y=-1, subject="",
                     fold="final_test", image=-1, cell=-1)
            )


def _read_other_dir(col: _Collector, folder: Path, files: list[str]) -> None:
    """Files outside class and test folders: C-NMC names carry their label, others cannot be used."""
    for name in files:
        path = folder / name
        if name == PRELIM_LABELS and (folder / PRELIM_DIR).is_dir():
            continue  # used by the preliminary-test folder beside it
        if not _usable_file(col, path):
            continue
        if name.upper().startswith("UID_"):
            col.layouts.add("C-NMC names outside class folders")
            col.add(path, name, _fold_for(path, col.root))
        else:
            col.problem(
                path,
                "image outside any class folder (all/hem) or C-NMC test folder, and its name "
                "carries no label: move it into all/ or hem/.",
                "no-label",
            )


# ---------------------------------------------------------------------------------------------
# checks after the walk


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    frame = frame.astype({"y": "int64", "image": "int64", "cell": "int64"})
    for column in ("path", "filename", "label", "subject", "fold"):
        frame[column] = frame[column].astype(str)
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def _drop_duplicates(col: _Collector, table: pd.DataFrame) -> pd.DataFrame:
    """Keep the first copy of each cell (same subject, image, cell, class); list the others."""
    if table.empty:
        return table
    keys = zip(table["subject"], table["image"], table["cell"], table["label"])
    first: dict[tuple, str] = {}
    keep = []
    for path, k in zip(table["path"], keys):
        if k in first:
            col.problem(path, f"duplicate of {first[k]} (same cell name): remove one copy.", "duplicate")
            keep.append(False)
        else:
            first[k] = path
            keep.append(True)
    return table.loc[keep].reset_index(drop=True)


def _verify(col: _Collector, table: pd.DataFrame, unlabelled: pd.DataFrame, progress: bool):
    """Decode every image: drop unreadable ones, odd sizes and byte-identical copies."""
    from tqdm.auto import tqdm

    sizes: dict[str, tuple[int, int]] = {}
    digests: dict[str, str] = {}
    bad: set[str] = set()
    paths = list(table["path"]) + list(unlabelled["path"])
    for path in tqdm(paths, desc="verifying images", unit="img", disable=not progress):
        try:
            info = inspect_image(path)
        except (ImageReadError, OSError) as error:
            col.problem(path, str(error), "unreadable")
            bad.add(path)
            continue
        sizes[path] = (info.width, info.height)
        col.conversions += [(path, what) for what in info.conversions]
        digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()
        if digest in digests:
            col.problem(path, f"byte-identical to {digests[digest]}: remove one copy.", "duplicate")
            bad.add(path)
        else:
            digests[digest] = path
    common = Counter(sizes[p] for p in table["path"] if p in sizes).most_common(1)
    expected = common[0][0] if common else None
    for path in table["path"]:
        if path in sizes and path not in bad and sizes[path] != expected:
            w, h = sizes[path]
            col.problem(path, f"size {w}x{h} differs from the {expected[0]}x{expected[1]} of the "
                        "other images: re-export it at that size or remove it.", "size")
            bad.add(path)
    # the real final test is 600x600 against 450x450: accept that size and that ratio
    allowed = {(FINAL_TEST_SIZE, FINAL_TEST_SIZE), expected}
    if expected:
        allowed.add((expected[0] * FINAL_TEST_SIZE // CNMC_SIZE, expected[1] * FINAL_TEST_SIZE // CNMC_SIZE))
    for path in unlabelled["path"]:
        if path in sizes and path not in bad and sizes[path] not in allowed:
            w, h = sizes[path]
            col.problem(path, f"final-test image of size {w}x{h} (expected 600x600, or 4/3 of the "
                        "training size): re-export it or remove it.", "size")
            bad.add(path)
    return (table[~table["path"].isin(bad)].reset_index(drop=True),
            unlabelled[~unlabelled["path"].isin(bad)].reset_index(drop=True))


def _fold_overlap_note(table: pd.DataFrame) -> list[str]:
    folds = table.groupby("subject")["fold"].nunique()
    shared = sorted(folds[folds > 1].index)
    if not shared:
        return []
    return [f"{len(shared)} subjects have images in more than one fold/part "
            f"({', '.join(shared[:10])}{' ...' if len(shared) > 10 else ''}); the official "
            "folds are subject-disjoint, so this folder was split by image (subject leakage)."]


# ---------------------------------------------------------------------------------------------


def _check_root(root) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset folder {path} does not exist. {_LAYOUT_HELP}")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a dataset folder. {_LAYOUT_HELP}")
    return Path(os.path.abspath(path))


def index_dataset(root, *, verify: bool = False, progress: bool = True) -> DatasetIndex:
    """Walk ``root`` (any C-NMC layout, see the module docstring) and index every image.

    Without ``verify`` only names, folders and file sizes are checked (fast: no image is
    opened). With ``verify=True`` every image is decoded, so truncated or undecodable files,
    images whose size differs from the rest, and byte-identical copies become problems too.
    Raises FileNotFoundError for a missing root and :class:`DatasetError` when the folder holds
    nothing at all that looks like C-NMC data.
    """
    from tqdm.auto import tqdm

    col = _Collector(_check_root(root))
    entries = list(_walk(col.root))
    for kind, folder, files in tqdm(entries, desc="indexing folders", unit="dir", disable=not progress):
        if kind == "skipped-dir":
            col.skipped_dirs.append(folder.name)
        elif kind == "linked-dir":
            col.problem(printable_path(folder), "is a symbolic link to another folder; links are not followed "
                        "(so that nothing is counted twice). Index the folder it points to, or copy it here.",
                        "linked-folder")
        elif kind == "unreadable-dir":
            col.problem(printable_path(folder), f"folder cannot be read ({files[0]}): its images are NOT "
                        "indexed. Fix its permissions (e.g. chmod -R u+rX) and index again.", "unreadable")
        elif folder.name.lower() in CLASSES:
            has_subdirs = any(p.is_dir() for p in folder.iterdir())
            _read_class_dir(col, folder, files, has_subdirs)
        elif folder.name.lower() == PRELIM_DIR.lower():
            _read_prelim_dir(col, folder, files)
        elif folder.name.lower() == FINAL_DIR.lower():
            _read_final_dir(col, folder, files)
        else:
            _read_other_dir(col, folder, files)
    table = _drop_duplicates(col, _frame(col.rows))
    unlabelled = _frame(col.unlabelled)
    if verify:
        table, unlabelled = _verify(col, table, unlabelled, progress)
    if table.empty and unlabelled.empty and not col.problems:
        raise DatasetError(f"no C-NMC images found under {col.root}. {_LAYOUT_HELP}")
    notes = _fold_overlap_note(table)
    if col.clutter:
        notes.append(f"{col.clutter} operating-system files (.DS_Store, Thumbs.db, ._*) ignored")
    if col.metadata:
        notes.append(f"metadata files not indexed: {', '.join(col.metadata)}")
    if col.skipped_dirs:
        notes.append(f"hidden/tool folders not searched: {', '.join(sorted(set(col.skipped_dirs)))}")
    problems = pd.DataFrame(col.problems, columns=PROBLEM_COLUMNS)
    usable = set(table["path"]) | set(unlabelled["path"])
    conversions = pd.DataFrame([c for c in col.conversions if c[0] in usable], columns=CONVERSION_COLUMNS)
    return DatasetIndex(
        root=col.root,
        table=table,
        problems=problems.sort_values("path", kind="stable").reset_index(drop=True),
        unlabelled=unlabelled,
        normalised=dict(col.normalised),
        layouts=sorted(col.layouts),
        notes=notes,
        conversions=conversions,
    )
