"""Hooks of AG-ReID's two-phase training on fastreid's trainer."""
from __future__ import annotations

import logging
import math

from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm

from ..phases import ALIGN, PhaseSchedule

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
