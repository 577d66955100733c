#!/usr/bin/env python
"""Reproduce the paper's tables 2-6 on the real datasets, and put the results beside the paper's.

Needs the datasets under one root (``--datasets``, else ``$FASTREID_DATASETS``), OpenAI's CLIP
ViT-B/16 weights (``--weights ViT-B-16.pt``) and GPUs. Every experiment is a config of
``configs/`` trained and evaluated by ``tools/train_net.py`` (one after the other, each on all
``--num-gpus`` GPUs); finished experiments are skipped and an interrupted one resumes, so the
whole set can be spread over several sittings. Identical configs (table 4's AG-ReID row,
table 5's template d and table 6's Otsu) are trained once. At the end, and with
``--collect-only``, ``<output>/summary.md`` holds every measured row next to the paper's.

    python tools/reproduce_paper.py --datasets /data/reid --weights ViT-B-16.pt --num-gpus 4 --dry-run
    python tools/reproduce_paper.py --datasets /data/reid --weights ViT-B-16.pt --num-gpus 4 --tables 2,4
    python tools/reproduce_paper.py --output logs/reproduce --collect-only

``--dry-run`` trains nothing: it checks that every config parses, that every dataset is where
its loader looks and that the weights file exists, and prints each command with the GPU count
and the batch per GPU. It exits with status 1 when anything is missing, naming every problem.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from agreid.experiments import common as ex


class Experiment(NamedTuple):
    """One row of one of the paper's tables."""

    table: int
    row: str  # the paper's row label
    config: str  # relative to the repository root
    test_set: str  # the dataset name in the evaluation table (DATASETS.TESTS)
    paper: Optional[Tuple[float, ...]]  # the paper's mAP, R@1 (, R@5, R@10); None where it has none


