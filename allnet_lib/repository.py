"""Where the project lives, set in one place: ``pyproject.toml``'s ``[project.urls] Repository``.

Everything that names the repository is derived from that line and the project's version:

- the install spec of every chapter's first cell, ``allnet @ git+<repository>@v<version>``: a
  release tag, never a moving branch, so a chapter opened on Colab installs the library it was
  written against;
- ``book/_config.yml``: ``repository.url``, ``repository.branch`` (the same tag: Colab launch
  buttons open the chapters of that release) and ``html.baseurl`` (the GitHub Pages address);
- every other mention of the repository or its Pages address in the tracked text files (README,
  landing page, CITATION.cff, the ``allnet`` command's issues link...).

A fork changes the Repository line and runs ``python -m allnet_lib.repository --write``;
``tests/test_packaging.py`` fails while any file disagrees with the setting.

    python -m allnet_lib.repository            # list what disagrees with the setting (exit 1 if any)
    python -m allnet_lib.repository --write    # rewrite those places from the setting
    python -m allnet_lib.repository --spec     # print the chapters' install spec

Only the standard library is used: ``./run test-colab`` runs this file as a script with a Python
that does not have the library installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = REPO_ROOT / "pyproject.toml"
#: Text files in which the repository's address is looked for (tracked or new, not ignored).
TEXT_SUFFIXES = (".md", ".ipynb", ".yml", ".yaml", ".cff", ".py", ".txt", ".toml", ".cfg")
#: Never rewritten: the setting itself, this module, and the tests (they hold example addresses).
SKIP = ("pyproject.toml", "allnet_lib/repository.py", "tests/")
INSTALL_CELL_RE = re.compile(r'%pip install -q "(allnet @ [^"]+)"')


@dataclass(frozen=True)
class Settings:
    """The repository's address and the version to install."""

    url: str  # https://github.com/OWNER/NAME
    version: str

    @property
    def owner(self) -> str:
        return self.url.rstrip("/").split("/")[-2]

    @property
    def name(self) -> str:
        return self.url.rstrip("/").split("/")[-1]

    @property
    def ref(self) -> str:
        """The release tag the chapters install and the launch buttons open: ``v<version>``."""
        return f"v{self.version}"

    @property
    def install_spec(self) -> str:
        return f"allnet @ git+{self.url}@{self.ref}"

    @property
    def pages_url(self) -> str:
        """Where GitHub Pages publishes the book (``html.baseurl``)."""
        return f"https://{self.owner.lower()}.github.io/{self.name}/"

    @property
    def issues_url(self) -> str:
        return f"{self.url}/issues"


def settings(pyproject: Path = PYPROJECT) -> Settings:
    """Read the setting (``[project.urls] Repository``) and the version from ``pyproject.toml``."""
    pyproject = Path(pyproject)
    project = tomllib.loads(pyproject.read_text())["project"]
    url = (project.get("urls") or {}).get("Repository", "")
    if not re.fullmatch(r"https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", url):
        raise ValueError(f"{pyproject}: [project.urls] Repository must be https://github.com/OWNER/NAME "
                         f"(the one place the repository is set), got {url!r}")
    return Settings(url=url, version=project["version"])


def installed_settings() -> Settings | None:
    """The same, from an installed package's metadata (no clone needed); ``None`` if unknown."""
    from importlib import metadata

    try:
        meta = metadata.metadata("allnet")
    except metadata.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository":
            return Settings(url=url.strip(), version=meta["Version"])
    return None


def _patterns(s: Settings, names: tuple[str, ...]) -> list[tuple[re.Pattern, str]]:
    """(pattern, replacement) for every way a file names the repository; applied in order."""
    name = "|".join(re.escape(n) for n in names)
    owner = r"[A-Za-z0-9_.-]+"
    return [
        # the chapters' install spec (with or without a ref)
        (re.compile(rf"allnet @ git\+https://github\.com/{owner}/(?:{name})(?:@[^\s\"'\\]+)?"), s.install_spec),
        # the Pages address
        (re.compile(rf"https://{owner}\.github\.io/(?:{name})/?(?=[\s\"'\\)]|$)", re.M), s.pages_url),
        # the repository itself, and anything below it (/issues, /blob/...)
        (re.compile(rf"https://github\.com/{owner}/(?:{name})(?=[/\s\"'\\)#.,:]|$)", re.M), s.url),
    ]


