"""``python -m benchmarks --quick`` runs end to end and writes well-formed tables.

Only the machinery is checked: that every benchmark runs at tiny sizes, that each table has its
columns and rows, and that the results say where and how they were measured. Timings are never
asserted (they depend on the machine and on whatever else it is doing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_COLUMNS = {
    "pipeline": {"method", "images", "seconds", "images_per_s", "extra_disk_mb", "speed_vs_a",
                 "time_vs_a", "disk_vs_a", "target"},
    "training": {"model", "profile", "image_size", "batch", "train_ips_files",
                 "train_ips_memory", "ratio_train", "train_ips_cache", "ratio_cache",
                 "cache_fill_s", "infer_ips_files", "infer_ips_memory", "ratio_infer",
                 "peak_rss_gb", "warmup_s"},
    "training_gpu": set(),
    "book": {"chapter"},
    "book_totals": {"profile"},
    "scaling_pipeline": {"images", "seconds", "time_ratio", "expected_ratio",
                         "measured_vs_expected", "growth"},
    "scaling_training": {"model", "image_size", "step_s", "time_ratio", "expected_ratio",
                         "measured_vs_expected", "growth"},
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    out, work = base / "results", base / "work"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--work", str(work)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out, proc.stdout


def test_every_table_is_written(quick_run):
    out, stdout = quick_run
    for name, columns in EXPECTED_COLUMNS.items():
        frame = pd.read_csv(out / f"{name}.csv")
        assert len(frame) >= 1, name
        assert columns <= set(frame.columns), f"{name}: missing {columns - set(frame.columns)}"
        assert f"{name}.csv" in (out / "results.md").read_text()


def test_tables_are_filled(quick_run):
    out, _ = quick_run
    pipeline = pd.read_csv(out / "pipeline.csv")
    assert pipeline["method"].str[:3].tolist()[:5] == ["(a)", "(a)", "(a)", "(a'", "(b)"]
    assert (pipeline["seconds"] > 0).all() and (pipeline["images"] > 0).all()
    assert pipeline.loc[4, "extra_disk_mb"] == 0 and pipeline.loc[0, "extra_disk_mb"] > 0
    training = pd.read_csv(out / "training.csv")
    numeric = ["train_ips_files", "train_ips_memory", "train_ips_cache", "cache_fill_s",
               "infer_ips_files", "infer_ips_memory", "peak_rss_gb"]
    assert (training[numeric] > 0).all().all()
    scaling = pd.read_csv(out / "scaling_pipeline.csv")
    assert scaling["images"].tolist() == sorted(scaling["images"]) and len(scaling) == 3
    steps = pd.read_csv(out / "scaling_training.csv")
    assert (steps["step_s"] > 0).all()


def test_results_say_where_and_how(quick_run):
    out, stdout = quick_run
    runs = pd.read_csv(out / "runs.csv")
    assert set(EXPECTED_COLUMNS) == set(runs["table"])
    for column in ("date", "command", "cpu", "cores_usable", "ram_gb", "tensorflow", "keras"):
        assert runs[column].notna().all(), column
    assert runs["command"].str.startswith("python -m benchmarks --quick").all()
    assert runs["quick"].all()
    text = (out / "results.md").read_text()
    assert "## Machine" in text and "QUICK" in text and "python -m benchmarks --quick" in text
    assert "### Input pipeline" in stdout  # the tables are printed too


def test_only_keeps_other_tables(quick_run, tmp_path):
    """--only book rewrites its tables and leaves the others in runs.csv and results.md."""
    out, _ = quick_run
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "book",
                           "--out", str(out), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv")
    assert set(EXPECTED_COLUMNS) == set(runs["table"])
    assert "Input pipeline" in (out / "results.md").read_text()


def test_unknown_benchmark_is_refused():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown benchmark" in proc.stderr
