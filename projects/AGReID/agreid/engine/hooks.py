"""Hooks of AG-ReID's two-phase training on fastreid's trainer."""
from __future__ import annotations

import logging
import math
import sys
from typing import Any, Callable, List, Optional

from fastreid.engine import hooks
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from fastreid.utils.events import get_event_storage

from ..phases import COSINE, PhaseSchedule, solver_node
from .checkpoint import NonFiniteWeightsError

logger = logging.getLogger(__name__)


class PhaseSwitchHook(HookBase):
    """Run phase ``align`` (stage 1) for the first epochs, then phase ``guide`` (stage 2).

    The phase is derived from the trainer's epoch, never stored here, so a resumed run lands
    in the right phase. Entering a phase (``trainer.enter_phase``) sets the model's trainable
    parameters, swaps optimiser and data loader, and fills the stage-1 feature cache or the
    stage-2 text-feature table. At the end of stage 1 a ``model_stage1`` checkpoint is saved,
    from which stage 2 can also be started in a new process.

    Args:
        schedule: the run's phase schedule.
    """

    def __init__(self, schedule: PhaseSchedule):
        self._schedule = schedule

    def before_epoch(self):
        phase = self._schedule.phase_at(self.trainer.epoch)
        if phase != self.trainer.phase or not self.trainer.phase_ready:
            self.trainer.enter_phase(phase)

    def after_epoch(self):
        epoch = self.trainer.epoch
        record = self._schedule.record(self._schedule.phase_at(epoch))
        if record.end_checkpoint and self._schedule.is_last_epoch_of_phase(epoch) and comm.is_main_process():
            self.trainer.checkpointer.save(record.end_checkpoint, epoch=epoch)


class PhaseLRScheduler(HookBase):
    """Set each parameter group's learning rate from the phase-local epoch, every step.

    The rate is a function of (phase, epoch) only: nothing to save, nothing to drift on resume.
    Stage 1: linear warm-up from ``STAGE1.WARMUP_LR`` over ``STAGE1.WARMUP_EPOCHS``, then cosine
    to ``STAGE1.ETA_MIN_LR``. Stage 2: linear warm-up from ``SOLVER.WARMUP_FACTOR`` x over
    ``SOLVER.WARMUP_EPOCHS``, then x``SOLVER.GAMMA`` at each of ``SOLVER.STEPS`` (epochs).
    Each group's ``initial_lr`` is its full rate (base lr times any per-group factor).

    Args:
        cfg: the run's config.
        schedule: the run's phase schedule.
    """

    def __init__(self, cfg, schedule: PhaseSchedule):
        self._cfg = cfg
        self._schedule = schedule

    def factor(self, phase: str, epoch: int) -> float:
        """Multiplier of ``initial_lr`` at phase-local epoch ``epoch`` of ``phase``."""
        solver = solver_node(self._cfg, phase)
        if self._schedule.record(phase).lr_shape == COSINE:
            base, start, warm = solver.BASE_LR, solver.WARMUP_LR, solver.WARMUP_EPOCHS
            if epoch < warm:
                return (start + (base - start) * epoch / warm) / base
            span = max(solver.MAX_EPOCH - warm, 1)
            cosine = 0.5 * (1 + math.cos(math.pi * (epoch - warm) / span))
            return (solver.ETA_MIN_LR + (base - solver.ETA_MIN_LR) * cosine) / base
        warm = solver.WARMUP_EPOCHS
        if epoch < warm:
            alpha = epoch / warm
            return solver.WARMUP_FACTOR * (1 - alpha) + alpha
        return solver.GAMMA ** sum(epoch >= step for step in solver.STEPS)

    def before_step(self):
        trainer = self.trainer
        scale = self.factor(trainer.phase, self._schedule.local_epoch(trainer.epoch))
        for group in trainer.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale
        trainer.storage.put_scalar("lr", trainer.optimizer.param_groups[0]["lr"],
                                   smoothing_hint=False)


def _period_ends(schedule: PhaseSchedule, period: int, epoch: int) -> bool:
    """Whether global epoch ``epoch`` ends a multiple of ``period`` epochs of its own phase."""
    return period > 0 and (schedule.local_epoch(epoch) + 1) % period == 0


def _evaluation_due(schedule: PhaseSchedule, period: int, epoch: int) -> bool:
    """Whether ``TEST.EVAL_PERIOD`` (``period``) falls at the end of ``epoch``: only in a phase
    whose record says it is evaluated."""
    return schedule.record(schedule.phase_at(epoch)).evaluated and _period_ends(schedule, period, epoch)


