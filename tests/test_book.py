"""The book: its chapters follow the conventions, it builds under the smoke profile, and every
rendered page looks right in a real (headless, offline) browser.

The whole book is built once per session (``built_book``) into ``build/book-smoke/``, not
``build/book/``, so running the tests never replaces a site built with ``./run book``. Screenshots
of every page go to ``build/book-smoke/screenshots/`` for a human to look at.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from allnet_lib import book_build, notebook

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
TEMPLATE = BOOK / "templates" / "chapter_template.ipynb"
SMOKE_OUT = ROOT / "build" / "book-smoke"
CHROMIUM = Path("/usr/bin/chromium")
# The no-network flags from the toolchain notes; requests leaving file:// are also aborted below.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# TensorFlow's C++ start-up lines (the library's one list, filtered out of executed chapters) and
# anything else TensorFlow might log onto a page (C++ source paths, its Python logger).
TF_NOISE = re.compile("|".join([
    *(f"(?:{p})" for p in notebook.TF_STARTUP_NOISE),
    r"oneDNN custom operations|TF_ENABLE_ONEDNN_OPTS|cuInit|absl::InitializeLog",
    r"tensorflow/core/|WARNING:tensorflow|triggered tf\.function retracing",
]))
ONEDNN_NOTICE = ("I0000 00:00:1796046744.357087    5445 port.cc:153] oneDNN custom operations are on. "
                 "You may see slightly different numerical results due to floating-point round-off "
                 "errors from different computation orders. To turn them off, set the environment "
                 "variable `TF_ENABLE_ONEDNN_OPTS=0`.\n")
ABSL_LINE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
NBVAL_MARK = book_build.NBVAL_MARK
SMOKE_LIMIT_S = 60  # per chapter, kernel start included (book/CHAPTER_GUIDE.md)

PAGES = book_build.toc_entries(BOOK)
CHAPTERS = book_build.chapters(BOOK)


# --------------------------------------------------------------------------------------------
# (c) conventions: the template and every chapter start the same way
# --------------------------------------------------------------------------------------------

def convention_problems(nb, *, full: bool) -> list[str]:
    """What a notebook gets wrong about the chapter conventions (book/CHAPTER_GUIDE.md).

    ``full`` also requires the ending (Summary, Exercises: labelled exercise blocks, each with a
    dropdown solution).
    """
    problems = []
    cells = nb.cells
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append("kernelspec must be python3 (papermill fails on other kernel names)")
    if len(cells) < 4:
        return problems + ["fewer than 4 cells: header, Colab cell, parameters, setup expected"]
    header, colab, params, opening = cells[:4]
    if header.cell_type != "markdown" or not header.source.startswith("# "):
        problems.append("cell 1 must be the markdown header starting with '# Title'")
    for field in ("**Description:**", "**Time to run:**"):
        if field not in header.source:
            problems.append(f"header lacks {field}")
    if colab.cell_type != "code" or not re.search(r"try:\s*\n\s*import allnet_lib\s*\nexcept ImportError:\s*\n"
                                                  r"\s*%pip install -q \"allnet @ git\+https://", colab.source):
        problems.append("cell 2 must be the Colab cell: try import allnet_lib / except ImportError: %pip install")
    if "parameters" not in params.metadata.get("tags", []):
        problems.append("cell 3 must be tagged 'parameters'")
    if not re.search(r"^PROFILE = None\b", params.source, re.M):
        problems.append("the parameters cell must set PROFILE = None")
    if "from allnet_lib import notebook" not in opening.source or "ctx = notebook.setup(PROFILE)" not in opening.source:
        problems.append("cell 4 must run `from allnet_lib import notebook; ctx = notebook.setup(PROFILE)`")
    for i, cell in enumerate(cells, 1):
        marked = cell.cell_type == "code" and cell.source.startswith(NBVAL_MARK)
        if cell.cell_type == "code" and cell.outputs and not marked:
            problems.append(f"cell {i} stores outputs but is not marked {NBVAL_MARK}")
        if marked and not cell.outputs:
            problems.append(f"cell {i} is marked {NBVAL_MARK} but stores no output to check (run it, save)")
        if marked and cell.outputs and cell.execution_count is None:
            problems.append(f"cell {i} stores outputs without an execution count: nbval rejects it as "
                            "'Unrun reference cell has outputs' (store outputs with --store-checked-outputs)")
        if cell.cell_type == "markdown" and re.search(r"^#{1,6}\s+\d+(\.\d+)*[.)]?\s", cell.source, re.M):
            problems.append(f"cell {i}: a hand-numbered heading; the book numbers sections itself")
    if full:
        text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
        for field in ("**You will learn**",):
            if field not in header.source:
                problems.append(f"header lacks {field}")
        for heading in ("## Summary", "## Exercises"):
            if not re.search(rf"^{re.escape(heading)}\s*$", text, re.M):
                problems.append(f"no '{heading}' section")
        labels = re.findall(r"^:::\{exercise\}\s*\n:label: (ex-[\w-]+)", text, re.M)
        if not labels:
            problems.append("exercises must be ':::{exercise}' blocks with ':label: ex-<chapter>-<n>' "
                            "(book/CHAPTER_GUIDE.md, 'Exercises')")
        for label in labels:
            if not re.search(rf"^:::\{{solution(?:-start)?\}} {re.escape(label)}\s*\n:class: dropdown", text, re.M):
                problems.append(f"exercise {label} has no ':::{{solution}} {label}' + ':class: dropdown' block")
    return problems


def test_template_follows_the_conventions():
    nb = nbformat.read(TEMPLATE, as_version=4)
    problems = convention_problems(nb, full=True)
    assert not problems, "\n".join(problems)
    assert any(c.source.startswith(NBVAL_MARK) and c.outputs for c in nb.cells), \
        "the template should show a cell whose output nbval checks"


def test_template_and_guide_stay_out_of_the_book():
    config = (BOOK / "_config.yml").read_text()
    assert "templates" in config and "CHAPTER_GUIDE.md" in config
    assert not any(p.startswith("templates/") for p in PAGES)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_follows_the_conventions(chapter):
    nb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    placeholder = "being written" in nb.cells[0].source if nb.cells else False
    full = chapter.startswith(("theory/", "experiments/")) and not placeholder
    problems = convention_problems(nb, full=full)
    assert not problems, f"{chapter} (see book/CHAPTER_GUIDE.md):\n" + "\n".join(problems)


@pytest.mark.book
def test_template_executes_under_smoke(tmp_path):
    """The opening really works: papermill runs the template, and its checked output still holds."""
    import papermill

    out = tmp_path / "template.ipynb"
    papermill.execute_notebook(str(TEMPLATE), str(out), parameters={"PROFILE": "smoke"},
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    stdout = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs
                     if o.output_type == "stream")
    assert "profile smoke" in stdout and "synthetic demo set" in stdout
    expected = _checked_outputs(nbformat.read(TEMPLATE, as_version=4))
    assert expected and _checked_outputs(executed) == expected


# --------------------------------------------------------------------------------------------
# (a) the build
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def built_book():
    """Build the whole book under the smoke profile, once; returns the output folder."""
    proc = subprocess.run(
        [sys.executable, "-m", "allnet_lib.book_build", "--profile", "smoke", "--out", str(SMOKE_OUT),
         "--cell-timeout", "300"],
        cwd=ROOT, capture_output=True, text=True,
    )
    log = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"book build failed (exit {proc.returncode}):\n{log}"
    yield SMOKE_OUT
    shutil.rmtree(SMOKE_OUT / "runs", ignore_errors=True)  # checkpoints: gigabytes, of no use after


@pytest.mark.book
def test_every_toc_page_is_rendered(built_book):
    html = built_book / "html"
    missing = [p for p in PAGES if not (html / f"{p}.html").is_file()]
    assert missing == []
    assert (html / "index.html").is_file()
    assert not (html / "templates").exists() and not (html / "CHAPTER_GUIDE.html").exists()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file(), "offline MathJax not copied"
    assert not list(built_book.glob(".staging-*")), "a staging folder was left behind"


@pytest.mark.book
def test_timings_cover_every_chapter(built_book):
    with open(built_book / "timings.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["chapter"] for r in rows] == CHAPTERS
    assert {r["status"] for r in rows} == {"ok"} and {r["profile"] for r in rows} == {"smoke"}
    # Times are reported (timings.csv, the benchmarks' book table), not asserted: speed targets
    # live in benchmarks, and a timed test fails on a busy machine.
    assert all(float(r["seconds"]) > 0 for r in rows)


def _checked_outputs(nb) -> dict[str, str]:
    """Source -> text output of the cells marked for nbval that hold an output, as nbval sees them
    (it only executes a marked cell stored without output)."""
    result = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(NBVAL_MARK) and cell.outputs:
            parts = [o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
                     for o in cell.outputs]
            result[cell.source] = "".join(parts).strip()
    return result


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_checked_outputs_match_the_build(built_book, chapter):
    """What ``pytest --nbval-lax`` checks, read from the build (no second execution)."""
    expected = _checked_outputs(nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4))
    executed = _checked_outputs(nbformat.read(built_book / "executed" / f"{chapter}.ipynb", as_version=4))
    assert {src: executed.get(src) for src in expected} == expected


# --------------------------------------------------------------------------------------------
# (b) every page in a headless browser, offline
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (./run test does it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Runs in the page: what a reader would see, reduced to numbers and short texts.
PAGE_REPORT_JS = r"""() => {
  const main = document.querySelector('main') || document.body;
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, .highlight, mjx-container, script, style').forEach(e => e.remove());
  const math = Array.from(main.querySelectorAll('.math'));
  return {
    images: document.images.length,
    broken_images: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    math: math.length,
    untypeset_math: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60)),
    raw_tex: (prose.textContent.match(/\\\(|\\\[|\$\$|\\begin\{/g) || []).length,
    error_blocks: main.querySelectorAll('.output.error, .output.traceback, .cell_output .traceback').length,
    stderr_blocks: main.querySelectorAll('.output.stderr').length,
    // printed lines of one cell split into several boxes (nb_merge_streams off or broken)
    split_streams: Array.from(main.querySelectorAll('.cell_output')).filter(o => {
      const kids = Array.from(o.children);
      return kids.some((k, i) => i > 0 && k.classList.contains('stream') && kids[i - 1].classList.contains('stream'));
    }).length,
    text: main.innerText,
  };
}"""


def _page_report(browser, page_file: Path, screenshot: Path) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside = []

    def only_local(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    try:
        page.goto(page_file.as_uri(), wait_until="load")
        try:  # MathJax typesets asynchronously after load
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('main .math')).every(e => e.querySelector('mjx-container'))",
                timeout=20_000)
        except Exception:
            pass  # reported below as untypeset math
        report = page.evaluate(PAGE_REPORT_JS)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        context.close()
    report["outside_requests"] = outside
    return report


@pytest.mark.book
def test_site_shows_no_plumbing_or_build_paths_and_works_from_a_sub_path(built_book):
    """The pages hide the install, parameters and injected-parameters cells, show no folder of the
    machine that built them, and link only relatively (GitHub Pages serves the book under
    https://OWNER.github.io/NAME/). See book_build.prepare_page and site_problems."""
    forbidden = ("%pip install", "PROFILE = None", 'PROFILE = "smoke"', str(ROOT), str(Path.home()) + "/")
    problems = book_build.site_problems(built_book / "html", forbidden=forbidden)
    assert not problems, "\n".join(problems[:40])


@pytest.mark.book
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_cleanly(built_book, browser, page):
    report = _page_report(browser, built_book / "html" / f"{page}.html",
                          built_book / "screenshots" / f"{page.replace('/', '__')}.png")
    assert report["outside_requests"] == [], "the page tries to reach the network"
    assert report["broken_images"] == []
    assert report["untypeset_math"] == [], "MathJax did not typeset this math (offline MathJax broken?)"
    assert report["raw_tex"] == 0, "raw TeX delimiters left in the text"
    assert report["error_blocks"] == 0 and "Traceback (most recent call last)" not in report["text"]
    assert "An Exception was encountered" not in report["text"]  # papermill's error banner
    assert report["stderr_blocks"] == 0
    assert report["split_streams"] == 0, "a cell's printed lines are split into several boxes"
    assert not TF_NOISE.search(report["text"]), TF_NOISE.search(report["text"])
    if page == book_build.toc_entries(BOOK)[0]:
        # The landing page has inline math on purpose: it keeps the MathJax check from passing
        # vacuously while the chapters are placeholders.
        assert report["math"] > 0


# --------------------------------------------------------------------------------------------
# book_build itself: failures are reported, and never published as a complete site
# --------------------------------------------------------------------------------------------

def _tiny_book(root: Path, bodies: dict[str, str]) -> Path:
    """A two-page Jupyter Book whose chapters are one code cell each (fast kernels, no imports)."""
    book = root / "book"
    book.mkdir()
    (book / "_config.yml").write_text('title: tiny\nexecute:\n  execute_notebooks: "off"\n')
    files = "\n".join(f"  - file: {name}" for name in bodies)
    (book / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n{files}\n")
    (book / "intro.md").write_text("# Tiny\n")
    for name, body in bodies.items():
        nb = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_markdown_cell(f"# {name}"),
            nbformat.v4.new_code_cell("PROFILE = None", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(body),
        ])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, book / f"{name}.ipynb")
    return book


@pytest.mark.book
def test_build_reports_every_failure_and_keeps_the_old_site(tmp_path, capsys):
    book = _tiny_book(tmp_path, {"good": "print('fine', PROFILE)", "bad": "raise ValueError('boom')",
                                 "after": "print('still executed')"})
    out = tmp_path / "out"
    (out / "html").mkdir(parents=True)
    (out / "html" / "index.html").write_text("previous site")

    status = book_build.build("smoke", out=out, book_dir=book)

    printed = capsys.readouterr().out
    assert status == 1
    assert "FAILED bad: cell In[3]: ValueError: boom" in printed  # In[2] is papermill's injected cell
    assert (out / "html" / "index.html").read_text() == "previous site", "a failed build replaced the site"
    assert (out / "html-incomplete" / "index.html").is_file()
    with open(out / "timings.csv") as handle:
        rows = {r["chapter"]: r for r in csv.DictReader(handle)}
    assert [rows[c]["status"] for c in ("good", "bad", "after")] == ["ok", "failed", "ok"]
    executed = nbformat.read(out / "executed-incomplete" / "good.ipynb", as_version=4)
    assert "fine smoke" in executed.cells[-1].outputs[0]["text"]  # PROFILE injected by papermill
    assert not (book / "_build").exists(), "the sources must never be built in place"


def test_strip_tf_noise_keeps_everything_else():
    stream = nbformat.v4.new_output
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import keras", outputs=[
            stream("stream", name="stderr", text=ABSL_LINE + ONEDNN_NOTICE + ABSL_LINE + ONEDNN_NOTICE),
            stream("stream", name="stdout", text="loaded\n"),
        ]),
        nbformat.v4.new_code_cell("train()", outputs=[
            stream("stream", name="stderr", text=ABSL_LINE + "UserWarning: a real warning\n"),
            stream("stream", name="stdout", text="a chapter may print: " + ONEDNN_NOTICE),
        ]),
        nbformat.v4.new_code_cell("1", outputs=[stream("stream", name="stderr", text="only this\n")]),
        nbformat.v4.new_markdown_cell(ONEDNN_NOTICE),
    ])
    assert book_build.strip_tf_noise(nb) == 5
    first, second, third, _ = nb.cells
    assert [o["name"] for o in first.outputs] == ["stdout"], "an output left empty is dropped"
    assert second.outputs[0]["text"] == "UserWarning: a real warning\n"
    assert second.outputs[1]["text"].startswith("a chapter may print: I0000"), "stdout is never touched"
    assert third.outputs[0]["text"] == "only this\n"
    assert book_build.strip_tf_noise(nb) == 0


