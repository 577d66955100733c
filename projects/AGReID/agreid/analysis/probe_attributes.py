"""Do the learned per-identity tokens V carry the true attributes, and which slot carries which?

Only the synthetic data can answer this: its ``attributes.json`` holds every identity's true
attributes. From the pseudo-labels ``V`` (num_ids x r x width) of a checkpoint taken after stage 1
(``model_stage1.pth``; stage 2 does not change V), the project's cross-validated linear probe
(``agreid.analysis.probes``: standardised logistic regression, stratified k-fold over identities,
shuffled with seed 0) predicts each attribute from

- all of ``V[k]`` (flattened), against the majority-class rate,
- freshly initialised tokens of the same shape (normal, ``MODEL.PROMPT.INIT_STD``): the control,
- optionally the tokens of a second run, e.g. one with the default (holistic) template,
- each slot ``V[k, j]`` alone: which attribute each learnable slot predicts best (does the slot
  after "hair" carry the hair colour?).

Writes ``probe.json``, ``probe.md`` and ``probe_heatmap.png`` (slots x attributes: accuracy
above the majority rate) into ``--output-dir``, and with ``--results-md`` the marked section
``probe:attributes`` of that markdown file.

    python tools/probe_attributes.py --config-file logs/ablations/small/runs/at_ap/seed0/config.yaml \\
        --weights logs/ablations/small/runs/at_ap/seed0/model_stage1.pth \\
        --compare-config logs/ablations/small/runs/ap/seed0/config.yaml \\
        --compare-weights logs/ablations/small/runs/ap/seed0/model_stage1.pth --output-dir logs/probe
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, Optional, Sequence

import numpy as np

from ..experiments import common as ex
from .probes import majority_rate, probe_accuracy
from .runs import ATTRIBUTES_FILE, GroundTruthMissingError, dataset_of, identity_attributes, one_line
from .slots import slot_labels

PSEUDO_LABELS = "prompt_learner.pseudo_labels"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the run's config (its config.yaml)")
    parser.add_argument("--weights", required=True, metavar="PTH", help="a checkpoint after stage 1 (model_stage1.pth)")
    parser.add_argument("--compare-config", metavar="FILE", help="config of a second run (e.g. the default template)")
    parser.add_argument("--compare-weights", metavar="PTH", help="its checkpoint after stage 1")
    parser.add_argument("--compare-name", default=None, help="name of the second run in the tables "
                                                                "(default: its template)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--attributes", default=None, help="comma-separated attributes to probe (default: all)")
    parser.add_argument("--output-dir", default="logs/probe_attributes")
    parser.add_argument("--results-md", default=None, help="also render the marked section probe:attributes here")
    parser.add_argument("--figure", default=None, help="heat-map PNG (default <output-dir>/probe_heatmap.png)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides (e.g. DATASETS.ROOT)")
    args = parser.parse_args(argv)
    if bool(args.compare_config) != bool(args.compare_weights):
        parser.error("--compare-config and --compare-weights go together")
    return args


# ------------------------------------------------------------------------------------ loading
def load_pseudo_labels(path: str) -> np.ndarray:
    """V (num_ids, r, width) from a checkpoint, read without executing code (weights_only / safetensors).

    Raises:
        FileNotFoundError: no such file.
        CheckpointFileError: the file holds code, is no checkpoint, or V holds NaN/Inf or is not
            floating point (the message names the file).
        ValueError: the checkpoint has no pseudo-labels.
    """
    import torch
    from ..serialization import check_weights, load_checkpoint_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    state = load_checkpoint_file(path)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or PSEUDO_LABELS not in state:
        raise ValueError(f"{path} has no {PSEUDO_LABELS}: not an AG-ReID checkpoint")
    check_weights({PSEUDO_LABELS: state[PSEUDO_LABELS]}, path, reference={PSEUDO_LABELS: torch.float32})
    return state[PSEUDO_LABELS].float().numpy()


def load_or_exit(path: str) -> np.ndarray:
    """:func:`load_pseudo_labels`, or one line ``error: ...`` on stderr and exit status 2."""
    try:
        return load_pseudo_labels(path)
    except (FileNotFoundError, ValueError) as error:  # CheckpointFileError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def training_attributes(cfg):
    """``(attributes, schema)`` of the training identities in the trainer's label order
    (:func:`agreid.analysis.runs.identity_attributes`), or the tool's one-line exit."""
    from ..data import dataset_root

    try:
        truth = identity_attributes(cfg)
    except GroundTruthMissingError:
        name = cfg.DATASETS.NAMES[0]
        truth_file = os.path.join(dataset_of(cfg).dataset_dir, ATTRIBUTES_FILE)
        raise SystemExit(f"{truth_file} not found: the probe needs the synthetic dataset's ground truth "
                         f"(DATASETS.NAMES {name}, DATASETS.ROOT {dataset_root(cfg)}).") from None
    except ValueError as error:  # more than one training dataset, identities not in attributes.json
        raise SystemExit(f"error: {one_line(error)}") from None
    return truth.attributes, truth.schema


