"""AG-ReID's losses: SupCon (stage 1), image-to-text CE, attribute losses with the noise mask.

The ID loss (label-smoothed cross-entropy) and the batch-hard triplet loss are fastreid's own
(:func:`fastreid.modeling.losses.cross_entropy_loss`, :func:`~fastreid.modeling.losses.triplet_loss`).
"""
from __future__ import annotations

import re
from typing import Optional, Union

import torch
import torch.nn.functional as F
from fastreid.modeling.losses import cross_entropy_loss
from torch import Tensor

Threshold = Optional[Union[str, float]]

_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")


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


def image_to_text_ce(image_features: Tensor, text_features: Tensor, targets: Tensor, eps: float = 0.0) -> Tensor:
    """L_CE: cross-entropy of the logits ``image_features @ text_features.T`` against the identity.

    Args:
        image_features: (B, D) image features ``f_proj``.
        text_features: (num_ids, D) text feature of every identity's prompt.
        targets: (B,) identities.
        eps: label smoothing (fastreid's ``cross_entropy_loss``; 0 = plain cross-entropy).
    """
    return cross_entropy_loss(image_features @ text_features.t(), targets, eps)


def otsu_threshold(values: Tensor, nbins: int = 256) -> Tensor:
    """Otsu's threshold of ``values``, equal to ``skimage.filters.threshold_otsu(values, nbins)``.

    Same semantics as scikit-image on floating-point input: ``nbins`` equal-width bins between
    the minimum and the maximum (edges computed like ``numpy.linspace`` in the input's dtype), the
    centre of the bin that maximises the between-class variance, and the value itself when all
    values are equal. Integer and half-precision inputs are computed in float32.

    Returns:
        A 0-d tensor of ``values``' floating dtype, on its device (no host synchronisation).
    """
    values = values.detach().flatten()
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    low, high = values.min(), values.max()
    # numpy.linspace: arange * step + start, computed in the input dtype, last edge set to stop.
    step = (high - low) / nbins
    edges = torch.arange(nbins + 1, dtype=values.dtype, device=values.device) * step + low
    edges[-1] = high
    bins = (torch.searchsorted(edges, values, right=True) - 1).clamp_(0, nbins - 1)
    counts = torch.bincount(bins, minlength=nbins).to(torch.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    weighted = counts * centers.to(torch.float64)
    weight_below = counts.cumsum(0)
    weight_above = counts.flip(0).cumsum(0).flip(0)
    mean_below = weighted.cumsum(0) / weight_below
    mean_above = weighted.flip(0).cumsum(0).flip(0) / weight_above
    between_variance = weight_below[:-1] * weight_above[1:] * (mean_below[:-1] - mean_above[1:]) ** 2
    threshold = centers[between_variance.argmax()]
    return torch.where(high == low, low, threshold)


def noise_mask(similarities: Tensor, threshold: Threshold) -> Tensor:
    """D(i, j) of AG-ReID: 1 where a similarity is above the threshold gamma, else 0.

    Args:
        similarities: (B, r) cosine similarities between predicted tokens and pseudo-labels.
        threshold: ``"otsu"`` (Otsu's threshold over all B*r values), ``"p50"``/``"p75"``/``"p90"``
            (any ``"pNN"``: that percentile of the values), a number (or its string), or ``-1`` /
            ``None`` for no mask (holistic data).

    Returns:
        A mask of 0.0 and 1.0 with the shape and dtype of ``similarities``.
    """
    similarities = similarities.detach()
    gamma = parse_threshold(threshold)
    if gamma is None:
        return torch.ones_like(similarities)
    if gamma == "otsu":
        cut = otsu_threshold(similarities)
    elif isinstance(gamma, str):
        quantile = float(_PERCENTILE.fullmatch(gamma).group(1)) / 100
        cut = torch.quantile(similarities.flatten().float(), quantile)
    else:
        cut = gamma
    return (similarities > cut).to(similarities.dtype)


def parse_threshold(threshold: Threshold) -> Threshold:
    """Normalise a noise-mask threshold: ``"otsu"``, ``"pNN"``, a float, or None for no mask.

    Raises:
        ValueError: for anything else.
    """
    if threshold is None:
        return None
    if isinstance(threshold, str):
        text = threshold.strip().lower()
        if text == "otsu":
            return text
        match = _PERCENTILE.fullmatch(text)
        if match:
            if not 0 < float(match.group(1)) < 100:
                raise ValueError(f"Noise-mask percentile {threshold!r} must be in (0, 100).")
            return text
        try:
            threshold = float(text)
        except ValueError:
            raise ValueError(
                f"Noise-mask threshold {threshold!r}: use 'otsu', 'p50', 'p75', 'p90', a number, or -1 (no mask)."
            ) from None
    threshold = float(threshold)
    return None if threshold == -1 else threshold


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
