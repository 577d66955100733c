"""Deterministic synthetic occluded person re-identification data.

Draws pedestrian-like images with known attributes (body shape, height, hair, clothes,
bag, hat, shoes) seen by cameras that differ in colour cast, brightness, blur, scale and
background, and hides 20-60% of the body behind occluders (poles, cars, other people,
umbrellas, boards) in every query image, a part of the training images and a few gallery
images, like Occluded-Duke. The layout is Occluded-Duke's, so the same loader reads it::

    ROOT/SyntheticOccluded/
      bounding_box_train/PPPP_cC_fNNNNNNN.jpg
      query/PPPP_cC_fNNNNNNN.jpg
      bounding_box_test/PPPP_cC_fNNNNNNN.jpg
      attributes.json   {"schema": {attribute: [values]}, "identities": {"PPPP": {attribute: value}},
                         "hard_pairs": [["PPPP", "PPPP", attribute], ...]}
      occlusion.json    {"query/PPPP_cC_fNNNNNNN.jpg": {"occluder": ..., "fraction": ..., "regions": [...],
                                                    "region_fractions": {region: share hidden}}}
      done.json         written last: preset, seed, generator version and counts

Every random draw comes from a ``numpy.random.Generator`` seeded from ``(seed, stream, index)``,
so the same preset and seed give the same bytes whatever the order or number of worker
processes. This module imports neither torch nor fastreid, so it is quick to import.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "ATTRIBUTES_FILE",
    "ATTRIBUTE_SCHEMA",
    "DATASET_DIR",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "MARKER_FILE",
    "OCCLUDER_TYPES",
    "PRESETS",
    "PathLike",
    "SyntheticPreset",
    "generate",
    "is_complete",
    "render_images",
    "write_preview",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

DATASET_DIR = "SyntheticOccluded"
# Bumped whenever the drawing changes, so an old dataset on disk is not taken for a new one.
GENERATOR_VERSION = 1
MARKER_FILE = "done.json"
ATTRIBUTES_FILE = "attributes.json"
OCCLUSION_FILE = "occlusion.json"
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
# Seed streams: one per split for the per-image generators, and the non-image ones.
_STREAM = {"train": 1, "query": 2, "gallery": 3, "identity": 10, "plan": 11, "camera": 12,
           # The caption corpus (agreid.data.captions) draws from streams of its own.
           "caption_train": 21, "caption_val": 22, "caption_identity": 23, "caption_plan": 24,
           "caption_camera": 25, "caption_text": 26}

IMAGE_HEIGHT = 128
IMAGE_WIDTH = 64
JPEG_QUALITY = 90
# Drawn at twice the size and reduced, which anti-aliases the Pillow shapes.
_SUPERSAMPLE = 2
OCCLUSION_RANGE = (0.2, 0.6)
# A body region counts as hidden when at least this share of its pixels is covered.
REGION_HIDDEN_SHARE = 0.5
BODY_REGIONS = ("head", "upper", "lower", "feet")
OCCLUDER_TYPES = ("pole", "car", "person", "umbrella", "board")

ATTRIBUTE_SCHEMA: Dict[str, List[str]] = {
    "body_shape": ["slim", "average", "broad"],
    "height": ["short", "average", "tall"],
    "hair_length": ["short", "long"],
    "hair_color": ["black", "brown", "blond", "grey"],
    "upper_color": ["black", "white", "grey", "red", "blue", "green", "yellow", "purple"],
    "upper_pattern": ["plain", "stripes", "checks", "logo"],
    "upper_sleeve": ["short", "long"],
    "lower_color": ["black", "blue", "grey", "beige", "white", "red"],
    "lower_length": ["shorts", "trousers", "skirt"],
    "bag": ["none", "backpack", "handbag", "shoulder_bag"],
    "hat": ["none", "cap", "beanie"],
    "shoes": ["black", "white", "brown", "red"],
}

_HAIR_RGB = {"black": (28, 24, 22), "brown": (104, 64, 34), "blond": (222, 188, 110), "grey": (170, 170, 168)}
_UPPER_RGB = {
    "black": (32, 32, 36), "white": (236, 236, 230), "grey": (130, 130, 132), "red": (204, 36, 40),
    "blue": (40, 72, 196), "green": (38, 142, 62), "yellow": (232, 200, 36), "purple": (124, 52, 156),
}
_LOWER_RGB = {
    "black": (34, 34, 38), "blue": (52, 80, 140), "grey": (128, 128, 130), "beige": (192, 164, 118),
    "white": (230, 230, 224), "red": (190, 40, 44),
}
_SHOES_RGB = {"black": (24, 24, 24), "white": (240, 240, 240), "brown": (110, 66, 34), "red": (210, 30, 36)}
_SKIN_RGB = [(250, 214, 182), (234, 190, 150), (204, 150, 110), (160, 110, 72), (112, 76, 52)]
_ACCESSORY_RGB = [(40, 40, 44), (90, 60, 40), (150, 30, 40), (30, 60, 110), (60, 90, 50), (200, 170, 60),
                  (220, 220, 214), (110, 40, 120)]
_COLOR_ATTRIBUTES = {"hair_color": _HAIR_RGB, "upper_color": _UPPER_RGB, "lower_color": _LOWER_RGB,
                     "shoes": _SHOES_RGB}
_BACKGROUND_STYLES = ("street", "brick", "park", "mall", "road", "glass", "plaza", "night")


@dataclass(frozen=True)
class SyntheticPreset:
    """How many identities, cameras and images a synthetic dataset has.

    Args:
        num_train_ids: identities in ``bounding_box_train``.
        num_test_ids: identities in ``query`` and ``bounding_box_test`` (disjoint from train).
        num_cameras: cameras 1..num_cameras (at least 2).
        train_images_per_id: training images of each training identity.
        query_images_per_id: query images of each test identity, all occluded.
        gallery_images_per_id: gallery images of each test identity (at least 2).
        train_occluded_ratio: share of training images with an occluder.
        gallery_occluded_ratio: share of gallery images with an occluder.
        hard_pair_ratio: chance that an identity copies the previous one but for one attribute.
        max_cameras_per_id: an identity is seen by 2..max_cameras_per_id cameras.
    """

    num_train_ids: int
    num_test_ids: int
    num_cameras: int
    train_images_per_id: int
    query_images_per_id: int
    gallery_images_per_id: int
    train_occluded_ratio: float = 0.3
    gallery_occluded_ratio: float = 0.1
    hard_pair_ratio: float = 0.3
    max_cameras_per_id: int = 4


PRESETS: Dict[str, SyntheticPreset] = {
    # For unit tests: a couple of seconds.
    "tiny": SyntheticPreset(num_train_ids=16, num_test_ids=16, num_cameras=4, train_images_per_id=4,
                            query_images_per_id=1, gallery_images_per_id=3),
    # For the demo: enough identities for a meaningful rank-1 and mAP, well under a minute.
    "small": SyntheticPreset(num_train_ids=128, num_test_ids=128, num_cameras=8, train_images_per_id=8,
                             query_images_per_id=2, gallery_images_per_id=5),
    # For benchmarks: the size of Occluded-Duke (702 / 1110 ids, ~15.6k / 2.2k / 17.7k images).
    "large": SyntheticPreset(num_train_ids=702, num_test_ids=1110, num_cameras=8, train_images_per_id=22,
                             query_images_per_id=2, gallery_images_per_id=16),
}


# --------------------------------------------------------------------------------------------
# Identities, cameras and the image plan
# --------------------------------------------------------------------------------------------

def _jitter_rgb(rgb: Sequence[int], offset: Sequence[int]) -> Tuple[int, int, int]:
    return tuple(int(np.clip(c + o, 0, 255)) for c, o in zip(rgb, offset))


def _appearance(attributes: Dict[str, str], params: Dict[str, Any]) -> Dict[str, Any]:
    """Colours and sizes used for drawing, from the attributes and the identity's own jitter."""
    appearance = dict(params)
    for name, palette in _COLOR_ATTRIBUTES.items():
        appearance[name + "_rgb"] = _jitter_rgb(palette[attributes[name]], params["color_jitter"][name])
    upper = appearance["upper_color_rgb"]
    luminance = 0.299 * upper[0] + 0.587 * upper[1] + 0.114 * upper[2]
    appearance["pattern_rgb"] = (36, 36, 40) if luminance > 140 else (236, 236, 230)
    return appearance


