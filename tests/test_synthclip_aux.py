"""SynthCLIP's pretraining-only auxiliary objectives (attribute head, caption head), by hand; the
shipped file against the code's recipe."""
import json
import re
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.loss import CoCaLoss
from torch.nn import functional as F

from agreid import synthclip
from agreid.data.synthetic import ATTRIBUTE_SCHEMA
from agreid.serialization import safetensors_metadata
from agreid.synthclip import IGNORE, AttributeHead, CaptionHead, PretrainConfig

REPO = Path(__file__).resolve().parents[1]


def test_attribute_head_loss_is_the_mean_cross_entropy_over_shown_attributes():
    torch.manual_seed(0)
    head = AttributeHead(embed_dim=5)
    features = torch.randn(3, 5)
    targets = torch.full((3, len(ATTRIBUTE_SCHEMA)), IGNORE)
    targets[0, 0], targets[2, 0] = 1, 2           # attribute 0 shown on images 0 and 2
    targets[1, 3] = 0                             # attribute 3 shown on image 1 only; the rest on none
    logits = 10.0 * F.normalize(features, dim=1) @ F.normalize(head.weight, dim=1).T  # a cosine classifier
    sizes = [len(v) for v in ATTRIBUTE_SCHEMA.values()]
    start3 = sum(sizes[:3])
    by_hand_0 = (F.cross_entropy(logits[[0], :sizes[0]], torch.tensor([1]))
                 + F.cross_entropy(logits[[2], :sizes[0]], torch.tensor([2]))) / 2
    by_hand_3 = F.cross_entropy(logits[[1], start3:start3 + sizes[3]], torch.tensor([0]))
    assert head(features, targets).item() == pytest.approx(((by_hand_0 + by_hand_3) / 2).item(), rel=1e-6)
    # A batch that shows no attribute at all gives 0, not NaN (cross_entropy's mean over nothing).
    empty = head(features, torch.full_like(targets, IGNORE))
    assert empty.item() == 0.0 and empty.requires_grad


def test_attribute_weights_scale_each_attributes_term():
    torch.manual_seed(0)
    names = list(ATTRIBUTE_SCHEMA)
    plain = AttributeHead(embed_dim=5)
    weighted = AttributeHead(embed_dim=5, attribute_weights=[(names[3], 4.0)])
    weighted.load_state_dict(plain.state_dict())
    features = torch.randn(3, 5)
    targets = torch.full((3, len(names)), IGNORE)
    targets[0, 0], targets[1, 3] = 1, 0
    # Per attribute shown, the plain head's terms; the weighted head: (CE_0 + 4 CE_3) / 2.
    only_0, only_3 = targets.clone(), targets.clone()
    only_0[:, 3], only_3[:, 0] = IGNORE, IGNORE
    ce_0, ce_3 = plain(features, only_0).item(), plain(features, only_3).item()
    assert plain(features, targets).item() == pytest.approx((ce_0 + ce_3) / 2, rel=1e-6)
    assert weighted(features, targets).item() == pytest.approx((ce_0 + 4.0 * ce_3) / 2, rel=1e-6)


def test_attribute_weights_are_checked_and_parsed():
    from agreid.pretrain_clip import _attribute_weights

    with pytest.raises(ValueError, match="unknown attribute 'hats'"):
        PretrainConfig(aux_attribute_weights=[("hats", 2.0)])
    with pytest.raises(ValueError, match="hat has weight -1.0"):
        PretrainConfig(aux_attribute_weights=[("hat", -1)])
    assert _attribute_weights(["hat=4", "bag=2.5"]) == (("hat", 4.0), ("bag", 2.5))
    assert _attribute_weights(None) == PretrainConfig().aux_attribute_weights
    with pytest.raises(ValueError, match="expected ATTRIBUTE=WEIGHT"):
        _attribute_weights(["hat"])
    # The recipe (and so the shipped file's fingerprint) records them.
    assert synthclip.recipe_fingerprint(PretrainConfig(aux_attribute_weights=[("hat", 3.0)])) \
        != synthclip.recipe_fingerprint(PretrainConfig(aux_attribute_weights=[("hat", 2.0)]))


def test_attribute_targets_follow_the_people_and_what_each_image_shows(tmp_path):
    people = {"00001": {a: v[0] for a, v in ATTRIBUTE_SCHEMA.items()}}
    people["00001"].update(hair_color=ATTRIBUTE_SCHEMA["hair_color"][2], hat="cap", hair_length="short")
    (tmp_path / "attributes.json").write_text(json.dumps({"identities": people}))
    (tmp_path / "labels.json").write_text(json.dumps({
        "train/a.jpg": {"pid": "00001", "regions": []},
        "train/b.jpg": {"pid": "00001", "regions": ["lower"]}}))
    targets = synthclip.attribute_targets(tmp_path, [str(tmp_path / "train/a.jpg"), str(tmp_path / "train/b.jpg")])
    column = {a: i for i, a in enumerate(ATTRIBUTE_SCHEMA)}
    # Short hair under a cap is not drawn: hair colour is not a target of either image.
    assert targets[0, column["hair_color"]] == IGNORE and targets[0, column["hat"]] == 1
    assert targets[0, column["lower_color"]] == 0 and targets[1, column["lower_color"]] == IGNORE
    assert targets[1, column["upper_color"]] == 0
    with pytest.raises(synthclip.CaptionFileError, match="labels.json has no entry for train/c.jpg"):
        synthclip.attribute_targets(tmp_path, [str(tmp_path / "train/c.jpg")])
    (tmp_path / "labels.json").unlink()
    with pytest.raises(synthclip.CaptionFileError, match="labels.json is missing"):
        synthclip.attribute_targets(tmp_path, [str(tmp_path / "train/a.jpg")])


