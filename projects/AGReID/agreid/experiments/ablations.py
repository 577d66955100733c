"""Run the paper's ablations (tables 4-6, and the two open choices) on the synthetic data, with seeds.

Each run is a config leaf of ``configs/Synthetic/ablations/`` trained by ``tools/train_net.py``
in a subprocess, once per seed, with the same budget for every run (any ``KEY VALUE`` after the
flags goes to every run). One results file per (run, seed) is written when a run has finished
and evaluated; finished runs are skipped, so a large budget spreads over several sittings, and
an interrupted run continues from its last checkpoint (``train_net.py --resume``). Runs whose
resolved configs are identical (``template_d``, ``threshold_otsu`` and ``at_ap``) are trained
once and share the result. After every run, the tables (the paper's layout, mean ± standard
deviation over seeds of mAP and Rank-1/5/10, and each row's mAP and Rank-1 difference from its
table's reference row paired by seed, with a 95% Student-t interval; ``BASELINES`` says which row)
and a plot of the table-4 rows are written into the marked sections of ``docs/RESULTS.md``
(nothing else in that file changes).

    python tools/ablate.py --preset small --seeds 3 --runs table4
    python tools/ablate.py --preset small --seeds 2 --runs template_*,threshold_* SOLVER.MAX_EPOCH 30
    python tools/ablate.py --preset small --seeds 3 --runs table4 --dry-run
    python tools/ablate.py --preset small --render-only

Run names: the leaf files' paths below the leaf folder (``baseline``, ``at``, ``ap``, ``at_ap``,
``template_<t>``, ``threshold_<t>``, ``align_grad``, ``train_in_guide``, and the template study's
``template_controls/at_d_known``, ``template_controls/at_d_filler``, ``cosine/<run>``),
shell-style patterns of them, or the groups ``table4``, ``table5``, ``table6``, ``choices``,
``controls``, ``cosine`` and ``all``.
"""
from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from agreid.experiments import common as ex
from agreid.experiments import paper
from agreid.experiments.runner import Job, Runner

LEAF_DIR = os.path.join("configs", "Synthetic", "ablations")
TEST_SET = "SyntheticOccluded"

# The paper's tables (agreid.experiments.paper): run name -> (row cells, the paper's Occluded-Duke
# mAP, R@1, R@5, R@10). Table 4's check marks are lost in the paper's text; its AP-only row is
# table 5's "Default Prompt" row (the same run), which fixes which of rows 2 and 3 is AT only.
TABLE4 = OrderedDict(paper.TABLE4)
TABLE5 = OrderedDict((f"template_{template}", row) for template, row in paper.TABLE5.items())
TABLE6 = OrderedDict([(f"threshold_{threshold}", row) for threshold, row in paper.TABLE6.items()]
                     + [("threshold_none", ("None (no mask; not in the paper)", None))])