def _sample_identity(rng: np.random.Generator) -> Tuple[Dict[str, str], Dict[str, Any]]:
    attributes = {name: str(rng.choice(values)) for name, values in ATTRIBUTE_SCHEMA.items()}
    params = {
        "skin_rgb": tuple(int(c) for c in _SKIN_RGB[int(rng.integers(len(_SKIN_RGB)))]),
        "hat_rgb": tuple(int(c) for c in _ACCESSORY_RGB[int(rng.integers(len(_ACCESSORY_RGB)))]),
        "bag_rgb": tuple(int(c) for c in _ACCESSORY_RGB[int(rng.integers(len(_ACCESSORY_RGB)))]),
        "logo_rgb": tuple(int(c) for c in rng.integers(0, 256, 3)),
        "color_jitter": {name: [int(v) for v in rng.integers(-14, 15, 3)] for name in _COLOR_ATTRIBUTES},
        "pattern_phase": float(rng.uniform(0, 1)),
        "width_jitter": float(rng.uniform(-0.006, 0.006)),
    }
    return attributes, params


def _make_identities(preset: SyntheticPreset, seed: int) -> Tuple[Dict[int, Dict[str, Any]], List[List[Any]]]:
    """All identities (train pids first, then test pids), each with a unique attribute combination.

    With chance ``hard_pair_ratio`` an identity copies the previous identity of its split and
    changes exactly one attribute: the hard case where attributes differ only a little.
    """
    rng = np.random.default_rng([seed, _STREAM["identity"]])
    identities: Dict[int, Dict[str, Any]] = {}
    hard_pairs: List[List[Any]] = []
    seen = set()
    splits = [("train", range(1, preset.num_train_ids + 1)),
              ("test", range(preset.num_train_ids + 1, preset.num_train_ids + preset.num_test_ids + 1))]
    for split, pids in splits:
        previous: Optional[int] = None
        for pid in pids:
            changed: Optional[str] = None
            twin = previous is not None and not identities[previous]["is_twin"] \
                and rng.random() < preset.hard_pair_ratio
            while True:
                if twin:
                    attributes = dict(identities[previous]["attributes"])
                    params = identities[previous]["params"]
                    changed = str(rng.choice(sorted(ATTRIBUTE_SCHEMA)))
                    options = [v for v in ATTRIBUTE_SCHEMA[changed] if v != attributes[changed]]
                    attributes[changed] = str(rng.choice(options))
                else:
                    attributes, params = _sample_identity(rng)
                key = tuple(attributes[name] for name in ATTRIBUTE_SCHEMA)
                if key not in seen:
                    break
            seen.add(key)
            identities[pid] = {"attributes": attributes, "params": params, "split": split,
                               "is_twin": twin, "appearance": _appearance(attributes, params)}
            if twin:
                hard_pairs.append([f"{previous:04d}", f"{pid:04d}", changed])
            previous = pid
    return identities, hard_pairs


def _make_cameras(num_cameras: int, seed: int, stream: str = "camera") -> Dict[int, Dict[str, Any]]:
    """Per camera: colour cast, brightness, blur, person scale, noise and a background picture."""
    cameras = {}
    for camid in range(1, num_cameras + 1):
        rng = np.random.default_rng([seed, _STREAM[stream], camid])
        cameras[camid] = {
            "cast": rng.uniform(0.86, 1.14, 3),
            "brightness": float(rng.uniform(0.8, 1.15)),
            "blur": float(rng.uniform(0.0, 0.8)),
            "scale": float(rng.uniform(0.8, 0.92)),
            "noise": float(rng.uniform(1.5, 4.0)),
            "background": _draw_background(_BACKGROUND_STYLES[(camid - 1) % len(_BACKGROUND_STYLES)], rng),
        }
    return cameras


def _spread_cameras(cameras: np.ndarray, count: int, rng: np.random.Generator) -> List[int]:
    """``count`` camera ids that use every camera of ``cameras`` once before repeating any."""
    repeated = np.resize(cameras, count)
    return [int(c) for c in rng.permutation(repeated)]


