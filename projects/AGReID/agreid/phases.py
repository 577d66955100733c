"""AG-ReID's two training phases: their names, the epoch schedule, and what a model with phases offers.

One vocabulary for the model (:class:`~agreid.modeling.AGReID`) and the engine
(:class:`~agreid.engine.AGReIDTrainer` and its hooks):

- ``align`` (stage 1): the prompts and the attribute encoder learn on cached image features;
- ``guide`` (stage 2): the image encoder learns on images.

A run has ``stage1_epochs`` epochs of ``align`` followed by ``stage2_epochs`` epochs of
``guide``; epochs are numbered globally (``0 .. stage1_epochs + stage2_epochs - 1``), as in
fastreid's loop and in checkpoints, and :class:`PhaseSchedule` translates them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Protocol, Tuple, runtime_checkable

from torch import Tensor, nn

ALIGN, GUIDE = "align", "guide"
PHASES: Tuple[str, str] = (ALIGN, GUIDE)


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


@dataclass(frozen=True)
class PhaseSchedule:
    """Where each (global) epoch of a two-phase run falls.

    Args:
        stage1_epochs: epochs of phase ``align`` (``SOLVER.STAGE1.MAX_EPOCH``; 0 = none).
        stage2_epochs: epochs of phase ``guide`` (``SOLVER.MAX_EPOCH``).
        align_iters_per_epoch: iterations of one stage-1 epoch (batches of cached features).
        guide_iters_per_epoch: iterations of one stage-2 epoch (batches of images).
    """

    stage1_epochs: int
    stage2_epochs: int
    align_iters_per_epoch: int = 1
    guide_iters_per_epoch: int = 1

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
