"""The deployed image encoder: same features as AGReID's eval forward, nothing of the text side."""
import json
import os
import subprocess
import sys

import pytest
import torch
from fastreid.config import get_cfg
from fastreid.modeling import build_model
from fastreid.utils.checkpoint import Checkpointer
from torch import nn

import _warm
import agreid
from agreid.modeling.deploy import (
    DeployedImageEncoder,
    EncoderSettings,
    build_deployed_encoder,
    clip_uses_quick_gelu,
    save_deployed_encoder,
    trace_deployed_encoder,
    uses_quick_gelu,
)

# Trains, exports or starts processes: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IDS = 6
NUM_CAMERAS = 3
BATCH = 6
TRAINING_ONLY = ("text_encoder.", "prompt_learner.", "heads.", "classifier", "text_features")


def _cfg(*opts):
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs/Synthetic/agreid.yml"))
    cfg.merge_from_list([
        "MODEL.BACKBONE.PRETRAIN", "none",
        "MODEL.BACKBONE.PRETRAIN_PATH", "",
        "MODEL.HEADS.NUM_CLASSES", NUM_IDS,
        "MODEL.BACKBONE.NUM_CAMERAS", NUM_CAMERAS,
        "MODEL.DEVICE", "cpu",
        *opts,
    ])
    return cfg


def _trained_model(cfg):
    """An AGReID model whose BNNeck statistics and weights are not the initial ones."""
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for bnneck in (model.bnneck, model.bnneck_proj):
            bnneck.running_mean.normal_()
            bnneck.running_var.uniform_(0.5, 2.0)
            bnneck.weight.uniform_(0.5, 1.5)
        model.backbone.camera_embedding.normal_()
    return model.eval()


