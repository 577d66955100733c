"""Alias: do the learned pseudo-labels carry the attributes? Does the noise mask drop occluded slots?

``tools/probe_pseudo_labels.py`` is kept as an alias of the two tools that replaced it, run with
the equivalent arguments (synthetic data only; its ``attributes.json`` and ``occlusion.json``
are the ground truth):

1. ``tools/probe_attributes.py --config-file FILE --weights MODEL.WEIGHTS --folds N``: the
   project's linear probe (``agreid.analysis.probes``) from each identity's pseudo-labels ``V[k]``
   to each true attribute, next to the majority-class rate and the same probe on freshly
   initialised tokens (the control), and per slot;
2. ``tools/analyze_noise_mask.py --config-file FILE --thresholds otsu``: the attribute encoder's
   prediction ``a = E_A(f_proj)`` of every training image against its identity's ``V``, masked by
   training's noise mask in batches of the training batch size (Otsu per batch, as in training).
   Besides that tool's tables, this alias prints the share of slots masked and the mean cosine
   for occluded images (any part hidden) and for whole ones.

The files of both go into ``--output-dir`` (``probe/``, ``noise_mask/``); without it they are
written to a temporary folder and deleted.

    python tools/probe_pseudo_labels.py --config-file logs/demo/agreid/config.yaml \\
        MODEL.WEIGHTS logs/demo/agreid/model_final.pth
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from tabulate import tabulate


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--output-dir", default=None, help="keep the two tools' files here (default: none kept)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def image_table(result: dict) -> str:
    """The noise mask (Otsu per batch) on occluded and whole training images, as a pipe table."""
    otsu = result["thresholds"]["otsu"]
    rows = [[name, result["by_image"][name]["images"], result["by_image"][name]["mean_cosine"],
             otsu["by_image"][name]] for name in ("occluded", "whole")]
    return tabulate(rows, headers=["images", "count", "mean cos(a, v)", "slots masked"], floatfmt=".3f",
                    tablefmt="pipe")


def main(argv=None) -> int:
    args = parse_args(argv)
    import agreid

    from . import analyze_noise_mask, probe_attributes

    try:
        cfg = agreid.get_agreid_cfg(args.config_file, args.opts)
    except (FileNotFoundError, ValueError) as error:  # a wrong config
        print(f"error: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        out = args.output_dir or scratch
        probe_args = ["--config-file", args.config_file, "--weights", cfg.MODEL.WEIGHTS, "--folds", str(args.folds),
                      "--output-dir", os.path.join(out, "probe"), *args.opts]
        mask_args = ["--config-file", args.config_file, "--thresholds", "otsu",
                     "--output-dir", os.path.join(out, "noise_mask"), *args.opts]
        print(f"tools/probe_pseudo_labels.py is an alias: tools/probe_attributes.py {' '.join(probe_args)}, then "
              f"tools/analyze_noise_mask.py {' '.join(mask_args)}", file=sys.stderr)
        result = probe_attributes.run(probe_args)
        print(f"Linear probe from V[k] to the true attributes, {result['num_ids']} training identities, "
              f"{args.folds}-fold stratified cross-validation.")
        if not cfg.MODEL.ATTR.ENABLED:
            print("No attribute encoder in this model (MODEL.ATTR.ENABLED False): no noise-mask check.")
            return 0
        result = analyze_noise_mask.run(mask_args)
    print(f"\nAttribute encoder vs pseudo-labels on the training images (Otsu per batch of "
          f"{result['batch_size']}, mean gamma = {result['thresholds']['otsu']['gamma_mean']:.3f}):")
    print(image_table(result))
    return 0
