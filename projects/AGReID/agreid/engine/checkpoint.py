"""Checkpoints of a training run: written atomically, read without executing code, checked
against the model and the config before anything is loaded.

:class:`AtomicCheckpointer` is fastreid's ``Checkpointer`` with four changes:

* saving goes through :func:`agreid.serialization.save_checkpoint_file` (temporary file,
  fsync, rename; a full disk leaves the previous checkpoint and ``last_checkpoint`` alone),
  stores plain values only, embeds the resolved config as YAML text (``"config"``), and
  refuses weights that hold NaN/Inf;
* loading goes through :func:`agreid.serialization.load_checkpoint_file` (``weights_only``), and
  weights holding NaN/Inf or cast to an integer type are refused (``check_weights``);
* a checkpoint that does not fit the model (other CLIP model, stride, input size, template,
  number of identities or cameras) stops with :class:`CheckpointMismatchError` naming every
  mismatched key and shape, unless fine-tuning was asked for (``MODEL.WEIGHTS_FINETUNE``);
  then the re-initialised parameters are listed by name;
* resuming with another stage-1 length than the checkpoint's is refused.

The checkpointable record of the training phase is :class:`agreid.phases.PhaseState`; the hook
that keeps ``last_checkpoint`` at sound weights is :class:`agreid.engine.hooks.NonFiniteGuard`.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fastreid.utils.checkpoint import Checkpointer

from ..modeling.deploy import uses_quick_gelu
from ..phases import GUIDE
from ..serialization import (
    all_finite,
    check_weights,
    load_checkpoint_file,
    plain_values,
    save_checkpoint_file,
    write_text_atomically,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AtomicCheckpointer",
    "CheckpointMismatchError",
    "NonFiniteGuard",
    "NonFiniteWeightsError",
    "PhaseState",
    "checkpoint_config",
    "resolve_eval_config",
]


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model or the config (the message names the keys)."""


class NonFiniteWeightsError(FloatingPointError):
    """The model holds NaN/Inf: nothing is saved from it."""


def checkpoint_config(checkpoint: Dict[str, Any]):
    """The resolved config embedded in a checkpoint (a fastreid ``CfgNode``), or None."""
    text = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if not isinstance(text, str) or not text.strip():
        return None
    from fastreid.config import CfgNode

    return CfgNode.load_cfg(text)


def _describe_mismatch(path: str, shapes: Sequence[Tuple[str, tuple, tuple]], missing: List[str],
                       unexpected: List[str], limit: int = 12) -> str:
    """The lines of an error that name the mismatched keys and shapes."""
    lines = [f"{path} does not fit the model built from the config:"]
    for key, in_checkpoint, in_model in shapes[:limit]:
        lines.append(f"  {key}: shape {tuple(in_checkpoint)} in the checkpoint, {tuple(in_model)} in the model")
    if len(shapes) > limit:
        lines.append(f"  ... and {len(shapes) - limit} more shape mismatches")
    if missing:
        lines.append(f"  missing in the checkpoint ({len(missing)}): {', '.join(missing[:limit])}"
                     + (" ..." if len(missing) > limit else ""))
    if unexpected:
        lines.append(f"  not in the model ({len(unexpected)}): {', '.join(unexpected[:limit])}"
                     + (" ..." if len(unexpected) > limit else ""))
    return "\n".join(lines)


