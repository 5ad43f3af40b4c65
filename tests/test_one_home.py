"""One fact, one home (issue 14): the model catalogue, the run folder, the data-folder rule, the
split registry and the chapters' experiment preamble each live in one place. These tests fail
when a second definition appears (a copied list of models, a file name spelled out again, a
second split table), and check that the views derived from each home agree with it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from allnet_lib import catalogue, compare, paths, plots, profiles, runs, split

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "allnet_lib").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
CHAPTERS_5_9 = sorted((ROOT / "book" / "experiments").glob("0[5-9]_*.ipynb"))
RUN_FILES = {runs.CONFIG_NAME, runs.HISTORY_NAME, runs.BEST_NAME, runs.LAST_NAME, runs.RECORD_NAME}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _docstrings(tree) -> set[int]:
    """ids of the docstring constants (they may describe a run folder in words)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _string_constants(tree):
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node


# ----------------------------------------------------------------------------------------------
# 1. the model catalogue
# ----------------------------------------------------------------------------------------------


def test_catalogue_and_profiles_import_without_a_deep_learning_framework():
    code = ("import sys, allnet_lib.catalogue, allnet_lib.profiles, allnet_lib.runs, allnet_lib.paths; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_view_of_the_catalogue_agrees_with_it():
    from allnet_lib.models import MODEL_SPECS, list_models

    names = list(catalogue.CATALOGUE)
    assert list(profiles.MODEL_NAMES) == names == list_models() == list(MODEL_SPECS)
    assert profiles._REPORT_SIZES == profiles.get_profile("seed").image_sizes == catalogue.report_sizes()
    assert profiles.get_profile("smoke").image_sizes == catalogue.min_sizes()
    assert compare.REPORT_TABLE2 == catalogue.report_table2()
    assert plots.MODEL_COLORS == catalogue.model_colors()
    from allnet_lib.models import BUILDERS

    assert list(BUILDERS) == names, "every catalogued model has exactly one builder"
    for name, entry in catalogue.CATALOGUE.items():
        spec = MODEL_SPECS[name]
        assert (spec.title, spec.report_size, spec.min_size, spec.demo_size, spec.year, spec.introduced,
                spec.reference_accuracy) == (entry.title, entry.report_size, entry.min_size,
                                             entry.demo_size, entry.year, entry.introduced,
                                             entry.report_accuracy)
        assert plots.model_color(name) == entry.color


def _collections_naming_every_model(tree):
    names = set(catalogue.CATALOGUE)
    for node in ast.walk(tree):
        items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
        if isinstance(node, (ast.Dict, ast.List, ast.Tuple, ast.Set)) and items:
            found = {k.value for k in items if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            if names <= found:
                yield node


def test_the_catalogue_is_not_copied_in_the_library():
    """No list, tuple, set or dict naming every model, no report accuracy and no model colour
    outside catalogue.py: anything that needs them derives from the catalogue."""
    facts = set(catalogue.report_table2().values())
    colours = {c.lower() for c in catalogue.model_colors().values()}
    problems = []
    for path in LIBRARY:
        if path.name == "catalogue.py":
            continue
        tree = _tree(path)
        allowed = {id(node.value) for node in ast.walk(tree)  # the builders: the catalogue's other half
                   if path.name == "models.py" and isinstance(node, ast.AnnAssign)
                   and getattr(node.target, "id", None) == "BUILDERS"}
        problems += [f"{_rel(path)}:{n.lineno}: lists every model" for n in _collections_naming_every_model(tree)
                     if id(n) not in allowed]
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, float) and node.value in facts:
                problems.append(f"{_rel(path)}:{node.lineno}: the report's Table 2 figure {node.value}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in colours:
                problems.append(f"{_rel(path)}:{node.lineno}: a model's colour {node.value}")
    assert not problems, "\n".join(problems)


def test_chapters_5_to_9_take_their_models_from_the_catalogue():
    for path in CHAPTERS_5_9:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                tree = ast.parse("\n".join(line.split("%")[0] + "pass" if line.lstrip().startswith(("%", "!"))
                                           else line for line in "".join(cell["source"]).splitlines()))
                assert not list(_collections_naming_every_model(tree)), f"{path.name}: a copied model list"


def test_chapter_model_lists_name_catalogued_models():
    for path in sorted((ROOT / "book" / "experiments").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                scope: dict = {}
                exec("".join(cell["source"]), scope)  # noqa: S102 - the book's own parameters
                models = scope.get("MODELS")
                assert models is None or set(models) <= set(catalogue.CATALOGUE), path.name


def test_a_sixth_model_needs_a_catalogue_entry_and_a_builder_only(monkeypatch):
    """Adding a model: one catalogue entry, one builder. It is then a known model, has a colour,
    takes the report's reference when it has one, is accepted in profiles, and is compared."""
    from allnet_lib import models

    toy = catalogue.ModelEntry("toy", "Toy", 64, 32, 48, 2026, "A stand-in for a sixth model.",
                               "#123456", report_accuracy=50.0)
    monkeypatch.setitem(catalogue.CATALOGUE, "toy", toy)
    monkeypatch.setitem(models.BUILDERS, "toy", (models.BUILDERS["proposed"][0], "conv_base", False))
    monkeypatch.setitem(models.MODEL_SPECS, "toy", models._spec(toy))
    assert "toy" in models.list_models() and models.get_spec("toy").report_size == 64
    assert plots.model_color("toy") == "#123456"
    assert profiles.get_profile("smoke", image_sizes={"toy": 32}, leakage_model="toy").image_size("toy") == 32
    record = {"name": "toy", "metrics": {"n_images": 1}}
    assert compare.results_table([record])[compare.REFERENCE_COLUMN].iloc[0] == pytest.approx(0.5)
    seen = []

    def fake_run_model(name, split_, profile, run_dir, **kwargs):
        seen.append(name)
        return {"test": {"name": name, "metrics": {"n_images": 1}}}, True

    monkeypatch.setattr(compare, "run_model", fake_run_model)
    monkeypatch.setenv("ALLNET_RUNS", "/nonexistent-runs")
    compare.compare_models(None, SimpleNamespace(name="s"), profiles.get_profile("smoke"), log=lambda *a: None)
    assert seen == list(catalogue.CATALOGUE) and seen[-1] == "toy"


# ----------------------------------------------------------------------------------------------
# 2. the run folder
# ----------------------------------------------------------------------------------------------


def test_run_file_names_are_spelled_only_in_runs():
    problems = []
    for path in LIBRARY:
        if path.name == "runs.py":
            continue
        for node in _string_constants(_tree(path)):
            if node.value in RUN_FILES or (node.value.startswith("record_") and node.value.endswith(".json")):
                problems.append(f"{_rel(path)}:{node.lineno}: {node.value!r}")
    assert not problems, "spell run-folder names through allnet_lib.runs:\n" + "\n".join(problems)


def test_default_run_dir_is_defined_once():
    homes = []
    for path in LIBRARY:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef) and node.name == "default_run_dir":
                deprecated = "DeprecationWarning" in ast.unparse(node)
                if not deprecated:
                    homes.append(_rel(path))
    assert homes == ["allnet_lib/runs.py"]


def test_run_folder_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLNET_RUNS", str(tmp_path))
    where = runs.default_run_dir(SimpleNamespace(name="demo"), SimpleNamespace(name="subject-s0-t20"), "vgg16")
    assert where == tmp_path / "demo" / "subject-s0-t20" / "vgg16"
    assert runs.record_path(where) == where / "record.json"
    assert runs.record_path(where, "heldout") == where / "record_heldout.json"
    with pytest.warns(DeprecationWarning):
        old = compare.default_run_dir("vgg16", SimpleNamespace(name="subject-s0-t20"), SimpleNamespace(name="demo"))
    assert old == where
    from allnet_lib import train

    assert train.default_run_dir is runs.default_run_dir and train.read_history is runs.read_history
    assert compare.RECORD_NAME == runs.RECORD_NAME
    assert runs.read_config(where) is None and not runs.is_finished(where)
    runs.write_json(runs.config_path(where), {"status": "finished"})
    assert runs.read_config(where) == {"status": "finished"} and not runs.is_finished(where)  # no best.keras
    assert [p.name for p in where.iterdir()] == ["config.json"]  # nothing temporary left


# ----------------------------------------------------------------------------------------------
# 3. the data-folder rule
# ----------------------------------------------------------------------------------------------


def test_the_data_folder_rule_is_defined_once():
    homes = [_rel(path) for path in LIBRARY for node in ast.walk(_tree(path))
             if isinstance(node, (ast.FunctionDef, ast.Assign))
             and ("data_dir_for" == getattr(node, "name", None)
                  or any(getattr(t, "id", None) == "REAL_DATA_PROFILES" for t in getattr(node, "targets", [])))]
    assert homes == ["allnet_lib/paths.py", "allnet_lib/paths.py"]


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLNET_DATA", str(tmp_path))
    monkeypatch.delenv("ALLNET_PROFILE", raising=False)
    return tmp_path


def test_book_and_both_cli_modules_choose_the_same_folder(data_root):
    """Real data present: profile demo uses the demo set everywhere, profile seed the real data."""
    from allnet_lib import notebook
    from allnet_lib.cli import data as cli_data
    from allnet_lib.cli import experiment as cli_experiment

    cnmc = data_root / "cnmc" / "C-NMC_training_data" / "fold_0" / "all"
    cnmc.mkdir(parents=True)
    (data_root / "demo" / "C-NMC_training_data").mkdir(parents=True)
    assert notebook.data_dir_for(profiles.get_profile("demo")) == (paths.demo_dir(), False)
    assert cli_data._default_data() == paths.demo_dir()
    seed = profiles.get_profile("seed")
    assert notebook.data_dir_for(seed) == (paths.cnmc_dir(), True)
    args = SimpleNamespace(data=None, no_progress=True)
    assert cli_experiment._data_folder(args, seed) == paths.cnmc_dir()


# ----------------------------------------------------------------------------------------------
# 4. the split registry
# ----------------------------------------------------------------------------------------------


def test_split_registry_is_defined_once():
    homes = {}
    for path in LIBRARY:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if getattr(target, "id", None) in ("SPLIT_METHODS", "DEFAULT_SEEDS"):
                        homes.setdefault(target.id, []).append(_rel(path))
    assert homes == {"SPLIT_METHODS": ["allnet_lib/split.py"], "DEFAULT_SEEDS": ["allnet_lib/split.py"]}
    from allnet_lib.cli import data as cli_data
    from allnet_lib.cli import experiment as cli_experiment

    assert cli_data.SPLIT_METHODS is cli_experiment.SPLIT_METHODS is split.SPLIT_METHODS


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    """A table like the real data's: training folds plus a labelled preliminary test fold."""
    rows = []
    for fold, subjects in (("fold_0", range(0, 6)), ("fold_1", range(6, 12)), ("fold_2", range(12, 18)),
                           ("prelim_test", range(18, 22))):
        for s in subjects:
            label = "all" if s % 3 else "hem"
            for i in range(4):
                name = f"UID_{s}_{i}_1_{label}.bmp"
                rows.append({"path": f"/x/{fold}/{name}", "filename": name, "label": label,
                             "y": int(label == "all"), "subject": str(s), "fold": fold, "image": i, "cell": 1})
    return pd.DataFrame(rows)


def test_same_name_same_split_for_every_caller(real_layout):
    made = split.make_split(real_layout, "subject", seed=0, test_size=0.2, val_size=0.2)
    assert "prelim_test" not in set(made.manifest()["fold"]), "test sets stay out of a named split"
    via_compare = compare.make_split(real_layout, "subject", seed=0, test_size=0.2, val_size=0.2)
    assert split.manifest_hash(via_compare) == split.manifest_hash(made)
    again = split.make_split(real_layout, **split.split_settings(made))
    assert again.name == made.name and split.manifest_hash(again) == split.manifest_hash(made)
    assert split.make_split(real_layout, "image").seed == split.DEFAULT_SEEDS["image"] == 120
    with pytest.raises(ValueError, match="unknown split method"):
        split.make_split(real_layout, "random")


def test_evaluate_rebuilds_a_split_from_its_stored_settings(real_layout):
    from allnet_lib.cli import experiment as cli_experiment

    made = split.make_split(real_layout, "image", seed=7, test_size=0.25, val_size=0.1)
    stored = {"config": {"split": made.name, "split_hash": split.manifest_hash(made)},
              "split_settings": split.split_settings(made)}
    assert split.manifest_hash(cli_experiment._rebuild_split(stored, real_layout)) == split.manifest_hash(made)


# ----------------------------------------------------------------------------------------------
# 5. the experiment preamble
# ----------------------------------------------------------------------------------------------


def test_chapters_5_to_9_open_with_the_one_experiment_call():
    for path in CHAPTERS_5_9:
        nb = json.loads(path.read_text(encoding="utf-8"))
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        # exercise answers may run experiments of their own (another split seed, say)
        lesson = [c for c in code if "### BEGIN SOLUTION" not in c]
        calls = [c for c in lesson if "notebook.experiment(ctx, MODELS" in c]
        assert len(calls) == 1, f"{path.name}: one notebook.experiment call expected, found {len(calls)}"
        for text in code:
            for pasted in ("reader.index_dataset(", "split.subject_split(", "ctx.ensure_demo_data()"):
                assert pasted not in text, f"{path.name}: the preamble is pasted again ({pasted})"


def test_experiment_builds_the_split_that_compare_and_the_cli_build(data_root, monkeypatch):
    from allnet_lib import notebook

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx = notebook.setup("smoke", verbose=False)
    exp = notebook.experiment(ctx, train=False)
    assert exp.models == list(catalogue.CATALOGUE) and exp.results is None
    same = split.make_split(exp.table, "subject", seed=0, test_size=0.2, val_size=0.2)
    assert exp.split.name == same.name == "subject-s0-t20-v20"
    assert split.manifest_hash(exp.split) == split.manifest_hash(same)
    assert exp.run_dirs["vgg16"] == runs.default_run_dir(ctx.profile, exp.split, "vgg16")


def test_allnet_compare_and_the_book_share_data_split_and_run_folders(data_root, monkeypatch, tmp_path):
    """`allnet compare --profile smoke` and chapters 5-9 under smoke: the same data folder, the same
    split (name and manifest) and the same run folders. Nothing is trained: the command is stopped
    where it hands its split to compare_models."""
    from allnet_lib import notebook
    from allnet_lib.cli import build_parser

    monkeypatch.setenv("ALLNET_RUNS", str(tmp_path / "runs"))
    handed = {}

    class Stop(Exception):
        pass

    def fake_compare_models(names, split_, profile, *, out_dir=None, **kwargs):
        handed.update(names=list(names), split=split_, run_dirs={n: Path(out_dir) / n for n in names})
        raise Stop

    monkeypatch.setattr(compare, "compare_models", fake_compare_models)
    args = build_parser().parse_args(["compare", "--models", "vgg16,proposed", "--profile", "smoke",
                                      "--no-progress"])
    with pytest.raises(Stop):
        args.func(args)
    monkeypatch.undo()
    monkeypatch.setenv("ALLNET_DATA", str(data_root))
    monkeypatch.setenv("ALLNET_RUNS", str(tmp_path / "runs"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx = notebook.setup("smoke", verbose=False)
    exp = notebook.experiment(ctx, ["vgg16", "proposed"], train=False)
    assert handed["split"].name == exp.split.name == "subject-s0-t20-v20"
    assert split.manifest_hash(handed["split"]) == split.manifest_hash(exp.split)
    assert handed["run_dirs"] == exp.run_dirs
