"""Does the noise mask drop the slots whose body region is hidden? (stage 2, synthetic data)

In stage 2, L_attrG keeps a slot j of image i only when ``cos(E_A(f_i)_j, V[k(i)]_j)`` is above
the threshold gamma of the batch (Otsu, or a percentile of the batch's B*r similarities). The
paper's story predicts more drops where the region the slot describes is hidden. On the
synthetic data, ``occlusion.json`` says which regions (head, upper, lower, feet) of every
training image are hidden (at least half covered), and the words of an attribute template say
which region each slot describes (agreid/analysis/slots.py, ``SLOT_REGIONS``: person -> the whole
person, hidden when any region is; hair, hat -> head; upper clothes, carrying -> upper body,
where the synthetic bags are; lower clothes -> lower; shoes -> feet).

With a trained checkpoint, the tool encodes every training image (no augmentation unless
``--augment``, so the only occlusions are the recorded ones), draws batches the way stage 2 does
(``SOLVER.IMS_PER_BATCH`` images, ``DATALOADER.NUM_INSTANCE`` per identity) for ``--passes``
passes over the identities, applies the project's noise mask to each batch for each threshold,
and counts, per slot, how often it is dropped when its region is hidden and when it is visible.
The mask and its cut are training's own (``agreid.modeling.noise_mask``: ``noise_mask``,
``mask_threshold``), taken per batch as in training, never over the whole training set. The
JSON also has, per threshold, the share of all slots dropped for the images with any part hidden
(``occlusion.json`` fraction > 0) and for whole ones (``by_image``), and their mean cosine.
Writes ``noise_mask.json``, ``noise_mask.md`` and ``noise_mask.png`` into ``--output-dir``, and
with ``--results-md`` the marked section ``noise-mask:analysis``.

    python tools/analyze_noise_mask.py --config-file logs/ablations/small/runs/at_ap/seed0/config.yaml \\
        MODEL.WEIGHTS logs/ablations/small/runs/at_ap/seed0/model_final.pth
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

from ..experiments import common as ex
from . import slots
from .runs import (OCCLUSION_FILE, GroundTruthMissingError, dataset_of, image_occlusion, relabelled_items,
                   training_set)
from .slots import slot_regions

DEFAULT_THRESHOLDS = "p50,p75,p90,otsu"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the run's config (its config.yaml)")
    parser.add_argument("--thresholds", default=DEFAULT_THRESHOLDS, help="comma-separated noise-mask thresholds")
    parser.add_argument("--passes", type=int, default=4, help="passes over the identities (batches drawn anew)")
    parser.add_argument("--augment", action="store_true",
                        help="encode with the training augmentation, anew each pass (random erasing adds "
                             "occlusions occlusion.json does not record)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="logs/noise_mask")
    parser.add_argument("--results-md", default=None, help="also render the marked section noise-mask:analysis here")
    parser.add_argument("--figure", default=None, help="PNG (default <output-dir>/noise_mask.png)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides; MODEL.WEIGHTS is required")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------- regions


def hidden_matrix(records: Sequence[dict], regions: Sequence[str]) -> np.ndarray:
    """(N, r) booleans: whether the region of slot j is hidden in image i."""
    hidden = np.zeros((len(records), len(regions)), dtype=bool)
    for i, record in enumerate(records):
        covered = set(record.get("regions", []))
        for j, region in enumerate(regions):
            hidden[i, j] = bool(covered) if region == "whole" else region in covered
    return hidden


# ------------------------------------------------------------------------------------ batching
def identity_batches(pids: np.ndarray, batch_size: int, num_instance: int, rng: np.random.Generator):
    """One pass of stage-2-like batches: ``batch_size // num_instance`` identities, ``num_instance`` each.

    An identity with fewer images than ``num_instance`` repeats some (as fastreid's sampler does).
    """
    per_batch = max(batch_size // num_instance, 1)
    identities = rng.permutation(np.unique(pids))
    for start in range(0, len(identities) - per_batch + 1, per_batch):
        batch = []
        for pid in identities[start:start + per_batch]:
            members = np.flatnonzero(pids == pid)
            batch.extend(rng.choice(members, size=num_instance, replace=len(members) < num_instance))
        yield np.array(batch)


def drop_counts(similarity_passes: Sequence[np.ndarray], pids: np.ndarray, threshold, batch_size: int,
                num_instance: int, seed: int):
    """Per image and slot: times seen and times dropped by the mask, over all passes.

    Args:
        similarity_passes: one (N, r) array of cos(a, v) per pass (the same array without
            augmentation).
        threshold: a noise-mask threshold (see ``agreid.modeling.noise_mask.noise_mask``).

    Returns:
        ``(seen (N, r), dropped (N, r), gammas)``; gammas: the cut of every batch (None for
        thresholds without one).
    """
    import torch

    from ..modeling.noise_mask import mask_threshold, noise_mask, parse_threshold

    rng = np.random.default_rng(seed)
    seen = np.zeros(similarity_passes[0].shape)
    dropped = np.zeros(similarity_passes[0].shape)
    gammas = []
    computed = isinstance(parse_threshold(threshold), str)  # otsu, pNN: a cut of each batch's values
    for sims in similarity_passes:
        for batch in identity_batches(pids, batch_size, num_instance, rng):
            values = torch.from_numpy(sims[batch])
            mask = noise_mask(values, threshold).numpy()
            np.add.at(seen, batch, 1.0)
            np.add.at(dropped, batch, 1.0 - mask)
            if computed:
                gammas.append(float(mask_threshold(values, threshold)))
    return seen, dropped, gammas


def summarise(seen: np.ndarray, dropped: np.ndarray, hidden: np.ndarray, regions: Sequence[str]) -> dict:
    """Drop rates where the slot's region is hidden / visible: overall, per region, per slot."""
    def rate(select):
        count = seen[select].sum()
        return (float(dropped[select].sum() / count) if count else None), int(count)

    described = np.array([bool(r) for r in regions])[None, :].repeat(len(seen), axis=0)
    out = {}
    for name, select in (("hidden", hidden & described), ("visible", ~hidden & described)):
        out[name], out[f"{name}_count"] = rate(select)
    out["all"], _ = rate(np.ones_like(hidden))
    out["per_region"] = {}
    for region in sorted({r for r in regions if r}):
        columns = np.array([r == region for r in regions])[None, :].repeat(len(seen), axis=0)
        h, hn = rate(hidden & columns)
        v, vn = rate(~hidden & columns)
        out["per_region"][region] = {"hidden": h, "hidden_count": hn, "visible": v, "visible_count": vn}
    out["per_slot"] = []
    for j in range(seen.shape[1]):
        column = np.zeros_like(hidden)
        column[:, j] = True
        h, hn = rate(hidden & column)
        v, vn = rate(~hidden & column)
        out["per_slot"].append({"hidden": h, "hidden_count": hn, "visible": v, "visible_count": vn})
    return out


def by_image(seen: np.ndarray, dropped: np.ndarray, occluded: np.ndarray) -> dict:
    """Share of all slots dropped, for the occluded images and for the whole ones."""
    def rate(select):
        count = seen[select].sum()
        return float(dropped[select].sum() / count) if count else None

    return {"occluded": rate(occluded), "whole": rate(~occluded)}


# ------------------------------------------------------------------------------------ encoding
def encode_similarities(model, cfg, items, augment: bool) -> np.ndarray:
    """(N, r) cos(E_A(f_proj), V[k]) of every training image, in ``items`` order.

    ``items``: ``(path, identity row, camera row)`` (:func:`agreid.analysis.runs.relabelled_items`).
    """
    import torch
    import torch.nn.functional as F
    from fastreid.data.build import build_reid_test_loader
    from fastreid.data.common import CommDataset

    from ..data.transforms import build_agreid_transforms

    dataset = CommDataset(list(items), build_agreid_transforms(cfg, is_train=augment), relabel=False)
    loader, _ = build_reid_test_loader(dataset, cfg.TEST.IMS_PER_BATCH, 0, num_workers=0)
    sims = []
    with torch.no_grad():
        for batch in loader:
            predicted = model.heads(model.encode_image(batch))  # (B, r, width)
            targets = model.prompt_learner.pseudo_labels[batch["targets"].to(predicted.device)]
            sims.append(F.cosine_similarity(predicted.float(), targets.float(), dim=-1).cpu())
    return torch.cat(sims).numpy().astype(np.float64)


# ----------------------------------------------------------------------------------- reporting
def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def markdown(result: dict) -> str:
    """Table per threshold, then per region."""
    lines = ["| threshold | mean gamma | slots dropped, region hidden | region visible | hidden / visible | "
             "slot-images hidden / visible |", "|---|---|---|---|---|---|"]
    for name, row in result["thresholds"].items():
        ratio = (f"{row['hidden'] / row['visible']:.2f}" if row["hidden"] is not None and row["visible"] else "–")
        gamma = "–" if row["gamma_mean"] is None else f"{row['gamma_mean']:.3f}"
        lines.append(f"| {name} | {gamma} | {_pct(row['hidden'])} | {_pct(row['visible'])} | {ratio} | "
                     f"{row['hidden_count']} / {row['visible_count']} |")
    regions = sorted({r for r in result["slot_regions"] if r})
    names = list(result["thresholds"])
    lines += ["", "| region (its slots) | " + " | ".join(f"{n}: hidden / visible" for n in names) + " |",
              "|---|" + "---|" * len(names)]
    for region in regions:
        slots = ", ".join(str(j + 1) for j, r in enumerate(result["slot_regions"]) if r == region)
        cells = []
        for n in names:
            per = result["thresholds"][n]["per_region"][region]
            cells.append(f"{_pct(per['hidden'])} / {_pct(per['visible'])}")
        lines.append(f"| {region} ({slots}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    """Grouped bars: drop rate with the region hidden / visible, per threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["thresholds"])
    hidden = [100 * (result["thresholds"][n]["hidden"] or 0) for n in names]
    visible = [100 * (result["thresholds"][n]["visible"] or 0) for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=110)
    ax.bar(x - 0.2, hidden, 0.38, label="region hidden", color="C3")
    ax.bar(x + 0.2, visible, 0.38, label="region visible", color="C0")
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel("slots dropped by the mask (%)")
    ax.set_title("Noise mask in stage 2, by occlusion of the slot's region", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def run(argv=None) -> dict:
    """Measure (see the module docstring) and write the files; returns every number (as in noise_mask.json)."""
    args = parse_args(argv)
    import agreid
    from ..engine import AGReIDTrainer
    from ..modeling.noise_mask import parse_threshold
    from ..modeling.prompts import TEMPLATES

    thresholds = [t.strip() for t in args.thresholds.split(",") if t.strip()]
    for threshold in thresholds:
        try:
            parse_threshold(threshold)
        except ValueError as error:
            raise SystemExit(f"--thresholds: {error}") from None
    cfg = agreid.get_agreid_cfg(args.config_file, args.opts)
    sentence = TEMPLATES.get(cfg.MODEL.PROMPT.TEMPLATE, cfg.MODEL.PROMPT.TEMPLATE)
    regions = slot_regions(sentence)
    if not any(regions):
        raise SystemExit(f"Template {cfg.MODEL.PROMPT.TEMPLATE!r} ({sentence!r}) names no body region next to "
                         f"its slots: nothing to split by occlusion.")
    if not cfg.MODEL.ATTR.ENABLED:
        raise SystemExit(f"{args.config_file}: MODEL.ATTR.ENABLED is False: no attribute encoder, no noise mask.")
    model = AGReIDTrainer.build_trained_model(cfg)

    # The training images and labels exactly as the trainer has them (agreid.analysis.runs).
    train_set = training_set(cfg)
    try:
        records = image_occlusion(cfg, train_set)
    except GroundTruthMissingError:
        occlusion_file = os.path.join(dataset_of(cfg).dataset_dir, OCCLUSION_FILE)
        raise SystemExit(f"{occlusion_file} not found: the analysis needs the synthetic dataset's ground truth.") from None
    items = relabelled_items(train_set)
    hidden = hidden_matrix(records, regions)
    occluded = np.array([record["fraction"] > 0 for record in records])
    pids = np.array([pid for _, pid, _ in items])

    first = encode_similarities(model, cfg, items, args.augment)
    passes = [first] + [encode_similarities(model, cfg, items, True)
                        for _ in range(args.passes - 1)] if args.augment else [first] * args.passes
    result = {
        "config": args.config_file, "weights": cfg.MODEL.WEIGHTS, "template": cfg.MODEL.PROMPT.TEMPLATE,
        "sentence": sentence, "slot_words": slots.slot_words(sentence), "slot_regions": regions,
        "region_map": slots.SLOT_REGIONS, "images": len(items), "occluded_images": int(sum(bool(r["regions"]) for r in records)),
        "batch_size": cfg.SOLVER.IMS_PER_BATCH, "num_instance": cfg.DATALOADER.NUM_INSTANCE,
        "passes": args.passes, "augment": args.augment, "mean_cosine": float(first.mean()),
        "by_image": {"occluded": {"images": int(occluded.sum()), "mean_cosine": float(first[occluded].mean())
                                  if occluded.any() else None},
                     "whole": {"images": int((~occluded).sum()), "mean_cosine": float(first[~occluded].mean())
                               if (~occluded).any() else None}},
        "invocation": "python tools/analyze_noise_mask.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "thresholds": {},
    }
    for threshold in thresholds:
        seen, dropped, gammas = drop_counts(passes, pids, threshold, cfg.SOLVER.IMS_PER_BATCH,
                                            cfg.DATALOADER.NUM_INSTANCE, args.seed)
        row = summarise(seen, dropped, hidden, regions)
        row["by_image"] = by_image(seen, dropped, occluded)
        row["gamma_mean"] = float(np.mean(gammas)) if gammas else None
        result["thresholds"][threshold] = row
    description = (
        f"Noise mask on the {len(items)} training images ({result['occluded_images']} with a hidden region), "
        f"template `{cfg.MODEL.PROMPT.TEMPLATE}`, batches of {cfg.SOLVER.IMS_PER_BATCH} "
        f"({cfg.DATALOADER.NUM_INSTANCE} per identity), {args.passes} passes"
        f"{', training augmentation' if args.augment else ', no augmentation'}; a slot's region: "
        f"{', '.join(f'{w} -> {r}' for w, r in slots.SLOT_REGIONS.items())} (whole: hidden when any region is). "
        f"Measured with `{result['invocation']}`.")
    ex.publish(result, markdown(result), args.output_dir, "noise_mask", args.figure, plot, args.results_md,
               "noise-mask:analysis", description, "drop rates")
    return result


def main(argv=None) -> int:
    """The command line: :func:`run`, exit status 0."""
    run(argv)
    return 0
