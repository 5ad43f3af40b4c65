"""Benchmark 3, the book: how long executing each chapter took in the last book builds.

Nothing is run here: ``python -m allnet_lib.book_build`` (``./run book``) writes
``<out>/timings.csv`` (chapter, profile, status, seconds, error) after every build, and this
benchmark collects the newest one per profile from ``build/*/timings.csv``: ``./run book`` writes
``build/book/`` (demo profile by default), the book tests write ``build/book-smoke/``.
A second profile overwrites ``build/book/timings.csv``, so to keep both, give each its own
``--out``::

    ALLNET_PROFILE=smoke ./run book --out build/book-smoke
    ./run book                          # demo profile, build/book/

Targets (executing the chapters; rendering with Jupyter Book comes on top): the whole book under
``smoke`` in under 10 minutes, under ``demo`` in under 30 minutes; every chapter under ``smoke``
in under 60 s (book/CHAPTER_GUIDE.md).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from allnet_lib.profiles import cheapest_first
from benchmarks.common import ROOT, Config, Table, rounded

TARGET_MINUTES = {"smoke": 10, "demo": 30}
CHAPTER_TARGET_S = {"smoke": 60}
HOW = ("no book timings found: run `ALLNET_PROFILE=smoke ./run book --out build/book-smoke` "
       "and/or `./run book` (demo profile), then `python -m benchmarks --only book`")


def find_timings(root: Path = ROOT) -> dict[str, tuple[Path, pd.DataFrame]]:
    """The newest timings.csv per profile under ``root/build``: {profile: (path, table)}."""
    found: dict[str, tuple[Path, pd.DataFrame]] = {}
    candidates = sorted((root / "build").glob("*/timings.csv"), key=lambda p: p.stat().st_mtime)
    for path in candidates:  # oldest first: newer files replace older ones
        try:
            frame = pd.read_csv(path, dtype={"chapter": str, "profile": str, "status": str},
                                keep_default_na=False)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        if not {"chapter", "profile", "status", "seconds"} <= set(frame.columns) or frame.empty:
            continue
        frame["seconds"] = pd.to_numeric(frame["seconds"], errors="coerce")
        for profile, part in frame.groupby("profile", sort=False):
            found[str(profile)] = (path, part.reset_index(drop=True))
    return found


def run(cfg: Config, root: Path = ROOT) -> list[Table]:
    found = find_timings(root)
    title = "The book: seconds to execute each chapter, per profile"
    totals_title = "The book: total execution time per profile vs the targets"
    if not found:
        cfg.say(f"  {HOW}")
        empty = pd.DataFrame([{"chapter": "(none)", "note": HOW}])
        totals = pd.DataFrame([{"profile": "(none)", "note": HOW}])
        return [Table("book", title, empty, [HOW]), Table("book_totals", totals_title, totals, [HOW])]

    profiles = cheapest_first(found)
    chapters: list[str] = []
    for profile in profiles:
        for chapter in found[profile][1]["chapter"]:
            if chapter not in chapters:
                chapters.append(chapter)
    wide = pd.DataFrame({"chapter": chapters})
    total_rows = []
    for profile in profiles:
        path, part = found[profile]
        per = part.drop_duplicates("chapter", keep="last").set_index("chapter")
        wide[f"{profile}_s"] = wide["chapter"].map(per["seconds"])
        wide[f"{profile}_status"] = wide["chapter"].map(per["status"]).fillna("not run")
        limit = CHAPTER_TARGET_S.get(profile)
        if limit:
            wide[f"{profile}_under_{limit}s"] = [
                "" if pd.isna(v) else ("yes" if v < limit else "NO") for v in wide[f"{profile}_s"]]
        seconds = float(part["seconds"].sum())
        failed = int((part["status"] != "ok").sum())
        target = TARGET_MINUTES.get(profile)
        measured = datetime.fromtimestamp(path.stat().st_mtime).astimezone()
        total_rows.append({
            "profile": profile, "chapters": int(len(part)), "failed": failed,
            "total_s": seconds, "total_min": seconds / 60,
            "target_min": target if target else "",
            "target": ("met" if seconds / 60 < target and not failed else "NOT met")
            if target else "no target",
            "slowest_chapter": part.loc[part["seconds"].idxmax(), "chapter"],
            "slowest_s": float(part["seconds"].max()),
            "measured": measured.strftime("%Y-%m-%d %H:%M %Z"),
            "file": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
        })
    total = {"chapter": "total"}
    for profile in profiles:
        total[f"{profile}_s"] = float(found[profile][1]["seconds"].sum())
        total[f"{profile}_status"] = ""
    wide = pd.concat([wide, pd.DataFrame([total])], ignore_index=True).fillna("")
    totals = pd.DataFrame(total_rows)
    notes = [
        "From the newest build/*/timings.csv per profile (written by allnet_lib.book_build); the "
        "measured column is that file's time. Chapter execution only: rendering with Jupyter Book "
        "and making the demo data come on top.",
        f"Targets: whole book under smoke < {TARGET_MINUTES['smoke']} min, under demo < "
        f"{TARGET_MINUTES['demo']} min; every chapter under smoke < 60 s.",
    ]
    missing = [p for p in TARGET_MINUTES if p not in found]
    if missing:
        notes.append(f"No timings for {', '.join(missing)}: "
                     + "; ".join(f"`ALLNET_PROFILE={p} ./run book --out build/book-{p}`"
                                 for p in missing) + ", then `python -m benchmarks --only book`.")
    return [Table("book", title, rounded(wide, 4), notes),
            Table("book_totals", totals_title, rounded(totals, 4), notes[:2])]
