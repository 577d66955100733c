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

Command line (``tools/occlusion_breakdown.py``)::

    python tools/occlusion_breakdown.py --runs logs/ablations/small/runs/baseline/seed0 \\
        logs/ablations/small/runs/at_ap/seed0 --names baseline,AG-ReID --output logs/occlusion

prints the markdown table and writes it (``occlusion_breakdown.md``), the numbers
(``occlusion_breakdown.json``) and a bar chart (``occlusion_breakdown.png``: one panel per
breakdown and metric, one bar group per category, one bar per run).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from .runs import OCCLUSION_FILE, TrainedRun, dataset_of, ground_truth, image_key

logger = logging.getLogger(__name__)

__all__ = [
    "BODY_REGIONS",
    "DEFAULT_BINS",
    "OCCLUDER_TYPES",
    "breakdown_runs",
    "check_bins",
    "evaluate_queries",
    "evaluate_subset",
    "evaluation_distances",
    "markdown",
    "plot",
    "query_breakdowns",
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


def breakdown_runs(runs: Sequence[TrainedRun], bins: Sequence[float] = DEFAULT_BINS,
                   dataset_name: Optional[str] = None) -> dict:
    """mAP / Rank-1 of every run on every breakdown category (see the module docstring).

    Returns:
        ``{"dataset", "bins", "queries", "runs": [{"name", "weights", "reported"}],
        "breakdowns": {breakdown: {"overlapping", "categories": {category: {"queries",
        "valid", "runs": {run name: {"mAP", "Rank-1"}}}}}}}``; the breakdown ``all`` holds the
        category ``all queries``.

    Raises:
        GroundTruthMissingError: the test set is not the synthetic dataset.
        ValueError: a query missing from ``occlusion.json``, runs tested on different queries,
            or two runs with one name.
        RuntimeError: the row of all queries differs from the evaluator's own numbers.
    """
    bins = check_bins(bins)
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"two runs share a name: {names} (name them with --names)")
    result = {"bins": list(bins), "runs": [], "breakdowns": OrderedDict()}
    keys_seen = None
    for run in runs:
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
            groups: "OrderedDict[str, OrderedDict[str, np.ndarray]]" = OrderedDict(
                [("all", OrderedDict([("all queries", np.arange(len(keys)))]))])
            groups.update(query_breakdowns([occlusion[key] for key in keys], bins))
        elif keys != keys_seen:
            raise ValueError(f"{run.name} is tested on other queries than {runs[0].name}: the breakdown compares "
                             f"runs on the same test set")
        arrays = [evaluation[k] for k in ("dist", "q_pids", "g_pids", "q_camids", "g_camids")]
        for breakdown, categories in groups.items():
            entry = result["breakdowns"].setdefault(
                breakdown, {"overlapping": breakdown in OVERLAPPING, "categories": OrderedDict()})
            for category, index in categories.items():
                row = evaluate_subset(*arrays, index)
                slot = entry["categories"].setdefault(category, {"queries": row["queries"], "valid": row["valid"],
                                                                  "runs": OrderedDict()})
                slot["runs"][run.name] = {metric: row[metric] for metric in METRICS}
        overall = result["breakdowns"]["all"]["categories"]["all queries"]["runs"][run.name]
        for metric in METRICS:
            if overall[metric] is None or abs(overall[metric] - evaluation["reported"][metric]) > 1e-6:
                raise RuntimeError(f"{run.name}: {metric} over all queries is {overall[metric]} but the evaluator "
                                   f"reports {evaluation['reported'][metric]}")
        result["runs"].append({"name": run.name, "weights": run.weights, "reported": evaluation["reported"]})
    return result


# ------------------------------------------------------------------------------------ reporting
def _cell(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    """One row per breakdown category: its query count, then each run's mAP and Rank-1."""
    names = [run["name"] for run in result["runs"]]
    header = ["breakdown", "category", "queries"] + [f"{n} {m}" for n in names for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|" + "---:|" * (2 * len(names))]
    for breakdown, entry in result["breakdowns"].items():
        label = breakdown + (" (overlapping)" if entry["overlapping"] else "")
        for category, slot in entry["categories"].items():
            count = str(slot["queries"])
            if slot["valid"] != slot["queries"]:
                count += f" ({slot['valid']} valid)"
            cells = [label, category, count]
            cells += [_cell(slot["runs"][n][m]) for n in names for m in METRICS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: str) -> str:
    """Bar chart: a row of panels per breakdown (mAP, Rank-1), one bar group per non-empty
    category, one bar per run. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [run["name"] for run in result["runs"]]
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
                ax.bar(x + (k - (len(names) - 1) / 2) * width, [np.nan if v is None else v for v in values],
                       width, label=name, color=f"C{k}")
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

