"""The classroom edition (issue 12): student notebooks from the teacher's, the CLI and the
teacher's guide's data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nbformat
import pytest

from allnet_lib import course, exercises
from allnet_lib.cli import main as allnet

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def _md(text):
    return {"cell_type": "markdown", "id": "m", "metadata": {}, "source": text}


def _code(text, **metadata):
    return {"cell_type": "code", "id": "c", "metadata": metadata, "source": text,
            "execution_count": 3, "outputs": [{"output_type": "stream", "name": "stdout", "text": "right\n"}]}


TEACHER = "from allnet_lib import exercises\n\n### BEGIN SOLUTION\nx = 2\nanswer = x * 3\n### END SOLUTION\n" \
          'exercises.check("backpropagation", 1, answer)'


def test_stub_replaces_the_solution_region_by_a_line_that_runs():
    out = course.stub(TEACHER, "a number")
    assert out == ("from allnet_lib import exercises\n\nanswer = ...  # your answer: a number\n"
                   'exercises.check("backpropagation", 1, answer)')
    assert course.stub("    ### BEGIN SOLUTION\n    y = 1\n    ### END SOLUTION") == \
        "    answer = ...  # your answer: your answer"
    with pytest.raises(ValueError, match="END SOLUTION"):
        course.stub("### BEGIN SOLUTION\nx = 1")


def test_student_notebook_drops_solutions_and_stubs_answers():
    nb = {"cells": [_md("# Title"), _md(":::{exercise}\n:label: ex-backpropagation-1\n\nQ\n:::"),
                    _md(":::{solution-start} ex-backpropagation-1\n:class: dropdown\n:::\n\nBecause."),
                    _code(TEACHER, **course.answer_cell_metadata("ex-backpropagation-1")),
                    _md(":::{solution-end}\n:::"),
                    _md(":::{exercise}\n:label: ex-backpropagation-2\n\nQ2\n:::"),
                    _md("```{solution} ex-backpropagation-2\nA2\n```"),
                    _code("print(1)")],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    student = course.student_notebook(nb)
    assert len(nb["cells"]) == 8 and nb["cells"][3]["source"] == TEACHER  # the teacher's is untouched
    assert [c["source"][:14] for c in student["cells"]] == \
        ["# Title", ":::{exercise}\n", "from allnet_li", ":::{exercise}\n", "print(1)"]
    answer = student["cells"][2]
    assert answer["outputs"] == [] and answer["execution_count"] is None
    assert exercises.get("backpropagation", 1).form in answer["source"]
    assert student["cells"][4]["outputs"]  # other cells keep what they have
    assert course.solution_leaks(student) == []
    assert course.solution_leaks(nb)
    assert course.exercises_in(student) == ["ex-backpropagation-1", "ex-backpropagation-2"]


@pytest.fixture(scope="module")
def student_book(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    written = course.write_student_edition(BOOK, out)
    return out, written


def test_student_edition_of_the_book_holds_no_solution(student_book):
    out, written = student_book
    entries = course.book_notebooks(BOOK)
    assert written == [out / f"{e}.ipynb" for e in entries]
    n_exercises = 0
    for entry in entries:
        text = (out / f"{entry}.ipynb").read_text(encoding="utf-8")
        for mark in course.SOLUTION_MARKS:  # grep, on the file as written
            assert mark not in text, f"{entry}: {mark!r} in the student edition"
        student = nbformat.reads(text, as_version=4)
        nbformat.validate(student)
        teacher = json.loads((BOOK / f"{entry}.ipynb").read_text(encoding="utf-8"))
        assert course.exercises_in(student) == course.exercises_in(teacher)
        n_exercises += len(course.exercises_in(student))
        # everything else identical: the teacher's cells minus the solution text, answers stubbed
        kept = [c for c in teacher["cells"] if not course.is_solution_text(c)]
        assert [c["id"] for c in student.cells] == [c["id"] for c in kept]
        for s, t in zip(student.cells, kept):
            if course.is_answer_cell(t):
                assert "answer = ..." in s.source and not s.outputs
            else:
                assert s.source == "".join(t["source"]) and s.metadata == t["metadata"]
    assert n_exercises >= 50  # every chapter's exercises are numbered (56 when written)


def test_answer_cells_are_nbgrader_solution_cells():
    for entry in course.book_notebooks(BOOK):
        nb = json.loads((BOOK / f"{entry}.ipynb").read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if course.is_answer_cell(cell):
                meta = cell["metadata"]["nbgrader"]
                assert meta["solution"] is True and meta["grade"] is False and meta["schema_version"] == 3
                assert meta["grade_id"] in course.exercises_in(nb)


def test_solution_text_cells_are_nbgrader_manually_graded_answers():
    """So that nbgrader's generate_assignment, run on the chapters as they are, clears the text of
    every solution (its answer code is cleared by the solution markers)."""
    for path in [*(BOOK / f"{e}.ipynb" for e in course.book_notebooks(BOOK)),
                 BOOK / "templates" / "chapter_template.ipynb"]:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if course.is_solution_text(cell) and "{solution-end}" not in "".join(cell["source"]):
                meta = cell["metadata"].get("nbgrader", {})
                assert meta.get("solution") is True and meta.get("grade") is True and meta.get("points", 0) > 0, \
                    f"{path.relative_to(BOOK)}: a solution's text without course.solution_text_metadata"
                assert meta["grade_id"].endswith("-text") and meta["grade_id"][:-5] in course.exercises_in(nb)


def test_mark_solution_cells_adds_nbgrader_metadata_once(tmp_path):
    path = tmp_path / "nb.ipynb"
    nb = {"cells": [_md(":::{solution} ex-backpropagation-2\n:class: dropdown\n\nA\n:::"),
                    _md(":::{solution-end}\n:::"), _md("text")],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb, indent=1) + "\n")
    assert course.mark_solution_cells(path) == 1
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["metadata"] == course.solution_text_metadata("ex-backpropagation-2")
    assert cells[1]["metadata"] == {} and cells[2]["metadata"] == {}
    assert path.read_text().endswith("}\n")
    assert course.mark_solution_cells(path) == 0


def test_cli_writes_the_student_edition_and_keeps_what_exists(tmp_path, capsys):
    out = tmp_path / "student"
    assert allnet(["course", "student", str(out)]) == 0
    assert "student notebooks in" in capsys.readouterr().out
    assert (out / "theory" / "03_backpropagation.ipynb").is_file()
    assert allnet(["course", "student", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert allnet(["course", "student", str(out), "--overwrite"]) == 0
    assert allnet(["course", "student", str(tmp_path / "x"), "--book", str(tmp_path)]) == 2
    assert "_toc.yml" in capsys.readouterr().err


def test_objectives_come_from_the_chapters():
    rows = course.objectives(BOOK)
    assert [r["entry"] for r in rows] == [e for e in course.book_notebooks(BOOK)
                                          if e.startswith(("theory/", "experiments/"))]
    for r in rows:
        assert r["title"] and r["objectives"], f"{r['entry']}: no title or 'You will learn' list"
        assert r["read_minutes"] > 1
        header = json.loads((BOOK / f"{r['entry']}.ipynb").read_text())["cells"][0]["source"]
        assert r["objectives"][0].split()[0] in "".join(header)
    assert sum(r["checked"] for r in rows) == len(exercises.CHECKS)


def test_reading_time_counts_words():
    nb = {"cells": [_md("word " * 300), _code("x = 1\n" * 100), {"cell_type": "raw", "source": "no " * 999}]}
    assert course.reading_minutes(nb) == pytest.approx((300 + 100) / course.WORDS_PER_MINUTE)


def test_run_times_are_read_from_the_benchmark_table(tmp_path):
    (tmp_path / "book.csv").write_text("chapter,smoke_s,smoke_status,demo_s,demo_status\n"
                                       "theory/01_learning_from_data,13.2,ok,19.2,ok\n"
                                       "theory/02_gradient_descent,12.0,ok,,\n")
    times = course.run_times(tmp_path)
    assert times == {"theory/01_learning_from_data": {"smoke": 13.2, "demo": 19.2},
                     "theory/02_gradient_descent": {"smoke": 12.0}}
    assert course.profiles_measured(times) == ["smoke", "demo"]
    real = course.run_times()  # the committed table: the guide's numbers are these, not typed
    with open(course.RESULTS_DIR / "book.csv", newline="") as handle:
        first = next(csv.DictReader(handle))
    assert real[first["chapter"]]["smoke"] == float(first["smoke_s"])


def test_syllabus_covers_every_chapter_once_with_measured_times():
    plan = course.syllabus(BOOK)
    covered = [e for s in plan for e in s["chapters"]]
    assert sorted(covered) == sorted(r["entry"] for r in course.objectives(BOOK))
    times = course.run_times()
    for s in plan:
        assert s["seconds"]["smoke"] == pytest.approx(sum(times[e]["smoke"] for e in s["chapters"]))
    assert sum(s["exercises"] for s in plan) == sum(r["exercises"] for r in course.objectives(BOOK))


def test_the_teachers_guide_is_in_the_book_and_reads_its_numbers():
    assert "appendix/teachers" in course.book_notebooks(BOOK)
    code = "\n".join("".join(c["source"]) for c in
                     json.loads((BOOK / "appendix" / "teachers.ipynb").read_text())["cells"]
                     if c["cell_type"] == "code")
    for call in ("course.objectives(", "course.run_times(", "course.syllabus("):
        assert call in code


@pytest.mark.book
def test_a_student_chapter_executes_under_smoke(student_book, tmp_path):
    """Stubs run: a student chapter with answer cells executes top to bottom (papermill)."""
    import papermill

    out, _ = student_book
    src = out / "theory" / "05_convolutional_networks.ipynb"
    done = tmp_path / "done.ipynb"
    papermill.execute_notebook(str(src), str(done), parameters={"PROFILE": "smoke"}, kernel_name="python3",
                               cwd=str(BOOK / "theory"), progress_bar=False)
    text = done.read_text()
    assert "not answered yet" in text and "right." not in text
