"""Diagnostics of the text features T that stage 2's image-to-text loss L_CE classifies with.

At the start of stage 2 the model encodes every training identity's prompt once
(:meth:`agreid.modeling.AGReID.build_text_features`) into the table T (num_ids x embed_dim);
L_CE is then the label-smoothed cross-entropy of the logits ``f_proj @ T.T`` (docs/METHOD.md,
eq. 10). With raw dot products the norms of T and f set the softmax temperature, and the
template decides T. For one or more trained runs this module measures, on the training set:

- ``T_norm``: mean |T_k| over identities (and its standard deviation, min and max);
- ``f_norm``: mean |f| of the training images' ``f_proj`` (test transforms, eval mode, each
  image with its training camera's SIE row: the feature L_CE scores, without augmentation);
- ``cos_all``: mean cosine between the T rows of two different identities (all pairs);
- ``cos_hard``: the same over *hard pairs*, identities that share their visible attributes,
  defined here as equal ``upper_color``, ``lower_color`` and ``shoes`` in the synthetic
  dataset's ``attributes.json`` (:data:`VISIBLE_ATTRIBUTES`: the clothing colours, which the
  tiny CLIP tells apart; docs/SYNTHCLIP.md). ``cos_other`` is the rest of the pairs, and
  ``cos_twins`` the generator's own ``hard_pairs`` (identities identical but for one attribute);
- ``top1``: identity top-1 accuracy of the training images through T, ``argmax_k f . T_k``
  (``top1_cosine``: ``argmax_k cos(f, T_k)``, blind to the row norms);
- ``lce``: L_CE on the training images as trained (its label smoothing
  ``MODEL.LOSSES.CE.EPSILON``, the model's logit form; not multiplied by ``MODEL.LOSSES.I2T.SCALE``,
  which is reported as ``i2t_scale``), the mean over the images;
- ``lce_rescaled``: the same with T rescaled as a whole to a reference mean norm X,
  ``T * X / mean_k |T_k|`` (directions and relative row norms kept, only the temperature moves),
  e.g. X = the baseline run's mean |T|. With X = the run's own mean norm it equals ``lce``; top-1
  does not change under it. (With ``MODEL.LOSSES.I2T.FORM cosine`` the logits are normalised, so
  no rescaling moves L_CE; ``i2t_form`` records the form.)

T is the table the checkpoint stores (what stage 2 used); a checkpoint saved before stage 2
(``model_stage1.pth``) holds an empty table, which is then built from its prompts exactly as the
phase switch builds it (``T_source``). Identities are rows in the trainer's order (fastreid's
``CommDataset`` relabelling of the training set: ``pid_dict``).

Command line (``tools/diagnose_text_features.py``)::

    python tools/diagnose_text_features.py --runs logs/ablations/small/runs/baseline/seed0 \\
        logs/ablations/small/runs/at/seed0 --baseline logs/ablations/small/runs/baseline/seed0 \\
        --output logs/text_features.json

prints one markdown row per run and writes every number as JSON.
"""
from __future__ import annotations

import inspect
import logging
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .runs import (
    ATTRIBUTES_FILE,
    TrainedRun,
    dataset_of,
    encode_training_images,
    ground_truth,
    identity_attributes,
    identity_rows,
    training_set,
)

logger = logging.getLogger(__name__)

__all__ = [
    "VISIBLE_ATTRIBUTES",
    "describe",
    "diagnose",
    "diagnose_run",
    "hard_pairs",
    "i2t_loss",
    "markdown",
    "mean_text_norm",
    "pair_cosines",
    "rescaled",
    "text_features_of",
]

# Two identities are a hard pair when these attributes are equal (the visible clothing colours).
VISIBLE_ATTRIBUTES = ("upper_color", "lower_color", "shoes")


# ------------------------------------------------------------------------------------ the table
@torch.no_grad()
def text_features_of(model) -> "tuple[torch.Tensor, str]":
    """T (num_ids, embed_dim) of a trained model, float32 on the CPU, and where it came from.

    The checkpoint's table when it holds one (``"checkpoint"``); built from the prompts by the
    model's own :meth:`build_text_features` when it is all zeros, as in a checkpoint saved before
    stage 2 (``"built"``).
    """
    if not hasattr(model, "text_features") or not hasattr(model, "build_text_features"):
        raise ValueError(f"{type(model).__name__} has no text-feature table: not an AG-ReID/CLIP-ReID model")
    table = model.text_features
    if bool((table == 0).all()):
        return model.build_text_features().detach().float().cpu().clone(), "built"
    return table.detach().float().cpu().clone(), "checkpoint"


