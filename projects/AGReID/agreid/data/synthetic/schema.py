"""The synthetic data's vocabulary: attribute schema, presets, image geometry, file names and seed streams.

Imported by every other module of :mod:`agreid.data.synthetic` and by :mod:`agreid.data.captions`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Union

__all__ = [
    "ATTRIBUTES_FILE",
    "ATTRIBUTE_SCHEMA",
    "BODY_REGIONS",
    "DATASET_DIR",
    "GENERATOR_VERSION",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "JPEG_QUALITY",
    "MARKER_FILE",
    "OCCLUDER_TYPES",
    "OCCLUSION_FILE",
    "OCCLUSION_RANGE",
    "PRESETS",
    "PathLike",
    "REGION_HIDDEN_SHARE",
    "SPLIT_DIRS",
    "STREAM",
    "SyntheticPreset",
]

PathLike = Union[str, "os.PathLike[str]"]

DATASET_DIR = "SyntheticOccluded"
# Bumped whenever the drawing changes, so an old dataset on disk is not taken for a new one.
GENERATOR_VERSION = 1
MARKER_FILE = "done.json"
ATTRIBUTES_FILE = "attributes.json"
OCCLUSION_FILE = "occlusion.json"
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
# Seed streams, the second number of every ``numpy.random.default_rng([seed, STREAM[name], ...])``:
# one per split for the per-image generators, and the non-image ones.
STREAM = {"train": 1, "query": 2, "gallery": 3, "identity": 10, "plan": 11, "camera": 12,
          # The caption corpus (agreid.data.captions) draws from streams of its own.
          "caption_train": 21, "caption_val": 22, "caption_identity": 23, "caption_plan": 24,
          "caption_camera": 25, "caption_text": 26}

IMAGE_HEIGHT = 128
IMAGE_WIDTH = 64
JPEG_QUALITY = 90
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
