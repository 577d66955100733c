"""The AGReID meta-architecture: eval path, the two phases, and one real optimisation step each."""
import pytest
import torch
import torch.nn.functional as F
from fastreid.config import get_cfg
from fastreid.modeling import build_model
from fastreid.utils.events import EventStorage
from torch import nn

import agreid
import agreid.modeling  # noqa: F401  (registration)
from agreid.modeling.meta_arch import AGReID

NUM_IDS = 4
BATCH = 8


def _cfg(**overrides):
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.merge_from_list([
        "MODEL.META_ARCHITECTURE", "AGReID",
        "MODEL.BACKBONE.NAME", "build_clip_backbone",
        "MODEL.HEADS.NAME", "AttributeHead",
        "MODEL.BACKBONE.CLIP_NAME", "AGReID-Tiny-ViT",
        "MODEL.BACKBONE.PRETRAIN", "none",
        "MODEL.BACKBONE.STRIDE", 12,
        "MODEL.BACKBONE.NUM_CAMERAS", 3,
        "MODEL.HEADS.NUM_CLASSES", NUM_IDS,
        "MODEL.LOSSES.NAME", ("CrossEntropyLoss", "TripletLoss"),
        "MODEL.LOSSES.CE.EPSILON", 0.1,
        "MODEL.LOSSES.CE.SCALE", 0.25,
        "MODEL.LOSSES.TRI.HARD_MINING", True,
        "MODEL.PIXEL_MEAN", [122.77, 116.75, 104.09],
        "MODEL.PIXEL_STD", [68.50, 66.63, 70.32],
        "INPUT.SIZE_TRAIN", [128, 64],
    ])
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(_cfg(**overrides))


