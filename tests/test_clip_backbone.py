"""CLIP loading, overlapping patches (OLP), SIE on the CLS token, and the three image features."""
import logging

import open_clip
import pytest
import torch
from fastreid.config import get_cfg
from fastreid.modeling.backbones import build_backbone
from timm.layers import resample_abs_pos_embed

import agreid
from agreid.modeling.clip_backbone import CLIPImageEncoder, ImageFeatures
from agreid.modeling.clip_loader import CLIPWeightsNotFoundError, create_clip, load_clip

TINY = "AGReID-Tiny-ViT"
VIT_B16_URL = open_clip.get_pretrained_cfg("ViT-B-16", "openai")["url"]


def _cfg(**overrides):
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_clip_backbone"
    cfg.MODEL.BACKBONE.CLIP_NAME = TINY
    cfg.MODEL.BACKBONE.PRETRAIN = "none"
    cfg.MODEL.BACKBONE.STRIDE = 12
    cfg.MODEL.BACKBONE.NUM_CAMERAS = 3
    cfg.INPUT.SIZE_TRAIN = [256, 128]
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def _encoder(stride=12, num_cameras=3, size=(256, 128)):
    torch.manual_seed(0)
    visual = create_clip(TINY, pretrained="none").visual
    original_position = visual.positional_embedding.detach().clone()
    encoder = CLIPImageEncoder(visual, input_size=size, stride=stride, num_cameras=num_cameras)
    return encoder.eval(), original_position


def _transformer_input(encoder, images, camids):
    captured = {}
    handle = encoder.visual.transformer.resblocks[0].register_forward_pre_hook(lambda _, args: captured.update(x=args[0]))
    with torch.no_grad():
        features = encoder(images, camids)
    handle.remove()
    return captured["x"], features


def _pretraining_grid():
    """The patch grid the tiny CLIP was built (and SynthCLIP pretrained) for."""
    return open_clip.create_model(TINY, pretrained=None).visual.grid_size


def test_olp_grid_and_resized_position_embedding():
    encoder, original_position = _encoder(stride=12)
    # (256 - 16) // 12 + 1 = 21 rows, (128 - 16) // 12 + 1 = 10 columns, + CLS = 211 tokens.
    assert encoder.visual.grid_size == (21, 10)
    tokens, _ = _transformer_input(encoder, torch.randn(2, 3, 256, 128), torch.tensor([0, 1]))
    assert tokens.shape == (2, 211, 128)
    position = encoder.visual.positional_embedding
    assert position.shape == (211, 128)
    assert torch.equal(position[0], original_position[0])  # the CLS position is kept
    expected = resample_abs_pos_embed(
        original_position.unsqueeze(0), new_size=[21, 10], old_size=list(_pretraining_grid()),
        num_prefix_tokens=1, interpolation="bilinear", antialias=False,
    )[0]
    assert torch.equal(position.detach(), expected)
    assert encoder.visual.conv1.stride == (12, 12) and encoder.visual.conv1.kernel_size == (16, 16)


def test_stride_16_means_no_overlap():
    encoder, _ = _encoder(stride=16)
    tokens, _ = _transformer_input(encoder, torch.randn(1, 3, 256, 128), torch.tensor([0]))
    assert tokens.shape[1] == 16 * 8 + 1


def test_sie_changes_only_the_cls_token():
    encoder, _ = _encoder()
    images = torch.randn(1, 3, 256, 128).expand(2, -1, -1, -1)
    tokens, _ = _transformer_input(encoder, images, torch.tensor([0, 2]))
    assert not torch.allclose(tokens[0, 0], tokens[1, 0])
    assert torch.equal(tokens[0, 1:], tokens[1, 1:])
    table = encoder.camera_embedding
    assert table.shape == (3, 128)
    assert table.std().item() == pytest.approx(0.02, rel=0.5)  # timm trunc_normal_ std 0.02, as TransReID


def test_sie_is_added_before_the_position_embedding_times_its_coefficient():
    encoder, _ = _encoder()
    encoder.sie_coe = 2.0
    captured = {}
    encoder.visual.ln_pre.register_forward_pre_hook(lambda _, args: captured.update(x=args[0]))
    images = torch.randn(1, 3, 256, 128)
    with torch.no_grad():
        encoder(images, torch.tensor([1]))
    visual = encoder.visual
    expected_cls = visual.class_embedding + 2.0 * encoder.camera_embedding[1] + visual.positional_embedding[0]
    torch.testing.assert_close(captured["x"][0, 0], expected_cls)


