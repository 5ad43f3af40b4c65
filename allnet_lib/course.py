"""The classroom edition (issue 12): student notebooks from the teacher's, and the teacher's guide.

The chapters are the teacher's edition. Their exercises are written with sphinx-exercise's
directives (book/CHAPTER_GUIDE.md, "Exercises"):

- an exercise is a markdown cell ``:::{exercise}`` with ``:label: ex-<chapter key>-<number>``;
- its solution is a markdown cell ``:::{solution} <label>`` (``:class: dropdown``), or, when the
  exercise has a check (:mod:`allnet_lib.exercises`), a ``{solution-start}`` cell (the text), one
  *answer cell* of code and a ``{solution-end}`` cell;
- the answer cell is an nbgrader solution cell (metadata ``nbgrader.solution``, ``grade_id`` the
  label): the teacher's code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` sets
  ``answer``, the line after them calls ``exercises.check``;
- the solution's text cell is an nbgrader "manually graded answer" (:func:`solution_text_metadata`),
  so ``nbgrader generate_assignment`` on the chapters as they are removes the text too.

:func:`student_notebook` turns that into the student's edition: solution cells removed, each
solution region replaced by ``answer = ...`` (a stub that runs; the check then says "not answered
yet" and gives the hint), outputs of answer cells cleared, everything else identical.
``allnet course student OUT`` and ``python -m allnet_lib.book_build --edition student`` use it.
"""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

from allnet_lib.messages import option
from allnet_lib.profiles import cheapest_first

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
SOLUTION_CELL = re.compile(r"\A\s*(?::{3,}|`{3,})\{solution(?:-start|-end)?\}")
EXERCISE_CELL = re.compile(r"\A\s*(?::{3,}|`{3,})\{exercise\}\s*\n\s*:label:\s*(ex-(\w+)-(\d+))", re.M)
LABEL = re.compile(r"\Aex-(\w+)-(\d+)\Z")
# what must never appear in the student edition (tests grep for it)
SOLUTION_MARKS = ("{solution}", "{solution-start}", "{solution-end}", BEGIN_SOLUTION, END_SOLUTION,
                  ":::{admonition} Solution")


def chapter_key(entry: str | Path) -> str:
    """``theory/03_backpropagation`` -> ``backpropagation``: the name :func:`exercises.check` takes."""
    return re.sub(r"^\d+_", "", Path(entry).stem)


def exercise_label(key: str, number: int) -> str:
    return f"ex-{key}-{number}"


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def is_solution_text(cell) -> bool:
    """A markdown cell that is (part of) a solution: removed from the student edition."""
    return cell.get("cell_type") == "markdown" and bool(SOLUTION_CELL.match(_source(cell)))


def is_answer_cell(cell) -> bool:
    """A code cell with an nbgrader solution region: stubbed in the student edition."""
    return cell.get("cell_type") == "code" and BEGIN_SOLUTION in _source(cell)


def answer_cell_metadata(label: str) -> dict:
    """nbgrader's metadata for an answer cell, so nbgrader accepts the teacher's notebooks as they are."""
    return {"nbgrader": {"grade": False, "grade_id": label, "locked": False, "schema_version": 3,
                         "solution": True, "task": False}}


def solution_text_metadata(label: str, points: int = 1) -> dict:
    """nbgrader's metadata for a solution's text cell (a "manually graded answer"): nbgrader's
    release replaces its text by "YOUR ANSWER HERE", so the written solution never reaches
    students that way either. ``points`` is the teacher's to change."""
    return {"nbgrader": {"grade": True, "grade_id": f"{label}-text", "locked": False, "points": points,
                         "schema_version": 3, "solution": True, "task": False}}


SOLUTION_LABEL = re.compile(r"\A\s*(?::{3,}|`{3,})\{solution(?:-start)?\}\s+(ex-[\w-]+)")


