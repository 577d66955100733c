"""CLIP-ReID's input pipeline: noise erasing after normalisation, bilinear test resize, cache without SIE."""
import os

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from fastreid.config import get_cfg
from fastreid.modeling import build_model
from PIL import Image

import agreid
from agreid.data.transforms import NormalizedRandomErasing, build_agreid_transforms

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "Base-AGReID.yml")
MEAN, STD = [127.5, 127.5, 127.5], [127.5, 127.5, 127.5]


def _cfg(*opts):
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.merge_from_file(BASE)
    cfg.merge_from_list(["INPUT.SIZE_TRAIN", [64, 32], "INPUT.SIZE_TEST", [64, 32], *opts])
    return cfg


def test_base_config_has_clip_reid_pipeline():
    cfg = _cfg()
    assert list(cfg.MODEL.PIXEL_MEAN) == MEAN and list(cfg.MODEL.PIXEL_STD) == STD
    assert cfg.INPUT.REA.MODE == "pixel" and cfg.INPUT.INTERPOLATION_TEST == "bilinear"
    assert cfg.SOLVER.IMS_PER_BATCH == 32 and cfg.DATALOADER.NUM_INSTANCE == 4


def test_erased_box_holds_per_pixel_noise_after_normalisation():
    torch.manual_seed(0)
    import random

    random.seed(0)
    mean, std = [100.0, 120.0, 140.0], [50.0, 60.0, 70.0]
    erase = NormalizedRandomErasing(mean, std, probability=1.0)
    image = torch.full((3, 128, 64), 200.0)
    out = erase(image)
    assert torch.equal(image, torch.full((3, 128, 64), 200.0))  # input untouched
    changed = out != image
    box = changed.any(dim=0)
    assert 0.02 * 128 * 64 <= box.sum() <= 128 * 64 / 3 + 64  # timm's area range
    assert torch.equal(changed, box.expand(3, -1, -1))  # every channel of the box
    # Outside the box: bit for bit the input.
    assert torch.equal(out[~changed], image[~changed])
    # Inside: N(0, 1) per pixel and channel once normalised by the model.
    z = (out - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    for channel in range(3):
        values = z[channel][box]
        assert abs(values.mean().item()) < 0.15 and abs(values.std().item() - 1) < 0.1
    assert z[0][box].unique().numel() == box.sum()  # per pixel, not one colour


def test_train_transform_erasing_mode():
    pixel = build_agreid_transforms(_cfg(), is_train=True).transforms
    const = build_agreid_transforms(_cfg("INPUT.REA.MODE", "const"), is_train=True).transforms
    assert sum(isinstance(t, NormalizedRandomErasing) for t in pixel) == 1
    assert not any(isinstance(t, T.RandomErasing) for t in pixel)
    assert sum(isinstance(t, T.RandomErasing) for t in const) == 1  # fastreid's constant fill
    assert not any(isinstance(t, NormalizedRandomErasing) for t in const)
    with pytest.raises(ValueError, match="INPUT.REA.MODE"):
        build_agreid_transforms(_cfg("INPUT.REA.MODE", "noise"), is_train=True)


@pytest.mark.parametrize("name,mode", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
def test_test_transform_resize_mode(name, mode):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (100, 47, 3), dtype=np.uint8))
    out = build_agreid_transforms(_cfg("INPUT.INTERPOLATION_TEST", name), is_train=False)(image)
    expected = torch.from_numpy(np.asarray(image.resize((32, 64), mode), dtype=np.float32)).permute(2, 0, 1)
    assert out.shape == (3, 64, 32)
    assert torch.equal(out, expected)


def test_unknown_interpolation_is_named():
    with pytest.raises(ValueError, match="INPUT.INTERPOLATION_TEST"):
        build_agreid_transforms(_cfg("INPUT.INTERPOLATION_TEST", "nearest-ish"), is_train=False)


def test_feature_cache_is_encode_image_without_camera_embedding():
    cfg = _cfg("MODEL.BACKBONE.CLIP_NAME", "AGReID-Tiny-ViT", "MODEL.BACKBONE.PRETRAIN", "none",
               "MODEL.BACKBONE.PRETRAIN_PATH", "", "MODEL.BACKBONE.NUM_CAMERAS", 3,
               "MODEL.HEADS.NUM_CLASSES", 4, "INPUT.SIZE_TRAIN", [64, 32], "MODEL.BACKBONE.SIE_COE", 3.0)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = torch.rand(4, 3, 64, 32) * 255
    camids = torch.tensor([0, 1, 2, 1])
    cached = model.encode_image({"images": images, "camids": camids})
    normalised = model.preprocess_image({"images": images})
    with torch.no_grad():
        with_sie = model.backbone(normalised, camids).proj
        model.backbone.camera_embedding.zero_()
        without_sie = model.backbone(normalised, camids).proj
    assert not torch.allclose(cached, with_sie, atol=1e-4)  # SIE changes the feature...
    assert torch.allclose(cached, without_sie, atol=1e-6)  # ...and the cache has none
