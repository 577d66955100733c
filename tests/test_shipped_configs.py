"""Every shipped config parses; every AG-ReID one builds its model (on the tiny CLIP) and runs."""
import glob
import os

import pytest
import torch

import agreid
from fastreid.modeling import build_model
from fastreid.modeling.backbones import BACKBONE_REGISTRY
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yml"),
                                                              recursive=True))
NUM_IDS, NUM_CAMERAS, SIZE = 4, 3, (64, 32)
# The shape of the model changes, its recipe does not: the tiny CLIP with random weights,
# small images, identity and camera counts the trainer would fill in.
TINY = ["MODEL.BACKBONE.CLIP_NAME", "AGReID-Tiny-ViT", "MODEL.BACKBONE.PRETRAIN", "none",
        "MODEL.BACKBONE.PRETRAIN_PATH", "", "INPUT.SIZE_TRAIN", list(SIZE), "INPUT.SIZE_TEST", list(SIZE),
        "MODEL.HEADS.NUM_CLASSES", NUM_IDS, "MODEL.BACKBONE.NUM_CAMERAS", NUM_CAMERAS, "MODEL.DEVICE", "cpu"]


def _parse(config):
    return agreid.get_agreid_cfg(os.path.join(REPO, config))


def _agreid_configs():
    """AG-ReID configs, one per distinct model (ablation leaves often differ in data or solver only)."""
    seen, out = set(), []
    for config in CONFIGS:
        cfg = _parse(config)
        if cfg.MODEL.META_ARCHITECTURE != "AGReID" or not cfg.DATASETS.NAMES:
            continue
        cfg.merge_from_list(TINY)
        key = cfg.MODEL.dump()
        if key not in seen:
            seen.add(key)
            out.append(config)
    return out


def test_the_glob_finds_the_shipped_configs():
    assert len(CONFIGS) > 50
    for expected in ("configs/Base-AGReID.yml", "configs/OccREID/agreid_rn50.yml",
                     "configs/OccDuke/ablations/threshold_p90.yml", "configs/Synthetic/baseline_r18.yml"):
        assert expected in CONFIGS


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_parses_and_names_registered_parts(config):
    cfg = _parse(config)
    META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)  # raises KeyError naming it when unknown
    BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)
    if not os.path.basename(config).startswith("Base-"):
        assert cfg.DATASETS.NAMES and cfg.DATASETS.TESTS, config
        assert cfg.OUTPUT_DIR.startswith("logs/"), config


@pytest.mark.parametrize("config", _agreid_configs())
def test_agreid_config_builds_and_runs(config):
    cfg = _parse(config)
    cfg.merge_from_list(TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert (model.heads is None) == (not cfg.MODEL.ATTR.ENABLED)
    if model.heads is not None:
        assert model.heads.num_slots == model.prompt_learner.num_learnable_tokens
    assert model.neck_feat == cfg.MODEL.HEADS.NECK_FEAT
    assert model.backbone.num_cameras == (NUM_CAMERAS if cfg.MODEL.BACKBONE.SIE_CAMERA else 0)
    batch = {"images": torch.rand(2, 3, *SIZE) * 255, "camids": torch.tensor([0, 2])}
    with torch.no_grad():
        features = model.eval()(batch)
    assert features.shape == (2, model.backbone.final_dim + model.backbone.embed_dim)
    assert torch.allclose(features.norm(dim=1), torch.ones(2), atol=1e-5)
