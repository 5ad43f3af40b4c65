"""allnet's benchmarks: how fast the input pipeline, training, the book and scaling are.

Run ``python -m benchmarks`` (or ``./run bench``); ``--quick`` for tiny sizes. See
``benchmarks/README.md`` for what each benchmark measures and its targets. Results go to
``benchmarks/results/`` (one CSV per table, ``runs.csv``, ``results.md``), which the book's
"How fast is it?" appendix reads.
"""

from __future__ import annotations

#: name -> module (in run order). Each module has ``run(cfg) -> list[Table]``.
BENCHMARKS = {
    "pipeline": "benchmarks.input_pipeline",
    "training": "benchmarks.training",
    "book": "benchmarks.book",
    "scaling": "benchmarks.scaling",
    "gpu": "benchmarks.gpu",  # only the GPU variants (training also writes them on a GPU)
}

#: What ``python -m benchmarks`` runs without ``--only``.
DEFAULT = ("pipeline", "training", "book", "scaling")

#: Every table a full run writes, in the order results.md shows them.
TABLE_ORDER = ("pipeline", "training", "training_gpu", "book", "book_totals",
               "scaling_pipeline", "scaling_training")