def _occluded_flags(count: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    flags = np.zeros(count, dtype=bool)
    flags[rng.permutation(count)[: int(round(ratio * count))]] = True
    return flags


def _make_plan(preset: SyntheticPreset, identities: Dict[int, Dict[str, Any]], seed: int
               ) -> Dict[str, List[Dict[str, Any]]]:
    """Which image of which identity, camera and frame goes in which split, and which are occluded.

    Every camera an identity is seen by has at least one of its gallery images, and an
    identity has at least two cameras, so each query has a gallery match from another camera.
    """
    rng = np.random.default_rng([seed, _STREAM["plan"]])
    plan: Dict[str, List[Dict[str, Any]]] = {"train": [], "query": [], "gallery": []}
    for pid in sorted(identities):
        most = min(preset.max_cameras_per_id, preset.num_cameras)
        if identities[pid]["split"] == "test":
            most = min(most, preset.gallery_images_per_id)
        id_cameras = rng.choice(np.arange(1, preset.num_cameras + 1), int(rng.integers(2, most + 1)), replace=False)
        if identities[pid]["split"] == "train":
            plan["train"] += [{"pid": pid, "camid": c}
                              for c in _spread_cameras(id_cameras, preset.train_images_per_id, rng)]
        else:
            plan["query"] += [{"pid": pid, "camid": int(rng.choice(id_cameras))}
                              for _ in range(preset.query_images_per_id)]
            plan["gallery"] += [{"pid": pid, "camid": c}
                                for c in _spread_cameras(id_cameras, preset.gallery_images_per_id, rng)]
    ratios = {"train": preset.train_occluded_ratio, "query": 1.0, "gallery": preset.gallery_occluded_ratio}
    frame = 0
    for split in ("train", "query", "gallery"):
        for item, occluded in zip(plan[split], _occluded_flags(len(plan[split]), ratios[split], rng)):
            frame += int(rng.integers(1, 40))
            item.update(split=split, occluded=bool(occluded),
                        name=f"{SPLIT_DIRS[split]}/{item['pid']:04d}_c{item['camid']}_f{frame:07d}.jpg")
        for index, item in enumerate(plan[split]):
            item["index"] = index
    return plan


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

def _noise_texture(rng: np.random.Generator, height: int, width: int, amplitude: float) -> np.ndarray:
    coarse = rng.normal(0, amplitude, (height // 8 + 2, width // 8 + 2)).astype(np.float32)
    coarse = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))
    return coarse[..., None] + rng.normal(0, amplitude / 2, (height, width, 1)).astype(np.float32)


def _draw_background(style: str, rng: np.random.Generator) -> np.ndarray:
    """A camera's scene, larger than an image so that each image takes a shifted crop of it."""
    width, height = (IMAGE_WIDTH + 32) * _SUPERSAMPLE, (IMAGE_HEIGHT + 32) * _SUPERSAMPLE
    horizon = int(height * rng.uniform(0.4, 0.55))

    def tone(rgb: Sequence[int], spread: int = 18) -> Tuple[int, ...]:
        return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in rgb)

    image = Image.new("RGB", (width, height), tone((128, 128, 128)))
    draw = ImageDraw.Draw(image)
    if style == "street":
        draw.rectangle([0, 0, width, horizon], fill=tone((176, 160, 140)))
        for x in range(6, width, 40):
            for y in range(8, horizon - 24, 48):
                draw.rectangle([x, y, x + 22, y + 30], fill=tone((60, 70, 84)))
        draw.rectangle([0, horizon, width, height], fill=tone((150, 150, 146)))
        for y in range(horizon, height, 22):
            draw.line([0, y, width, y], fill=tone((120, 120, 118)), width=2)
    elif style == "brick":
        brick, mortar = tone((150, 70, 52)), tone((196, 186, 170))
        draw.rectangle([0, 0, width, horizon], fill=mortar)
        for row, y in enumerate(range(0, horizon, 14)):
            for x in range(-20 + (row % 2) * 16, width, 32):
                draw.rectangle([x, y, x + 28, y + 10], fill=tone(brick, 12))
        draw.rectangle([0, horizon, width, height], fill=tone((110, 104, 100)))
    elif style == "park":
        draw.rectangle([0, 0, width, horizon], fill=tone((170, 200, 226)))
        for _ in range(6):
            x, y, r = rng.integers(0, width), rng.integers(0, horizon), rng.integers(24, 50)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tone((50, 100, 50), 24))
        draw.rectangle([0, horizon, width, height], fill=tone((96, 150, 70)))
    elif style == "mall":
        draw.rectangle([0, 0, width, horizon], fill=tone((220, 210, 190)))
        for x in range(0, width, 64):
            draw.rectangle([x + 4, 16, x + 58, horizon - 8], fill=tone((200, 120, 80), 60))
        draw.rectangle([0, horizon, width, height], fill=tone((210, 200, 180)))
        for x in range(0, width, 32):
            draw.line([x, horizon, x, height], fill=tone((180, 170, 150)), width=2)
    elif style == "road":
        draw.rectangle([0, 0, width, horizon], fill=tone((120, 130, 120)))
        draw.rectangle([0, horizon, width, height], fill=tone((70, 70, 74)))
        for y in range(horizon + 30, height, 60):
            draw.rectangle([0, y, width, y + 10], fill=tone((220, 220, 210)))
    elif style == "glass":
        draw.rectangle([0, 0, width, height], fill=tone((100, 130, 160)))
        for x in range(0, width, 36):
            draw.line([x, 0, x, horizon], fill=tone((200, 210, 220)), width=3)
        for y in range(0, horizon, 50):
            draw.line([0, y, width, y], fill=tone((200, 210, 220)), width=3)
        draw.rectangle([0, horizon, width, height], fill=tone((140, 140, 150)))
    elif style == "plaza":
        draw.rectangle([0, 0, width, height], fill=tone((200, 196, 186)))
        for x in range(0, width, 56):
            draw.line([x, 0, x, height], fill=tone((170, 166, 156)), width=2)
        for y in range(0, height, 56):
            draw.line([0, y, width, y], fill=tone((170, 166, 156)), width=2)
    else:  # night
        draw.rectangle([0, 0, width, height], fill=tone((26, 30, 48)))
        for _ in range(8):
            x, y, r = rng.integers(0, width), rng.integers(0, horizon), rng.integers(4, 12)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tone((250, 220, 150), 10))
        draw.rectangle([0, horizon, width, height], fill=tone((50, 50, 58)))
    pixels = np.asarray(image, dtype=np.float32) + _noise_texture(rng, height, width, 6.0)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _draw_person(size: Tuple[int, int], appearance: Dict[str, Any], attributes: Dict[str, str],
                 pose: Dict[str, float]) -> Tuple[Image.Image, Dict[str, float]]:
    """One pedestrian on a transparent layer, and the pixel rows where its body regions end.

    Coordinates are given in units of the person's height from the top of the head and
    from the body axis; ``pose["lean"]`` shears them around the feet.
    """
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    unit, center_x, feet_y, lean = pose["unit"], pose["center_x"], pose["feet_y"], pose["lean"]
    top = feet_y - unit
    back_view = pose["back_view"] > 0.5

    def point(fx: float, fy: float) -> Tuple[float, float]:
        y = top + fy * unit
        return center_x + fx * unit + (feet_y - y) * lean, y

    def ellipse(fx: float, fy: float, rx: float, ry: float, fill: Tuple[int, ...], target=draw) -> None:
        x, y = point(fx, fy)
        target.ellipse([x - rx * unit, y - ry * unit, x + rx * unit, y + ry * unit], fill=fill)

    def chord(fx: float, fy: float, rx: float, ry: float, start: float, end: float, fill) -> None:
        x, y = point(fx, fy)
        draw.chord([x - rx * unit, y - ry * unit, x + rx * unit, y + ry * unit], start, end, fill=fill)

    def polygon(points: Sequence[Tuple[float, float]], fill, target=draw) -> None:
        target.polygon([point(*p) for p in points], fill=fill)

    def line(points: Sequence[Tuple[float, float]], width: float, fill, target=draw) -> None:
        target.line([point(*p) for p in points], fill=fill, width=max(1, round(width * unit)), joint="curve")

    def opaque(rgb: Sequence[int]) -> Tuple[int, ...]:
        return tuple(int(c) for c in rgb) + (255,)

    skin, hair, lower = (opaque(appearance[key]) for key in ("skin_rgb", "hair_color_rgb", "lower_color_rgb"))
    shoes, bag_rgb = opaque(appearance["shoes_rgb"]), opaque(appearance["bag_rgb"])
    shoulder = {"slim": 0.098, "average": 0.118, "broad": 0.145}[attributes["body_shape"]] + appearance["width_jitter"]
    waist = shoulder * {"slim": 0.74, "average": 0.8, "broad": 0.9}[attributes["body_shape"]]
    limb = {"slim": 0.038, "average": 0.046, "broad": 0.056}[attributes["body_shape"]]
    ankle = 0.962
    hip = ankle - {"short": 0.42, "average": 0.455, "tall": 0.49}[attributes["height"]]
    shoulder_y, head_y, head_rx, head_ry = 0.165, 0.068, 0.05, 0.062
    long_hair = attributes["hair_length"] == "long"

    if long_hair and not back_view:
        polygon([(-0.062, 0.05), (0.062, 0.05), (0.07, 0.25), (-0.07, 0.25)], hair)
    if attributes["bag"] == "backpack" and not back_view:
        polygon([(-shoulder - 0.025, 0.2), (shoulder + 0.025, 0.2), (shoulder + 0.02, 0.42),
                 (-shoulder - 0.02, 0.42)], bag_rgb)

    # Legs: thigh to ankle, feet apart by the stance.
    stance = pose["stance"]
    for side in (-1, 1):
        ankle_x = side * (0.03 + stance)
        leg_color = lower if attributes["lower_length"] == "trousers" else skin
        polygon([(side * 0.004, hip), (side * waist, hip), (ankle_x + side * 0.028, ankle),
                 (ankle_x - side * 0.022, ankle)], leg_color)
        if attributes["lower_length"] == "shorts":
            knee_x = side * (0.03 + stance * 0.4)
            polygon([(side * 0.004, hip), (side * waist, hip), (knee_x + side * 0.045, hip + 0.16),
                     (knee_x - side * 0.03, hip + 0.16)], lower)
        ellipse(ankle_x + side * 0.008, ankle + 0.014, 0.04, 0.022, shoes)
    polygon([(-waist, hip - 0.04), (waist, hip - 0.04), (waist * 1.02, hip + 0.05), (-waist * 1.02, hip + 0.05)],
            lower)
    if attributes["lower_length"] == "skirt":
        polygon([(-waist, hip - 0.04), (waist, hip - 0.04), (waist * 1.7, hip + 0.2), (-waist * 1.7, hip + 0.2)],
                lower)

    # Arms in skin first; the upper garment (torso and sleeves) is pasted over them with its pattern.
    garment = Image.new("L", size, 0)
    garment_draw = ImageDraw.Draw(garment)
    sleeve_end = 1.0 if attributes["upper_sleeve"] == "long" else 0.45
    for side, swing in ((-1, pose["arm_swing"]), (1, -pose["arm_swing"])):
        angle = math.radians(10 + swing)
        shoulder_point = (side * (shoulder - 0.018), shoulder_y + 0.02)
        elbow = (shoulder_point[0] + side * 0.15 * math.sin(angle), shoulder_point[1] + 0.15 * math.cos(angle))
        bend = angle - math.radians(8) * side * np.sign(swing)
        hand = (elbow[0] + side * 0.14 * math.sin(bend), elbow[1] + 0.14 * math.cos(bend))
        line([shoulder_point, elbow, hand], limb, skin)
        ellipse(hand[0], hand[1] + 0.01, 0.022, 0.028, skin)
        if sleeve_end >= 1.0:
            line([shoulder_point, elbow, hand], limb * 1.15, 255, target=garment_draw)
        else:
            cuff = (shoulder_point[0] + (elbow[0] - shoulder_point[0]) * sleeve_end * 1.4,
                    shoulder_point[1] + (elbow[1] - shoulder_point[1]) * sleeve_end * 1.4)
            line([shoulder_point, cuff], limb * 1.25, 255, target=garment_draw)
        if attributes["bag"] == "handbag" and side == 1:
            x, y = hand
            line([(x - 0.02, y + 0.02), (x, y - 0.005), (x + 0.02, y + 0.02)], 0.01, bag_rgb)
            polygon([(x - 0.045, y + 0.02), (x + 0.045, y + 0.02), (x + 0.05, y + 0.1), (x - 0.05, y + 0.1)], bag_rgb)
    polygon([(-shoulder, shoulder_y), (shoulder, shoulder_y), (waist, hip - 0.02), (-waist, hip - 0.02)],
            255, target=garment_draw)
    ellipse(-shoulder + 0.03, shoulder_y + 0.025, 0.035, 0.028, 255, target=garment_draw)
    ellipse(shoulder - 0.03, shoulder_y + 0.025, 0.035, 0.028, 255, target=garment_draw)
    layer.paste(_garment_pattern(size, appearance, attributes["upper_pattern"], point, unit), mask=garment)

    # Neck, head, hair, hat.
    polygon([(-0.022, 0.1), (0.022, 0.1), (0.024, shoulder_y + 0.01), (-0.024, shoulder_y + 0.01)], skin)
    ellipse(0, head_y, head_rx, head_ry, hair if back_view else skin)
    if back_view:
        if long_hair:
            polygon([(-0.058, 0.07), (0.058, 0.07), (0.068, 0.27), (-0.068, 0.27)], hair)
    else:
        chord(0, head_y + 0.004, head_rx * 1.08, head_ry * 1.1, 180, 360, hair)
        if long_hair:
            polygon([(-0.056, 0.06), (-0.04, 0.06), (-0.046, 0.2), (-0.066, 0.2)], hair)
            polygon([(0.056, 0.06), (0.04, 0.06), (0.046, 0.2), (0.066, 0.2)], hair)
        eye = (40, 30, 30, 255)
        ellipse(-0.018, head_y + 0.008, 0.007, 0.006, eye)
        ellipse(0.018, head_y + 0.008, 0.007, 0.006, eye)
    hat = opaque(appearance["hat_rgb"])
    if attributes["hat"] == "cap":
        chord(0, head_y - 0.004, head_rx * 1.12, head_ry * 1.06, 180, 360, hat)
        if not back_view:
            polygon([(-0.056, head_y - 0.01), (0.056, head_y - 0.01), (0.075, head_y + 0.006),
                     (-0.075, head_y + 0.006)], hat)
    elif attributes["hat"] == "beanie":
        chord(0, head_y + 0.01, head_rx * 1.12, head_ry * 1.22, 180, 360, hat)
        line([(-0.056, head_y + 0.004), (0.056, head_y + 0.004)], 0.016, hat)

    # Bags worn over the clothes.
    if attributes["bag"] == "backpack":
        if back_view:
            polygon([(-shoulder * 0.85, 0.19), (shoulder * 0.85, 0.19), (shoulder * 0.9, 0.44),
                     (-shoulder * 0.9, 0.44)], bag_rgb)
            polygon([(-shoulder * 0.55, 0.34), (shoulder * 0.55, 0.34), (shoulder * 0.55, 0.42),
                     (-shoulder * 0.55, 0.42)], opaque(np.clip(np.array(appearance["bag_rgb"]) + 40, 0, 255)))
        else:
            line([(-shoulder * 0.6, shoulder_y), (-shoulder * 0.68, 0.42)], 0.018, bag_rgb)
            line([(shoulder * 0.6, shoulder_y), (shoulder * 0.68, 0.42)], 0.018, bag_rgb)
    elif attributes["bag"] == "shoulder_bag":
        line([(-shoulder * 0.7, shoulder_y), (waist * 1.05, hip - 0.06)], 0.016, bag_rgb)
        polygon([(waist * 0.6, hip - 0.09), (waist * 1.5, hip - 0.09), (waist * 1.5, hip + 0.03),
                 (waist * 0.6, hip + 0.03)], bag_rgb)

    bands = {"head": top + 0.15 * unit, "upper": top + hip * unit, "lower": top + (ankle - 0.005) * unit}
    return layer, bands


