"""AG-ReID's two training phases: their names, the epoch schedule, and what a model with phases offers.

One vocabulary for the model (:class:`~agreid.modeling.AGReID`) and the engine
(:class:`~agreid.engine.AGReIDTrainer` and its hooks):

- ``align`` (stage 1): the prompts and the attribute encoder learn on cached image features;
- ``guide`` (stage 2): the image encoder learns on images.

A run has ``stage1_epochs`` epochs of ``align`` followed by ``stage2_epochs`` epochs of
``guide``; epochs are numbered globally (``0 .. stage1_epochs + stage2_epochs - 1``), as in
fastreid's loop and in checkpoints, and :class:`PhaseSchedule` translates them.

Everything else the engine asks about a phase (which config node holds its solver, its batch
size, whether it trains on cached features or images, its learning-rate shape, its checkpoint
names and period, whether it is evaluated) is in its :class:`Phase` record
(:meth:`PhaseSchedule.from_config`, :meth:`PhaseSchedule.record`). The phase names appear in
this file only; the rest of the package compares with :data:`ALIGN` and :data:`GUIDE` or asks
the record.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Tuple, runtime_checkable

from torch import Tensor, nn

ALIGN, GUIDE = "align", "guide"
PHASES: Tuple[str, str] = (ALIGN, GUIDE)
# What a phase trains on: batches of the stage-1 feature cache, or batches of images.
FEATURES, IMAGES = "features", "images"
# The learning-rate shape of a phase: warm-up then cosine (stage 1), warm-up then steps (stage 2).
COSINE, STEPS = "cosine", "steps"


def check_phase(phase: str) -> str:
    """``phase`` itself when it is one of :data:`PHASES`; a ``ValueError`` otherwise."""
    if phase not in PHASES:
        raise ValueError(f"Unknown phase {phase!r}; phases are {PHASES}.")
    return phase


@runtime_checkable
class PhasedModel(Protocol):
    """A model that trains in AG-ReID's two phases (``AGReID`` is one).

    The trainer runs any model that has these four methods in two phases, and any other
    fastreid model (e.g. ``Baseline``) as fastreid does.
    """

    def set_phase(self, phase: str) -> None:
        """Make exactly the parameters of ``phase`` require grad, and run ``phase``'s forward."""

    def trainable_parameters(self, phase: str) -> List[Tuple[str, nn.Parameter]]:
        """Named parameters trained in ``phase`` (whatever the current phase is)."""

    def encode_image(self, batched_inputs: dict) -> Tensor:
        """Image features (B, D) of un-augmented images, for the stage-1 feature cache."""

    def build_text_features(self) -> Tensor:
        """Compute the per-identity text features that stage 2 needs, once, from the prompts."""


def solver_node(cfg, phase: str):
    """The config node holding ``phase``'s solver: ``SOLVER.STAGE1`` (align) or ``SOLVER`` (guide)."""
    return cfg.SOLVER.STAGE1 if check_phase(phase) == ALIGN else cfg.SOLVER


@dataclass(frozen=True)
class Phase:
    """Everything the engine asks about one phase of a run.

    Args:
        name: :data:`ALIGN` or :data:`GUIDE`.
        label: how logs name it (``"stage 1"``, ``"stage 2"``).
        solver_key: the config node of its solver (``"SOLVER.STAGE1"``, ``"SOLVER"``); the node
            itself: :func:`solver_node`.
        data: :data:`FEATURES` (the stage-1 feature cache) or :data:`IMAGES`.
        batch_size: images (or cached features) per step over all processes.
        epochs: its length.
        lr_shape: :data:`COSINE` (warm-up, then cosine) or :data:`STEPS` (warm-up, then steps).
        bias_factors: whether biases get ``SOLVER.BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS``.
        checkpoint_prefix: periodic checkpoints are ``<prefix>NNNN`` (``NNNN``: epoch of the phase).
        checkpoint_period: epochs of the phase between periodic checkpoints (0 or less: none).
        end_checkpoint: the checkpoint saved when the phase ends (None: the run's
            ``model_final`` is its end).
        evaluated: whether ``TEST.EVAL_PERIOD`` counts its epochs (a phase that does not change
            the image encoder has nothing to evaluate).
    """

    name: str
    label: str
    solver_key: str
    data: str
    batch_size: int
    epochs: int
    lr_shape: str
    bias_factors: bool
    checkpoint_prefix: str
    checkpoint_period: int
    end_checkpoint: Optional[str]
    evaluated: bool


def phase_records(cfg) -> Dict[str, Phase]:
    """The :class:`Phase` record of each phase of ``cfg``, by name."""
    stage1, stage2 = cfg.SOLVER.STAGE1, cfg.SOLVER
    return {
        ALIGN: Phase(ALIGN, "stage 1", "SOLVER.STAGE1", FEATURES, int(stage1.IMS_PER_BATCH), int(stage1.MAX_EPOCH),
                     COSINE, False, "model_stage1_", int(stage1.CHECKPOINT_PERIOD), "model_stage1", False),
        GUIDE: Phase(GUIDE, "stage 2", "SOLVER", IMAGES, int(stage2.IMS_PER_BATCH), int(stage2.MAX_EPOCH),
                     STEPS, True, "model_", int(stage2.CHECKPOINT_PERIOD), None, True),
    }


