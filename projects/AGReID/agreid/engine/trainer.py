"""fastreid's ``DefaultTrainer`` with AG-ReID's data checks, evaluator and two training phases."""
from __future__ import annotations

import logging
import math
import os
import re
import weakref
from typing import Dict, Iterator, List, Optional

import torch
from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.samplers import InferenceSampler
from fastreid.data.transforms import build_transforms
from fastreid.engine import DefaultTrainer, hooks
from fastreid.utils import comm
from fastreid.utils.checkpoint import Checkpointer
from fastreid.utils.events import EventStorage
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import skip_pretrained_weights
from ..data import verify_images
from .hooks import PhaseLRScheduler, PhaseSwitchHook

logger = logging.getLogger(__name__)

PHASES = ("align", "guide")


def dataset_root(cfg) -> str:
    """``DATASETS.ROOT``, else ``$FASTREID_DATASETS``, else ``datasets`` (fastreid's rule)."""
    return cfg.DATASETS.ROOT or os.getenv("FASTREID_DATASETS", "datasets")


def natural_key(label) -> tuple:
    """Sort ``msmt17_2`` before ``msmt17_10``, so relabelled cameras keep their numeric order."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(label)))


class AtomicCheckpointer(Checkpointer):
    """fastreid's checkpointer, writing to a temporary file first: never a half-written ``.pth``."""

    def save(self, name: str, **kwargs):
        """Save model, checkpointables and ``kwargs`` to ``<save_dir>/<name>.pth`` atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        tmp_file = save_file + ".tmp"
        self.logger.info("Saving checkpoint to %s", save_file)
        torch.save(data, tmp_file)
        os.replace(tmp_file, save_file)
        self.tag_last_checkpoint(os.path.basename(save_file))


class _PhaseState:
    """Checkpointable record of the phase; loading it puts the trainer in that phase first, so
    the optimiser state that follows it in the checkpoint lands in the right optimiser."""

    def __init__(self, trainer: "AGReIDTrainer"):
        self._trainer = weakref.proxy(trainer)

    def state_dict(self) -> Dict[str, str]:
        return {"phase": self._trainer.phase}

    def load_state_dict(self, state: Dict[str, str]) -> None:
        self._trainer.enter_phase(state["phase"], build_data=False)


class _CachedFeatureLoader:
    """Endless random batches ``{"features", "targets"}`` drawn from the stage-1 feature cache."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int):
        self.features, self.targets = features, targets
        self.batch_size = min(batch_size, len(targets))
        self._generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        while True:
            order = torch.randperm(len(self.targets), generator=self._generator)
            for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
                index = order[start:start + self.batch_size]
                yield {"features": self.features[index], "targets": self.targets[index]}


class _Progress:
    """A data loader shown as a tqdm bar on the main process."""

    def __init__(self, loader, desc: str):
        self._loader, self._desc = loader, desc

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __iter__(self):
        yield from tqdm(self._loader, desc=self._desc, total=len(self._loader),
                        disable=not comm.is_main_process(), dynamic_ncols=True, leave=False)