@pytest.mark.book
def test_build_publishes_a_complete_site_and_cleans_runs(tmp_path, monkeypatch):
    # "three" writes TensorFlow's start-up lines and one other line to fd 2, as TensorFlow's C++
    # code does: the kernel turns them into a stderr output; the build removes the former only.
    # (ipykernel leaves fd 2 alone when it sees PYTEST_CURRENT_TEST, so the kernel must not.)
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    noise = (ABSL_LINE + ONEDNN_NOTICE + "kept\n").encode()
    book = _tiny_book(tmp_path, {"one": "import os; print(os.environ['ALLNET_RUNS'])",
                                 "two": f"{NBVAL_MARK}\nprint(6 * 7)",
                                 "three": f"import os, time; os.write(2, {noise!r}); time.sleep(0.5); print('ok')"})
    out = tmp_path / "out"
    (out / "runs" / "stale").mkdir(parents=True)

    assert book_build.build("smoke", out=out, book_dir=book, store_outputs=True) == 0

    assert (out / "html" / "one.html").is_file() and not (out / "html-incomplete").exists()
    assert not (out / "runs" / "stale").exists(), "runs must start empty unless --keep-runs"
    executed = nbformat.read(out / "executed" / "one.ipynb", as_version=4)
    # the kernel saw ALLNET_RUNS=<out>/runs; the page shows the variable, not the build's folder
    assert executed.cells[-1].outputs[0]["text"].strip() == "$ALLNET_RUNS"
    three = nbformat.read(out / "executed" / "three.ipynb", as_version=4).cells[-1].outputs
    assert [(o["name"], o["text"]) for o in three] == [("stderr", "kept\n"), ("stdout", "ok\n")]
    assert os.environ.get("ALLNET_RUNS") != str(out / "runs"), "build() leaked its environment"
    # --store-checked-outputs: only the marked cell's output goes back into the source
    one, two = (nbformat.read(book / f"{n}.ipynb", as_version=4) for n in ("one", "two"))
    assert all(not c.get("outputs") for c in one.cells)
    assert _checked_outputs(two) == {f"{NBVAL_MARK}\nprint(6 * 7)": "42"}