def _batch(size=BATCH, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {
        "images": torch.rand(size, 3, 128, 64, generator=generator) * 255,
        "camids": torch.randint(NUM_CAMERAS, (size,), generator=generator),
    }


def _checkpoint(model, directory):
    """A training checkpoint as the trainer writes it (fastreid's Checkpointer)."""
    os.makedirs(directory, exist_ok=True)
    Checkpointer(model, str(directory)).save("model_final", phase={"phase": "guide"})
    return os.path.join(str(directory), "model_final.pth")


@pytest.mark.parametrize("neck_feat", ["before", "after"])
def test_deployed_features_equal_the_eval_forward(tmp_path, neck_feat):
    cfg = _cfg("MODEL.HEADS.NECK_FEAT", neck_feat)
    model = _trained_model(cfg)
    batch = _batch()
    with torch.no_grad():
        expected = model(batch)
        in_memory = DeployedImageEncoder.from_agreid(model)(batch["images"], batch["camids"])
        from_checkpoint = build_deployed_encoder(cfg, _checkpoint(model, tmp_path))(batch["images"], batch["camids"])
    assert expected.shape == (BATCH, 128 + 64)
    torch.testing.assert_close(in_memory, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(from_checkpoint, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("neck_feat", ["before", "after"])
def test_deployed_state_holds_the_image_encoder_only(tmp_path, neck_feat):
    cfg = _cfg("MODEL.HEADS.NECK_FEAT", neck_feat)
    model = _trained_model(cfg)
    encoder = build_deployed_encoder(cfg, _checkpoint(model, tmp_path))
    keys = list(encoder.state_dict())
    assert not [k for k in keys if k.startswith(TRAINING_ONLY)]
    assert any(k.startswith("bnneck.") for k in keys) == (neck_feat == "after")
    assert set(keys) <= set(model.image_encoder_state_dict())
    modules = {type(m).__name__ for m in encoder.modules()}
    assert not modules & {"TextEncoder", "PromptLearner", "AttributeHead"}
    encoder_params = sum(p.numel() for p in encoder.parameters())
    model_params = sum(p.numel() for p in model.parameters())
    print(f"AGReID {model_params / 1e6:.2f}M parameters, deployed encoder {encoder_params / 1e6:.2f}M")
    assert encoder_params < model_params / 2


def test_build_does_not_build_the_text_tower(tmp_path, monkeypatch):
    cfg = _cfg()
    checkpoint = _checkpoint(_trained_model(cfg), tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("deployment must not build the whole CLIP model")

    monkeypatch.setattr("open_clip.create_model", forbidden)
    monkeypatch.setattr("agreid.modeling.clip_loader.open_clip.create_model", forbidden)
    build_deployed_encoder(cfg, checkpoint)


def test_exported_file_rebuilds_without_checkpoint_or_config(tmp_path):
    cfg = _cfg()
    model = _trained_model(cfg)
    checkpoint = _checkpoint(model, tmp_path / "train")
    encoder = build_deployed_encoder(cfg, checkpoint)
    exported = str(tmp_path / "image_encoder.safetensors")
    save_deployed_encoder(encoder, exported)
    assert os.path.getsize(exported) < os.path.getsize(checkpoint) / 2
    os.remove(checkpoint)
    rebuilt = build_deployed_encoder(None, exported)
    assert rebuilt.settings == encoder.settings
    assert rebuilt.settings.num_cameras == NUM_CAMERAS and rebuilt.settings.input_size == (128, 64)
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch["images"], batch["camids"]), model(batch), rtol=0, atol=1e-5)
    # The exported file is safetensors: tensors, and the settings as JSON text in its header.
    from safetensors import safe_open

    with safe_open(exported, framework="pt") as f:
        assert f.metadata()["format"] == "agreid-image-encoder"
        assert json.loads(f.metadata()["settings"])["num_cameras"] == NUM_CAMERAS


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # legacy, on purpose
def test_torchscript_equals_eager(tmp_path):
    cfg = _cfg()
    encoder = DeployedImageEncoder.from_agreid(_trained_model(cfg))
    traced = trace_deployed_encoder(encoder)
    path = str(tmp_path / "image_encoder.ts")
    traced.save(path)
    loaded = torch.jit.load(path)
    for size in (1, 4, 9):
        batch = _batch(size, seed=size)
        with torch.no_grad():
            eager = encoder(batch["images"], batch["camids"])
            torch.testing.assert_close(loaded(batch["images"], batch["camids"]), eager, rtol=0, atol=1e-5)


def test_export_tool_writes_the_encoder_and_its_programs(tmp_path):
    cfg_file = tmp_path / "config.yaml"
    cfg = _cfg()
    cfg_file.write_text(cfg.dump())
    checkpoint = _checkpoint(_trained_model(cfg), tmp_path / "train")
    output = tmp_path / "deploy"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools/export_image_encoder.py"), "--config-file", str(cfg_file),
         "--weights", checkpoint, "--output", str(output), "--torchscript"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("image_encoder.safetensors", "image_encoder.pt2", "image_encoder_agnostic.pt2", "image_encoder.ts"):
        assert (output / name).is_file(), name
    assert "exported encoder" in result.stdout and "weights given (model_final.pth)" in result.stdout
    assert "TorchScript, legacy (image_encoder.ts)" in result.stdout
    # The TorchScript route is legacy but asked for: torch's deprecation notices are not repeated.
    assert "FutureWarning" not in result.stderr and "torch.jit" not in result.stderr, result.stderr
    # (The run above is a new interpreter: warnings at import count; this one is forked from a
    # warm one, tests/_warm.py.)
    missing = _warm.run(os.path.join(REPO, "tools/export_image_encoder.py"), "--config-file", str(cfg_file),
                        "--weights", str(tmp_path / "nope.pth"), "--output", str(output), timeout=300)
    assert missing.returncode == 2 and "nope.pth" in missing.stderr


def test_bad_weights_paths_name_the_file(tmp_path):
    cfg = _cfg()
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_deployed_encoder(cfg, missing)
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth"):
        build_deployed_encoder(cfg, str(not_a_checkpoint))
    other = tmp_path / "other.pth"
    torch.save({"model": nn.Linear(2, 2).state_dict()}, other)
    with pytest.raises(ValueError, match="other.pth.*no AG-ReID image encoder"):
        build_deployed_encoder(cfg, str(other))
    checkpoint = _checkpoint(_trained_model(cfg), tmp_path)
    with pytest.raises(ValueError, match="model_final.pth does not fit"):
        build_deployed_encoder(_cfg("MODEL.BACKBONE.STRIDE", 16), checkpoint)
    with pytest.raises(ValueError, match="pass the config"):
        build_deployed_encoder(None, checkpoint)
    with pytest.raises(ValueError, match="No weights file"):
        build_deployed_encoder(cfg, "")


def test_quick_gelu_follows_the_clip_weights(tmp_path):
    # OpenAI's weights use QuickGELU; it is not in the state dict, so the settings must carry it.
    assert clip_uses_quick_gelu(_cfg("MODEL.BACKBONE.CLIP_NAME", "ViT-B-16", "MODEL.BACKBONE.PRETRAIN", "openai"))
    assert not clip_uses_quick_gelu(_cfg())
    with pytest.raises(FileNotFoundError, match="ViT-B-16.pt"):
        clip_uses_quick_gelu(_cfg("MODEL.BACKBONE.PRETRAIN_PATH", str(tmp_path / "ViT-B-16.pt")))
    cfg = _cfg()
    checkpoint = _checkpoint(_trained_model(cfg), tmp_path)
    assert uses_quick_gelu(build_deployed_encoder(cfg, checkpoint, quick_gelu=True))
    assert not uses_quick_gelu(build_deployed_encoder(cfg, checkpoint))
    settings = EncoderSettings.from_config(cfg, num_cameras=NUM_CAMERAS, quick_gelu=True)
    with pytest.raises(ValueError, match="QuickGELU"):
        DeployedImageEncoder.from_agreid(_trained_model(cfg), settings)