_A = "configs/OccDuke/ablations/"
# The paper's numbers, quoted as the paper's (ViT-B/16, Occluded-Duke for tables 4-6).
EXPERIMENTS: "OrderedDict[str, Experiment]" = OrderedDict([
    ("occduke_clipreid", Experiment(2, "CLIP-ReID, Occ-Duke", "configs/OccDuke/clipreid.yml", "OccludedDuke", (60.0, 67.8))),
    ("occduke_agreid", Experiment(2, "AG-ReID, Occ-Duke", "configs/OccDuke/agreid.yml", "OccludedDuke", (63.2, 70.4))),
    ("occreid_clipreid", Experiment(2, "CLIP-ReID, Occ-ReID", "configs/OccREID/clipreid.yml", "OccludedREID", None)),
    ("occreid_agreid", Experiment(2, "AG-ReID, Occ-ReID", "configs/OccREID/agreid.yml", "OccludedREID", (87.6, 90.1))),
    ("pduke_clipreid", Experiment(2, "CLIP-ReID, P-Duke", "configs/PDuke/clipreid.yml", "PartialDuke", None)),
    ("pduke_agreid", Experiment(2, "AG-ReID, P-Duke", "configs/PDuke/agreid.yml", "PartialDuke", (84.5, 91.8))),
    ("msmt17_clipreid", Experiment(3, "CLIP-ReID, MSMT17", "configs/MSMT17/clipreid.yml", "MSMT17", (75.8, 89.7))),
    ("msmt17_agreid", Experiment(3, "AG-ReID, MSMT17", "configs/MSMT17/agreid.yml", "MSMT17", (76.7, 90.1))),
    ("market1501_clipreid", Experiment(3, "CLIP-ReID, Market-1501", "configs/Market1501/clipreid.yml", "Market1501", (90.5, 95.4))),
    ("market1501_agreid", Experiment(3, "AG-ReID, Market-1501", "configs/Market1501/agreid.yml", "Market1501", (90.8, 95.8))),
    ("dukemtmc_clipreid", Experiment(3, "CLIP-ReID, DukeMTMC", "configs/DukeMTMC/clipreid.yml", "DukeMTMC", (83.1, 90.8))),
    ("dukemtmc_agreid", Experiment(3, "AG-ReID, DukeMTMC", "configs/DukeMTMC/agreid.yml", "DukeMTMC", (83.3, 91.0))),
    # Table 4: the check marks are lost in the paper's text; its AP-only row is table 5's
    # "Default Prompt" row (the same configuration), which fixes rows 2 and 3.
    ("t4_baseline", Experiment(4, "Baseline (CLIP-ReID + SIE + OLP)", "configs/OccDuke/clipreid.yml", "OccludedDuke",
                               (60.0, 67.8, 80.1, 85.2))),
    ("t4_at", Experiment(4, "Baseline + AT", _A + "at_only.yml", "OccludedDuke", (62.4, 69.7, 81.7, 86.2))),
    ("t4_ap", Experiment(4, "Baseline + AP", _A + "ap_only.yml", "OccludedDuke", (62.2, 69.2, 81.9, 86.3))),
    ("t4_at_ap", Experiment(4, "Baseline + AT + AP (AG-ReID)", "configs/OccDuke/agreid.yml", "OccludedDuke",
                            (63.2, 70.4, 82.4, 86.4))),
    ("t5_default", Experiment(5, "Default Prompt", _A + "template_default.yml", "OccludedDuke", (62.2, 69.2, 81.9, 86.3))),
    ("t5_longer", Experiment(5, "Longer Prompt", _A + "template_longer.yml", "OccludedDuke", (62.0, 69.9, 82.1, 86.2))),
    ("t5_random", Experiment(5, "Random Prompt", _A + "template_random.yml", "OccludedDuke", (62.1, 69.5, 81.6, 86.1))),
    ("t5_a", Experiment(5, "Attribute Prompt a", _A + "template_a.yml", "OccludedDuke", (62.6, 69.8, 82.4, 86.2))),
    ("t5_b", Experiment(5, "Attribute Prompt b", _A + "template_b.yml", "OccludedDuke", (63.0, 70.5, 82.0, 86.5))),
    ("t5_c", Experiment(5, "Attribute Prompt c", _A + "template_c.yml", "OccludedDuke", (62.8, 69.9, 82.6, 86.1))),
    ("t5_d", Experiment(5, "Attribute Prompt d", _A + "template_d.yml", "OccludedDuke", (63.2, 70.4, 82.4, 86.4))),
    ("t6_p50", Experiment(6, "P50", _A + "threshold_p50.yml", "OccludedDuke", (61.9, 69.9, 82.7, 86.0))),
    ("t6_p75", Experiment(6, "P75", _A + "threshold_p75.yml", "OccludedDuke", (62.5, 70.6, 82.5, 86.3))),
    ("t6_p90", Experiment(6, "P90", _A + "threshold_p90.yml", "OccludedDuke", (62.8, 70.5, 82.3, 86.0))),
    ("t6_otsu", Experiment(6, "Otsu", _A + "threshold_otsu.yml", "OccludedDuke", (63.2, 70.4, 82.4, 86.4))),
])


# Where fastreid's own loaders look under the root (their messages do not always say).
FASTREID_LAYOUTS = {
    "Market1501": "Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test} (or those folders at the root)",
    "DukeMTMC": "DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}",
    "MSMT17": "MSMT17_V2/{mask_train_v2,mask_test_v2,list_train.txt,list_val.txt,list_query.txt,list_gallery.txt} "
              "(or MSMT17_V1/{train,test,list_*.txt})",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--datasets", default=os.environ.get("FASTREID_DATASETS", ""),
                        help="root of the datasets (default $FASTREID_DATASETS)")
    parser.add_argument("--weights", default="", help="OpenAI's CLIP ViT-B/16 weights file (ViT-B-16.pt)")
    parser.add_argument("--num-gpus", type=int, default=1, help="GPUs per experiment (train_net.py --num-gpus)")
    parser.add_argument("--tables", default="2,3,4,5,6", help="comma-separated table numbers")
    parser.add_argument("--only", default="", help="comma-separated experiment names (see --list)")
    parser.add_argument("--output", default="logs/reproduce", help="OUTPUT_DIR of each experiment is <output>/<name>")
    parser.add_argument("--dry-run", action="store_true", help="check configs, datasets and weights; train nothing")
    parser.add_argument("--collect-only", action="store_true", help="only write the summary of what has finished")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every experiment")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"overrides come in KEY VALUE pairs, got {args.opts}")
    if args.num_gpus < 1:
        parser.error("--num-gpus must be at least 1")
    return args


