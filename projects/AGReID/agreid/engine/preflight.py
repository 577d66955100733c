"""Checks of a run's settings made before any work: a mistake found here is one line that names
the keys and values, instead of a hang in a sampler or a traceback from deep in the trainer.

:func:`check_config` needs only the config; :func:`check_identity_batches` also needs the
training set (its number of identities); :func:`check_query_matches` the test items;
:func:`check_test_cameras` reads the test sets and maps their cameras.
"""
from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from typing import Dict, List, Sequence, Set, Tuple

import torch

from .cameras import RULES, map_test_cameras

__all__ = ["IDENTITY_SAMPLERS", "check_config", "check_identity_batches", "check_query_matches", "check_test_cameras",
           "optimizer_names"]

logger = logging.getLogger(__name__)

# fastreid's samplers that draw NUM_INSTANCE images of each of IMS_PER_BATCH / NUM_INSTANCE
# identities: they loop forever when the batch cannot be filled that way.
IDENTITY_SAMPLERS = ("NaiveIdentitySampler", "BalancedIdentitySampler", "SetReWeightSampler")


def optimizer_names() -> List[str]:
    """The optimisers ``SOLVER.OPT`` and ``SOLVER.STAGE1.OPT`` may name (``torch.optim``'s classes)."""
    return sorted(name for name, value in vars(torch.optim).items()
                  if inspect.isclass(value) and issubclass(value, torch.optim.Optimizer)
                  and value is not torch.optim.Optimizer)


def check_config(cfg, world_size: int = 1) -> None:
    """Check what the config alone can tell: optimiser names, rules, batch arithmetic.

    Raises:
        ValueError: naming the key and the value, and what would be valid.
    """
    names = optimizer_names()
    keys = [("SOLVER.OPT", cfg.SOLVER.OPT)]
    if "STAGE1" in cfg.SOLVER:
        keys.append(("SOLVER.STAGE1.OPT", cfg.SOLVER.STAGE1.OPT))
    for key, value in keys:
        if value not in names:
            raise ValueError(f"{key} {value!r} is not an optimiser of torch.optim; use one of: "
                             f"{', '.join(names)} (the name is case-sensitive).")
    rule = cfg.TEST.get("UNSEEN_CAMERA", "error")
    if rule not in RULES:
        raise ValueError(f"TEST.UNSEEN_CAMERA {rule!r}: use one of {', '.join(RULES)}.")
    if cfg.MODEL.META_ARCHITECTURE == "AGReID" and "ATTR" in cfg.MODEL:
        from ..modeling.noise_mask import threshold_from_config

        threshold_from_config(cfg)  # names the key
    _check_batch_arithmetic(cfg, world_size)


def _check_batch_arithmetic(cfg, world_size: int) -> None:
    batch = int(cfg.SOLVER.IMS_PER_BATCH)
    if batch <= 0 or batch % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {batch} must be a positive multiple of the number of "
                         f"processes ({world_size}).")
    if "STAGE1" in cfg.SOLVER:
        stage1 = int(cfg.SOLVER.STAGE1.IMS_PER_BATCH)
        if stage1 <= 0 or stage1 % world_size:
            raise ValueError(f"SOLVER.STAGE1.IMS_PER_BATCH {stage1} must be a positive multiple of the number "
                             f"of processes ({world_size}).")
    sampler = cfg.DATALOADER.SAMPLER_TRAIN
    if sampler not in IDENTITY_SAMPLERS:
        return
    instances = int(cfg.DATALOADER.NUM_INSTANCE)
    per_process = batch // world_size
    where = f" per process ({batch} over {world_size} processes)" if world_size > 1 else ""
    if instances <= 0 or per_process < instances or per_process % instances:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH {batch} cannot be filled by {sampler}: it draws DATALOADER.NUM_INSTANCE "
            f"{instances} images of each identity, so the batch{where} must be a positive multiple of "
            f"{instances} (e.g. SOLVER.IMS_PER_BATCH {_nearest(per_process, instances) * world_size}).")


def _nearest(batch: int, instances: int) -> int:
    instances = max(instances, 1)
    return max(batch // instances, 1) * instances


def check_identity_batches(cfg, num_identities: int, num_images: int, world_size: int = 1) -> None:
    """Check that the identity sampler can fill a batch from a training set of this size.

    Raises:
        ValueError: naming ``SOLVER.IMS_PER_BATCH``, ``DATALOADER.NUM_INSTANCE`` and the counts.
    """
    if num_images == 0:
        raise ValueError(f"The training set of {list(cfg.DATASETS.NAMES)} has no images.")
    if cfg.DATALOADER.SAMPLER_TRAIN not in IDENTITY_SAMPLERS:
        return
    batch, instances = int(cfg.SOLVER.IMS_PER_BATCH), int(cfg.DATALOADER.NUM_INSTANCE)
    per_batch = batch // world_size // instances
    if per_batch > num_identities:
        most = num_identities * instances * world_size
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH {batch} with DATALOADER.NUM_INSTANCE {instances} needs {per_batch} identities "
            f"in each batch, but the training set of {list(cfg.DATASETS.NAMES)} has {num_identities} "
            f"({num_images} images). Use SOLVER.IMS_PER_BATCH {most} or less.")


def check_query_matches(dataset_name: str, query: Sequence[Tuple], gallery: Sequence[Tuple]) -> int:
    """Check that the evaluation will have something to rank: some query has a gallery image
    of its identity in another camera (the protocol drops same-camera images of the identity).

    Returns the number of queries without such a match (the evaluation skips them).

    Raises:
        ValueError: when no query has one, saying why (a single camera, or disjoint identities).
    """
    cameras_of: Dict[object, Set[object]] = defaultdict(set)
    for _, pid, camid in gallery:
        cameras_of[pid].add(camid)
    unmatched = [(path, pid, camid) for path, pid, camid in query if not cameras_of.get(pid, set()) - {camid}]
    if query and len(unmatched) == len(query):
        cameras = sorted({str(c) for _, _, c in list(query) + list(gallery)})
        if len(cameras) == 1:
            why = (f"all its query and gallery images are in one camera ({cameras[0]}), and the protocol "
                   f"drops gallery images of the query's identity taken by the query's camera. Give the "
                   f"query images a camera id of their own (e.g. a camid column in DATASETS.LIST.QUERY)")
        elif not set(cameras_of) & {pid for _, pid, _ in query}:
            why = "no query identity appears in the gallery. Check that query and gallery use the same ids"
        else:
            why = ("every query's identity appears in the gallery only in the query's own camera, which the "
                   "protocol drops. Give query and gallery images distinct camera ids")
        path = unmatched[0][0]
        raise ValueError(f"Test set {dataset_name}: no query has a true match in the gallery (e.g. {path}): "
                         f"{why}.")
    return len(unmatched)


def check_test_cameras(cfg) -> None:
    """Map every test set's cameras once, and check that its queries have true matches, so an
    unseen camera or a test set with nothing to rank stops the run before any work.

    Raises:
        UnseenCameraError: under ``TEST.UNSEEN_CAMERA error``, naming the camera and a file.
        ValueError: no query has a gallery image of its identity in another camera.
    """
    from ..data import build_dataset

    for name in cfg.DATASETS.TESTS:
        data = build_dataset(cfg, name)
        map_test_cameras(cfg, name, getattr(data, "dataset_name", name), list(data.query) + list(data.gallery))
        unmatched = check_query_matches(name, data.query, data.gallery)
        if unmatched:
            logger.warning("%s: %d of %d queries have no gallery image of their identity in another camera; "
                           "the evaluation skips them.", name, unmatched, len(data.query))