def test_image_features_are_last_final_and_proj():
    encoder, _ = _encoder()
    blocks = encoder.visual.transformer.resblocks
    outputs = {}
    blocks[-2].register_forward_hook(lambda *args: outputs.update(penultimate=args[2]))
    blocks[-1].register_forward_hook(lambda *args: outputs.update(last=args[2]))
    _, features = _transformer_input(encoder, torch.randn(2, 3, 256, 128), torch.tensor([0, 1]))
    assert isinstance(features, ImageFeatures)
    assert features.last.shape == features.final.shape == (2, 128) and features.proj.shape == (2, 64)
    assert torch.equal(features.last, outputs["penultimate"][:, 0])
    with torch.no_grad():
        final = encoder.visual.ln_post(outputs["last"][:, 0])
    torch.testing.assert_close(features.final, final)
    torch.testing.assert_close(features.proj, final @ encoder.visual.proj)
    assert (encoder.last_dim, encoder.final_dim, encoder.embed_dim) == (128, 128, 64)


def test_wrong_input_size_is_a_clear_error():
    encoder, _ = _encoder()
    with pytest.raises(ValueError, match="SIZE_TEST"):
        encoder(torch.randn(1, 3, 224, 224), torch.tensor([0]))


def test_registered_builder_reads_the_config():
    encoder = build_backbone(_cfg(**{"MODEL.BACKBONE.SIE_COE": 3.0}))
    assert isinstance(encoder, CLIPImageEncoder)
    assert encoder.num_cameras == 3 and encoder.sie_coe == 3.0 and encoder.visual.grid_size == (21, 10)
    no_sie = build_backbone(_cfg(**{"MODEL.BACKBONE.SIE_CAMERA": False}))
    assert no_sie.camera_embedding is None
    features = no_sie.eval()(torch.randn(1, 3, 256, 128))
    assert features.proj.shape == (1, 64)
    with pytest.raises(ValueError, match="NUM_CAMERAS"):
        build_backbone(_cfg(**{"MODEL.BACKBONE.NUM_CAMERAS": 0}))


def test_resnet_features():
    torch.manual_seed(0)
    encoder = CLIPImageEncoder(create_clip("RN50", pretrained="none").visual, input_size=(256, 128), stride=16)
    assert encoder.visual.attnpool.positional_embedding.shape == (8 * 4 + 1, 2048)
    with torch.no_grad():
        features = encoder.eval()(torch.randn(2, 3, 256, 128))
    assert features.last.shape == (2, 1024) and features.final.shape == (2, 2048) and features.proj.shape == (2, 1024)
    assert (encoder.last_dim, encoder.final_dim, encoder.embed_dim) == (1024, 2048, 1024)


# ----------------------------------------------------------------------------- weights
def test_no_weights_configured_names_the_file_and_the_key():
    cfg = _cfg(**{"MODEL.BACKBONE.CLIP_NAME": "ViT-B-16", "MODEL.BACKBONE.PRETRAIN": ""})
    with pytest.raises(CLIPWeightsNotFoundError) as error:
        load_clip(cfg)
    assert VIT_B16_URL in str(error.value) and "MODEL.BACKBONE.PRETRAIN_PATH" in str(error.value)
    assert isinstance(error.value, FileNotFoundError)


def test_failed_tag_download_names_the_file_and_the_key(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(CLIPWeightsNotFoundError) as error:
        create_clip("ViT-B-16", pretrained="openai")
    assert VIT_B16_URL in str(error.value) and "MODEL.BACKBONE.PRETRAIN_PATH" in str(error.value)


def test_missing_file_and_unknown_tag():
    with pytest.raises(CLIPWeightsNotFoundError, match="ViT-B-16.pt"):
        create_clip("ViT-B-16", checkpoint_path="/nonexistent/ViT-B-16.pt")
    with pytest.raises(ValueError, match="not an open_clip tag"):
        create_clip("ViT-B-16", pretrained="no-such-tag")


def test_loads_an_open_clip_state_dict(tmp_path, caplog):
    source = create_clip(TINY, pretrained="none")
    state = source.state_dict()
    state.pop("ln_final.bias")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    with caplog.at_level(logging.INFO, logger="agreid.modeling.clip_loader"):
        loaded = create_clip(TINY, checkpoint_path=str(path))
    assert torch.equal(loaded.visual.conv1.weight, source.visual.conv1.weight)
    assert torch.equal(loaded.token_embedding.weight, source.token_embedding.weight)
    assert "ln_final.bias" in caplog.text and "extra.weight" in caplog.text


def test_loads_an_openai_torchscript_archive_with_quick_gelu(tmp_path):
    source = create_clip(TINY, pretrained="none").eval()
    archive = torch.jit.trace(
        source, (torch.rand(1, 3, *source.visual.image_size), torch.zeros(1, source.context_length, dtype=torch.long)),
        check_trace=False, strict=False
    )
    path = tmp_path / "tiny-openai.pt"
    torch.jit.save(archive, str(path))
    loaded = create_clip(TINY, checkpoint_path=str(path))
    for (name, expected), actual in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(expected, actual), name
    assert isinstance(loaded.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


def test_a_file_of_another_model_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"backbone.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="none of the weights"):
        create_clip(TINY, checkpoint_path=str(path))