def mean_text_norm(text_features: torch.Tensor) -> float:
    """Mean L2 norm of the rows of T."""
    return float(text_features.float().norm(dim=1).mean())


def rescaled(text_features: torch.Tensor, reference_norm: float) -> torch.Tensor:
    """T scaled as a whole so that its mean row norm is ``reference_norm``."""
    if not reference_norm > 0:
        raise ValueError(f"the reference norm must be positive, not {reference_norm!r}")
    return text_features * (reference_norm / mean_text_norm(text_features))


def i2t_loss(model, image_features: torch.Tensor, text_features: torch.Tensor, targets: torch.Tensor) -> float:
    """L_CE of ``model`` (its label smoothing and logit form), unweighted, mean over the images.

    The same function the model's stage-2 loss calls
    (:func:`agreid.modeling.losses.image_to_text_ce`), with the model's ``loss_kwargs``.
    """
    from ..modeling.losses import image_to_text_ce

    eps = model.loss_kwargs["ce"]["eps"]
    settings = model.loss_kwargs.get("i2t", {})
    accepted = inspect.signature(image_to_text_ce).parameters
    extra = {key: settings[key] for key in ("form", "logit_scale") if key in settings and key in accepted}
    loss = image_to_text_ce(image_features.float(), text_features.float(), targets, eps, **extra)
    return float(loss)


# ------------------------------------------------------------------------------------- pairs
def hard_pairs(attributes: Sequence[Dict[str, str]], keys: Sequence[str] = VISIBLE_ATTRIBUTES) -> np.ndarray:
    """(num_ids, num_ids) booleans: identities k != l whose ``keys`` attributes are all equal."""
    signature = [tuple(a[key] for key in keys) for a in attributes]
    same = np.array([[s == t for t in signature] for s in signature], dtype=bool)
    np.fill_diagonal(same, False)
    return same


def twin_pairs(rows: Sequence[str], truth: dict) -> np.ndarray:
    """(num_ids, num_ids) booleans: the generator's ``hard_pairs`` among the training identities."""
    index = {key: k for k, key in enumerate(rows)}
    twins = np.zeros((len(rows), len(rows)), dtype=bool)
    for first, second, _ in truth.get("hard_pairs", []):
        if first in index and second in index:
            twins[index[first], index[second]] = twins[index[second], index[first]] = True
    return twins


def pair_cosines(text_features: torch.Tensor) -> np.ndarray:
    """(num_ids, num_ids) cosine similarities between the rows of T."""
    normed = F.normalize(text_features.double(), dim=1)
    return (normed @ normed.t()).numpy()


def _mean_over(cosines: np.ndarray, pairs: np.ndarray) -> Optional[float]:
    upper = np.triu(pairs, k=1)
    return float(cosines[upper].mean()) if upper.any() else None