# The controlled study of the template's effect (not in the paper): AT with two templates shaped
# exactly like d, one whose slots sit next to words SynthCLIP knows and one with neutral filler,
# beside the baseline, AT and AT + AP; the same five rows again with L_CE on cosine logits.
CONTROLS = OrderedDict([
    ("baseline", "baseline (holistic template, no attribute encoder)"),
    ("at", "AT: template d"),
    ("at_ap", "AT + AP (AG-ReID)"),
    ("template_controls/at_d_known", "AT: template d_known (every slot next to a word SynthCLIP knows)"),
    ("template_controls/at_d_filler", "AT: template d_filler (slots next to neutral filler)"),
])
COSINE = OrderedDict([(f"cosine/{run.split('/')[-1]}", f"{label}, cosine L_CE") for run, label in CONTROLS.items()])
CHOICES = OrderedDict([
    ("at_ap", "defaults: V detached in L_attrA, E_A frozen in stage 2"),
    ("align_grad", "V also receives L_attrA's gradient in stage 1 (`MODEL.ATTR.ALIGN_GRAD_TO_PROMPTS True`)"),
    ("train_in_guide", "E_A keeps training in stage 2 (`MODEL.ATTR.TRAIN_IN_GUIDE True`)"),
])
# The reference row of each table: every other row of the table is shown as its paired
# difference from this row (seed by seed, over the seeds both have), with a 95% interval.
#   table 4: "baseline", the run with neither AT nor AP (the paper's own baseline row);
#   table 5: "template_default", the first row, the holistic default prompt (the question the
#            table asks: does an attribute template beat it);
#   table 6: "threshold_otsu", the method's own threshold (the leaf equal to agreid.yml), of which
#            every other row changes only the threshold; the first row, P50, is no reference;
#   choices: "at_ap", the first row, the defaults, of which every variant changes one choice.
# Runs outside the tables (leaves added later) are rendered with the choices, against "at_ap".
BASELINES = {
    "table4": ("baseline", "Baseline"),
    "table5": ("template_default", "Default Prompt"),
    "table6": ("threshold_otsu", "Otsu"),
    "choices": ("at_ap", "defaults"),
    "controls": ("baseline", "baseline"),
    "cosine": ("cosine/baseline", "baseline, cosine L_CE"),
}
# The metrics compared by seed (the others are shown as mean ± sd only).
PAIRED_METRICS = (("mAP", "mAP"), ("Rank-1", "R@1"))
GROUPS = {
    "table4": list(TABLE4),
    "table5": list(TABLE5),
    "table6": list(TABLE6),
    "choices": list(CHOICES),
    "controls": list(CONTROLS),
    "cosine": list(COSINE),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--preset", default="small", help="synthetic data preset: tiny (tests), small, large")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of every run")
    parser.add_argument("--runs", default="table4", help="comma-separated run names, patterns or groups")
    parser.add_argument("--data-root", default=None,
                        help="DATASETS.ROOT holding SyntheticOccluded of the preset (default datasets/synthetic_<preset>); "
                             "generated (data seed 0) when missing")
    parser.add_argument("--output", default=None, help="runs and results files (default logs/ablations/<preset>)")
    parser.add_argument("--results-md", default="docs/RESULTS.md", help="markdown file whose marked sections are rendered")
    parser.add_argument("--figure", default=None,
                        help="PNG of the table-4 rows (default docs/figures/ablation_table4_<preset>.png)")
    parser.add_argument("--no-render", action="store_true", help="do not touch the markdown file or the figure")
    parser.add_argument("--render-only", action="store_true", help="only render the results already there")
    parser.add_argument("--dry-run", action="store_true", help="check everything and print the commands; train nothing")
    parser.add_argument("--keep-going", action="store_true", help="after a failed run, go on with the others")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run (e.g. the budget)")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"overrides come in KEY VALUE pairs, got {args.opts}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    args.data_root = args.data_root or os.path.join("datasets", f"synthetic_{args.preset}")
    args.output = args.output or os.path.join("logs", "ablations", args.preset)
    args.figure = args.figure or os.path.join("docs", "figures", f"ablation_table4_{args.preset}.png")
    return args


# ------------------------------------------------------------------------------ runs and configs
def available_runs() -> List[str]:
    """Names of the ablation leaves (paths below the leaf folder without ``.yml``, e.g.
    ``at`` or ``cosine/at``), sorted."""
    root = os.path.join(ex.REPO, LEAF_DIR)
    return sorted(os.path.splitext(os.path.relpath(p, root))[0].replace(os.sep, "/")
                  for p in glob.glob(os.path.join(root, "**", "*.yml"), recursive=True))


