"""Chapter text that reads correctly in the rendered book *and* in Colab/Jupyter (issue 11, item 6).

Colab and Jupyter render a notebook's markdown as plain CommonMark (with tables and ``$`` math);
they show MyST's directives and roles as raw text. The rule is in book/CHAPTER_GUIDE.md ("Text
that reads in both places"): chapter markdown is CommonMark, plus only these MyST constructs,
which the book needs and which still read in Colab:

- ``{cite:p}`` / ``{cite:t}`` citations (sphinxcontrib-bibtex): the key is author + year + word
  (``mir2019report``), the role follows the words it supports (never "see {cite:p}`...`");
- ``{glue:text}`` values (myst-nb glue): the code cell above prints the same value
  (tests/test_prose_numbers.py checks that the chapter glues it);
- the exercise directives of sphinx-exercise (numbering, solution links, the student edition of
  allnet_lib/course.py): ``{exercise}`` with ``:label:`` only, whose body opens with a bold title;
  ``{solution}`` / ``{solution-start}`` with ``:class: dropdown`` only; ``{solution-end}``; each a
  whole cell, so Colab shows one short marker line above readable text.

Links to other pages are plain markdown links (``[How fast is it?](../appendix/how_fast.ipynb)``),
which Jupyter Book resolves like ``{doc}`` and which work in Jupyter and Colab; notes are block
quotes with a bold title (``> **Note.** ...``); math is ``$...$`` or ``$$...$$`` (an amsmath
environment goes inside ``$$``, e.g. ``aligned``). Anything else fails, naming page and cell.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted([*BOOK.glob("theory/*.ipynb"), *BOOK.glob("experiments/*.ipynb"),
                   *BOOK.glob("appendix/*.ipynb"), BOOK / "templates" / "chapter_template.ipynb"])
PAGES = [*CHAPTERS, BOOK / "intro.md"]  # intro.md is book-only, but GitHub shows it raw too

ROLES = {"cite:p", "cite:t", "glue:text"}
DIRECTIVES = {  # directive -> the options it may carry (sphinx-exercise; see the module docstring)
    "exercise": {"label"},
    "solution": {"class"},
    "solution-start": {"class"},
    "solution-end": set(),
}
CITE_KEY = re.compile(r"[a-z]+\d{4}[a-z]+")
ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")
FENCE = re.compile(r"^\s*(:{3,}|`{3,}|~{3,})\s*\{([\w:-]+)\}(.*)$", re.M)
CODE_BLOCK = re.compile(r"^(`{3,}|~{3,})[^\n{]*\n.*?^\1\s*$", re.M | re.S)  # plain code blocks
INLINE_CODE = re.compile(r"(\{[\w:-]+\}`[^`]*`)|(`+)[^`]*?\2(?!`)")  # a role (kept) or a code span
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
OTHERS = [  # MyST-only syntax that Colab shows raw, and what to write instead
    (re.compile(r"^\([\w:.-]+\)=\s*$", re.M), "a '(label)=' target: link to the page (plain markdown link)"),
    (re.compile(r"^%", re.M), "a MyST '%' comment: Colab shows it; delete it or use <!-- -->"),
    (re.compile(r"^:\s", re.M), "a definition list (': definition'): use a bullet list with a bold term"),
    (re.compile(r"\[\^[^\]]+\]"), "a footnote: write it in the sentence or in parentheses"),
    (re.compile(r"\{\{[^}]*\}\}"), "a '{{ substitution }}': write the text"),
    (re.compile(r"\{#[\w-]+\}"), "a '{#anchor}' heading anchor"),
    (re.compile(r"^:::+\s*$", re.M), None),  # a closing fence: checked with its opening below
    (re.compile(r"\\begin\{\w+\*?\}"), "an amsmath environment outside $$...$$: put it in $$ (e.g. aligned)"),
]
WEAK_BEFORE_CITE = re.compile(r"\b(?:see|in|by|from|of|and|with)\s+\{cite:[pt]\}", re.I)


def markdown_cells(page: Path):
    if page.suffix == ".md":
        yield "text", page.read_text()
        return
    for i, cell in enumerate(json.loads(page.read_text())["cells"], 1):
        if cell["cell_type"] == "markdown":
            source = cell["source"]
            yield cell.get("id", f"#{i}"), "".join(source) if isinstance(source, list) else source


def cell_problems(text: str) -> list[str]:
    """What in one markdown cell would show as raw MyST in Colab (empty when it reads in both)."""
    problems = []
    prose = CODE_BLOCK.sub("", text)
    directives = list(FENCE.finditer(prose))
    for m in directives:
        name, argument = m.group(2), m.group(3).strip()
        if name not in DIRECTIVES:
            problems.append(f"directive {{{name}}}: not allowed (a note is a block quote '> **Note.** ...'; "
                            "see book/CHAPTER_GUIDE.md)")
            continue
        if m.group(1)[0] != ":":
            problems.append(f"{{{name}}} must use a ':::' fence (a ``` fence shows as a code block in Colab)")
        if m.start() != 0 or len(directives) > 1:
            problems.append(f"{{{name}}} must be the whole cell (one directive per cell, starting it)")
        lines = prose[m.end():].lstrip("\n").split("\n")
        options = []
        for line in lines:
            option = re.match(r":([\w-]+):\s*(.*)$", line)
            if not option:
                break
            options.append(option.groups())
        for option, value in options:
            if option not in DIRECTIVES[name]:
                problems.append(f"{{{name}}} option :{option}: not allowed")
            elif option == "class" and value != "dropdown":
                problems.append(f"{{{name}}} :class: must be dropdown")
        if name == "exercise":
            if not any(o == "label" for o, _ in options):
                problems.append("{exercise} needs a :label: ex-<chapter>-<n>")
            body = "\n".join(lines[len(options):]).strip()
            if not body.startswith("**"):
                problems.append("an exercise's text must open with a bold title ('**Bug hunt.** ...'): "
                                "Colab shows no 'Exercise n' heading")
        if name in ("solution", "solution-start") and not re.fullmatch(r"ex-[\w-]+", argument):
            problems.append(f"{{{name}}} must name its exercise's label")
        if not re.search(r"^:{3,}\s*$", prose[m.end():], re.M):
            problems.append(f"{{{name}}} is never closed by ':::'")
    plain = MATH.sub(" ", INLINE_CODE.sub(lambda m: m.group(1) or " ", prose))
    for m in ROLE.finditer(plain):
        role, content = m.groups()
        if role not in ROLES:
            hint = " (write a markdown link: [Title](../part/chapter.ipynb))" if role in ("doc", "ref", "numref") else ""
            problems.append(f"role {{{role}}}`{content}`: not allowed{hint}")
        elif role.startswith("cite"):
            bad = [key for key in content.split(",") if not CITE_KEY.fullmatch(key.strip())]
            if bad:
                problems.append(f"citation key(s) {bad}: use author + year + word (mir2019report), "
                                "which still reads as a reference in Colab")
    for m in WEAK_BEFORE_CITE.finditer(plain):
        problems.append(f"'{m.group(0)}...': a citation follows the words it supports; the sentence "
                        "must read without it (Colab shows the role as code)")
    for pattern, message in OTHERS:
        if message and pattern.search(plain):
            problems.append(message)
    return problems


def test_every_chapter_is_scanned():
    names = {p.relative_to(BOOK).as_posix() for p in PAGES}
    assert {"theory/01_learning_from_data.ipynb", "experiments/05_training.ipynb",
            "appendix/how_fast.ipynb", "templates/chapter_template.ipynb", "intro.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(BOOK).as_posix())
def test_chapter_markdown_reads_in_book_and_colab(page):
    problems = [f"{page.relative_to(BOOK)} cell {cell}: {problem}"
                for cell, text in markdown_cells(page) for problem in cell_problems(text)]
    assert not problems, "see book/CHAPTER_GUIDE.md, 'Text that reads in both places':\n" + "\n".join(problems)


def test_exercises_are_still_directives():
    """The book keeps its numbered exercises and solutions (sphinx-exercise, course.py)."""
    text = "\n".join(t for page in CHAPTERS for _, t in markdown_cells(page))
    assert len(re.findall(r"^:::\{exercise\}\n:label: ex-", text, re.M)) >= 50
    assert len(re.findall(r"^:::\{solution(?:-start)?\} ex-[\w-]+\n:class: dropdown", text, re.M)) >= 50


@pytest.mark.parametrize("text", [
    "See {doc}`../appendix/how_fast`.",
    "As {numref}`fig-x` shows.",
    "Back to {ref}`sec-data`.",
    ":::{admonition} Note\nText.\n:::",
    ":::{note}\nText.\n:::",
    "```{tip}\nText.\n```",
    "(sec-data)=\n## Data",
    "% a comment",
    "Term\n: its definition",
    "A claim[^1].\n\n[^1]: A note.",
    "\\begin{align}\na &= b\n\\end{align}",
    "The report (see {cite:p}`mir2019report`).",
    "Cited {cite:p}`MIR_report`.",
    ":::{exercise}\n:label: ex-x-1\n\nNo bold title.\n:::",
    ":::{exercise}\n:label: ex-x-1\n:class: hard\n\n**Title.** Text.\n:::",
    ":::{solution} ex-x-1\n:class: tip\n\nText.\n:::",
    "Some text first.\n\n:::{solution} ex-x-1\n:class: dropdown\n\nText.\n:::",
    "```{exercise}\n:label: ex-x-1\n\n**Title.** Text.\n```",
])
def test_myst_only_syntax_is_caught(text):
    assert cell_problems(text)


@pytest.mark.parametrize("text", [
    "See [How fast is it?](../appendix/how_fast.ipynb) and [data](../experiments/01_the_data.ipynb#crop).",
    "> **Note.** Plain CommonMark.",
    "Adam {cite:p}`kingma2014adam` scales steps; AlexNet {glue:text}`min_size_alexnet` pixels.",
    "$$\n\\begin{aligned}\na &= b\n\\end{aligned}\n$$",
    "Code: `{doc}` in backticks is fine, and so is\n\n```python\n# {doc}`x`\n```",
    ":::{exercise}\n:label: ex-x-1\n\n**Title.** Text.\n:::",
    ":::{solution} ex-x-1\n:class: dropdown\n\n```python\nx = 1\n```\n:::",
    ":::{solution-start} ex-x-1\n:class: dropdown\n:::\n\nText.",
    ":::{solution-end}\n:::",
])
def test_portable_markdown_passes(text):
    assert cell_problems(text) == []


# --------------------------------------------------------------------------------------------
# math: Colab renders markdown formulas with KaTeX, which knows fewer commands than MathJax
# --------------------------------------------------------------------------------------------
KATEX = ROOT / os.environ.get("ALLNET_VENV", ".venv") / "katex"  # installed by ./run (setup_katex)
MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$", re.S)
_RENDER = """
const katex = require('katex'); const items = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const bad = [];
for (const x of items) {
  try { katex.renderToString(x.tex, {displayMode: x.display, throwOnError: true, strict: 'error'}); }
  catch (e) { bad.push(`${x.where}: ${JSON.stringify(x.tex).slice(0, 100)}: ${String(e.message).slice(0, 160)}`); }
}
console.log(JSON.stringify({checked: items.length, bad}));
"""


def formulas(page: Path):
    """Every ``$...$`` and ``$$...$$`` of a page's markdown, code spans and blocks left out."""
    for cell, text in markdown_cells(page):
        text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
        for m in MATH.finditer(text):
            display = m.group(1) is not None
            yield {"where": f"{page.relative_to(BOOK)} cell {cell}", "display": display,
                   "tex": m.group(1) if display else m.group(2)}