def test_toc_order_and_only_filter():
    assert PAGES[0] == "intro" and PAGES[-1] == "references"
    assert CHAPTERS[0] == "theory/01_learning_from_data" and CHAPTERS[-1] == "appendix/how_fast"
    assert len(CHAPTERS) == 17  # 15 chapters, the teachers' guide and how_fast
    assert book_build.chapters(BOOK, "theory/*") == CHAPTERS[:6]
    assert book_build.chapters(BOOK, "experiments/05_training") == ["experiments/05_training"]
    assert book_build.chapters(BOOK, "nothing*") == []


def test_unknown_only_glob_is_an_error(tmp_path, capsys):
    assert book_build.main(["--only", "nothing*", "--out", str(tmp_path)]) == 2
    assert "matches no notebook" in capsys.readouterr().err


def test_replace_dir_swaps_and_removes_the_old(tmp_path):
    new, target = tmp_path / "new", tmp_path / "target"
    new.mkdir(); target.mkdir()
    (new / "a").write_text("new"); (target / "a").write_text("old")
    book_build.replace_dir(new, target)
    assert (target / "a").read_text() == "new" and not new.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["target"]


def test_a_killed_builds_staging_folder_is_removed_by_the_next_build(tmp_path, capsys):
    left = tmp_path / ".staging-0123abcd"
    (left / "experiments").mkdir(parents=True)
    (tmp_path / "html").mkdir()
    assert book_build.remove_abandoned_staging(tmp_path) == [left]
    assert not left.exists() and (tmp_path / "html").is_dir()
    assert "interrupted build" in capsys.readouterr().out
