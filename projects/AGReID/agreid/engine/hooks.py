"""Hooks of AG-ReID's two-phase training on fastreid's trainer."""
from __future__ import annotations

import logging
import math

from typing import Any, Callable, Optional

from fastreid.engine import hooks
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from fastreid.utils.events import get_event_storage

from ..phases import ALIGN, GUIDE, PhaseSchedule

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
        if (self._schedule.phase_at(epoch) == ALIGN and self._schedule.is_last_epoch_of_phase(epoch)
                and comm.is_main_process()):
            self.trainer.checkpointer.save("model_stage1", epoch=epoch)


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
        if phase == ALIGN:
            s1 = self._cfg.SOLVER.STAGE1
            base, start, warm = s1.BASE_LR, s1.WARMUP_LR, s1.WARMUP_EPOCHS
            if epoch < warm:
                return (start + (base - start) * epoch / warm) / base
            span = max(s1.MAX_EPOCH - warm, 1)
            cosine = 0.5 * (1 + math.cos(math.pi * (epoch - warm) / span))
            return (s1.ETA_MIN_LR + (base - s1.ETA_MIN_LR) * cosine) / base
        solver = self._cfg.SOLVER
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


def _period_ends(schedule: PhaseSchedule, phase: str, period: int, epoch: int) -> bool:
    """Whether global epoch ``epoch`` is in ``phase`` and ends a multiple of ``period`` of its epochs."""
    return (period > 0 and schedule.phase_at(epoch) == phase
            and (schedule.local_epoch(epoch) + 1) % period == 0)


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
        if _period_ends(self._schedule, GUIDE, self._period, self.trainer.epoch):
            self._do_eval()

    def after_train(self):
        epoch = getattr(self.trainer, "epoch", -1)
        # Only after a complete run, and not twice when its last epoch was already evaluated.
        if epoch + 1 >= self.trainer.max_epoch and not _period_ends(self._schedule, GUIDE, self._period, epoch):
            self._do_eval()
        del self._func


class PhaseCheckpointHook(HookBase):
    """Periodic checkpoints counted in the epochs of each phase (replaces fastreid's).

    - stage 1: ``model_stage1_NNNN.pth`` every ``SOLVER.STAGE1.CHECKPOINT_PERIOD`` stage-1
      epochs (``NNNN`` = stage-1 epoch, 0-based), except at the last one, which
      :class:`PhaseSwitchHook` saves as ``model_stage1.pth``;
    - stage 2: ``model_NNNN.pth`` every ``SOLVER.CHECKPOINT_PERIOD`` stage-2 epochs
      (``NNNN`` = stage-2 epoch, 0-based) and ``model_best.pth`` when the metric improved;
    - the end of the run: ``model_final.pth`` (and ``model_best.pth`` when it is the best).

    Every checkpoint stores the *global* ``epoch``, from which ``--resume`` continues.

    Args:
        checkpointer: the trainer's checkpointer.
        schedule: the run's phase schedule.
        stage1_period: ``SOLVER.STAGE1.CHECKPOINT_PERIOD`` (0 or less = none during stage 1).
        stage2_period: ``SOLVER.CHECKPOINT_PERIOD`` (0 or less = none during stage 2).
    """

    def __init__(self, checkpointer, schedule: PhaseSchedule, stage1_period: int, stage2_period: int):
        self.checkpointer = checkpointer
        self._schedule = schedule
        self._periods = {ALIGN: int(stage1_period), GUIDE: int(stage2_period)}
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
        phase, local = self._schedule.phase_at(epoch), self._schedule.local_epoch(epoch)
        if not _period_ends(self._schedule, phase, self._periods[phase], epoch):
            return
        if phase == ALIGN:
            if not self._schedule.is_last_epoch_of_phase(epoch):
                self.checkpointer.save(f"model_stage1_{local:04d}", **state)
        else:
            self._save_best(state)  # before the periodic one, so last_checkpoint names the latter
            self.checkpointer.save(f"model_{local:04d}", **state)
