"""The ``allnet`` command. Each group of subcommands lives in its own module and registers itself
through a ``register(subparsers)`` function, so data and experiment commands grow independently.

Exit codes: 0 success, 1 the work failed (e.g. a check found problems), 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from allnet_lib.notebook import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's start-up chatter and retracing warnings drown the output
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"allnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
