"""tools/convert_clipreid.py (agreid.cli.convert_clipreid) on a state dict with CLIP-ReID's key names and shapes."""
import os

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import _warm
import agreid
from _tiny_model import SIZE
from agreid.cli import convert_clipreid
from agreid.engine import AGReIDTrainer

# Trains, exports or starts processes: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(REPO, "configs/Synthetic/clipreid.yml")
CLIP_NAME = "AGReID-Tiny-ViT"
NUM_IDS, NUM_CAMS, STRIDE = 5, 3, 12
NO_PRETRAINED = ["MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", "", "MODEL.DEVICE", "cpu", *SIZE]


def _grid(visual):
    height, width = (int(v) for v in SIZE[1].strip("[]").split(","))
    patch = visual.patch_size[0]
    return (height - patch) // STRIDE + 1, (width - patch) // STRIDE + 1


@pytest.fixture(scope="module")
def clipreid():
    """``(state_dict, clip_model)``: what CLIP-ReID's build_transformer saves, from a random tiny CLIP."""
    torch.manual_seed(0)
    clip = open_clip.create_model(CLIP_NAME).eval()
    visual = clip.visual
    width, embed, text_width = visual.transformer.width, visual.proj.shape[1], clip.token_embedding.weight.shape[1]
    grid = _grid(visual)
    state = {f"image_encoder.{k}": v.clone() for k, v in visual.state_dict().items()}
    # CLIP-ReID resizes the position embedding to its grid when it builds the model.
    state["image_encoder.positional_embedding"] = torch.randn(grid[0] * grid[1] + 1, width) * 0.1
    state["cv_embed"] = torch.randn(NUM_CAMS, width) * 0.1
    for name, dim in (("bottleneck", width), ("bottleneck_proj", embed)):
        norm = nn.BatchNorm1d(dim)
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2)
        state.update({f"{name}.{k}": v for k, v in norm.state_dict().items()})
    state["classifier.weight"] = torch.randn(NUM_IDS, width)
    state["classifier_proj.weight"] = torch.randn(NUM_IDS, embed)
    tokens = open_clip.get_tokenizer(CLIP_NAME)(["A photo of a X X X X person."])
    with torch.no_grad():
        embedding = clip.token_embedding(tokens)  # (1, 77, text_width)
    state["prompt_learner.cls_ctx"] = torch.randn(NUM_IDS, 4, text_width) * 0.02
    state["prompt_learner.token_prefix"] = embedding[:, :5]
    state["prompt_learner.token_suffix"] = embedding[:, 9:]
    for module in ("transformer", "ln_final"):
        state.update({f"text_encoder.{module}.{k}": v for k, v in getattr(clip, module).state_dict().items()})
    state["text_encoder.positional_embedding"] = clip.positional_embedding.detach().clone()
    state["text_encoder.text_projection"] = clip.text_projection.detach().clone()
    return {f"module.{k}": v for k, v in state.items()}, clip, tokens  # saved from DataParallel


def _clipreid_image_features(state, images, camids, cfg):
    """CLIP-ReID's test feature computed by hand from its own weights (neck feat before)."""
    visual = open_clip.create_model(CLIP_NAME).visual.eval()
    visual.positional_embedding = nn.Parameter(state["module.image_encoder.positional_embedding"])
    visual.load_state_dict({k[len("module.image_encoder."):]: v for k, v in state.items()
                            if k.startswith("module.image_encoder.")})
    visual.conv1.stride = (STRIDE, STRIDE)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        x = visual.conv1((images - mean) / std).flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.expand(len(x), 1, -1), x], dim=1) + visual.positional_embedding
        x[:, 0] = x[:, 0] + state["module.cv_embed"][camids]  # SIE_COE 1, after the position embedding
        x = visual.ln_post(visual.transformer(visual.ln_pre(x)))
        cls = x[:, 0]
        return F.normalize(torch.cat([cls, cls @ visual.proj], dim=1), dim=1)


