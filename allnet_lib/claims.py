"""The book's directional claims, checked on the run that renders it and listed in one place.

A sentence such as "the random image split scores higher on people it has seen" is only true of a
run that measured it. Chapters therefore choose such sentences from the results (the verdict
functions of :mod:`allnet_lib.compare` and :mod:`allnet_lib.explain`), and record each check with
:func:`check`: which claim, whether this run supports it, and the numbers behind the answer. The
book build (:mod:`allnet_lib.book_build`) prints every recorded check at the end, so a reader of
the build log sees at a glance which of the book's lessons this run showed and which it did not.

:data:`CLAIMS` is the list of checks; a chapter cannot record a check that is not on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Every directional claim the book checks: name -> the claim, as a sentence.
CLAIMS: dict[str, str] = {
    "leakage_cnn": ("the same test cells score higher when the model saw their people (random image "
                    "split) than when it did not, for the profile's CNN (positive gap in most seeds "
                    "and on average)"),
    "leakage_cnn_fitted": "the leakage experiment's CNN fitted its training part in every seed",
    "leakage_classical": ("the same test cells score higher when the model saw their people (random "
                          "image split) than when it did not, for the classical baseline (most seeds "
                          "and on average)"),
    "cnns_beat_always_all": "every CNN's balanced accuracy on the test subjects is above 0.5 (always-ALL)",
    "cnn_matches_classical": ("at least one CNN's balanced accuracy on the test subjects is at or above "
                              "the best classical baseline's"),
    "intervals_trusted": "the test subjects are enough (per class) for trusted bootstrap intervals",
    "gradcam_on_cell": "every model puts more of its Grad-CAM heat on the cell than the cell's share of the image",
}
CHECKS_NAME = "claims.jsonl"


def checks_path(runs_dir=None) -> Path:
    """Where a run's checks are kept: ``<runs_dir>/claims.jsonl`` (default: ``paths.runs_root()``)."""
    from allnet_lib.paths import runs_root

    return Path(runs_dir if runs_dir is not None else runs_root()) / CHECKS_NAME


def check(name: str, holds: bool | None, detail: str, *, runs_dir=None, chapter: str | None = None) -> bool | None:
    """Record whether claim ``name`` holds in this run (None: could not be checked), with the
    numbers behind it (``detail``), print one line saying so, and return ``holds``.

    A later check of the same claim replaces the earlier one (a chapter run twice)."""
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; the checked claims are: {', '.join(CLAIMS)}. "
                         "Add a new one to allnet_lib.claims.CLAIMS first.")
    if holds is not None:
        holds = bool(holds)
    path = checks_path(runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = [c for c in read_checks(runs_dir) if c["name"] != name]
    kept.append({"name": name, "claim": CLAIMS[name], "holds": holds, "detail": str(detail),
                 "chapter": chapter, "profile": os.environ.get("ALLNET_PROFILE")})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(c) + "\n" for c in kept))
    os.replace(tmp, path)
    word = {True: "holds", False: "does NOT hold", None: "could not be checked"}[holds]
    print(f"check '{name}': {word} in this run ({detail})")
    return holds


def read_checks(runs_dir=None) -> list[dict]:
    """The checks recorded so far in ``runs_dir`` (an empty list when there are none)."""
    path = checks_path(runs_dir)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(runs_dir=None) -> str:
    """The recorded checks as text, one line each, in the order of :data:`CLAIMS`."""
    checks = {c["name"]: c for c in read_checks(runs_dir)}
    if not checks:
        return "no claims were checked in this run"
    lines = []
    for name in CLAIMS:
        c = checks.get(name)
        if c is None:
            lines.append(f"  [  not run ] {name}: {CLAIMS[name]}")
            continue
        mark = {True: "   holds   ", False: "DOES NOT HOLD", None: " not checked "}[c["holds"]]
        lines.append(f"  [{mark}] {name}: {c['detail']}")
    held = sum(c["holds"] is True for c in checks.values())
    return f"claims checked on this run: {held} of {len(checks)} hold\n" + "\n".join(lines)
