"""The project's set-up files agree with each other: one environment, described twice."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.strip().lstrip("-").strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def test_environment_yml_pins_match_constraints():
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    environment = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert constraints, "constraints.txt holds no pins"
    assert environment == constraints


def test_every_dependency_is_pinned_in_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    pinned = _pins((ROOT / "constraints.txt").read_text().splitlines())
    names = {re.split(r"[<>=!\[ ;]", req, maxsplit=1)[0].lower().replace("_", "-") for req in wanted}
    assert names - set(pinned) == set(), "dependencies without a pin in constraints.txt"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [
        line.strip()
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("set ")
    ]
    assert commands == ["./run test"]
    assert "./run test" in readme and "./run book" in readme


def test_console_script_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "allnet_lib.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "usage: allnet" in result.stdout


# ---- issue 11: the routes a reader takes (Colab, the published book, licences) ---------------

def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_python_versions_colab_and_ci_use_are_allowed():
    from packaging.specifiers import SpecifierSet

    allowed = SpecifierSet(_project()["requires-python"])
    for version in ("3.11", "3.12", "3.13"):
        assert allowed.contains(version), f"requires-python refuses {version} (Colab runs 3.13)"


def test_colab_environment_covers_the_library_dependencies():
    """tests/colab/packages.txt (Colab's preinstalled versions) holds every dependency Colab has,
    so ./run test-colab really tests Colab's versions; Augmentor is the one Colab lacks."""
    colab = {name.lower().replace("_", "-") for name in _pins((ROOT / "tests/colab/packages.txt").read_text().splitlines())}
    needed = {re.split(r"[<>=!\[ ;]", req, maxsplit=1)[0].lower().replace("_", "-") for req in _project()["dependencies"]}
    assert needed - colab == {"augmentor"}
    assert {"tensorflow", "keras", "jinja2", "ipykernel", "nbclient"} <= colab


def test_workflow_runs_exactly_the_readme_main_command_and_publishes_its_html():
    import yaml

    from allnet_lib import book_build

    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("```bash", 1)[1].split("```", 1)[0]
    main_command = quick_start.strip().splitlines()[0].split("#")[0].strip()
    assert main_command == "./run book"
    workflow = yaml.safe_load((ROOT / ".github/workflows/book.yml").read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert [step["run"] for step in steps if "run" in step] == [main_command]
    published = [step["with"]["path"] for step in steps if "upload-pages-artifact" in step.get("uses", "")]
    assert published == [(book_build.DEFAULT_OUT / "html").relative_to(ROOT).as_posix()]
    assert any("deploy-pages" in step.get("uses", "") for step in steps)


def test_book_config_publishes_with_buttons():
    import yaml

    from allnet_lib import repository

    config = yaml.safe_load((ROOT / "book/_config.yml").read_text())
    s = repository.settings()
    assert config["html"]["baseurl"] == s.pages_url
    assert config["repository"] == {"url": s.url, "path_to_book": "book", "branch": s.ref}
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["sphinx"]["config"]["html_theme_options"]["use_download_button"] is True
    assert "CC BY 4.0" in config["html"]["extra_footer"]


def test_licences_citation_and_contributing_guide():
    import yaml

    from allnet_lib import repository

    project = _project()
    assert project["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    text_licence = (ROOT / "LICENSE-text.md").read_text()
    assert "CC BY 4.0" in text_licence and "creativecommons.org/licenses/by/4.0" in text_licence
    readme = (ROOT / "README.md").read_text()
    assert "LICENSE-text.md" in readme and "CC BY 4.0" in readme
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["message"] and citation["authors"]
    assert citation["version"] == project["version"] and citation["license"] == project["license"]
    assert citation["repository-code"] == repository.settings().url
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for needed in ("./run test", "./run test-colab", "chapter_template.ipynb", "CHAPTER_GUIDE.md",
                   "python -m allnet_lib.repository --write"):
        assert needed in contributing, needed
