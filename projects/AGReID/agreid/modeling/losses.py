"""AG-ReID's losses: SupCon (stage 1), image-to-text CE, attribute losses with the noise mask
(:mod:`agreid.modeling.noise_mask`).

The ID loss (label-smoothed cross-entropy) and the batch-hard triplet loss are fastreid's own
(:func:`fastreid.modeling.losses.cross_entropy_loss`, :func:`~fastreid.modeling.losses.triplet_loss`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from fastreid.modeling.losses import cross_entropy_loss
from torch import Tensor

# The noise mask lives in its own module; re-exported here, where the losses use it.
from .noise_mask import Threshold, noise_mask, otsu_threshold, parse_threshold  # noqa: F401


def supcon_loss(anchors: Tensor, contrasts: Tensor, anchor_labels: Tensor, contrast_labels: Tensor) -> Tensor:
    """Supervised contrastive loss of CLIP-ReID (temperature 1, unnormalised features).

    ``logits = anchors @ contrasts.T`` (raw dot products), row maximum subtracted; the loss is
    minus the mean over anchors of the mean log-probability of the contrasts of the same identity.
    ``L_feat = supcon_loss(f_M, f_T, y, y) + supcon_loss(f_T, f_M, y, y)``.

    Args:
        anchors: (N, D) features, one row per anchor.
        contrasts: (M, D) features to contrast with.
        anchor_labels: (N,) identities of the anchors.
        contrast_labels: (M,) identities of the contrasts; every anchor needs a positive.
    """
    positives = (anchor_labels.unsqueeze(1) == contrast_labels.unsqueeze(0)).to(anchors.dtype)  # (N, M)
    logits = anchors @ contrasts.t()
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    mean_log_prob_positive = (positives * log_prob).sum(dim=1) / positives.sum(dim=1)
    return -mean_log_prob_positive.mean()


# Forms of L_CE's logits (MODEL.LOSSES.I2T.FORM): "raw" is the paper's (and CLIP-ReID's).
I2T_FORMS = ("raw", "cosine")


def check_i2t_form(form: str) -> str:
    """The L_CE form named by ``MODEL.LOSSES.I2T.FORM`` (any case), checked.

    Raises:
        ValueError: naming the key and the valid forms, for any other name.
    """
    name = str(form).strip().lower()
    if name not in I2T_FORMS:
        raise ValueError(
            f"MODEL.LOSSES.I2T.FORM must be one of {', '.join(repr(f) for f in I2T_FORMS)}, not {form!r}."
        )
    return name


def image_to_text_ce(image_features: Tensor, text_features: Tensor, targets: Tensor, eps: float = 0.0,
                     form: str = "raw", logit_scale: float = 1.0) -> Tensor:
    """L_CE: cross-entropy of image-to-text logits against the identity.

    ``form="raw"`` (the paper's): logits ``image_features @ text_features.T``, raw dot products,
    so the effective temperature is ``|f| |T|`` (it moves with the norms, e.g. with the template).
    ``form="cosine"``: logits ``logit_scale * normalize(f) @ normalize(T).T``, cosine similarities
    times a fixed scale; ``logit_scale`` is ignored by the raw form.

    Args:
        image_features: (B, D) image features ``f_proj``.
        text_features: (num_ids, D) text feature of every identity's prompt.
        targets: (B,) identities.
        eps: label smoothing (fastreid's ``cross_entropy_loss``; 0 = plain cross-entropy).
        form: ``"raw"`` or ``"cosine"`` (:data:`I2T_FORMS`).
        logit_scale: the scale of the cosine logits (> 0).
    """
    if check_i2t_form(form) == "cosine":
        if not logit_scale > 0:
            raise ValueError(f"The cosine image-to-text loss needs a positive logit scale, not {logit_scale!r}.")
        logits = logit_scale * (F.normalize(image_features, dim=1) @ F.normalize(text_features, dim=1).t())
    else:
        logits = image_features @ text_features.t()
    return cross_entropy_loss(logits, targets, eps)


def attribute_loss(pred: Tensor, target: Tensor, threshold: Threshold = None) -> Tensor:
    """L_attrA (no threshold) and L_attrG (with the noise mask) of AG-ReID.

    ``-(1/r) * sum_i sum_j D(i, j) * cos(a_j^i, v_j^{k(i)})``: a sum over the batch and a mean
    over the r slots; D is all ones when ``threshold`` is None or -1.

    Args:
        pred: (B, r, W) predicted attribute tokens ``A = E_A(f_proj)``.
        target: (B, r, W) pseudo-labels ``V[k(i)]`` of each image's identity.
        threshold: see :func:`noise_mask`.
    """
    similarities = F.cosine_similarity(pred, target, dim=-1)  # (B, r)
    mask = noise_mask(similarities, threshold)
    return -(mask * similarities).sum() / similarities.shape[1]
