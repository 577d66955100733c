"""AG-ReID's model: CLIP image/text encoders, prompt learner, attribute encoder, losses, meta-arch.

Importing this package registers ``build_clip_backbone`` (BACKBONE_REGISTRY), ``AttributeHead``
(REID_HEADS_REGISTRY) and ``AGReID`` (META_ARCH_REGISTRY) in fastreid, and the tiny open_clip
config ``AGReID-Tiny-ViT``.
"""
from . import losses
from .attribute_head import AttributeHead  # registration
from .clip_backbone import CLIPImageEncoder, ImageFeatures, build_clip_backbone  # registration
from .clip_loader import CLIPWeightsNotFoundError, create_clip, load_clip
from .deploy import DeployedImageEncoder, build_deployed_encoder
from .meta_arch import PHASES, AGReID  # registration
from .prompts import TEMPLATES, PromptLearner, parse_template
from .text_encoder import TextEncoder

__all__ = [
    "AGReID",
    "AttributeHead",
    "CLIPImageEncoder",
    "CLIPWeightsNotFoundError",
    "DeployedImageEncoder",
    "ImageFeatures",
    "PHASES",
    "PromptLearner",
    "TEMPLATES",
    "TextEncoder",
    "build_clip_backbone",
    "build_deployed_encoder",
    "create_clip",
    "load_clip",
    "losses",
    "parse_template",
]