def resolve_runs(spec: str) -> List[str]:
    """Run names from a comma-separated list of names, patterns and groups, in order, once each.

    Raises:
        SystemExit: naming an unknown run (and listing the known ones).
    """
    known = available_runs()
    everything = GROUPS["table4"] + [r for group in ("table5", "table6", "choices", "controls", "cosine")
                                     for r in GROUPS[group]]
    everything += [r for r in known if r not in everything]
    runs: List[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item == "all":
            matched = everything
        elif item in GROUPS:
            matched = GROUPS[item]
        elif any(ch in item for ch in "*?["):
            matched = [r for r in everything if fnmatch.fnmatchcase(r, item)]
        else:
            matched = [item]
        missing = [r for r in matched if r not in known]
        if missing or not matched:
            raise SystemExit(
                f"tools/ablate.py: unknown run {(missing or [item])[0]!r} (no {LEAF_DIR}/{(missing or [item])[0]}.yml). "
                f"Known runs: {', '.join(known)}; groups: {', '.join(GROUPS)}, all.")
        runs.extend(r for r in matched if r not in runs)
    if not runs:
        raise SystemExit("tools/ablate.py: --runs names no run.")
    return runs


def leaf_file(run: str) -> str:
    """The config leaf of ``run``, relative to the repository root."""
    return os.path.join(LEAF_DIR, f"{run}.yml")


def run_opts(args) -> List[str]:
    """Overrides of every run: the user's, then the data root."""
    return list(args.opts) + ["DATASETS.ROOT", args.data_root]


def resolve_config(run: str, opts: Sequence[str]):
    """The resolved config of ``run`` with ``opts``; stops naming a missing pretrained CLIP file."""
    import agreid

    cfg = agreid.get_agreid_cfg(ex.repo_path(leaf_file(run)), list(opts))
    weights = str(cfg.MODEL.BACKBONE.PRETRAIN_PATH).strip()
    if weights and not os.path.isfile(ex.repo_path(weights)):
        raise SystemExit(
            f"tools/ablate.py: run {run!r}: MODEL.BACKBONE.PRETRAIN_PATH {weights} does not exist "
            f"(the SynthCLIP weights: make them with tools/pretrain_clip.py, or override the key).")
    return cfg


def seed_supported() -> bool:
    """Whether the config has a ``SEED`` key that train_net.py applies."""
    import agreid

    return "SEED" in agreid.get_agreid_cfg()


def results_path(output: str, run: str, seed: int) -> str:
    return os.path.join(output, "results", run, f"seed{seed}.json")


def run_dir(output: str, run: str, seed: int) -> str:
    return os.path.join(output, "runs", run, f"seed{seed}")


def load_results(output: str) -> Dict[str, Dict[int, dict]]:
    """Every results file under ``output``: ``{run: {seed: record}}``."""
    found: Dict[str, Dict[int, dict]] = {}
    for path in sorted(glob.glob(os.path.join(ex.repo_path(output), "results", "**", "seed*.json"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        found.setdefault(record["run"], {})[int(record["seed"])] = record
    return found


def _flat(results: Dict[str, Dict[int, dict]]) -> Dict[Tuple[str, int], dict]:
    """``{run: {seed: record}}`` as the runner's ``{(run, seed): record}``, in the same order."""
    return {(run, seed): record for run, seeds in results.items() for seed, record in seeds.items()}


# ---------------------------------------------------------------------------------- training
def make_job(args, run: str, seed: int, fingerprint: str, with_seed: bool, invocation: str) -> Job:
    """The runner's job of ``run`` with ``seed``: its record carries the run, seed, leaf, preset,
    data root, the user's overrides, whether SEED was applied and the command line."""
    return Job(
        name=run, config_file=leaf_file(run), output_dir=run_dir(args.output, run, seed),
        overrides=tuple(run_opts(args) + (["SEED", str(seed)] if with_seed else [])), seed=seed,
        result_path=results_path(args.output, run, seed), test_set=TEST_SET, fingerprint=fingerprint,
        fields={"run": run, "seed": seed, "leaf": leaf_file(run), "preset": args.preset, "data_root": args.data_root,
                "overrides": list(args.opts), "seed_applied": with_seed, "invocation": invocation},
        identity=("run", "leaf"))


def prepare_data(args) -> None:
    """Make sure the synthetic data of ``--preset`` is under ``--data-root`` (generate it if missing)."""
    from agreid.data import synthetic

    if args.preset not in synthetic.PRESETS:
        raise SystemExit(f"tools/ablate.py: unknown --preset {args.preset!r}; choose from {sorted(synthetic.PRESETS)}")
    dataset_dir = os.path.join(ex.repo_path(args.data_root), synthetic.DATASET_DIR)
    if synthetic.is_complete(dataset_dir):
        with open(os.path.join(dataset_dir, synthetic.MARKER_FILE), encoding="utf-8") as f:
            preset = json.load(f).get("preset")
        if preset != args.preset:
            raise SystemExit(f"tools/ablate.py: {dataset_dir} holds preset {preset!r}, not {args.preset!r}: "
                             f"give another --data-root.")
        return
    if args.dry_run:
        print(f"[ablate] would generate the {args.preset} synthetic data in {dataset_dir}")
        return
    print(f"[ablate] generating the {args.preset} synthetic data in {dataset_dir}")
    synthetic.generate(ex.repo_path(args.data_root), preset=args.preset, seed=0)


# --------------------------------------------------------------------------------- rendering
def _cells(records: Sequence[dict]) -> List[str]:
    return [ex.format_mean_std([r["metrics"][m] for r in records]) for m in ex.METRICS]


def _paper(values) -> str:
    return "–" if values is None else " / ".join(f"{v:.1f}" for v in values)


def _records(results, run) -> List[dict]:
    return [results[run][s] for s in sorted(results.get(run, {}))]


def _same_budget(a: dict, b: dict) -> bool:
    """Whether two results were measured on the same data with the same overrides (comparable)."""
    return all(a.get(key) == b.get(key) for key in ("preset", "data_root", "overrides"))


def paired(results, run: str, reference: str, metric: str) -> ex.PairedDifference:
    """``run`` minus ``reference`` in ``metric``, paired by seed: only the seeds both runs have,
    measured with the same preset, data and overrides."""
    mine, theirs = results.get(run, {}), results.get(reference, {})
    seeds = [s for s in mine if s in theirs and _same_budget(mine[s], theirs[s])]
    return ex.paired_difference({s: theirs[s]["metrics"][metric] for s in seeds},
                                {s: mine[s]["metrics"][metric] for s in seeds})


def _delta_cells(results, run: str, reference: str) -> List[str]:
    if run == reference:
        return ["reference"] * len(PAIRED_METRICS)
    if not results.get(run):
        return [""] * len(PAIRED_METRICS)
    if not results.get(reference):
        return ["– (reference not run)"] * len(PAIRED_METRICS)
    return [ex.format_paired(paired(results, run, reference, metric)) for metric, _ in PAIRED_METRICS]


def _delta_note(label: str) -> str:
    return (f"Δ: the row minus the {label} row at each seed both have (same preset and overrides), in points: "
            "mean [95% Student-t interval, mean ± t(0.975, n−1)·sd/√n] over the n paired seeds; "
            "* the interval excludes 0. One paired seed: its difference only (an interval needs ≥ 2 seeds).")


def _table(results, rows, first_headers: List[str], reference: Tuple[str, str]) -> List[str]:
    """The markdown table of ``rows``: mean ± sd over seeds, then each row's paired difference
    from the ``reference`` row (run, label) in mAP and Rank-1."""
    ref_run, ref_label = reference
    deltas = [f"Δ {short} vs {ref_label} (95% CI)" for _, short in PAIRED_METRICS]
    headers = (first_headers + ["mAP", "R@1", "R@5", "R@10"] + deltas
               + ["seeds", "the paper's Occ-Duke (mAP / R@1 / R@5 / R@10)"])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for run, first_cells, paper in rows:
        records = _records(results, run)
        cells = _cells(records) if records else ["not run"] + [""] * 3
        cells += _delta_cells(results, run, ref_run)
        lines.append("| " + " | ".join(list(first_cells) + cells + [str(len(records)), _paper(paper)]) + " |")
    return lines + ["", _delta_note(ref_label)]


def _provenance(results, runs: Sequence[str]) -> str:
    records = [r for run in runs for r in _records(results, run)]
    if not records:
        return ""
    # A shared result (identical configs) was trained once: count it once.
    trained = {(r["fingerprint"], r["seed"]): r for r in records}.values()
    invocations = sorted({r.get("invocation", "") for r in records} - {""})
    seeds = sorted({r["seed"] for r in records})
    minutes = sum(r["seconds"] for r in trained) / 60
    machine = records[0].get("machine", {})
    lines = [
        f"Synthetic preset `{records[0]['preset']}`, seeds {', '.join(map(str, seeds))}"
        + ("" if all(r["seed_applied"] for r in records) else " (SEED not applied: repeats differ by chance only)")
        + f"; training + evaluation {minutes:.1f} min for {len(trained)} trained runs "
        f"({minutes / len(trained):.1f} min a run) on {machine.get('cpu_count', '?')} CPU cores"
        + (f" and {machine['cuda_devices']} GPU(s)" if machine.get("cuda_devices") else "") + ".",
        "Measured with " + "; ".join(f"`{i}`" for i in invocations) + ".",
        "Mean ± sample standard deviation over seeds, in percent (one seed: its value).",
    ]
    return "\n".join(lines)


def render_sections(results, figure_rel: Optional[str]) -> Dict[str, str]:
    """The markdown of every table that has at least one measured row."""
    sections = {}
    if any(run in results for run in TABLE4):
        rows = [(run, marks, paper) for run, (marks, paper) in TABLE4.items()]
        body = ["**Table 4 on synthetic data: dual guidance** (AT: attribute template; AP: pseudo-label guidance).", "",
                _provenance(results, list(TABLE4)), ""] + _table(results, rows, ["Baseline", "AT", "AP"],
                                                                BASELINES["table4"])
        if figure_rel:
            body += ["", f"![table-4 rows, mean and standard deviation over seeds; paired differences from "
                         f"the baseline with 95% intervals]({figure_rel})"]
        sections["ablate:table4"] = "\n".join(body)
    if any(run in results for run in TABLE5):
        rows = [(run, (label,), paper) for run, (label, paper) in TABLE5.items()]
        sections["ablate:table5"] = "\n".join(
            ["**Table 5 on synthetic data: prompt templates.**", "", _provenance(results, list(TABLE5)), ""]
            + _table(results, rows, ["Template"], BASELINES["table5"]))
    if any(run in results for run in TABLE6):
        rows = [(run, (label,), paper) for run, (label, paper) in TABLE6.items()]
        sections["ablate:table6"] = "\n".join(
            ["**Table 6 on synthetic data: noise-mask threshold.**", "", _provenance(results, list(TABLE6)), ""]
            + _table(results, rows, ["Threshold"], BASELINES["table6"]))
    for name, table, title in (("controls", CONTROLS, "**The template study: controls shaped like d** (not in the paper)."),
                               ("cosine", COSINE, "**The template study: the same rows with L_CE on cosine logits** "
                                                  "(`MODEL.LOSSES.I2T.FORM cosine`; not in the paper).")):
        # Rendered once a run of its own has results (the rows it shares with table 4 alone do not).
        if any(run in results for run in table if run != BASELINES[name][0] and run not in TABLE4):
            rows = [(run, (label,), None) for run, label in table.items()]
            sections[f"ablate:{name}"] = "\n".join(
                [title, "", _provenance(results, list(table)), ""] + _table(results, rows, ["Run"], BASELINES[name]))
    extra = [run for run in results if run not in TABLE4 and run not in TABLE5 and run not in TABLE6
             and run not in CHOICES and run not in CONTROLS and run not in COSINE]
    choice_runs = [r for r in CHOICES if r != "at_ap"] + extra
    if any(run in results for run in choice_runs):
        rows = [(run, (CHOICES.get(run, f"`{leaf_file(run)}`"),), None) for run in list(CHOICES) + extra]
        sections["ablate:choices"] = "\n".join(
            ["**The open choices** (not in the paper).", "", _provenance(results, list(CHOICES) + extra), ""]
            + _table(results, rows, ["Variant"], BASELINES["choices"]))
    return sections


def plot_table4(results, path: str) -> bool:
    """The table-4 rows: left, bars of the mean over seeds (error bars: standard deviation, dots:
    seeds); right, each row's mAP and Rank-1 difference from the baseline paired by seed (dots:
    seeds, error bars: the 95% Student-t interval where there are ≥ 2 paired seeds, * where it
    excludes 0)."""
    runs = [run for run in TABLE4 if run in results]
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"baseline": "Baseline", "at": "+ AT", "ap": "+ AP", "at_ap": "+ AT + AP"}
    width = 0.8 / len(runs)
    fig, (ax, dax) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    for i, run in enumerate(runs):
        records = _records(results, run)
        for j, metric in enumerate(ex.METRICS):
            values = [r["metrics"][metric] for r in records]
            mean, std = ex.mean_std(values)
            x = j + (i - (len(runs) - 1) / 2) * width
            ax.bar(x, mean, width * 0.9, yerr=std if len(values) > 1 else None, capsize=3,
                   color=f"C{i}", label=f"{labels.get(run, run)} (n={len(values)})" if j == 0 else None)
            ax.scatter([x] * len(values), values, s=8, color="black", zorder=3)
    ax.set_xticks(range(len(ex.METRICS)))
    ax.set_xticklabels(["mAP", "Rank-1", "Rank-5", "Rank-10"])
    ax.set_ylabel("%")
    ax.set_title(f"Table-4 rows on synthetic data ({records[0]['preset']} preset)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)

    reference = BASELINES["table4"][0]
    others = [run for run in runs if run != reference]
    dax.axhline(0.0, color="black", linewidth=0.8)
    if reference not in results or not others:
        dax.text(0.5, 0.5, "no baseline to compare with" if reference not in results else "no other row",
                 ha="center", va="center", transform=dax.transAxes)
    dwidth = 0.8 / max(len(others), 1)
    for i, run in enumerate(others):
        color = f"C{runs.index(run)}"
        for j, (metric, _) in enumerate(PAIRED_METRICS):
            diff = paired(results, run, reference, metric)
            if diff.mean is None:
                continue
            x = j + (i - (len(others) - 1) / 2) * dwidth
            dax.scatter([x] * diff.n, diff.differences, s=10, color="black", zorder=3)
            if diff.low is None:
                dax.scatter([x], [diff.mean], marker="_", s=200, color=color, zorder=2,
                            label=f"{labels.get(run, run)} (1 seed: no interval)" if j == 0 else None)
                continue
            dax.errorbar([x], [diff.mean], yerr=[[diff.mean - diff.low], [diff.high - diff.mean]], fmt="o",
                         color=color, capsize=4, zorder=2,
                         label=f"{labels.get(run, run)} (n={diff.n})" if j == 0 else None)
            if diff.excludes_zero:
                dax.annotate("*", (x, diff.high), textcoords="offset points", xytext=(0, 2), ha="center",
                             fontsize=12, color=color)
    dax.set_xticks(range(len(PAIRED_METRICS)))
    dax.set_xticklabels([metric for metric, _ in PAIRED_METRICS])
    dax.set_xlim(-0.6, len(PAIRED_METRICS) - 0.4)
    dax.set_ylabel("difference from the baseline, points")
    dax.set_title("Paired by seed: mean, 95% t interval (* excludes 0)", fontsize=10)
    handles, texts = dax.get_legend_handles_labels()
    if handles:  # in the rows' order (matplotlib lists markers before error bars)
        rank = {f"{labels.get(run, run)} (": i for i, run in enumerate(others)}
        order = sorted(range(len(texts)), key=lambda k: next(i for p, i in rank.items() if texts[k].startswith(p)))
        dax.legend([handles[k] for k in order], [texts[k] for k in order], fontsize=8, loc="best")
    dax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def render(args) -> None:
    """Write the marked sections of ``--results-md`` and the table-4 figure from the results files."""
    results = load_results(args.output)
    if not results:
        print(f"[ablate] no results under {args.output} yet: nothing to render")
        return
    md_path = ex.repo_path(args.results_md)
    figure = ex.repo_path(args.figure)
    figure_rel = None
    if plot_table4(results, figure):
        figure_rel = os.path.relpath(figure, os.path.dirname(os.path.abspath(md_path)))
    sections = render_sections(results, figure_rel)
    ex.update_markdown(md_path, sections)
    print(f"[ablate] rendered {', '.join(sections)} into {args.results_md}")


# -------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    invocation = "python tools/ablate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.render_only:
        render(args)
        return 0
    runs = resolve_runs(args.runs)
    configs = {run: resolve_config(run, run_opts(args)) for run in runs}
    prepare_data(args)
    fingerprints = {run: ex.config_fingerprint(cfg) for run, cfg in configs.items()}
    with_seed = seed_supported()
    if not with_seed:
        print("[ablate] warning: the config has no SEED key: seeds only name repeats (not reproducible)",
              file=sys.stderr)
    jobs = [make_job(args, run, seed, fingerprints[run], with_seed, invocation)
            for seed in range(args.seeds) for run in runs]
    # After every new result, so an interrupted sitting still leaves its tables.
    runner = Runner("ablate", "tools/ablate.py", lambda: _flat(load_results(args.output)),
                    keep_going=args.keep_going, dry_run=args.dry_run, changed="a changed leaf",
                    on_result=None if args.no_render else (lambda record: render(args)))
    failed = runner.run(jobs)
    if args.dry_run:
        print(f"[ablate] dry run: {len(runner.planned)} trainings to run")
    elif not args.no_render and not failed:
        render(args)
    return 1 if failed else 0
