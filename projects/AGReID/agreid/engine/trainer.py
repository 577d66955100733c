"""fastreid's ``DefaultTrainer`` with AG-ReID's data checks, evaluator and two training phases."""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Optional, Tuple

import torch
from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data.common import CommDataset
from fastreid.engine import DefaultTrainer, hooks
from fastreid.utils import comm
from fastreid.utils.events import EventStorage
from torch.nn.parallel import DistributedDataParallel

from ..compat import sync_buffers
from ..data import build_dataset, verify_images
from ..data.transforms import build_agreid_transforms
from ..modeling.clip_loader import skip_pretrained_weights
from ..phases import (ALIGN, FEATURES, GUIDE, PHASES, PhasedModel, PhaseSchedule, PhaseState, check_phase,
                      phase_records, solver_node)
from .feature_cache import CachedFeatureLoader, compute_feature_cache
from .cameras import map_test_cameras, record_train_cameras
from .checkpoint import AtomicCheckpointer, NonFiniteWeightsError, resolve_eval_config
from .preflight import check_identity_batches
from .hooks import NonFiniteGuard, PhaseCheckpointHook, PhaseEvalHook, PhaseLRScheduler, PhaseSwitchHook
from .progress import Progress, end_loader, stop_prefetching, with_phase_printer
from .run_guard import epoch_seed, seed_generators

logger = logging.getLogger(__name__)


