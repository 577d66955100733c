"""AG-ReID's losses against values worked out by hand, and Otsu against scikit-image."""
import math
import os

import numpy as np
import pytest
import torch
from skimage.exposure import histogram
from skimage.filters import threshold_otsu

import agreid  # noqa: F401  (patches fastreid before agreid.modeling imports it)
from fastreid.modeling.losses import cross_entropy_loss
from agreid.modeling.losses import (
    attribute_loss,
    check_i2t_form,
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


def test_image_to_text_ce_raw_form_is_the_default_and_ignores_the_logit_scale():
    image = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    targets = torch.tensor([0, 1])
    default = image_to_text_ce(image, text, targets, eps=0.1)
    assert torch.equal(image_to_text_ce(image, text, targets, eps=0.1, form="raw", logit_scale=30.0), default)
    assert torch.equal(default, cross_entropy_loss(image @ text.t(), targets, 0.1))


# A 2x3 example: f (2 images x 3 dims), T (2 identities x 3 dims), worked out by hand.
#   f1 = (3, 0, 4), |f1| = 5 -> (0.6, 0, 0.8);   f2 = (0, 2, 0) -> (0, 1, 0)
#   t0 = (0, 0, 10) -> (0, 0, 1);               t1 = (0, 3, 4), |t1| = 5 -> (0, 0.6, 0.8)
#   cosines: f1 . [t0, t1] = [0.8, 0.64], f2 . [t0, t1] = [0, 0.6]; targets [0, 1]
#   scale 10: logits [[8, 6.4], [0, 6]]
#   row 1: -log(e^8 / (e^8 + e^6.4)) = log(1 + e^-1.6) = 0.1838968...
#   row 2: -log(e^6 / (e^0 + e^6))   = log(1 + e^-6)   = 0.0024757...
COSINE_F = torch.tensor([[3.0, 0.0, 4.0], [0.0, 2.0, 0.0]])
COSINE_T = torch.tensor([[0.0, 0.0, 10.0], [0.0, 3.0, 4.0]])
COSINE_TARGETS = torch.tensor([0, 1])


def test_image_to_text_ce_cosine_form_hand_value():
    expected = (math.log(1 + math.exp(-1.6)) + math.log(1 + math.exp(-6))) / 2
    assert expected == pytest.approx(0.0931882, abs=1e-7)
    loss = image_to_text_ce(COSINE_F, COSINE_T, COSINE_TARGETS, form="cosine", logit_scale=10.0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # fastreid's label smoothing with 2 classes, eps 0.1: 0.9 on the target, 0.1 on the other;
    # row 1: 0.1 * 1.6 + log(1 + e^-1.6), row 2: 0.1 * 6 + log(1 + e^-6).
    smoothed = (0.1 * 1.6 + math.log(1 + math.exp(-1.6)) + 0.1 * 6 + math.log(1 + math.exp(-6))) / 2
    assert smoothed == pytest.approx(0.4731882, abs=1e-7)
    loss = image_to_text_ce(COSINE_F, COSINE_T, COSINE_TARGETS, eps=0.1, form="cosine", logit_scale=10.0)
    assert loss.item() == pytest.approx(smoothed, abs=1e-6)
    # Norms do not matter to the cosine form; the raw form of the same numbers is another loss.
    rescaled = image_to_text_ce(COSINE_F * 7, COSINE_T / 3, COSINE_TARGETS, form="cosine", logit_scale=10.0)
    assert rescaled.item() == pytest.approx(expected, abs=1e-6)
    assert image_to_text_ce(COSINE_F, COSINE_T, COSINE_TARGETS).item() != pytest.approx(expected, abs=1e-3)
    assert check_i2t_form(" Cosine ") == "cosine"


@pytest.mark.parametrize("bad", ["dot", "cos", "", "normalised"])
def test_bad_i2t_form_names_the_key_and_the_forms(bad):
    with pytest.raises(ValueError, match=r"MODEL\.LOSSES\.I2T\.FORM must be one of 'raw', 'cosine'"):
        check_i2t_form(bad)
    with pytest.raises(ValueError, match=r"MODEL\.LOSSES\.I2T\.FORM"):
        image_to_text_ce(COSINE_F, COSINE_T, COSINE_TARGETS, form=bad)


def test_cosine_form_needs_a_positive_scale():
    with pytest.raises(ValueError, match="positive logit scale"):
        image_to_text_ce(COSINE_F, COSINE_T, COSINE_TARGETS, form="cosine", logit_scale=0.0)


# ------------------------------------------------------------------- L_CE's form in the model
def _i2t_model(*opts, logit_scale=None, monkeypatch=None):
    """The tiny synthetic model (random init, 64x32) with ``opts``; the CLIP's own logit scale
    set to ``logit_scale`` when given."""
    from fastreid.modeling import build_model

    from _tiny_model import tiny_cfg

    if logit_scale is not None:
        from agreid.modeling import clip_loader

        create_clip = clip_loader.create_clip

        def create_clip_with_scale(*args, **kwargs):
            model = create_clip(*args, **kwargs)
            with torch.no_grad():
                model.logit_scale.fill_(math.log(logit_scale))
            return model

        monkeypatch.setattr(clip_loader, "create_clip", create_clip_with_scale)
    torch.manual_seed(0)
    return build_model(tiny_cfg(*opts))


def test_logit_scale_zero_is_the_clip_models_own(monkeypatch):
    # The default is 0: a random-init CLIP has open_clip's initial scale, 1 / 0.07.
    model = _i2t_model("MODEL.LOSSES.I2T.FORM", "cosine")
    assert model.loss_kwargs["i2t"]["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)
    # A CLIP whose learned logit_scale is log(23.5), e.g. SynthCLIP's after pretraining.
    model = _i2t_model("MODEL.LOSSES.I2T.FORM", "cosine", "MODEL.LOSSES.I2T.LOGIT_SCALE", "0.0",
                       logit_scale=23.5, monkeypatch=monkeypatch)
    assert model.loss_kwargs["i2t"]["form"] == "cosine"
    assert model.loss_kwargs["i2t"]["logit_scale"] == pytest.approx(23.5, rel=1e-6)
    model = _i2t_model("MODEL.LOSSES.I2T.FORM", "cosine", "MODEL.LOSSES.I2T.LOGIT_SCALE", "30.0",
                       logit_scale=23.5, monkeypatch=monkeypatch)
    assert model.loss_kwargs["i2t"]["logit_scale"] == 30.0


def test_i2t_defaults_are_the_papers_raw_form():
    import agreid

    cfg = agreid.get_agreid_cfg()
    assert cfg.MODEL.LOSSES.I2T.FORM == "raw" and cfg.MODEL.LOSSES.I2T.LOGIT_SCALE == 0.0
    assert _i2t_model("MODEL.LOSSES.I2T.FORM", "raw").loss_kwargs["i2t"]["form"] == "raw"
    # The synthetic config the tiny model is built from chooses the cosine form, and it reaches the model.
    assert _i2t_model().loss_kwargs["i2t"]["form"] == "cosine"


def test_bad_i2t_settings_stop_the_build():
    with pytest.raises(ValueError, match=r"MODEL\.LOSSES\.I2T\.FORM must be one of 'raw', 'cosine', not 'dot'"):
        _i2t_model("MODEL.LOSSES.I2T.FORM", "dot")
    with pytest.raises(ValueError, match=r"MODEL\.LOSSES\.I2T\.LOGIT_SCALE must be a positive number"):
        _i2t_model("MODEL.LOSSES.I2T.FORM", "cosine", "MODEL.LOSSES.I2T.LOGIT_SCALE", "-1.0")


def test_a_guide_step_with_the_cosine_form_trains_the_image_encoder(monkeypatch):
    from fastreid.utils.events import EventStorage

    import torch.nn.functional as F

    # L_CE alone (no ID, triplet or attribute loss), so the change comes from the cosine loss.
    model = _i2t_model("MODEL.LOSSES.I2T.FORM", "cosine", "MODEL.LOSSES.NAME", "()", "MODEL.ATTR.ENABLED", "False",
                       "MODEL.PROMPT.TEMPLATE", "default", logit_scale=20.0, monkeypatch=monkeypatch)
    model.build_text_features()
    generator = torch.Generator().manual_seed(1)
    batch = {"images": torch.rand(8, 3, 64, 32, generator=generator) * 255,
             "targets": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), "camids": torch.tensor([0, 1, 2, 3] * 2)}
    model.train()
    model.set_phase("guide")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for _, p in model.trainable_parameters("guide")], lr=1e-3)
    with EventStorage():
        loss_dict = model(batch)
    assert set(loss_dict) == {"loss_i2t"}
    # The loss is the cosine form on the encoder's f_proj, times the CLIP's scale 20.
    with torch.no_grad():
        proj = model.backbone(model.preprocess_image(batch), batch["camids"]).proj
        logits = 20.0 * F.normalize(proj, dim=1) @ F.normalize(model.text_features, dim=1).t()
        expected = cross_entropy_loss(logits, batch["targets"], model.loss_kwargs["ce"]["eps"])
    torch.testing.assert_close(loss_dict["loss_i2t"].detach(), expected)
    loss_dict["loss_i2t"].backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert "backbone.visual.conv1.weight" in changed and "backbone.visual.proj" in changed
    assert not any(name.startswith(("prompt_learner.", "text_encoder.")) for name in changed)


