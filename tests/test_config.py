"""The project's config keys and helpers."""
import pytest

import agreid


def _cfg(**values):
    return agreid.get_agreid_cfg(opts=[item for pair in values.items() for item in pair])


def test_device_defaults_to_what_the_machine_has():
    import torch

    assert _cfg().MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")


def test_all_ablation_leaf_files_merge_and_differ(repo_root):
    import glob
    import os

    seen = set()
    for path in sorted(glob.glob(os.path.join(repo_root, "configs/OccDuke/ablations/*.yml"))):
        cfg = _cfg()
        cfg.merge_from_file(path)
        seen.add((cfg.MODEL.PROMPT.TEMPLATE, cfg.MODEL.ATTR.ENABLED, cfg.MODEL.ATTR.THRESHOLD))
    # 7 templates + AT only + thresholds p50/p75/p90/none: template d is the otsu run and
    # AP only is the default-template run (paper tables 4 and 5 share those rows).
    assert len(seen) == 12


@pytest.mark.parametrize("name,pretrain,expected", [
    ("ViT-B-16", "openai", "ViT-B-16-quickgelu"),          # OpenAI's weights use QuickGELU
    ("RN50", "openai", "RN50-quickgelu"),
    ("ViT-B-16", "none", "ViT-B-16"),                       # random init: plain GELU
    ("AGReID-Tiny-ViT", "none", "AGReID-Tiny-ViT"),
])
def test_skip_pretrained_weights_keeps_the_activation(name, pretrain, expected):
    cfg = _cfg(**{"MODEL.META_ARCHITECTURE": "AGReID", "MODEL.BACKBONE.CLIP_NAME": name,
                  "MODEL.BACKBONE.PRETRAIN": pretrain})
    agreid.skip_pretrained_weights(cfg)
    assert cfg.MODEL.BACKBONE.PRETRAIN == "none"
    assert cfg.MODEL.BACKBONE.CLIP_NAME == expected


def test_skip_pretrained_weights_for_fastreid_backbones():
    cfg = _cfg(**{"MODEL.BACKBONE.PRETRAIN": "imagenet"})
    agreid.skip_pretrained_weights(cfg)
    assert cfg.MODEL.BACKBONE.PRETRAIN == ""


@pytest.mark.parametrize("method,value,expected", [
    ("otsu", 0.0, "otsu"), ("p75", 0.0, "p75"), ("none", 0.0, None),
    ("fixed", 0.5, 0.5), ("fixed", -1.0, None), ("P90", 0.0, "p90"),
])
def test_noise_mask_threshold_from_config(method, value, expected):
    from agreid.modeling.noise_mask import threshold_from_config

    cfg = _cfg(**{"MODEL.ATTR.THRESHOLD": method, "MODEL.ATTR.THRESHOLD_VALUE": value})
    assert threshold_from_config(cfg) == expected


def test_unknown_threshold_names_the_key():
    from agreid.modeling.noise_mask import threshold_from_config

    with pytest.raises(ValueError, match="MODEL.ATTR.THRESHOLD 'median'"):
        threshold_from_config(_cfg(**{"MODEL.ATTR.THRESHOLD": "median"}))


def test_threshold_none_in_yaml_stays_a_string(repo_root):
    import os

    cfg = _cfg()
    cfg.merge_from_file(os.path.join(repo_root, "configs/MSMT17/agreid.yml"))
    assert cfg.MODEL.ATTR.THRESHOLD == "none"