# ----------------------------------------------------------------------------------- measuring
def diagnose_run(run: TrainedRun, reference_norm: Optional[float] = None) -> dict:
    """Every measurement of the module docstring for one run, as a JSON-able dict.

    Raises:
        GroundTruthMissingError: the training set is not the synthetic dataset.
        ValueError: the run's model has no text features, or more than one training dataset.
    """
    cfg, model = run.cfg, run.model
    if len(cfg.DATASETS.NAMES) != 1:
        raise ValueError(f"{run.weights}: trained on {list(cfg.DATASETS.NAMES)}; the diagnostics need one "
                         f"(synthetic) training dataset")
    ground_truth(dataset_of(cfg).dataset_dir, ATTRIBUTES_FILE)  # before anything slow
    text_features, source = text_features_of(model)
    train_set = training_set(cfg)
    rows = identity_rows(train_set)
    if len(rows) != text_features.shape[0]:
        raise ValueError(f"{run.weights}: {text_features.shape[0]} rows of text features but "
                         f"{len(rows)} training identities in {cfg.DATASETS.NAMES[0]}")
    rows, attributes, truth = identity_attributes(cfg, train_set)

    features, targets = encode_training_images(model, cfg, train_set)
    norms = text_features.norm(dim=1)
    cosines = pair_cosines(text_features)
    everyone = ~np.eye(len(rows), dtype=bool)
    hard = hard_pairs(attributes)
    twins = twin_pairs(rows, truth)
    logits = features.double() @ text_features.double().t()
    cosine_logits = F.normalize(features.double(), dim=1) @ F.normalize(text_features.double(), dim=1).t()
    t_norm = float(norms.mean())
    lce = i2t_loss(model, features, text_features, targets)
    result = {
        "name": run.name,
        "weights": run.weights,
        "template": cfg.MODEL.PROMPT.TEMPLATE,
        "attribute_encoder": bool(cfg.MODEL.ATTR.ENABLED),
        "T_source": source,
        "num_ids": len(rows),
        "num_images": int(features.shape[0]),
        "T_norm": t_norm,
        "T_norm_std": float(norms.std()) if len(rows) > 1 else 0.0,
        "T_norm_min": float(norms.min()),
        "T_norm_max": float(norms.max()),
        "f_norm": float(features.norm(dim=1).mean()),
        "cos_all": _mean_over(cosines, everyone),
        "cos_hard": _mean_over(cosines, hard),
        "cos_other": _mean_over(cosines, everyone & ~hard),
        "cos_twins": _mean_over(cosines, twins),
        "hard_pairs": int(np.triu(hard, k=1).sum()),
        "twin_pairs": int(np.triu(twins, k=1).sum()),
        "hard_pair_attributes": list(VISIBLE_ATTRIBUTES),
        "top1": float((logits.argmax(dim=1) == targets).double().mean()),
        "top1_cosine": float((cosine_logits.argmax(dim=1) == targets).double().mean()),
        "lce": lce,
        "lce_eps": float(model.loss_kwargs["ce"]["eps"]),
        "i2t_scale": float(model.loss_kwargs.get("i2t", {}).get("scale", 1.0)),
        "i2t_form": str(model.loss_kwargs.get("i2t", {}).get("form", "raw")),
        "reference_norm": reference_norm,
        "lce_rescaled": None,
    }
    if reference_norm is not None:
        result["lce_rescaled"] = i2t_loss(model, features, rescaled(text_features, reference_norm), targets)
    return result


def diagnose(runs: Sequence[TrainedRun], reference_norm: Optional[float] = None) -> List[dict]:
    """:func:`diagnose_run` of every run, with the same reference norm."""
    return [diagnose_run(run, reference_norm) for run in runs]


# ------------------------------------------------------------------------------------ reporting
def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown(results: Sequence[dict]) -> str:
    """One row per run (the numbers of :func:`diagnose_run`)."""
    reference = next((r["reference_norm"] for r in results if r.get("reference_norm") is not None), None)
    rescaled_header = f"L_CE at mean ‖T‖ = {reference:.3f}" if reference is not None else "L_CE rescaled"
    header = ["run", "template", "E_A", "T", "ids / images", "mean ‖T‖", "mean ‖f‖", "cos T, all pairs",
              "cos T, hard pairs (n)", "top-1 f·T", "L_CE", rescaled_header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---|" + "---:|" * (len(header) - 4)]
    for r in results:
        cells = [r["name"], f"`{r['template']}`", "✓" if r["attribute_encoder"] else "", r["T_source"],
                 f"{r['num_ids']} / {r['num_images']}", _number(r["T_norm"]), _number(r["f_norm"]),
                 _number(r["cos_all"]), f"{_number(r['cos_hard'])} ({r['hard_pairs']})",
                 f"{100 * r['top1']:.1f}%", _number(r["lce"]), _number(r["lce_rescaled"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(results: Sequence[dict]) -> str:
    """The lines under the table: what a hard pair is and how L_CE was computed."""
    forms = sorted({r["i2t_form"] for r in results})
    eps = sorted({r["lce_eps"] for r in results})
    return (f"Hard pairs: training identities with equal {', '.join(VISIBLE_ATTRIBUTES)} (attributes.json). "
            f"L_CE: label smoothing {', '.join(f'{e:g}' for e in eps)}, logits {', '.join(forms)}, mean over the "
            f"un-augmented training images, not multiplied by MODEL.LOSSES.I2T.SCALE; rescaled: T x "
            f"(reference / mean ‖T‖). T: the checkpoint's table, or built from the prompts for a checkpoint "
            f"saved before stage 2.")

