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
import glob
import json
import os
import sys
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from agreid.experiments import common as ex
from agreid.experiments import paper
from agreid.experiments.runner import Job, Runner


class Experiment(NamedTuple):
    """One row of one of the paper's tables."""

    table: int
    row: str  # the paper's row label
    config: str  # relative to the repository root
    test_set: str  # the dataset name in the evaluation table (DATASETS.TESTS)
    paper: Optional[Tuple[float, ...]]  # the paper's mAP, R@1 (, R@5, R@10); None where it has none


_A = "configs/OccDuke/ablations/"
_T4, _T5, _T6 = paper.TABLE4, paper.TABLE5, paper.TABLE6
# Tables 2 and 3: (table, name prefix, config folder, test set, the row's data set label).
_DATASETS = [
    (2, "occduke", "OccDuke", "OccludedDuke", "Occ-Duke"),
    (2, "occreid", "OccREID", "OccludedREID", "Occ-ReID"),
    (2, "pduke", "PDuke", "PartialDuke", "P-Duke"),
    (3, "msmt17", "MSMT17", "MSMT17", "MSMT17"),
    (3, "market1501", "Market1501", "Market1501", "Market-1501"),
    (3, "dukemtmc", "DukeMTMC", "DukeMTMC", "DukeMTMC"),
]
# The paper's numbers (agreid.experiments.paper; ViT-B/16, Occluded-Duke for tables 4-6).
EXPERIMENTS: "OrderedDict[str, Experiment]" = OrderedDict([
    (f"{prefix}_{stem}", Experiment(table, f"{model}, {label}", f"configs/{folder}/{stem}.yml", test_set,
                                    (paper.TABLE2 if table == 2 else paper.TABLE3)[test_set][model]))
    for table, prefix, folder, test_set, label in _DATASETS
    for model, stem in (("CLIP-ReID", "clipreid"), ("AG-ReID", "agreid"))
] + [
    # Table 4: the check marks are lost in the paper's text; its AP-only row is table 5's
    # "Default Prompt" row (the same configuration), which fixes rows 2 and 3.
    ("t4_baseline", Experiment(4, "Baseline (CLIP-ReID + SIE + OLP)", "configs/OccDuke/clipreid.yml", "OccludedDuke",
                               _T4["baseline"][1])),
    ("t4_at", Experiment(4, "Baseline + AT", _A + "at_only.yml", "OccludedDuke", _T4["at"][1])),
    ("t4_ap", Experiment(4, "Baseline + AP", _A + "ap_only.yml", "OccludedDuke", _T4["ap"][1])),
    ("t4_at_ap", Experiment(4, "Baseline + AT + AP (AG-ReID)", "configs/OccDuke/agreid.yml", "OccludedDuke",
                            _T4["at_ap"][1])),
] + [(f"t5_{template}", Experiment(5, label, f"{_A}template_{template}.yml", "OccludedDuke", numbers))
     for template, (label, numbers) in _T5.items()]
  + [(f"t6_{threshold}", Experiment(6, label, f"{_A}threshold_{threshold}.yml", "OccludedDuke", numbers))
     for threshold, (label, numbers) in _T6.items()])


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
def make_job(args, name: str, fingerprint: str) -> Job:
    """The runner's job of experiment ``name``: its record carries the experiment, its config,
    the paper's numbers of its row and the GPU count."""
    experiment = EXPERIMENTS[name]
    return Job(name=name, config_file=experiment.config, output_dir=os.path.join(args.output, name),
               overrides=tuple(experiment_opts(args)), seed=None,
               result_path=os.path.join(args.output, name, "reproduce_result.json"), test_set=experiment.test_set,
               fingerprint=fingerprint,
               fields={"experiment": name, "config": experiment.config, "paper": experiment.paper,
                       "num_gpus": args.num_gpus},
               identity=("experiment", "config", "paper"))


def load_results(args) -> Dict[Tuple[str, None], dict]:
    """Every result record under ``--output``: ``{(experiment, None): record}``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ex.repo_path(args.output), "*", "reproduce_result.json"))):
        with open(path, encoding="utf-8") as f:
            found[(os.path.basename(os.path.dirname(path)), None)] = json.load(f)
    return found


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
    jobs = [make_job(args, name, ex.config_fingerprint(cfg)) for name, cfg in configs.items()]
    try:
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # torch without CUDA support
        visible = 0
    print(f"{len(names)} experiments, {args.num_gpus} GPU(s) each ({visible} visible here)")
    if args.num_gpus > max(visible, 1) and not args.dry_run:
        problems.append(f"--num-gpus {args.num_gpus} but {visible} GPU(s) are visible")
    runner = Runner("reproduce", "tools/reproduce_paper.py", lambda: load_results(args), num_gpus=args.num_gpus,
                    on_result=lambda record: write_summary(args))
    for step in runner.plan(jobs):
        if step.twin is not None:
            print(f"  {step.job.name}: same config as {step.twin}: its result is shared")
            continue
        cfg = configs[step.job.name]
        print(f"  {step.job.name} [{step.state}] {batch_per_gpu(cfg, args.num_gpus)}, "
              f"stage-2 lr {cfg.SOLVER.BASE_LR:g}:\n    {' '.join(step.command[1:])}")
    if problems:
        print("\nProblems:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    if args.dry_run:
        print("\ndry run: everything is in place")
        return 0
    runner.run(jobs)
    print(f"wrote {write_summary(args)}")
    return 0