@dataclass(frozen=True)
class PhaseSchedule:
    """Where each (global) epoch of a two-phase run falls.

    Args:
        stage1_epochs: epochs of phase ``align`` (``SOLVER.STAGE1.MAX_EPOCH``; 0 = none).
        stage2_epochs: epochs of phase ``guide`` (``SOLVER.MAX_EPOCH``).
        align_iters_per_epoch: iterations of one stage-1 epoch (batches of cached features).
        guide_iters_per_epoch: iterations of one stage-2 epoch (batches of images).
        records: the :class:`Phase` record of each phase (:meth:`from_config`; empty for a
            schedule built from the lengths alone, which answers only about epochs).
    """

    stage1_epochs: int
    stage2_epochs: int
    align_iters_per_epoch: int = 1
    guide_iters_per_epoch: int = 1
    records: Tuple[Phase, ...] = ()

    @classmethod
    def from_config(cls, cfg, align_iters_per_epoch: int, guide_iters_per_epoch: int) -> "PhaseSchedule":
        """The schedule of ``cfg`` (``SOLVER.STAGE1.MAX_EPOCH``, ``SOLVER.MAX_EPOCH``) with its records."""
        records = phase_records(cfg)
        return cls(records[ALIGN].epochs, records[GUIDE].epochs, align_iters_per_epoch, guide_iters_per_epoch,
                   tuple(records[p] for p in PHASES))

    def record(self, phase: str) -> Phase:
        """The :class:`Phase` record of ``phase``."""
        check_phase(phase)
        for record in self.records:
            if record.name == phase:
                return record
        raise ValueError(f"This schedule was built without a config: use PhaseSchedule.from_config "
                         f"to ask about phase {phase!r}.")

    def __post_init__(self):
        if self.stage1_epochs < 0 or self.stage2_epochs < 0:
            raise ValueError(f"Phase lengths must be >= 0 epochs, got stage 1 {self.stage1_epochs}, "
                             f"stage 2 {self.stage2_epochs} (SOLVER.STAGE1.MAX_EPOCH, SOLVER.MAX_EPOCH).")

    @property
    def max_epoch(self) -> int:
        """Epochs of the whole run."""
        return self.stage1_epochs + self.stage2_epochs

    @property
    def first_phase(self) -> str:
        """The phase the run starts in (``guide`` when there is no stage 1)."""
        return ALIGN if self.stage1_epochs > 0 else GUIDE

    def phase_at(self, epoch: int) -> str:
        """The phase of global epoch ``epoch`` (0-based)."""
        return ALIGN if epoch < self.stage1_epochs else GUIDE

    def local_epoch(self, epoch: int) -> int:
        """Global epoch ``epoch`` counted from the start of its own phase (0-based)."""
        return epoch if epoch < self.stage1_epochs else epoch - self.stage1_epochs

    def phase_length(self, phase: str) -> int:
        """Epochs of ``phase``."""
        return self.stage1_epochs if check_phase(phase) == ALIGN else self.stage2_epochs

    def is_last_epoch_of_phase(self, epoch: int) -> bool:
        """Whether global epoch ``epoch`` ends its phase."""
        return self.local_epoch(epoch) + 1 == self.phase_length(self.phase_at(epoch))

    def iters_per_epoch(self, phase: str) -> int:
        """Iterations of one epoch of ``phase``."""
        return self.align_iters_per_epoch if check_phase(phase) == ALIGN else self.guide_iters_per_epoch

    def iterations_before(self, epoch: int) -> int:
        """Global iteration number at the start of global epoch ``epoch``."""
        align = min(epoch, self.stage1_epochs)
        guide = max(epoch - self.stage1_epochs, 0)
        return align * self.align_iters_per_epoch + guide * self.guide_iters_per_epoch


class PhaseState:
    """Checkpointable record of the training phase (``{"phase": "align" | "guide"}``).

    Why it must load before the optimiser: the two phases train different parameters with
    different optimisers, and the optimiser state in a checkpoint belongs to the phase it was
    saved in. Loading this record first puts the trainer in that phase, which builds that
    phase's optimiser; the optimiser state that follows in the checkpoint then lands in the
    right optimiser (with the other phase's optimiser its parameter groups would not match).
    fastreid loads checkpointables in the order they were given, so pass ``phase=`` before
    ``optimizer=``.

    Args:
        trainer: anything with a ``phase`` attribute and ``enter_phase(phase, build_data)``.
    """

    def __init__(self, trainer):
        self._trainer = weakref.proxy(trainer)

    def state_dict(self) -> Dict[str, str]:
        """``{"phase": name}``: a plain value, loadable with ``weights_only``."""
        return {"phase": self._trainer.phase}

    def load_state_dict(self, state: Dict[str, str]) -> None:
        """Enter the recorded phase (optimiser only; its data is built when training starts)."""
        self._trainer.enter_phase(check_phase(state["phase"]), build_data=False)
