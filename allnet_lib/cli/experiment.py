"""Experiment subcommands of ``allnet``: train, evaluate, compare, leakage, baseline.

Each is a thin layer over :mod:`allnet_lib.train`, :mod:`allnet_lib.evaluate` and
:mod:`allnet_lib.compare`, so the command line does exactly what the book does. Without
``--data`` the data follows the book's rule (``paths.data_dir_for``): the real C-NMC data under
the ``seed`` profile when it is there, otherwise the synthetic demo set at the profile's size
(made on first use, which is said). Finished work is reused: a second identical ``compare`` or
``leakage`` only reads its records back, and says so.

Exit codes: the table ``allnet_lib.cli.EXIT_CODES`` (0 ok; 1 bad input found: no usable image
in the data; 2 usage error: unknown model or profile, input too small, no data, a run folder
holding another experiment). Every image is opened before training: unreadable files are listed
(path, reason) and left out, never found at load time.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import uuid
from pathlib import Path

from allnet_lib import paths
from allnet_lib.profiles import PROFILES
from allnet_lib.cli import BadData, UserError

from allnet_lib.split import DEFAULT_SEEDS, SPLIT_METHODS  # noqa: E402,F401  (the split registry)
FETCH_HINT = ("make the synthetic demo set with `allnet demo-data`, or get the real C-NMC data "
              "with `python data_scripts/fetch_cnmc.py` (see data_scripts/README.md)")


def register(subparsers) -> None:
    """Add train, evaluate, compare, leakage and baseline to the ``allnet`` parser."""
    _register_train(subparsers)
    _register_evaluate(subparsers)
    _register_compare(subparsers)
    _register_leakage(subparsers)
    _register_baseline(subparsers)


# ----------------------------------------------------------------------------------------------
# shared pieces
# ----------------------------------------------------------------------------------------------


def user_errors(func):
    """Bad input from the library (ValueError, missing or existing files, conflicting run
    folders) becomes one clear message with exit code 2 instead of a traceback."""
    from allnet_lib.compare import ExperimentConflict

    @functools.wraps(func)
    def wrapper(args):
        try:
            return func(args)
        except (ValueError, FileNotFoundError, FileExistsError, ExperimentConflict) as error:
            raise UserError(str(error)) from error

    return wrapper


def _add_common(parser, *, split: bool = True, seed_help: str | None = None) -> None:
    parser.add_argument("--profile", default=None,
                        help=f"run profile: {', '.join(PROFILES)} (default: $ALLNET_PROFILE, else demo)")
    if split:
        parser.add_argument("--split", choices=SPLIT_METHODS, default="subject",
                            help="subject: whole people to one side (honest); image: the 2019 "
                                 "report's random image split (optimistic); fold: official folds, "
                                 "fold_2 as test (default: %(default)s). Subject and image splits "
                                 f"keep {_share('test_size')} of the images for test and "
                                 f"{_share('val_size')} for validation, as the book's chapters 5-9 "
                                 "do (same split, same run folders)")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="data folder (default, as in the book: the real data under "
                             "$ALLNET_DATA/cnmc for --profile seed if present, else the demo set "
                             "under $ALLNET_DATA/demo at the profile's size, made if needed)")
    parser.add_argument("--seed", type=int, default=None,
                        help=seed_help or "seed of the split (default: 120 for --split image, the "
                                          "report's; 0 otherwise)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--image-size", type=int, default=None, metavar="PX",
                        help="override the profile's input side for every model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _share(key: str) -> str:
    """A size of split.EXPERIMENT_SPLIT as argparse help text, e.g. ``20%%``."""
    from allnet_lib.split import EXPERIMENT_SPLIT

    return f"{EXPERIMENT_SPLIT[key]:.0%}".replace("%", "%%")


def _profile(args):
    """The profile named by --profile, with --epochs / --image-size applied."""
    from allnet_lib.profiles import get_profile

    overrides = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.image_size is not None:
        overrides["image_size"] = args.image_size
    return get_profile(args.profile, **overrides)


def _check_model(name: str, profile) -> str:
    """A known model whose input side in this profile is large enough for its layers."""
    from allnet_lib.models import get_spec, list_models

    if name not in list_models():
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    spec, side = get_spec(name), profile.image_size(name)
    if side < spec.min_size:
        raise UserError(f"input too small: {name} needs images of at least {spec.min_size}x"
                        f"{spec.min_size} pixels, profile {profile.name!r} gives {side}x{side}; "
                        f"use --image-size {spec.min_size} or more")
    return name


def _data_folder(args, profile) -> Path:
    """--data, else the data-folder rule the book follows (``paths.data_dir_for``): the real data
    under profile seed when fetched, else the demo set at the profile's size (made here if needed)."""
    if args.data:
        folder = Path(args.data).expanduser()
        if not folder.is_dir():
            raise UserError(f"data folder {folder} does not exist; {FETCH_HINT}")
        return folder
    folder, real = paths.data_dir_for(profile)
    if real:
        return folder
    from allnet_lib.demo import ensure_demo_data

    if not (folder / "C-NMC_training_data").is_dir():
        print(f"no demo set in {paths.data_root()}: generating the synthetic demo set "
              f"({profile.demo_images} images) in {folder}. For the real C-NMC data run "
              "`python data_scripts/fetch_cnmc.py` and use --profile seed.")
    return ensure_demo_data(profile, progress=not args.no_progress)


