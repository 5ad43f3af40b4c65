"""Data subcommands of ``allnet``: make the demo set, index a data folder, split it, crop and
augment images. Each is a thin layer over the library function of the same job, so what the
command does is what the book does.

Exit codes: the table ``allnet_lib.cli.EXIT_CODES`` (1 bad input found: ``index --strict``,
``index`` with no usable image, ``crop`` cutting into cells or meeting unreadable files; 2 usage
error: a missing folder, an existing output, a bad option value). Every file a command passes
over is listed with its path and reason, never skipped silently.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import uuid
from pathlib import Path

from allnet_lib import paths
from allnet_lib.profiles import DEMO_IMAGES
from allnet_lib.cli import EXIT_OK, EXIT_PROBLEMS, BadData, UserError

from allnet_lib.split import DEFAULT_SEEDS, SPLIT_METHODS  # noqa: E402,F401  (the split registry)

_SHOWN_PROBLEMS = 10


def register(subparsers) -> None:
    """Add demo-data, index, split, crop and augment to the ``allnet`` parser."""
    _register_demo(subparsers)
    _register_index(subparsers)
    _register_split(subparsers)
    _register_crop(subparsers)
    _register_augment(subparsers)


# --------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------
def user_errors(func):
    """Turn the library's bad-input exceptions (missing file, existing output, bad value) into
    UserError, so they print as one message with exit code 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(args):
        try:
            return func(args)
        except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as error:
            raise UserError(str(error)) from error

    return wrapper


def _add_data_argument(parser: argparse.ArgumentParser) -> None:
    """DATA as an optional positional or --data; the default comes from ALLNET_DATA."""
    default_help = (f"default, as in the book: the real data under $ALLNET_DATA/cnmc when "
                    f"$ALLNET_PROFILE is seed and it is there, else the demo set under "
                    f"$ALLNET_DATA/demo (now {_default_data_hint()})")
    parser.add_argument("data_pos", nargs="?", metavar="DATA",
                        help=f"data folder, in any layout the reader understands; {default_help}")
    parser.add_argument("--data", dest="data_opt", metavar="DIR", help="same as DATA")


def _default_data_hint() -> str:
    try:
        return str(_default_data()).replace("%", "%%")  # argparse formats help with %
    except UserError:
        return "none found yet"


def _default_data() -> Path:
    """The data-folder rule of the book and ``allnet train`` (``paths.data_dir_for``) under
    ``$ALLNET_PROFILE`` (default demo); explain when that folder does not exist."""
    from allnet_lib.profiles import get_profile

    profile = get_profile(None)
    folder, real = paths.data_dir_for(profile, say=lambda text: None)
    if folder.is_dir():
        return folder
    raise UserError(
        f"no data folder given and none found: profile {profile.name} uses {folder}, which does "
        f"not exist (the real data under {paths.cnmc_dir()} is used only under profile "
        f"{' or '.join(paths.REAL_DATA_PROFILES)}). Run `allnet demo-data` to make the demo set, "
        f"set {paths.DATA_ENV} to where your data is, or pass the folder as DATA."
    )


def data_folder(args) -> Path:
    """The data folder the user asked for (DATA or --data), checked to exist."""
    if args.data_pos and args.data_opt and Path(args.data_pos) != Path(args.data_opt):
        raise UserError(f"two data folders given ({args.data_pos} and --data {args.data_opt}); "
                        "give one")
    given = args.data_pos or args.data_opt
    if not given:
        return _default_data()
    folder = Path(given).expanduser()
    if not folder.exists():
        raise UserError(f"data folder {folder} does not exist; check the path, or run "
                        "`allnet demo-data` to make the demo set")
    if not folder.is_dir():
        raise UserError(f"{folder} is a file; DATA must be a folder of images")
    return folder


