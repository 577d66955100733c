"""Heat maps (grad-cam) and the noise mask's attribute slots: agreid.heatmaps and tools/gradcam.py
(agreid.cli.gradcam)."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from _tiny_model import tiny_cfg, tiny_model, tiny_run
from agreid.cli import gradcam
from agreid.heatmaps import HeatMapper, SimilarityToReference, attribute_slot_mask, target_layer, vit_reshape_transform
from agreid.modeling.deploy import DeployedImageEncoder


def test_reshape_follows_the_models_non_square_olp_grid():
    cfg = tiny_cfg()
    encoder = DeployedImageEncoder.from_agreid(tiny_model(cfg))
    height, width = cfg.INPUT.SIZE_TEST
    patch = encoder.backbone.visual.patch_size[0]
    stride = cfg.MODEL.BACKBONE.STRIDE
    grid = ((height - patch) // stride + 1, (width - patch) // stride + 1)  # by hand from the config
    assert grid[0] != grid[1]
    layer, reshape = target_layer(encoder)
    assert layer is encoder.backbone.visual.transformer.resblocks[-1].ln_1
    # Token 1 + i * gw + j carries the value 100 i + j; it must land at (i, j) of every channel.
    values = torch.tensor([[100.0 * i + j for i in range(grid[0]) for j in range(grid[1])]])
    tokens = torch.cat([torch.full((1, 1), -1.0), values], dim=1)[..., None].expand(2, -1, 3)
    maps = reshape(tokens)
    assert maps.shape == (2, 3, *grid)
    for i in range(grid[0]):
        for j in range(grid[1]):
            assert torch.all(maps[:, :, i, j] == 100 * i + j)
    with pytest.raises(ValueError, match="do not fit"):
        vit_reshape_transform(tokens[:, :-1], grid)


def test_heat_maps_follow_the_reference_and_leave_the_encoder_alone():
    encoder = DeployedImageEncoder.from_agreid(tiny_model(tiny_cfg()))
    flags = [p.requires_grad for p in encoder.parameters()]
    mapper = HeatMapper(encoder)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, *encoder.backbone.input_size, generator=generator) * 255
    features = mapper.features(images)
    target = SimilarityToReference(features[1])
    assert torch.isclose(target(features[0]), F.cosine_similarity(features[0], features[1], dim=0))
    heat_a = mapper(images, features[[1, 2, 0]])
    heat_b = mapper(images, features[[2, 0, 1]])
    assert heat_a.shape == (3, *encoder.backbone.input_size)
    assert heat_a.min() >= 0 and heat_a.max() <= 1 and heat_a.std() > 0
    assert np.abs(heat_a - heat_b).max() > 1e-3  # another reference, another map
    assert [p.requires_grad for p in encoder.parameters()] == flags


def test_attribute_slot_mask_uses_the_identitys_pseudo_labels():
    model = tiny_model(tiny_cfg("MODEL.ATTR.THRESHOLD", "fixed", "MODEL.ATTR.THRESHOLD_VALUE", "0.0"))
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 64, 32, generator=generator) * 255
    camids = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        predicted = model.heads(model.backbone(model.preprocess_image({"images": images}), camids).proj)
        # Identity 2's pseudo-labels are image 0's predicted tokens: every slot agrees fully.
        model.prompt_learner.pseudo_labels[2] = predicted[0]
        model.prompt_learner.pseudo_labels[3] = -predicted[1]  # and identity 3 disagrees fully
    similarities, mask = attribute_slot_mask(model, images, [2, 3, 0, 1], camids)
    torch.testing.assert_close(similarities[0], torch.ones_like(similarities[0]))
    torch.testing.assert_close(similarities[1], -torch.ones_like(similarities[1]))
    assert torch.equal(mask, (similarities > 0).float())  # gamma fixed at 0
    assert mask[0].all() and not mask[1].any()
    with pytest.raises(ValueError, match="identity indices"):
        attribute_slot_mask(model, images, [0, 1, 2, 99], camids)
    model.heads = None
    with pytest.raises(ValueError, match="no attribute encoder"):
        attribute_slot_mask(model, images, [0, 1, 2, 3], camids)


def test_gradcam_tool_two_models_and_attribute_strips(tiny_dataset_root, tmp_path, capsys):
    _, first = tiny_run(tmp_path / "a", "DATASETS.ROOT", tiny_dataset_root)
    _, second = tiny_run(tmp_path / "b", "DATASETS.ROOT", tiny_dataset_root, seed=1)
    train = os.path.join(tiny_dataset_root, "SyntheticOccluded", "bounding_box_train")
    out = tmp_path / "heat.png"
    assert gradcam.main(["--weights", first, "--second-weights", second, "--names", "A,B", "--images", train,
                         "--max-images", "2", "--attributes", "--output", str(out)]) == 0
    tile_w, tile_h = gradcam.TILE
    row_h = gradcam.TEXT_H + tile_h + gradcam.TEXT_H + gradcam.STRIP_H + 2
    assert Image.open(out).size == (3 * (tile_w + gradcam.GAP), gradcam.TEXT_H + 2 * row_h)
    query = os.path.join(tiny_dataset_root, "SyntheticOccluded", "query")
    capsys.readouterr()
    assert gradcam.main(["--weights", first, "--images", query, "--max-images", "2", "--attributes",
                         "--output", str(tmp_path / "q.png")]) == 2
    assert "not training images" in capsys.readouterr().err
    assert gradcam.main(["--weights", str(tmp_path / "nope.pth"), "--images", query, "--output", str(out)]) == 2
    assert "nope.pth" in capsys.readouterr().err
