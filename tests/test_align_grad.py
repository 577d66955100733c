"""MODEL.ATTR.ALIGN_GRAD_TO_PROMPTS: whether L_attrA's gradient reaches the pseudo-labels V."""
import pytest
import torch
from fastreid.config import get_cfg
from fastreid.modeling import build_model

import agreid
import agreid.modeling  # noqa: F401  (registration)

NUM_IDS = 4


def _model(align_grad: bool):
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.merge_from_list([
        "MODEL.META_ARCHITECTURE", "AGReID",
        "MODEL.BACKBONE.NAME", "build_clip_backbone",
        "MODEL.HEADS.NAME", "AttributeHead",
        "MODEL.BACKBONE.CLIP_NAME", "AGReID-Tiny-ViT",
        "MODEL.BACKBONE.PRETRAIN", "none",
        "MODEL.BACKBONE.NUM_CAMERAS", 2,
        "MODEL.HEADS.NUM_CLASSES", NUM_IDS,
        "MODEL.ATTR.ALIGN_GRAD_TO_PROMPTS", align_grad,
    ])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    model.set_phase("align")
    return model


def _grad_of_attr_align(model):
    """Gradient on V of L_attrA alone, on random image features."""
    targets = torch.arange(NUM_IDS).repeat_interleave(2)
    features = torch.randn(len(targets), model.backbone.embed_dim, generator=torch.Generator().manual_seed(1))
    loss_dict = model.align_losses(features, targets)
    model.zero_grad(set_to_none=True)
    loss_dict["loss_attr_align"].backward()
    return model.prompt_learner.pseudo_labels.grad, model.heads.output_proj.weight.grad


def test_default_keeps_the_pseudo_labels_detached():
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    assert cfg.MODEL.ATTR.ALIGN_GRAD_TO_PROMPTS is False
    grad_v, grad_head = _grad_of_attr_align(_model(False))
    # Off: V gets nothing from L_attrA (no grad at all, or exactly zero), E_A still learns.
    assert grad_v is None or torch.count_nonzero(grad_v) == 0
    assert grad_head is not None and torch.count_nonzero(grad_head) > 0


def test_on_lets_attr_align_reach_the_pseudo_labels():
    grad_v, grad_head = _grad_of_attr_align(_model(True))
    assert grad_v is not None and torch.count_nonzero(grad_v) > 0
    assert grad_head is not None and torch.count_nonzero(grad_head) > 0
    # Only the identities in the batch get a gradient; all of them do here.
    assert all(torch.count_nonzero(grad_v[k]) > 0 for k in range(NUM_IDS))


@pytest.mark.parametrize("value", [True, False])
def test_the_key_reaches_the_loss(value):
    assert _model(value).loss_kwargs["attr"]["align_grad_to_prompts"] is value