def select(args) -> List[str]:
    """Experiment names of ``--tables`` and ``--only``, in the tables' order."""
    try:
        tables = {int(t) for t in args.tables.split(",") if t.strip()}
    except ValueError:
        raise SystemExit(f"--tables {args.tables!r}: give table numbers, e.g. 2,3,4") from None
    unknown_tables = tables - {2, 3, 4, 5, 6}
    if unknown_tables:
        raise SystemExit(f"--tables: the paper's tables 2-6 only, not {sorted(unknown_tables)}")
    names = [n for n, e in EXPERIMENTS.items() if e.table in tables]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in EXPERIMENTS]
        if unknown:
            raise SystemExit(f"--only: unknown experiment {unknown[0]!r}; see --list")
        names = [n for n in names if n in wanted]
    return names


def experiment_opts(args) -> List[str]:
    """Overrides of every experiment: the weights, the data root, then the user's."""
    opts = ["MODEL.BACKBONE.PRETRAIN_PATH", args.weights] if args.weights else []
    if args.datasets:
        opts += ["DATASETS.ROOT", args.datasets]
    return opts + list(args.opts)


# ---------------------------------------------------------------------------------- checking
def check(args, names: Sequence[str]):
    """Parse every config and look for every dataset and the weights.

    Returns:
        ``(configs {name: cfg}, problems [message])``.
    """
    import agreid
    from fastreid.data.datasets import DATASET_REGISTRY

    problems: List[str] = []
    configs = {}
    if not args.datasets:
        problems.append("no dataset root: give --datasets or set FASTREID_DATASETS")
    elif not os.path.isdir(args.datasets):
        problems.append(f"dataset root {args.datasets} does not exist")
    if not args.weights:
        problems.append("no CLIP weights: give --weights /path/to/ViT-B-16.pt (OpenAI's release)")
    elif not os.path.isfile(args.weights):
        problems.append(f"CLIP weights {args.weights} do not exist")
    for name in names:
        config = EXPERIMENTS[name].config
        try:
            configs[name] = agreid.get_agreid_cfg(ex.repo_path(config), experiment_opts(args))
        except Exception as error:  # any parse error: report them all, stop after
            problems.append(f"{config}: does not parse: {error}")
    datasets = sorted({d for cfg in configs.values() for d in (*cfg.DATASETS.NAMES, *cfg.DATASETS.TESTS)})
    if args.datasets and os.path.isdir(args.datasets):
        for dataset in datasets:
            try:
                DATASET_REGISTRY.get(dataset)(root=args.datasets)
            except Exception as error:  # the loaders' own messages name the folder they looked for
                layout = FASTREID_LAYOUTS.get(dataset)
                hint = f" (expected under {args.datasets}: {layout})" if layout else ""
                problems.append(f"dataset {dataset}: {str(error).strip() or type(error).__name__}{hint}")
    for name, cfg in configs.items():
        for key in ("SOLVER.IMS_PER_BATCH", "SOLVER.STAGE1.IMS_PER_BATCH", "TEST.IMS_PER_BATCH"):
            value = cfg
            for part in key.split("."):
                value = value[part]
            if value % args.num_gpus:
                problems.append(f"{EXPERIMENTS[name].config}: {key} {value} is not divisible by --num-gpus {args.num_gpus}")
    return configs, problems


def batch_per_gpu(cfg, num_gpus: int) -> str:
    return (f"stage 1 {cfg.SOLVER.STAGE1.IMS_PER_BATCH // num_gpus}, stage 2 {cfg.SOLVER.IMS_PER_BATCH // num_gpus} "
            f"images per GPU (of {cfg.SOLVER.STAGE1.IMS_PER_BATCH} / {cfg.SOLVER.IMS_PER_BATCH})")


# ------------------------------------------------------------------------------- collecting
def result_path(args, name: str) -> str:
    return os.path.join(ex.repo_path(args.output), name, "reproduce_result.json")


