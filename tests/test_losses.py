"""AG-ReID's losses against values worked out by hand, and Otsu against scikit-image."""
import math

import numpy as np
import pytest
import torch
from skimage.exposure import histogram
from skimage.filters import threshold_otsu

import agreid  # noqa: F401  (patches fastreid before agreid.modeling imports it)
from agreid.modeling.losses import (
    attribute_loss,
    image_to_text_ce,
    noise_mask,
    otsu_threshold,
    parse_threshold,
    supcon_loss,
)

LOG_1_PLUS_E = math.log(1 + math.e)


def test_supcon_both_directions_match_hand_values():
    # f_M: m1 = (1, 0) id 0, m2 = (0, 1) id 1; f_T: t1 = (1, 1) id 0, t2 = (0, 2) id 1.
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    # image -> text logits: m1 . [t1, t2] = [1, 0], m2 . [t1, t2] = [1, 2]
    #   row 1: 1 - log(e^1 + e^0) = 1 - log(1 + e)
    #   row 2: 2 - log(e^1 + e^2) = 2 - (1 + log(1 + e)) = 1 - log(1 + e)
    i2t = -(1 - LOG_1_PLUS_E)
    # text -> image logits: t1 . [m1, m2] = [1, 1], t2 . [m1, m2] = [0, 2]
    #   row 1: 1 - log(2e) = -log 2;  row 2: 2 - log(1 + e^2)
    t2i = -((-math.log(2)) + (2 - math.log(1 + math.e ** 2))) / 2
    assert supcon_loss(image, text, labels, labels).item() == pytest.approx(i2t, abs=1e-6)
    assert supcon_loss(text, image, labels, labels).item() == pytest.approx(t2i, abs=1e-6)
    assert i2t == pytest.approx(0.313262, abs=1e-6) and t2i == pytest.approx(0.410038, abs=1e-6)


def test_supcon_averages_over_several_positives_and_uses_raw_dot_products():
    # One anchor (1, 0) of id 0; contrasts (2, 0) id 0, (0, 0) id 0, (1, 0) id 1.
    # logits [2, 0, 1] -> minus max [0, -2, -1]; lse = log(1 + e^-2 + e^-1)
    # mean log-prob over the two positives = (0 - lse + -2 - lse) / 2 = -1 - lse
    anchor = torch.tensor([[1.0, 0.0]])
    contrasts = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    expected = 1 + math.log(1 + math.exp(-2) + math.exp(-1))
    loss = supcon_loss(anchor, contrasts, torch.tensor([0]), torch.tensor([0, 0, 1]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # Unnormalised: scaling the features changes the loss (a cosine loss would not change).
    scaled = supcon_loss(anchor * 3, contrasts, torch.tensor([0]), torch.tensor([0, 0, 1]))
    assert scaled.item() != pytest.approx(expected, abs=1e-3)


def test_image_to_text_ce_hand_value():
    # logits = (1, 0) . [(1, 0), (0, 1), (-1, 0)] = [1, 0, -1]; target 0.
    image = torch.tensor([[1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    log_norm = math.log(math.e + 1 + math.exp(-1))
    log_probs = [1 - log_norm, 0 - log_norm, -1 - log_norm]
    assert image_to_text_ce(image, text, torch.tensor([0])).item() == pytest.approx(-log_probs[0], abs=1e-6)
    # fastreid's label smoothing eps = 0.1: 0.9 on the target, 0.1 / (3 - 1) on the others.
    smoothed = -(0.9 * log_probs[0] + 0.05 * log_probs[1] + 0.05 * log_probs[2])
    assert image_to_text_ce(image, text, torch.tensor([0]), eps=0.1).item() == pytest.approx(smoothed, abs=1e-6)


def _attribute_example():
    # B = 2 images, r = 2 slots; cosines: [[1, 0], [1/sqrt(2), -1]].
    pred = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]])
    target = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [-1.0, 0.0]]])
    return pred, target


@pytest.mark.parametrize("threshold", [None, -1, "-1", -1.0])
def test_attribute_loss_without_mask_is_l_attr_a(threshold):
    # -(1/r) * sum = -(1 + 0 + 0.7071 - 1) / 2
    pred, target = _attribute_example()
    expected = -(1 + 0 + 1 / math.sqrt(2) - 1) / 2
    assert attribute_loss(pred, target, threshold).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("threshold", [0.5, "0.5", "p50"])