def test_converted_model_gives_clipreids_features(clipreid, tmp_path, capsys):
    state, clip, tokens = clipreid
    source = tmp_path / "ViT-B-16_60.pth"
    torch.save(state, source)
    output = tmp_path / "converted.pth"
    assert convert_clipreid.main(["--clipreid", str(source), "--config-file", BASELINE, "--output", str(output), *NO_PRETRAINED]) == 0
    assert f"{NUM_IDS} identities, {NUM_CAMS} SIE cameras" in capsys.readouterr().out
    assert torch.load(output, weights_only=True)["model"]  # plain tensors only

    # Loaded as tools/train_net.py --eval-only loads it.
    cfg = agreid.get_agreid_cfg(BASELINE, [*NO_PRETRAINED, "MODEL.WEIGHTS", str(output)])
    model = AGReIDTrainer.build_trained_model(cfg)
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(4, 3, *model.backbone.input_size, generator=generator) * 255
    camids = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        ours = model({"images": images, "camids": camids})
    reference = _clipreid_image_features(state, images, camids, cfg)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)

    # The identities' prompts encode as CLIP-ReID's text encoder encodes them.
    with torch.no_grad():
        prompts = torch.cat([state["module.prompt_learner.token_prefix"].expand(NUM_IDS, -1, -1),
                             state["module.prompt_learner.cls_ctx"],
                             state["module.prompt_learner.token_suffix"].expand(NUM_IDS, -1, -1)], dim=1)
        x = clip.transformer(prompts + clip.positional_embedding, attn_mask=clip.attn_mask)
        x = clip.ln_final(x)[torch.arange(NUM_IDS), tokens.argmax(dim=-1).expand(NUM_IDS)] @ clip.text_projection
    torch.testing.assert_close(model.text_features, x, rtol=0, atol=1e-5)


def test_conversion_errors_name_what_differs(clipreid, tmp_path, capsys):
    state, _, _ = clipreid
    source = tmp_path / "clipreid.pth"
    torch.save(state, source)

    def error(*argv):
        assert convert_clipreid.main(["--config-file", BASELINE, "--output", str(tmp_path / "out.pth"), *argv]) == 2
        return capsys.readouterr().err

    message = error("--clipreid", str(source), *NO_PRETRAINED, "MODEL.BACKBONE.STRIDE", "16")
    assert "backbone.visual.positional_embedding" in message and "STRIDE" in message
    other = tmp_path / "resnet.pth"
    torch.save(nn.Linear(2, 2).state_dict(), other)
    assert "resnet.pth is not a CLIP-ReID checkpoint" in error("--clipreid", str(other), *NO_PRETRAINED)
    assert "missing.pth" in error("--clipreid", str(tmp_path / "missing.pth"), *NO_PRETRAINED)
    extra = dict(state, **{"module.view_embed": torch.zeros(2, 2)})
    torch.save(extra, source)
    assert "view_embed" in error("--clipreid", str(source), *NO_PRETRAINED)


@pytest.mark.parametrize("how", ["nan", "int64"])
def test_damaged_weights_are_refused_and_nothing_is_written(how, clipreid, tmp_path):
    """NaN in a weight, or a weight cast to an integer type: one error line naming it, exit 2, no output."""
    state, _, _ = clipreid
    key = "module.image_encoder.conv1.weight"
    damaged = dict(state, **{key: state[key].clone().fill_(float("nan")) if how == "nan" else state[key].to(torch.int64)})
    source = tmp_path / "ViT-B-16_60.pth"
    torch.save(damaged, source)
    output = tmp_path / "converted.pth"
    # python tools/convert_clipreid.py ...: a process forked from a warm interpreter (tests/_warm.py).
    proc = _warm.run("tools/convert_clipreid.py", "--clipreid", str(source), "--config-file", BASELINE,
                     "--output", str(output), *NO_PRETRAINED, cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, proc.stderr
    expected = "holds NaN/Inf" if how == "nan" else "is int64, expected a floating tensor"
    assert f"{source}: image_encoder.conv1.weight {expected}" in error[0]
    assert not output.exists() and not os.path.exists(f"{output}.tmp")


def test_nan_output_is_not_written(clipreid, tmp_path, capsys, monkeypatch):
    """Weights that turn NaN during the conversion (text features) are not written either."""
    state, _, _ = clipreid
    source = tmp_path / "clipreid.pth"
    torch.save(state, source)
    output = tmp_path / "converted.pth"
    build = convert_clipreid.build_converted_model

    def build_nan(*args, **kwargs):
        model, cfg = build(*args, **kwargs)
        model.text_features.fill_(float("nan"))
        return model, cfg

    monkeypatch.setattr(convert_clipreid, "build_converted_model", build_nan)
    assert convert_clipreid.main(["--clipreid", str(source), "--config-file", BASELINE, "--output", str(output),
                                  *NO_PRETRAINED]) == 2
    assert "text_features holds NaN/Inf" in capsys.readouterr().err
    assert not output.exists()