def _garment_pattern(size: Tuple[int, int], appearance: Dict[str, Any], pattern: str,
                     point: Callable[[float, float], Tuple[float, float]], unit: float) -> Image.Image:
    """The upper garment's cloth: base colour with stripes, checks or a chest logo."""
    cloth = Image.new("RGBA", size, tuple(appearance["upper_color_rgb"]) + (255,))
    draw = ImageDraw.Draw(cloth)
    second = tuple(appearance["pattern_rgb"]) + (255,)
    width, height = size
    phase = appearance["pattern_phase"]
    if pattern == "stripes":
        period = 0.05 * unit
        for row in range(int(height / period) + 2):
            y = (row + phase) * period
            draw.rectangle([0, y, width, y + 0.45 * period], fill=second)
    elif pattern == "checks":
        period = 0.06 * unit
        for index in range(int(max(width, height) / period) + 2):
            offset = (index + phase) * period
            draw.rectangle([offset, 0, offset + 0.3 * period, height], fill=second)
            draw.rectangle([0, offset, width, offset + 0.3 * period], fill=second)
    elif pattern == "logo":
        x, y = point(0.0, 0.27)
        radius = 0.045 * unit
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=second)
        radius *= 0.55
        draw.rectangle([x - radius, y - radius, x + radius, y + radius], fill=tuple(appearance["logo_rgb"]) + (255,))
    return cloth


