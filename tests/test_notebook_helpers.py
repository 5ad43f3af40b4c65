"""allnet_lib.notebook: the opening every chapter runs (profile, seeds, data folders, one line)."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import pytest

from allnet_lib import notebook, paths
from allnet_lib.profiles import get_profile


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty data root and runs folder of its own for each test."""
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "runs"))
    return tmp_path / "data"


def _fake_real_data(root):
    (root / "cnmc" / "C-NMC_training_data" / "fold_0" / "all").mkdir(parents=True)
    return root / "cnmc"


def test_profile_comes_from_argument_then_environment_then_demo(data_root, monkeypatch):
    monkeypatch.setenv("ALLNET_PROFILE", "smoke")
    assert notebook.setup(None, verbose=False).profile.name == "smoke"
    assert notebook.setup("demo", verbose=False).profile.name == "demo"
    custom = get_profile("smoke", epochs=3)
    assert notebook.setup(custom, verbose=False).profile is custom
    monkeypatch.delenv("ALLNET_PROFILE")
    assert notebook.setup(None, verbose=False).profile.name == "demo"


def test_unknown_profile_is_a_clear_error(data_root):
    with pytest.raises(ValueError, match="unknown profile 'fast'.*smoke"):
        notebook.setup("fast", verbose=False)


def test_setup_prints_what_it_runs_on(data_root, capsys):
    import keras

    ctx = notebook.setup("smoke")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    line = " · ".join(lines)
    for part in ("profile smoke", f"Keras {keras.__version__}", f"({keras.backend.backend()} ",
                 f"data {notebook.display_path(paths.demo_dir())} (synthetic demo set)", "Python 3."):
        assert part in line
    assert " · CPU · " in line or " · GPU" in line or " · TPU" in line
    assert "data $ALLNET_DATA/demo " in line and str(paths.demo_dir()) not in line, "no machine's path"
    assert ctx.runs_dir == paths.runs_root() / "smoke"
    assert ctx.on_colab is False


def test_setup_seeds_python_numpy_and_keras(data_root):
    import keras

    def draw():
        return (random.random(), float(np.random.rand()), float(keras.random.uniform((1,))[0]),
                float(np.asarray(keras.initializers.GlorotUniform()((2, 2)))[0, 0]))

    notebook.setup("smoke", seed=3, verbose=False)
    first = draw()
    notebook.setup("smoke", seed=3, verbose=False)
    assert draw() == first
    notebook.setup("smoke", seed=4, verbose=False)
    assert draw() != first


def test_demo_profiles_use_the_demo_set_even_when_real_data_is_there(data_root):
    _fake_real_data(data_root)
    assert notebook.data_dir_for(get_profile("smoke")) == (data_root / "demo", False)
    assert notebook.data_dir_for(get_profile("demo")) == (data_root / "demo", False)


def test_seed_profile_uses_real_data_when_present(data_root):
    cnmc = _fake_real_data(data_root)
    ctx = notebook.setup("seed", verbose=False)
    assert (ctx.data_dir, ctx.real_data) == (cnmc, True)
    assert ctx.ensure_demo_data() == cnmc
    assert not (data_root / "demo").exists(), "no demo set is made when the real data is used"


def test_seed_profile_without_real_data_falls_back_and_says_so(data_root, capsys):
    assert notebook.data_dir_for(get_profile("seed")) == (data_root / "demo", False)
    note = capsys.readouterr().out
    assert "meant for the real C-NMC data" in note and str(data_root / "cnmc") in note


def test_ensure_demo_data_makes_the_set_once(data_root):
    ctx = notebook.setup("smoke", verbose=False)
    folder = ctx.ensure_demo_data()
    assert folder == data_root / "demo"
    images = sorted((folder / "C-NMC_training_data").rglob("*.bmp"))
    assert len(images) == ctx.profile.demo_images
    stamp = (folder / "demo_manifest.json").stat().st_mtime_ns
    assert ctx.ensure_demo_data() == folder
    assert (folder / "demo_manifest.json").stat().st_mtime_ns == stamp, "the second call regenerated it"


