"""SynthCLIP: pretraining lowers the contrastive loss, resumes exactly, loads where configs expect it."""
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.loss import ClipLoss

from agreid import synthclip
from agreid.data.captions import CAPTION_DIR, generate_captions, read_captions
from agreid.synthclip import PretrainConfig, pretrain

REPO = Path(__file__).resolve().parents[1]
TINY = dict(batch_size=32, warmup_steps=3, lr=1e-3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    generate_captions(root, preset="pretrain-tiny", seed=0)
    return root / CAPTION_DIR


def _fixed_batch_loss(model, corpus, count=64):
    _, _, transform = synthclip.build_model_and_transforms("AGReID-Tiny-ViT")
    pairs = read_captions(corpus / "captions.csv")[:count]
    tokenizer = open_clip.get_tokenizer("AGReID-Tiny-ViT")
    images = torch.stack([transform(__import__("PIL.Image", fromlist=["Image"]).open(p).convert("RGB"))
                          for p, _ in pairs])
    model.eval()
    with torch.no_grad():
        return ClipLoss()(*model(images, tokenizer([c for _, c in pairs]))[:3]).item()


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthclip") / "synthclip.pt"
    record = pretrain(corpus, out, PretrainConfig(epochs=6, **TINY), num_workers=0)
    return out, record


def test_pretraining_lowers_the_contrastive_loss(corpus, pretrained):
    out, record = pretrained
    torch.manual_seed(0)
    untrained = open_clip.create_model("AGReID-Tiny-ViT")
    trained = open_clip.create_model("AGReID-Tiny-ViT", pretrained=str(out))
    before, after = _fixed_batch_loss(untrained, corpus), _fixed_batch_loss(trained, corpus)
    assert after < before - 0.3, (before, after)
    assert record["steps"] == 6 * (192 // 32)
    assert record["image_mean"] == [0.5, 0.5, 0.5]
    assert not Path(str(out) + ".resume").exists()


def test_config_loads_it_through_pretrain_path(pretrained):
    import agreid
    from fastreid.modeling import build_model

    out, _ = pretrained
    cfg = agreid.get_agreid_cfg(str(REPO / "configs/Synthetic/agreid.yml"), [
        "MODEL.BACKBONE.PRETRAIN_PATH", str(out), "MODEL.HEADS.NUM_CLASSES", "4", "MODEL.BACKBONE.NUM_CAMERAS", "2",
        "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    saved = torch.load(out, weights_only=True)["state_dict"]
    conv = model.backbone.visual.conv1.weight
    assert torch.equal(conv, saved["visual.conv1.weight"])
    assert torch.equal(model.text_encoder.text_projection, saved["text_projection"])


def test_interrupted_run_resumes_to_the_same_weights(corpus, tmp_path, monkeypatch):
    config = PretrainConfig(epochs=2, **TINY)
    straight = pretrain(corpus, tmp_path / "straight.pt", config, num_workers=0)

    original = synthclip._lr_at
    steps_per_epoch = 192 // 32

    def killed_in_epoch_two(step, total, cfg):
        if step == steps_per_epoch + 1:
            raise KeyboardInterrupt
        return original(step, total, cfg)

    monkeypatch.setattr(synthclip, "_lr_at", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain(corpus, tmp_path / "resumed.pt", config, num_workers=0)
    assert (tmp_path / "resumed.pt.resume").is_file() and not (tmp_path / "resumed.pt").exists()
    monkeypatch.setattr(synthclip, "_lr_at", original)
    resumed = pretrain(corpus, tmp_path / "resumed.pt", config, num_workers=0)
    assert resumed["steps"] == straight["steps"]
    a = torch.load(tmp_path / "straight.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _tool(*args):
    return subprocess.run([sys.executable, str(REPO / "tools/pretrain_clip.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def test_tool_reuses_an_up_to_date_file_and_names_bad_input(corpus, tmp_path):
    out = tmp_path / "s.pt"
    args = ["--data", str(corpus), "--output", str(out), "--epochs", "1", "--batch-size", "64", "--workers", "0"]
    first = _tool(*args)
    assert first.returncode == 0, first.stderr
    assert "SynthCLIP written to" in first.stdout
    second = _tool(*args)
    assert second.returncode == 0 and "is up to date" in second.stdout and "reusing it" in second.stdout

    missing = _tool("--data", str(tmp_path / "nowhere"), "--output", str(out))
    assert missing.returncode == 2 and "nowhere/captions.csv: no such captions file" in missing.stderr
    unknown = _tool("--data", str(corpus), "--output", str(out), "--model", "AGReID-Huge")
    assert unknown.returncode == 2 and "unknown open_clip model 'AGReID-Huge'" in unknown.stderr
    for line in unknown.stderr.splitlines():
        assert not line.startswith("Traceback")


def test_zero_shot_of_a_short_pretraining_is_above_chance(corpus, pretrained):
    model, transform, tokenizer, record = synthclip.load_synthclip(pretrained[0])
    assert record["config"]["model"] == "AGReID-Tiny-ViT"
    rows = {r.attribute: r for r in synthclip.zero_shot_attributes(model, tokenizer, corpus, transform)}
    assert set(rows) == set(synthclip.ZERO_SHOT_PROMPTS)
    best = max(rows[a].accuracy - rows[a].majority for a in ("lower_color", "upper_color", "shoes"))
    assert best > 0.1, {a: (r.accuracy, r.majority) for a, r in rows.items()}


def test_retrieval_recall_by_hand():
    images = torch.eye(3)
    texts = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])  # pairs 1 and 2 swapped
    recall = synthclip.retrieval_recall(images, texts, ks=(1, 2))
    assert recall["image_to_text_R@1"] == pytest.approx(1 / 3)
    assert recall["text_to_image_R@1"] == pytest.approx(1 / 3)
    assert recall["image_to_text_R@2"] == pytest.approx(1.0)