def _draw_occluder(kind: str, size: Tuple[int, int], params: Dict[str, Any], amount: float) -> Image.Image:
    """An occluder on a transparent layer; a larger ``amount`` in [0, 1] hides more of the frame."""
    width, height = size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    color = tuple(params["rgb"]) + (255,)
    dark = tuple(int(c * 0.6) for c in params["rgb"]) + (255,)
    if kind == "pole":
        half = 0.5 * amount * 0.7 * width
        x = params["x"] * width
        draw.rectangle([x - half, 0, x + half, height], fill=color)
        draw.rectangle([x - half, 0, x - half * 0.6, height], fill=dark)
        draw.rectangle([x + half * 0.5, 0, x + half * 0.7, height], fill=tuple(min(255, c + 50) for c in color))
    elif kind == "car":
        car_height = amount * 0.8 * height
        roof = height - car_height
        body = roof + 0.38 * car_height
        cabin_left, cabin_right = params["cabin"] * width
        draw.polygon([(cabin_left, roof), (cabin_right, roof), (cabin_right + 0.12 * width, body),
                      (cabin_left - 0.12 * width, body)], fill=color)
        window = (150, 180, 200, 255)
        inset = 0.06 * car_height
        draw.polygon([(cabin_left + inset, roof + inset), (cabin_right - inset, roof + inset),
                      (cabin_right + 0.06 * width, body), (cabin_left - 0.06 * width, body)], fill=window)
        draw.rounded_rectangle([-0.3 * width, body, 1.3 * width, height + 2], radius=0.08 * car_height, fill=color)
        draw.line([(0, body + 0.35 * car_height), (width, body + 0.35 * car_height)], fill=dark, width=2)
        for wheel_x in params["wheels"] * width:
            radius = 0.17 * car_height
            draw.ellipse([wheel_x - radius, height - radius, wheel_x + radius, height + radius],
                         fill=(20, 20, 22, 255))
    elif kind == "person":
        shift = params["side"] * (1.0 - amount) * 0.75 * width
        layer.paste(params["layer"], (int(round(shift)), 0), params["layer"])
    elif kind == "umbrella":
        x, y = params["x"] * width, params["y"] * height
        radius = amount * 0.9 * width
        draw.pieslice([x - radius, y - 0.7 * radius, x + radius, y + 0.7 * radius], 180, 360, fill=color)
        for rib in np.linspace(-1, 1, 5):
            draw.line([(x, y - 0.7 * radius), (x + rib * radius, y)], fill=dark, width=2)
        draw.line([(x, y), (x, y + 1.1 * radius)], fill=(40, 40, 40, 255), width=3)
    else:  # board: a sign or fence panel coming in from one side
        edge = amount * 1.1 * width
        left, right = (-2, edge) if params["side"] < 0 else (width - edge, width + 2)
        draw.rectangle([left, params["top"] * height, right, height], fill=color)
        draw.rectangle([left, params["top"] * height, right, params["top"] * height + 6], fill=dark)
        for stripe in range(3):
            y = params["top"] * height + (stripe + 1) * 0.12 * height
            draw.line([(left + 4, y), (right - 4, y)], fill=(240, 240, 230, 255), width=3)
    return layer


