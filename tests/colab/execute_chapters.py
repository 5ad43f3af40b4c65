"""Execute every chapter the way Google Colab does, in a Colab-like environment (`./run test-colab`).

Run by the Python of a fresh virtual environment that holds Colab's preinstalled versions
(``tests/colab/packages.txt``) and NOT the course library. For each chapter, in the book's order:

1. a copy of the notebook is made whose install cell is unchanged except for the install spec:
   ``allnet @ git+<repository>@v<version>`` (the published one, from ``pyproject.toml``) is
   pointed at this clone (``--local-spec``, e.g. ``allnet @ git+file:///path/to/clone@<commit>``);
2. it is executed top to bottom in an ipykernel of this environment by nbclient, as Colab
   executes a notebook (no papermill: ``PROFILE`` stays ``None``, the profile comes from
   ``ALLNET_PROFILE``), with the working directory at the chapter's folder;
3. a failing cell, or pip printing an error in the install cell (``%pip`` never raises, on Colab
   either), fails the chapter; the next chapter still runs.

The first chapter's install cell installs the library; later chapters find it, as on one Colab
runtime. The data and trained runs go to ``<work>/data`` (``ALLNET_DATA``; runs in its ``runs/``,
where chapter 5 leaves them for chapters 6-9, as on Colab). At the end, Colab's own versions must
be unchanged (the install may add packages, never replace Colab's TensorFlow, Keras, NumPy...).

Writes ``<work>/executed/<chapter>.ipynb`` and ``<work>/timings.csv``; exit status 0 only if every
chapter ran and no preinstalled version changed. Only the standard library, PyYAML, nbformat and
nbclient are imported here (Colab has them; the course library is not installed yet).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)")


def toc_chapters(book: Path) -> list[str]:
    """The notebook pages of ``_toc.yml`` in reading order (as ``allnet_lib.book_build.chapters``)."""
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    entries = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                entries.append(str(Path(item["file"]).with_suffix("")) if item["file"].endswith((".md", ".ipynb"))
                               else item["file"])
            walk(item.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [e for e in entries if (book / f"{e}.ipynb").is_file()]


def pinned(packages_txt: Path) -> dict[str, str]:
    pins = {}
    for line in packages_txt.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[match[1]] = match[2]
    return pins


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def point_install_cell(nb, published: str, local: str) -> None:
    """Replace the published install spec by the local one in the chapter's install cell (the
    first code cell that installs with ``%pip``); raise if the cell does not use ``published``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "%pip install" in cell.source:
            if f'"{published}"' not in cell.source:
                raise ValueError(f"the install cell does not install {published!r}:\n{cell.source}")
            cell.source = cell.source.replace(f'"{published}"', f'"{local}"')
            return
    raise ValueError("no install cell (a code cell with %pip install) found")


def pip_error(nb) -> str:
    """pip's error printed by the install cell, if any ("ERROR: ..." lines)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "%pip install" in cell.source:
            text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
            errors = [line for line in text.splitlines() if line.startswith("ERROR")]
            return " / ".join(errors)
    return ""


def execute(path: Path, out: Path, published: str, local: str, timeout: int) -> tuple[str, float, str]:
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    status, error = "ok", ""
    try:
        point_install_cell(nb, published, local)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    except CellExecutionError as exc:
        status = "failed"
        error = f"{getattr(exc, 'ename', '')}: {_first_line(getattr(exc, 'evalue', '') or str(exc))}"
    except (CellTimeoutError, DeadKernelError, ValueError, RuntimeError) as exc:
        status, error = "failed", f"{type(exc).__name__}: {_first_line(str(exc))}"
    pip = pip_error(nb)
    if pip:
        status, error = "failed", f"pip: {pip}" + (f"; then {error}" if error else "")
    seconds = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return status, seconds, error


def _first_line(text: str, limit: int = 240) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, required=True, help="the book folder of the clone")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (emptied first)")
    parser.add_argument("--published-spec", required=True, help="the install spec the chapters carry")
    parser.add_argument("--local-spec", required=True, help="what to install instead (this clone)")
    parser.add_argument("--packages", type=Path, required=True, help="Colab's versions (packages.txt)")
    parser.add_argument("--only", help="glob of chapters, e.g. 'experiments/0[5-9]*'")
    parser.add_argument("--cell-timeout", type=int, default=900)
    args = parser.parse_args(argv)

    if importlib.util.find_spec("allnet_lib") is not None:
        print("error: allnet_lib is already installed in this environment; the test needs a clean "
              "one (the chapters' install cell must install it)", file=sys.stderr)
        return 2
    work = args.work.absolute()
    if work.exists():
        shutil.rmtree(work)
    book = work / "book"
    shutil.copytree(args.book, book, ignore=shutil.ignore_patterns("_build", ".jupyter_cache", ".ipynb_checkpoints"))
    os.environ.update({"ALLNET_PROFILE": "smoke", "ALLNET_DATA": str(work / "data")})
    os.environ.pop("ALLNET_RUNS", None)  # Colab: runs under the data folder, shared by the chapters
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # the kernel's debugger notice on our terminal
    todo = toc_chapters(book)
    if args.only:
        todo = [c for c in todo if fnmatch.fnmatch(c, args.only)]
    before = {name: installed_version(name) for name in pinned(args.packages)}
    print(f"Colab-like environment: Python {platform.python_version()} at {sys.executable}")
    print(f"install cell: {args.published_spec!r} -> {args.local_spec!r}; profile smoke; data {work / 'data'}")
    rows = []
    for i, chapter in enumerate(todo, 1):
        print(f"[{i:2d}/{len(todo)}] {chapter} ...", end="", flush=True)
        status, seconds, error = execute(book / f"{chapter}.ipynb", work / "executed" / f"{chapter}.ipynb",
                                         args.published_spec, args.local_spec, args.cell_timeout)
        rows.append({"chapter": chapter, "status": status, "seconds": f"{seconds:.1f}", "error": error})
        print(f" {status} ({seconds:.1f} s){'  ' + error if error else ''}", flush=True)
    after = {name: installed_version(name) for name in before}
    changed = {n: (before[n], after[n]) for n in before if before[n] != after[n]}
    with open(work / "timings.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["chapter", "status", "seconds", "error"])
        writer.writeheader()
        writer.writerows(rows)
    failed = [r for r in rows if r["status"] != "ok"]
    total = sum(float(r["seconds"]) for r in rows)
    print(f"\n{len(rows) - len(failed)} of {len(rows)} chapters ran; {total:.0f} s of chapter execution "
          f"(timings in {work / 'timings.csv'}, executed notebooks in {work / 'executed'})")
    allnet = installed_version("allnet")
    print(f"allnet {allnet} installed by the chapters' install cell" if allnet else
          "error: allnet is not installed after the chapters ran")
    for name, (old, new) in changed.items():
        print(f"error: the install changed Colab's {name}: {old} -> {new}")
    for r in failed:
        print(f"FAILED {r['chapter']}: {r['error']}")
    return 0 if rows and not failed and not changed and allnet else 1


if __name__ == "__main__":
    sys.exit(main())
