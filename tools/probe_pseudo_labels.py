#!/usr/bin/env python
"""Do the learned pseudo-labels carry the attributes? Does the noise mask drop occluded slots?

Only the synthetic dataset can answer this (its ``attributes.json`` and ``occlusion.json`` are
ground truth). Two measurements on a trained AG-ReID checkpoint:

1. A linear probe (logistic regression, k-fold cross-validated over identities) from each
   identity's pseudo-labels ``V[k]`` (r x width, flattened) to each true attribute, next to the
   majority-class rate and the same probe on freshly initialised tokens (the control).
2. For every training image, the attribute encoder's prediction ``a = E_A(f_proj)`` against its
   identity's ``V``: mean cosine and the share of slots the Otsu noise mask drops, for occluded
   and for whole images.

    python tools/probe_pseudo_labels.py --config-file logs/demo/agreid/config.yaml \
        MODEL.WEIGHTS logs/demo/agreid/model_final.pth
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tabulate import tabulate

import agreid
from agreid.data.transforms import build_agreid_transforms
from agreid.engine import AGReIDTrainer, dataset_root
from agreid.engine.trainer import natural_key
from agreid.modeling.losses import otsu_threshold
from fastreid.data.build import build_reid_test_loader
from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args()


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int) -> float:
    """Cross-validated accuracy of a linear classifier from ``features`` to ``labels``."""
    if len(set(labels)) < 2:
        return 1.0
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    splits = KFold(n_splits=min(folds, len(labels)), shuffle=True, random_state=0)
    return float(cross_val_score(classifier, features, labels, cv=splits).mean())


def attribute_table(pseudo_labels: np.ndarray, control: np.ndarray, attributes: list, folds: int):
    """Rows (attribute, majority rate, probe on V, probe on the control tokens)."""
    rows = []
    for name in sorted(attributes[0]):
        labels = np.array([a[name] for a in attributes])
        majority = max(np.mean(labels == value) for value in set(labels))
        rows.append([name, majority, probe_accuracy(pseudo_labels, labels, folds),
                     probe_accuracy(control, labels, folds)])
    return rows


@torch.no_grad()
def mask_by_occlusion(model, cfg, items, occluded: np.ndarray, pid_rows: dict, cam_rows: dict):
    """Mean cosine(a, v) and share of slots under the Otsu threshold, for occluded / whole images.

    ``items`` are training items with string ids; ``pid_rows``/``cam_rows`` map them to the
    trainer's relabelled indices.
    """
    relabelled = [(path, pid_rows[pid], cam_rows[cam]) for path, pid, cam in items]
    dataset = CommDataset(relabelled, build_agreid_transforms(cfg, is_train=False), relabel=False)
    loader, _ = build_reid_test_loader(dataset, cfg.TEST.IMS_PER_BATCH, 0, num_workers=0)
    sims = []
    for batch in loader:
        predicted = model.heads(model.encode_image(batch))  # (B, r, width)
        targets = model.prompt_learner.pseudo_labels[batch["targets"]]
        sims.append(F.cosine_similarity(predicted, targets, dim=-1).cpu())
    sims = torch.cat(sims)  # (N, r)
    gamma = float(otsu_threshold(sims.flatten()))
    dropped = (sims <= gamma).float().mean(dim=1).numpy()
    mean_cos = sims.mean(dim=1).numpy()
    return gamma, [["occluded", int(occluded.sum()), mean_cos[occluded].mean(), dropped[occluded].mean()],
                   ["whole", int((~occluded).sum()), mean_cos[~occluded].mean(), dropped[~occluded].mean()]]


def main():
    args = parse_args()
    try:
        cfg = agreid.get_agreid_cfg(args.config_file, args.opts)
        model = AGReIDTrainer.build_trained_model(cfg)
    except (FileNotFoundError, ValueError) as error:  # an unsafe or damaged checkpoint, a wrong config
        print(f"error: {error}", file=sys.stderr)
        return 2

    name = cfg.DATASETS.NAMES[0]
    data = DATASET_REGISTRY.get(name)(root=dataset_root(cfg))
    truth_dir = data.dataset_dir
    truth_file = os.path.join(truth_dir, "attributes.json")
    if not os.path.isfile(truth_file):
        raise SystemExit(f"{truth_file} not found: the probe needs the synthetic dataset's ground truth.")
    identities = json.load(open(truth_file))["identities"]
    occlusion = json.load(open(os.path.join(truth_dir, "occlusion.json")))

    # The trainer's relabelling: sorted pid strings, sorted camera strings (numeric order).
    pids = sorted({pid for _, pid, _ in data.train})
    attributes = [identities[f"{int(pid.rsplit('_', 1)[1]):04d}"] for pid in pids]
    pseudo_labels = model.prompt_learner.pseudo_labels.detach().flatten(1).cpu().numpy()
    generator = torch.Generator().manual_seed(0)
    control = (torch.randn(pseudo_labels.shape, generator=generator) * cfg.MODEL.PROMPT.INIT_STD).numpy()
    rows = attribute_table(pseudo_labels, control, attributes, args.folds)
    print(f"Linear probe from V[k] ({pseudo_labels.shape[1]} values) to the true attributes, "
          f"{len(pids)} training identities, {args.folds}-fold cross-validation:")
    print(tabulate(rows, headers=["attribute", "majority", "probe on V", "probe on init"],
                   floatfmt=".3f", tablefmt="pipe"))
    print(f"mean: majority {np.mean([r[1] for r in rows]):.3f}, V {np.mean([r[2] for r in rows]):.3f}, "
          f"init {np.mean([r[3] for r in rows]):.3f}")

    if model.heads is None:
        print("No attribute encoder in this model (MODEL.ATTR.ENABLED False): no noise-mask check.")
        return 0
    cams = sorted({cam for _, _, cam in data.train}, key=natural_key)
    pid_rows = {p: i for i, p in enumerate(pids)}
    cam_rows = {c: i for i, c in enumerate(cams)}
    occluded = np.array([occlusion[os.path.relpath(path, truth_dir)]["fraction"] > 0 for path, _, _ in data.train])
    gamma, table = mask_by_occlusion(model, cfg, data.train, occluded, pid_rows, cam_rows)
    print(f"\nAttribute encoder vs pseudo-labels on the training images (Otsu gamma = {gamma:.3f}):")
    print(tabulate(table, headers=["images", "count", "mean cos(a, v)", "slots masked"],
                   floatfmt=".3f", tablefmt="pipe"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
