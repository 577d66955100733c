#!/usr/bin/env python
"""Generate the deterministic synthetic occluded ReID dataset (docs/SYNTHETIC.md).

Example::

    python tools/make_synthetic.py --root datasets --preset small --seed 0 --preview
"""
import argparse
import logging
import sys
import time
from pathlib import Path

from agreid.data.synthetic import DATASET_DIR, PRESETS, generate, write_preview


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True,
                        help=f"folder that receives {DATASET_DIR}/ (use the same as DATASETS.ROOT)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                        help="tiny: unit tests; small: the demo; large: Occluded-Duke-sized benchmark")
    parser.add_argument("--seed", type=int, default=0, help="the same preset and seed give the same bytes")
    parser.add_argument("--preview", nargs="?", const="", default=None, metavar="PNG",
                        help=f"also write a contact sheet of 8 identities (default: ROOT/{DATASET_DIR}/preview.png)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset made with another preset or seed, or an unfinished folder")
    parser.add_argument("--workers", type=int, default=None,
                        help="drawing processes (default: one per CPU for large datasets); does not change the output")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Generate, print a summary, optionally write the preview."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    try:
        summary = generate(args.root, preset=args.preset, seed=args.seed, overwrite=args.overwrite,
                           num_workers=args.workers)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    state = "already complete, nothing written" if summary["skipped"] else f"generated in {seconds:.1f} s"
    print(f"{summary['path']}: preset {summary['preset']}, seed {summary['seed']}, {state}")
    for split in ("train", "query", "gallery"):
        counts = summary["splits"][split]
        print(f"  {split:8s} {counts['ids']:5d} ids {counts['images']:6d} images {counts['occluded']:6d} occluded")
    if args.preview is not None:
        out_png = args.preview or Path(summary["path"]) / "preview.png"
        print(f"preview: {write_preview(summary['path'], out_png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
