"""Test cameras on the SIE rows the model was trained with.

The training set numbers its cameras ``<dataset>_<camid>`` in natural order; row ``i`` of the
SIE table belongs to the ``i``-th of them (``MODEL.BACKBONE.TRAIN_CAMERAS`` records the list,
in ``config.yaml`` and in every checkpoint). A test image of camera ``c`` of dataset ``d``
uses the row of ``d_c``. A test camera that training never saw has no row; the rule
(``TEST.UNSEEN_CAMERA``):

* ``error`` (default): stop, naming the camera and one of its files, before any work;
* ``mean``: give it a camera-agnostic embedding, the mean of the SIE rows, with a warning
  (e.g. Occluded-REID, tested after training on Market-1501).

Camera ids stay distinct after the mapping (unseen cameras get ids past the table), so the
evaluation's same-camera filter is unchanged.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

logger = logging.getLogger(__name__)

RULES = ("error", "mean")

__all__ = ["RULES", "UnseenCameraError", "map_test_cameras", "record_train_cameras"]


class UnseenCameraError(ValueError):
    """A test camera has no SIE row (the message names the camera and a file)."""


def map_test_cameras(cfg, dataset_name: str, prefix: str, items: Sequence[Tuple]) -> List[Tuple]:
    """``items`` (path, pid, camid) with camids replaced by SIE rows of the training cameras.

    Args:
        cfg: the run's config (``MODEL.BACKBONE.TRAIN_CAMERAS``, ``TEST.UNSEEN_CAMERA``).
        dataset_name: the test dataset, for messages.
        prefix: the dataset's camera prefix in the training labels (its ``dataset_name``).
        items: query + gallery items with raw camera ids.

    Returns the items unchanged when SIE is off or the training cameras are unknown (a
    checkpoint from before they were recorded), after checking each id has a row.
    """
    backbone = cfg.MODEL.BACKBONE
    uses_sie = backbone.get("SIE_CAMERA", False) and (
        cfg.MODEL.META_ARCHITECTURE == "AGReID" or backbone.NAME == "build_clip_backbone")
    if not uses_sie:  # fastreid's own models: camera ids only feed the evaluation
        return list(items)
    rule = cfg.TEST.get("UNSEEN_CAMERA", "error")
    if rule not in RULES:
        raise ValueError(f"TEST.UNSEEN_CAMERA must be one of {RULES}, not {rule!r}")
    labels = list(backbone.get("TRAIN_CAMERAS", []) or [])
    if not labels:
        return _map_by_row_number(int(backbone.NUM_CAMERAS), rule, dataset_name, items)
    rows: Dict[str, int] = {label: i for i, label in enumerate(labels)}
    unseen: Dict[object, str] = {}
    for path, _, cam in items:
        if f"{prefix}_{cam}" not in rows:
            unseen.setdefault(cam, path)
    if unseen and rule == "error":
        cam, path = next(iter(unseen.items()))
        raise UnseenCameraError(
            f"Test camera {cam} of {dataset_name} (e.g. {path}) is not one of the {len(labels)} training "
            f"cameras ({', '.join(labels)}): SIE has no row for it. Set TEST.UNSEEN_CAMERA mean to give "
            f"such images the mean SIE row (a camera-agnostic embedding).")
    extra = {cam: len(labels) + k for k, cam in enumerate(sorted(unseen, key=str))}
    if unseen:
        logger.warning("%s: test camera(s) %s not seen in training get the mean SIE row "
                       "(TEST.UNSEEN_CAMERA mean).", dataset_name, ", ".join(str(c) for c in extra))
    return [(path, pid, rows[f"{prefix}_{cam}"] if cam not in extra else extra[cam])
            for path, pid, cam in items]


def _map_by_row_number(num_rows: int, rule: str, dataset_name: str, items: Sequence[Tuple]) -> List[Tuple]:
    """A checkpoint that does not record its training cameras (converted, fastreid's, older):
    camera ``c`` uses row ``c``; one past the table follows ``rule`` like an unseen camera."""
    if num_rows <= 0:
        return list(items)
    beyond: Dict[object, str] = {}
    for path, _, cam in items:
        if not 0 <= int(cam) < num_rows:
            beyond.setdefault(cam, path)
    if not beyond:
        return list(items)
    if rule == "error":
        cam, path = next(iter(beyond.items()))
        raise UnseenCameraError(
            f"Test camera {cam} of {dataset_name} ({path}) is beyond the {num_rows} SIE rows of the model "
            f"(MODEL.BACKBONE.NUM_CAMERAS). Set TEST.UNSEEN_CAMERA mean to give such images the mean SIE "
            f"row (a camera-agnostic embedding).")
    extra = {cam: num_rows + k for k, cam in enumerate(sorted(beyond, key=str))}
    logger.warning("%s: test camera(s) %s beyond the %d SIE rows get the mean SIE row (TEST.UNSEEN_CAMERA mean).",
                   dataset_name, ", ".join(str(c) for c in extra), num_rows)
    return [(path, pid, extra.get(cam, cam)) for path, pid, cam in items]


def record_train_cameras(cfg, cameras: Sequence[str]):
    """``cfg`` with ``MODEL.BACKBONE.TRAIN_CAMERAS`` = the training camera labels in SIE-row order."""
    if "TRAIN_CAMERAS" not in cfg.MODEL.BACKBONE:
        return cfg
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.BACKBONE.TRAIN_CAMERAS = [str(c) for c in cameras]
    if frozen:
        cfg.freeze()
    return cfg
