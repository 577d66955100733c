"""mAP and Rank-1 of trained runs broken down by how the query is occluded (synthetic data).

From the synthetic test set's occlusion.json: whole vs occluded queries, the occluder type, the
most hidden body region (and, overlapping, every region at least half hidden), and the share of
the body hidden in bins (--bins, percent). Each run (a checkpoint or a run folder: its
model_final.pth; the config is the one embedded in the checkpoint) is evaluated once as training
evaluates it; each subset of queries is then ranked against the full gallery with the project's
evaluate_rank, so the row of all queries is the run's reported mAP / Rank-1 (checked).
Library: agreid.analysis.occlusion (its docstring defines the categories).

    python tools/occlusion_breakdown.py \\
        --runs logs/ablations/small/runs/baseline/seed0 logs/ablations/small/runs/at_ap/seed0 \\
        --names baseline,AG-ReID --output logs/occlusion

Seeds: runs that share a name in --names are seeds of one model. Every name needs the same
number of runs, and the i-th run of each name (in the order given) are paired, as trained with
the same seed. With several seeds a cell is the mean ± sample sd over them, and each model after
the first gets the columns "Δ mAP vs <first> (95% CI)" and "Δ Rank-1 vs <first> (95% CI)": its
difference to the first model, paired by seed, with a Student-t interval (* where it excludes
0; with three models or more the headers start with the model's name). The first line of the
.md file says how many seeds. 2 models x 3 seeds:

    python tools/occlusion_breakdown.py \\
        --runs logs/ablations/small/runs/baseline/seed{0,1,2} logs/ablations/small/runs/at_ap/seed{0,1,2} \\
        --names baseline,baseline,baseline,AG-ReID,AG-ReID,AG-ReID --output logs/occlusion

--output is a folder (it gets occlusion_breakdown.md, .json and .png) or a .png/.pdf/.svg path
(the table and numbers go beside it, same stem). The table is also printed. A missing file, a
damaged checkpoint or a test set without the synthetic ground truth (occlusion.json) ends with
one line "error: ..." and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

STEM = "occlusion_breakdown"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                        help="checkpoints (model_final.pth) or run folders (their model_final.pth)")
    parser.add_argument("--names", default=None,
                        help="comma-separated names of the runs, one per run (default: from their paths); runs "
                             "that share a name are seeds of one model, every name needs the same number of runs "
                             "and the i-th run of each name are paired (same seed), e.g. 2 models x 3 seeds: "
                             "baseline,baseline,baseline,AG-ReID,AG-ReID,AG-ReID")
    parser.add_argument("--output", default="logs/occlusion_breakdown", metavar="DIR_OR_FIGURE",
                        help="folder for occlusion_breakdown.{md,json,png}, or the figure's path "
                             "(default: %(default)s)")
    parser.add_argument("--bins", default="0,25,50,75,100", metavar="EDGES",
                        help="edges of the hidden-share bins in percent, from 0 to 100 (default: %(default)s)")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="test set (default: the first of each run's DATASETS.TESTS)")
    parser.add_argument("--dataset-root", default=None, metavar="DIR",
                        help="DATASETS.ROOT, when the runs' own root is not where the data is now")
    parser.add_argument("--device", default=None, help="MODEL.DEVICE (default: the run's; cpu without CUDA)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides for every run (must come last)")
    args = parser.parse_args(argv)
    args.bins_text = args.bins
    try:
        args.bins = [float(edge) / 100 for edge in args.bins.split(",")]
    except ValueError:
        parser.error(f"--bins: comma-separated numbers, not {args.bins!r}")
    from .occlusion import check_bins

    try:
        args.bins = list(check_bins(args.bins))
    except ValueError:
        parser.error(f"--bins: edges must increase from 0 to 100, not {args.bins_text!r}")
    if args.names is not None:
        args.names = [n.strip() for n in args.names.split(",")]
        if len(args.names) != len(args.runs):
            parser.error(f"--names gives {len(args.names)} names for {len(args.runs)} runs")
    return args


def output_paths(output: str):
    """``(markdown, json, figure)`` paths for ``--output``."""
    if output.lower().endswith(FIGURE_SUFFIXES):
        stem = os.path.splitext(output)[0]
        return stem + ".md", stem + ".json", output
    return tuple(os.path.join(output, STEM + suffix) for suffix in (".md", ".json", ".png"))


def main(argv=None) -> int:
    args = parse_args(argv)
    from . import one_line
    from .occlusion import breakdown_runs, caption, markdown, plot, seed_groups
    from .runs import OCCLUSION_FILE, dataset_of, ground_truth, load_run, run_config

    opts = list(args.opts) + (["DATASETS.ROOT", args.dataset_root] if args.dataset_root else [])
    names = args.names or [None] * len(args.runs)
    try:
        # The names, every file and the ground truth first, so a bad argument stops before any model is built.
        if args.names is not None:
            seed_groups(args.names)
        configs = [run_config(path, opts, args.device) for path in args.runs]
        for cfg in configs:
            ground_truth(dataset_of(cfg, args.dataset or cfg.DATASETS.TESTS[0]).dataset_dir, OCCLUSION_FILE)
        runs = [load_run(path, name=name, cfg=cfg) for path, cfg, name in zip(args.runs, configs, names)]
        result = breakdown_runs(runs, args.bins, args.dataset)
    except (FileNotFoundError, ValueError) as error:  # GroundTruthMissingError, CheckpointFileError included
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2

    table = markdown(result)
    print(table)
    result["invocation"] = "python tools/occlusion_breakdown.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md_path, json_path, figure = output_paths(args.output)
    os.makedirs(os.path.dirname(os.path.abspath(md_path)), exist_ok=True)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(f"{caption(result)}\n\n{table}\n")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    plot(result, figure)
    print(f"wrote {md_path}, {json_path} and {figure}")
    return 0

