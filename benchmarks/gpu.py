"""``--only gpu``: the GPU variants of the training benchmark alone (float32 or mixed precision,
with or without XLA, data in memory), for a GPU machine; the CPU tables are left as they are.
See ``benchmarks/training.py``."""

from __future__ import annotations

from benchmarks.common import Config, Table
from benchmarks.training import run_gpu_only


def run(cfg: Config) -> list[Table]:
    return run_gpu_only(cfg)
