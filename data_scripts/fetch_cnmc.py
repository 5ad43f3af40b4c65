#!/usr/bin/env python3
"""Get the C-NMC 2019 leukemia cell images into $ALLNET_DATA/cnmc (TCIA layout).

A thin wrapper over allnet_lib.fetch; see data_scripts/README.md and `--help`:

    python data_scripts/fetch_cnmc.py hf                       # Hugging Face parquet mirror
    python data_scripts/fetch_cnmc.py kaggle                   # Kaggle mirror (needs kagglehub + token)
    python data_scripts/fetch_cnmc.py tcia --url URL           # TCIA package link
    python data_scripts/fetch_cnmc.py tcia --archive FILE.zip  # an archive you downloaded yourself
"""

import sys
from pathlib import Path

try:
    from allnet_lib.fetch import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from allnet_lib.fetch import main

if __name__ == "__main__":
    sys.exit(main())
