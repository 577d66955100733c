"""The attribute encoder E_A: its size with ViT-B/16 widths, its outputs, its registry entry."""
import open_clip
import pytest
import torch
from fastreid.config import get_cfg
from fastreid.modeling.heads import build_heads

import agreid
import agreid.modeling  # noqa: F401  (registration)
from agreid.modeling.attribute_head import AttributeHead
from agreid.modeling.prompts import parse_template

PAPER_PARAMETERS = 2.76e6


def _cfg(clip_name):
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.MODEL.BACKBONE.CLIP_NAME = clip_name
    cfg.MODEL.HEADS.NAME = "AttributeHead"
    return cfg


def test_default_size_with_vit_b16_widths_matches_the_paper():
    # Widths from open_clip's ViT-B-16 config and r from template d: nothing is downloaded.
    cfg = _cfg("ViT-B-16")
    head = build_heads(cfg)
    assert isinstance(head, AttributeHead)
    model_cfg = open_clip.get_model_config("ViT-B-16")
    assert head.input_proj.in_features == model_cfg["embed_dim"] == 512
    assert head.output_proj.out_features == model_cfg["text_cfg"]["width"] == 512
    assert head.num_slots == 10 == len(parse_template("d", open_clip.get_tokenizer("ViT-B-16")).slot_positions)
    num_parameters = sum(p.numel() for p in head.parameters())
    print(f"AttributeHead parameters (ViT-B/16, template d): {num_parameters:,}")
    assert num_parameters == pytest.approx(PAPER_PARAMETERS, rel=0.05)
    assert len(head.encoder.layers) == 4


def test_predicts_r_tokens_of_token_width():
    cfg = _cfg("AGReID-Tiny-ViT")
    cfg.MODEL.PROMPT.TEMPLATE = "a"
    head = build_heads(cfg)
    out = head(torch.randn(3, 64))
    assert out.shape == (3, 6, 128)
    # Each image gets its own tokens, and the r slots differ (learned queries).
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0, 0], out[0, 1])


def test_gradient_reaches_the_image_feature_through_a_frozen_head():
    head = AttributeHead(embed_dim=8, token_width=4, num_slots=2, dim=16, num_heads=2, ffn_dim=32)
    head.requires_grad_(False)
    features = torch.randn(2, 8, requires_grad=True)
    head(features).sum().backward()
    assert features.grad.abs().sum() > 0
