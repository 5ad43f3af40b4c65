"""Build the book: execute every chapter under one profile, then render it with Jupyter Book.

    python -m allnet_lib.book_build --profile smoke|demo|gpu|seed [--only GLOB] [--out build/book]
                                    [--keep-runs] [--cell-timeout SECONDS] [--store-checked-outputs]

Why not let Jupyter Book execute the notebooks: the chapters take a ``PROFILE`` parameter (a
papermill ``parameters`` cell), must run in table-of-contents order (later chapters reuse the
models and records earlier ones saved to ``$ALLNET_RUNS``), and we want each chapter's time and
every failure reported, not just the first. So this module:

1. copies ``book/`` into a staging folder inside ``--out`` (the sources are never modified);
2. makes the data once (the demo set at the profile's size, unless the profile uses real data);
3. executes each chapter with papermill (kernel ``python3``, cwd = the chapter's folder), with
   ``ALLNET_PROFILE``, ``ALLNET_RUNS`` (``<out>/runs``, emptied first unless ``--keep-runs``) and
   ``ALLNET_DATA`` (inherited, else ``build/data``) in the kernel's environment; a failing chapter
   is recorded and the build goes on; TensorFlow's C++ start-up lines are then removed from the
   executed chapter's stderr outputs (:func:`strip_tf_noise`);
4. renders with ``jupyter-book build --all <staging> -W -n --keep-going``;
5. swaps the result in: ``<out>/html`` (the site) and ``<out>/executed`` (executed notebooks) are
   replaced only when every chapter and the render succeeded; otherwise the attempt goes to
   ``<out>/html-incomplete`` and ``<out>/executed-incomplete`` and the previous site is left
   untouched, so a half-built site never looks complete;
6. prints and writes ``<out>/timings.csv`` (one row per executed chapter); the kernels' own
   stderr and Jupyter Book's log are in ``<out>/logs/``.

Exit status 0 only if every executed chapter and the render succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from allnet_lib import claims, notebook, paths, profiles

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK_DIR = REPO_ROOT / "book"
DEFAULT_OUT = REPO_ROOT / "build" / "book"
DEFAULT_DATA = REPO_ROOT / "build" / "data"
KERNEL = "python3"
NBVAL_MARK = "# NBVAL_CHECK_OUTPUT"  # first line of a cell whose stored output pytest --nbval-lax checks
TIMINGS_FIELDS = ("chapter", "profile", "status", "seconds", "error")
EDITIONS = ("teacher", "student")  # allnet_lib.course: the student edition has no solutions
# Copied into staging only if needed; build products and editor litter never are.
STAGE_IGNORE = shutil.ignore_patterns("_build", ".jupyter_cache", ".ipynb_checkpoints", "__pycache__")


@dataclass
class ChapterResult:
    """How one chapter's execution went. ``chapter`` is its toc entry, e.g. ``theory/02_gradient_descent``."""

    chapter: str
    status: str  # "ok" or "failed"
    seconds: float
    error: str = ""