def test_caption_head_renumbers_the_corpus_vocabulary_and_predicts_the_next_token():
    tokens = torch.tensor([[49406, 320, 1125, 49407, 0, 0],
                           [49406, 1125, 49407, 0, 0, 0]])
    vocabulary = synthclip.corpus_vocabulary(tokens)
    assert vocabulary.tolist() == [0, 320, 1125, 49406, 49407]
    torch.manual_seed(0)
    head = CaptionHead(embed_dim=8, vocabulary=vocabulary, context_length=6, width=16, layers=1, heads=2)
    assert head.compact(tokens).tolist() == [[3, 1, 2, 4, 0, 0], [3, 2, 4, 0, 0, 0]]
    # open_clip leaves the decoder's output projection uninitialised (torch.empty); ours is not.
    assert torch.isfinite(head.decoder.text_projection).all()
    assert head.decoder.text_projection.std().item() == pytest.approx(16 ** -0.5, rel=0.3)
    image_features = F.normalize(torch.randn(2, 8), dim=-1)
    logits, labels = head(image_features, tokens)
    assert logits.shape == (2, 5, 5) and labels.tolist() == [[1, 2, 4, 0, 0], [2, 4, 0, 0, 0]]
    loss = CoCaLoss(caption_loss_weight=1.0, clip_loss_weight=0.0, pad_id=0)(
        image_features, image_features, logits, labels, torch.tensor(1.0))[1]
    by_hand = F.cross_entropy(logits[labels != 0], labels[labels != 0])  # padding is ignored
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # The caption depends on the image: the gradient reaches the image embedding.
    image_features.requires_grad_(True)
    head(image_features, tokens)[0].sum().backward()
    assert image_features.grad.abs().sum() > 0


def test_aux_weight_schedule_and_bad_recipes():
    constant = PretrainConfig(aux="attributes", aux_weight=2.0)
    assert constant.aux_weight_at(0, 100) == constant.aux_weight_at(99, 100) == 2.0
    linear = PretrainConfig(aux="caption", aux_weight=2.0, aux_schedule="linear")
    assert [linear.aux_weight_at(s, 100) for s in (0, 50, 100)] == [2.0, 1.0, 0.0]
    assert PretrainConfig(aux="none", aux_weight=5.0).aux_weight_at(0, 10) == 0.0
    with pytest.raises(ValueError, match="unknown auxiliary objective aux='captions'"):
        PretrainConfig(aux="captions")
    with pytest.raises(ValueError, match="unknown aux_schedule 'cosine'"):
        PretrainConfig(aux_schedule="cosine")


def test_recipe_fingerprint_follows_the_recipe_and_the_corpus():
    base = synthclip.recipe_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{8}", base) and base == synthclip.recipe_fingerprint(PretrainConfig())
    assert synthclip.recipe_fingerprint(PretrainConfig(aux="none")) != base
    assert synthclip.recipe_fingerprint(PretrainConfig(epochs=6)) != base
    assert synthclip.recipe_fingerprint(preset="pretrain-tiny") != base
    assert synthclip.shipped_path() == f"pretrained/SynthCLIP-Tiny-{base}.safetensors"


def _shipped() -> Path:
    return REPO / synthclip.shipped_path()


def test_shipped_synthclip_matches_the_codes_recipe():
    """The repository ships the SynthCLIP of the code's recipe: change the recipe, retrain it."""
    shipped = sorted((REPO / "pretrained").glob("SynthCLIP-Tiny-*.safetensors"))
    assert [p.name for p in shipped] == [Path(synthclip.shipped_path()).name], (
        f"the shipped SynthCLIP is not the code's recipe ({synthclip.shipped_path()}): run `make synthclip`, "
        f"commit the new file, remove the old one and point configs/Synthetic/agreid.yml and the Makefile at it")
    path = _shipped()
    assert path.stat().st_size <= 20 * 2 ** 20
    record = synthclip.read_synthclip_record(path)
    assert record["recipe_fingerprint"] == synthclip.recipe_fingerprint()
    assert record["config"] == {**json.loads(json.dumps(synthclip.asdict(PretrainConfig()))),
                                "crop_scale": list(PretrainConfig().crop_scale)}
    assert safetensors_metadata(str(path))["name"] == record["config"]["model"]
    # The configs and `make demo` use it.
    assert f"PRETRAIN_PATH: {synthclip.shipped_path()}" in (REPO / "configs/Synthetic/agreid.yml").read_text()
    assert f"SYNTHCLIP ?= {synthclip.shipped_path()}" in (REPO / "Makefile").read_text()


def test_shipped_synthclip_is_an_ordinary_clip_checkpoint():
    path = _shipped()
    if not path.is_file():
        pytest.fail(f"{path} is missing (see test_shipped_synthclip_matches_the_codes_recipe)")
    name = synthclip.read_synthclip_record(path)["config"]["model"]
    model = open_clip.create_model(name, pretrained=str(path))
    reference = open_clip.create_model(name)
    saved = synthclip.load_checkpoint_file(str(path))
    # The CLIP towers and nothing else (the auxiliary head was discarded), in float16.
    assert set(saved) == set(reference.state_dict())
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    assert torch.equal(model.visual.conv1.weight, saved["visual.conv1.weight"].float())
