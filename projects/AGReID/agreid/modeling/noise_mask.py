"""The noise mask D of L_attrG and its threshold gamma: parsing, Otsu's method, percentiles.

``MODEL.ATTR.THRESHOLD`` names the rule (``otsu``, ``pNN``, ``fixed`` with
``MODEL.ATTR.THRESHOLD_VALUE``, or ``none``); :func:`threshold_from_config` turns it into the
value :func:`noise_mask` takes; :func:`parse_threshold` checks and normalises such a value.
"""
from __future__ import annotations

import re
from typing import Optional, Union

import torch
from torch import Tensor

Threshold = Optional[Union[str, float]]

_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")

__all__ = ["Threshold", "mask_threshold", "noise_mask", "otsu_threshold", "parse_threshold", "threshold_from_config"]


def threshold_from_config(cfg) -> Threshold:
    """gamma of the noise mask from ``MODEL.ATTR.THRESHOLD`` (+ ``THRESHOLD_VALUE`` when "fixed").

    Two keys because yacs reads a quoted number as a number, never as a string.

    Raises:
        ValueError: naming the key and the value, for an unknown rule.
    """
    method = cfg.MODEL.ATTR.THRESHOLD.strip().lower()
    if method == "none":
        return None
    try:
        if method == "fixed":
            return parse_threshold(float(cfg.MODEL.ATTR.THRESHOLD_VALUE))
        if method == "otsu" or _PERCENTILE.fullmatch(method):
            return parse_threshold(method)
    except ValueError as error:
        key = "MODEL.ATTR.THRESHOLD_VALUE" if method == "fixed" else "MODEL.ATTR.THRESHOLD"
        raise ValueError(f"{key}: {error}") from None
    raise ValueError(f"MODEL.ATTR.THRESHOLD {cfg.MODEL.ATTR.THRESHOLD!r}: use otsu, p50, p75, p90, fixed "
                     f"(with MODEL.ATTR.THRESHOLD_VALUE) or none.")


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
    cut = mask_threshold(similarities, threshold)
    if cut is None:
        return torch.ones_like(similarities)
    return (similarities > cut).to(similarities.dtype)


def mask_threshold(similarities: Tensor, threshold: Threshold) -> Optional[Union[Tensor, float]]:
    """The cut gamma that :func:`noise_mask` applies to ``similarities`` (a batch's B*r values).

    Returns:
        A 0-d tensor for ``"otsu"`` and ``"pNN"`` (computed from the values), the number itself
        for a fixed threshold, None for no mask.
    """
    gamma = parse_threshold(threshold)
    if gamma == "otsu":
        return otsu_threshold(similarities.detach())
    if isinstance(gamma, str):
        quantile = float(_PERCENTILE.fullmatch(gamma).group(1)) / 100
        return torch.quantile(similarities.detach().flatten().float(), quantile)
    return gamma


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
