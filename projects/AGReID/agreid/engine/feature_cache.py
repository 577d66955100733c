"""The stage-1 feature cache: image features of every training image, computed once.

Stage 1 (phase ``align``) trains only the prompts and the attribute encoder; the image encoder
is frozen, so its features of the (un-augmented) training images are computed once and stage-1
batches are drawn from that table instead of running the image encoder at every step.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator, Tuple

import torch
from fastreid.data import build_reid_test_loader
from fastreid.data.common import CommDataset
from fastreid.utils import comm

from ..data.transforms import build_agreid_transforms
from ..phases import PhasedModel
from .progress import Progress

logger = logging.getLogger(__name__)


class CachedFeatureLoader:
    """Endless random batches ``{"features", "targets"}`` drawn from the stage-1 feature cache.

    Each pass is a new random permutation; the last incomplete batch of a pass is dropped.

    Args:
        features: (N, D) cached features.
        targets: (N,) identities.
        batch_size: batch size of this process (at most N).
        seed: seed of the permutations (the process rank, so processes draw different batches).
    """

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int):
        self.features, self.targets = features, targets
        self.batch_size = min(batch_size, len(targets))
        self._generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        """Draw the batches of iterators made from now on from ``seed``."""
        self._generator.manual_seed(seed)

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        while True:
            order = torch.randperm(len(self.targets), generator=self._generator)
            for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
                index = order[start:start + self.batch_size]
                yield {"features": self.features[index], "targets": self.targets[index]}


def cache_dataset(cfg, train_set: CommDataset) -> CommDataset:
    """The training images with the test transform (resize + to tensor), labelled like ``train_set``."""
    cache_set = CommDataset(train_set.img_items, build_agreid_transforms(cfg, is_train=False), relabel=True)
    cache_set.pid_dict, cache_set.cam_dict = train_set.pid_dict, train_set.cam_dict
    return cache_set


@torch.no_grad()
def compute_feature_cache(cfg, model: PhasedModel, train_set: CommDataset) -> Tuple[torch.Tensor, torch.Tensor]:
    """``model.encode_image`` of every image of ``train_set``, without augmentation.

    Each process encodes its shard (fastreid's ``InferenceSampler``); the shards are gathered,
    so every process holds the whole cache.

    Args:
        cfg: the run's config (``SOLVER.STAGE1.CACHE_BATCH``, ``DATALOADER.NUM_WORKERS``, input size).
        model: the model (unwrapped from DDP); its training mode is restored afterwards.
        train_set: the training set (its labels and camera numbering are kept).

    Returns:
        ``(features (N, D), targets (N,))`` on the CPU, in float32.
    """
    loader = build_reid_test_loader(cache_dataset(cfg, train_set), cfg.SOLVER.STAGE1.CACHE_BATCH, 0,
                                    num_workers=cfg.DATALOADER.NUM_WORKERS)[0]
    was_training = model.training
    model.eval()
    chunks, targets = [], []
    try:
        for batch in Progress(loader, "stage-1 feature cache"):
            chunks.append(model.encode_image(batch).float().cpu())
            targets.append(batch["targets"].cpu())
    finally:
        model.train(was_training)
    features, targets = torch.cat(chunks), torch.cat(targets)
    if comm.get_world_size() > 1:
        shards = comm.all_gather((features, targets))
        features = torch.cat([s[0] for s in shards])
        targets = torch.cat([s[1] for s in shards])
    logger.info("Stage-1 feature cache: %d images x %d dims", *features.shape)
    return features, targets
