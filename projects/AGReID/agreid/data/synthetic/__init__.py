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
processes. This package imports neither torch nor fastreid, so it is quick to import.

Modules: :mod:`.schema` (attribute schema, presets, image geometry, file names, seed streams),
:mod:`.people` (identities, attributes and the image plan), :mod:`.drawing` (cameras, people,
occluders, rendering) and :mod:`.writer` (the folder, its JSON files, :func:`generate`, the preview).
This package re-exports what callers of the generator use.
"""
from .drawing import render_images
from .schema import (ATTRIBUTE_SCHEMA, ATTRIBUTES_FILE, BODY_REGIONS, DATASET_DIR, GENERATOR_VERSION, IMAGE_HEIGHT,
                     IMAGE_WIDTH, JPEG_QUALITY, MARKER_FILE, OCCLUDER_TYPES, OCCLUSION_FILE, OCCLUSION_RANGE, PRESETS,
                     REGION_HIDDEN_SHARE, SPLIT_DIRS, PathLike, SyntheticPreset)
from .writer import (PREVIEW_CELL_HEIGHT, PREVIEW_CELL_WIDTH, PREVIEW_COLUMNS, PREVIEW_LABEL_WIDTH,
                     PREVIEW_TITLE_HEIGHT, build_folder_once, generate, is_complete, write_preview)

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
    "PREVIEW_CELL_HEIGHT",
    "PREVIEW_CELL_WIDTH",
    "PREVIEW_COLUMNS",
    "PREVIEW_LABEL_WIDTH",
    "PREVIEW_TITLE_HEIGHT",
    "PRESETS",
    "PathLike",
    "REGION_HIDDEN_SHARE",
    "SPLIT_DIRS",
    "SyntheticPreset",
    "build_folder_once",
    "generate",
    "is_complete",
    "render_images",
    "write_preview",
]