def test_attribute_loss_with_mask_is_l_attr_g(threshold):
    # gamma 0.5, or the median of [1, 0, 0.7071, -1] = (0 + 0.7071) / 2: keeps 1 and 0.7071.
    pred, target = _attribute_example()
    expected = -(1 + 1 / math.sqrt(2)) / 2
    assert attribute_loss(pred, target, threshold).item() == pytest.approx(expected, abs=1e-6)


def test_attribute_loss_masked_slots_get_no_gradient():
    pred, target = _attribute_example()
    pred.requires_grad_(True)
    attribute_loss(pred, target, 0.5).backward()
    assert pred.grad[0, 1].abs().sum() == 0 and pred.grad[1, 1].abs().sum() == 0
    assert pred.grad[1, 0].abs().sum() > 0


SIMILARITIES = torch.arange(10, dtype=torch.float32).reshape(2, 5) / 10  # 0.0 .. 0.9


@pytest.mark.parametrize(
    "threshold, num_kept",
    [
        ("p50", 5),  # median 0.45 -> 0.5 .. 0.9
        ("p75", 3),  # position 6.75 -> 0.675 -> 0.7, 0.8, 0.9
        ("p90", 1),  # position 8.1 -> 0.81 -> 0.9
        (0.25, 7),  # 0.3 .. 0.9
        ("0.25", 7),
        (-1, 10),  # no mask
        ("-1", 10),
        (None, 10),
    ],
)
def test_noise_mask_thresholds(threshold, num_kept):
    mask = noise_mask(SIMILARITIES, threshold)
    assert mask.shape == SIMILARITIES.shape and mask.dtype == SIMILARITIES.dtype
    assert int(mask.sum()) == num_kept
    assert torch.equal(mask.flatten()[-num_kept:], torch.ones(num_kept))  # the largest ones are kept


def test_noise_mask_otsu_splits_two_groups():
    similarities = torch.tensor([[0.1, 0.12, 0.15], [0.8, 0.82, 0.85]])
    mask = noise_mask(similarities, "otsu")
    assert torch.equal(mask, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    expected = similarities.numpy() > threshold_otsu(similarities.numpy())
    assert np.array_equal(mask.numpy().astype(bool), expected)


@pytest.mark.parametrize("bad", ["median", "p0", "p100", "p150", ""])
def test_bad_thresholds_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_threshold(bad)


def _random_values(rng, trial):
    size = int(rng.integers(2, 2000))
    kind = trial % 5
    if kind == 0:
        return rng.random(size)
    if kind == 1:
        return rng.normal(size=size)
    if kind == 2:  # two groups, like kept and occluded slots
        return np.concatenate([rng.normal(-0.3, 0.1, size), rng.normal(0.5, 0.2, size // 3 + 1)])
    if kind == 3:  # many repeated values
        return np.round(rng.normal(size=size), 1)
    return rng.uniform(-1, 1, size) ** 3


def test_otsu_equals_scikit_image_float64():
    rng = np.random.default_rng(0)
    for trial in range(1000):
        values = _random_values(rng, trial)
        assert otsu_threshold(torch.from_numpy(values)).item() == threshold_otsu(values), trial


def test_otsu_equals_scikit_image_float32():
    # scikit-image sums the class moments in float32; this function in float64. They pick the
    # same bin except where scikit-image's float32 rounding makes two bins tie exactly.
    rng = np.random.default_rng(1)
    num_ties = 0
    for trial in range(1000):
        values = _random_values(rng, trial).astype(np.float32)
        ours, theirs = otsu_threshold(torch.from_numpy(values)).item(), threshold_otsu(values)
        if ours == theirs:
            continue
        counts, centers = histogram(values, 256, source_range="image")
        counts = counts.astype(np.float32)
        weight1, weight2 = np.cumsum(counts), np.cumsum(counts[::-1])[::-1]
        mean1 = np.cumsum(counts * centers) / weight1
        mean2 = (np.cumsum((counts * centers)[::-1]) / weight2[::-1])[::-1]
        variance = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
        assert variance[list(centers).index(np.float32(ours))] == variance.max(), trial
        num_ties += 1
    assert num_ties <= 5


def test_otsu_of_constant_values_is_that_value():
    assert otsu_threshold(torch.full((7,), 0.25)).item() == 0.25 == threshold_otsu(np.full(7, 0.25))