def test_every_formula_renders_in_katex():
    """Each formula through KaTeX (strict; the version pinned in ./run), as Colab shows it."""
    node = shutil.which("node")
    if node is None or not (KATEX / "node_modules" / "katex").is_dir():
        pytest.skip(f"needs Node.js and KaTeX in {KATEX} (./run test installs them)")
    items = [f for page in PAGES for f in formulas(page)]
    assert len(items) > 100, "the formula scan found almost nothing: is the pattern broken?"
    done = subprocess.run([node, "-e", _RENDER], input=json.dumps(items), capture_output=True, text=True,
                          cwd=KATEX, env={**os.environ, "NODE_PATH": str(KATEX / "node_modules")}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["checked"] == len(items)
    assert not result["bad"], "formulas KaTeX (Colab) cannot render:\n" + "\n".join(result["bad"])


def test_the_katex_check_catches_an_unknown_command():
    node = shutil.which("node")
    if node is None or not (KATEX / "node_modules" / "katex").is_dir():
        pytest.skip(f"needs Node.js and KaTeX in {KATEX} (./run test installs them)")
    items = [{"where": "x", "display": False, "tex": r"\mathscrbad{x}"}, {"where": "y", "display": True, "tex": r"\frac{a}{b}"}]
    done = subprocess.run([node, "-e", _RENDER], input=json.dumps(items), capture_output=True, text=True,
                          env={**os.environ, "NODE_PATH": str(KATEX / "node_modules")}, timeout=120)
    assert [line.split(":")[0] for line in json.loads(done.stdout)["bad"]] == ["x"]
