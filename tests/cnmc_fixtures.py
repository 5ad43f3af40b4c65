"""Tiny fake C-NMC trees in each real layout, for tests (no real data exists on CI machines).

Every writer returns a :class:`FakeCnmc` whose ``expected`` frame says what a correct reader
must find (filename, label, subject, fold), so tests compare against it instead of hard-coding
counts. Images are small (12x12 by default), unique (no two files share bytes) and show a
coloured disc on black like the real segmented cells.

Usage from another test::

    from cnmc_fixtures import make_tcia
    fake = make_tcia(tmp_path / "cnmc")
    index = index_dataset(fake.root, progress=False)
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

#: fold -> (subject as spelled in the file names, class, number of images). ``h3`` is lower
#: case as in the real data (a case-sensitive reader drops it).
TRAIN_SUBJECTS = {
    "fold_0": [("1", "all", 3), ("2", "all", 2), ("H1", "hem", 2)],
    "fold_1": [("3", "all", 2), ("H2", "hem", 2)],
    "fold_2": [("4", "all", 2), ("h3", "hem", 3)],
}
PRELIM_SUBJECTS = [("57", "all", 2), ("H30", "hem", 2)]
N_FINAL = 2
EXPECTED_COLUMNS = ["filename", "label", "subject", "fold"]


@dataclass
class FakeCnmc:
    """A written fake tree: its root and what a reader must find in it."""

    root: Path
    expected: pd.DataFrame  # filename, label, subject (upper case), fold; sorted by filename
    n_final: int = 0


def cell_array(key: str, size: int = 12) -> np.ndarray:
    """A unique small RGB image for ``key``: a coloured disc on black, with a key-derived pixel."""
    seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    image = np.zeros((size, size, 3), np.uint8)
    image[disc] = rng.integers(60, 255, 3)
    image[0, 0] = rng.integers(0, 255, 3)  # makes every file's bytes unique
    image[0, 1] = [seed % 251, (seed >> 8) % 251, (seed >> 16) % 251]
    return image


def write_image(path: Path, key: str | None = None, *, size: int = 12, fmt: str | None = None) -> Path:
    """Write a small unique image (format from the extension unless ``fmt``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(cell_array(key or str(path), size)).save(path, format=fmt)
    return path


def image_bytes(key: str, *, size: int = 12, fmt: str = "BMP") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(cell_array(key, size)).save(buffer, format=fmt)
    return buffer.getvalue()


def cell_names(subjects, ext: str = "bmp") -> list[tuple[str, str, str]]:
    """(file name, class, canonical subject) for a subject list like TRAIN_SUBJECTS['fold_0']."""
    names = []
    for subject, label, n in subjects:
        for i in range(n):
            image, cell = 1 + i // 2, 1 + i % 2
            names.append((f"UID_{subject}_{image}_{cell}_{label}.{ext}", label, subject.upper()))
    return names


def _expected(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=EXPECTED_COLUMNS)
    return frame.sort_values("filename").reset_index(drop=True)


def write_folds(base: Path, *, nested: bool = False, size: int = 12, ext: str = "bmp",
                subjects=None) -> list[tuple]:
    """``base/fold_N/{all,hem}/UID_*`` (or ``fold_N/fold_N/...``); returns expected rows."""
    rows = []
    for fold, spec in (subjects or TRAIN_SUBJECTS).items():
        folder = base / fold / fold if nested else base / fold
        for name, label, subject in cell_names(spec, ext):
            write_image(folder / label / name, size=size)
            rows.append((name, label, subject, fold))
    return rows


def write_prelim(parent: Path, *, size: int = 12, csv: bool = True) -> list[tuple]:
    """``C-NMC_test_prelim_phase_data/<n>.bmp`` plus the labels CSV beside it (1 = ALL)."""
    rows, csv_rows = [], []
    names = cell_names(PRELIM_SUBJECTS)
    order = names[1::2] + names[::2]  # the numbering does not follow the classes
    for number, (name, label, subject) in enumerate(order, start=1):
        write_image(parent / "C-NMC_test_prelim_phase_data" / f"{number}.bmp", key=name, size=size)
        csv_rows.append((name, f"{number}.bmp", int(label == "all")))
        rows.append((name, label, subject, "prelim_test"))
    if csv:
        pd.DataFrame(csv_rows, columns=["Patient_ID", "new_names", "labels"]).to_csv(
            parent / "C-NMC_test_prelim_phase_data_labels.csv", index=False
        )
    return rows


def write_final(folder: Path, *, size: int = 16, n: int = N_FINAL) -> int:
    """Final-test images (numbered, unlabelled); 600/450 times the training size like the real ones."""
    for number in range(1, n + 1):
        write_image(folder / f"{number}.bmp", key=f"final-{number}", size=size)
    return n


def make_tcia(root: Path, *, nested: bool = False, prelim: bool = True, final: bool = True,
              size: int = 12, ext: str = "bmp") -> FakeCnmc:
    """The TCIA layout: C-NMC_training_data/fold_N/{all,hem}, prelim folder + CSV, final folder."""
    root = Path(root)
    rows = write_folds(root / "C-NMC_training_data", nested=nested, size=size, ext=ext)
    if prelim:
        rows += write_prelim(root, size=size)
    n_final = write_final(root / "C-NMC_test_final_phase_data", size=size * 4 // 3) if final else 0
    return FakeCnmc(root, _expected(rows), n_final)


def make_kaggle(root: Path, *, size: int = 12) -> FakeCnmc:
    """The Kaggle layout: C-NMC_Leukemia/{training_data/fold_N, validation_data, testing_data}."""
    base = Path(root) / "C-NMC_Leukemia"
    rows = write_folds(base / "training_data", size=size)
    rows += write_prelim(base / "validation_data", size=size)
    n_final = write_final(base / "testing_data" / "C-NMC_test_final_phase_data", size=size * 4 // 3)
    return FakeCnmc(Path(root), _expected(rows), n_final)


def make_class_folders(root: Path, *, size: int = 12) -> FakeCnmc:
    """A plain ``{all,hem}`` folder (what the report's splitter starts from); fold 'unknown'."""
    rows = []
    for spec in TRAIN_SUBJECTS.values():
        for name, label, subject in cell_names(spec):
            write_image(Path(root) / label / name, size=size)
            rows.append((name, label, subject, "unknown"))
    return FakeCnmc(Path(root), _expected(rows))


def make_split_output(root: Path, *, size: int = 12) -> FakeCnmc:
    """The report's splitter output: ``train/{all,hem}`` and ``validation/{all,hem}``, split by
    image so the same subjects appear on both sides (the leakage the course discusses)."""
    rows = []
    for spec in TRAIN_SUBJECTS.values():
        for i, (name, label, subject) in enumerate(cell_names(spec)):
            part = "validation" if i % 2 else "train"
            write_image(Path(root) / part / label / name, size=size)
            rows.append((name, label, subject, part))
    return FakeCnmc(Path(root), _expected(rows))


def found(table: pd.DataFrame) -> pd.DataFrame:
    """The comparable part of an index table (same columns and order as ``expected``)."""
    return table[EXPECTED_COLUMNS].sort_values("filename").reset_index(drop=True)