def _batch():
    generator = torch.Generator().manual_seed(1)
    return {
        "images": torch.rand(BATCH, 3, 128, 64, generator=generator) * 255,
        "targets": torch.arange(NUM_IDS).repeat_interleave(BATCH // NUM_IDS),
        "camids": torch.arange(BATCH) % 3,
    }


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _changed(model, before):
    return {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}


def _step(model, phase, batch):
    model.train()
    model.set_phase(phase)
    optimizer = torch.optim.Adam([p for _, p in model.trainable_parameters(phase)], lr=1e-2)
    with EventStorage():
        loss_dict = model(batch)
    sum(loss_dict.values()).backward()
    optimizer.step()
    return loss_dict


class _Forbidden(nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("the eval forward must run the image encoder only")


def test_eval_forward_runs_the_image_encoder_only():
    model = _model().eval()
    batch = _batch()
    images = batch["images"].clone()
    model.text_encoder = _Forbidden()
    model.prompt_learner = _Forbidden()
    model.heads = _Forbidden()
    with torch.no_grad():
        feature = model(batch)
        encoded = model.backbone(model.preprocess_image(batch), batch["camids"])
    assert feature.shape == (BATCH, 128 + 64)
    torch.testing.assert_close(feature, F.normalize(torch.cat([encoded.final, encoded.proj], dim=1), dim=1))
    assert torch.equal(batch["images"], images)  # the caller's batch is not normalised in place


def test_neck_feat_after_uses_the_bnnecks():
    model = _model(**{"MODEL.HEADS.NECK_FEAT": "after"}).eval()
    batch = _batch()
    with torch.no_grad():
        model.bnneck.running_mean.fill_(0.5)
        feature = model(batch)
        encoded = model.backbone(model.preprocess_image(batch), batch["camids"])
        expected = torch.cat([model.bnneck(encoded.final), model.bnneck_proj(encoded.proj)], dim=1)
    torch.testing.assert_close(feature, F.normalize(expected, dim=1))


def test_phase_parameters_and_requires_grad():
    model = _model()
    align = {name for name, _ in model.trainable_parameters("align")}
    guide = {name for name, _ in model.trainable_parameters("guide")}
    assert "prompt_learner.pseudo_labels" in align and any(n.startswith("heads.") for n in align)
    assert all(n.startswith(("prompt_learner.", "heads.")) for n in align)
    assert "backbone.camera_embedding" in guide and "classifier_proj.weight" in guide
    assert not any(n.startswith(("prompt_learner.", "text_encoder.", "heads.")) for n in guide)
    assert "bnneck.bias" not in guide and "bnneck_proj.bias" not in guide and "bnneck.weight" in guide
    for phase, names in (("align", align), ("guide", guide)):
        model.set_phase(phase)
        assert model.phase == phase
        assert {n for n, p in model.named_parameters() if p.requires_grad} == names
    with pytest.raises(ValueError, match="phase"):
        model.set_phase("stage3")
    trained_e_a = _model(**{"MODEL.ATTR.TRAIN_IN_GUIDE": True})
    assert any(n.startswith("heads.") for n, _ in trained_e_a.trainable_parameters("guide"))


def test_align_step_changes_only_the_prompts_and_the_attribute_encoder():
    model = _model()
    batch = _batch()
    features = model.encode_image(batch)
    assert features.shape == (BATCH, 64) and not features.requires_grad
    before = _snapshot(model)
    loss_dict = _step(model, "align", {"features": features, "targets": batch["targets"]})
    assert set(loss_dict) == {"loss_supcon_i2t", "loss_supcon_t2i", "loss_attr_align"}
    assert loss_dict["loss_supcon_i2t"].item() != pytest.approx(loss_dict["loss_supcon_t2i"].item())
    changed = _changed(model, before)
    assert "prompt_learner.pseudo_labels" in changed
    assert any(name.startswith("heads.") for name in changed)
    assert all(name.startswith(("prompt_learner.", "heads.")) for name in changed), changed


def test_guide_step_leaves_prompts_text_encoder_and_attribute_encoder_unchanged():
    model = _model()
    model.build_text_features()
    text_features = model.text_features.clone()
    before = _snapshot(model)
    loss_dict = _step(model, "guide", _batch())
    assert set(loss_dict) == {"loss_cls", "loss_triplet", "loss_i2t", "loss_attr_guide"}
    changed = _changed(model, before)
    assert "backbone.visual.conv1.weight" in changed and "backbone.camera_embedding" in changed
    assert "classifier.weight" in changed and "bnneck_proj.weight" in changed
    assert not any(name.startswith(("prompt_learner.", "text_encoder.", "heads.")) for name in changed)
    assert "bnneck.bias" not in changed and "bnneck_proj.bias" not in changed
    assert torch.equal(model.text_features, text_features)
    assert all(p.grad is None for p in model.heads.parameters())  # frozen, yet on the graph


def test_guide_loss_values():
    model = _model()
    model.build_text_features()
    model.train()
    model.set_phase("guide")
    batch = _batch()
    with EventStorage():
        loss_dict = model(batch)
    # Recompute L_CE and L_id by hand from the encoder outputs (same BN batch statistics).
    features = model.backbone(model.preprocess_image(batch), batch["camids"])
    targets = batch["targets"]
    logits = features.proj @ model.text_features.t()
    log_probs = F.log_softmax(logits, dim=1)
    smooth = torch.full_like(log_probs, 0.1 / (NUM_IDS - 1)).scatter_(1, targets[:, None], 0.9)
    torch.testing.assert_close(loss_dict["loss_i2t"], -(smooth * log_probs).sum(1).mean())
    id_losses = [
        -(smooth * F.log_softmax(classifier(neck(feature)), dim=1)).sum(1).mean()
        for classifier, neck, feature in (
            (model.classifier, model.bnneck, features.final),
            (model.classifier_proj, model.bnneck_proj, features.proj),
        )
    ]
    torch.testing.assert_close(loss_dict["loss_cls"], 0.25 * sum(id_losses))


def test_text_features_are_built_in_chunks():
    model = _model().eval()
    full = model.build_text_features(batch_size=256).clone()
    assert full.shape == (NUM_IDS, 64) and full.abs().sum() > 0
    chunked = model.build_text_features(batch_size=3)
    torch.testing.assert_close(chunked, full)
    with torch.no_grad():
        prompts, token_ids = model.prompt_learner(torch.tensor([2]))
        torch.testing.assert_close(full[2:3], model.text_encoder(prompts, token_ids))
    assert "text_features" in model.state_dict()


def test_baseline_without_attribute_encoder():
    model = _model(**{"MODEL.ATTR.ENABLED": False, "MODEL.PROMPT.TEMPLATE": "default"})
    assert model.heads is None and model.prompt_learner.num_learnable_tokens == 4
    batch = _batch()
    loss_dict = _step(model, "align", {"features": model.encode_image(batch), "targets": batch["targets"]})
    assert set(loss_dict) == {"loss_supcon_i2t", "loss_supcon_t2i"}
    model.build_text_features()
    assert set(_step(model, "guide", batch)) == {"loss_cls", "loss_triplet", "loss_i2t"}


def test_deployment_state_dict_is_the_image_encoder_and_necks():
    model = _model()
    keys = set(model.image_encoder_state_dict())
    assert "backbone.visual.positional_embedding" in keys and "bnneck.running_mean" in keys
    assert all(key.split(".", 1)[0] in ("backbone", "bnneck", "bnneck_proj") for key in keys)


def test_configuration_errors():
    with pytest.raises(ValueError, match="AttributeHead"):
        build_model(_cfg(**{"MODEL.HEADS.NAME": "EmbeddingHead", "MODEL.HEADS.EMBEDDING_DIM": 8}))
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        build_model(_cfg(**{"MODEL.HEADS.NUM_CLASSES": 0}))
    with pytest.raises(ValueError, match="THRESHOLD"):
        build_model(_cfg(**{"MODEL.ATTR.THRESHOLD": "median"}))
    assert isinstance(_model(), AGReID)


def test_clip_weights_are_read_once_per_build_and_never_shared_between_builds(monkeypatch):
    from agreid.modeling import clip_loader

    calls = []
    create_clip = clip_loader.create_clip

    def counting_create_clip(*args, **kwargs):
        calls.append(args)
        return create_clip(*args, **kwargs)

    monkeypatch.setattr(clip_loader, "create_clip", counting_create_clip)
    first, second = _model(), _model()
    assert len(calls) == 2  # one per model: image and text towers come from one load
    assert first.backbone.visual.conv1.weight is not second.backbone.visual.conv1.weight
    assert first.text_encoder.transformer is not second.text_encoder.transformer
