"""Build an ``open_clip`` CLIP model and load its weights through one path.

Weights come from exactly one source, chosen by the config:

- ``MODEL.BACKBONE.PRETRAIN_PATH``: a local file, OpenAI's TorchScript release (e.g.
  ``ViT-B-16.pt``) or an open_clip checkpoint / state dict (``.pt``, ``.bin``, ``.safetensors``);
- ``MODEL.BACKBONE.PRETRAIN``: an open_clip pretrained tag (e.g. ``openai``), downloaded by
  open_clip into its cache and then loaded like a local file;
- ``MODEL.BACKBONE.PRETRAIN: none``: random init, only when a config asks for it (tests, demo).

Anything else (no tag and no file, or a tag that cannot be downloaded offline) raises
:class:`CLIPWeightsNotFoundError`, whose message names the file to download and the key to set.
"""
from __future__ import annotations

import logging
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator, Optional, Tuple

import open_clip
import torch
from open_clip.factory import convert_state_dict, resize_pos_embed, resize_text_pos_embed
from open_clip.model import CLIP

from ..serialization import check_weights, load_checkpoint_file

logger = logging.getLogger(__name__)

# The project's own open_clip configs (the tiny ViT used by tests and the CPU demo).
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

RANDOM_INIT = "none"
# Entries of OpenAI's TorchScript archives that are hyper-parameters, not weights.
_OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")


class CLIPWeightsNotFoundError(FileNotFoundError):
    """No CLIP weights could be found for the configured model (the message says what to do)."""


# (source, model) loaded once for the current model build, see shared_clip().
_SHARED_CLIP: ContextVar[Optional[Tuple[tuple, CLIP]]] = ContextVar("agreid_shared_clip", default=None)


def _source(cfg) -> tuple:
    return (cfg.MODEL.BACKBONE.CLIP_NAME, str(cfg.MODEL.BACKBONE.PRETRAIN).strip(),
            str(cfg.MODEL.BACKBONE.PRETRAIN_PATH).strip())


def load_clip(cfg) -> CLIP:
    """Build ``MODEL.BACKBONE.CLIP_NAME`` and load the weights the config names.

    Inside :func:`shared_clip` for the same config, the model loaded there is returned.

    Args:
        cfg: a fastreid config with AG-ReID's keys (``MODEL.BACKBONE.CLIP_NAME``, ``PRETRAIN``,
            ``PRETRAIN_PATH``).

    Returns:
        The whole open_clip ``CLIP`` model (image and text towers), fp32, on the CPU.
    """
    shared = _SHARED_CLIP.get()
    if shared is not None and shared[0] == _source(cfg):
        return shared[1]
    name, pretrained, checkpoint_path = _source(cfg)
    return create_clip(name, pretrained=pretrained, checkpoint_path=checkpoint_path)


@contextmanager
def shared_clip(cfg) -> Iterator[CLIP]:
    """Load the CLIP model of ``cfg`` once for every :func:`load_clip` call inside the block.

    The image tower (through fastreid's backbone builder) and the text tower of one model then
    come from one read of the weights. Outside the block every call loads anew, so two models
    never share modules.
    """
    model = load_clip(cfg)
    token = _SHARED_CLIP.set((_source(cfg), model))
    try:
        yield model
    finally:
        _SHARED_CLIP.reset(token)


def create_clip(model_name: str, *, pretrained: str = "", checkpoint_path: str = "") -> CLIP:
    """Build an open_clip CLIP model and load its weights from a file, a tag, or nothing.

    Args:
        model_name: an open_clip model config name (``ViT-B-16``, ``RN50``, ``AGReID-Tiny-ViT``).
        pretrained: an open_clip pretrained tag, ``"none"`` (random init) or ``""`` (unset).
        checkpoint_path: a local weights file; when given it wins over ``pretrained``.

    Raises:
        CLIPWeightsNotFoundError: when no weights are available (the message names the file to
            download and the config key to set).
        BadWeightsError: a weight holds NaN/Inf, or is not floating point where the model's is.
        ValueError: for an unknown tag, or a file that holds none of the model's weights.
    """
    if checkpoint_path:
        # "none" beside a file is how a config keeps random init one override away.
        if pretrained and pretrained.lower() != RANDOM_INIT:
            logger.warning(
                "MODEL.BACKBONE.PRETRAIN_PATH %s is set: ignoring MODEL.BACKBONE.PRETRAIN %r.",
                checkpoint_path, pretrained,
            )
        if not Path(checkpoint_path).is_file():
            raise CLIPWeightsNotFoundError(
                f"MODEL.BACKBONE.PRETRAIN_PATH {checkpoint_path!r} is not a file. "
                + _how_to_get_weights(model_name)
            )
        return _build_and_load(model_name, checkpoint_path,
                               quick_gelu=weights_use_quick_gelu(model_name, checkpoint_path=checkpoint_path))

    if pretrained.lower() == RANDOM_INIT:
        logger.warning("CLIP %s: random init (MODEL.BACKBONE.PRETRAIN none).", model_name)
        return open_clip.create_model(model_name, pretrained=None)

    if not pretrained:
        raise CLIPWeightsNotFoundError(
            f"No CLIP weights configured for MODEL.BACKBONE.CLIP_NAME {model_name!r}. "
            + _how_to_get_weights(model_name)
        )

    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        raise ValueError(
            f"MODEL.BACKBONE.PRETRAIN {pretrained!r} is not an open_clip tag of {model_name!r}; "
            f"known tags: {open_clip.list_pretrained_tags_by_model(model_name)}, or 'none'."
        )
    try:
        downloaded = open_clip.download_pretrained(tag_cfg)
    except Exception as error:  # network errors come in many types (OSError, HF hub, urllib)
        raise CLIPWeightsNotFoundError(
            f"Could not download the {pretrained!r} weights of {model_name!r} ({error}). "
            + _how_to_get_weights(model_name)
        ) from error
    return _build_and_load(model_name, downloaded, quick_gelu=weights_use_quick_gelu(model_name, pretrained))