def _table(folder: Path):
    """The labelled images of ``folder``; a clear error when there are none."""
    from allnet_lib.reader import index_dataset

    from allnet_lib.cli.data import report_problems

    index = index_dataset(folder, verify=True, progress=False)  # unreadable images: found now
    report_problems(index, folder)
    if len(index.table) == 0:
        kind = BadData if len(index.problems) else UserError
        raise kind(f"no usable labelled cell images in {folder} (expected C-NMC folders "
                   f"C-NMC_training_data/fold_N/{{all,hem}}); {FETCH_HINT}")
    return index.table


def _split(args, table):
    """The split the book trains on (``split.EXPERIMENT_SPLIT``: 20 % test, 20 % validation
    subjects), by --split and --seed: the same name, the same split and run folders as the book."""
    from allnet_lib.split import EXPERIMENT_SPLIT, make_split

    return make_split(table, args.split, seed=args.seed,  # None: the method's default seed
                      test_size=EXPERIMENT_SPLIT["test_size"], val_size=EXPERIMENT_SPLIT["val_size"])


def _write_text(path: Path, text: str) -> Path:
    """Atomic write of a derived file (tables and plots are rebuilt from the records each run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def markdown_table(frame) -> str:
    """A pipe table without extra dependencies."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _plot_backend() -> None:
    """Files only: never open a window from the command line."""
    import matplotlib

    matplotlib.use("Agg")
    from allnet_lib import plots

    plots.use_style()


# ----------------------------------------------------------------------------------------------
# allnet train
# ----------------------------------------------------------------------------------------------


def _register_train(subparsers) -> None:
    from allnet_lib.profiles import MODEL_NAMES

    parser = subparsers.add_parser(
        "train", help="train one model on one split",
        description="Train MODEL on a split of the data under a profile. The run folder keeps "
                    "config.json, history.csv, best.keras and last.keras; a finished run with the "
                    "same configuration is reused, an interrupted one resumed.")
    parser.add_argument("--model", required=True, help="one of " + ", ".join(MODEL_NAMES))
    _add_common(parser)
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="run folder (default: $ALLNET_RUNS/<profile>/<split>/<model>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run folder's earlier run (finished, interrupted or of "
                             "another configuration) and train from scratch; a folder that is "
                             "not a run folder is never deleted")
    parser.set_defaults(func=run_train, spelling={"overwrite": "--overwrite", "run_dir": "--out DIR"})


@user_errors
def run_train(args) -> int:
    from allnet_lib.runs import default_run_dir
    from allnet_lib.train import train_model

    profile = _profile(args)
    model = _check_model(args.model, profile)
    folder = _data_folder(args, profile)
    split = _split(args, _table(folder))
    run_dir = Path(args.out) if args.out else default_run_dir(profile, split, model)
    print(f"training {model} · profile {profile.name} · split {split.name} · data {folder}")
    result = train_model(model, split, profile, run_dir=run_dir, progress=not args.no_progress,
                         overwrite=args.overwrite)
    best = f", best epoch {result.best_epoch}" if result.best_epoch else ""
    print(f"{'reused' if result.reused else 'trained'} {model}: {len(result.history)} epoch(s){best}, "
          f"{result.seconds:.1f} s, {result.images_per_second:.1f} images/s")
    print(f"run folder: {result.run_dir}")
    print(f"next: allnet evaluate --run {result.run_dir}" + (f" --data {args.data}" if args.data else ""))
    return 0


