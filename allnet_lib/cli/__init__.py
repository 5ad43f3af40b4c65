"""The ``allnet`` command. Each group of subcommands lives in its own module and registers itself
through a ``register(subparsers)`` function, so data and experiment commands grow independently.

Exit codes: one table, :data:`EXIT_CODES` (printed by ``allnet --help`` and copied in README.md,
a test keeps the three in step). A crash (a bug, not bad data) prints one line, saves the
traceback to a file it names and exits with :data:`EXIT_INTERNAL`; ``allnet --debug ...`` prints
the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import signal
import sys
import tempfile
import time
import traceback

# modules under allnet_lib.cli that provide register(subparsers)
COMMAND_MODULES = ("data", "experiment", "course")


EXIT_OK = 0
EXIT_PROBLEMS = 1     # the command ran, and found bad input in the data
EXIT_USAGE = 2        # argparse's code for bad options; also missing paths, existing outputs
EXIT_INTERNAL = 3     # a crash: a bug in allnet (or its libraries), never bad data
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, the shell's convention)
#: The one table of exit codes: ``allnet --help`` prints it, README.md copies it (tested).
EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_PROBLEMS, "bad input found: the data has problems (index --strict; no usable image "
                    "in the data; crop cutting into cells or meeting unreadable files); they "
                    "are listed with path and reason"),
    (EXIT_USAGE, "usage error: a bad option or value, a missing data folder, an output that "
                 "already exists, a path that cannot be read or written"),
    (EXIT_INTERNAL, "internal error: a crash (a bug, please report it); the traceback is saved "
                    "to a file named on stderr, or printed with --debug"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C or SIGTERM); partial outputs are removed"),
)
ISSUES_URL = "https://github.com/allnet-course/allnet/issues"


def exit_code_table() -> str:
    """:data:`EXIT_CODES` as the plain-text table of ``allnet --help``."""
    import textwrap

    lines = ["exit codes:"]
    for code, text in EXIT_CODES:
        lines += textwrap.wrap(text, 78, initial_indent=f"  {code:>3}  ", subsequent_indent=" " * 7)
    return "\n".join(lines)


class UserError(Exception):
    """Bad input from the user: printed as one clear message, exit code :data:`EXIT_USAGE`."""

    exit_code = EXIT_USAGE


class BadData(UserError):
    """The data was found but none of it (or not enough of it) is usable: one clear message,
    exit code :data:`EXIT_PROBLEMS` (bad input found), after the problems were listed."""

    exit_code = EXIT_PROBLEMS


class _Parser(argparse.ArgumentParser):
    """An unknown option after a subcommand is reported with that subcommand's usage."""

    def parse_args(self, args=None, namespace=None):
        args, extra = self.parse_known_args(args, namespace)
        if extra:
            sub = getattr(self, "_subcommands", {}).get(getattr(args, "command", None))
            (sub or self).error(f"unrecognized arguments: {' '.join(extra)}")
        return args


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="allnet",
        description="allnet: prepare C-NMC leukemia cell data, train and compare CNNs.",
        epilog=exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true",
                        help="on an internal error, print the whole traceback (by default it is "
                             "saved to a file)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser._subcommands = subparsers.choices
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"allnet_lib.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"allnet_lib.cli.{name}":
                continue  # that group is not written yet
            raise
        module.register(subparsers)
    return parser


class _FilteredImportLoader(importlib.abc.Loader):
    """Runs a module's import with file descriptor 2 filtered (``notebook.filtered_stderr``);
    everything else is the real loader's."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        from allnet_lib.notebook import filtered_stderr

        try:
            with filtered_stderr():
                self._loader.exec_module(module)
        finally:  # leave no trace of this wrapper on the module
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as Python would, but imports it through :class:`_FilteredImportLoader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None  # not installed (or not a plain package): Python's own finders decide
        spec.loader = _FilteredImportLoader(spec.loader)
        return spec


@contextlib.contextmanager
def tensorflow_import_filtered():
    """While inside, a first ``import tensorflow`` (wherever a command does it) runs with its C++
    start-up lines (``notebook.TF_STARTUP_NOISE``: the oneDNN notice, absl's "All log messages
    before absl::InitializeLog() ...") removed from stderr; other stderr output is kept. These
    lines are written by C++ straight to file descriptor 2 before TensorFlow's log level applies,
    so only filtering removes them (switching oneDNN off would too, and slow training down).
    Commands that never import TensorFlow pay nothing."""
    if "tensorflow" in sys.modules:
        yield
        return
    finder = _QuietTensorFlowFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM ends a command like Ctrl-C: ``finally`` blocks run (temporary outputs removed,
    worker pools shut down) instead of the process vanishing mid-write."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _save_traceback(command: str) -> str:
    """Write the current exception's traceback to a new file in the temp folder; its path."""
    text = traceback.format_exc()
    try:
        handle, path = tempfile.mkstemp(prefix=f"allnet-{command}-{time.strftime('%Y%m%d-%H%M%S')}-",
                                        suffix=".traceback.txt")
        with os.fdopen(handle, "w") as out:
            out.write(f"allnet {command}: {' '.join(sys.argv)}\n\n{text}")
        return path
    except OSError:  # no writable temp folder: print it after all
        print(text, file=sys.stderr)
        return "(printed above)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from allnet_lib.notebook import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's retracing warnings and C++ log levels drown the output
    try:
        from allnet_lib.messages import cli_spelling

        # library messages name this command's flags ("pass --overwrite", not "overwrite=True")
        with _sigterm_as_interrupt(), tensorflow_import_filtered(), \
                cli_spelling(getattr(args, "spelling", {})):
            return int(args.func(args) or 0)
    except UserError as error:
        print(f"allnet {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        if not error.filename:  # no file named: not the user's paths, so treat it as a crash below
            return _crash(args, error)
        print(f"allnet {args.command}: error: {error.filename}: {error.strerror or error}; check "
              "that path (permissions, free space) and run again", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as stop:  # a library's own SIGTERM handler (demo-data's) ends the same way
        if stop.code != 128 + signal.SIGTERM:
            raise
        print(f"allnet {args.command}: interrupted; unfinished outputs were removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"allnet {args.command}: interrupted; unfinished outputs were removed (run the same "
              "command again to start over or resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: one line, the traceback kept for the report
        return _crash(args, error)


def _crash(args, error: BaseException) -> int:
    """Report an internal error in one line plus where its traceback is; EXIT_INTERNAL."""
    if args.debug:
        traceback.print_exc()
        where = "traceback above"
    else:
        where = f"traceback saved to {_save_traceback(args.command)}"
    print(f"allnet {args.command}: internal error: {type(error).__name__}: {error}\n"
          f"This is a bug in allnet, not a problem with your data. {where}; please report it "
          f"with that file at {ISSUES_URL} (`allnet --debug {args.command} ...` prints it).",
          file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
