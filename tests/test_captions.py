"""The caption corpus for SynthCLIP: determinism, wording grounded in the truth, disjoint people."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from agreid.data import captions, synthetic
from agreid.data.captions import (ATTRIBUTE_REGION, CAPTION_DIR, FRAME_WORDS, VOCABULARY, CaptionFileError,
                                  describe, generate_captions, read_captions)
from agreid.data.synthetic.people import make_identities
from agreid.modeling.prompts import TEMPLATES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    generate_captions(root, preset="pretrain-tiny", seed=0)
    return root / CAPTION_DIR


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _words(text: str) -> list:
    return re.findall(r"[a-z-]+", text.lower())


def _true_words(attributes: dict) -> set:
    return {word for name, value in attributes.items() for phrase in VOCABULARY[name][value]
            for word in phrase.split()}


def test_same_preset_and_seed_give_the_same_bytes(corpus, tmp_path):
    again = generate_captions(tmp_path, preset="pretrain-tiny", seed=0)
    assert _digest(Path(again["path"])) == _digest(corpus)
    other = generate_captions(tmp_path / "other", preset="pretrain-tiny", seed=1)
    assert _digest(Path(other["path"]))["captions.csv"] != _digest(corpus)["captions.csv"]


def test_layout_and_counts(corpus):
    preset = captions.CAPTION_PRESETS["pretrain-tiny"]
    train, val = read_captions(corpus / "captions.csv"), read_captions(corpus / "captions_val.csv")
    assert len(train) == preset.num_ids * preset.images_per_id
    assert len(val) == preset.num_val_ids * preset.val_images_per_id
    header = (corpus / "captions.csv").read_text().splitlines()[0]
    assert header == "filepath\ttitle"
    labels = json.loads((corpus / "labels.json").read_text())
    train_people = {labels[str(Path(p).relative_to(corpus))]["pid"] for p, _ in train}
    val_people = {labels[str(Path(p).relative_to(corpus))]["pid"] for p, _ in val}
    assert train_people and val_people and not train_people & val_people
    occluded = sum(labels[k]["occluder"] != "none" for k in labels)
    assert 0.2 < occluded / len(labels) < 0.4


def test_every_caption_word_is_frame_wording_or_a_true_attribute(corpus):
    people = json.loads((corpus / "attributes.json").read_text())["identities"]
    labels = json.loads((corpus / "labels.json").read_text())
    value_words = {w for values in VOCABULARY.values() for phrases in values.values()
                   for phrase in phrases for w in phrase.split()}
    for path, caption in read_captions(corpus / "captions.csv") + read_captions(corpus / "captions_val.csv"):
        truth = people[labels[str(Path(path).relative_to(corpus))]["pid"]]
        allowed = _true_words(truth)
        for word in _words(caption):
            assert word in FRAME_WORDS or word in value_words, (word, caption)
            if word in value_words and word not in FRAME_WORDS:
                assert word in allowed, f"{caption!r} says {word!r} but the person is {truth}"


def test_captions_name_only_the_truth_and_only_what_is_visible():
    rng = np.random.default_rng(0)
    person = {"body_shape": "slim", "height": "tall", "hair_length": "long", "hair_color": "blond",
              "upper_color": "purple", "upper_pattern": "stripes", "upper_sleeve": "short",
              "lower_color": "beige", "lower_length": "skirt", "bag": "backpack", "hat": "cap", "shoes": "red"}
    seen = set()
    for _ in range(200):
        caption, named = describe(person, ["head", "upper"], "car", rng)
        seen.update(named)
        for attribute in named:
            assert any(phrase in caption for phrase in VOCABULARY[attribute][person[attribute]]), (attribute, caption)
        hidden = {a for a, region in ATTRIBUTE_REGION.items() if region in ("head", "upper")}
        assert not hidden & set(named), caption
        assert "hair" not in caption and "purple" not in caption and "backpack" not in caption
    assert {"lower_color", "lower_length", "shoes"} <= seen
    # Random subsets: some captions name a single visible attribute group.
    lengths = [len(describe(person, [], "none", rng)[1]) for _ in range(200)]
    assert min(lengths) <= 2 and max(lengths) >= 8


def test_wording_varies_and_is_never_a_prompt_template(corpus):
    texts = [c for _, c in read_captions(corpus / "captions.csv")]
    assert len(set(texts)) >= 0.99 * len(texts)  # a short caption of two look-alikes may recur
    assert len({t.split(" ")[0] + " " + t.split(" ")[1] for t in texts}) >= 5  # several frames
    assert {"gray", "grey"} <= {w for t in texts for w in _words(t)}  # synonyms
    for template in TEMPLATES.values():
        if set(template.split()) == {"X"}:
            continue  # all learnable: no wording to copy
        pattern = re.compile("^" + re.escape(template.lower()).replace("x", r"\S+") + "$")
        assert not any(pattern.match(t.lower()) for t in texts), template


def test_no_person_of_the_corpus_is_a_reid_identity(corpus):
    people = json.loads((corpus / "attributes.json").read_text())["identities"]
    keys = {tuple(p[name] for name in synthetic.ATTRIBUTE_SCHEMA) for p in people.values()}
    for name, preset in synthetic.PRESETS.items():
        identities, _ = make_identities(preset, 0)
        reid = {tuple(i["attributes"][a] for a in synthetic.ATTRIBUTE_SCHEMA) for i in identities.values()}
        assert not keys & reid, name
    # Appearances come from another random stream too: no identity's drawing parameters recur.
    corpus_params = [p["params"] for p in captions._make_people(captions.CAPTION_PRESETS["pretrain-tiny"], 0).values()]
    tiny, _ = make_identities(synthetic.PRESETS["tiny"], 0)
    assert not any(i["params"] == p for i in tiny.values() for p in corpus_params)


def test_bad_caption_files_are_named(tmp_path, corpus):
    with pytest.raises(CaptionFileError, match="no such captions file"):
        read_captions(tmp_path / "captions.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,caption\nx.jpg,a person\n")
    with pytest.raises(CaptionFileError, match=r"bad.csv: expected tab-separated columns"):
        read_captions(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("filepath\ttitle\nnowhere.jpg\ta person in red\n")
    with pytest.raises(CaptionFileError, match=r"missing.csv, line 2: image .*nowhere.jpg does not exist"):
        read_captions(missing)


def test_preview_shows_images_and_captions(corpus, tmp_path):
    from PIL import Image

    out = captions.write_caption_preview(corpus, tmp_path / "sheet.png", count=6, columns=3)
    with Image.open(out) as sheet:
        assert sheet.size == (3 * captions.PREVIEW_CELL[0], 2 * captions.PREVIEW_CELL[1])


def test_short_hair_under_a_hat_is_never_described():
    rng = np.random.default_rng(1)
    person = {"body_shape": "broad", "height": "short", "hair_length": "short", "hair_color": "grey",
              "upper_color": "red", "upper_pattern": "plain", "upper_sleeve": "long", "lower_color": "blue",
              "lower_length": "trousers", "bag": "none", "hat": "beanie", "shoes": "black"}
    captions_of = [describe(person, [], "none", rng)[0] for _ in range(100)]
    assert not any("hair" in c or "grey" in c or "gray" in c for c in captions_of)
    assert any("beanie" in c for c in captions_of)
    long_haired = dict(person, hair_length="long")
    assert any("grey hair" in c or "gray hair" in c for c in (describe(long_haired, [], "none", rng)[0] for _ in range(50)))
    assert not captions.is_visible("hair_color", person, []) and captions.is_visible("hair_color", long_haired, [])
    assert not captions.is_visible("shoes", person, ["feet"]) and captions.is_visible("shoes", person, ["head"])
