"""Generate the deterministic synthetic occluded ReID dataset, or the caption corpus for SynthCLIP.

Examples::

    python tools/make_synthetic.py --root datasets --preset small --seed 0 --preview
    python tools/make_synthetic.py --root datasets --preset pretrain --seed 0 --preview

ReID presets (tiny, small, large) write ROOT/SyntheticOccluded (docs/SYNTHETIC.md); caption
presets (pretrain, pretrain-tiny) write ROOT/SyntheticCaptions with captions.csv (docs/SYNTHCLIP.md).
"""
import argparse
import logging
import sys
import time
from pathlib import Path

from .captions import CAPTION_DIR, CAPTION_PRESETS, generate_captions, write_caption_preview
from .synthetic import DATASET_DIR, PRESETS, generate, write_preview


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True,
                        help=f"folder that receives {DATASET_DIR}/ (use the same as DATASETS.ROOT)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS) + sorted(CAPTION_PRESETS),
                        help="ReID data: tiny (unit tests), small (the demo), large (Occluded-Duke-sized); "
                             f"caption corpus ({CAPTION_DIR}/): pretrain (SynthCLIP), pretrain-tiny (tests)")
    parser.add_argument("--seed", type=int, default=0, help="the same preset and seed give the same bytes")
    parser.add_argument("--preview", nargs="?", const="", default=None, metavar="PNG",
                        help="also write a contact sheet (default: preview.png in the written folder)")
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
    captions = args.preset in CAPTION_PRESETS
    make = generate_captions if captions else generate
    try:
        summary = make(args.root, preset=args.preset, seed=args.seed, overwrite=args.overwrite,
                       num_workers=args.workers)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    state = "already complete, nothing written" if summary["skipped"] else f"generated in {seconds:.1f} s"
    print(f"{summary['path']}: preset {summary['preset']}, seed {summary['seed']}, {state}")
    for split in [s for s in ("train", "query", "gallery", "val") if s in summary["splits"]]:
        counts = summary["splits"][split]
        print(f"  {split:8s} {counts['ids']:5d} ids {counts['images']:6d} images {counts['occluded']:6d} occluded")
    if args.preview is not None:
        out_png = args.preview or Path(summary["path"]) / "preview.png"
        draw = write_caption_preview if captions else write_preview
        print(f"preview: {draw(summary['path'], out_png)}")
    return 0