# ------------------------------------------------------------------------------------ probing
def probe(pseudo_labels: np.ndarray, attributes: Sequence[Dict[str, str]], folds: int,
          control: np.ndarray, compare: Optional[np.ndarray] = None) -> dict:
    """Every measurement of the probe (see the module docstring) as a JSON-able dict."""
    names = sorted(attributes[0])
    labels = {name: np.array([a[name] for a in attributes]) for name in names}
    flat = pseudo_labels.reshape(len(pseudo_labels), -1)
    rows = []
    for name in names:
        row = {"attribute": name, "majority": majority_rate(labels[name]),
               "V": probe_accuracy(flat, labels[name], folds),
               "init": probe_accuracy(control.reshape(len(control), -1), labels[name], folds)}
        if compare is not None:
            row["compare"] = probe_accuracy(compare.reshape(len(compare), -1), labels[name], folds)
        rows.append(row)
    per_slot = np.array([[probe_accuracy(pseudo_labels[:, j], labels[name], folds) for name in names]
                         for j in range(pseudo_labels.shape[1])])
    return {"attributes": names, "rows": rows, "per_slot": per_slot.tolist(),
            "majority": [row["majority"] for row in rows]}


# ----------------------------------------------------------------------------------- reporting
def markdown(result: dict) -> str:
    """The two tables: per attribute, and per slot (its best attribute)."""
    compare = result.get("compare_name")
    headers = ["attribute", "majority", "probe on V", "probe on fresh tokens"]
    headers += [f"probe on V of `{compare}`"] if compare else []
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    keys = ["majority", "V", "init"] + (["compare"] if compare else [])
    for row in result["rows"]:
        lines.append("| " + " | ".join([row["attribute"]] + [f"{row[k]:.3f}" for k in keys]) + " |")
    means = [float(np.mean([row[k] for row in result["rows"]])) for k in keys]
    lines.append("| **mean** | " + " | ".join(f"**{m:.3f}**" for m in means) + " |")
    lines += ["", "| slot (word it qualifies) | best attribute | its accuracy | majority | gain |", "|---|---|---|---|---|"]
    gains = np.array(result["per_slot"]) - np.array(result["majority"])[None, :]
    for j, label in enumerate(result["slot_labels"]):
        best = int(gains[j].argmax())
        lines.append(f"| {label} | {result['attributes'][best]} | {result['per_slot'][j][best]:.3f} | "
                     f"{result['majority'][best]:.3f} | {gains[j, best]:+.3f} |")
    return "\n".join(lines)


