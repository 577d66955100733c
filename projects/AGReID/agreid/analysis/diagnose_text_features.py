"""Diagnostics of the text features T that stage 2's image-to-text loss L_CE classifies with.

For each run (a checkpoint, model_final.pth or model_stage1.pth, or a run folder: its
model_final.pth; the config is the one embedded in the checkpoint), on its synthetic training
set: mean |T| and |f| (f_proj of the training images, un-augmented, with SIE), the mean cosine
between two identities' T over all pairs and over hard pairs (identities with equal upper
colour, lower colour and shoes in attributes.json), the identity top-1 accuracy through T
(argmax f.T), and L_CE as trained and with T rescaled to a reference mean norm (--reference-norm
X, or --baseline RUN: that run's mean |T|). One markdown row per run on stdout; every number
(and more: |T| spread, cosines of the other and of the generator's twin pairs, top-1 by cosine)
in the JSON file --output. Library: agreid.analysis.text_features (its docstring defines each
number).

    python tools/diagnose_text_features.py \\
        --runs logs/ablations/small/runs/baseline/seed0 logs/ablations/small/runs/at/seed0 \\
        --baseline logs/ablations/small/runs/baseline/seed0 --output logs/text_features.json

A missing file, a damaged checkpoint or a dataset without the synthetic ground truth
(attributes.json) ends with one line "error: ..." and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                        help="checkpoints (model_final.pth, model_stage1.pth) or run folders (their model_final.pth)")
    parser.add_argument("--names", default=None, help="comma-separated names of the runs in the table "
                                                       "(default: from their paths)")
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument("--reference-norm", type=float, default=None, metavar="X",
                           help="also compute L_CE with T rescaled to mean norm X")
    reference.add_argument("--baseline", default=None, metavar="RUN",
                           help="take X from this run: its mean |T| (e.g. the CLIP-ReID baseline)")
    parser.add_argument("--output", default="logs/text_features.json", metavar="JSON",
                        help="where to write the numbers (default: %(default)s)")
    parser.add_argument("--dataset-root", default=None, metavar="DIR",
                        help="DATASETS.ROOT, when the runs' own root is not where the data is now")
    parser.add_argument("--device", default=None, help="MODEL.DEVICE (default: the run's; cpu without CUDA)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides for every run (must come last)")
    args = parser.parse_args(argv)
    if args.reference_norm is not None and not args.reference_norm > 0:
        parser.error(f"--reference-norm must be positive, not {args.reference_norm}")
    if args.names is not None:
        args.names = [n.strip() for n in args.names.split(",")]
        if len(args.names) != len(args.runs):
            parser.error(f"--names gives {len(args.names)} names for {len(args.runs)} runs")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import agreid  # noqa: F401  (patches fastreid before the analysis imports it)
    from . import one_line
    from .runs import ATTRIBUTES_FILE, dataset_of, ground_truth, load_run, run_config
    from .text_features import describe, diagnose_run, markdown, mean_text_norm, text_features_of
    from ..serialization import write_text_atomically

    opts = list(args.opts) + (["DATASETS.ROOT", args.dataset_root] if args.dataset_root else [])
    names = args.names or [None] * len(args.runs)
    try:
        # Every file and the ground truth first, so a bad argument stops before any model is built.
        configs = [run_config(path, opts, args.device) for path in args.runs]
        for cfg in configs:
            ground_truth(dataset_of(cfg).dataset_dir, ATTRIBUTES_FILE)
        baseline_cfg = run_config(args.baseline, opts, args.device) if args.baseline else None
        reference_norm, reference = args.reference_norm, ("--reference-norm" if args.reference_norm else None)
        if baseline_cfg is not None:
            model = load_run(args.baseline, cfg=baseline_cfg).model
            reference_norm, reference = mean_text_norm(text_features_of(model)[0]), baseline_cfg.MODEL.WEIGHTS
            del model
        results = []
        for path, cfg, name in zip(args.runs, configs, names):
            run = load_run(path, name=name, cfg=cfg)
            results.append(diagnose_run(run, reference_norm))
            del run
    except (FileNotFoundError, ValueError) as error:  # GroundTruthMissingError, CheckpointFileError included
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2

    print(markdown(results))
    print()
    print(describe(results) + (f" Reference norm {reference_norm:.4f} ({reference})." if reference_norm else ""))
    invocation = "python tools/diagnose_text_features.py " + " ".join(sys.argv[1:] if argv is None else argv)
    payload = {"runs": results, "reference_norm": reference_norm, "reference": reference,
               "invocation": invocation, "table": markdown(results)}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_text_atomically(json.dumps(payload, indent=1) + "\n", args.output)
    print(f"wrote {args.output}")
    return 0

