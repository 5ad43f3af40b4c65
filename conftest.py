"""The test session's environment, set when pytest starts: before any test, and so before any
notebook kernel (nbval, papermill, the book build) is started, since kernels inherit it.

- ``ALLNET_PROFILE=smoke``: tests always run the smallest profile (a test that wants another
  profile passes it explicitly);
- ``ALLNET_DATA`` and ``ALLNET_RUNS``: a temporary folder for the session, unless already set,
  so tests never touch ``~/allnet_data`` and the demo set is generated once per session;
- TensorFlow's environment as the library sets it (``allnet_lib.notebook.TF_ENV``): C++ log level
  lowered, oneDNN's fast CPU kernels on. Its start-up notice is filtered by text
  (``notebook.TF_STARTUP_NOISE``), never hidden by TF_ENABLE_ONEDNN_OPTS=0.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CREATED: list[str] = []


def _set_environment() -> None:
    os.environ["ALLNET_PROFILE"] = "smoke"
    if not (os.environ.get("ALLNET_DATA") and os.environ.get("ALLNET_RUNS")):
        session_dir = tempfile.mkdtemp(prefix="allnet-tests-")
        _CREATED.append(session_dir)
        os.environ.setdefault("ALLNET_DATA", os.path.join(session_dir, "data"))
        os.environ.setdefault("ALLNET_RUNS", os.path.join(session_dir, "runs"))
    from allnet_lib.notebook import TF_ENV

    for key, value in TF_ENV.items():  # quiet C++ log, oneDNN on (as in the chapters)
        os.environ.setdefault(key, value)


_set_environment()


def pytest_report_header(config):
    return (f"allnet: ALLNET_PROFILE={os.environ['ALLNET_PROFILE']} "
            f"ALLNET_DATA={os.environ['ALLNET_DATA']} ALLNET_RUNS={os.environ['ALLNET_RUNS']}")


def pytest_unconfigure(config):
    """Remove the session's temporary data folder (only the one this file created)."""
    for path in _CREATED:
        shutil.rmtree(path, ignore_errors=True)
