"""A captioned corpus of synthetic pedestrians, for pretraining a small CLIP offline (SynthCLIP).

The people are drawn by the same renderer as :mod:`agreid.data.synthetic`, but their identities,
cameras and image plan come from random streams of their own, and no person has the attribute
combination of any identity of a ReID preset made with the same seed: the corpus plays the part
of the web data a CLIP is pretrained on, the ReID presets that of the downstream data sets.

Every image gets one caption written from its ground truth with varied wording: several
sentence frames, synonyms, the attributes in random order, a random subset of them (so that
single words get grounded), and for an occluded image only what is visible, sometimes naming
the occluder. Layout, in open_clip's CSV format (tab-separated ``filepath`` and ``title``;
paths relative to the folder)::

    ROOT/SyntheticCaptions/
      train/NNNNN_cCC_K.jpg     pretraining images
      val/NNNNN_cCC_K.jpg       held-out people (zero-shot evaluation)
      captions.csv              filepath<TAB>title, the pretraining pairs
      captions_val.csv          the held-out pairs
      labels.json               {filepath: {"pid", "camid", "occluder", "regions"}}
      attributes.json           {"schema": ..., "identities": {"NNNNN": {attribute: value}}}
      done.json                 written last: preset, seed, version, counts

The same preset and seed give the same bytes. Like :mod:`agreid.data.synthetic`, this module
imports neither torch nor fastreid.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .synthetic.drawing import make_cameras, render_images
from .synthetic.people import appearance, make_identities, occluded_flags, sample_identity
from .synthetic.schema import (ATTRIBUTE_SCHEMA, ATTRIBUTES_FILE, IMAGE_HEIGHT, IMAGE_WIDTH, OCCLUDER_TYPES, PRESETS,
                               STREAM, PathLike)
from .synthetic.writer import build_folder_once, write_json

__all__ = [
    "ATTRIBUTE_REGION",
    "CAPTIONS_FILE",
    "CAPTION_DIR",
    "CAPTION_PRESETS",
    "CaptionFileError",
    "CaptionPreset",
    "FRAME_WORDS",
    "LABELS_FILE",
    "VAL_CAPTIONS_FILE",
    "VOCABULARY",
    "describe",
    "generate_captions",
    "is_visible",
    "read_captions",
    "reid_attribute_keys",
    "write_caption_preview",
]

logger = logging.getLogger(__name__)

CAPTION_DIR = "SyntheticCaptions"
CAPTIONS_FILE = "captions.csv"
VAL_CAPTIONS_FILE = "captions_val.csv"
LABELS_FILE = "labels.json"
# Bumped whenever the images or the wording change.
CAPTIONS_VERSION = 2
CSV_HEADER = ("filepath", "title")


@dataclass(frozen=True)
class CaptionPreset:
    """How many people, cameras and images a caption corpus has.

    Args:
        num_ids: people of the pretraining split.
        images_per_id: images of each of them.
        num_val_ids: held-out people (disjoint), for zero-shot evaluation.
        val_images_per_id: images of each held-out person.
        num_cameras: cameras 1..num_cameras (drawn from the corpus's own stream).
        occluded_ratio: share of images with an occluder.
    """

    num_ids: int
    images_per_id: int
    num_val_ids: int
    val_images_per_id: int
    num_cameras: int = 12
    occluded_ratio: float = 0.3


CAPTION_PRESETS: Dict[str, CaptionPreset] = {
    # For unit tests: a few seconds.
    "pretrain-tiny": CaptionPreset(num_ids=480, images_per_id=2, num_val_ids=48, val_images_per_id=2, num_cameras=6),
    # For SynthCLIP: 30,000 pretraining pairs of 10,000 people, 2,000 held-out pairs.
    "pretrain": CaptionPreset(num_ids=10000, images_per_id=3, num_val_ids=1000, val_images_per_id=2),
}

# ---------------------------------------------------------------------------------------------
# Wording. Every phrase is data: tests check that each word of a caption is either frame
# wording or a phrase of one of the person's true attribute values.
# ---------------------------------------------------------------------------------------------

_COLOR_WORDS = {"black": ["black"], "white": ["white"], "grey": ["grey", "gray"], "red": ["red"],
                "blue": ["blue"], "green": ["green"], "yellow": ["yellow"], "purple": ["purple"],
                "brown": ["brown"], "blond": ["blond", "blonde"], "beige": ["beige"]}

# attribute -> value -> phrases that say it (and only it).
VOCABULARY: Dict[str, Dict[str, List[str]]] = {
    "hair_color": {v: _COLOR_WORDS[v] for v in ATTRIBUTE_SCHEMA["hair_color"]},
    "hair_length": {"short": ["short"], "long": ["long"]},
    "upper_color": {v: _COLOR_WORDS[v] for v in ATTRIBUTE_SCHEMA["upper_color"]},
    "upper_pattern": {"plain": ["plain"], "stripes": ["striped"], "checks": ["checked", "plaid"],
                      "logo": ["logo"]},
    "upper_sleeve": {"short": ["short-sleeved"], "long": ["long-sleeved"]},
    "lower_color": {v: _COLOR_WORDS[v] for v in ATTRIBUTE_SCHEMA["lower_color"]},
    "lower_length": {"shorts": ["shorts"], "trousers": ["trousers", "pants"], "skirt": ["skirt"]},
    "bag": {"none": ["no bag", "nothing"], "backpack": ["a backpack"], "handbag": ["a handbag"],
            "shoulder_bag": ["a shoulder bag"]},
    "hat": {"none": ["no hat"], "cap": ["a cap"], "beanie": ["a beanie"]},
    "shoes": {v: _COLOR_WORDS[v] for v in ATTRIBUTE_SCHEMA["shoes"]},
    "body_shape": {"slim": ["slim", "thin"], "average": ["medium-built"], "broad": ["broad", "stocky"]},
    "height": {"short": ["short"], "average": ["average-height"], "tall": ["tall"]},
}

# Nouns that carry no attribute value (the garment words of a colour without its length).
_UPPER_NOUNS = ["top", "shirt", "upper clothes", "jacket", "sweater"]
_LOWER_NOUNS = ["lower clothes", "bottoms"]
_SHOE_NOUNS = ["shoes", "sneakers"]
_SUBJECTS = ["person", "pedestrian", "man or woman", "passer-by"]
_OCCLUDER_WORDS = {"pole": "a pole", "car": "a car", "person": "another person", "umbrella": "an umbrella",
                   "board": "a board"}
_FRAMES = [
    "a photo of {subject} {clauses}.",
    "{subject} {clauses}.",
    "a surveillance picture of {subject} {clauses}.",
    "a cctv image of {subject} {clauses}.",
    "an image showing {subject} {clauses}.",
]
# Words of the frames, joints and nouns: everything in a caption that is not an attribute value.
FRAME_WORDS: Set[str] = set(
    " ".join(_FRAMES + _UPPER_NOUNS + _LOWER_NOUNS + _SHOE_NOUNS + _SUBJECTS + list(_OCCLUDER_WORDS.values()))
    .replace("{subject}", "").replace("{clauses}", "").replace(".", "").split()
) | {"a", "an", "with", "wearing", "in", "carrying", "and", "hair", "partly", "hidden", "behind", "by",
     "occluded", "someone", "photo", "of", "has", "who"}

# Which body region must be visible for an attribute to be described (occlusion.json's regions).
ATTRIBUTE_REGION = {"hair_color": "head", "hair_length": "head", "hat": "head",
                    "upper_color": "upper", "upper_pattern": "upper", "upper_sleeve": "upper", "bag": "upper",
                    "lower_color": "lower", "lower_length": "lower", "shoes": "feet"}


def is_visible(attribute: str, attributes: Dict[str, str], hidden_regions: Sequence[str]) -> bool:
    """Whether an image shows ``attribute`` of a person with ``attributes``.

    Its body region must not be hidden by the occluder, and hair under a cap or a beanie shows
    only when it is long (the renderer draws the hat over short hair).
    """
    if ATTRIBUTE_REGION.get(attribute) in hidden_regions:
        return False
    if attribute in ("hair_color", "hair_length"):
        return attributes["hat"] == "none" or attributes["hair_length"] == "long"
    return True


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _say(rng: np.random.Generator, attribute: str, value: str) -> str:
    return _pick(rng, VOCABULARY[attribute][value])


def _clauses(attributes: Dict[str, str], visible: Set[str], rng: np.random.Generator) -> List[Tuple[str, List[str]]]:
    """One clause per visible attribute group: ``(text, attributes it names)``, some parts optional."""
    clauses: List[Tuple[str, List[str]]] = []
    if "head" in visible and is_visible("hair_color", attributes, ()):
        words, named = [_say(rng, "hair_color", attributes["hair_color"])], ["hair_color"]
        if rng.random() < 0.5:
            words.insert(0, _say(rng, "hair_length", attributes["hair_length"]))
            named.append("hair_length")
        clauses.append((f"with {' '.join(words)} hair", named))
    if "head" in visible:
        if attributes["hat"] != "none" or rng.random() < 0.3:
            clauses.append((f"wearing {_say(rng, 'hat', attributes['hat'])}", ["hat"]))
    if "upper" in visible:
        words, named = [_say(rng, "upper_color", attributes["upper_color"])], ["upper_color"]
        if rng.random() < 0.5:
            words.append(_say(rng, "upper_pattern", attributes["upper_pattern"]))
            named.append("upper_pattern")
        if rng.random() < 0.4:
            words.append(_say(rng, "upper_sleeve", attributes["upper_sleeve"]))
            named.append("upper_sleeve")
        noun = _pick(rng, _UPPER_NOUNS)
        article = "a " if noun != "upper clothes" and rng.random() < 0.5 else ""
        clauses.append((f"wearing {article}{' '.join(words)} {noun}", named))
        if attributes["bag"] != "none" or rng.random() < 0.3:
            clauses.append((f"carrying {_say(rng, 'bag', attributes['bag'])}", ["bag"]))
    if "lower" in visible:
        color = _say(rng, "lower_color", attributes["lower_color"])
        if rng.random() < 0.6:
            noun, named = _say(rng, "lower_length", attributes["lower_length"]), ["lower_color", "lower_length"]
            article = "a " if attributes["lower_length"] == "skirt" else ""
        else:
            noun, named, article = _pick(rng, _LOWER_NOUNS), ["lower_color"], ""
        clauses.append((f"{_pick(rng, ['wearing', 'in'])} {article}{color} {noun}", named))
    if "feet" in visible:
        clauses.append((f"{_pick(rng, ['wearing', 'in'])} {_say(rng, 'shoes', attributes['shoes'])} "
                        f"{_pick(rng, _SHOE_NOUNS)}", ["shoes"]))
    return clauses


def describe(attributes: Dict[str, str], hidden_regions: Sequence[str], occluder: str,
             rng: np.random.Generator) -> Tuple[str, List[str]]:
    """A caption of a person with ``attributes`` whose ``hidden_regions`` are occluded.

    Args:
        attributes: ground truth of the person (``ATTRIBUTE_SCHEMA`` names and values).
        hidden_regions: body regions hidden by the occluder (``occlusion.json``'s ``regions``).
        occluder: the occluder's kind, or ``"none"``.
        rng: the caption's own random generator.

    Returns:
        ``(caption, attributes it names)``; every named value is the true one.
    """
    visible = {"head", "upper", "lower", "feet"} - set(hidden_regions)
    clauses = _clauses(attributes, visible, rng)
    order = rng.permutation(len(clauses))
    # Mostly rich captions, sometimes one or two attributes alone (so single words get grounded).
    keep = len(clauses) if rng.random() < 0.5 else int(rng.integers(1, max(len(clauses), 1) + 1))
    chosen = [clauses[i] for i in order[:keep]]
    named = [name for _, attrs in chosen for name in attrs]

    adjectives = []
    for attribute in ("height", "body_shape"):
        if rng.random() < 0.25:
            adjectives.append(_say(rng, attribute, attributes[attribute]))
            named.append(attribute)
    noun = _pick(rng, _SUBJECTS)
    words = adjectives + [noun]
    subject = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    if not adjectives and rng.random() < 0.2:
        subject = "someone"

    texts = [text for text, _ in chosen]
    if len(texts) > 1 and rng.random() < 0.6:
        body = ", ".join(texts[:-1]) + " and " + texts[-1]
    else:
        body = ", ".join(texts)
    if occluder != "none" and rng.random() < 0.5:
        hidden = f"partly hidden behind {_OCCLUDER_WORDS[occluder]}"
        body = f"{hidden}, {body}" if body else hidden
    caption = _pick(rng, _FRAMES).format(subject=subject, clauses=body)
    return " ".join(caption.replace(" .", ".").split()), named


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------

def reid_attribute_keys(seed: int) -> Set[Tuple[str, ...]]:
    """Attribute combinations of every identity of every ReID preset made with ``seed``."""
    keys: Set[Tuple[str, ...]] = set()
    for preset in PRESETS.values():
        identities, _ = make_identities(preset, seed)
        keys |= {tuple(identity["attributes"][name] for name in ATTRIBUTE_SCHEMA) for identity in identities.values()}
    return keys


def _make_people(preset: CaptionPreset, seed: int) -> Dict[int, Dict[str, Any]]:
    """People of the corpus (pretraining first, then held-out), none a ReID identity's twin."""
    rng = np.random.default_rng([seed, STREAM["caption_identity"]])
    excluded = reid_attribute_keys(seed)
    people: Dict[int, Dict[str, Any]] = {}
    for pid in range(1, preset.num_ids + preset.num_val_ids + 1):
        while True:
            attributes, params = sample_identity(rng)
            if tuple(attributes[name] for name in ATTRIBUTE_SCHEMA) not in excluded:
                break
        people[pid] = {"attributes": attributes, "params": params,
                       "split": "train" if pid <= preset.num_ids else "val",
                       "appearance": appearance(attributes, params)}
    return people


def _make_plan(preset: CaptionPreset, people: Dict[int, Dict[str, Any]], seed: int) -> List[Dict[str, Any]]:
    rng = np.random.default_rng([seed, STREAM["caption_plan"]])
    plan: Dict[str, List[Dict[str, Any]]] = {"train": [], "val": []}
    for pid, person in people.items():
        count = preset.images_per_id if person["split"] == "train" else preset.val_images_per_id
        cameras = rng.choice(np.arange(1, preset.num_cameras + 1), min(count, preset.num_cameras), replace=False)
        for k in range(count):
            camid = int(cameras[k % len(cameras)])
            plan[person["split"]].append({"pid": pid, "camid": camid,
                                          "name": f"{person['split']}/{pid:05d}_c{camid:02d}_{k}.jpg"})
    for split, items in plan.items():
        for index, (item, occluded) in enumerate(zip(items, occluded_flags(len(items), preset.occluded_ratio, rng))):
            item.update(split=f"caption_{split}", index=index, occluded=bool(occluded))
    return plan["train"] + plan["val"]


def _write_csv(path: Path, rows: List[Tuple[str, str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)


def generate_captions(root: PathLike, preset: str = "pretrain-tiny", seed: int = 0, overwrite: bool = False,
                      num_workers: Optional[int] = None) -> Dict[str, Any]:
    """Write the caption corpus to ``root/SyntheticCaptions`` and return a summary.

    Args:
        root: folder that receives ``SyntheticCaptions`` (the same root as the ReID data is fine).
        preset: a key of ``CAPTION_PRESETS``.
        seed: the same preset and seed give byte-identical files.
        overwrite: replace a corpus made with another preset or seed, or an unfinished folder.
        num_workers: drawing processes (default: one per CPU above 3,000 images); no effect on the output.

    Returns:
        ``{"path", "preset", "seed", "splits": {"train"|"val": {"ids", "images", "occluded"}}, "skipped"}``.

    Raises:
        KeyError: unknown preset.
        FileExistsError: the folder holds something else and ``overwrite`` is False.
    """
    if preset not in CAPTION_PRESETS:
        raise KeyError(f"unknown caption preset {preset!r}; choose from {sorted(CAPTION_PRESETS)}")
    config = CAPTION_PRESETS[preset]

    def draw(work_dir: Path) -> Dict[str, Any]:
        people = _make_people(config, seed)
        items = _make_plan(config, people, seed)
        for split in ("train", "val"):
            (work_dir / split).mkdir()
        context = {"seed": seed, "identities": people, "dataset_dir": str(work_dir),
                   "cameras": make_cameras(config.num_cameras, seed, stream="caption_camera")}
        logger.info("Drawing %d captioned images (preset %s, seed %d)", len(items), preset, seed)
        records = render_images(items, context, num_workers)

        rows: Dict[str, List[Tuple[str, str]]] = {"train": [], "val": []}
        labels = {}
        for item in items:
            record = records[item["name"]]
            rng = np.random.default_rng([seed, STREAM["caption_text"], STREAM[item["split"]], item["index"]])
            caption, _ = describe(people[item["pid"]]["attributes"], record["regions"], record["occluder"], rng)
            rows[people[item["pid"]]["split"]].append((item["name"], caption))
            labels[item["name"]] = {"pid": f"{item['pid']:05d}", "camid": item["camid"],
                                    "occluder": record["occluder"], "regions": record["regions"]}
        _write_csv(work_dir / CAPTIONS_FILE, rows["train"])
        _write_csv(work_dir / VAL_CAPTIONS_FILE, rows["val"])
        write_json(work_dir / LABELS_FILE, labels)
        write_json(work_dir / ATTRIBUTES_FILE, {
            "schema": ATTRIBUTE_SCHEMA,
            "identities": {f"{pid:05d}": person["attributes"] for pid, person in people.items()},
        })
        splits = {}
        for split in ("train", "val"):
            names = [item for item in items if people[item["pid"]]["split"] == split]
            splits[split] = {"ids": len({item["pid"] for item in names}), "images": len(names),
                             "occluded": sum(item["occluded"] for item in names)}
        return {"preset": preset, "seed": seed, "version": CAPTIONS_VERSION, "splits": splits,
                "config": asdict(config)}

    return build_folder_once(Path(root) / CAPTION_DIR, "caption corpus", preset, seed, CAPTIONS_VERSION,
                             overwrite, draw)


class CaptionFileError(ValueError):
    """A captions CSV is missing, malformed, or names an image that is not there."""


def read_captions(csv_path: PathLike, check_images: bool = True) -> List[Tuple[str, str]]:
    """``[(image path, caption)]`` of an open_clip-style CSV (tab-separated ``filepath``, ``title``).

    Relative image paths are taken relative to the CSV's folder.

    Raises:
        CaptionFileError: the file is missing, has no ``filepath``/``title`` columns, has an
            empty caption, or (with ``check_images``) names an image that does not exist; the
            message names the file and the row.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CaptionFileError(f"{csv_path}: no such captions file (make one with "
                               f"tools/make_synthetic.py --preset pretrain --root ROOT)")
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if reader.fieldnames is None or not set(CSV_HEADER) <= set(reader.fieldnames):
            raise CaptionFileError(f"{csv_path}: expected tab-separated columns {CSV_HEADER}, "
                                   f"found {reader.fieldnames}")
        pairs = []
        for line, row in enumerate(reader, start=2):
            path, title = row.get("filepath"), row.get("title")
            if not path or not title:
                raise CaptionFileError(f"{csv_path}, line {line}: empty filepath or title: {row}")
            full = Path(path) if os.path.isabs(path) else csv_path.parent / path
            if check_images and not full.is_file():
                raise CaptionFileError(f"{csv_path}, line {line}: image {full} does not exist")
            pairs.append((str(full), title))
    if not pairs:
        raise CaptionFileError(f"{csv_path}: no captions")
    return pairs


PREVIEW_CELL = (IMAGE_WIDTH + 172, IMAGE_HEIGHT + 8)


def write_caption_preview(folder: PathLike, out_png: PathLike, count: int = 12, columns: int = 3) -> str:
    """A contact sheet of ``count`` pretraining images beside their captions; returns its path."""
    folder = Path(folder)
    pairs = read_captions(folder / CAPTIONS_FILE)
    labels = json.loads((folder / LABELS_FILE).read_text())
    step = max(len(pairs) // count, 1)
    chosen = pairs[::step][:count]
    rows = (len(chosen) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * PREVIEW_CELL[0], rows * PREVIEW_CELL[1]), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(11)
    for index, (path, caption) in enumerate(chosen):
        x, y = (index % columns) * PREVIEW_CELL[0] + 4, (index // columns) * PREVIEW_CELL[1] + 4
        sheet.paste(Image.open(path).convert("RGB"), (x, y))
        label = labels[str(Path(path).relative_to(folder))]
        lines = textwrap.wrap(caption, 28)
        if label["occluder"] != "none":
            lines.append(f"[occluder: {label['occluder']}]")
        for row, text in enumerate(lines):
            draw.text((x + IMAGE_WIDTH + 6, y + row * 13), text, font=font,
                      fill=(170, 0, 0) if text.startswith("[") else (0, 0, 0))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return str(out_png)


def occluder_words() -> List[str]:
    """The words a caption may use to name an occluder (one phrase per kind)."""
    return [_OCCLUDER_WORDS[kind] for kind in OCCLUDER_TYPES]
