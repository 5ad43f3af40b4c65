"""Class names and the C-NMC file-name convention.

``y == 1`` means ALL (the disease, the positive class), as in the C-NMC test-label CSV.
ALL cells are named ``UID_<subject>_<image>_<cell>_all.<ext>``, normal cells
``UID_H<subject>_<image>_<cell>_hem.<ext>``. Subject ids are normalised to upper case, because
one real subject is written ``h3`` and a case-sensitive reader silently drops it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CLASSES: tuple[str, str] = ("hem", "all")
POSITIVE = "all"
CLASS_DESCRIPTIONS = {
    "all": "leukemic B-lymphoblast (Acute Lymphoblastic Leukemia)",
    "hem": "normal B cell (hematogone)",
}

_NAME = re.compile(
    r"^UID_(?P<subject>[Hh]?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<label>all|hem)\.(?P<ext>\w+)$",
    re.IGNORECASE,
)


def label_to_index(label: str) -> int:
    """'hem' -> 0, 'all' -> 1 (case-insensitive)."""
    key = label.strip().lower()
    if key not in CLASSES:
        raise ValueError(f"unknown class label {label!r}: expected one of {CLASSES}")
    return CLASSES.index(key)


def index_to_label(index: int) -> str:
    return CLASSES[int(index)]


@dataclass(frozen=True)
class CellName:
    """The parts of a C-NMC cell-image file name."""

    subject: str
    image: int
    cell: int
    label: str
    ext: str


def parse_cnmc_name(filename: str) -> CellName:
    """Parse ``UID_H3_2_1_hem.bmp`` -> CellName(subject='H3', image=2, cell=1, label='hem', ...).

    Raises ValueError (naming the file and the expected pattern) when the name does not fit,
    or when the ``H`` prefix disagrees with the class (normal subjects carry ``H``).
    """
    match = _NAME.match(filename)
    if not match:
        raise ValueError(
            f"{filename!r} is not a C-NMC cell name: expected "
            "UID_<subject>_<image>_<cell>_<all|hem>.<ext>, e.g. UID_57_29_1_all.bmp"
        )
    subject = match["subject"].upper()
    label = match["label"].lower()
    if (label == "hem") != subject.startswith("H"):
        raise ValueError(
            f"{filename!r}: subject {subject!r} does not match class {label!r} "
            "(normal 'hem' subjects are written H<number>, ALL subjects are plain numbers)"
        )
    return CellName(subject, int(match["image"]), int(match["cell"]), label, match["ext"].lower())
