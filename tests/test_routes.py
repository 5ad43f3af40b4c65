"""Every reader's route: the repository set in one place, chapters that say what they will train,
pages without plumbing or the build machine's paths (issue 11). The Colab route itself is
``./run test-colab`` (a Python 3.13 environment with Colab's versions; not part of ./run test)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pandas as pd
import pytest

from allnet_lib import book_build, compare, notebook, profiles, repository

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
MODELS = ["alexnet", "vgg16", "resnet50", "inception_v3", "proposed"]


# --------------------------------------------------------------------------------------------
# one place for the repository and the version
# --------------------------------------------------------------------------------------------

def test_every_chapter_installs_the_configured_release():
    s = repository.settings()
    assert s.install_spec == f"allnet @ git+{s.url}@v{s.version}", "a release tag, not a moving branch"
    notebooks = sorted(BOOK.glob("**/*.ipynb"))
    assert len(notebooks) >= 17
    wrong = {}
    for path in notebooks:
        if {"_build", ".ipynb_checkpoints", ".jupyter_cache"} & set(path.parts):
            continue
        spec = repository.install_cell_spec(json.loads(path.read_text()))
        if spec != s.install_spec:
            wrong[str(path.relative_to(ROOT))] = spec
    assert not wrong, (f"install cells that disagree with pyproject.toml ({s.install_spec!r}); "
                       f"run `python -m allnet_lib.repository --write`: {wrong}")


def test_nothing_names_another_repository():
    found = repository.disagreements()
    assert not found, ("files that disagree with pyproject.toml's [project.urls] Repository; run "
                       "`python -m allnet_lib.repository --write`:\n"
                       + "\n".join(f"{p}: {lines[:2]}" for p, lines in found.items()))


def test_a_fork_changes_one_line(tmp_path):
    """Change the Repository line, run --write: every mention follows, nothing else changes."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "allnet"\nversion = "1.2.0"\n[project.urls]\n'
        'Repository = "https://github.com/someone/allnet"\n')
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "_config.yml").write_text(
        "repository:\n  url: https://github.com/allnet-course/allnet\n  path_to_book: book\n"
        "  branch: main\nhtml:\n  baseurl: https://allnet-course.github.io/allnet/\n  use_issues_button: true\n")
    cell = 'try:\n    import allnet_lib\nexcept ImportError:\n    %pip install -q "allnet @ git+https://github.com/allnet-course/allnet"'
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    raw = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    (tmp_path / "book" / "ch.ipynb").write_text(raw)
    (tmp_path / "intro.md").write_text("git clone https://github.com/allnet-course/allnet\n"
                                       "see https://github.com/allnet-course/allnet/issues or "
                                       "https://github.com/googlecolab/backend-info\n")
    s = repository.settings(tmp_path / "pyproject.toml")
    assert len(repository.disagreements(tmp_path, s)) == 3
    assert len(repository.write(tmp_path, s)) == 3
    assert repository.disagreements(tmp_path, s) == {}
    config = (tmp_path / "book" / "_config.yml").read_text()
    assert "url: https://github.com/someone/allnet\n" in config and "branch: v1.2.0\n" in config
    assert "baseurl: https://someone.github.io/allnet/\n" in config and "path_to_book: book\n" in config
    new_raw = (tmp_path / "book" / "ch.ipynb").read_text()
    assert new_raw == raw.replace("git+https://github.com/allnet-course/allnet",
                                  "git+https://github.com/someone/allnet@v1.2.0"), "only the spec changes"
    intro = (tmp_path / "intro.md").read_text()
    assert "github.com/someone/allnet/issues" in intro and "googlecolab/backend-info" in intro


