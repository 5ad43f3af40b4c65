"""Exercises that check themselves (issue 12): every teacher answer in the book passes its check,
every student stub fails it with a helpful message (never an exception), and every check in
``exercises.CHECKS`` has its answer cell in the book."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from allnet_lib import course, exercises

BOOK = Path(__file__).resolve().parents[1] / "book"


def _answer_cells():
    """(chapter entry, label, source) of every answer cell of the book, in reading order."""
    found = []
    for entry in course.book_notebooks(BOOK):
        nb = json.loads((BOOK / f"{entry}.ipynb").read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if course.is_answer_cell(cell):
                label = cell["metadata"]["nbgrader"]["grade_id"]
                found.append((entry, label, "".join(cell["source"])))
    return found


ANSWER_CELLS = _answer_cells()
# the "run your own experiment" exercises (exercises.MEASURED): their teacher's answer trains or
# evaluates on the chapter's data, so it runs in the chapter (the book build), not here
CHECKED_CELLS = [c for c in ANSWER_CELLS
                 if (match := course.LABEL.match(c[1])) and (match[1], int(match[2])) in exercises.CHECKS]
MEASURED_CELLS = [c for c in ANSWER_CELLS if c not in CHECKED_CELLS]


def _key(label: str) -> tuple[str, int]:
    match = course.LABEL.match(label)
    assert match, f"answer cell label {label!r} is not ex-<chapter key>-<n>"
    return match[1], int(match[2])


def test_every_check_has_one_answer_cell_and_every_answer_cell_a_check():
    labels = [label for _, label, _ in ANSWER_CELLS]
    assert len(labels) == len(set(labels)), "two answer cells for one exercise"
    assert {_key(label) for label in labels} == set(exercises.CHECKS) | set(exercises.MEASURED)
    assert not set(exercises.CHECKS) & set(exercises.MEASURED)
    assert len(exercises.CHECKS) >= 10  # Part 1 at least: the numbers of chapters 2-6
    assert sum(1 for c, _ in exercises.CHECKS
               if c in {course.chapter_key(e) for e in course.book_notebooks(BOOK) if e.startswith("theory/")}) >= 10


@pytest.mark.parametrize("entry,label,source", CHECKED_CELLS, ids=[label for _, label, _ in CHECKED_CELLS])
def test_teacher_answer_passes_its_check(entry, label, source, capsys):
    key, number = _key(label)
    assert key == course.chapter_key(entry), f"{label} sits in {entry}"
    assert source.count(course.BEGIN_SOLUTION) == source.count(course.END_SOLUTION) == 1
    assert source.rstrip().endswith(f'exercises.check("{key}", {number}, answer)'), \
        "an answer cell ends with its check"
    ns: dict = {}
    exec(compile(source, f"{entry}:{label}", "exec"), ns)  # self-contained: its own imports
    result = exercises.check(key, number, ns["answer"])
    assert result, f"{entry} {label}: the teacher's answer fails its check: {result}"
    assert str(result).endswith("right.")


@pytest.mark.parametrize("entry,label,source", ANSWER_CELLS, ids=[label for _, label, _ in ANSWER_CELLS])
def test_student_stub_runs_and_fails_helpfully(entry, label, source):
    key, number = _key(label)
    stub = course.stub(source, exercises.get(key, number).form)
    assert course.BEGIN_SOLUTION not in stub and "answer = ..." in stub
    ns: dict = {}
    exec(compile(stub, f"{entry}:{label} (student)", "exec"), ns)  # runs: no exception
    result = exercises.check(key, number, ns["answer"])
    assert not result
    text = str(result)
    assert "not answered yet" in text and "Hint:" in text and exercises.get(key, number).form in text


def test_every_experiment_chapter_has_a_run_your_own_experiment_exercise():
    """Issue 12, item 5: at least one exercise per experiment chapter (5-9) runs an experiment."""
    experiments = [e for e in course.book_notebooks(BOOK) if e.startswith("experiments/")
                   and int(Path(e).name[:2]) >= 5]
    assert len(experiments) == 5
    for entry in experiments:
        assert course.chapter_key(entry) in {c for c, _ in exercises.MEASURED}, entry


@pytest.mark.parametrize("entry,label,source", MEASURED_CELLS, ids=[label for _, label, _ in MEASURED_CELLS])
def test_measured_answer_cell_is_an_answer_cell(entry, label, source):
    key, number = _key(label)
    assert key == course.chapter_key(entry), f"{label} sits in {entry}"
    assert source.count(course.BEGIN_SOLUTION) == source.count(course.END_SOLUTION) == 1
    assert source.rstrip().endswith(f'exercises.check("{key}", {number}, answer)')
    assert "answer = " in source.split(course.BEGIN_SOLUTION, 1)[1]


@pytest.mark.parametrize("key", sorted(exercises.MEASURED), ids=lambda k: f"{k[0]}-{k[1]}")
def test_measured_check_accepts_any_measurement_of_the_right_form(key):
    ex = exercises.get(*key)
    value = (ex.low + ex.high) / 2
    answer = value if ex.n == 1 else tuple([value] * ex.n)
    result = exercises.check(*key, answer)
    assert result and "measured" in str(result) and "right." not in str(result) and ex.hint in str(result)
    wrongs = ["0.5", tuple([value] * (ex.n + 1)), ex.high + 1 if ex.n == 1 else tuple([ex.high + 1] * ex.n)]
    if set(ex.nan_ok) != set(range(ex.n)):  # NaN where a value must be defined
        wrongs.append(tuple([float("nan")] * ex.n) if ex.n > 1 else float("nan"))
    for wrong in wrongs:
        result = exercises.check(*key, wrong)
        assert not result and "Hint:" in str(result) and ex.form in str(result), (wrong, str(result))
    if ex.nan_ok:
        with_nan = [value] * ex.n
        for i in ex.nan_ok:
            with_nan[i] = float("nan")
        assert exercises.check(*key, tuple(with_nan) if ex.n > 1 else with_nan[0])


@pytest.mark.parametrize("answer", [None, ..., "55", 3.5, (1, 2, 3), [[1, 2]], {"a": 1}, {"W1"},
                                    object(), float("nan"), (np.inf, 0), np.array([55.0, 1.0])])
def test_malformed_or_wrong_answers_give_a_message_not_an_exception(answer):
    result = exercises.check("convolutional_networks", 1, answer)
    assert not result
    assert "Hint:" in str(result) and "(output side, parameters of the layer)" in str(result)


def test_right_answers_in_other_forms_pass():
    assert exercises.check("convolutional_networks", 1, [55, 34_944])
    assert exercises.check("convolutional_networks", 1, np.array([55.0, 34944.0]))
    assert exercises.check("convolutional_networks", 3, np.int64(16_448))
    assert exercises.check("backpropagation", 1, ["b1", "W1"])
    assert exercises.check("overfitting_and_regularisation", 4, 2.5e-7)


def test_wrong_answers_say_which_part_is_wrong():
    text = str(exercises.check("convolutional_networks", 1, (55, 34_848)))
    assert "value 2" in text and "value 1" not in text
    text = str(exercises.check("backpropagation", 1, {"W1", "W2"}))
    assert "W2" in text and "1 missing" in text


def test_unknown_exercise_is_a_key_error_that_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"exercises \[1, 2, 3, 4\]"):
        exercises.check("convolutional_networks", 9, 1)
    with pytest.raises(KeyError, match="chapters with checks"):
        exercises.check("no_such_chapter", 1, 1)


def test_jupyter_shows_the_message():
    result = exercises.check("gradient_descent", 4, (66_700, 100))
    assert result.ok and repr(result) == str(result) == result.message
