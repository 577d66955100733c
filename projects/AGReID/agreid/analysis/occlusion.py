"""Where does a model gain or lose? mAP and Rank-1 broken down by how the query is occluded.

Only the synthetic data knows, for every query, what hides it: ``occlusion.json`` records the
occluder type, the share of the body hidden (``fraction``) and the share of each body region
hidden (``region_fractions``; ``regions``: those at least half hidden). Each trained run is
evaluated once, exactly as training evaluates it (its test loader, flip test, evaluator,
``TEST.METRIC`` / ``TEST.AQE`` / ``TEST.RERANK``), giving one query x gallery distance matrix;
then the project's ranking (:func:`agreid.evaluation.evaluate_rank`) scores each subset of
queries against the full gallery. A query's AP and first hit do not depend on the other
queries, so the subset numbers are those queries' share of the full evaluation, and the row
of all queries is the run's reported mAP / Rank-1 (checked: a mismatch raises).

Breakdowns (:func:`query_breakdowns`; each but ``hidden regions`` is a partition of the queries):

- ``occlusion``: ``whole`` (occluder ``none``) / ``occluded``;
- ``occluder``: ``none`` or the occluder type (pole, car, person, umbrella, board);
- ``region``: the most hidden body region (largest ``region_fractions``; ties in the order
  head, upper, lower, feet), ``none`` for a whole query;
- ``hidden regions``: every region at least half hidden (a query can be in several), and
  ``no region ≥50%`` (e.g. a thin pole over 40% of the body);
- ``fraction``: the share of the body hidden, in bins (default 0-25/25-50/50-75/75-100%, each
  bin [low, high) but the last, which includes 100%), ``whole (0%)`` for a whole query.

A subset whose queries have no true match in another camera has no mAP (``None``, ``–``). In the
synthetic presets every query is occluded, so ``whole`` is empty there.

Seeds (:func:`seed_groups`, :func:`combine_seeds`): runs that share a name are seeds of one
model. Every model needs the same number of runs, and the i-th run of each model (in the order
given) are paired: trained with the same seed. With one run per model the table holds each run's
numbers; with n ≥ 2 seeds a cell is the mean ± sample sd over the seeds
(:func:`agreid.experiments.common.format_mean_std`; a seed whose subset has no valid query is
left out of its mean, and the cell says how many seeds it holds), and with two models or more each
later model gets a column per metric with its difference to the first model, paired by seed: the
mean and its 95% Student-t interval (:func:`agreid.experiments.common.paired_difference`,
:func:`~agreid.experiments.common.format_paired`; ``*`` where the interval excludes 0).

Command line (``tools/occlusion_breakdown.py``)::

    python tools/occlusion_breakdown.py --runs logs/ablations/small/runs/baseline/seed0 \\
        logs/ablations/small/runs/at_ap/seed0 --names baseline,AG-ReID --output logs/occlusion

    # 2 models x 3 seeds (the brace expansion gives baseline/seed0-2, then at_ap/seed0-2):
    python tools/occlusion_breakdown.py --runs logs/ablations/small/runs/{baseline,at_ap}/seed{0,1,2} \\
        --names baseline,baseline,baseline,AG-ReID,AG-ReID,AG-ReID --output logs/occlusion

prints the markdown table and writes it (``occlusion_breakdown.md``), the numbers
(``occlusion_breakdown.json``) and a bar chart (``occlusion_breakdown.png``: one panel per
breakdown and metric, one bar group per category, one bar per model: its mean over the seeds,
with the sd as error bar when there are several).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..experiments.common import PairedDifference, format_mean_std, format_paired, mean_std, paired_difference
from .runs import OCCLUSION_FILE, TrainedRun, dataset_of, ground_truth, image_key

logger = logging.getLogger(__name__)

__all__ = [
    "BODY_REGIONS",
    "DEFAULT_BINS",
    "OCCLUDER_TYPES",
    "breakdown_runs",
    "caption",
    "check_bins",
    "combine_seeds",
    "evaluate_queries",
    "evaluate_subset",
    "evaluation_distances",
    "markdown",
    "plot",
    "query_breakdowns",
    "seed_groups",
]

DEFAULT_BINS = (0.0, 0.25, 0.5, 0.75, 1.0)
# The generator's vocabularies (agreid.data.synthetic), in its order.
OCCLUDER_TYPES = ("pole", "car", "person", "umbrella", "board")
BODY_REGIONS = ("head", "upper", "lower", "feet")
NO_REGION = "no region ≥50%"
# Breakdowns whose categories may overlap (the others partition the queries).
OVERLAPPING = ("hidden regions",)
METRICS = ("mAP", "Rank-1")


# ------------------------------------------------------------------------------- categories
def _is_whole(record: dict) -> bool:
    return record.get("occluder", "none") == "none"


def _bin_label(low: float, high: float) -> str:
    return f"{100 * low:g}-{100 * high:g}%"


def fraction_bin(fraction: float, bins: Sequence[float]) -> int:
    """Index of the bin ``[bins[i], bins[i+1])`` holding ``fraction`` (the last bin is closed)."""
    for i in range(len(bins) - 1):
        if bins[i] <= fraction < bins[i + 1] or (i == len(bins) - 2 and fraction == bins[-1]):
            return i
    raise ValueError(f"fraction {fraction} is outside the bins {list(bins)}")


def check_bins(bins: Sequence[float]) -> Tuple[float, ...]:
    """``bins`` as increasing edges from 0 to 1 (a ValueError otherwise)."""
    bins = tuple(float(b) for b in bins)
    if len(bins) < 2 or bins[0] != 0.0 or bins[-1] != 1.0 or any(b >= c for b, c in zip(bins, bins[1:])):
        raise ValueError(f"fraction bins must increase from 0 to 1 (e.g. 0,0.25,0.5,0.75,1), not {list(bins)}")
    return bins


def most_hidden_region(record: dict) -> str:
    """The region with the largest hidden share (``none`` for a whole image)."""
    if _is_whole(record):
        return "none"
    shares = record.get("region_fractions", {})
    return max(BODY_REGIONS, key=lambda region: (shares.get(region, 0.0), -BODY_REGIONS.index(region)))


def query_breakdowns(records: Sequence[dict], bins: Sequence[float] = DEFAULT_BINS
                     ) -> "OrderedDict[str, OrderedDict[str, np.ndarray]]":
    """``{breakdown: {category: indices of its queries}}`` from the queries' occlusion records.

    Categories come in a fixed order (the generator's vocabularies), empty ones included, then
    any unknown value found in the records.
    """
    bins = check_bins(bins)
    labels: "OrderedDict[str, List[List[str]]]" = OrderedDict()
    occluders = [r.get("occluder", "none") for r in records]
    labels["occlusion"] = [["whole" if _is_whole(r) else "occluded"] for r in records]
    labels["occluder"] = [[o] for o in occluders]
    labels["region"] = [[most_hidden_region(r)] for r in records]
    labels["hidden regions"] = [
        ([region for region in BODY_REGIONS if region in r.get("regions", [])] or [NO_REGION]) for r in records]
    bin_labels = [_bin_label(low, high) for low, high in zip(bins, bins[1:])]
    labels["fraction"] = [["whole (0%)"] if _is_whole(r) else [bin_labels[fraction_bin(float(r["fraction"]), bins)]]
                          for r in records]
    order = {
        "occlusion": ["whole", "occluded"],
        "occluder": ["none", *OCCLUDER_TYPES],
        "region": ["none", *BODY_REGIONS],
        "hidden regions": [*BODY_REGIONS, NO_REGION],
        "fraction": ["whole (0%)", *bin_labels],
    }
    result: "OrderedDict[str, OrderedDict[str, np.ndarray]]" = OrderedDict()
    for name, per_query in labels.items():
        categories = list(order[name])
        for values in per_query:
            categories += [v for v in values if v not in categories]
        result[name] = OrderedDict(
            (category, np.array([i for i, values in enumerate(per_query) if category in values], dtype=np.int64))
            for category in categories)
    return result


# ------------------------------------------------------------------------------- evaluation
def evaluation_distances(cfg, query_features: torch.Tensor, gallery_features: torch.Tensor):
    """The query x gallery distances :class:`agreid.evaluation.ReidEvaluator` ranks with.

    The same steps and functions as its ``evaluate``: ``TEST.AQE`` (fastreid's ``aqe``), then
    ``TEST.RERANK`` (:func:`agreid.evaluation.re_ranking`) or ``TEST.METRIC`` (fastreid's
    ``build_dist``), over all queries at once (both steps look at every query).
    """
    from fastreid.evaluation.query_expansion import aqe
    from fastreid.utils.compute_dist import build_dist

    from ..evaluation import re_ranking

    test = cfg.TEST
    if test.AQE.ENABLED:
        query_features, gallery_features = aqe(query_features, gallery_features,
                                               test.AQE.QE_TIME, test.AQE.QE_K, test.AQE.ALPHA)
    if test.RERANK.ENABLED:
        return re_ranking(query_features, gallery_features, k1=test.RERANK.K1, k2=test.RERANK.K2,
                          lambda_value=test.RERANK.LAMBDA)
    return build_dist(query_features, gallery_features, test.METRIC)


def evaluate_subset(dist, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray,
                    index: np.ndarray) -> dict:
    """mAP, Rank-1 (percent) and counts of the queries ``index`` against the whole gallery.

    ``queries``: the subset's size; ``valid``: those with a true match in another camera (the
    others are skipped, as in the full evaluation). mAP and Rank-1 are None without one.
    """
    from ..evaluation import evaluate_rank

    index = np.asarray(index, dtype=np.int64)
    row = {"queries": int(index.size), "valid": 0, "mAP": None, "Rank-1": None}
    if index.size == 0:
        return row
    q_pids, q_camids = np.asarray(q_pids)[index], np.asarray(q_camids)[index]
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    valid = ((g_pids[None, :] == q_pids[:, None]) & (g_camids[None, :] != q_camids[:, None])).any(axis=1)
    row["valid"] = int(valid.sum())
    if not valid.any():
        return row
    cmc, all_ap, _ = evaluate_rank(np.asarray(dist)[index], q_pids, g_pids, q_camids, g_camids)
    row["mAP"] = float(np.mean(all_ap)) * 100
    row["Rank-1"] = float(cmc[0]) * 100
    return row


def evaluate_queries(run: TrainedRun, dataset_name: Optional[str] = None) -> dict:
    """One run's test evaluation, as training runs it, with what the breakdown needs.

    Returns:
        ``{"dataset", "reported": evaluator results, "dist", "q_pids", "g_pids", "q_camids",
        "g_camids", "query_paths"}`` (numpy arrays; ``query_paths`` in the distance matrix's row order).
    """
    from fastreid.evaluation import inference_on_dataset

    from ..engine import AGReIDTrainer

    cfg = run.cfg
    name = dataset_name or cfg.DATASETS.TESTS[0]
    loader, evaluator = AGReIDTrainer.build_evaluator(cfg, name)
    reported = inference_on_dataset(run.model, loader, evaluator, flip_test=cfg.TEST.FLIP.ENABLED)
    features, pids, camids = evaluator._gathered()
    num_query = evaluator._num_query
    paths = [item[0] for item in loader.dataset.img_items]
    if len(paths) != features.shape[0]:
        raise RuntimeError(f"{len(paths)} test images but {features.shape[0]} features")
    dist = evaluation_distances(cfg, features[:num_query], features[num_query:])
    dist = dist.cpu().numpy() if torch.is_tensor(dist) else np.asarray(dist)
    return {"dataset": name, "reported": {k: float(v) for k, v in reported.items() if k in METRICS + ("mINP",)},
            "dist": dist, "q_pids": pids[:num_query], "g_pids": pids[num_query:],
            "q_camids": camids[:num_query], "g_camids": camids[num_query:], "query_paths": paths[:num_query]}


# ------------------------------------------------------------------------------------ seeds
def seed_groups(names: Sequence[str]) -> "OrderedDict[str, List[int]]":
    """The runs of every model: runs that share a name are seeds of one model.

    Returns:
        ``{model name: indices of its runs in names}``, models in the order they first appear;
        the i-th index of every model is its i-th seed (paired with the others' i-th).

    Raises:
        ValueError: the models have different numbers of runs (the message gives each count).
    """
    groups: "OrderedDict[str, List[int]]" = OrderedDict()
    for index, name in enumerate(names):
        groups.setdefault(name, []).append(index)
    counts = {len(indices) for indices in groups.values()}
    if len(counts) > 1:
        listed = ", ".join(f"{name}: {len(indices)}" for name, indices in groups.items())
        raise ValueError(f"every name needs the same number of runs (the seeds of one model, paired in the order "
                         f"given); runs per name: {listed}")
    return groups


def _paired_json(paired: PairedDifference) -> dict:
    return {"mean": paired.mean, "sd": paired.sd, "t": paired.t, "low": paired.low, "high": paired.high,
            "confidence": paired.confidence, "n": paired.n, "seeds": list(paired.seeds),
            "differences": list(paired.differences), "excludes_zero": paired.excludes_zero}


def _paired_from_json(data: dict) -> PairedDifference:
    return PairedDifference(tuple(data["seeds"]), tuple(data["differences"]), data["mean"], data["sd"], data["t"],
                            data["low"], data["high"], data["confidence"])


def combine_seeds(names: Sequence[str], values: Sequence[Mapping[str, Optional[float]]],
                  confidence: float = 0.95) -> dict:
    """One category's numbers of every run, combined per model (:func:`seed_groups`).

    Args:
        names: each run's name (runs sharing one are seeds of a model, paired in this order).
        values: each run's ``{"mAP", "Rank-1"}`` in this category (None: no valid query).
        confidence: of the paired differences' intervals.

    Returns:
        ``{"runs": {model: ...}}``. With one run per model, ``{model: {"mAP", "Rank-1"}}``: the
        run's numbers. With n ≥ 2 seeds, ``{model: {"mAP", "Rank-1": the mean over the seeds
        with a value (None without one), "sd": {metric: sample sd, None with fewer than two
        values}, "n": {metric: how many seeds have a value}, "per seed": {metric: [value of
        seed 0, 1, ...] (None where no valid query)}}}`` and, with two models or more,
        ``"differences": {later model: {metric: {"mean", "sd", "t", "low", "high",
        "confidence", "n", "seeds", "differences", "excludes_zero"}}}``: the model minus the
        first one, paired by seed over the seeds both have a value at
        (:func:`agreid.experiments.common.paired_difference`).

    Raises:
        ValueError: ``names`` and ``values`` differ in length, or models have different
            numbers of runs.
    """
    if len(names) != len(values):
        raise ValueError(f"{len(names)} names for {len(values)} runs")
    groups = seed_groups(names)
    seeds = len(next(iter(groups.values()))) if groups else 0
    runs: "OrderedDict[str, dict]" = OrderedDict()
    for model, indices in groups.items():
        if seeds == 1:
            runs[model] = {metric: values[indices[0]][metric] for metric in METRICS}
            continue
        per_seed = {metric: [values[i][metric] for i in indices] for metric in METRICS}
        present = {metric: [v for v in per_seed[metric] if v is not None] for metric in METRICS}
        stats = {metric: mean_std(present[metric]) if present[metric] else (None, None) for metric in METRICS}
        runs[model] = {**{metric: stats[metric][0] for metric in METRICS},
                       "sd": {metric: stats[metric][1] if len(present[metric]) >= 2 else None for metric in METRICS},
                       "n": {metric: len(present[metric]) for metric in METRICS},
                       "per seed": per_seed}
    result: dict = {"runs": runs}
    if seeds >= 2 and len(groups) >= 2:
        models = list(groups)

        def by_seed(model: str, metric: str) -> Dict[int, float]:
            return {seed: v for seed, v in enumerate(runs[model]["per seed"][metric]) if v is not None}

        result["differences"] = OrderedDict(
            (model, {metric: _paired_json(paired_difference(by_seed(models[0], metric), by_seed(model, metric),
                                                            confidence))
                     for metric in METRICS})
            for model in models[1:])
    return result


# ------------------------------------------------------------------------------- breakdown
def breakdown_runs(runs: Sequence[TrainedRun], bins: Sequence[float] = DEFAULT_BINS,
                   dataset_name: Optional[str] = None) -> dict:
    """mAP / Rank-1 of every run on every breakdown category (see the module docstring), runs
    that share a name combined as seeds of one model (:func:`combine_seeds`).

    Returns:
        ``{"dataset", "bins", "queries", "models": [model names, the first is the reference],
        "seeds": runs per model, "runs": [{"name", "weights", "reported"} per run, in the order
        given, with "seed" (its index among its model's runs) when seeds ≥ 2],
        "breakdowns": {breakdown: {"overlapping", "categories": {category: {"queries",
        "valid", "runs": {model: ...}, "differences" (seeds ≥ 2 and two models or more)}}}}}``,
        ``runs`` and ``differences`` as :func:`combine_seeds` returns them (with one run per
        model: ``{run name: {"mAP", "Rank-1"}}``); the breakdown ``all`` holds the category
        ``all queries``.

    Raises:
        GroundTruthMissingError: the test set is not the synthetic dataset.
        ValueError: a query missing from ``occlusion.json``, runs tested on different queries,
            or names with different numbers of runs (checked before anything is evaluated).
        RuntimeError: a run's row of all queries differs from the evaluator's own numbers.
    """
    bins = check_bins(bins)
    names = [run.name for run in runs]
    groups = seed_groups(names)
    seeds = len(next(iter(groups.values()))) if groups else 0
    result = {"bins": list(bins), "models": list(groups), "seeds": seeds, "runs": [], "breakdowns": OrderedDict()}
    per_run: "OrderedDict[str, OrderedDict[str, List[dict]]]" = OrderedDict()  # every run's row, run by run
    keys_seen = None
    for number, run in enumerate(runs):
        label = run.name if seeds == 1 else f"{run.name} (run {groups[run.name].index(number) + 1})"
        name = dataset_name or run.cfg.DATASETS.TESTS[0]
        dataset_dir = dataset_of(run.cfg, name).dataset_dir
        occlusion = ground_truth(dataset_dir, OCCLUSION_FILE)  # before the slow part
        evaluation = evaluate_queries(run, name)
        keys = [image_key(path, dataset_dir) for path in evaluation["query_paths"]]
        unknown = [key for key in keys if key not in occlusion]
        if unknown:
            raise ValueError(f"{len(unknown)} queries are not in {os.path.join(dataset_dir, OCCLUSION_FILE)} "
                             f"(first: {unknown[0]})")
        if keys_seen is None:
            keys_seen = keys
            result["dataset"], result["queries"] = evaluation["dataset"], len(keys)
            categories_of: "OrderedDict[str, OrderedDict[str, np.ndarray]]" = OrderedDict(
                [("all", OrderedDict([("all queries", np.arange(len(keys)))]))])
            categories_of.update(query_breakdowns([occlusion[key] for key in keys], bins))
        elif keys != keys_seen:
            raise ValueError(f"{label} is tested on other queries than {runs[0].name}: the breakdown compares "
                             f"runs on the same test set")
        arrays = [evaluation[k] for k in ("dist", "q_pids", "g_pids", "q_camids", "g_camids")]
        for breakdown, categories in categories_of.items():
            rows = per_run.setdefault(breakdown, OrderedDict())
            for category, index in categories.items():
                rows.setdefault(category, []).append(evaluate_subset(*arrays, index))
        overall = per_run["all"]["all queries"][-1]
        for metric in METRICS:
            if overall[metric] is None or abs(overall[metric] - evaluation["reported"][metric]) > 1e-6:
                raise RuntimeError(f"{label}: {metric} over all queries is {overall[metric]} but the evaluator "
                                   f"reports {evaluation['reported'][metric]}")
        entry = {"name": run.name, "weights": run.weights, "reported": evaluation["reported"]}
        if seeds > 1:
            entry["seed"] = groups[run.name].index(number)
        result["runs"].append(entry)
    for breakdown, categories in per_run.items():
        entry = result["breakdowns"][breakdown] = {"overlapping": breakdown in OVERLAPPING,
                                                   "categories": OrderedDict()}
        for category, rows in categories.items():
            # The queries (and which of them have a true match) are the same for every run.
            slot = {"queries": rows[0]["queries"], "valid": rows[0]["valid"]}
            slot.update(combine_seeds(names, [{metric: row[metric] for metric in METRICS} for row in rows]))
            entry["categories"][category] = slot
    return result


# ------------------------------------------------------------------------------------ reporting
def _cell(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}"


def _models(result: dict) -> List[str]:
    """The models of a result (a result written before seeds existed: its runs' names)."""
    return list(result.get("models") or OrderedDict.fromkeys(run["name"] for run in result["runs"]))


def _seed_cell(value: dict, metric: str, seeds: int) -> str:
    """``mean ± sd`` over the seeds with a value, and how many when some have none."""
    present = [v for v in value["per seed"][metric] if v is not None]
    if not present:
        return "–"
    cell = format_mean_std(present, digits=2)
    return cell if len(present) == seeds else f"{cell} ({len(present)} of {seeds} seeds)"


def _delta_cell(data: dict) -> str:
    return "–" if data["mean"] is None else format_paired(_paired_from_json(data), digits=2)


def _delta_header(model: str, metric: str, reference: str, models: int) -> str:
    return (f"{model} " if models > 2 else "") + f"Δ {metric} vs {reference} (95% CI)"


def caption(result: dict) -> str:
    """The line above the table: test set, queries and, with seeds, what the cells hold."""
    line = f"Test set {result['dataset']}, {result['queries']} queries; mAP and Rank-1 in percent."
    seeds = result.get("seeds", 1)
    if seeds < 2:
        return line
    line += (f" {seeds} seeds per model (the i-th run of every model paired): mean ± sample sd over the "
             f"seeds with a valid query.")
    models = _models(result)
    if len(models) > 1:
        line += (f" Δ: the model minus {models[0]} at each seed, in points: mean [95% Student-t interval, "
                 f"mean ± t(0.975, n−1)·sd/√n] over the n paired seeds; * the interval excludes 0.")
    return line


def markdown(result: dict) -> str:
    """One row per breakdown category: its query count, then each model's mAP and Rank-1 (one
    run per model: its numbers; several seeds: ``mean ± sd``), then, with seeds and two models or
    more, each later model's paired difference to the first (:func:`combine_seeds`)."""
    models = _models(result)
    seeds = result.get("seeds", 1)
    deltas = models[1:] if seeds >= 2 else []
    header = ["breakdown", "category", "queries"] + [f"{n} {m}" for n in models for m in METRICS]
    header += [_delta_header(n, m, models[0], len(models)) for n in deltas for m in METRICS]
    lines = ["| " + " | ".join(header) + " |",
             "|---|---|---:|" + "---:|" * (2 * len(models)) + "---|" * (2 * len(deltas))]
    for breakdown, entry in result["breakdowns"].items():
        label = breakdown + (" (overlapping)" if entry["overlapping"] else "")
        for category, slot in entry["categories"].items():
            count = str(slot["queries"])
            if slot["valid"] != slot["queries"]:
                count += f" ({slot['valid']} valid)"
            cells = [label, category, count]
            if seeds >= 2:
                cells += [_seed_cell(slot["runs"][n], m, seeds) for n in models for m in METRICS]
                cells += [_delta_cell(slot["differences"][n][m]) for n in deltas for m in METRICS]
            else:
                cells += [_cell(slot["runs"][n][m]) for n in models for m in METRICS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: str) -> str:
    """Bar chart: a row of panels per breakdown (mAP, Rank-1), one bar group per non-empty
    category, one bar per model at its mean over the seeds (one run: its value), with the sample
    sd as error bar when there are several seeds. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _models(result)
    seeds = result.get("seeds", 1)
    breakdowns = list(result["breakdowns"])
    fig, axes = plt.subplots(len(breakdowns), len(METRICS), squeeze=False,
                             figsize=(4.2 * len(METRICS), 2.3 * len(breakdowns)), dpi=100)
    width = 0.8 / max(len(names), 1)
    for row, breakdown in enumerate(breakdowns):
        categories = [(c, slot) for c, slot in result["breakdowns"][breakdown]["categories"].items() if slot["queries"]]
        x = np.arange(len(categories))
        for column, metric in enumerate(METRICS):
            ax = axes[row][column]
            for k, name in enumerate(names):
                values = [slot["runs"][name][metric] for _, slot in categories]
                bars = {"label": name}
                if seeds >= 2:
                    errors = [slot["runs"][name]["sd"][metric] for _, slot in categories]
                    bars = {"label": f"{name} (mean ± sd, {seeds} seeds)", "capsize": 2,
                            "error_kw": {"elinewidth": 0.8}, "yerr": [np.nan if e is None else e for e in errors]}
                ax.bar(x + (k - (len(names) - 1) / 2) * width, [np.nan if v is None else v for v in values],
                       width, color=f"C{k}", **bars)
            ax.set_xticks(x)
            ax.set_xticklabels([f"{c}\n(n={slot['queries']})" for c, slot in categories], fontsize=7)
            ax.set_ylabel(f"{metric} (%)", fontsize=8)
            ax.set_title(f"{metric}, all queries" if breakdown == "all" else f"{metric} by {breakdown}"
                         + (" (overlapping)" if result["breakdowns"][breakdown]["overlapping"] else ""), fontsize=9)
            ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1.0))
            ax.grid(axis="y", alpha=0.3)
            ax.tick_params(axis="y", labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(names), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.3 * len(breakdowns))))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