# ----------------------------------------------------------------------------------------------
# allnet evaluate
# ----------------------------------------------------------------------------------------------


def _register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a trained run on its split's test part",
        description="Load RUN/best.keras, rebuild the split the run was trained on (checked by its "
                    "manifest hash), evaluate on its test part, print the metrics with 95% "
                    "subject-bootstrap intervals and write RUN/record.json.")
    parser.add_argument("--run", required=True, metavar="DIR", help="a finished training run folder")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="data folder the run was trained on (default: as for train)")
    parser.add_argument("--overwrite", action="store_true",
                        help="evaluate again and replace an existing record.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_evaluate, spelling={"overwrite": "--overwrite"})


def _finished_run(run_dir: Path) -> dict:
    """config.json of a finished run, or a UserError saying what is missing."""
    from allnet_lib import runs

    stored = runs.read_config(run_dir)
    if stored is None:
        raise UserError(f"{run_dir} is not a training run (no {runs.CONFIG_NAME}); train one with "
                        "`allnet train --model M --profile P`")
    if not runs.is_finished(run_dir):
        raise UserError(f"the run in {run_dir} has not finished (status {stored.get('status')!r}); "
                        "run the same `allnet train` command again to resume it")
    return stored


def _rebuild_split(stored: dict, table):
    """The run's split, made again from the data by the settings stored in its config.json
    (``split_settings``), and checked against the stored manifest hash."""
    from allnet_lib.split import make_split, manifest_hash

    config = stored["config"]
    name = str(config["split"])
    settings = stored.get("split_settings") or _settings_from_name(name)
    if not settings or settings.get("method") not in SPLIT_METHODS:
        raise UserError(f"the run's split {name!r} was not made by `allnet train`; evaluate it "
                        "from Python with allnet_lib.evaluate.evaluate_model")
    split = make_split(table, **settings)
    if manifest_hash(split) != config.get("split_hash"):
        raise UserError(f"the data does not reproduce the run's split {name!r} (different images); "
                        "pass the data folder the run was trained on with --data")
    return split


def _settings_from_name(name: str) -> dict | None:
    """Runs trained before config.json kept ``split_settings``: method and seed read from the
    split's name (``subject-s0-t20``), the default sizes assumed (as `allnet train` used them)."""
    method, seed = name.split("-")[0], re.search(r"-s(\d+)", name)
    return {"method": method, "seed": int(seed.group(1)) if seed else 0} if method in SPLIT_METHODS else None


@user_errors
def run_evaluate(args) -> int:
    from allnet_lib import evaluate
    from allnet_lib import runs
    from allnet_lib.compare import experiment_config
    from allnet_lib.profiles import Profile
    from allnet_lib.train import for_comparison

    run_dir = Path(args.run).expanduser()
    stored = _finished_run(run_dir)
    config = stored["config"]
    try:
        profile = Profile(**config["profile"])
    except TypeError as error:
        raise UserError(f"{run_dir}/config.json was written by another version of allnet ({error}); "
                        "train the run again") from error
    model_name = config["model"]
    folder = _data_folder(args, profile)
    split = _rebuild_split(stored, _table(folder))
    experiment = experiment_config(model_name, split, profile)
    path = runs.record_path(run_dir)
    if path.exists() and not args.overwrite:
        record = evaluate.load_record(path)
        if for_comparison(record.get("config", {}).get("experiment")) == experiment:
            print(f"{path} already holds this run's evaluation (pass --overwrite to evaluate again):")
            print(evaluate.format_metrics(record))
            return 0
        raise UserError(f"{path} holds the record of another experiment; pass --overwrite to replace it")
    record = _evaluate_run(run_dir, stored, split, profile, experiment, progress=not args.no_progress)
    evaluate.save_record(record, path, overwrite=args.overwrite)
    print(f"{model_name} on the test part of {split.name} ({folder}):")
    print(evaluate.format_metrics(record))
    print(f"record: {path}")
    return 0


def _evaluate_run(run_dir, stored, split, profile, experiment, *, progress):
    """Load best.keras and evaluate it; training facts come from the run's config.json."""
    from allnet_lib import evaluate, runs
    from allnet_lib.split import manifest_hash

    config = stored["config"]
    model = runs.load_best(run_dir)
    record = evaluate.evaluate_model(
        model, split.test, image_size=config["image_size"], crop=profile.crop, name=config["model"],
        config={"experiment": experiment, "training": config}, split_name=split.name,
        manifest_hash=manifest_hash(split.test), progress=progress)
    record["evaluated_on"] = "test"
    record["training"] = {
        "seconds": stored.get("seconds"), "images_per_second": stored.get("images_per_second"),
        "epochs": stored.get("epochs_run"), "best_epoch": stored.get("best_epoch"),
        "train_accuracy": stored.get("best_train_accuracy"), "run_dir": str(run_dir),
    }
    return record


# ----------------------------------------------------------------------------------------------
# allnet compare
# ----------------------------------------------------------------------------------------------


def _register_compare(subparsers) -> None:
    from allnet_lib.profiles import MODEL_NAMES

    parser = subparsers.add_parser(
        "compare", help="train and evaluate several models on one split; table and plots",
        description="Train (or reuse) and evaluate each model on the same split, print a table "
                    "with 95% subject-bootstrap intervals next to the 2019 report's Table 2, and "
                    "write results.csv, results.md and PNG plots into --out. Models: "
                    + ", ".join(MODEL_NAMES) + ".")
    parser.add_argument("--models", default="all",
                        help="'all' or comma-separated model names (default: %(default)s)")
    _add_common(parser)
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="results folder, one run folder per model inside (default: "
                             "$ALLNET_RUNS/<profile>/<split>)")
    parser.add_argument("--no-reuse", action="store_true",
                        help="retrain every model even when a finished record of the same "
                             "configuration exists (replaces it)")
    parser.set_defaults(func=run_compare, spelling={"overwrite": "--no-reuse", "run_dir": "--out DIR"})