def _fraction(text: str) -> float:
    """argparse type for sizes: a number, checked in full by the splitters."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction such as 0.2")


def _fold_list(text: str) -> list[str]:
    """argparse type: 'fold_1,fold_2' -> ['fold_1', 'fold_2']."""
    folds = [part.strip() for part in text.split(",") if part.strip()]
    if not folds:
        raise argparse.ArgumentTypeError("give at least one fold name, e.g. fold_2")
    return folds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _print_table(frame) -> None:
    print(frame.to_string())


def _index(folder: Path, *, verify: bool = True):
    """Index a data folder, opening every image (``verify``) so that unreadable ones are found
    now, not when training loads them; list on stderr the files that are not used, and why."""
    from allnet_lib.reader import index_dataset

    index = index_dataset(folder, verify=verify, progress=True)
    report_problems(index, folder)
    if len(index.table) == 0:
        kind = BadData if len(index.problems) else UserError
        raise kind(f"no usable labelled images in {folder}; expected C-NMC folders "
                   "(C-NMC_training_data/fold_N/{all,hem}) or class folders {all,hem}. "
                   f"Run `allnet index {folder}` to see what was found.")
    return index


def report_problems(index, folder: Path, *, file=None) -> None:
    """Print the files ``index`` could not use (path and reason, the first few) and the images
    that are converted when read, so that a command never passes over a file without a word."""
    from allnet_lib.reader import printable_path

    file = file or sys.stderr
    problems = index.problems
    if len(problems):
        print(f"note: {len(problems)} file(s) in {folder} are not used (path, reason):", file=file)
        shown = problems.head(_SHOWN_PROBLEMS)[["path", "reason"]].copy()
        shown["path"] = shown["path"].map(printable_path)
        print(shown.to_string(index=False), file=file)
        if len(problems) > _SHOWN_PROBLEMS:
            print(f"... and {len(problems) - _SHOWN_PROBLEMS} more: `allnet index {folder} --verify "
                  "--problems-csv FILE` lists them all", file=file)
    conversions = getattr(index, "conversions", None)
    if conversions is not None and len(conversions):
        print(f"note: {conversions['path'].nunique()} image(s) are not 8-bit RGB and are converted "
              "when read (re-export them as 8-bit RGB to see the same pixels everywhere):", file=file)
        print(conversions.head(_SHOWN_PROBLEMS).to_string(index=False), file=file)


def _check_new_file(path: Path) -> Path:
    """A report file that may be written: it must not exist yet, and not be a folder."""
    path = path.expanduser()
    if path.exists():
        raise UserError(f"{path} already exists; choose another file name (it was left as is)")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{path.parent} is a file, so {path} cannot be written; choose another path")
    return path


def _write_csv_new(frame, path: Path) -> Path:
    """Write a report CSV that does not exist yet (temp sibling, then rename)."""
    path = _check_new_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# allnet demo-data
# --------------------------------------------------------------------------------------------
def _register_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-data", help="make the synthetic C-NMC-like demo dataset",
        description="Write the synthetic demo dataset in the real C-NMC training layout "
                    "(C-NMC_training_data/fold_N/{all,hem}/UID_...). Synthetic cells: good for "
                    "learning the method, not results about leukemia. Running it again with the "
                    "same options does nothing.",
    )
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="where to write it (default: $ALLNET_DATA/demo, now "
                             f"{str(paths.demo_dir()).replace('%', '%%')})")
    parser.add_argument("--n-images", type=_positive_int, default=DEMO_IMAGES, metavar="N",
                        help="number of images, about 2/3 ALL (default: %(default)s)")
    parser.add_argument("--size", type=_positive_int, default=450, metavar="PX",
                        help="image side in pixels; the real images are 450 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--ext", default="bmp",
                        help="image format: bmp (as the real data), png, tif or jpg "
                             "(default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a demo set made with other options, or an incomplete one "
                             "(a folder that is not a demo set is never replaced)")
    parser.set_defaults(func=run_demo, spelling={"overwrite": "--overwrite", "out_dir": "--out DIR"})


@user_errors
def run_demo(args) -> int:
    """Make the demo set and print where it is and what it holds."""
    from allnet_lib.demo import make_demo_dataset

    out = make_demo_dataset(args.out, n_images=args.n_images, image_size=args.size,
                            seed=args.seed, ext=args.ext, overwrite=args.overwrite,
                            progress=True)
    print(f"demo dataset ready: {out}")
    print(f"next: allnet index {out}")
    return 0


# --------------------------------------------------------------------------------------------
# allnet index
# --------------------------------------------------------------------------------------------
def _register_index(subparsers) -> None:
    parser = subparsers.add_parser(
        "index", help="list the images of a data folder: counts per fold, class and subject",
        description="Find every image in DATA (TCIA, Kaggle or plain {all,hem} layouts), print "
                    "images and subjects per fold and class, and list the files that could not "
                    "be used and why (nothing is skipped silently).",
    )
    _add_data_argument(parser)
    parser.add_argument("--verify", action="store_true",
                        help="also open every image: unreadable files, odd sizes, byte-identical "
                             "copies and images converted when read (16-bit, CMYK, alpha, "
                             "grayscale) are listed too (slower)")
    parser.add_argument("--problems-csv", metavar="FILE", type=Path,
                        help="write every problem (path, reason) to this new CSV file")
    parser.add_argument("--strict", action="store_true",
                        help="exit with code 1 when problems were found (for scripts and CI); "
                             "without it, code 1 only when no image is usable")
    parser.set_defaults(func=run_index)


@user_errors
def run_index(args) -> int:
    """Print the summary and the problems; exit 1 with --strict when there are problems, and
    whenever no labelled image is usable."""
    folder = data_folder(args)
    if args.problems_csv:
        _check_new_file(args.problems_csv)  # before the slow part
    index = _index_any(folder, verify=args.verify)
    print(index.report())
    print()
    _print_table(index.summary())
    problems = index.problems
    if len(problems):
        print(f"\n{len(problems)} file(s) not used:")
        print(problems.head(_SHOWN_PROBLEMS).to_string(index=False))
        if len(problems) > _SHOWN_PROBLEMS:
            print(f"... and {len(problems) - _SHOWN_PROBLEMS} more (see --problems-csv)")
    else:
        print("\nno problems found")
    if not args.verify:
        print("(images were not opened: --verify also finds unreadable images, odd sizes, copies "
              "and images converted when read)")
    if len(index.conversions):
        print(f"\n{index.conversions['path'].nunique()} image(s) converted when read (usable; "
              "re-export them as 8-bit RGB to see the same pixels everywhere):")
        print(index.conversions.head(_SHOWN_PROBLEMS).to_string(index=False))
    if args.problems_csv:
        written = _write_csv_new(problems, args.problems_csv)
        print(f"problems written to {written}")
    if len(index.table) == 0:
        print(f"allnet index: no usable labelled image in {folder}"
              + (" (see the problems above)" if len(problems) else ""), file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_PROBLEMS if (args.strict and len(problems)) else EXIT_OK


def _index_any(folder: Path, *, verify: bool):
    """Index without requiring images (an empty folder is worth reporting, not an error)."""
    from allnet_lib.reader import index_dataset

    return index_dataset(folder, verify=verify, progress=True)


# --------------------------------------------------------------------------------------------
# allnet split
# --------------------------------------------------------------------------------------------
def _register_split(subparsers) -> None:
    parser = subparsers.add_parser(
        "split", help="split a dataset into train / validation / test and write its manifest",
        description="Split the images of DATA and write a manifest CSV (path, filename, label, "
                    "subject, fold, part) that training and evaluation read. --by subject keeps "
                    "every person on one side (honest scores for new patients); --by image is "
                    "the 2019 report's random image split (same person on both sides: scores "
                    "are optimistic); --by fold uses the organisers' subject-disjoint folds. "
                    "Subject and image splits use the training folds only when DATA has them.",
    )
    _add_data_argument(parser)
    parser.add_argument("--by", choices=SPLIT_METHODS, default="subject",
                        help="what to split by (default: %(default)s)")
    parser.add_argument("--test-size", type=_fraction, default=0.2, metavar="F",
                        help="fraction of images for the test part, in (0, 1); --by subject/image "
                             "(default: %(default)s)")
    parser.add_argument("--val-size", type=_fraction, default=0.0, metavar="F",
                        help="fraction of images for a validation part, in [0, 1); --by "
                             "subject/image (default: %(default)s, no validation part)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: 120 for --by image, the report's; 0 for "
                             "--by subject)")
    parser.add_argument("--test-folds", type=_fold_list, default=["fold_2"], metavar="FOLDS",
                        help="--by fold: comma-separated folds for the test part, e.g. "
                             "fold_2 or prelim_test (default: fold_2)")
    parser.add_argument("--val-folds", type=_fold_list, default=[], metavar="FOLDS",
                        help="--by fold: comma-separated folds for the validation part, e.g. "
                             "fold_1 (default: none)")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="also write the images as class folders into this new folder: "
                             "DIR/{train,val,test}/{all,hem} (--by image: the report's "
                             "DIR/{train,validation}/{all,hem}), with DIR/manifest.csv")
    parser.add_argument("--mode", choices=("copy", "link", "symlink"), default="copy",
                        help="with --out: copy the files, hard-link or symlink them; sources "
                             "are never moved (default: %(default)s)")
    parser.add_argument("--manifest", metavar="FILE", type=Path,
                        help="where to write the manifest CSV (default: "
                             "$ALLNET_DATA/splits/<data folder>-<split name>.csv); an existing "
                             "different manifest is never overwritten")
    parser.set_defaults(func=run_split)


@user_errors
def run_split(args) -> int:
    """Index, split, print the summary, write the manifest (and the folders with --out)."""
    from allnet_lib import split as splitting

    folder = data_folder(args)
    if args.by != "fold":
        splitting.check_sizes(args.test_size, args.val_size)  # fail before the slow part
    if args.out is not None:
        splitting.check_output_folder(folder, args.out)  # fail before the slow part
    table = _split_input(splitting, _index(folder).table, args.by)
    split = _make_split(splitting, table, args)
    if args.by == "fold":
        table = _fold_note(table, split)
    print(f"split {split.name} of {folder} ({len(table)} images)")
    _print_table(split.summary())
    _warn_about_leaks(split, args.by)
    if args.out is not None:
        folders = splitting.REPORT_FOLDERS if args.by == "image" else None
        split = splitting.export_split(split, args.out, mode=args.mode, folders=folders,
                                       progress=True)
        print(f"class folders written to {args.out} ({args.mode})")
        print(f"manifest: {args.out / splitting.MANIFEST_NAME}")
    manifest = args.manifest
    if manifest is None and args.out is None:
        manifest = paths.data_root() / "splits" / f"{folder.name}-{split.name}.csv"
    if manifest is not None:
        try:
            written = split.write_manifest(manifest)
        except FileExistsError as error:
            hint = ("" if args.manifest is not None else
                    " (or pass --manifest FILE to write it elsewhere)")
            raise UserError(f"{error}{hint}") from error
        print(f"manifest: {written}")
    print(f"manifest hash: {splitting.manifest_hash(split)}")
    return 0


def _split_input(splitting, table, by: str):
    """The rows to split: for --by subject/image the training folds when the data has them
    (see split.training_rows); say on stderr what was left out."""
    if by == "fold":
        return table  # fold_split leaves the test sets out: said in _fold_note
    rows = splitting.training_rows(table)
    if len(rows) < len(table):
        print(f"note: {len(table) - len(rows)} image(s) outside the training folds (test sets) "
              "left out of the split", file=sys.stderr)
    return rows


def _fold_note(table, split):
    """--by fold: the rows in no part (preliminary/final test folds, as fold_split never trains
    on them) are said on stderr like the other methods say theirs; returns the rows split."""
    used = set(split.manifest()["path"])
    left = table[~table["path"].isin(used)]
    if len(left):
        per_fold = ", ".join(f"{fold}: {n}" for fold, n in left["fold"].value_counts().sort_index().items())
        print(f"note: {len(left)} image(s) in folds that are neither training nor named with "
              f"--test-folds/--val-folds ({per_fold}) left out of the split", file=sys.stderr)
    return table[table["path"].isin(used)]


def _make_split(splitting, table, args):
    """Call the splitter chosen with --by with the options that apply to it."""
    if args.by == "fold":
        if args.seed is not None or args.test_size != 0.2 or args.val_size:
            print("note: --by fold ignores --seed, --test-size and --val-size; use "
                  "--test-folds/--val-folds", file=sys.stderr)
    return splitting.make_split(table, args.by, seed=args.seed, test_size=args.test_size,
                                val_size=args.val_size, test_folds=args.test_folds,
                                val_folds=args.val_folds)


def _warn_about_leaks(split, by: str) -> None:
    """Say plainly when a split lets the same person appear in training and test."""
    overlap = split.subject_overlap()
    if by == "image":
        total = len(set(split.manifest()["subject"]))
        print(f"warning: --by image mixes subjects: {len(overlap)} of {total} subjects have images "
              "on more than one side, so test scores reward recognising people already seen "
              "and overstate performance on new patients. Use --by subject for honest numbers.",
              file=sys.stderr)
    elif overlap:  # cannot happen for subject/fold splits (they assert it); kept as a guard
        print(f"warning: {len(overlap)} subjects on more than one side", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# allnet crop / augment
# --------------------------------------------------------------------------------------------
def _register_crop(subparsers) -> None:
    parser = subparsers.add_parser(
        "crop", help="centre-crop every image of a folder (the report's 450 -> 400)",
        description="Centre-crop every image under SRC to SIZE x SIZE and write it under DST with "
                    "the same sub-folders. Reports images whose crop cut into the cell "
                    "(non-black pixels removed), files and folders it could not read (exit code "
                    "1 if there are any) and images converted when read (16-bit, CMYK, alpha).",
    )
    parser.add_argument("src", metavar="SRC", type=Path, help="folder of images (any depth)")
    parser.add_argument("dst", metavar="DST", type=Path, help="new output folder")
    parser.add_argument("--size", type=_positive_int, default=400, metavar="PX",
                        help="side of the centre crop, in pixels of a 450-pixel image; other "
                             "image sizes get the same fraction (default: %(default)s, the "
                             "report's 450 -> 400)")
    parser.set_defaults(func=run_crop)


@user_errors
def run_crop(args) -> int:
    """Crop a folder; exit 1 when a crop cut into a cell or a file could not be read."""
    import warnings

    from allnet_lib.crop import crop_folder

    _existing_folder(args.src, "SRC")
    with warnings.catch_warnings():  # the same facts are printed below, with the files
        warnings.simplefilter("ignore", UserWarning)
        result = crop_folder(args.src, args.dst, size=args.size, progress=True)
    copied = int((result["action"] == "copied").sum())
    print(f"{int((result['action'] == 'cropped').sum())} image(s) centre-cropped into {args.dst}"
          + (f", {copied} other file(s) copied" if copied else ""))
    from allnet_lib.reader import printable_path

    result["path"] = result["path"].map(printable_path)  # names that are not UTF-8 print as \xNN
    damaged = result[result["cut_pixels"].fillna(0) > 0]
    errors = result[result["action"] == "error"]
    converted = result[result["conversion"].notna()]
    if len(converted):
        print(f"\n{len(converted)} image(s) were not 8-bit RGB and were converted when read "
              "(cropped all the same; re-export them as 8-bit RGB to keep the same pixels):")
        print(converted[["path", "conversion"]].head(_SHOWN_PROBLEMS).to_string(index=False))
    if len(damaged):
        print(f"\n{len(damaged)} image(s) lost cell (non-black) pixels in the crop; use a "
              "larger --size:")
        print(damaged[["path", "height", "width", "crop", "cut_pixels"]]
              .head(_SHOWN_PROBLEMS).to_string(index=False))
    if len(errors):
        print(f"\n{len(errors)} file(s) or folder(s) could not be read and were not written "
              "(path, reason):")
        print(errors[["path", "error"]].head(_SHOWN_PROBLEMS).to_string(index=False))
        if len(errors) > _SHOWN_PROBLEMS:
            print(f"... and {len(errors) - _SHOWN_PROBLEMS} more")
    if len(damaged) or len(errors):
        return EXIT_PROBLEMS
    print("no crop cut into a cell")
    return EXIT_OK


def _register_augment(subparsers) -> None:
    parser = subparsers.add_parser(
        "augment", help="write N augmented images (the report's Augmentor flips and rotations)",
        description="Sample N images from the class folders under SRC, apply the report's "
                    "Augmentor pipeline (90/270-degree rotations, left-right and top-bottom flips, "
                    "each with probability 0.5) and write them under DST/<class>/. Single-threaded "
                    "so that a seed gives the same images.",
    )
    parser.add_argument("src", metavar="SRC", type=Path, help="folder with class sub-folders")
    parser.add_argument("dst", metavar="DST", type=Path,
                        help="output folder, outside SRC (Augmentor's default inside SRC would "
                             "later be read as an extra class)")
    parser.add_argument("-n", type=_positive_int, required=True, metavar="N",
                        help="number of images to write")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: %(default)s, "
                        "the report's)")
    parser.set_defaults(func=run_augment)


@user_errors
def run_augment(args) -> int:
    """Augment and print how many images of each class were written."""
    from allnet_lib.augment import augmentor_sample

    _existing_folder(args.src, "SRC")
    result = augmentor_sample(args.src, args.dst, args.n, seed=args.seed, progress=True)
    print(f"{len(result)} augmented image(s) written to {args.dst}")
    if "label" in result.columns:
        print(result["label"].value_counts().sort_index().to_string())
    return 0


def _existing_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise UserError(f"{what} folder {path} does not exist or is not a folder; check the path")
