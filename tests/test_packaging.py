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