def _occluder_params(kind: str, size: Tuple[int, int], rng: np.random.Generator,
                     person_rng_seed: Sequence[int]) -> Dict[str, Any]:
    rgb = [int(c) for c in rng.integers(30, 230, 3)]
    if kind == "pole":
        return {"rgb": [int(v) for v in rng.integers(90, 150) + rng.integers(-10, 10, 3)], "x": rng.uniform(0.3, 0.7)}
    if kind == "car":
        left = rng.uniform(-0.2, 0.4)
        return {"rgb": rgb, "cabin": np.array([left, left + rng.uniform(0.6, 0.9)]),
                "wheels": np.array([rng.uniform(-0.1, 0.2), rng.uniform(0.8, 1.1)])}
    if kind == "person":
        other_rng = np.random.default_rng(person_rng_seed)
        attributes, params = _sample_identity(other_rng)
        width, height = size
        unit = height * other_rng.uniform(0.95, 1.1)
        pose = {"unit": unit, "center_x": width / 2, "feet_y": height + unit * other_rng.uniform(0.05, 0.25),
                "lean": other_rng.uniform(-0.05, 0.05), "stance": other_rng.uniform(0, 0.05),
                "arm_swing": other_rng.uniform(-12, 12), "back_view": other_rng.uniform()}
        layer, _ = _draw_person(size, _appearance(attributes, params), attributes, pose)
        return {"rgb": rgb, "side": -1 if rng.uniform() < 0.5 else 1, "layer": layer}
    if kind == "umbrella":
        return {"rgb": rgb, "x": rng.uniform(0.2, 0.8), "y": rng.uniform(0.3, 0.6)}
    return {"rgb": rgb, "side": -1 if rng.uniform() < 0.5 else 1, "top": rng.uniform(-0.1, 0.5)}


def _occlude(body: np.ndarray, region_of_row: np.ndarray, size: Tuple[int, int], rng: np.random.Generator,
             person_rng_seed: Sequence[int]) -> Tuple[Image.Image, Dict[str, Any]]:
    """Find an occluder covering a random 20-60% share of the body by bisection on its size."""
    low_target, high_target = OCCLUSION_RANGE[0] + 0.01, OCCLUSION_RANGE[1] - 0.01
    body_pixels = body.sum()
    for attempt in range(20):
        kind = OCCLUDER_TYPES[int(rng.integers(len(OCCLUDER_TYPES)))] if attempt < 10 else "board"
        target = rng.uniform(0.25, 0.55)
        params = _occluder_params(kind, size, rng, list(person_rng_seed) + [attempt])

        def coverage(amount: float) -> Tuple[float, Image.Image, np.ndarray]:
            layer = _draw_occluder(kind, size, params, amount)
            hidden = np.asarray(layer.getchannel("A")) > 0
            return float((hidden & body).sum() / body_pixels), layer, hidden

        low, high = 0.0, 1.0
        for _ in range(12):
            middle = 0.5 * (low + high)
            if coverage(middle)[0] < target:
                low = middle
            else:
                high = middle
        fraction, layer, hidden = coverage(0.5 * (low + high))
        if low_target <= fraction <= high_target:
            region_fractions = {}
            for index, region in enumerate(BODY_REGIONS):
                in_region = body & (region_of_row == index)[:, None]
                region_fractions[region] = round(float((hidden & in_region).sum() / max(in_region.sum(), 1)), 4)
            regions = [region for region in BODY_REGIONS if region_fractions[region] >= REGION_HIDDEN_SHARE]
            return layer, {"occluder": kind, "fraction": round(fraction, 4), "regions": regions,
                           "region_fractions": region_fractions}
    raise RuntimeError("no occluder hides 20-60% of this body")  # the board fallback always fits


_WORKER_CONTEXT: Dict[str, Any] = {}


def _init_worker(context: Dict[str, Any]) -> None:
    _WORKER_CONTEXT.update(context)


def render_images(items: List[Dict[str, Any]], context: Dict[str, Any],
                  num_workers: Optional[int] = None) -> Dict[str, Dict[str, Any]]:
    """Draw and write every planned image; returns ``{name: occlusion record}``.

    Args:
        items: planned images (``split``, ``index``, ``pid``, ``camid``, ``occluded``, ``name``).
        context: ``seed``, ``identities`` (pid -> attributes and appearance), ``cameras`` and
            ``dataset_dir`` (where the names are written).
        num_workers: drawing processes; by default one per CPU (at most 8) above 3,000 images,
            else one. The output does not depend on it.
    """
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8) if len(items) > 3000 else 1
    try:
        if num_workers > 1:
            with multiprocessing.get_context("fork").Pool(num_workers, _init_worker, (context,)) as pool:
                return dict(pool.imap_unordered(_render_image, items, chunksize=64))
        _init_worker(context)
        return dict(_render_image(item) for item in items)
    finally:
        _WORKER_CONTEXT.clear()


