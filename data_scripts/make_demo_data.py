#!/usr/bin/env python
"""Make the synthetic C-NMC-like demo dataset (a thin wrapper over allnet_lib.demo).

    python data_scripts/make_demo_data.py                     # 1,800 images, 450x450 BMP
    python data_scripts/make_demo_data.py --out /tmp/demo --n-images 300 --size 96

Same as ``allnet demo-data``. The images are synthetic: see allnet_lib.demo.DEMO_DESCRIPTION.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    from allnet_lib import demo
    from allnet_lib.paths import demo_dir

    parser = argparse.ArgumentParser(
        description="Write the synthetic C-NMC-like demo dataset in the real training layout "
        "(C-NMC_training_data/fold_N/{all,hem}/UID_...). The images are synthetic, not patient data.",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: {demo_dir()})")
    parser.add_argument("--n-images", type=int, default=1800, help="number of images (default 1800)")
    parser.add_argument("--size", type=int, default=450, help="image side in pixels (default 450, as C-NMC)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--ext", default="bmp", choices=demo.SUPPORTED_EXTS, help="file format (default bmp)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a demo set made with other options (never a folder that is not a demo set)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--describe", action="store_true", help="print what the demo data is, and exit")
    args = parser.parse_args(argv)
    if args.describe:
        print(demo.DEMO_DESCRIPTION)
        return 0
    started = time.perf_counter()
    try:
        out = demo.make_demo_dataset(args.out, n_images=args.n_images, image_size=args.size, seed=args.seed,
                                     ext=args.ext, overwrite=args.overwrite, progress=not args.quiet,
                                     workers=args.workers)
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    manifest = demo.read_demo_manifest(out)
    print(f"demo dataset: {out} ({manifest['n_files']} images, {time.perf_counter() - started:.1f} s)")
    for key, count in sorted(manifest["counts"].items()):
        print(f"  {key}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
