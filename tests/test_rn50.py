"""CLIP's ResNet-50 with CLIP-ReID's last stride 1 (random init, small input)."""
import os

import open_clip
import pytest
import torch

import agreid
from agreid.modeling.clip_backbone import CLIPImageEncoder, build_clip_backbone
from fastreid.config import get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (64, 32)


@pytest.fixture(scope="module")
def rn50_visual_state():
    torch.manual_seed(0)
    return open_clip.create_model("RN50").visual.state_dict()


def _encoder(state, last_stride):
    visual = open_clip.create_model("RN50").visual
    visual.load_state_dict(state)
    return CLIPImageEncoder(visual, input_size=SIZE, stride=16, last_stride=last_stride).eval()


@pytest.mark.parametrize("last_stride,output_stride", [(1, 16), (2, 32)])
def test_output_stride(rn50_visual_state, last_stride, output_stride):
    encoder = _encoder(rn50_visual_state, last_stride)
    assert encoder.output_stride == output_stride
    images = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        maps = encoder.visual.forward_intermediates(images, indices=[3, 4])["image_intermediates"]
        features = encoder(images)
    assert maps[0].shape[-2:] == (SIZE[0] // 16, SIZE[1] // 16)  # layer3
    assert maps[1].shape[-2:] == (SIZE[0] // output_stride, SIZE[1] // output_stride)  # layer4
    # The attention pool's position grid fits the layer4 map (+ its mean token).
    assert encoder.visual.attnpool.positional_embedding.shape[0] == maps[1].shape[-2] * maps[1].shape[-1] + 1
    assert (features.last.shape, features.final.shape, features.proj.shape) == ((2, 1024), (2, 2048), (2, 1024))


def test_last_stride_one_keeps_every_weight(rn50_visual_state):
    one, two = _encoder(rn50_visual_state, 1), _encoder(rn50_visual_state, 2)
    state_one, state_two = one.state_dict(), two.state_dict()
    pool = "visual.attnpool.positional_embedding"  # resampled to the larger map
    assert set(state_one) == set(state_two)
    assert all(torch.equal(state_one[k], state_two[k]) for k in state_one if k != pool)
    assert (state_one[pool].shape[0], state_two[pool].shape[0]) == (4 * 2 + 1, 2 * 1 + 1)
    # Same weights, different layer4 stride: the features differ.
    images = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        assert not torch.allclose(one(images).final, two(images).final)


def test_config_key_and_shipped_configs():
    for name in ("agreid_rn50.yml", "clipreid_rn50.yml"):
        cfg = get_cfg()
        agreid.add_agreid_config(cfg)
        cfg.merge_from_file(os.path.join(REPO, "configs", "OccREID", name))
        assert cfg.MODEL.BACKBONE.CLIP_NAME == "RN50" and cfg.MODEL.BACKBONE.LAST_STRIDE == 1
        assert cfg.MODEL.LOSSES.CE.SCALE == 1.0 and cfg.SOLVER.BASE_LR == 3.5e-4
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", "",
                         "INPUT.SIZE_TRAIN", list(SIZE)])
    encoder = build_clip_backbone(cfg)
    assert encoder.output_stride == 16
    with pytest.raises(ValueError, match="MODEL.BACKBONE.LAST_STRIDE"):
        _encoder(open_clip.create_model("RN50").visual.state_dict(), 3)