def _render_image(item: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """Draw, write and describe one planned image; seeded by (seed, split, index) only."""
    context = _WORKER_CONTEXT
    seed = context["seed"]
    rng = np.random.default_rng([seed, _STREAM[item["split"]], item["index"]])
    identity = context["identities"][item["pid"]]
    camera = context["cameras"][item["camid"]]
    size = (IMAGE_WIDTH * _SUPERSAMPLE, IMAGE_HEIGHT * _SUPERSAMPLE)
    width, height = size

    background = camera["background"]
    top = int(rng.integers(0, background.shape[0] - height + 1))
    left = int(rng.integers(0, background.shape[1] - width + 1))
    canvas = Image.fromarray(background[top:top + height, left:left + width])

    height_scale = {"short": 0.93, "average": 0.965, "tall": 1.0}[identity["attributes"]["height"]]
    pose = {"unit": height * camera["scale"] * height_scale * rng.uniform(0.96, 1.03),
            "center_x": width * (0.5 + rng.uniform(-0.07, 0.07)),
            "feet_y": height * rng.uniform(0.97, 1.0), "lean": rng.uniform(-0.04, 0.04),
            "stance": rng.uniform(0.0, 0.05), "arm_swing": rng.uniform(-14, 14), "back_view": rng.uniform()}
    person, bands = _draw_person(size, identity["appearance"], identity["attributes"], pose)
    canvas.paste(person, (0, 0), person)

    record = {"occluder": "none", "fraction": 0.0, "regions": [],
              "region_fractions": {region: 0.0 for region in BODY_REGIONS}}
    if item["occluded"]:
        body = np.asarray(person.getchannel("A")) > 0
        rows = np.arange(height)
        region_of_row = np.searchsorted([bands["head"], bands["upper"], bands["lower"]], rows, side="right")
        occluder, record = _occlude(body, region_of_row, size, rng, [seed, _STREAM[item["split"]], item["index"], 99])
        canvas.paste(occluder, (0, 0), occluder)

    small = canvas.reduce(_SUPERSAMPLE)
    pixels = np.asarray(small, dtype=np.float32) * camera["cast"] * camera["brightness"]
    pixels += rng.normal(0, camera["noise"], pixels.shape)
    small = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    blur = camera["blur"] + rng.uniform(0, 0.3)
    if blur > 0.05:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    buffer = BytesIO()
    small.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    Path(context["dataset_dir"], item["name"]).write_bytes(buffer.getvalue())
    return item["name"], record


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, sort_keys=True, indent=1) + "\n")


