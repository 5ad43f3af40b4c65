"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--out DIR]``: run, print, write tables.

Writes to ``--out`` (default ``benchmarks/results``; with ``--quick``,
``benchmarks/_work/results-quick``, so tiny runs never replace the committed results):

* ``<table>.csv``, one per table;
* ``runs.csv``: for each table, when and with which command it was measured, on which machine
  (CPU, cores, memory, load, versions), and its title and notes;
* ``results.md``: all tables of ``runs.csv`` with their machine, date and command.

``--only`` reruns some benchmarks and keeps the other tables already in ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

import pandas as pd

from benchmarks import BENCHMARKS, DEFAULT, TABLE_ORDER

from allnet_lib.notebook import quiet_tensorflow

quiet_tensorflow()  # TF_CPP_MIN_LOG_LEVEL=3 and oneDNN on, as everywhere (notebook.TF_ENV)

MACHINE_KEYS = ("cpu", "cores_logical", "cores_physical", "cores_usable", "ram_gb",
                "ram_available_gb", "load_1min_at_start", "load_1min_at_end", "os", "python",
                "tensorflow", "keras", "keras_backend", "jax", "numpy", "pillow", "augmentor", "gpu")
RUN_COLUMNS = ("table", "title", "date", "command", "quick", "seconds", *MACHINE_KEYS, "notes")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="allnet's benchmarks: input pipeline, training throughput, book build times, "
                    "scaling. Prints tables and writes CSVs and results.md.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (about a minute in all): checks that everything runs; "
                             "the timings mean nothing")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help=f"run only these benchmarks: {', '.join(BENCHMARKS)} (gpu: the GPU "
                             "variants alone, for a GPU machine; default: all but gpu)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default benchmarks/results; with --quick "
                             "benchmarks/_work/results-quick)")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for demo data and Augmentor output "
                             "(default benchmarks/_work, git-ignored)")
    parser.add_argument("--in-process", action="store_true",
                        help="run training jobs in this process instead of one fresh Python per "
                             "job (faster, but peak memory then mixes between models; implied by "
                             "--quick)")
    parser.add_argument("--models", metavar="NAME[,NAME]",
                        help="training and gpu: only these models (default: all five)")
    parser.add_argument("--no-progress", action="store_true", help="print only the tables")
    args = parser.parse_args(argv)
    names = list(DEFAULT)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    return args, names


def main(argv=None) -> int:
    from benchmarks import common

    argv = sys.argv[1:] if argv is None else list(argv)
    args, names = parse_args(argv)
    out = args.out or (common.QUICK_RESULTS_DIR if args.quick else common.RESULTS_DIR)
    cfg = common.Config(quick=args.quick, out=Path(out).absolute(),
                        work=Path(args.work or common.WORK_DIR).absolute(),
                        progress=not args.no_progress, in_process=args.in_process or args.quick,
                        models=tuple(m.strip() for m in (args.models or "").split(",") if m.strip()))
    cfg.out.mkdir(parents=True, exist_ok=True)
    cfg.work.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmarks", *map(shlex.quote, argv)])
    machine = common.machine_info()
    print(f"allnet benchmarks{' (QUICK: tiny sizes, timings mean nothing)' if cfg.quick else ''}: "
          f"{', '.join(names)}")
    print(f"machine: {machine['cpu']}, {machine['cores_usable']} usable cores, "
          f"{machine['ram_gb']} GB RAM, load {machine['load_1min_at_start']}, GPU: {machine['gpu']}; "
          f"TensorFlow {machine['tensorflow']}, Keras {machine['keras']}")
    print(f"results: {cfg.out}", flush=True)
    failed = []
    for name in names:
        print(f"\n== {name} ==", flush=True)
        started = time.perf_counter()
        date = common.timestamp()
        try:
            tables = importlib.import_module(BENCHMARKS[name]).run(cfg)
        except Exception:  # one broken benchmark must not lose the others' results
            traceback.print_exc()
            failed.append(name)
            continue
        seconds = time.perf_counter() - started
        machine_now = {**machine, "load_1min_at_start": machine["load_1min_at_start"],
                       "load_1min_at_end": common.load_now()}
        for table in tables:
            write_table(cfg.out, table, date=date, command=command, quick=cfg.quick,
                        seconds=seconds, machine=machine_now)
            print()
            print(render_table(table))
        print(f"({name}: {seconds:.0f} s)", flush=True)
    write_results_md(cfg.out)
    print(f"\nwrote {cfg.out / 'results.md'}")
    if failed:
        print(f"FAILED: {', '.join(failed)} (traceback above)", file=sys.stderr)
        return 1
    return 0