def test_quiet_tensorflow_turns_onednn_on_and_keeps_explicit_settings(monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    notebook.quiet_tensorflow()
    assert notebook.os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1", "never switch oneDNN off for quiet"
    assert notebook.os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # someone's explicit choice is kept
    notebook.quiet_tensorflow()
    assert notebook.os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


ONEDNN_NOTICE = ("I0000 00:00:1796046744.357087    5445 port.cc:153] oneDNN custom operations are on. "
                 "You may see slightly different numerical results due to floating-point round-off "
                 "errors from different computation orders. To turn them off, set the environment "
                 "variable `TF_ENABLE_ONEDNN_OPTS=0`.\n")
ABSL_LINE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"


def test_drop_tf_noise_removes_only_the_known_lines():
    cuda = ("E0000 00:00:1712345678.1 123 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
            "Attempting to register factory for plugin cuDNN when one has already been registered\n")
    text = ABSL_LINE + ONEDNN_NOTICE + "epoch 1/1  loss 0.693\n" + cuda + "warning: kept"
    assert notebook.drop_tf_noise(text) == "epoch 1/1  loss 0.693\nwarning: kept"
    assert notebook.drop_tf_noise("plain\n") == "plain\n" and notebook.drop_tf_noise("") == ""


def test_filtered_stderr_replays_the_other_lines(capfd):
    with notebook.filtered_stderr():
        os.write(2, (ABSL_LINE + ONEDNN_NOTICE + "a real error\n").encode())
        print("printed", flush=True)  # stdout is not touched
    captured = capfd.readouterr()
    assert captured.err == "a real error\n" and captured.out == "printed\n"
    with notebook.filtered_stderr():
        os.write(2, ONEDNN_NOTICE.encode())
    assert capfd.readouterr().err == ""


_IMPORT_CHECK = """
import json, sys
{importer}
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
print(json.dumps({{"onednn": bool(_pywrap_util_port.IsMklEnabled()),
                   "loader": type(tf.__loader__).__name__}}))
"""


@pytest.mark.parametrize("importer", [
    "from allnet_lib import notebook; notebook.import_keras()",  # chapters (notebook.setup)
    "from allnet_lib.cli import tensorflow_import_filtered\nwith tensorflow_import_filtered():\n"
    "    import keras",  # the allnet command
])
def test_tensorflow_imports_without_its_startup_notice(importer):
    """oneDNN on (forced with TF_ENABLE_ONEDNN_OPTS=1: TensorFlow's default is off on CPUs
    without AVX-512/AMX), so TensorFlow prints its notice: nothing of it reaches stderr."""
    import json
    import subprocess

    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-c", _IMPORT_CHECK.format(importer=importer)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"onednn": True, "loader": "SourceFileLoader"}
    assert not notebook.TF_STARTUP_NOISE_RE.search(done.stderr), done.stderr[-3000:]
    assert "oneDNN" not in done.stderr and "absl" not in done.stderr, done.stderr[-3000:]


def test_colab_is_detected(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert notebook.on_colab() is ("google.colab" in sys.modules)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20250101-060000_RC00")
    assert notebook.on_colab() is True


def test_plot_style_is_optional_until_plots_exists(monkeypatch):
    import allnet_lib

    monkeypatch.setitem(sys.modules, "allnet_lib.plots", None)  # import now fails as if absent
    monkeypatch.delattr(allnet_lib, "plots", raising=False)
    with pytest.raises(ModuleNotFoundError):
        from allnet_lib import plots  # noqa: F401
    notebook.apply_plot_style()  # no error


def test_tensorflow_warnings_stay_off_the_page_in_a_kernel(tmp_path):
    """In a kernel (sys.ps1 set) TensorFlow sets its logger to INFO on stdout when first asked;
    after setup() its warnings must not print."""
    import subprocess
    import sys

    code = (
        "import sys; sys.ps1 = '>>> '\n"
        "from allnet_lib import notebook\n"
        "notebook.setup('smoke', verbose=False)\n"
        "import tensorflow as tf\n"
        "tf.get_logger().warning('retracing noise')\n"
        "print('done')\n"
    )
    env = {**os.environ, "ALLNET_DATA": str(tmp_path), "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done" in done.stdout
    assert "retracing noise" not in done.stdout + done.stderr


def test_importing_the_package_switches_onednn_on_for_any_script():
    """A user's own script (no notebook.setup, no ./run) gets oneDNN's fast kernels too; an
    explicit choice is kept."""
    import subprocess
    import sys

    code = "import os, allnet_lib; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "1"
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "0"