def _read_marker(dataset_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((dataset_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_complete(dataset_dir: PathLike) -> bool:
    """Whether ``dataset_dir`` holds a finished synthetic dataset (its marker file is written last)."""
    marker = _read_marker(Path(dataset_dir))
    return marker is not None and marker.get("version") == GENERATOR_VERSION


def _summary(marker: Dict[str, Any], dataset_dir: Path, skipped: bool) -> Dict[str, Any]:
    return {"path": str(dataset_dir), "preset": marker["preset"], "seed": marker["seed"],
            "splits": marker["splits"], "skipped": skipped}


def generate(root: PathLike, preset: str = "tiny", seed: int = 0, overwrite: bool = False,
             num_workers: Optional[int] = None) -> Dict[str, Any]:
    """Write the synthetic dataset to ``root/SyntheticOccluded`` and return a summary.

    Args:
        root: folder that receives ``SyntheticOccluded`` (fastreid's ``DATASETS.ROOT``).
        preset: a key of ``PRESETS``.
        seed: the same preset and seed give byte-identical files.
        overwrite: replace a dataset made with another preset or seed, or an unfinished folder.
        num_workers: drawing processes; by default one per CPU for large datasets, else one.

    Returns:
        ``{"path", "preset", "seed", "splits": {split: {"ids", "images", "occluded"}}, "skipped"}``;
        ``skipped`` is True when the same dataset was already complete and nothing was written.

    Raises:
        KeyError: unknown preset.
        FileExistsError: the folder holds something else and ``overwrite`` is False.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown synthetic preset {preset!r}; choose from {sorted(PRESETS)}")
    config = PRESETS[preset]

    def draw(work_dir: Path) -> Dict[str, Any]:
        identities, hard_pairs = _make_identities(config, seed)
        plan = _make_plan(config, identities, seed)
        for folder in SPLIT_DIRS.values():
            (work_dir / folder).mkdir()
        items = [item for split in ("train", "query", "gallery") for item in plan[split]]
        context = {"seed": seed, "identities": identities, "cameras": _make_cameras(config.num_cameras, seed),
                   "dataset_dir": str(work_dir)}
        logger.info("Drawing %d synthetic images (preset %s, seed %d)", len(items), preset, seed)
        records = render_images(items, context, num_workers)

        _write_json(work_dir / ATTRIBUTES_FILE, {
            "schema": ATTRIBUTE_SCHEMA,
            "identities": {f"{pid:04d}": identity["attributes"] for pid, identity in identities.items()},
            "hard_pairs": hard_pairs,
        })
        _write_json(work_dir / OCCLUSION_FILE, records)
        splits = {split: {"ids": len({item["pid"] for item in plan[split]}), "images": len(plan[split]),
                          "occluded": sum(item["occluded"] for item in plan[split])} for split in plan}
        return {"preset": preset, "seed": seed, "version": GENERATOR_VERSION, "splits": splits,
                "config": asdict(config)}

    return build_folder_once(Path(root) / DATASET_DIR, "synthetic dataset", preset, seed, GENERATOR_VERSION,
                             overwrite, draw)


def build_folder_once(folder: Path, kind: str, preset: str, seed: int, version: int, overwrite: bool,
                      build: Callable[[Path], Dict[str, Any]]) -> Dict[str, Any]:
    """Make a generated ``folder`` once: skip it when its marker says (preset, seed, version) are
    the same, refuse a foreign or older folder unless ``overwrite``, and build anything new in a
    temporary sibling folder (``build(work_dir)`` fills it and returns the marker), renamed into
    place only when complete. Returns :func:`_summary`."""
    marker = _read_marker(folder)
    if marker is not None and (marker.get("preset"), marker.get("seed"), marker.get("version")) == (
            preset, seed, version):
        logger.info("The %s %s (preset %s, seed %d) is already complete", kind, folder, preset, seed)
        return _summary(marker, folder, skipped=True)
    if folder.exists() and not overwrite:
        found = (f"a {kind} with preset {marker.get('preset')!r}, seed {marker.get('seed')!r}, "
                 f"version {marker.get('version')!r}" if marker else "an unfinished or foreign folder")
        raise FileExistsError(f"{folder} holds {found}; pass overwrite=True (--overwrite) to replace it")

    folder.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{folder.name}-partial-", dir=folder.parent))
    try:
        new_marker = build(work_dir)
        _write_json(work_dir / MARKER_FILE, new_marker)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(work_dir, folder)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    # mkdtemp makes the folder private; give it the usual permissions of a data folder.
    os.chmod(folder, 0o755)
    logger.info("Wrote the %s to %s: %s", kind, folder, new_marker["splits"])
    return _summary(new_marker, folder, skipped=False)


# Preview contact sheet geometry, in pixels.
PREVIEW_COLUMNS = 10
PREVIEW_LABEL_WIDTH = 150
PREVIEW_CELL_WIDTH = IMAGE_WIDTH + 8
PREVIEW_CELL_HEIGHT = IMAGE_HEIGHT + 30
PREVIEW_TITLE_HEIGHT = 24


def _preview_ids(attributes: Dict[str, Any], splits_of_id: Dict[str, str], num_ids: int) -> List[str]:
    """Rows to show: one hard pair of each split side by side, then train and test ids alternately."""
    chosen: List[str] = []
    for split in ("train", "test"):
        for first, second, _ in attributes["hard_pairs"]:
            if splits_of_id.get(first) == split and len(chosen) + 2 <= num_ids:
                chosen += [first, second]
                break
    by_split = {split: [pid for pid in sorted(splits_of_id) if splits_of_id[pid] == split and pid not in chosen]
                for split in ("train", "test")}
    while len(chosen) < num_ids and (by_split["train"] or by_split["test"]):
        for split in ("train", "test"):
            if by_split[split] and len(chosen) < num_ids:
                chosen.append(by_split[split].pop(0))
    return chosen


def _across_cameras(names: List[str]) -> List[str]:
    """Queries first, then the other images taking each camera in turn, so a row shows every camera."""
    queries = [name for name in names if name.startswith(SPLIT_DIRS["query"] + "/")]
    by_camera: Dict[str, List[str]] = {}
    for name in names:
        if name not in queries:
            by_camera.setdefault(name.split("_c")[1].split("_")[0], []).append(name)
    ordered = list(queries)
    while any(by_camera.values()):
        ordered += [by_camera[camera].pop(0) for camera in sorted(by_camera) if by_camera[camera]]
    return ordered


def write_preview(dataset_dir: PathLike, out_png: PathLike, num_ids: int = 8) -> str:
    """Write a contact sheet of ``num_ids`` identities: one row each, their images across cameras.

    Each row starts with the identity's attributes; each cell is labelled with its split
    (T train, Q query, G gallery) and camera, and occluded images get a red frame and the
    share of the body hidden. The size is ``PREVIEW_LABEL_WIDTH + PREVIEW_COLUMNS *
    PREVIEW_CELL_WIDTH`` by ``PREVIEW_TITLE_HEIGHT + num_ids * PREVIEW_CELL_HEIGHT``.

    Returns:
        The path of the PNG written.
    """
    dataset_dir = Path(dataset_dir)
    attributes = json.loads((dataset_dir / ATTRIBUTES_FILE).read_text())
    occlusion = json.loads((dataset_dir / OCCLUSION_FILE).read_text())
    images_of_id: Dict[str, List[str]] = {}
    splits_of_id: Dict[str, str] = {}
    for name in sorted(occlusion, key=lambda n: (n.split("/")[0] != "query", n)):
        pid = name.split("/")[1][:4]
        images_of_id.setdefault(pid, []).append(name)
        splits_of_id[pid] = "train" if name.startswith(SPLIT_DIRS["train"]) else "test"
    rows = _preview_ids(attributes, splits_of_id, num_ids)
    twin_of = {pair[1]: (pair[0], pair[2]) for pair in attributes["hard_pairs"]}

    sheet = Image.new("RGB", (PREVIEW_LABEL_WIDTH + PREVIEW_COLUMNS * PREVIEW_CELL_WIDTH,
                              PREVIEW_TITLE_HEIGHT + num_ids * PREVIEW_CELL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(11)
    draw.text((4, 4), f"{dataset_dir.name}: T=train Q=query G=gallery, red frame = occluded (share of body hidden)",
              fill=(0, 0, 0), font=font)
    short = {"train": "T", "query": "Q", "gallery": "G"}
    split_of_dir = {folder: split for split, folder in SPLIT_DIRS.items()}
    for row, pid in enumerate(rows):
        y = PREVIEW_TITLE_HEIGHT + row * PREVIEW_CELL_HEIGHT
        if row:
            draw.line([(0, y - 2), (sheet.width, y - 2)], fill=(200, 200, 200))
        person = attributes["identities"][pid]
        lines = [f"id {pid} ({splits_of_id[pid]})",
                 f"{person['body_shape']}, {person['height']}",
                 f"hair {person['hair_length']} {person['hair_color']}",
                 f"up {person['upper_color']} {person['upper_pattern']}",
                 f"  {person['upper_sleeve']} sleeves",
                 f"low {person['lower_color']} {person['lower_length']}",
                 f"bag {person['bag']}",
                 f"hat {person['hat']}, shoes {person['shoes']}"]
        if pid in twin_of:
            lines.append(f"= {twin_of[pid][0]} but {twin_of[pid][1]}")
        for index, text in enumerate(lines):
            draw.text((4, y + 4 + index * 14), text, fill=(150, 0, 0) if text.startswith("=") else (0, 0, 0), font=font)
        for column, name in enumerate(_across_cameras(images_of_id[pid])[:PREVIEW_COLUMNS]):
            x = PREVIEW_LABEL_WIDTH + column * PREVIEW_CELL_WIDTH + 4
            record = occlusion[name]
            if record["fraction"] > 0:
                draw.rectangle([x - 3, y - 1, x + IMAGE_WIDTH + 2, y + IMAGE_HEIGHT + 2], fill=(220, 0, 0))
            sheet.paste(Image.open(dataset_dir / name).convert("RGB"), (x, y + 1))
            camid = name.split("_c")[1].split("_")[0]
            label = f"{short[split_of_dir[name.split('/')[0]]]} c{camid}"
            if record["fraction"] > 0:
                label += f" {record['fraction']:.0%}"
            draw.text((x, y + IMAGE_HEIGHT + 4), label, fill=(0, 0, 0), font=font)
            if record["fraction"] > 0:
                draw.text((x, y + IMAGE_HEIGHT + 16), record["occluder"], fill=(180, 0, 0), font=font)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return str(out_png)