class AtomicCheckpointer(Checkpointer):
    """fastreid's checkpointer, made safe to load and to save (see the module docstring).

    Args:
        model, save_dir, save_to_disk, checkpointables: as fastreid's ``Checkpointer``. Keep the
            ``phase`` checkpointable before ``optimizer``: they load in this order (see
            :class:`PhaseState`).
        config: the resolved config of the run; embedded in every checkpoint, and compared
            with a checkpoint's own on resume.
        finetune: load checkpoints that do not fit, re-initialising (and listing) what does not;
            None = ``MODEL.WEIGHTS_FINETUNE`` of ``config``. Never when resuming.
    """

    def __init__(self, model, save_dir: str = "", *, save_to_disk: bool = True, config=None,
                 finetune: Optional[bool] = None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.config = config
        if finetune is None:
            finetune = bool(config is not None and config.MODEL.get("WEIGHTS_FINETUNE", False))
        self.finetune = bool(finetune)
        self._resuming = False
        self._current_path = ""
        # Files saved by this process, oldest first: lets a non-finite step fall back.
        self.saved: List[str] = []

    # ------------------------------------------------------------------ saving
    def save(self, name: str, **kwargs):
        """Save model, checkpointables, ``kwargs`` and the config to ``<save_dir>/<name>.pth``.

        Raises:
            NonFiniteWeightsError: a model weight holds NaN/Inf (nothing is written).
            OSError: writing failed (a full disk says "no space left on device" and the path);
                the previous checkpoint and ``last_checkpoint`` are unchanged.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        model_state = self.model.state_dict()
        bad = all_finite(model_state)
        if bad is not None:
            raise NonFiniteWeightsError(
                f"Not saving checkpoint '{name}': the model weight '{bad}' holds NaN/Inf. "
                f"last_checkpoint still points at {self.last_tag() or 'nothing'}.")
        # The activation is not in the weights: recorded so that evaluation rebuilds the same
        # model without the file the backbone was initialised from.
        data = {"model": model_state, "quick_gelu": uses_quick_gelu(self.model)}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        if self.config is not None:
            data["config"] = self.config.dump()
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", save_file)
        save_checkpoint_file(plain_values(data), save_file)
        self.tag_last_checkpoint(os.path.basename(save_file))
        self.saved.append(os.path.basename(save_file))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Point ``last_checkpoint`` at a file, atomically."""
        write_text_atomically(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))

    def get_checkpoint_file(self) -> str:
        """The checkpoint ``last_checkpoint`` names, for ``--resume``.

        Raises:
            CheckpointMismatchError: ``last_checkpoint`` is empty.
            FileNotFoundError: it names a file that is not in the folder.
        """
        path = os.path.join(self.save_dir, "last_checkpoint")
        if not os.path.isfile(path):
            return ""
        name = self.last_tag()
        if not name:
            raise CheckpointMismatchError(
                f"{path} is empty: it names no checkpoint to resume from. Write the name of one of the "
                f"folder's checkpoints in it (e.g. model_final.pth), or remove it to start the run over.")
        checkpoint = os.path.join(self.save_dir, name)
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"{path} names {name}, which is not in {self.save_dir}: write the name "
                                    f"of one of the folder's checkpoints in it, or remove it to start over.")
        return checkpoint

    def last_tag(self) -> str:
        """The file name `last_checkpoint` holds, or "" (none, or unreadable)."""
        try:
            with open(os.path.join(self.save_dir, "last_checkpoint")) as f:
                return f.read().strip()
        except OSError:
            return ""

    def discard_last_save(self, reason: str) -> Optional[str]:
        """Forget the newest checkpoint of this run: rename it ``*.pth.bad`` and point
        ``last_checkpoint`` back at the one before (if this run saved one).

        Returns the file ``last_checkpoint`` now names, or None.
        """
        if not self.saved or not self.save_to_disk:
            return self.last_tag() or None
        bad = self.saved.pop()
        bad_path = os.path.join(self.save_dir, bad)
        if os.path.isfile(bad_path):
            os.replace(bad_path, bad_path + ".bad")
        previous = next((f for f in reversed(self.saved) if os.path.isfile(os.path.join(self.save_dir, f))), None)
        last = os.path.join(self.save_dir, "last_checkpoint")
        if previous is not None:
            self.tag_last_checkpoint(previous)
        elif self.last_tag() == bad and os.path.isfile(last):
            os.remove(last)
        logger.error("Checkpoint %s was saved from weights that %s: renamed to %s.bad; "
                     "last_checkpoint now points at %s.", bad, reason, bad, previous or "nothing")
        return previous

    # ----------------------------------------------------------------- loading
    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> object:
        """fastreid's ``load``; resuming (``checkpointables`` None) also checks the stage-1 length."""
        self._resuming = checkpointables is None or bool(checkpointables)
        self._current_path = path  # fastreid does not pass it on to _load_model
        try:
            return super().load(path, checkpointables=checkpointables)
        finally:
            self._resuming = False

    def _load_file(self, f: str):
        """Read without executing code; check the schedule when resuming."""
        checkpoint = load_checkpoint_file(f)
        if not isinstance(checkpoint, dict):
            raise CheckpointMismatchError(f"{f} holds a {type(checkpoint).__name__}, not a checkpoint dict.")
        if "model" not in checkpoint:
            # A bare state dict (e.g. a converted model): fastreid expects {"model": ...}.
            checkpoint = {"model": checkpoint}
        if self._resuming:
            self._check_resume(checkpoint, f)
        return checkpoint

    def _check_resume(self, checkpoint: Dict[str, Any], path: str) -> None:
        """Refuse to resume under another stage-1 length: the phase and the iteration count
        would no longer match the epoch stored in the checkpoint."""
        if self.config is None:
            return
        saved = checkpoint_config(checkpoint)
        ours = self.config.SOLVER.STAGE1.MAX_EPOCH if "STAGE1" in self.config.SOLVER else None
        if saved is not None:
            theirs = saved.get("SOLVER", {}).get("STAGE1", {}).get("MAX_EPOCH")
            if theirs is not None and ours is not None and int(theirs) != int(ours):
                raise CheckpointMismatchError(
                    f"Cannot resume from {path}: it was trained with SOLVER.STAGE1.MAX_EPOCH {theirs}, "
                    f"the config says {ours}. Resume with SOLVER.STAGE1.MAX_EPOCH {theirs}, or start "
                    f"a new run from it with MODEL.WEIGHTS {path} (without --resume).")
            return
        phase = (checkpoint.get("phase") or {}).get("phase")
        epoch = checkpoint.get("epoch")
        if phase == GUIDE and ours is not None and epoch is not None and int(epoch) + 1 < int(ours):
            raise CheckpointMismatchError(
                f"Cannot resume from {path}: it is a stage-2 checkpoint of epoch {epoch}, but "
                f"SOLVER.STAGE1.MAX_EPOCH {ours} would put that epoch back in stage 1.")

    def _load_model(self, checkpoint: Any):
        """Load the weights; stop on NaN/Inf or non-float weights, and on any mismatch unless fine-tuning."""
        state = checkpoint.get("model")
        if isinstance(state, dict):  # fastreid strips "module." before loading: compare as it will
            check_weights({k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()},
                          self._current_path or "the checkpoint", reference=self.model.state_dict())
        incompatible = super()._load_model(checkpoint)
        shapes, unexpected = incompatible.incorrect_shapes, incompatible.unexpected_keys
        # fastreid drops a mis-shaped entry before loading, so it shows as missing too.
        missing = [k for k in incompatible.missing_keys if k not in {key for key, _, _ in shapes}]
        if not (shapes or missing or unexpected):
            return incompatible
        path = self._current_path or "the checkpoint"
        if not self.finetune or self._resuming:
            hint = ("" if self._resuming else
                    "\nTo start training from it anyway, set MODEL.WEIGHTS_FINETUNE True: the "
                    "parameters listed are then re-initialised.")
            raise CheckpointMismatchError(_describe_mismatch(path, shapes, missing, unexpected) + hint)
        reinitialised = sorted({k for k, _, _ in shapes} | set(missing))
        logger.warning("Fine-tuning from %s: %d parameter(s) re-initialised: %s; %d checkpoint "
                       "entr(ies) not used: %s", path, len(reinitialised), ", ".join(reinitialised) or "none",
                       len(unexpected), ", ".join(unexpected) or "none")
        return None  # nothing left for fastreid to log