def _model_list(text: str, profile) -> list[str]:
    from allnet_lib.models import list_models

    names = list_models() if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("--models is empty; give 'all' or names such as alexnet,proposed")
    return [_check_model(name, profile) for name in names]


@user_errors
def run_compare(args) -> int:
    from allnet_lib import compare, evaluate

    profile = _profile(args)
    models = _model_list(args.models, profile)
    folder = _data_folder(args, profile)
    split = _split(args, _table(folder))
    out = Path(args.out) if args.out else paths.runs_root() / profile.name / split.name
    print(f"comparing {', '.join(models)} · profile {profile.name} · split {split.name} · data {folder}")
    table = compare.compare_models(models, split, profile, out_dir=out, reuse=not args.no_reuse,
                                   progress=not args.no_progress)
    readable = compare.format_results(table)
    print()
    print(readable.to_string(index=False))
    print(f"\nreference column: {compare.REPORT_TABLE2_NOTE}")
    baseline = _baseline_line(evaluate.always_all_baseline(split.test))
    print(baseline)
    records = [evaluate.load_record(p) for p in table["record_path"]]
    notes = sorted({w for r in records if (w := (r["metrics"].get("ci") or {}).get("warning"))})
    for note in notes:
        print(f"note: {note}")
    written = _write_compare_outputs(out, table, readable, records, notes + [baseline], profile,
                                     split, folder)
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def _baseline_line(metrics: dict) -> str:
    """One line for the always-ALL baseline, the floor every model must clear."""
    return (f"baseline, always answering 'all' on the same test images: accuracy "
            f"{100 * metrics['accuracy']:.1f}, weighted F1 {100 * metrics['weighted_f1']:.1f}, "
            f"balanced accuracy {100 * metrics['balanced_accuracy']:.1f}")


def _write_compare_outputs(out: Path, table, readable, records, notes, profile, split,
                           folder) -> list[Path]:
    """results.csv, results.md and the plots, all rebuilt from the records."""
    from allnet_lib import compare, plots
    from allnet_lib.train import read_history

    _plot_backend()
    csv = out / "results.csv"
    _write_text(csv, table.to_csv(index=False))
    md = _write_text(out / "results.md", (
        f"# Model comparison\n\nProfile `{profile.name}`, split `{split.name}` "
        f"({len(split.train)} train / {len(split.val)} val / {len(split.test)} test images), "
        f"data `{folder}`.\n\n"
        "Metrics in percent with 95% confidence intervals from a bootstrap over subjects; ALL is the "
        f"positive class.\nReference column: {compare.REPORT_TABLE2_NOTE}.\n\n" + markdown_table(readable)
        + "".join(f"\nNote: {note}.\n" for note in notes)))
    written = [csv, md, _save_figure(plots.plot_results(table), out / "results.png"),
               _save_figure(plots.plot_roc(records).figure, out / "roc.png")]
    written.append(_save_figure(plots.plot_confusions(records), out / "confusion.png"))
    histories = {r["name"]: read_history(Path(p).parent) for r, p in zip(records, table["record_path"])}
    histories = {k: v for k, v in histories.items() if len(v)}
    if histories:
        written.append(_save_figure(plots.plot_history(histories), out / "history.png"))
    return written