class PhaseEvalHook(hooks.EvalHook):
    """fastreid's ``EvalHook`` with ``TEST.EVAL_PERIOD`` counted in stage-2 epochs.

    Stage 1 does not change the image encoder, so nothing is evaluated during it: with the
    paper's 120 + 60 epochs and ``EVAL_PERIOD 60`` the evaluation runs once, after the 60th
    stage-2 epoch. The end of training is always evaluated (``EVAL_PERIOD`` 0 = only then).

    Args:
        schedule: the run's phase schedule.
        eval_period: ``TEST.EVAL_PERIOD`` (stage-2 epochs; 0 or less = at the end only).
        eval_function: fastreid's evaluation closure.
    """

    def __init__(self, schedule: PhaseSchedule, eval_period: int, eval_function: Callable[[], Any]):
        super().__init__(eval_period, eval_function)
        self._schedule = schedule

    def after_epoch(self):
        if _evaluation_due(self._schedule, self._period, self.trainer.epoch):
            self._do_eval()

    def after_train(self):
        epoch = getattr(self.trainer, "epoch", -1)
        # Only after a complete run, and not twice when its last epoch was already evaluated.
        if epoch + 1 >= self.trainer.max_epoch and not _evaluation_due(self._schedule, self._period, epoch):
            self._do_eval()
        del self._func


class PhaseCheckpointHook(HookBase):
    """Periodic checkpoints counted in the epochs of each phase (replaces fastreid's).

    Each phase's record (:class:`~agreid.phases.Phase`) gives its prefix and period:

    - stage 1: ``model_stage1_NNNN.pth`` every ``SOLVER.STAGE1.CHECKPOINT_PERIOD`` stage-1
      epochs (``NNNN`` = stage-1 epoch, 0-based), except at the last one, which
      :class:`PhaseSwitchHook` saves as ``model_stage1.pth`` (the phase's end checkpoint);
    - stage 2: ``model_NNNN.pth`` every ``SOLVER.CHECKPOINT_PERIOD`` stage-2 epochs
      (``NNNN`` = stage-2 epoch, 0-based) and ``model_best.pth`` when the metric improved
      (in the evaluated phase);
    - the end of the run: ``model_final.pth`` (and ``model_best.pth`` when it is the best).

    Every checkpoint stores the *global* ``epoch``, from which ``--resume`` continues.

    Args:
        checkpointer: the trainer's checkpointer.
        schedule: the run's phase schedule (:meth:`PhaseSchedule.from_config`).
    """

    def __init__(self, checkpointer, schedule: PhaseSchedule):
        self.checkpointer = checkpointer
        self._schedule = schedule
        self.best_metric = -1.0
        self._metric_name: Optional[str] = None

    def before_train(self):
        tests = self.trainer.cfg.DATASETS.TESTS
        self._metric_name = "metric" if len(tests) == 1 else f"{tests[0]}/metric"

    def _save_best(self, state: dict) -> None:
        if state["metric"] > self.best_metric:
            self.checkpointer.save("model_best", **state)
            self.best_metric = state["metric"]

    def after_epoch(self):
        epoch = self.trainer.epoch
        latest = get_event_storage().latest()
        state = {"epoch": epoch,
                 "metric": latest[self._metric_name][0] if self._metric_name in latest else -1}
        if epoch >= self.trainer.max_epoch - 1:
            self._save_best(state)
            self.checkpointer.save("model_final", **state)
            return
        record = self._schedule.record(self._schedule.phase_at(epoch))
        if not _period_ends(self._schedule, record.checkpoint_period, epoch):
            return
        if record.end_checkpoint and self._schedule.is_last_epoch_of_phase(epoch):
            return  # PhaseSwitchHook saves the phase's end checkpoint
        if record.evaluated:
            self._save_best(state)  # before the periodic one, so last_checkpoint names the latter
        self.checkpointer.save(f"{record.checkpoint_prefix}{self._schedule.local_epoch(epoch):04d}", **state)


class NonFiniteGuard(HookBase):
    """Keep ``last_checkpoint`` at a checkpoint whose weights gave a finite loss.

    fastreid raises ``FloatingPointError`` in the step whose loss is NaN/Inf, before the
    optimiser steps. The weights that step used are those of any checkpoint saved since the
    previous step finished; such a checkpoint (e.g. weights blown up to 1e30, finite but
    useless) would make ``--resume`` fail again at once. On that error those checkpoints are
    renamed ``*.pth.bad`` and ``last_checkpoint`` goes back to the last verified one.
    """

    def __init__(self):
        self._saves_before_step = 0
        self._verified = 0

    def before_train(self):
        self._verified = self._saves_before_step = len(self._saved())

    def _saved(self) -> List[str]:
        return getattr(self.trainer.checkpointer, "saved", [])

    def before_step(self):
        self._saves_before_step = len(self._saved())

    def after_step(self):
        # The step's loss was finite, so every checkpoint saved before it is sound.
        self._verified = self._saves_before_step

    def after_train(self):
        error = sys.exc_info()[1]
        if not isinstance(error, FloatingPointError) or isinstance(error, NonFiniteWeightsError):
            return
        checkpointer = self.trainer.checkpointer
        if not hasattr(checkpointer, "discard_last_save"):
            return
        for _ in range(len(self._saved()) - self._verified):
            checkpointer.discard_last_save("give a NaN/Inf loss at the next step")