def mark_solution_cells(path: Path) -> int:
    """Give every solution text cell of the notebook at ``path`` its nbgrader metadata
    (:func:`solution_text_metadata`) where it lacks it; the file is rewritten (in the chapters'
    JSON style) only if something changed. Returns how many cells were marked. For authors who
    add an exercise (book/CHAPTER_GUIDE.md, "Exercises")."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    marked = 0
    for cell in nb["cells"]:
        match = SOLUTION_LABEL.match(_source(cell)) if cell.get("cell_type") == "markdown" else None
        if match and "nbgrader" not in cell.get("metadata", {}):
            cell["metadata"] = {**cell.get("metadata", {}), **solution_text_metadata(match[1])}
            marked += 1
    if marked:
        _write_json(nb, path)
    return marked


def stub(source: str, form: str = "your answer") -> str:
    """``source`` with every solution region replaced by ``answer = ...`` (a line that runs)."""
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}answer = ...  # your answer: {form}")
            inside = True
        elif stripped == END_SOLUTION:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{BEGIN_SOLUTION}' without '{END_SOLUTION}' in:\n{source}")
    return "\n".join(out)


def _form(cell) -> str:
    from allnet_lib import exercises

    label = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
    match = LABEL.match(label)
    if match:
        try:
            return exercises.get(match[1], int(match[2])).form
        except KeyError:
            pass
    return "your answer"


def student_notebook(nb):
    """The student's edition of a notebook (a copy; ``nb`` as read by nbformat or ``json``)."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb["cells"]:
        if is_solution_text(cell):
            continue
        if is_answer_cell(cell):
            cell["source"] = stub(_source(cell), _form(cell))
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    nb["cells"] = cells
    return nb


def solution_leaks(nb) -> list[str]:
    """The marks of solution text or code still in ``nb`` (empty for a proper student edition)."""
    return [f"cell {i}: {mark}" for i, cell in enumerate(nb["cells"], 1)
            for mark in SOLUTION_MARKS if mark in _source(cell)]


def exercises_in(nb) -> list[str]:
    """The exercise labels of a notebook, in order."""
    return [m[1] for cell in nb["cells"] if cell.get("cell_type") == "markdown"
            for m in [EXERCISE_CELL.match(_source(cell))] if m]


def book_notebooks(book_dir: Path) -> list[str]:
    """The toc's notebooks (``theory/01_learning_from_data``...), in reading order."""
    from allnet_lib.book_build import chapters

    return chapters(Path(book_dir))