def summary(args) -> str:
    """The markdown table of every experiment with a result, beside the paper's numbers."""
    lines = ["| table | row | config | test set | mAP | R@1 | R@5 | R@10 | the paper's mAP / R@1 (/ R@5 / R@10) "
             "| mAP − paper |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, experiment in EXPERIMENTS.items():
        path = result_path(args, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            metrics = json.load(f)["metrics"]
        paper = experiment.paper
        cells = [f"{metrics[m]:.1f}" if m in metrics else "" for m in ex.METRICS]
        delta = f"{metrics['mAP'] - paper[0]:+.1f}" if paper else "–"
        quoted = " / ".join(f"{v:.1f}" for v in paper) if paper else "– (not in the paper)"
        lines.append(f"| {experiment.table} | {experiment.row} | `{experiment.config}` | {experiment.test_set} | "
                     + " | ".join(cells) + f" | {quoted} | {delta} |")
    return "\n".join(lines)


def write_summary(args) -> str:
    text = ("# Reproduction of the paper's tables (measured here)\n\nThe paper's numbers are the paper's "
            "(ViT-B/16, its tables 2-6); the others were measured by `tools/reproduce_paper.py`.\n\n"
            + summary(args) + "\n")
    path = os.path.join(ex.repo_path(args.output), "summary.md")
    ex.write_atomic(path, text)
    return path


# ------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, e in EXPERIMENTS.items():
            print(f"{name:22s} table {e.table}  {e.config:52s} {e.row}")
        return 0
    if args.collect_only:
        print(f"wrote {write_summary(args)}")
        return 0
    names = select(args)
    configs, problems = check(args, names)
    fingerprints: Dict[str, str] = {}
    planned: Dict[str, str] = {}
    for name, cfg in configs.items():
        fingerprints[name] = ex.config_fingerprint(cfg)
    try:
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # torch without CUDA support
        visible = 0
    print(f"{len(names)} experiments, {args.num_gpus} GPU(s) each ({visible} visible here)")
    if args.num_gpus > max(visible, 1) and not args.dry_run:
        problems.append(f"--num-gpus {args.num_gpus} but {visible} GPU(s) are visible")
    for name in names:
        if name not in configs:
            continue
        cfg = configs[name]
        twin = planned.get(fingerprints[name])
        if twin:
            print(f"  {name}: same config as {twin}: its result is shared")
            continue
        planned[fingerprints[name]] = name
        output_dir = os.path.join(args.output, name)
        resume = ex.has_checkpoint(ex.repo_path(output_dir))
        cmd = ex.train_command(EXPERIMENTS[name].config, output_dir, experiment_opts(args),
                               resume=resume, num_gpus=args.num_gpus)
        state = "done" if os.path.isfile(result_path(args, name)) else ("resume" if resume else "train")
        print(f"  {name} [{state}] {batch_per_gpu(cfg, args.num_gpus)}, stage-2 lr {cfg.SOLVER.BASE_LR:g}:\n"
              f"    {' '.join(cmd[1:])}")
    if problems:
        print("\nProblems:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    if args.dry_run:
        print("\ndry run: everything is in place")
        return 0

    for name in names:
        source = planned.get(fingerprints[name])
        if source != name:
            if os.path.isfile(result_path(args, source)) and not os.path.isfile(result_path(args, name)):
                with open(result_path(args, source), encoding="utf-8") as f:
                    ex.write_json(result_path(args, name), dict(json.load(f), same_as=source))
            continue
        if os.path.isfile(result_path(args, name)):
            continue
        output_dir = os.path.join(args.output, name)
        resume = ex.has_checkpoint(ex.repo_path(output_dir))
        cmd = ex.train_command(EXPERIMENTS[name].config, output_dir, experiment_opts(args),
                               resume=resume, num_gpus=args.num_gpus)
        print(f"[reproduce] {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.time()
        status = ex.run_logged(cmd, os.path.join(ex.repo_path(output_dir), "stdout.txt"))
        if status != 0:
            raise SystemExit(f"[reproduce] {name} failed (exit {status}): see {output_dir}/stdout.txt\n"
                             + ex.tail(os.path.join(ex.repo_path(output_dir), "stdout.txt"), 15))
        with open(os.path.join(ex.repo_path(output_dir), "log.txt"), encoding="utf-8", errors="replace") as f:
            tables = ex.parse_eval_tables(f.read())
        test_set = EXPERIMENTS[name].test_set
        if test_set not in tables:
            raise SystemExit(f"[reproduce] {name}: no evaluation of {test_set} in {output_dir}/log.txt")
        ex.write_json(result_path(args, name), {
            "experiment": name, "config": EXPERIMENTS[name].config, "metrics": tables[test_set],
            "paper": EXPERIMENTS[name].paper, "seconds": round(time.time() - start, 1), "command": cmd[1:],
            "num_gpus": args.num_gpus, "resumed": resume, "machine": ex.machine(),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })
        write_summary(args)
    print(f"wrote {write_summary(args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
