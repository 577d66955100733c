"""Convert a checkpoint of CLIP-ReID's public code into this project's format (the baseline config).

    python tools/convert_clipreid.py --clipreid ViT-B-16_60.pth \\
        --config-file configs/OccDuke/clipreid.yml --output pretrained/clipreid_occduke.pth
    python tools/train_net.py --config-file configs/OccDuke/clipreid.yml --eval-only \\
        MODEL.WEIGHTS pretrained/clipreid_occduke.pth

CLIP-ReID saves ``model.state_dict()`` of its ``build_transformer``: ``image_encoder.*`` (CLIP's
vision tower, position embedding already sized for its input and stride), ``cv_embed`` (SIE),
``bottleneck*`` / ``classifier*`` (BNNecks, ID classifiers), ``prompt_learner.cls_ctx`` (the
identities' learnable tokens of "A photo of a X X X X person."), ``prompt_learner.token_prefix``
and ``token_suffix`` (the template's fixed words) and ``text_encoder.*`` (CLIP's text tower).
They become ``backbone.visual.*``, ``backbone.camera_embedding``, ``bnneck*``, ``classifier*``,
``prompt_learner.pseudo_labels``, ``prompt_learner.template_embedding`` and ``text_encoder.*``.
The model of ``--config-file`` (default prompt, no attribute encoder; identity and camera
counts taken from the checkpoint) is built, loaded with every key checked, its text features
filled, and saved as fastreid's ``{"model": state_dict}``. The config must match the
checkpoint's input size and stride (CLIP-ReID's ``INPUT.SIZE_TRAIN``, ``MODEL.STRIDE_SIZE``);
a mismatch is reported with the shapes. CLIP-ReID starts from OpenAI's weights, so the encoder
uses QuickGELU (``--quick-gelu``).
"""
import argparse
import logging
import os
import sys
from typing import Dict, List, Tuple

import open_clip
import torch
from fastreid.modeling import build_model
from torch import Tensor

from ..config import get_agreid_cfg
from ..serialization import check_weights, load_checkpoint_file, save_checkpoint_file

QUICK_GELU = {"auto": None, "yes": True, "no": False}
# CLIP-ReID's module names -> this project's (prefix renames; the rest of a key is kept).
RENAMES = (
    ("image_encoder.", "backbone.visual."),
    ("bottleneck_proj.", "bnneck_proj."),
    ("bottleneck.", "bnneck."),
    ("classifier_proj.", "classifier_proj."),
    ("classifier.", "classifier."),
    ("text_encoder.", "text_encoder."),
)
_PROMPT_KEYS = ("prompt_learner.cls_ctx", "prompt_learner.token_prefix", "prompt_learner.token_suffix")
# Filled from the config's own model, not from the checkpoint.
_FROM_CONFIG = ("prompt_learner.token_ids", "prompt_learner.slot_positions", "text_features")


class ConversionError(ValueError):
    """The checkpoint is not CLIP-ReID's, or does not fit the config."""


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clipreid", required=True, help="CLIP-ReID checkpoint (its model.state_dict())")
    parser.add_argument("--config-file", required=True, help="this project's baseline config, e.g. configs/OccDuke/clipreid.yml")
    parser.add_argument("--output", required=True, help="converted checkpoint to write")
    parser.add_argument("--quick-gelu", default="auto", choices=sorted(QUICK_GELU),
                        help="QuickGELU activations; auto: yes when open_clip has the -quickgelu model")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser.parse_args(argv)


