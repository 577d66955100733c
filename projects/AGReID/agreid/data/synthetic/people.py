"""Identities and the image plan: who exists, with which attributes, seen by which camera in which split.

Every draw comes from a generator seeded by ``(seed, STREAM[...])``; nothing here draws pixels.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .schema import ATTRIBUTE_SCHEMA, SPLIT_DIRS, STREAM, SyntheticPreset

__all__ = ["appearance", "make_identities", "make_plan", "occluded_flags", "sample_identity"]

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


def _jitter_rgb(rgb: Sequence[int], offset: Sequence[int]) -> Tuple[int, int, int]:
    return tuple(int(np.clip(c + o, 0, 255)) for c, o in zip(rgb, offset))


def appearance(attributes: Dict[str, str], params: Dict[str, Any]) -> Dict[str, Any]:
    """Colours and sizes used for drawing, from the attributes and the identity's own jitter.

    Returns ``params`` plus ``<attribute>_rgb`` for every colour attribute and ``pattern_rgb``
    (the second colour of a striped, checked or logo top); the drawing reads only this.
    """
    looks = dict(params)
    for name, palette in _COLOR_ATTRIBUTES.items():
        looks[name + "_rgb"] = _jitter_rgb(palette[attributes[name]], params["color_jitter"][name])
    upper = looks["upper_color_rgb"]
    luminance = 0.299 * upper[0] + 0.587 * upper[1] + 0.114 * upper[2]
    looks["pattern_rgb"] = (36, 36, 40) if luminance > 140 else (236, 236, 230)
    return looks


def sample_identity(rng: np.random.Generator) -> Tuple[Dict[str, str], Dict[str, Any]]:
    """A random person: ``(attributes, params)``, one value of every attribute of ``ATTRIBUTE_SCHEMA``
    and the drawing parameters that are not attributes (skin, accessory colours, colour jitter,
    pattern phase, width); :func:`appearance` turns both into colours. Used for identities, for
    the people that occlude others and for the caption corpus.
    """
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


def make_identities(preset: SyntheticPreset, seed: int) -> Tuple[Dict[int, Dict[str, Any]], List[List[Any]]]:
    """All identities (train pids first, then test pids), each with a unique attribute combination.

    With chance ``hard_pair_ratio`` an identity copies the previous identity of its split and
    changes exactly one attribute: the hard case where attributes differ only a little.

    Returns:
        ``({pid: {"attributes", "params", "split" ("train"|"test"), "is_twin", "appearance"}},
        hard_pairs)``, each hard pair ``["PPPP", "PPPP", changed attribute]``.
    """
    rng = np.random.default_rng([seed, STREAM["identity"]])
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
                    attributes, params = sample_identity(rng)
                key = tuple(attributes[name] for name in ATTRIBUTE_SCHEMA)
                if key not in seen:
                    break
            seen.add(key)
            identities[pid] = {"attributes": attributes, "params": params, "split": split,
                               "is_twin": twin, "appearance": appearance(attributes, params)}
            if twin:
                hard_pairs.append([f"{previous:04d}", f"{pid:04d}", changed])
            previous = pid
    return identities, hard_pairs



def _spread_cameras(cameras: np.ndarray, count: int, rng: np.random.Generator) -> List[int]:
    """``count`` camera ids that use every camera of ``cameras`` once before repeating any."""
    repeated = np.resize(cameras, count)
    return [int(c) for c in rng.permutation(repeated)]


def occluded_flags(count: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` booleans, exactly ``round(ratio * count)`` of them True, at random places."""
    flags = np.zeros(count, dtype=bool)
    flags[rng.permutation(count)[: int(round(ratio * count))]] = True
    return flags


def make_plan(preset: SyntheticPreset, identities: Dict[int, Dict[str, Any]], seed: int
              ) -> Dict[str, List[Dict[str, Any]]]:
    """Which image of which identity, camera and frame goes in which split, and which are occluded.

    Every camera an identity is seen by has at least one of its gallery images, and an
    identity has at least two cameras, so each query has a gallery match from another camera.

    Returns:
        ``{"train"|"query"|"gallery": [{"pid", "camid", "split", "occluded", "name", "index"}]}``,
        the items :func:`agreid.data.synthetic.drawing.render_images` draws.
    """
    rng = np.random.default_rng([seed, STREAM["plan"]])
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
        for item, occluded in zip(plan[split], occluded_flags(len(plan[split]), ratios[split], rng)):
            frame += int(rng.integers(1, 40))
            item.update(split=split, occluded=bool(occluded),
                        name=f"{SPLIT_DIRS[split]}/{item['pid']:04d}_c{item['camid']}_f{frame:07d}.jpg")
        for index, item in enumerate(plan[split]):
            item["index"] = index
    return plan