# ----------------------------------------------------------------------------------------------
# allnet leakage
# ----------------------------------------------------------------------------------------------


def _register_leakage(subparsers) -> None:
    from allnet_lib.profiles import MODEL_NAMES

    parser = subparsers.add_parser(
        "leakage", help="how much a random image split overstates the score on new people",
        description="Put the people into two halves; train MODEL on a random image-level split "
                    "of each half; score every test cell with its own half's model (which saw "
                    "other cells of the same person) and with the other half's (which never saw "
                    "the person). Prints the optimism gap of the image split (same cells, seen "
                    "minus unseen) and writes leakage.json, leakage.csv and leakage.png into --out.")
    parser.add_argument("--model", default=None,
                        help="one of " + ", ".join(MODEL_NAMES) + " (default: the profile's leakage_model)")
    _add_common(parser, split=False, seed_help="seed of all three splits (default: 0)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="N", default=None,
                        help="run the experiment over these seeds (two trainings each, one per "
                             "half) and report the gap's mean and spread; "
                             "'--seeds' alone is not allowed, name them, e.g. --seeds 0 1 2")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="results folder (default: $ALLNET_RUNS/<profile>/leakage/<model>-s<seed>)")
    parser.add_argument("--no-reuse", action="store_true", help="retrain both halves' models")
    parser.set_defaults(func=run_leakage, spelling={"overwrite": "--no-reuse", "run_dir": "--out DIR"})