def load_clipreid(path: str) -> Dict[str, Tensor]:
    """CLIP-ReID's state dict at ``path`` (``module.`` prefixes of DataParallel removed)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CLIP-ReID checkpoint not found: {path}")
    state = load_checkpoint_file(path)  # never executes code from the file
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(k.startswith(("image_encoder.", "module.image_encoder.")) for k in state):
        keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise ConversionError(f"{path} is not a CLIP-ReID checkpoint (no 'image_encoder.*' keys); first keys: {keys}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def target_key(key: str):
    """The key of this project's model that CLIP-ReID's ``key`` becomes, or None (no place for it)."""
    if key == "cv_embed":
        return "backbone.camera_embedding"
    if key == "prompt_learner.cls_ctx":
        return "prompt_learner.pseudo_labels"
    if key in _PROMPT_KEYS:  # the template's fixed words
        return "prompt_learner.template_embedding"
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def convert_state_dict(state: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], List[str]]:
    """CLIP-ReID's keys renamed to this project's; returns ``(converted, keys not used)``."""
    converted, unused = {}, []
    for key, value in state.items():
        new = target_key(key)
        if new is None:
            unused.append(key)
        elif key not in _PROMPT_KEYS:
            converted[new] = value
    if "prompt_learner.cls_ctx" in state:
        converted["prompt_learner.pseudo_labels"] = state["prompt_learner.cls_ctx"]
        if "prompt_learner.token_prefix" in state and "prompt_learner.token_suffix" in state:
            prefix = state["prompt_learner.token_prefix"][0]  # (1 + words before the slots, width)
            suffix = state["prompt_learner.token_suffix"][0]  # (rest of the context, width)
            slots = torch.zeros(state["prompt_learner.cls_ctx"].shape[1], prefix.shape[1], dtype=prefix.dtype)
            # Slot rows are placeholders: the prompt learner writes the identity's tokens there.
            converted["prompt_learner.template_embedding"] = torch.cat([prefix, slots, suffix])
    return converted, unused


def build_converted_model(state: Dict[str, Tensor], config_file: str, opts, quick_gelu=None,
                          source: str = "the CLIP-ReID checkpoint"):
    """The config's model with CLIP-ReID's weights: ``(model, cfg)``.

    Args:
        source: the checkpoint's path, for the error messages.

    Raises:
        ConversionError: keys that do not fit (named, with shapes for a size mismatch).
        BadWeightsError: a weight holds NaN/Inf, or is not floating point where the model's is
            (named by its CLIP-ReID key).
    """
    converted, unused = convert_state_dict(state)
    if unused:
        raise ConversionError(f"CLIP-ReID keys this project has no place for: {unused[:8]}")
    if "classifier.weight" not in converted:
        raise ConversionError("the CLIP-ReID checkpoint has no classifier.weight (needed for the number of identities)")
    camera_rows = converted.get("backbone.camera_embedding")
    overrides = ["MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", "",
                 "MODEL.HEADS.NUM_CLASSES", str(converted["classifier.weight"].shape[0]),
                 "MODEL.BACKBONE.SIE_CAMERA", str(camera_rows is not None),
                 "MODEL.BACKBONE.NUM_CAMERAS", str(0 if camera_rows is None else camera_rows.shape[0]),
                 "MODEL.DEVICE", "cpu"]
    cfg = get_agreid_cfg(config_file, [*opts, *overrides])
    name = cfg.MODEL.BACKBONE.CLIP_NAME
    if quick_gelu is None:
        quick_gelu = f"{name}-quickgelu" in open_clip.list_models()
    if quick_gelu and not name.endswith("-quickgelu"):
        if f"{name}-quickgelu" not in open_clip.list_models():
            raise ConversionError(f"open_clip has no {name}-quickgelu model for QuickGELU activations.")
        cfg.MODEL.BACKBONE.CLIP_NAME = f"{name}-quickgelu"
    model = build_model(cfg)
    expected = model.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)}, config {tuple(expected[k].shape)}"
                  for k, v in converted.items() if k in expected and v.shape != expected[k].shape]
    if mismatched:
        raise ConversionError("the CLIP-ReID checkpoint does not fit the config (check INPUT.SIZE_TRAIN, "
                              "MODEL.BACKBONE.STRIDE and CLIP_NAME): " + "; ".join(mismatched[:6]))
    unexpected = sorted(set(converted) - set(expected))
    missing = sorted(k for k in set(expected) - set(converted) if not k.startswith(_FROM_CONFIG))
    if unexpected or missing:
        raise ConversionError(f"the CLIP-ReID checkpoint and the model of {config_file} differ: "
                              f"keys only in the checkpoint {unexpected[:6]}, only in the model {missing[:6]} "
                              "(the baseline config has MODEL.ATTR.ENABLED False and TEMPLATE default)")
    # Checked under CLIP-ReID's own names, against the dtypes of the entries they become.
    check_weights(state, source, reference={k: expected[target_key(k)] for k in state if target_key(k) in expected})
    model.load_state_dict({**expected, **converted})
    model.build_text_features()
    return model.eval(), cfg


def main(argv=None) -> int:
    """Convert and save; exit status 2 with one message on bad input."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        model, cfg = build_converted_model(load_clipreid(args.clipreid), args.config_file, args.opts,
                                           QUICK_GELU[args.quick_gelu], source=args.clipreid)
        state = model.state_dict()
        # The text features are computed here: never write weights that cannot be evaluated.
        check_weights(state, "the converted model", outcome=f"{args.output} was not written")
    except (FileNotFoundError, ValueError) as error:  # ConversionError, BadWeightsError, unsafe files
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_checkpoint_file({"model": state, "converted_from": os.path.abspath(args.clipreid)}, args.output)
    print(f"converted {args.clipreid}: {cfg.MODEL.HEADS.NUM_CLASSES} identities, "
          f"{cfg.MODEL.BACKBONE.NUM_CAMERAS} SIE cameras, {cfg.MODEL.BACKBONE.CLIP_NAME} -> {args.output}")
    print(f"evaluate: python tools/train_net.py --config-file {args.config_file} --eval-only "
          f"MODEL.WEIGHTS {args.output}")
    return 0