def heatmap(result: dict, path: str) -> None:
    """Slots x attributes: accuracy of the one-slot probe above the majority rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = np.array(result["per_slot"]) - np.array(result["majority"])[None, :]
    limit = max(float(np.abs(gains).max()), 0.05)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 + 0.62 * len(result["attributes"])), 1.4 + 0.38 * len(gains)), dpi=110)
    image = ax.imshow(gains, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(result["attributes"])))
    ax.set_xticklabels(result["attributes"], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(gains)))
    ax.set_yticklabels(result["slot_labels"], fontsize=8)
    for j in range(gains.shape[0]):
        for a in range(gains.shape[1]):
            ax.text(a, j, f"{gains[j, a]:+.2f}", ha="center", va="center", fontsize=6)
    ax.set_title("one-slot probe accuracy minus majority rate", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def run(argv=None) -> dict:
    """Measure (see the module docstring) and write the files; returns every number (as in probe.json)."""
    args = parse_args(argv)
    import agreid
    from ..modeling.prompts import TEMPLATES

    cfg = agreid.get_agreid_cfg(args.config_file, args.opts)
    attributes, schema = training_attributes(cfg)
    if args.attributes:
        keep = [a.strip() for a in args.attributes.split(",") if a.strip()]
        unknown = [a for a in keep if a not in schema]
        if unknown:
            raise SystemExit(f"--attributes: unknown attribute {unknown[0]!r}; the data has {', '.join(sorted(schema))}")
        attributes = [{a: person[a] for a in keep} for person in attributes]
    pseudo_labels = load_or_exit(args.weights)
    if len(pseudo_labels) != len(attributes):
        raise SystemExit(f"{args.weights} has tokens for {len(pseudo_labels)} identities but the training set of "
                         f"{args.config_file} has {len(attributes)}: wrong config or DATASETS.ROOT?")
    rng = np.random.default_rng(0)
    control = rng.normal(0.0, cfg.MODEL.PROMPT.INIT_STD, size=pseudo_labels.shape).astype(np.float32)
    compare, compare_name = None, None
    if args.compare_weights:
        compare_cfg = agreid.get_agreid_cfg(args.compare_config, args.opts)
        compare = load_or_exit(args.compare_weights)
        if len(compare) != len(attributes):
            raise SystemExit(f"{args.compare_weights} has tokens for {len(compare)} identities, not {len(attributes)}")
        compare_name = args.compare_name or f"template {compare_cfg.MODEL.PROMPT.TEMPLATE}"
    from threadpoolctl import threadpool_limits

    # Hundreds of small fits: BLAS threads only fight each other (and anything else running).
    with threadpool_limits(1):
        result = probe(pseudo_labels, attributes, args.folds, control, compare)
    sentence = TEMPLATES.get(cfg.MODEL.PROMPT.TEMPLATE, cfg.MODEL.PROMPT.TEMPLATE)
    result.update({
        "config": args.config_file, "weights": args.weights, "template": cfg.MODEL.PROMPT.TEMPLATE,
        "sentence": sentence, "slot_labels": slot_labels(sentence), "folds": args.folds,
        "num_ids": len(attributes), "token_shape": list(pseudo_labels.shape[1:]),
        "compare_name": compare_name, "compare_weights": args.compare_weights,
        "invocation": "python tools/probe_attributes.py " + " ".join(sys.argv[1:] if argv is None else argv),
    })
    description = (
        f"Linear probe ({args.folds}-fold stratified, logistic regression) from the pseudo-labels V of "
        f"{len(attributes)} training identities ({pseudo_labels.shape[1]} slots x {pseudo_labels.shape[2]}, "
        f"template `{cfg.MODEL.PROMPT.TEMPLATE}`) to their true attributes. Measured with "
        f"`{result['invocation']}`.")
    figure = args.figure or os.path.join(ex.repo_path(args.output_dir), "probe_heatmap.png")
    ex.publish(result, markdown(result), args.output_dir, "probe", figure, heatmap, args.results_md,
               "probe:attributes", description, "slots x attributes")
    return result


def main(argv=None) -> int:
    """The command line: :func:`run`, exit status 0."""
    run(argv)
    return 0