def _write_json(nb, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_student_edition(book_dir: Path, out_dir: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the student edition of every notebook of the book to ``out_dir`` (same relative paths,
    e.g. ``out_dir/theory/01_learning_from_data.ipynb``); returns the files written. ``out_dir``
    may be ``book_dir`` (a staged copy: the book build's student edition). An existing student
    notebook is replaced only with ``overwrite``."""
    book_dir, out_dir = Path(book_dir), Path(out_dir)
    in_place = out_dir.resolve() == book_dir.resolve()
    entries = book_notebooks(book_dir)
    targets = [out_dir / f"{e}.ipynb" for e in entries]
    if not in_place and not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]} exists ({len(existing)} of the student notebooks): "
                                  f"choose an empty folder, or pass {option('overwrite')} to replace them")
    for entry, target in zip(entries, targets):
        nb = json.loads((book_dir / f"{entry}.ipynb").read_text(encoding="utf-8"))
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_json(student_notebook(nb), target)
    return targets


# --------------------------------------------------------------------------------------------
# the teacher's guide: objectives, times, syllabus (read from the chapters and the benchmarks)
# --------------------------------------------------------------------------------------------

BOOK_DIR = Path(__file__).resolve().parents[1] / "book"
RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def chapter_header(nb) -> tuple[str, list[str]]:
    """A chapter's title and its "You will learn" items (from its first cell)."""
    header = _source(nb["cells"][0])
    title = re.search(r"^# (.+)$", header, re.M)
    learn = header.split("**You will learn**", 1)
    items = []
    if len(learn) == 2:
        block = re.split(r"\n\s*\n\*\*|\n\*\*", learn[1].strip(), maxsplit=1)[0]
        for item in re.split(r"^- ", block, flags=re.M):
            item = " ".join(item.split()).rstrip(";.")
            if item:
                items.append(item)
    return (title[1].strip() if title else ""), items


WORDS_PER_MINUTE = 200  # a reading speed for technical prose (myst's default for reading times)


def reading_minutes(nb) -> float:
    """Time to read a chapter: the words of its markdown and code at :data:`WORDS_PER_MINUTE`."""
    words = sum(len(re.findall(r"[A-Za-z]+", _source(c))) for c in nb["cells"]
                if c.get("cell_type") in ("markdown", "code"))
    return words / WORDS_PER_MINUTE


def objectives(book_dir: Path = BOOK_DIR) -> list[dict]:
    """One row per chapter: entry, title, objectives (the header's "You will learn" list),
    the number of exercises and of exercises that check themselves, and the minutes to read it."""
    from allnet_lib import exercises

    rows = []
    for entry in book_notebooks(book_dir):
        if not entry.startswith(("theory/", "experiments/")):
            continue
        nb = json.loads((Path(book_dir) / f"{entry}.ipynb").read_text(encoding="utf-8"))
        title, items = chapter_header(nb)
        key = chapter_key(entry)
        rows.append(dict(entry=entry, key=key, title=title, objectives=items,
                         exercises=len(exercises_in(nb)),
                         checked=sum(1 for c, _ in exercises.CHECKS if c == key),
                         read_minutes=reading_minutes(nb)))
    return rows


def run_times(results_dir: Path = RESULTS_DIR) -> dict[str, dict[str, float]]:
    """Measured seconds per chapter and profile, from the benchmarks' stored table
    (``benchmarks/results/book.csv``: ``<profile>_s`` columns): {entry: {profile: seconds}}."""
    path = Path(results_dir) / "book.csv"
    times: dict[str, dict[str, float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for col, value in row.items():
                if col.endswith("_s") and value not in ("", None):
                    try:
                        times.setdefault(row["chapter"], {})[col[:-2]] = float(value)
                    except ValueError:
                        pass
    return times


def profiles_measured(times: dict[str, dict[str, float]]) -> list[str]:
    """The profiles that :func:`run_times` has numbers for, cheapest first."""
    found = {p for t in times.values() for p in t}
    return cheapest_first(found)


def measured_on(results_dir: Path = RESULTS_DIR) -> dict[str, str]:
    """When each profile's book timings were measured (``book_totals.csv``), {profile: date}."""
    path = Path(results_dir) / "book_totals.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {row["profile"]: row.get("measured", "") for row in csv.DictReader(handle)}


# Sessions of the suggested syllabus: (what to read before, chapters worked on in class).
SYLLABUS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Learning from data, and how to measure it", ("theory/01_learning_from_data",)),
    ("Optimisation", ("theory/02_gradient_descent",)),
    ("Backpropagation, activations and losses", ("theory/03_backpropagation", "theory/04_activations_and_losses")),
    ("Convolutions; overfitting and regularisation", ("theory/05_convolutional_networks",
                                                      "theory/06_overfitting_and_regularisation")),
    ("The data and a split that respects people", ("experiments/01_the_data", "experiments/02_preparing_the_data")),
    ("The architectures", ("experiments/03_classic_architectures", "experiments/04_the_proposed_model")),
    ("Training, and looking inside", ("experiments/05_training", "experiments/06_looking_inside")),
    ("Results, beyond the report, conclusions", ("experiments/07_results", "experiments/08_beyond_the_report",
                                                 "experiments/09_conclusion")),
)


def syllabus(book_dir: Path = BOOK_DIR, results_dir: Path = RESULTS_DIR) -> list[dict]:
    """The suggested syllabus, one row per session: theme, chapters, exercises to assign (and how
    many check themselves), minutes to read, and the measured run time per profile (seconds)."""
    rows_by_entry = {r["entry"]: r for r in objectives(book_dir)}
    times = run_times(results_dir)
    missing = sorted({e for _, es in SYLLABUS for e in es} - set(rows_by_entry))
    if missing:
        raise ValueError(f"course.SYLLABUS names chapters that are not in the book: {missing}")
    sessions = []
    for week, (theme, entries) in enumerate(SYLLABUS, 1):
        profiles_ = profiles_measured({e: times.get(e, {}) for e in entries})
        sessions.append(dict(
            week=week, theme=theme, chapters=list(entries),
            exercises=sum(rows_by_entry[e]["exercises"] for e in entries),
            checked=sum(rows_by_entry[e]["checked"] for e in entries),
            read_minutes=sum(rows_by_entry[e]["read_minutes"] for e in entries),
            seconds={p: sum(times.get(e, {}).get(p, float("nan")) for e in entries) for p in profiles_},
        ))
    return sessions
