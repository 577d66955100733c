"""Prompt templates and the splice of the per-identity learnable tokens V."""
import re

import open_clip
import pytest
import torch
from torch import nn

import agreid.modeling  # noqa: F401  (registers the tiny CLIP config)
from agreid.modeling.prompts import TEMPLATES, PromptLearner, parse_template

TOKENIZER = open_clip.get_tokenizer("AGReID-Tiny-ViT")
(X_ID,) = TOKENIZER.encode("X")


def _learner(template="d", num_ids=5, width=16):
    torch.manual_seed(0)
    embedding = nn.Embedding(TOKENIZER.vocab_size, width)
    return PromptLearner(template, num_ids=num_ids, token_embedding=embedding, tokenizer=TOKENIZER), embedding


@pytest.mark.parametrize(
    "name, num_slots", [("default", 4), ("longer", 10), ("random", 10), ("a", 6), ("b", 10), ("c", 10), ("d", 10),
                        ("d_known", 10), ("d_filler", 10)]
)
def test_named_templates(name, num_slots):
    parsed = parse_template(name, TOKENIZER)
    assert parsed.sentence == TEMPLATES[name]
    assert len(parsed.slot_positions) == num_slots == len(re.findall(r"\bX\b", TEMPLATES[name]))


def test_template_d_slots_sit_after_their_attribute_words():
    parsed = parse_template("d", TOKENIZER)
    ids = parsed.token_ids.tolist()
    words = [TOKENIZER.decode([token]).strip() for token in ids[1:ids.index(TOKENIZER.eot_token_id)]]
    assert " ".join(words) == (
        "a photo of a x x person with x x hair , wearing x x upper clothes and x x lower clothes , carrying x x ."
    )
    slots = parsed.slot_positions.tolist()
    assert [ids[p] for p in slots] == [X_ID] * 10
    # Position 0 is the start-of-text token, so word k sits at position k + 1.
    assert slots == [k + 1 for k, word in enumerate(words) if word == "x"]
    assert ids[0] == TOKENIZER.sot_token_id


def _words(parsed):
    ids = parsed.token_ids.tolist()
    return [TOKENIZER.decode([token]).strip() for token in ids[1:ids.index(TOKENIZER.eot_token_id)]]


@pytest.mark.parametrize("model_name", ["AGReID-Tiny-ViT", "ViT-B-16"])
@pytest.mark.parametrize("control", ["d_known", "d_filler"])
def test_study_controls_are_shaped_exactly_like_d(control, model_name):
    tokenizer = open_clip.get_tokenizer(model_name)
    d, other = parse_template("d", tokenizer), parse_template(control, tokenizer)
    length = len(tokenizer.encode(TEMPLATES["d"])) + 2  # + start and end of text
    assert length == 29 and len(tokenizer.encode(TEMPLATES[control])) + 2 == length
    assert int((d.token_ids != 0).sum()) == int((other.token_ids != 0).sum()) == length
    assert other.slot_positions.tolist() == d.slot_positions.tolist() == [5, 6, 9, 10, 14, 15, 19, 20, 25, 26]
    assert other.token_ids[length - 1] == d.token_ids[length - 1] == tokenizer.eot_token_id


def test_study_control_words():
    # Word k sits at position k + 1; the X pairs at positions 5-6, 9-10, 14-15, 19-20, 25-26.
    assert " ".join(_words(parse_template("d_known", TOKENIZER))) == (
        "a photo of a x x top and x x bottoms , wearing x x upper clothes and x x lower clothes , in x x shoes"
    )
    assert " ".join(_words(parse_template("d_filler", TOKENIZER))) == (
        "a photo of a x x person with x x stuff , with x x some things and x x other things , with x x ."
    )
    # d_known: every pair is followed by a garment noun whose colour SynthCLIP knows (docs/SYNTHCLIP.md).
    words = _words(parse_template("d_known", TOKENIZER))
    after_pairs = [words[k + 1] for k in range(len(words) - 1) if words[k] == "x" and words[k + 1] != "x"]
    assert after_pairs == ["top", "bottoms", "upper", "lower", "shoes"]
    # d_filler: none of d's attribute words is left.
    filler = set(_words(parse_template("d_filler", TOKENIZER)))
    assert not filler & {"hair", "wearing", "upper", "lower", "clothes", "carrying"}


def test_splice_puts_v_exactly_at_the_x_positions():
    learner, embedding = _learner("d")
    pids = torch.tensor([3, 0, 3])
    prompts, token_ids = learner(pids)
    assert prompts.shape == (3, TOKENIZER.context_length, 16)
    assert torch.equal(token_ids, parse_template("d", TOKENIZER).token_ids.expand(3, -1))
    slots = learner.slot_positions
    fixed = torch.ones(TOKENIZER.context_length, dtype=torch.bool)
    fixed[slots] = False
    with torch.no_grad():
        expected_fixed = embedding(token_ids[0])
    for row, pid in enumerate(pids.tolist()):
        assert torch.equal(prompts[row, slots], learner.pseudo_labels[pid])
        assert torch.equal(prompts[row, fixed], expected_fixed[fixed])  # fixed tokens untouched
    assert learner.num_learnable_tokens == 10 and learner.pseudo_labels.shape == (5, 10, 16)


def test_gradient_reaches_only_the_rows_of_the_batch_identities():
    learner, _ = _learner("default")
    prompts, _ = learner(torch.tensor([1, 1, 4]))
    prompts.sum().backward()
    touched = learner.pseudo_labels.grad.abs().sum(dim=(1, 2)) > 0
    assert touched.tolist() == [False, True, False, False, True]
    assert learner.template_embedding.grad is None


def test_init_std():
    embedding = nn.Embedding(TOKENIZER.vocab_size, 64)
    learner = PromptLearner("d", num_ids=200, token_embedding=embedding, tokenizer=TOKENIZER, init_std=0.02)
    assert learner.pseudo_labels.std().item() == pytest.approx(0.02, rel=0.05)


def test_user_sentence():
    parsed = parse_template("A X person carrying a X bag.", TOKENIZER)
    assert len(parsed.slot_positions) == 2 and parsed.slot_positions.tolist() == [2, 6]


@pytest.mark.parametrize("template", ["e", "A photo of a person.", "A photo of a Xylophone."])
def test_template_without_x_is_refused_by_name(template):
    with pytest.raises(ValueError, match=template.replace(".", r"\.")):
        parse_template(template, TOKENIZER)


def test_too_long_template_is_refused():
    with pytest.raises(ValueError, match="tokens"):
        parse_template(" ".join(["X"] * 80), TOKENIZER)


@pytest.mark.parametrize("control", ["d_known", "d_filler"])
def test_control_leaves_are_the_at_row_with_another_template(control):
    import os

    import agreid

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "Synthetic", "ablations")
    leaf = agreid.get_agreid_cfg(os.path.join(root, "template_controls", f"at_d_{control[2:]}.yml"))
    at = agreid.get_agreid_cfg(os.path.join(root, "at.yml"))
    assert leaf.MODEL.PROMPT.TEMPLATE == control and leaf.MODEL.ATTR.ENABLED is False
    assert leaf.OUTPUT_DIR == f"logs/synthetic/ablations/template_controls/at_d_{control[2:]}"
    leaf.defrost()
    leaf.MODEL.PROMPT.TEMPLATE, leaf.OUTPUT_DIR = at.MODEL.PROMPT.TEMPLATE, at.OUTPUT_DIR
    assert leaf == at