@user_errors
def run_leakage(args) -> int:
    from allnet_lib import compare, plots

    profile = _profile(args)
    model = _check_model(args.model or profile.leakage_model, profile)
    folder = _data_folder(args, profile)
    table = _table(folder)
    if args.seeds:
        return _run_leakage_seeds(args, model, profile, folder, table)
    seed = 0 if args.seed is None else args.seed
    out = Path(args.out) if args.out else compare._default_leakage_dir(model, profile, seed)
    print(f"leakage experiment: {model} · profile {profile.name} · data {folder}")
    result = compare.leakage_experiment(model, table, profile, out_dir=out, seed=seed,
                                        reuse=not args.no_reuse, progress=not args.no_progress)
    rows = compare.leakage_table(result)
    shown = rows[["trained_on", "evaluated_on", "n_images", "n_subjects", "test_subjects_seen_in_training",
                  "accuracy", "weighted_f1", "roc_auc", "subject_accuracy"]]
    print()
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    print(compare.leakage_verdict(result))
    _plot_backend()
    written = [_write_text(out / "leakage.csv", rows.to_csv(index=False)),
               _save_figure(plots.plot_leakage(result).figure, out / "leakage.png"),
               out / compare.LEAKAGE_NAME]
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def _run_leakage_seeds(args, model, profile, folder, table) -> int:
    from allnet_lib import compare

    if args.seed is not None:
        raise UserError("give either --seed (one run) or --seeds (several), not both")
    epochs = profile.leakage_epochs or profile.epochs
    print(f"leakage experiment: {model} · profile {profile.name} · {epochs} epochs · seeds "
          f"{' '.join(map(str, args.seeds))} · data {folder}")
    result = compare.leakage_seeds(model, table, profile, seeds=args.seeds,
                                   out_dir=Path(args.out) if args.out else None,
                                   reuse=not args.no_reuse, progress=not args.no_progress)
    print()
    print(compare.leakage_seeds_table(result["seeds"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    print(compare.leakage_seeds_verdict(result["summary"]))
    return 0


# ----------------------------------------------------------------------------------------------
# allnet baseline
# ----------------------------------------------------------------------------------------------


def _register_baseline(subparsers) -> None:
    from allnet_lib.baseline import CLASSICAL_MODELS

    parser = subparsers.add_parser(
        "baseline", help="classical baseline: hand-crafted cell features + scikit-learn (seconds)",
        description="Measure hand-crafted cell features (size, N:C ratio, outline, colour, texture) "
                    "of every image and fit scikit-learn models on a split: the score a CNN has "
                    "to beat, with 95% subject-bootstrap intervals. With --leakage: the leakage "
                    "experiment with the classical model over several seeds (per-seed table and "
                    "a verdict over seeds). Nothing is written.")
    parser.add_argument("data", nargs="?", metavar="DATA_DIR", default=None,
                        help="data folder (default: as for compare: real data if fetched, else the demo set)")
    parser.add_argument("--split", choices=SPLIT_METHODS, default="subject",
                        help="split of the baseline table (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the split and the models (default: 120 for --split image, else 0)")
    parser.add_argument("--models", default=",".join(CLASSICAL_MODELS),
                        help="comma-separated classical models (default: %(default)s)")
    parser.add_argument("--cnn-cells", metavar="PROFILE", default=None,
                        help="fit on the very cells that PROFILE's CNNs train on (its sample of the "
                             "training subjects, as chapter 7 does) instead of the training + "
                             "validation part")
    parser.add_argument("--leakage", action="store_true",
                        help="run the leakage experiment over --seeds with --model instead")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], metavar="SEED",
                        help="seeds of the leakage experiment (default: 0 1 2 3 4)")
    parser.add_argument("--model", choices=sorted(CLASSICAL_MODELS), default="forest",
                        help="classical model of the leakage experiment (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_baseline)


@user_errors
def run_baseline(args) -> int:
    import time

    import pandas as pd

    from allnet_lib import baseline, compare, evaluate
    from allnet_lib.profiles import get_profile

    folder = _data_folder(args, get_profile(None))
    table = _table(folder)
    progress = not args.no_progress
    if args.leakage:
        from allnet_lib.split import training_rows

        print(f"classical leakage experiment: {baseline.MODEL_NAMES[args.model]} · seeds "
              f"{' '.join(map(str, args.seeds))} · data {folder}")
        rows = training_rows(table)
        started = time.perf_counter()
        features = baseline.features_by_path(rows, progress=progress)
        feature_seconds = time.perf_counter() - started
        result = baseline.classical_leakage(rows, model=args.model, seeds=args.seeds,
                                            features=features, progress=progress)
        shown = baseline.leakage_seeds_table(result["seeds"])
        print(f"features of {len(features)} images in {feature_seconds:.1f} s; the model is fitted "
              f"on each split's {baseline.FIT_ON} part\n")
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print()
        print(baseline.leakage_seeds_verdict(result["summary"]))
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in baseline.CLASSICAL_MODELS]
    if not names or unknown:
        raise UserError(f"--models: unknown or no model(s) {unknown}; valid: "
                        + ", ".join(baseline.CLASSICAL_MODELS))
    split = _split(args, table)
    print(f"classical baseline: {', '.join(baseline.MODEL_NAMES[n] for n in names)} · split "
          f"{split.name} · data {folder}")
    everything = pd.concat([split.train, split.val, split.test], ignore_index=True)
    started = time.perf_counter()
    features = baseline.features_by_path(everything, progress=progress)
    feature_seconds = time.perf_counter() - started
    profile = get_profile(args.cnn_cells) if args.cnn_cells else None
    records = baseline.classical_baseline(split, features=features, models=names, seed=split.seed,
                                          profile=profile)
    readable = compare.format_results(compare.results_table(records))
    readable = readable.drop(columns=["report 2019 acc. (image split)"], errors="ignore")
    fit = next(iter(records.values()))["training"]
    print(f"features of {len(features)} images in {feature_seconds:.1f} s; models fitted on "
          f"{fit['fit_on']} ({fit['n_images']} images of {fit['n_subjects']} subjects), tested on "
          f"{len(split.test)} images of {split.test['subject'].nunique()} subjects\n")
    print(readable.to_string(index=False))
    print()
    for name, record in records.items():
        m = record["metrics"]
        ci = (m.get("ci") or {}).get("intervals", {}).get("balanced_accuracy") or [float("nan")] * 2
        print(f"{name}: balanced accuracy {100 * m['balanced_accuracy']:.1f} [{100 * ci[0]:.1f}, "
              f"{100 * ci[1]:.1f}], training accuracy {100 * record['training']['train_accuracy']:.1f}")
    print(_baseline_line(evaluate.always_all_baseline(split.test)))
    notes = sorted({w for r in records.values() if (w := (r["metrics"].get("ci") or {}).get("warning"))})
    for note in notes:
        print(f"note: {note}")
    return 0