def resolve_eval_config(cfg, weights_path: str) -> Dict[str, Any]:
    """Fill in what a leaf config leaves to the training set, from the checkpoint; stop on
    disagreements, before any model is built or image read.

    ``MODEL.HEADS.NUM_CLASSES`` and ``MODEL.BACKBONE.NUM_CAMERAS`` (0 = "from the training
    set") are taken from the checkpoint's embedded config, or from its weights' shapes. A
    checkpoint whose input size, stride, CLIP model, camera count or other architecture key
    disagrees with ``cfg`` raises one :class:`CheckpointMismatchError` naming every key.
    ``cfg`` must be defrosted; it is changed in place.

    Returns:
        The checkpoint (already read; pass it on instead of reading the file again).
    """
    checkpoint = load_checkpoint_file(weights_path)
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(f"{weights_path} holds a {type(checkpoint).__name__}, not a checkpoint dict.")
    state = checkpoint.get("model", checkpoint)
    saved = checkpoint_config(checkpoint)
    differences = []
    if saved is not None:
        for key in ARCHITECTURE_KEYS:
            ours, theirs = _lookup(cfg, key), _lookup(saved, key)
            if theirs is None or ours is None:
                continue
            if key in _AUTO_KEYS and int(ours) == 0:
                _assign(cfg, key, theirs)
                continue
            if _normalise(key, ours) != _normalise(key, theirs):
                differences.append(f"  {key}: {_show(theirs)} in the checkpoint, {_show(ours)} in the config")
        for key in _CARRIED_KEYS:
            theirs = _lookup(saved, key)
            if theirs is not None and _lookup(cfg, key) is not None and not _lookup(cfg, key):
                _assign(cfg, key, theirs)
        # Not loaded at test time, they only tell the activation of older checkpoints that do
        # not record it: the training's own values, not the config's.
        for key in _INIT_KEYS:
            theirs = _lookup(saved, key)
            if theirs is not None and _lookup(cfg, key) is not None:
                _assign(cfg, key, theirs)
    else:
        # Checkpoints without an embedded config: the counts are in the weights' shapes.
        # "heads.weight": the classifier of fastreid's own Baseline (its model-zoo checkpoints).
        for key, entry in (("MODEL.HEADS.NUM_CLASSES", "classifier.weight"),
                           ("MODEL.HEADS.NUM_CLASSES", "heads.weight"),
                           ("MODEL.BACKBONE.NUM_CAMERAS", "backbone.camera_embedding")):
            tensor = state.get(entry) if isinstance(state, dict) else None
            if tensor is None or _lookup(cfg, key) is None:
                continue
            ours = int(_lookup(cfg, key))
            if ours == 0:
                _assign(cfg, key, int(tensor.shape[0]))
            elif ours != int(tensor.shape[0]):
                differences.append(f"  {key}: {int(tensor.shape[0])} in the checkpoint, {ours} in the config")
    if differences:
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS {weights_path} was trained with other settings than the config gives:\n"
            + "\n".join(differences)
            + "\nUse the config it was trained with (OUTPUT_DIR/config.yaml of that run) or drop "
              "these overrides.")
    return checkpoint