# --------------------------------------------------------------------------- the cosine leaves
LEAVES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "Synthetic",
                      "ablations")


@pytest.mark.parametrize("leaf, plain", [("baseline", "baseline.yml"), ("at", "at.yml"), ("at_ap", "at_ap.yml"),
                                         ("at_d_known", "template_controls/at_d_known.yml"),
                                         ("at_d_filler", "template_controls/at_d_filler.yml")])
def test_cosine_leaves_are_their_plain_rows(leaf, plain):
    """The synthetic configs use the cosine form, so each study leaf of cosine/ is its plain row
    (the ablation tool trains such twins once) and, with the paper's raw form, the raw row."""
    import agreid

    cosine = agreid.get_agreid_cfg(os.path.join(LEAVES, "cosine", f"{leaf}.yml"))
    reference = agreid.get_agreid_cfg(os.path.join(LEAVES, plain))
    assert cosine.MODEL.LOSSES.I2T.FORM == "cosine" and cosine.MODEL.LOSSES.I2T.LOGIT_SCALE == 0.0
    assert cosine.OUTPUT_DIR == f"logs/synthetic/ablations/cosine/{leaf}"
    cosine.defrost()
    cosine.OUTPUT_DIR = reference.OUTPUT_DIR
    assert cosine == reference


CONFIG_DIR = os.path.dirname(os.path.dirname(LEAVES))  # configs/


@pytest.mark.parametrize("config, form", [
    ("Synthetic/agreid.yml", "cosine"), ("Synthetic/clipreid.yml", "cosine"),
    ("Synthetic/ablations/at_ap.yml", "cosine"), ("Synthetic/ablations/template_a.yml", "cosine"),
    ("Synthetic/agreid_random_init.yml", "raw"), ("Synthetic/clipreid_random_init.yml", "raw"),
    ("OccDuke/agreid.yml", "raw"), ("OccDuke/clipreid.yml", "raw"), ("MSMT17/agreid.yml", "raw")])
def test_which_configs_use_the_cosine_form(config, form):
    """SynthCLIP's configs use cosine logits with its own learned scale (a documented deviation for
    small CLIPs); the paper's configs and the random-init references keep the paper's raw form."""
    import agreid

    cfg = agreid.get_agreid_cfg(os.path.join(CONFIG_DIR, config))
    assert cfg.MODEL.LOSSES.I2T.FORM == form and cfg.MODEL.LOSSES.I2T.LOGIT_SCALE == 0.0


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