def render_table(table) -> str:
    from benchmarks.common import to_markdown

    lines = [f"### {table.title}", "", to_markdown(table.frame)]
    if table.notes:
        lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines)


def write_table(out: Path, table, *, date: str, command: str, quick: bool, seconds: float,
                machine: dict) -> None:
    """``<name>.csv`` and the table's row of ``runs.csv`` (written via temporary files)."""
    runs_path = out / "runs.csv"
    runs = pd.read_csv(runs_path, dtype=str) if runs_path.is_file() else pd.DataFrame(columns=RUN_COLUMNS)
    frame, previous = table.frame, runs[runs["table"] == table.name]
    if table.replaces and (out / f"{table.name}.csv").is_file() and len(previous):
        column, values = table.replaces
        old = pd.read_csv(out / f"{table.name}.csv")
        if column in old:
            kept = old[~old[column].isin(values)]
            frame = pd.concat([kept, frame], ignore_index=True)
            order = {v: i for i, v in enumerate(dict.fromkeys(list(old[column]) + list(values)))}
            frame = frame.sort_values(column, key=lambda c: c.map(order), kind="stable")
            if len(kept):
                command = f"{previous.iloc[0]['command']} + {command}"
    _atomic_csv(frame, out / f"{table.name}.csv")
    runs = runs[runs["table"] != table.name]
    row = {"table": table.name, "title": table.title, "date": date, "command": command,
           "quick": bool(quick), "seconds": round(seconds, 1),
           **{k: machine.get(k, "") for k in MACHINE_KEYS}, "notes": "\n".join(table.notes)}
    runs = pd.concat([runs, pd.DataFrame([row])], ignore_index=True)
    order = {name: i for i, name in enumerate(TABLE_ORDER)}
    runs = runs.sort_values("table", key=lambda s: s.map(lambda n: order.get(n, len(order))))
    _atomic_csv(runs.reindex(columns=list(RUN_COLUMNS)), runs_path)


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def write_results_md(out: Path) -> Path:
    """results.md from runs.csv and the CSVs: every table with its machine, date and command."""
    from benchmarks.common import to_markdown

    runs_path = out / "runs.csv"
    if not runs_path.is_file():
        return runs_path
    runs = pd.read_csv(runs_path, dtype=str).fillna("")
    lines = ["# allnet benchmarks", "",
             "Written by `python -m benchmarks` (see `benchmarks/README.md`); do not edit by hand. "
             "Each table says when, with which command and on which machine it was measured.", ""]
    identity = ["cpu", "cores_usable", "ram_gb", "gpu", "keras_backend", "tensorflow", "keras"]
    if len(runs[identity].drop_duplicates()) == 1:
        lines += ["## Machine", "", to_markdown(_machine_frame(runs.iloc[0])), ""]
    else:
        lines += ["## Machines", "", "The tables were measured on different machines:", "",
                  to_markdown(runs[["table", "date", *identity]]), ""]
    if (runs["quick"].str.lower() == "true").any():
        lines += ["**Some tables below come from a `--quick` run (tiny sizes): their timings mean "
                  "nothing.**", ""]
    for run in runs.itertuples():
        path = out / f"{run.table}.csv"
        if not path.is_file():
            continue
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        lines += [f"## {run.title}", "",
                  f"Measured {run.date} with `{run.command}`"
                  f"{' (QUICK)' if run.quick.lower() == 'true' else ''}; machine load (1-min "
                  f"average) {run.load_1min_at_start} at the start, {run.load_1min_at_end} at the "
                  f"end; benchmark took {run.seconds} s. File: `{run.table}.csv`.", "",
                  to_markdown(frame), ""]
        lines += [f"- {note}" for note in str(run.notes).splitlines() if note.strip()]
        lines.append("")
    path = out / "results.md"
    tmp = path.with_name(".results.md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def _machine_frame(run) -> pd.DataFrame:
    keys = [k for k in MACHINE_KEYS if not k.startswith("load")]
    return pd.DataFrame({"": keys, "value": [run[k] for k in keys]})


if __name__ == "__main__":
    sys.exit(main())