# Keys that change the architecture or the test-time input; compared by resolve_eval_config.
ARCHITECTURE_KEYS = (
    "MODEL.META_ARCHITECTURE",
    "MODEL.BACKBONE.NAME",
    "MODEL.BACKBONE.CLIP_NAME",
    "MODEL.BACKBONE.STRIDE",
    "MODEL.BACKBONE.SIE_CAMERA",
    "MODEL.BACKBONE.NUM_CAMERAS",
    "MODEL.HEADS.NUM_CLASSES",
    "MODEL.HEADS.NECK_FEAT",
    "MODEL.PROMPT.TEMPLATE",
    "MODEL.ATTR.ENABLED",
    "INPUT.SIZE_TRAIN",  # sizes the position embedding
    "INPUT.SIZE_TEST",
)
# 0 in the config means "from the training set": taken from the checkpoint.
_AUTO_KEYS = ("MODEL.BACKBONE.NUM_CAMERAS", "MODEL.HEADS.NUM_CLASSES")
# Settings the training set decided and test time needs; copied when the config leaves them empty.
_CARRIED_KEYS = ("MODEL.BACKBONE.TRAIN_CAMERAS",)
# The weights the backbone was initialised from (see skip_pretrained_weights).
_INIT_KEYS = ("MODEL.BACKBONE.PRETRAIN", "MODEL.BACKBONE.PRETRAIN_PATH")


def _lookup(cfg, key: str):
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "get") or part not in node:
            return None
        node = node[part]
    return node


def _assign(cfg, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def _normalise(key: str, value):
    if key == "MODEL.BACKBONE.CLIP_NAME":
        # Eval rebuilds QuickGELU models under open_clip's "-quickgelu" name.
        return str(value).removesuffix("-quickgelu")
    if isinstance(value, (list, tuple)):
        return tuple(_normalise(key, v) for v in value)
    return value


def _show(value) -> str:
    return str(list(value)) if isinstance(value, (list, tuple)) else repr(value)