def weights_use_quick_gelu(model_name: str, pretrained: str = "", checkpoint_path: str = "") -> bool:
    """Whether CLIP ``model_name`` with these weights runs QuickGELU: the one rule of the project.

    The activation is not in the weights, and a wrong one silently changes every feature:
    a model config may ask for it (``*-quickgelu``); OpenAI's TorchScript files and open_clip
    tags whose config says so (``openai``) get it; random init and other files do not.

    Raises:
        FileNotFoundError: ``checkpoint_path`` is given but missing, so the rule cannot be applied.
    """
    if (open_clip.get_model_config(model_name) or {}).get("quick_gelu", False):
        return True
    if checkpoint_path:
        if not Path(checkpoint_path).is_file():
            raise FileNotFoundError(
                f"MODEL.BACKBONE.PRETRAIN_PATH {checkpoint_path!r} is not a file: it tells whether the "
                "image encoder uses QuickGELU (OpenAI's TorchScript release does). Place it there, or "
                "say it explicitly (quick_gelu=True/False, --quick-gelu yes/no)."
            )
        return _is_torchscript(checkpoint_path)
    if pretrained and pretrained.lower() != RANDOM_INIT:
        return bool((open_clip.get_pretrained_cfg(model_name, pretrained) or {}).get("quick_gelu", False))
    return False


def clip_uses_quick_gelu(cfg) -> bool:
    """:func:`weights_use_quick_gelu` for the CLIP model and weights of ``cfg``."""
    name, pretrained, checkpoint_path = _source(cfg)
    return weights_use_quick_gelu(name, pretrained, checkpoint_path)


def skip_pretrained_weights(cfg, quick_gelu: Optional[bool] = None) -> None:
    """Load no pretrained backbone weights: a full checkpoint (``MODEL.WEIGHTS``) follows.

    CLIP backbones take ``"none"`` (random init, explicitly asked); fastreid's own backbones
    load nothing when the key is empty. The activation is not in the weights: a CLIP model
    trained with QuickGELU is rebuilt with open_clip's ``-quickgelu`` model of the same name,
    so its features stay the same.

    Args:
        quick_gelu: the activation the checkpoint records (the project's checkpoints do);
            None = decide from the weights it was initialised from (:func:`weights_use_quick_gelu`),
            or, when that file is missing here, assume OpenAI's release.
    """
    uses_clip = (cfg.MODEL.META_ARCHITECTURE == "AGReID"
                 or cfg.MODEL.BACKBONE.NAME == "build_clip_backbone")
    if not uses_clip:
        cfg.MODEL.BACKBONE.PRETRAIN = ""
        return
    name = cfg.MODEL.BACKBONE.CLIP_NAME
    try:
        if quick_gelu is None:
            quick_gelu = clip_uses_quick_gelu(cfg)
    except FileNotFoundError:
        # The pretrained file is not on this machine; OpenAI's release is the usual one.
        logger.warning("MODEL.BACKBONE.PRETRAIN_PATH %s is missing here: assuming it was OpenAI's release "
                       "(QuickGELU activations).", cfg.MODEL.BACKBONE.PRETRAIN_PATH)
        quick_gelu = True
    if quick_gelu and not name.endswith("-quickgelu"):
        if f"{name}-quickgelu" not in open_clip.list_models():
            raise ValueError(f"{name} was trained with QuickGELU but open_clip has no "
                             f"'{name}-quickgelu' model to rebuild it with.")
        cfg.MODEL.BACKBONE.CLIP_NAME = f"{name}-quickgelu"
    cfg.MODEL.BACKBONE.PRETRAIN = RANDOM_INIT


