"""The ``allnet`` command. Each group of subcommands lives in its own module and registers itself
through a ``register(subparsers)`` function, so data and experiment commands grow independently.

Exit codes: 0 success, 1 the work failed (e.g. a check found problems), 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import sys

# modules under allnet_lib.cli that provide register(subparsers)
COMMAND_MODULES = ("data", "experiment")


class UserError(Exception):
    """Bad input from the user: printed as one clear message, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="allnet",
        description="allnet: prepare C-NMC leukemia cell data, train and compare CNNs.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from allnet_lib.notebook import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's retracing warnings and C++ log levels drown the output
    try:
        with tensorflow_import_filtered():
            return int(args.func(args) or 0)
    except UserError as error:
        print(f"allnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