class AGReIDTrainer(DefaultTrainer):
    """Train fastreid models, and AG-ReID's two phases, on fastreid's hooks.

    For a model with phases (``set_phase``/``trainable_parameters``, e.g. ``AGReID``), epochs
    ``0 .. SOLVER.STAGE1.MAX_EPOCH-1`` run phase ``align`` on cached image features and the
    following ``SOLVER.MAX_EPOCH`` epochs run phase ``guide`` on images; :class:`PhaseSwitchHook`
    moves between them. Any other fastreid model (e.g. ``Baseline``) trains as in fastreid.
    """

    def __init__(self, cfg):
        self.phase: Optional[str] = None
        self.phase_ready = False
        self._feature_cache = None
        self._num_train_cameras = 0
        # fastreid's __init__ registers hooks before this class has set up its phases: build
        # them once, at the end of this method.
        self._defer_hooks = True
        super().__init__(cfg)
        self._defer_hooks = False
        self._image_loader = self._trainer.data_loader
        self._image_iters_per_epoch = self.iters_per_epoch
        if self.has_phases:
            self.stage1_epochs = cfg.SOLVER.STAGE1.MAX_EPOCH
            self._cache_iters_per_epoch = max(
                len(self._image_loader.dataset) // cfg.SOLVER.STAGE1.IMS_PER_BATCH, 1)
            self.max_epoch = self.stage1_epochs + cfg.SOLVER.MAX_EPOCH
            self.max_iter = self.iterations_before(self.max_epoch)
            self.checkpointer = AtomicCheckpointer(
                self.model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(),
                phase=_PhaseState(self), optimizer=self.optimizer)
            self.enter_phase(PHASES[0] if self.stage1_epochs > 0 else PHASES[1], build_data=False)
        else:
            self.checkpointer = AtomicCheckpointer(
                self.model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(),
                optimizer=self.optimizer, **self.scheduler)
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ phases
    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The model without its DistributedDataParallel wrapper."""
        model = self.model
        return model.module if isinstance(model, DistributedDataParallel) else model

    @property
    def has_phases(self) -> bool:
        """Whether the model trains in AG-ReID's two phases."""
        return hasattr(self.unwrapped_model, "set_phase")

    def iterations_before(self, epoch: int) -> int:
        """Global iteration number at the start of ``epoch`` (phases have different lengths)."""
        if not self.has_phases:
            return epoch * self._image_iters_per_epoch
        stage1 = min(epoch, self.stage1_epochs)
        return (stage1 * self._cache_iters_per_epoch
                + max(epoch - self.stage1_epochs, 0) * self._image_iters_per_epoch)

    def enter_phase(self, phase: str, build_data: bool = True) -> None:
        """Make ``phase`` current: trainable parameters, optimiser and (optionally) its data.

        Args:
            phase: ``"align"`` or ``"guide"``.
            build_data: also build the phase's data (feature cache or text-feature table);
                False when only the optimiser must exist, e.g. while loading a checkpoint.
        """
        if phase not in PHASES:
            raise ValueError(f"Unknown phase {phase!r}; expected one of {PHASES}")
        model = self.unwrapped_model
        if phase != self.phase:
            logger.info("Entering phase '%s'", phase)
            model.set_phase(phase)
            optimizer = self.build_phase_optimizer(self.cfg, model, phase)
            self._trainer.optimizer = optimizer
            self.checkpointer.checkpointables["optimizer"] = optimizer
            self.phase, self.phase_ready = phase, False
        if build_data and not self.phase_ready:
            if phase == "align":
                features, targets = self.feature_cache()
                loader = _CachedFeatureLoader(
                    features, targets,
                    self.cfg.SOLVER.STAGE1.IMS_PER_BATCH // comm.get_world_size(),
                    seed=comm.get_rank())
                self.iters_per_epoch = self._cache_iters_per_epoch
            else:
                model.build_text_features()
                self._feature_cache = None
                loader = self._image_loader
                self.iters_per_epoch = self._image_iters_per_epoch
            self._trainer.data_loader = loader
            self._trainer._data_loader_iter = iter(loader)
            self._forget_losses_of_other_phases()
            self.phase_ready = True

    def _forget_losses_of_other_phases(self) -> None:
        """Drop logged losses of the previous phase, so the log shows only the current ones."""
        storage = getattr(self, "storage", None)
        if storage is None:
            return
        for name in [n for n in storage.histories() if n.startswith("loss_") or n == "total_loss"]:
            del storage.histories()[name]
            storage.latest().pop(name, None)

    @torch.no_grad()
    def feature_cache(self):
        """Image features ``f_proj`` of every training image, computed once (no augmentation).

        Each process encodes its shard (``InferenceSampler``); the shards are gathered so
        every process holds the whole cache. Returns ``(features (N, D), targets (N,))`` on CPU.
        """
        if self._feature_cache is not None:
            return self._feature_cache
        train_set = self._image_loader.dataset
        cache_set = CommDataset(train_set.img_items, build_transforms(self.cfg, is_train=False),
                                relabel=True)
        cache_set.pid_dict, cache_set.cam_dict = train_set.pid_dict, train_set.cam_dict
        loader = build_reid_test_loader(cache_set, self.cfg.SOLVER.STAGE1.CACHE_BATCH, 0,
                                        num_workers=self.cfg.DATALOADER.NUM_WORKERS)[0]
        model = self.unwrapped_model
        was_training = model.training
        model.eval()
        chunks, targets = [], []
        for batch in _Progress(loader, "stage-1 feature cache"):
            chunks.append(model.encode_image(batch).float().cpu())
            targets.append(batch["targets"].cpu())
        model.train(was_training)
        features, targets = torch.cat(chunks), torch.cat(targets)
        if comm.get_world_size() > 1:
            shards = comm.all_gather((features, targets))
            features = torch.cat([s[0] for s in shards])
            targets = torch.cat([s[1] for s in shards])
        logger.info("Stage-1 feature cache: %d images x %d dims", *features.shape)
        self._feature_cache = (features, targets)
        return self._feature_cache

    # ---------------------------------------------------------------- builders
    @classmethod
    def build_trained_model(cls, cfg) -> torch.nn.Module:
        """The model of ``cfg`` with the weights of ``MODEL.WEIGHTS``, in eval mode.

        No pretrained backbone weights are loaded first (``cfg`` is changed accordingly).
        """
        if not cfg.MODEL.WEIGHTS:
            raise ValueError("Give the trained weights: MODEL.WEIGHTS path/to/model_final.pth")
        if not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise FileNotFoundError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r}: no such file")
        frozen = cfg.is_frozen()
        cfg.defrost()
        skip_pretrained_weights(cfg)
        if frozen:
            cfg.freeze()
        model = cls.build_model(cfg)
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)
        return model.eval()

    @classmethod
    def build_phase_optimizer(cls, cfg, model, phase: str) -> torch.optim.Optimizer:
        """An optimiser over exactly the parameters ``model`` trains in ``phase``.

        Stage 1 uses ``SOLVER.STAGE1.*``; stage 2 uses ``SOLVER.*`` with ``BIAS_LR_FACTOR``
        and ``WEIGHT_DECAY_BIAS`` for biases. Each group records its full rate as
        ``initial_lr`` for :class:`PhaseLRScheduler`.
        """
        solver = cfg.SOLVER.STAGE1 if phase == "align" else cfg.SOLVER
        groups = []
        for name, param in model.trainable_parameters(phase):
            lr, weight_decay = solver.BASE_LR, solver.WEIGHT_DECAY
            if phase == "guide" and name.endswith("bias"):
                lr *= cfg.SOLVER.BIAS_LR_FACTOR
                weight_decay = cfg.SOLVER.WEIGHT_DECAY_BIAS
            groups.append({"params": [param], "lr": lr, "initial_lr": lr,
                           "weight_decay": weight_decay, "name": name})
        if not groups:
            raise ValueError(f"The model has no trainable parameters in phase {phase!r}")
        optimizer_cls = getattr(torch.optim, solver.OPT)
        kwargs = {"momentum": cfg.SOLVER.MOMENTUM} if solver.OPT == "SGD" else {}
        return optimizer_cls(groups, lr=solver.BASE_LR, **kwargs)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """fastreid's optimiser for models without phases; the stage-2 one otherwise."""
        if hasattr(model, "set_phase"):
            # DDP wraps the model after this: everything either phase trains must require grad
            # now, or DDP leaves it out of gradient reduction for good.
            for phase in PHASES:
                for _, param in model.trainable_parameters(phase):
                    param.requires_grad_(True)
            return cls.build_phase_optimizer(cfg, model, "guide"), None
        return super().build_optimizer(cfg, model)

    def build_lr_scheduler(self, cfg, optimizer, iters_per_epoch):
        """fastreid's schedulers; a model with phases uses :class:`PhaseLRScheduler` instead."""
        if self.has_phases:
            return {}
        warmup_epochs = max(math.ceil(cfg.SOLVER.WARMUP_ITERS / iters_per_epoch), cfg.SOLVER.DELAY_EPOCHS)
        if cfg.SOLVER.SCHED == "CosineAnnealingLR" and cfg.SOLVER.MAX_EPOCH <= warmup_epochs:
            # fastreid would build a cosine schedule of length 0 and divide by zero at step 1.
            raise ValueError(
                f"SOLVER.MAX_EPOCH ({cfg.SOLVER.MAX_EPOCH}) must exceed the warm-up/delay epochs "
                f"({warmup_epochs}: SOLVER.WARMUP_ITERS {cfg.SOLVER.WARMUP_ITERS} at {iters_per_epoch} "
                f"iterations an epoch, SOLVER.DELAY_EPOCHS {cfg.SOLVER.DELAY_EPOCHS}) for CosineAnnealingLR")
        return super().build_lr_scheduler(cfg, optimizer, iters_per_epoch)

    def build_hooks(self):
        """fastreid's hooks; with phases, the LR hook is phase-aware and the switch comes first."""
        if self._defer_hooks:
            return []
        ret = super().build_hooks()
        if self.has_phases:
            ret = [h for h in ret if not isinstance(h, hooks.LRScheduler)]
            ret.insert(0, PhaseSwitchHook(self.stage1_epochs))
            ret.insert(1, PhaseLRScheduler(self.cfg, self.stage1_epochs))
        return ret

    def build_train_loader(self, cfg):
        """fastreid's training loader over checked images, cameras numbered in numeric order.

        An instance method (fastreid's is a classmethod): it records the number of training
        cameras for :meth:`auto_scale_hyperparams`.
        """
        items = []
        for name in cfg.DATASETS.NAMES:
            data = DATASET_REGISTRY.get(name)(root=dataset_root(cfg),
                                              combineall=cfg.DATASETS.COMBINEALL)
            if comm.is_main_process():
                data.show_train()
            if not data.train:
                raise ValueError(f"Dataset {name} has no training images (DATASETS.NAMES); "
                                 f"it may be a test-only dataset.")
            items.extend(data.train)
        items = verify_images(items, cfg.DATASETS.BAD_IMAGES, f"train set {cfg.DATASETS.NAMES}")
        train_set = CommDataset(items, build_transforms(cfg, is_train=True), relabel=True)
        train_set.cams = sorted(train_set.cams, key=natural_key)
        train_set.cam_dict = {cam: i for i, cam in enumerate(train_set.cams)}
        self._num_train_cameras = train_set.num_cameras
        return build_reid_train_loader(cfg, train_set=train_set)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """fastreid's test loader over checked images; returns ``(loader, num_query)``."""
        data = DATASET_REGISTRY.get(dataset_name)(root=dataset_root(cfg))
        if comm.is_main_process():
            data.show_test()
        if not data.query or not data.gallery:
            raise ValueError(f"Dataset {dataset_name} has an empty query or gallery set")
        query = verify_images(data.query, cfg.DATASETS.BAD_IMAGES, f"query set of {dataset_name}")
        gallery = verify_images(data.gallery, cfg.DATASETS.BAD_IMAGES,
                                f"gallery set of {dataset_name}")
        test_set = CommDataset(query + gallery, build_transforms(cfg, is_train=False), relabel=False)
        loader, num_query = build_reid_test_loader(
            test_set, cfg.TEST.IMS_PER_BATCH, len(query), num_workers=cfg.DATALOADER.NUM_WORKERS)
        return _Progress(loader, f"features {dataset_name}"), num_query

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        """The project's evaluator (exact, fast ranking and sparse re-ranking)."""
        from ..evaluation import ReidEvaluator

        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        return data_loader, ReidEvaluator(cfg, num_query, output_dir)

    def auto_scale_hyperparams(self, cfg, num_classes):
        """fastreid's, plus ``MODEL.BACKBONE.NUM_CAMERAS`` from the training set when 0."""
        if cfg.MODEL.BACKBONE.NUM_CAMERAS == 0:
            cfg = cfg.clone()
            frozen = cfg.is_frozen()
            cfg.defrost()
            cfg.MODEL.BACKBONE.NUM_CAMERAS = self._num_train_cameras
            logger.info("Auto-scaling the num_cameras=%d", self._num_train_cameras)
            if frozen:
                cfg.freeze()
        return DefaultTrainer.auto_scale_hyperparams(cfg, num_classes)

    # -------------------------------------------------------------------- loop
    def _stop_prefetching(self) -> None:
        """Stop the prefetch thread of fastreid's endless training loader.

        Left running, it is killed mid-operation at interpreter exit and the process aborts
        ("terminate called without an active exception").
        """
        loader = self._image_loader
        if getattr(loader, "iter", None) is not None and hasattr(loader, "shutdown"):
            loader.shutdown()

    def train(self):
        """Run training; like fastreid's loop, but the epoch length may change between phases."""
        self.iter = self.start_iter = self.iterations_before(self.start_epoch)
        logger.info("Starting training from epoch %d", self.start_epoch)
        with EventStorage(self.start_iter) as self.storage:
            try:
                self.before_train()
                for self.epoch in range(self.start_epoch, self.max_epoch):
                    self.before_epoch()
                    for _ in range(self.iters_per_epoch):
                        self.before_step()
                        self.run_step()
                        self.after_step()
                        self.iter += 1
                    self.after_epoch()
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()
                self._stop_prefetching()
        if comm.is_main_process():
            return getattr(self, "_last_eval_results", None)
        return None