def _build_and_load(model_name: str, checkpoint_path: str, *, quick_gelu: bool) -> CLIP:
    """Create ``model_name`` and load ``checkpoint_path`` into it, logging keys that did not match."""
    model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    if _is_torchscript(checkpoint_path):
        # OpenAI's release is a TorchScript archive whose state dict already uses open_clip's key
        # names; open_clip's own loader reads it with weights_only=True, which TorchScript refuses.
        state_dict = torch.jit.load(checkpoint_path, map_location="cpu").state_dict()
        for key in _OPENAI_META_KEYS:
            state_dict.pop(key, None)
        check_weights(state_dict, checkpoint_path, reference=model.state_dict())
        incompatible = model.load_state_dict(state_dict, strict=False)
    else:
        # Read through the project's safe loader (weights_only / safetensors, never code), then
        # apply open_clip's own key conversions and position-embedding resizing.
        state_dict = _clip_state_dict(load_checkpoint_file(checkpoint_path), checkpoint_path)
        state_dict = convert_state_dict(model, state_dict)
        scale = state_dict.get("logit_scale")
        if scale is not None and scale.shape != model.logit_scale.shape and scale.numel() == 1:
            state_dict["logit_scale"] = scale.reshape(model.logit_scale.shape)
        # NaN/Inf, or a floating weight cast to int, would load silently (named by the model's key).
        check_weights(state_dict, checkpoint_path, reference=model.state_dict())
        resize_pos_embed(state_dict, model)
        resize_text_pos_embed(state_dict, model)
        incompatible = model.load_state_dict(state_dict, strict=False)

    num_loaded = len(model.state_dict()) - len(incompatible.missing_keys)
    if num_loaded == 0:
        raise ValueError(
            f"{checkpoint_path} holds none of the weights of CLIP {model_name!r}: is it the right file? "
            f"Unexpected keys (first 10): {incompatible.unexpected_keys[:10]}"
        )
    logger.info(
        "CLIP %s: loaded %d tensors from %s; missing keys: %s; unexpected keys: %s",
        model_name, num_loaded, checkpoint_path,
        incompatible.missing_keys or "none", incompatible.unexpected_keys or "none",
    )
    return model


def _clip_state_dict(checkpoint, path: str) -> dict:
    """The CLIP state dict inside a loaded file: the file itself, or its ``state_dict`` entry."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ValueError(f"{path} holds no CLIP state dict (a {type(checkpoint).__name__}).")
    # Saved from a DistributedDataParallel-wrapped model.
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint.items()}


def _is_torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (the format of OpenAI's CLIP release)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def _how_to_get_weights(model_name: str) -> str:
    """The sentence of an error message that says which file to download and which key to set."""
    openai_cfg = open_clip.get_pretrained_cfg(model_name, "openai")
    if openai_cfg.get("url"):
        file_name = openai_cfg["url"].rsplit("/", 1)[-1]
        return (
            f"Download OpenAI's {file_name} from {openai_cfg['url']} (on a machine with internet), "
            f"place it on this machine and set MODEL.BACKBONE.PRETRAIN_PATH /path/to/{file_name}; "
            "or set MODEL.BACKBONE.PRETRAIN openai where the internet is reachable; "
            "MODEL.BACKBONE.PRETRAIN none gives random weights (tests and demo only)."
        )
    if (MODEL_CONFIG_DIR / f"{model_name}.json").is_file():
        return (
            f"{model_name!r} is AG-ReID's own model, pretrained offline on the synthetic caption corpus "
            "(SynthCLIP). The repository ships it as pretrained/SynthCLIP-Tiny-<fingerprint>.safetensors "
            "(`git checkout -- pretrained/` restores it); `make synthclip` makes it anew "
            "(tools/make_synthetic.py --preset pretrain, then tools/pretrain_clip.py --output FILE); "
            "point MODEL.BACKBONE.PRETRAIN_PATH at the file; "
            "MODEL.BACKBONE.PRETRAIN_PATH \"\" with MODEL.BACKBONE.PRETRAIN none gives random weights."
        )
    return (
        f"{model_name!r} has no public OpenAI weights: set MODEL.BACKBONE.PRETRAIN_PATH to a "
        f"checkpoint of it, MODEL.BACKBONE.PRETRAIN to one of its open_clip tags "
        f"{open_clip.list_pretrained_tags_by_model(model_name)}, or MODEL.BACKBONE.PRETRAIN none "
        "for random weights (tests and demo only)."
    )