def _config_fixes(text: str, s: Settings) -> str:
    """``book/_config.yml``: repository.url, repository.branch and html.baseurl from the setting."""
    wanted = {("repository", "url"): s.url, ("repository", "branch"): s.ref, ("html", "baseurl"): s.pages_url}
    section, out = None, []
    for line in text.splitlines(keepends=True):
        top = re.match(r"^([A-Za-z_][\w-]*):", line)
        if top:
            section = top[1]
        field = re.match(r"^(  )([\w-]+):\s*(\S.*?)?\s*(#.*)?$", line.rstrip("\n"))
        if field and (section, field[2]) in wanted:
            comment = f"  {field[4]}" if field[4] else ""
            line = f"  {field[2]}: {wanted[(section, field[2])]}{comment}\n"
        out.append(line)
    return "".join(out)


def text_files(root: Path = REPO_ROOT) -> list[Path]:
    """The repository's text files (git's tracked and new, not ignored; all files without git)."""
    root = Path(root)
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                cwd=root, capture_output=True, text=True, check=True).stdout.splitlines()
        files = [root / f for f in listed]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in root.rglob("*") if p.is_file()
                 and not any(part in {".git", ".venv", "build", "_build"} for part in p.parts)]
    keep = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if path.suffix in TEXT_SUFFIXES and path.is_file() and not rel.startswith(SKIP):
            keep.append(path)
    return sorted(keep)


def fixed_text(path: Path, text: str, s: Settings) -> str:
    """``text`` (of ``path``) with every mention of the repository made to agree with ``s``."""
    for pattern, replacement in _patterns(s, tuple(dict.fromkeys(("allnet", s.name)))):
        text = pattern.sub(replacement, text)
    if path.name == "_config.yml":
        text = _config_fixes(text, s)
    return text


def disagreements(root: Path = REPO_ROOT, s: Settings | None = None) -> dict[Path, list[str]]:
    """``{file: [lines that differ from the setting]}``; empty when everything agrees."""
    s = s or settings(Path(root) / "pyproject.toml")
    found = {}
    for path in text_files(root):
        text = path.read_text(encoding="utf-8")
        fixed = fixed_text(path, text, s)
        if fixed != text:
            old, new = text.splitlines(), fixed.splitlines()
            found[path] = [f"{a.strip()}  ->  {b.strip()}" for a, b in zip(old, new) if a != b]
    return found


def write(root: Path = REPO_ROOT, s: Settings | None = None) -> list[Path]:
    """Rewrite every disagreeing file in place (only the addresses change; byte-for-byte otherwise)."""
    s = s or settings(Path(root) / "pyproject.toml")
    changed = []
    for path in disagreements(root, s):
        text = path.read_text(encoding="utf-8")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(fixed_text(path, text, s), encoding="utf-8")
        tmp.replace(path)
        changed.append(path)
    return changed


def install_cell_spec(notebook_json: dict) -> str | None:
    """The spec a chapter's install cell installs (its first ``%pip install -q "..."``), or None."""
    for cell in notebook_json.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            match = INSTALL_CELL_RE.search(source)
            if match:
                return match[1]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m allnet_lib.repository", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the disagreeing files from the setting")
    group.add_argument("--spec", action="store_true", help="print the chapters' install spec")
    args = parser.parse_args(argv)
    s = settings()
    if args.spec:
        print(s.install_spec)
        return 0
    if args.write:
        for path in write(REPO_ROOT, s):
            print(f"rewrote {path.relative_to(REPO_ROOT)}")
        return 0
    found = disagreements(REPO_ROOT, s)
    for path, lines in found.items():
        print(f"{path.relative_to(REPO_ROOT)}:")
        for line in lines[:5]:
            print(f"    {line}")
    if found:
        print(f"{len(found)} file(s) disagree with {PYPROJECT.name}'s Repository ({s.url}, {s.ref}); "
              "fix them with: python -m allnet_lib.repository --write")
        return 1
    print(f"everything agrees with {s.url} ({s.install_spec})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
