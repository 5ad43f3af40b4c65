"""How a message names an option: as the Python argument or as the command-line flag.

The library's errors say what to do, e.g. "pass overwrite=True to replace it". Called from the
``allnet`` command the same advice must name the flag the user can type (``--overwrite``). A
library message spells an option with :func:`option`; the CLI runs each command inside
:func:`cli_spelling` with its own flags, so the message fits whoever called.

    >>> option("overwrite")
    'overwrite=True'
    >>> with cli_spelling({"overwrite": "--overwrite"}):
    ...     option("overwrite")
    '--overwrite'
"""

from __future__ import annotations

import contextlib
import contextvars

_SPELLING: contextvars.ContextVar[dict | None] = contextvars.ContextVar("allnet_cli_spelling", default=None)


def option(name: str, python: str | None = None) -> str:
    """How the caller passes option ``name``: the CLI's flag inside :func:`cli_spelling` (when it
    has one), else ``python`` (default ``name=True``)."""
    spelling = _SPELLING.get()
    if spelling and name in spelling:
        return spelling[name]
    return python if python is not None else f"{name}=True"


@contextlib.contextmanager
def cli_spelling(flags: dict[str, str]):
    """Inside, :func:`option` names options by ``flags`` (Python argument name -> CLI text)."""
    token = _SPELLING.set(dict(flags))
    try:
        yield
    finally:
        _SPELLING.reset(token)