def natural_key(label) -> tuple:
    """Sort ``msmt17_2`` before ``msmt17_10``, so relabelled cameras keep their numeric order."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(label)))


class AGReIDTrainer(DefaultTrainer):
    """Train fastreid models, and AG-ReID's two phases, on fastreid's hooks.

    For a model with phases (a :class:`~agreid.phases.PhasedModel`, e.g. ``AGReID``), epochs
    ``0 .. SOLVER.STAGE1.MAX_EPOCH-1`` run phase ``align`` on cached image features and the
    following ``SOLVER.MAX_EPOCH`` epochs run phase ``guide`` on images (:attr:`schedule`);
    :class:`PhaseSwitchHook` moves between them. Any other fastreid model (e.g. ``Baseline``)
    trains as in fastreid.
    """

    def __init__(self, cfg):
        self.phase: Optional[str] = None
        self.phase_ready = False
        self.schedule: Optional[PhaseSchedule] = None
        self._feature_cache = None
        # fastreid's __init__ builds the training loader and, right after, sizes the model from
        # it; the camera count must reach that step too, so the set is built here first and
        # handed to build_train_loader once (a later call, e.g. PreciseBN's, builds its own).
        self._pending_train_set, num_cameras = self.build_train_set(cfg)
        cfg = self.with_train_cameras(cfg, num_cameras)
        cfg = record_train_cameras(cfg, self._pending_train_set.cams)  # SIE rows, for test time
        # fastreid's __init__ registers hooks before this class has set up its phases: build
        # them once, at the end of this method.
        self._defer_hooks = True
        super().__init__(cfg)
        self._defer_hooks = False
        self._image_loader = self._trainer.data_loader
        if self.has_phases:
            # Stage 1 steps over the cached features of the same images, in batches of its own.
            cached_batches = len(self._image_loader.dataset) // phase_records(cfg)[ALIGN].batch_size
            self.schedule = PhaseSchedule.from_config(
                cfg, align_iters_per_epoch=max(cached_batches, 1), guide_iters_per_epoch=self.iters_per_epoch)
            self.max_epoch = self.schedule.max_epoch
            self.max_iter = self.schedule.iterations_before(self.max_epoch)
            self.checkpointer = AtomicCheckpointer(
                self.model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(), config=self.cfg,
                phase=PhaseState(self), optimizer=self.optimizer)
            self.enter_phase(self.schedule.first_phase, build_data=False)
        else:
            self.checkpointer = AtomicCheckpointer(
                self.model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(), config=self.cfg,
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
        return isinstance(self.unwrapped_model, PhasedModel)

    def iterations_before(self, epoch: int) -> int:
        """Global iteration number at the start of ``epoch`` (phases have different lengths)."""
        if self.schedule is None:
            return epoch * self.iters_per_epoch
        return self.schedule.iterations_before(epoch)

    def enter_phase(self, phase: str, build_data: bool = True) -> None:
        """Make ``phase`` current: trainable parameters, optimiser and (optionally) its data.

        Args:
            phase: ``"align"`` or ``"guide"``.
            build_data: also build the phase's data (feature cache or text-feature table);
                False when only the optimiser must exist, e.g. while loading a checkpoint.
        """
        record = self.schedule.record(phase)
        model = self.unwrapped_model
        if phase != self.phase:
            logger.info("Entering phase '%s' (%s)", phase, record.label)
            model.set_phase(phase)
            self._set_fastreid_state(optimizer=self.build_phase_optimizer(self.cfg, model, phase))
            self.phase, self.phase_ready = phase, False
        if build_data and not self.phase_ready:
            if record.data == FEATURES:
                features, targets = self.feature_cache()
                loader = CachedFeatureLoader(features, targets, record.batch_size // comm.get_world_size(),
                                             seed=int(self.cfg.SEED) + comm.get_rank())
            else:
                model.build_text_features()
                self._feature_cache = None
                loader = self._image_loader
            self.iters_per_epoch = self.schedule.iters_per_epoch(phase)
            self._set_fastreid_state(loader=loader, forget_losses=True)
            self.phase_ready = True

    def _set_fastreid_state(self, optimizer=None, loader=None, sampler_seed: Optional[int] = None,
                            restart_loader: bool = False, forget_losses: bool = False) -> None:
        """The one place that writes into fastreid's trainer state that fastreid has no API for.

        fastreid's ``DefaultTrainer`` keeps one optimiser and one endless data loader for the
        whole run; AG-ReID's phases swap both, so this writes:

        - ``optimizer``: ``self._trainer.optimizer`` (the inner ``SimpleTrainer``/``AMPTrainer``
          steps it) and the checkpointer's ``"optimizer"`` checkpointable;
        - ``loader``: ``self._trainer.data_loader`` and a fresh ``_data_loader_iter`` of it
          (the previous iterator's prefetch thread is stopped first);
        - ``sampler_seed``: the ``_seed`` of fastreid's identity sampler of the current loader
          (the same stream on every rank, sharded), then ``restart_loader`` makes a new iterator;
        - ``forget_losses``: drops the previous phase's ``loss_*`` and ``total_loss`` histories
          from the event storage, so the log shows only the current phase's losses.
        """
        if optimizer is not None:
            self._trainer.optimizer = optimizer
            self.checkpointer.checkpointables["optimizer"] = optimizer
        if loader is not None:
            self._trainer.data_loader = loader
            self._trainer._data_loader_iter = self._restart(loader)
        if sampler_seed is not None:
            sampler = getattr(getattr(self._trainer.data_loader, "batch_sampler", None), "sampler", None)
            if hasattr(sampler, "_seed"):
                sampler._seed = sampler_seed
        if restart_loader:
            self._trainer._data_loader_iter = iter(self._trainer.data_loader)
        if forget_losses:
            self._forget_losses_of_other_phases()

    def _forget_losses_of_other_phases(self) -> None:
        """Drop logged losses of the previous phase, so the log shows only the current ones."""
        storage = getattr(self, "storage", None)
        if storage is None:
            return
        for name in [n for n in storage.histories() if n.startswith("loss_") or n == "total_loss"]:
            del storage.histories()[name]
            storage.latest().pop(name, None)

    def feature_cache(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The stage-1 feature cache ``(features (N, D), targets (N,))``, computed on first use.

        See :func:`~agreid.engine.feature_cache.compute_feature_cache`.
        """
        if self._feature_cache is None:
            self._feature_cache = compute_feature_cache(
                self.cfg, self.unwrapped_model, self._image_loader.dataset)
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
        # Identity/camera counts from the checkpoint; disagreeing settings stop here.
        checkpoint = resolve_eval_config(cfg, cfg.MODEL.WEIGHTS)
        recorded = checkpoint.get("quick_gelu")
        skip_pretrained_weights(cfg, quick_gelu=recorded if isinstance(recorded, bool) else None)
        if frozen:
            cfg.freeze()
        model = cls.build_model(cfg)
        AtomicCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        return model.eval()

    @classmethod
    def build_phase_optimizer(cls, cfg, model, phase: str) -> torch.optim.Optimizer:
        """An optimiser over exactly the parameters ``model`` trains in ``phase``.

        Stage 1 uses ``SOLVER.STAGE1.*``; stage 2 uses ``SOLVER.*`` with ``BIAS_LR_FACTOR``
        and ``WEIGHT_DECAY_BIAS`` for biases. Each group records its full rate as
        ``initial_lr`` for :class:`PhaseLRScheduler`.
        """
        solver = solver_node(cfg, phase)
        bias_factors = phase_records(cfg)[phase].bias_factors
        groups = []
        for name, param in model.trainable_parameters(phase):
            lr, weight_decay = solver.BASE_LR, solver.WEIGHT_DECAY
            if bias_factors and name.endswith("bias"):
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
        if isinstance(model, PhasedModel):
            # DDP wraps the model after this: everything either phase trains must require grad
            # now, or DDP leaves it out of gradient reduction for good.
            for phase in PHASES:
                for _, param in model.trainable_parameters(phase):
                    param.requires_grad_(True)
            return cls.build_phase_optimizer(cfg, model, GUIDE), None
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
        """fastreid's hooks; with phases, the switch comes first and the LR, evaluation and
        checkpoint hooks count epochs within each phase."""
        if self._defer_hooks:
            return []
        ret = [NonFiniteGuard()] + super().build_hooks()
        if not self.has_phases:
            return ret
        cfg = self.cfg

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        # Periods count the epochs of the phase they belong to (PhaseEvalHook, PhaseCheckpointHook).
        phased = []
        for hook in ret:
            if isinstance(hook, hooks.LRScheduler):
                continue
            if isinstance(hook, hooks.EvalHook):
                hook = PhaseEvalHook(self.schedule, cfg.TEST.EVAL_PERIOD, test_and_save_results)
            elif isinstance(hook, hooks.PeriodicCheckpointer):
                hook = PhaseCheckpointHook(self.checkpointer, self.schedule)
            phased.append(hook)
        return [PhaseSwitchHook(self.schedule), PhaseLRScheduler(cfg, self.schedule), *phased]

    def build_writers(self):
        """fastreid's writers; with phases, the log line's ETA counts each phase at its own pace."""
        return with_phase_printer(super().build_writers(), self.max_iter, self.schedule)

    @classmethod
    def build_train_set(cls, cfg) -> Tuple[CommDataset, int]:
        """The training set of ``DATASETS.NAMES`` over checked images, and its number of cameras.

        Cameras are numbered in their natural order (``cam2`` before ``cam10``), so the SIE
        rows keep the datasets' numeric order.
        """
        items = []
        for name in cfg.DATASETS.NAMES:
            # cfg: the datasets of your own (ReIDFolder, ReIDList) read their keys; others ignore it.
            data = build_dataset(cfg, name, combineall=cfg.DATASETS.COMBINEALL)
            if comm.is_main_process():
                data.show_train()
            if not data.train:
                raise ValueError(f"Dataset {name} has no training images (DATASETS.NAMES); "
                                 f"it may be a test-only dataset.")
            items.extend(data.train)
        items = verify_images(items, cfg.DATASETS.BAD_IMAGES, f"train set {cfg.DATASETS.NAMES}")
        # Before a sampler exists: one that cannot fill a batch loops forever.
        check_identity_batches(cfg, len({pid for _, pid, _ in items}), len(items), comm.get_world_size())
        train_set = CommDataset(items, build_agreid_transforms(cfg, is_train=True), relabel=True)
        train_set.cams = sorted(train_set.cams, key=natural_key)
        train_set.cam_dict = {cam: i for i, cam in enumerate(train_set.cams)}
        return train_set, train_set.num_cameras

    def build_train_loader(self, cfg):
        """fastreid's training loader over :meth:`build_train_set`."""
        train_set, self._pending_train_set = self._pending_train_set, None
        if train_set is None:
            train_set, _ = self.build_train_set(cfg)
        return build_reid_train_loader(cfg, train_set=train_set)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """fastreid's test loader over checked images; returns ``(loader, num_query)``."""
        data = build_dataset(cfg, dataset_name)
        if comm.is_main_process():
            data.show_test()
        if not data.query or not data.gallery:
            raise ValueError(f"Dataset {dataset_name} has an empty query or gallery set")
        query = verify_images(data.query, cfg.DATASETS.BAD_IMAGES, f"query set of {dataset_name}")
        gallery = verify_images(data.gallery, cfg.DATASETS.BAD_IMAGES,
                                f"gallery set of {dataset_name}")
        # Test cameras on the training cameras' SIE rows (an unseen one: TEST.UNSEEN_CAMERA).
        items = map_test_cameras(cfg, dataset_name, getattr(data, "dataset_name", dataset_name), query + gallery)
        test_set = CommDataset(items, build_agreid_transforms(cfg, is_train=False), relabel=False)
        loader, num_query = build_reid_test_loader(
            test_set, cfg.TEST.IMS_PER_BATCH, len(query), num_workers=cfg.DATALOADER.NUM_WORKERS)
        return Progress(loader, f"features {dataset_name}"), num_query

    @classmethod
    def test(cls, cfg, model):
        """fastreid's evaluation, every process with rank 0's buffers (each trained its own BN
        statistics on its own batches, and each evaluates a shard of the test set). However it
        ends, the test loaders' worker processes end with it (:class:`Progress`)."""
        sync_buffers(model)
        return super().test(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        """The project's evaluator (exact, fast ranking and sparse re-ranking)."""
        from ..evaluation import ReidEvaluator

        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        return data_loader, ReidEvaluator(cfg, num_query, output_dir)

    @staticmethod
    def with_train_cameras(cfg, num_cameras: int):
        """``cfg`` with ``MODEL.BACKBONE.NUM_CAMERAS`` set to ``num_cameras`` when it is 0.

        fastreid's ``auto_scale_hyperparams`` then sets ``MODEL.HEADS.NUM_CLASSES`` and writes
        both to ``OUTPUT_DIR/config.yaml``.
        """
        if cfg.MODEL.BACKBONE.NUM_CAMERAS != 0:
            return cfg
        cfg = cfg.clone()
        frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.MODEL.BACKBONE.NUM_CAMERAS = num_cameras
        logger.info("Auto-scaling the num_cameras=%d", num_cameras)
        if frozen:
            cfg.freeze()
        return cfg

    # -------------------------------------------------------------------- loop
    def _stop_prefetching(self, loader=None) -> None:
        """Stop the prefetch thread of fastreid's endless training loader (default: the image loader).

        Left running, it is killed mid-operation at interpreter exit and the process aborts
        ("terminate called without an active exception").
        """
        stop_prefetching(self._image_loader if loader is None else loader)

    def _stop_loading(self) -> None:
        """At the end of training, stop the prefetch thread and end the image loader's worker
        processes now: a failed run's traceback holds their iterator, and left to the garbage
        collector they would linger, each joined with a timeout of seconds when it is collected."""
        end_loader(self._image_loader)

    def _start_epoch_data(self) -> None:
        """``DETERMINISTIC``: start this epoch's data and randomness from ``(SEED, epoch)`` alone.

        The global generators, the identity sampler and the stage-1 batches are re-seeded and
        the loader restarted, so an epoch depends only on the weights and optimiser it starts
        from: a run killed anywhere and resumed from its last checkpoint (saved at the end of an
        epoch) ends with the weights of the uninterrupted run.
        """
        if not self.cfg.DETERMINISTIC or int(self.cfg.SEED) < 0:
            return
        seed = epoch_seed(self.cfg.SEED, self.epoch)
        loader = self._trainer.data_loader
        if isinstance(loader, CachedFeatureLoader):
            loader.reseed(seed + comm.get_rank())
        else:
            # Stop the prefetching first: it draws from the generators being re-seeded.
            self._stop_prefetching(loader)
            self._set_fastreid_state(sampler_seed=seed)
        seed_generators(seed + comm.get_rank())
        self._set_fastreid_state(restart_loader=True)

    def _restart(self, loader):
        """A new iterator of ``loader``, after stopping the prefetch thread of the previous one
        (left running, it would go on loading, and drawing random numbers, beside the new one)."""
        self._stop_prefetching(loader)
        return iter(loader)

    def train(self):
        """Run training; like fastreid's loop, but the epoch length may change between phases.

        A NaN/Inf loss ends it with a ``FloatingPointError`` that also says which checkpoint
        ``last_checkpoint`` names now (or that none was saved), to resume from.
        """
        try:
            return self._train()
        except FloatingPointError as error:
            if isinstance(error, NonFiniteWeightsError) or not comm.is_main_process():
                raise
            raise FloatingPointError(f"{error} {self._resume_advice()}") from None

    def _resume_advice(self) -> str:
        last = self.checkpointer.last_tag() if self.cfg.OUTPUT_DIR else ""
        if last and os.path.isfile(os.path.join(self.cfg.OUTPUT_DIR, last)):
            return (f"last_checkpoint names {last}, the last checkpoint whose weights gave a finite loss: "
                    f"lower the learning rate or check the data, then run again with --resume.")
        return ("No checkpoint was saved before it, so there is nothing to resume from: lower the "
                "learning rate or check the data, and start the run again.")

    def _train(self):
        self.iter = self.start_iter = self.iterations_before(self.start_epoch)
        logger.info("Starting training from epoch %d", self.start_epoch)
        with EventStorage(self.start_iter) as self.storage:
            try:
                self.before_train()
                for self.epoch in range(self.start_epoch, self.max_epoch):
                    self.before_epoch()
                    self._start_epoch_data()
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
                self._stop_loading()
        if comm.is_main_process():
            return getattr(self, "_last_eval_results", None)
        return None