def toc_entries(book_dir: Path) -> list[str]:
    """Every page of ``_toc.yml`` in reading order (root first), as written there, without suffix."""
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text())
    entries = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                entries.append(item["file"])
            walk(item.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [str(Path(e).with_suffix("")) if e.endswith((".md", ".ipynb")) else e for e in entries]


def chapters(book_dir: Path, only: str | None = None) -> list[str]:
    """The toc entries that are notebooks (the pages to execute), optionally filtered by a glob."""
    found = [e for e in toc_entries(book_dir) if (book_dir / f"{e}.ipynb").is_file()]
    if only:
        found = [e for e in found if fnmatch.fnmatch(e, only) or fnmatch.fnmatch(f"{e}.ipynb", only)]
    return found


def execute_chapter(staging: Path, entry: str, profile: str, *, cell_timeout: float | None = None,
                    stderr_log: Path | None = None) -> ChapterResult:
    """Execute one staged chapter in place with papermill; never raises for a failing notebook.

    The kernel process's own stderr (ipykernel notices, TensorFlow's C++ log) goes to
    ``stderr_log`` instead of the terminal, where it would break the progress lines.
    """
    import papermill

    path = staging / f"{entry}.ipynb"
    started = time.perf_counter()
    try:
        with _stderr_to(stderr_log):
            papermill.execute_notebook(
                str(path), str(path), parameters={"PROFILE": profile}, kernel_name=KERNEL,
                cwd=str(path.parent), progress_bar=False, log_output=False,
                execution_timeout=cell_timeout,
            )
    except papermill.PapermillExecutionError as exc:
        error = f"cell In[{exc.exec_count}]: {exc.ename}: {_first_line(exc.evalue)}"
        return ChapterResult(entry, "failed", time.perf_counter() - started, error)
    except Exception as exc:  # kernel died, timeout, bad notebook JSON...: still the chapter's failure
        error = f"{type(exc).__name__}: {_first_line(str(exc))}"
        return ChapterResult(entry, "failed", time.perf_counter() - started, error)
    return ChapterResult(entry, "ok", time.perf_counter() - started)


@contextlib.contextmanager
def _stderr_to(path: Path | None):
    """Point file descriptor 2 (which child processes inherit) at ``path`` for a while."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as handle:
        os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def strip_tf_noise(nb) -> int:
    """Remove TensorFlow's C++ start-up lines (``notebook.TF_STARTUP_NOISE``: the oneDNN notice,
    absl's "All log messages before absl::InitializeLog() ...", cuInit...) from the stderr stream
    outputs of an executed notebook, in place; an output left with nothing but white space is
    dropped. Returns how many lines were removed.

    Why here too: the chapters filter these lines when their opening imports Keras
    (``notebook.setup``), but TensorFlow can also be imported by other cells; and the
    ``TF_ENABLE_ONEDNN_OPTS=0`` that used to hide the notice switched off oneDNN's fast kernels.
    Printed output (stdout) is never touched."""
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.get("outputs"):
            continue
        kept = []
        for output in cell.outputs:
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                text = output.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                clean = notebook.drop_tf_noise(text)
                if clean != text:
                    removed += len(text.splitlines()) - len(clean.splitlines())
                    if not clean.strip():
                        continue
                    output["text"] = clean
            kept.append(output)
        cell.outputs = kept
    return removed


def strip_tf_noise_file(path: Path) -> int:
    """:func:`strip_tf_noise` on a notebook file, rewritten (atomically) only if it changed."""
    import nbformat

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return 0  # no notebook (the kernel died before papermill wrote one): nothing to clean
    removed = strip_tf_noise(nb)
    if removed:
        tmp = path.with_name(f".{path.name}.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(path)
    return removed


#: Cells that are plumbing, not the lesson: on rendered pages they are removed (Jupyter Book's
#: ``remove-cell`` tag, added to the staged copies only; the notebooks keep them, and Colab,
#: Jupyter and the downloaded .ipynb show them): the install cell, the ``parameters`` cell and
#: papermill's ``injected-parameters`` cell.
REMOVE_TAG = "remove-cell"
PLUMBING_TAGS = ("parameters", "injected-parameters")
#: Output types whose text may show a path of the machine that built the book.
PATH_MIME_TYPES = ("text/plain", "text/html", "text/markdown", "text/latex")


def is_install_cell(cell) -> bool:
    """The chapter's install cell: ``try: import allnet_lib / except ImportError: %pip install ...``."""
    return cell.get("cell_type") == "code" and "%pip install" in cell.get("source", "") \
        and "import allnet_lib" in cell.get("source", "")


def hide_plumbing(nb) -> int:
    """Tag the install, parameters and injected-parameters cells ``remove-cell`` (in place), so
    Jupyter Book leaves them off the page; returns how many cells were newly tagged."""
    tagged = 0
    for cell in nb.cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        plumbing = is_install_cell(cell) or any(t in tags for t in PLUMBING_TAGS)
        if plumbing and REMOVE_TAG not in tags:
            tags.append(REMOVE_TAG)
            tagged += 1
        if not tags:
            del cell["metadata"]["tags"]
    return tagged


def path_replacements(env: dict[str, str]) -> list[tuple[str, str]]:
    """``(absolute prefix, what readers see instead)`` for the build's folders, most specific
    first: ``$ALLNET_RUNS``, ``$ALLNET_DATA`` (the variables a reader sets to put them elsewhere)
    and the clone itself (paths inside it become relative to the repository)."""
    pairs = [(env.get(paths.RUNS_ENV), f"${paths.RUNS_ENV}"), (env.get(paths.DATA_ENV), f"${paths.DATA_ENV}"),
             (str(REPO_ROOT), ".")]
    out = []
    for prefix, shown in pairs:
        if prefix:
            out.append((str(Path(prefix).absolute()).rstrip("/"), shown))
    return sorted(out, key=lambda pair: -len(pair[0]))


def relative_paths(nb, replacements: list[tuple[str, str]]) -> int:
    """Replace the build machine's folders in a notebook's outputs (printed text, tables) by
    :func:`path_replacements`' names, in place; returns how many outputs changed. Code and
    markdown are never touched."""
    if not replacements:
        return 0

    def fix(text):
        joined = "".join(text) if isinstance(text, list) else text
        fixed = joined
        for prefix, shown in replacements:
            fixed = fixed.replace(prefix + "/", shown + "/").replace(prefix, shown)
        return fixed, fixed != joined

    changed = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            hit = False
            if "text" in output:
                output["text"], hit = fix(output["text"])
            for mime in PATH_MIME_TYPES:
                if mime in output.get("data", {}):
                    output["data"][mime], this = fix(output["data"][mime])
                    hit = hit or this
            if output.get("traceback"):
                fixed = [fix(line) for line in output["traceback"]]
                output["traceback"] = [line for line, _ in fixed]
                hit = hit or any(h for _, h in fixed)
            changed += hit
    return changed


def _plain(markdown: str) -> str:
    """Markdown reduced to plain text for an image's alt text."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = GLUE_ROLE.sub("…", text)  # a glued number: its value is not known here
    text = re.sub(r"\{[a-z:]+\}`([^`<]*)(?:<[^>]*>)?`", r"\1", text)  # {cite:p}`key`, {doc}`x <y>`
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](link)
    text = re.sub(r"^:::.*$|^:class:.*$|^\s*(?:#+|>)\s*", "", text, flags=re.M)
    text = re.sub(r"[*`$]", "", text)
    return " ".join(text.split())


def describe_figures(nb, limit: int = 300) -> int:
    """Give every figure output an alt text (``mystnb.image.alt`` in the cell's metadata, which
    Jupyter Book puts in the image's ``alt``; it was the image's file name before): the last
    paragraph of the markdown before the figure, which introduces it in this book's chapters,
    else the first line of the code. A cell that sets its own alt text keeps it. Returns how many
    cells got one."""
    described, last_markdown = 0, ""
    for cell in nb.cells:
        if cell.get("cell_type") == "markdown":
            paragraphs = [p for p in re.split(r"\n\s*\n", cell.get("source", "")) if p.strip()]
            last_markdown = _plain(paragraphs[-1]) if paragraphs else ""
            continue
        if cell.get("cell_type") != "code":
            continue
        images = any(k.startswith("image/") for o in cell.get("outputs", []) for k in o.get("data", {}))
        options = cell.setdefault("metadata", {}).setdefault("mystnb", {}).setdefault("image", {})
        if images and "alt" not in options:
            code = [line for line in cell.get("source", "").splitlines() if line.strip() and not line.startswith("#")]
            alt = last_markdown or (f"Figure drawn by: {code[0].strip()}" if code else "Figure")
            options["alt"] = alt if len(alt) <= limit else alt[: limit - 3].rstrip() + "..."
            described += 1
        if not options:
            del cell["metadata"]["mystnb"]["image"]
            if not cell["metadata"]["mystnb"]:
                del cell["metadata"]["mystnb"]
    return described


GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)(?::[^`]*)?`")


def unglue(nb) -> int:
    """Replace the glue roles of a chapter that was not executed (``--only``) by a note, in place;
    returns how many. Its numbers come from its own run (book/CHAPTER_GUIDE.md, 'Numbers in
    prose'): without outputs every role would be a missing-key warning, and ``-W`` fails on it."""
    changed = 0
    for cell in nb.cells:
        if cell.get("cell_type") == "markdown":
            cell["source"], n = GLUE_ROLE.subn(r"*(not run: \1)*", cell["source"])
            changed += n
    return changed


def prepare_page(path: Path, replacements: list[tuple[str, str]], *, executed: bool = True) -> None:
    """Make a staged chapter ready for rendering: plumbing cells hidden (:func:`hide_plumbing`),
    the build's paths replaced (:func:`relative_paths`), figures described
    (:func:`describe_figures`), and, if it was not ``executed``, its glue roles replaced
    (:func:`unglue`). Rewritten (atomically) only if something changed."""
    import nbformat

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return
    if (hide_plumbing(nb) + relative_paths(nb, replacements) + describe_figures(nb)
            + (0 if executed else unglue(nb))):
        tmp = path.with_name(f".{path.name}.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(path)


def site_problems(html_dir: Path, *, forbidden: tuple[str, ...] = ()) -> list[str]:
    """What keeps a rendered site from working at any address, e.g. under GitHub Pages' sub-path
    ``https://OWNER.github.io/NAME/``: links and resources that start with ``/`` (they would point
    at the server's root) or ``file:``, relative links to files that do not exist, and any of the
    ``forbidden`` strings in a page (plumbing, the build machine's paths). External ``http(s)``
    links and the canonical link (``html.baseurl``) are allowed. Returns one line per problem."""
    from html.parser import HTMLParser
    from urllib.parse import unquote, urlsplit

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links, self.text, self._skip = [], [], 0

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self._skip += tag in ("script", "style")
            if tag == "link" and attrs.get("rel") == "canonical":
                return
            for name in ("href", "src"):
                if attrs.get(name):
                    self.links.append(attrs[name])

        def handle_endtag(self, tag):
            self._skip -= tag in ("script", "style") and self._skip > 0

        def handle_data(self, data):
            if not self._skip:
                self.text.append(data)

    html_dir = Path(html_dir)
    problems = []
    for page in sorted(html_dir.rglob("*.html")):
        rel = page.relative_to(html_dir)
        if rel.parts[0] in ("_static", "_sources"):  # the theme's template fragments, not pages
            continue
        parser = Page()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        text = "".join(parser.text)
        for needle in forbidden:
            if needle in text:
                problems.append(f"{rel}: shows {needle!r}")
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme in ("http", "https", "mailto", "data", "javascript") or link.startswith("#"):
                continue
            if parts.scheme or link.startswith("/"):
                problems.append(f"{rel}: absolute link {link!r} (breaks under a sub-path)")
                continue
            if parts.path and not (page.parent / unquote(parts.path)).exists():
                problems.append(f"{rel}: broken link {link!r}")
    return problems


def store_checked_outputs(executed: Path, source: Path) -> int:
    """Copy the outputs of the cells marked ``# NBVAL_CHECK_OUTPUT`` from an executed chapter into
    its source notebook (cells matched by their code); returns how many cells were updated.

    Why: sources are stored without outputs except those cells, and copying them by hand from a
    Jupyter session is error-prone (the other cells' outputs must not be saved).
    """
    import nbformat

    ran = {c.source: c for c in nbformat.read(executed, as_version=4).cells
           if c.cell_type == "code" and c.source.startswith(NBVAL_MARK)}
    nb = nbformat.read(source, as_version=4)
    updated = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source in ran:
            cell.outputs = ran[cell.source].outputs
            cell.execution_count = ran[cell.source].execution_count
            updated += 1
    if updated:
        tmp = source.with_name(f".{source.name}.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(source)
    return updated


def _first_line(text: str, limit: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def remove_abandoned_staging(out: Path) -> list[Path]:
    """Remove the staging folders that killed builds left in ``out`` (a build removes its own when
    it ends, even on an error; only SIGKILL or a power cut leaves one), saying so. Two builds
    into one ``--out`` at once are not supported: they would also overwrite each other's pages."""
    removed = sorted(out.glob(".staging-*"))
    for folder in removed:
        print(f"removing {folder}: the staging folder of an interrupted build")
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def render(staging: Path, log_path: Path) -> bool:
    """Render the staged book to ``staging/_build/html``; True if Jupyter Book reported no problem.

    ``--all`` because an incremental build can return 0 while a page still fails; ``-W -n
    --keep-going``: every warning (broken reference, missing citation...) fails the build, all of
    them are listed. The full log goes to ``log_path``; warnings and errors are echoed.
    """
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", "--all", str(staging), "-W", "-n", "--keep-going"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    problems = [line.rstrip() for line in log_path.read_text().splitlines()
                if "WARNING" in line or "ERROR" in line or "Traceback" in line]
    for line in problems[:40]:
        print(f"    {line}")
    if len(problems) > 40:
        print(f"    ... and {len(problems) - 40} more; see {log_path}")
    built = (staging / "_build" / "html" / "index.html").is_file()
    return proc.returncode == 0 and built


def replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target`` by renames; an old ``target`` is removed only after the swap."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old)


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for kernels and subprocesses started inside, then restore."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_timings(results: list[ChapterResult], profile: str, path: Path) -> None:
    """``timings.csv``: chapter, profile, status, seconds, error (read by the benchmarks)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TIMINGS_FIELDS)
        writer.writeheader()
        for r in results:
            writer.writerow(dict(chapter=r.chapter, profile=profile, status=r.status,
                                 seconds=f"{r.seconds:.1f}", error=r.error))
    tmp.replace(path)


def timings_table(results: list[ChapterResult]) -> str:
    """The per-chapter times as a plain-text table, slowest chapters easy to spot."""
    width = max([len(r.chapter) for r in results] + [7])
    lines = [f"{'chapter':<{width}}  status  seconds", f"{'-' * width}  ------  -------"]
    lines += [f"{r.chapter:<{width}}  {r.status:<6}  {r.seconds:7.1f}" for r in results]
    lines.append(f"{'total':<{width}}          {sum(r.seconds for r in results):7.1f}")
    return "\n".join(lines)


def build(profile: str = "demo", *, only: str | None = None, out: Path = DEFAULT_OUT,
          keep_runs: bool = False, book_dir: Path = BOOK_DIR, cell_timeout: float | None = None,
          store_outputs: bool = False, edition: str = "teacher") -> int:
    """Execute and render the book; returns the exit status (0: everything succeeded).

    ``edition="student"`` builds the student edition (:mod:`allnet_lib.course`): the staged
    chapters lose their solutions before they run, so the site shows no solution.

    ``store_outputs`` (smoke profile only, since that is what the tests run): after each
    chapter that ran cleanly, write its ``# NBVAL_CHECK_OUTPUT`` cells' outputs into the source.
    """
    out = Path(out).absolute()
    book_dir = Path(book_dir).absolute()
    if not (book_dir / "_toc.yml").is_file():
        print(f"error: no book at {book_dir} (no _toc.yml); run from a clone of the repository "
              "or pass --book", file=sys.stderr)
        return 2
    todo = chapters(book_dir, only)
    if only and not todo:
        print(f"error: --only {only!r} matches no notebook in {book_dir / '_toc.yml'}", file=sys.stderr)
        return 2
    try:
        prof = profiles.get_profile(profile)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    profile = prof.name
    if edition not in EDITIONS:
        print(f"error: edition {edition!r}: choose one of {', '.join(EDITIONS)}", file=sys.stderr)
        return 2
    if store_outputs and (profile != "smoke" or edition != "teacher"):
        print("error: --store-checked-outputs needs --profile smoke and the teacher edition (the tests "
              "check outputs under smoke)",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs"
    if runs.exists() and not keep_runs:
        print(f"starting with empty runs: removing {runs} (use --keep-runs to reuse trained models)")
        shutil.rmtree(runs)
    env = {
        paths.RUNS_ENV: str(runs),
        paths.DATA_ENV: os.environ.get(paths.DATA_ENV) or str(DEFAULT_DATA),
        profiles.PROFILE_ENV: prof.name,
        **{k: os.environ.get(k, v) for k, v in notebook.TF_ENV.items()},  # quiet, oneDNN on
    }
    remove_abandoned_staging(out)
    staging = out / f".staging-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        with _environment(env):
            shutil.copytree(book_dir, staging, ignore=STAGE_IGNORE)
            if edition == "student":
                from allnet_lib import course

                print(f"student edition: {len(course.write_student_edition(staging, staging))} "
                      "notebooks without solutions")
            data_dir, real = notebook.data_dir_for(prof)
            print(f"profile {prof.name} · data {data_dir} ({'real C-NMC' if real else 'synthetic demo set'})"
                  f" · runs {runs}")
            if not real:
                t0 = time.perf_counter()
                notebook.ensure_demo_data(prof, progress=True)
                print(f"demo data ready ({time.perf_counter() - t0:.1f} s)")
            results = []
            for i, entry in enumerate(todo, 1):
                print(f"[{i:2d}/{len(todo)}] {entry} ...", end="", flush=True)
                result = execute_chapter(staging, entry, profile, cell_timeout=cell_timeout,
                                         stderr_log=out / "logs" / f"{entry.replace('/', '__')}.stderr.log")
                results.append(result)
                strip_tf_noise_file(staging / f"{entry}.ipynb")  # before rendering and storing
                print(f" {result.status} ({result.seconds:.1f} s){'  ' + result.error if result.error else ''}",
                      flush=True)
                if store_outputs and result.status == "ok":
                    n = store_checked_outputs(staging / f"{entry}.ipynb", book_dir / f"{entry}.ipynb")
                    if n:
                        print(f"        stored the output of {n} checked cell(s) in {book_dir / entry}.ipynb")
            for entry in chapters(staging):  # executed or not (--only): the page must not show plumbing
                prepare_page(staging / f"{entry}.ipynb", path_replacements(env), executed=entry in todo)
            print(claims.report(runs))  # which of the book's directional claims this run supports
            (out / "claims.txt").write_text(claims.report(runs) + "\n")
            if only:
                print(f"note: --only: {len(todo)} of {len(chapters(book_dir))} chapters executed; "
                      "the others are rendered without outputs")
            print("rendering with Jupyter Book ...", flush=True)
            t0 = time.perf_counter()
            rendered = render(staging, out / "logs" / "jupyter-book.log")
            print(f"rendering {'ok' if rendered else 'FAILED'} ({time.perf_counter() - t0:.1f} s)")
        return _finish(staging, out, profile, results, rendered, time.perf_counter() - started)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _finish(staging: Path, out: Path, profile: str, results: list[ChapterResult], rendered: bool,
            seconds: float) -> int:
    """Swap the new site in (or aside, if anything failed), write timings, print the summary."""
    failed = [r for r in results if r.status != "ok"]
    success = rendered and not failed
    html = staging / "_build" / "html"
    write_timings(results, profile, out / "timings.csv")
    print()
    print(timings_table(results))
    print(f"(written to {out / 'timings.csv'}; whole build {seconds:.0f} s)")
    print()
    if success:
        replace_dir(html, out / "html")
        shutil.rmtree(staging / "_build")
        replace_dir(staging, out / "executed")
        print(f"book: {out / 'html' / 'index.html'}")
        return 0
    if html.is_dir():
        replace_dir(html, out / "html-incomplete")
        print(f"the site was NOT updated; this attempt is at {out / 'html-incomplete' / 'index.html'}")
    shutil.rmtree(staging / "_build", ignore_errors=True)
    replace_dir(staging, out / "executed-incomplete")
    print(f"the executed notebooks of this attempt (errors included) are in {out / 'executed-incomplete'}")
    for r in failed:
        print(f"FAILED {r.chapter}: {r.error}")
    if not rendered:
        print(f"FAILED rendering: see {out / 'logs' / 'jupyter-book.log'}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m allnet_lib.book_build",
        description="Execute the book's chapters under one profile (papermill) and render them (Jupyter Book).",
    )
    parser.add_argument("--profile", default=os.environ.get(profiles.PROFILE_ENV) or "demo",
                        help=f"{', '.join(profiles.PROFILES)} (default: $ALLNET_PROFILE, else demo)")
    parser.add_argument("--only", metavar="GLOB",
                        help="execute only the chapters matching GLOB, e.g. 'theory/*' or "
                             "'experiments/05_training' (the others are rendered unexecuted)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--keep-runs", action="store_true",
                        help="reuse <out>/runs (trained models, records) from the previous build")
    parser.add_argument("--book", type=Path, default=BOOK_DIR, help=f"the book's sources (default {BOOK_DIR})")
    parser.add_argument("--cell-timeout", type=float, default=None, metavar="SECONDS",
                        help="fail a chapter whose single cell runs longer than this (default: no limit)")
    parser.add_argument("--store-checked-outputs", action="store_true",
                        help="(authors, smoke profile) write the outputs of the cells marked "
                             f"'{NBVAL_MARK}' back into the book's source notebooks")
    parser.add_argument("--edition", choices=EDITIONS, default="teacher",
                        help="teacher (with solutions, the default) or student (solutions removed, "
                             "answer cells stubbed; use another --out)")
    args = parser.parse_args(argv)
    return build(args.profile, only=args.only, out=args.out, keep_runs=args.keep_runs,
                 book_dir=args.book, cell_timeout=args.cell_timeout,
                 store_outputs=args.store_checked_outputs, edition=args.edition)


if __name__ == "__main__":
    sys.exit(main())