def test_setting_must_be_a_github_repository(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "1"\n[project.urls]\nRepository = "x"\n')
    with pytest.raises(ValueError, match=r"\[project.urls\] Repository"):
        repository.settings(tmp_path / "pyproject.toml")


# --------------------------------------------------------------------------------------------
# chapters 6-9 alone: they say what they will train, and how long, before they do
# --------------------------------------------------------------------------------------------

def test_compare_models_says_what_it_will_train_before_training(tmp_path, monkeypatch):
    events = []

    def fake_run_model(name, split, profile, run_dir, **kwargs):
        events.append(("train", name))
        return {"test": {"name": name}}, False

    monkeypatch.setattr(compare, "run_model", fake_run_model)
    monkeypatch.setattr(compare, "results_table", lambda records: pd.DataFrame({"model": [r["name"] for r in records]}))
    (tmp_path / "alexnet").mkdir()
    (tmp_path / "alexnet" / compare.RECORD_NAME).write_text("{}")  # chapter 5 left this one
    compare.compare_models(MODELS, SimpleNamespace(name="subject-s0"), profiles.get_profile("smoke"),
                           out_dir=tmp_path, log=lambda message: events.append(("log", message)))
    first = events[0]
    assert first[0] == "log", "the notice must come before any training"
    assert "vgg16, resnet50, inception_v3, proposed (4 of 5)" in first[1] and "alexnet" not in first[1]
    assert "Training them now under profile smoke" in first[1] and "minute" in first[1]
    assert "Chapter 5" in first[1]


def test_compare_models_is_quiet_when_everything_is_trained(tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr(compare, "run_model", lambda name, *a, **k: ({"test": {"name": name}}, True))
    monkeypatch.setattr(compare, "results_table", lambda records: pd.DataFrame({"model": [r["name"] for r in records]}))
    for name in MODELS:
        (tmp_path / name).mkdir()
        (tmp_path / name / compare.RECORD_NAME).write_text("{}")
    compare.compare_models(MODELS, SimpleNamespace(name="s"), profiles.get_profile("demo"), out_dir=tmp_path,
                           log=messages.append)
    assert not any("Not trained yet" in m for m in messages)


def test_training_notice_estimates_from_the_measured_times():
    text = notebook.training_notice(["vgg16", "proposed"], MODELS, profiles.get_profile("demo"), "/nowhere")
    assert "about 8 minute(s) for these 2" in text and "19 minutes" in text
    assert "use a GPU" in notebook.training_notice(MODELS, MODELS, "seed", "/nowhere")


def test_display_path_hides_the_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("ALLNET_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ALLNET_RUNS", str(tmp_path / "runs"))
    assert notebook.display_path(tmp_path / "data" / "demo") == "$ALLNET_DATA/demo"
    assert notebook.display_path(tmp_path / "runs" / "smoke") == "$ALLNET_RUNS/smoke"
    assert notebook.display_path(Path.home() / "allnet_data") == "~/allnet_data"


# --------------------------------------------------------------------------------------------
# pages show the lesson, not the plumbing (book_build prepares the staged copies)
# --------------------------------------------------------------------------------------------

def _chapter_like(outputs_path: str) -> nbformat.NotebookNode:
    install = 'try:\n    import allnet_lib\nexcept ImportError:\n    %pip install -q "allnet @ git+https://x/y"'
    cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell(install),
        nbformat.v4.new_code_cell("PROFILE = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('PROFILE = "smoke"\n', metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(path)", outputs=[nbformat.v4.new_output(
            "stream", name="stdout", text=f"data {outputs_path}/demo\n")]),
        nbformat.v4.new_markdown_cell("Some text.\n\nThe **first** filters of `alexnet`, see {cite:p}`mir2019report`:"),
        nbformat.v4.new_code_cell("plots.show()", outputs=[nbformat.v4.new_output(
            "display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})]),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def test_hide_plumbing_tags_install_parameters_and_injected_cells():
    nb = _chapter_like("/x")
    assert book_build.hide_plumbing(nb) == 3
    removed = [i for i, c in enumerate(nb.cells) if "remove-cell" in c.metadata.get("tags", [])]
    assert removed == [1, 2, 3]
    assert book_build.hide_plumbing(nb) == 0


def test_relative_paths_and_alt_text(tmp_path):
    data = tmp_path / "build" / "data"
    nb = _chapter_like(str(data))
    replacements = book_build.path_replacements({"ALLNET_DATA": str(data), "ALLNET_RUNS": str(tmp_path / "runs")})
    assert book_build.relative_paths(nb, replacements) == 1
    assert nb.cells[4].outputs[0]["text"] == "data $ALLNET_DATA/demo\n"
    assert nb.cells[4].source == "print(path)", "code is never touched"
    assert book_build.describe_figures(nb) == 1
    assert nb.cells[6].metadata["mystnb"]["image"]["alt"] == "The first filters of alexnet, see mir2019report:"
    assert "mystnb" not in nb.cells[4].metadata


@pytest.mark.book
def test_rendered_pages_hide_plumbing_and_work_from_a_sub_path(tmp_path, monkeypatch):
    """A two-page book with the real _config.yml, built by book_build: the plumbing cells are gone
    from the page (still in the executed notebook), the build's paths are replaced, figures have
    alt text, and every link is relative (the site works under https://OWNER.github.io/NAME/)."""
    import shutil

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    book = tmp_path / "book"
    book.mkdir()
    for name in ("_config.yml", "references.bib"):
        shutil.copy(BOOK / name, book / name)
    shutil.copytree(BOOK / "_static", book / "_static")
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapter\n")
    (book / "intro.md").write_text("# Tiny\n\nSee [the chapter](chapter.ipynb).\n")
    install = ('try:\n    import allnet_lib\nexcept ImportError:\n'
               '    %pip install -q "allnet @ git+https://github.com/allnet-course/allnet@v0"')
    figure = ("import base64, sys\nfrom IPython.display import Image, display\n"
              "display(Image(data=base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
              "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')))")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A chapter"),
        nbformat.v4.new_code_cell(install),
        nbformat.v4.new_code_cell("PROFILE = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nprint('data at', os.environ['ALLNET_DATA'] + '/demo')"),
        nbformat.v4.new_markdown_cell("A one-pixel figure of the cell:"),
        nbformat.v4.new_code_cell(figure),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, book / "chapter.ipynb")
    data = tmp_path / "machine-specific-data"
    monkeypatch.setenv("ALLNET_DATA", str(data))
    out = tmp_path / "out"

    assert book_build.build("smoke", out=out, book_dir=book) == 0

    html = out / "html"
    page = (html / "chapter.html").read_text()
    assert "data at $ALLNET_DATA/demo" in page
    assert 'alt="A one-pixel figure of the cell:"' in page
    assert "colab.research.google.com" in page, "the Colab launch button"
    assert "CC BY 4.0" in page, "the licence in the footer"
    problems = book_build.site_problems(html, forbidden=("%pip install", "PROFILE = None", "injected-parameters",
                                                         str(data), str(tmp_path)))
    assert not problems, "\n".join(problems)
    executed = nbformat.read(out / "executed" / "chapter.ipynb", as_version=4)
    assert "%pip install" in executed.cells[1].source, "the notebook itself keeps its install cell"
