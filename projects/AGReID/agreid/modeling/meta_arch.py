"""AG-ReID's meta-architecture: CLIP-ReID (+ SIE, OLP) with attribute prompts and E_A, two phases."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import open_clip
import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.losses import cross_entropy_loss, log_accuracy, triplet_loss
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline
from torch import Tensor, nn

from ..phases import ALIGN, PHASES, check_phase  # noqa: F401  # PHASES: re-exported by agreid.modeling
from .attribute_head import AttributeHead
from .clip_backbone import CLIPImageEncoder, ImageFeatures
from .clip_loader import shared_clip
from .losses import attribute_loss, check_i2t_form, image_to_text_ce, supcon_loss
from .noise_mask import threshold_from_config
from .prompts import PromptLearner
from .text_encoder import TextEncoder

logger = logging.getLogger(__name__)

# Modules trained in each phase (top-level attribute names); E_A joins "guide" on request.
_ALIGN_MODULES = ("prompt_learner", "heads")
_GUIDE_MODULES = ("backbone", "bnneck", "bnneck_proj", "classifier", "classifier_proj")
# BNNeck biases stay at zero (BNNeck of Luo et al., as in CLIP-ReID).
_FROZEN_PARAMETERS = ("bnneck.bias", "bnneck_proj.bias")
# What a deployed model needs: the image encoder, and the BNNecks for MODEL.HEADS.NECK_FEAT "after".
_DEPLOYED_MODULES = ("backbone", "bnneck", "bnneck_proj")


def test_feature(features: ImageFeatures, bnneck: Optional[nn.Module] = None,
                 bnneck_proj: Optional[nn.Module] = None) -> Tensor:
    """The test feature (B, final_dim + embed_dim): L2-normalised ``cat([f, f_proj])``.

    With the BNNecks given (``MODEL.HEADS.NECK_FEAT after``), ``f`` and ``f_proj`` pass through
    them first. Shared by :class:`AGReID` and the deployed encoder, so both give the same feature.
    """
    final, proj = features.final, features.proj
    if bnneck is not None:
        final, proj = bnneck(final), bnneck_proj(proj)
    return F.normalize(torch.cat([final, proj], dim=1), dim=1)


def _i2t_form(cfg, clip_model) -> dict:
    """L_CE's ``form`` and ``logit_scale`` (MODEL.LOSSES.I2T.FORM, LOGIT_SCALE), checked.

    LOGIT_SCALE 0 is the loaded CLIP model's own learned scale, ``exp(logit_scale)``; the raw
    form (the paper's) uses no scale.
    """
    form = check_i2t_form(cfg.MODEL.LOSSES.I2T.FORM)
    logit_scale = float(cfg.MODEL.LOSSES.I2T.LOGIT_SCALE)
    if not logit_scale >= 0:
        raise ValueError(
            f"MODEL.LOSSES.I2T.LOGIT_SCALE must be a positive number, or 0 for the CLIP model's own "
            f"logit scale, not {cfg.MODEL.LOSSES.I2T.LOGIT_SCALE!r}."
        )
    if logit_scale == 0:
        logit_scale = float(clip_model.logit_scale.detach().float().exp())
        source = "the CLIP model's own"
    else:
        source = "MODEL.LOSSES.I2T.LOGIT_SCALE"
    if form == "cosine":
        logger.info("Image-to-text loss L_CE: cosine logits times %.4g (%s).", logit_scale, source)
    return {"form": form, "logit_scale": logit_scale}


@META_ARCH_REGISTRY.register()
class AGReID(Baseline):
    """AG-ReID: attribute guidance with inherent pseudo-labels (docs/METHOD.md).

    fastreid's ``backbone`` is the CLIP image encoder E_M (:func:`build_clip_backbone`) and its
    ``heads`` the attribute encoder E_A (:class:`AttributeHead`, None when MODEL.ATTR.ENABLED is
    off). The model also owns BNNecks and ID classifiers on ``f`` and ``f_proj``, the per-identity
    prompt learner (pseudo-labels V) and the frozen CLIP text encoder.

    Training runs in two phases (:data:`agreid.phases.PHASES`; the model is a
    :class:`agreid.phases.PhasedModel`), set by :meth:`set_phase`:

    - ``align``: batches of cached image features ``{"features", "targets"}``; trains V and E_A
      with SupCon in both directions and L_attrA.
    - ``guide``: fastreid image batches ``{"images", "targets", "camids"}``; trains the image
      encoder, BNNecks and classifiers with the ID, triplet, image-to-text and L_attrG losses.

    In eval mode only the image encoder runs and the output is the test feature
    ``normalize(cat([f, f_proj]))``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: CLIPImageEncoder,
        heads: Optional[AttributeHead],
        pixel_mean,
        pixel_std,
        loss_kwargs: dict,
        prompt_learner: PromptLearner,
        text_encoder: TextEncoder,
        num_classes: int,
        neck_feat: str = "before",
        train_attr_in_guide: bool = False,
    ):
        """
        Args:
            backbone: the CLIP image encoder.
            heads: the attribute encoder E_A, or None to train without attribute losses.
            pixel_mean, pixel_std: per-channel normalisation of 0-255 images.
            loss_kwargs: fastreid's loss settings plus ``supcon``, ``i2t`` and ``attr``.
            prompt_learner: per-identity prompts; its ``num_ids`` must equal ``num_classes``.
            text_encoder: the frozen CLIP text encoder.
            num_classes: number of training identities.
            neck_feat: test feature before ("before") or after ("after") the BNNecks.
            train_attr_in_guide: also train E_A in phase ``guide``.
        """
        super().__init__(
            backbone=backbone, heads=heads, pixel_mean=pixel_mean, pixel_std=pixel_std, loss_kwargs=loss_kwargs
        )
        if neck_feat not in ("before", "after"):
            raise ValueError(f"MODEL.HEADS.NECK_FEAT must be 'before' or 'after', not {neck_feat!r}.")
        if heads is not None and heads.num_slots != prompt_learner.num_learnable_tokens:
            raise ValueError(
                f"The attribute encoder predicts {heads.num_slots} tokens but the prompt template has "
                f"{prompt_learner.num_learnable_tokens}."
            )
        final_dim, embed_dim = backbone.final_dim, backbone.embed_dim
        self.bnneck = nn.BatchNorm1d(final_dim)
        self.bnneck_proj = nn.BatchNorm1d(embed_dim)
        self.classifier = nn.Linear(final_dim, num_classes, bias=False)
        self.classifier_proj = nn.Linear(embed_dim, num_classes, bias=False)
        for classifier in (self.classifier, self.classifier_proj):
            nn.init.normal_(classifier.weight, std=0.001)
        self.prompt_learner = prompt_learner
        self.text_encoder = text_encoder
        # (num_ids, embed_dim) text feature of every identity's prompt, filled at the phase switch.
        self.register_buffer("text_features", torch.zeros(num_classes, text_encoder.embed_dim))
        self.neck_feat = neck_feat
        self.train_attr_in_guide = train_attr_in_guide
        self.phase = ALIGN
        self.set_phase(self.phase)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Baseline's backbone (CLIP image encoder), heads (E_A) and losses, plus the text side."""
        num_classes = cfg.MODEL.HEADS.NUM_CLASSES
        if num_classes <= 0:
            raise ValueError("MODEL.HEADS.NUM_CLASSES must be the number of training identities (the trainer sets it).")
        # One read of the weights: fastreid's backbone builder takes the image tower of this
        # CLIP model, the prompt learner and text encoder below take its text tower.
        with shared_clip(cfg) as clip_model:
            ret = super().from_config(cfg)
        if not isinstance(ret["heads"], AttributeHead):
            raise ValueError(
                f"AGReID's heads are its attribute encoder: set MODEL.HEADS.NAME AttributeHead "
                f"(got {cfg.MODEL.HEADS.NAME!r})."
            )
        if not cfg.MODEL.ATTR.ENABLED:
            ret["heads"] = None
        ret["prompt_learner"] = PromptLearner(
            cfg.MODEL.PROMPT.TEMPLATE,
            num_ids=num_classes,
            token_embedding=clip_model.token_embedding,
            tokenizer=open_clip.get_tokenizer(cfg.MODEL.BACKBONE.CLIP_NAME),
            init_std=cfg.MODEL.PROMPT.INIT_STD,
        )
        ret["text_encoder"] = TextEncoder(clip_model)
        ret["loss_kwargs"].update({
            "supcon": {"scale": cfg.MODEL.LOSSES.SUPCON.SCALE},
            "i2t": {"scale": cfg.MODEL.LOSSES.I2T.SCALE, **_i2t_form(cfg, clip_model)},
            "attr": {
                "align_weight": cfg.MODEL.ATTR.ALIGN_WEIGHT,
                "guide_weight": cfg.MODEL.ATTR.GUIDE_WEIGHT,
                "threshold": threshold_from_config(cfg),
                "align_grad_to_prompts": cfg.MODEL.ATTR.ALIGN_GRAD_TO_PROMPTS,
            },
        })
        ret.update(
            num_classes=num_classes,
            neck_feat=cfg.MODEL.HEADS.NECK_FEAT,
            train_attr_in_guide=cfg.MODEL.ATTR.TRAIN_IN_GUIDE,
        )
        return ret

    # ------------------------------------------------------------------ phases
    def set_phase(self, phase: str) -> None:
        """Switch to ``"align"`` or ``"guide"``: exactly that phase's parameters require grad."""
        check_phase(phase)
        trained = {name for name, _ in self.trainable_parameters(phase)}
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(name in trained)
        self.phase = phase

    def trainable_parameters(self, phase: str) -> List[Tuple[str, nn.Parameter]]:
        """Named parameters trained in ``phase`` (whatever the current phase), BNNeck biases excluded."""
        if check_phase(phase) == ALIGN:
            modules = _ALIGN_MODULES
        else:
            modules = _GUIDE_MODULES + (("heads",) if self.train_attr_in_guide else ())
        return [
            (name, parameter)
            for name, parameter in self.named_parameters()
            if name.split(".", 1)[0] in modules and name not in _FROZEN_PARAMETERS
        ]

    # ---------------------------------------------------------------- forwards
    def forward(self, batched_inputs: dict):
        """Eval: test features (B, final_dim + embed_dim). Train: the loss dict of the phase."""
        if not self.training:
            features = self.backbone(self.preprocess_image(batched_inputs), self._camids(batched_inputs))
            return self.test_feature(features)
        targets = batched_inputs["targets"].to(self.device)
        if self.phase == ALIGN:
            return self.align_losses(batched_inputs["features"].to(self.device), targets)
        features = self.backbone(self.preprocess_image(batched_inputs), self._camids(batched_inputs))
        return self.losses(features, targets)

    def preprocess_image(self, batched_inputs: dict) -> Tensor:
        """Normalise ``batched_inputs["images"]`` (B, 3, H, W, 0-255) on the model's device.

        Unlike fastreid's Baseline it does not normalise the caller's tensor in place.
        """
        images = batched_inputs["images"].to(self.device, non_blocking=True)
        return (images - self.pixel_mean) / self.pixel_std

    def _camids(self, batched_inputs: dict) -> Optional[Tensor]:
        camids = batched_inputs.get("camids")
        return None if camids is None else camids.to(self.device, non_blocking=True)

    def test_feature(self, features: ImageFeatures) -> Tensor:
        """L2-normalised ``cat([f, f_proj])``, before or after the BNNecks (MODEL.HEADS.NECK_FEAT)."""
        if self.neck_feat == "after":
            return test_feature(features, self.bnneck, self.bnneck_proj)
        return test_feature(features)

    @torch.no_grad()
    def encode_image(self, batched_inputs: dict) -> Tensor:
        """``f_proj`` (B, embed_dim) of un-augmented images, for the stage-1 feature cache.

        Without the camera embedding (SIE), as CLIP-ReID's cache: the SIE rows are untrained in
        stage 1, and stage 1 should align text with the image alone. The image encoder runs in
        eval mode (a ResNet's BN statistics must not move).
        """
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            features = self.backbone(self.preprocess_image(batched_inputs), sie=False)
        finally:
            self.backbone.train(was_training)
        return features.proj

    @torch.no_grad()
    def build_text_features(self, batch_size: int = 256) -> Tensor:
        """Fill the ``text_features`` buffer (num_ids, embed_dim) from the learned prompts."""
        identities = torch.arange(self.text_features.shape[0], device=self.text_features.device)
        for chunk in identities.split(batch_size):
            prompts, token_ids = self.prompt_learner(chunk)
            self.text_features[chunk] = self.text_encoder(prompts, token_ids).to(self.text_features.dtype)
        return self.text_features

    def image_encoder_state_dict(self) -> Dict[str, Tensor]:
        """The weights a deployed model needs: the image encoder and the BNNecks."""
        return {
            name: tensor for name, tensor in self.state_dict().items()
            if name.split(".", 1)[0] in _DEPLOYED_MODULES
        }

    # ------------------------------------------------------------------ losses
    def align_losses(self, image_features: Tensor, targets: Tensor) -> Dict[str, Tensor]:
        """Phase ``align``: L_feat (SupCon both ways) and lambda * L_attrA on cached ``f_proj``."""
        prompts, token_ids = self.prompt_learner(targets)
        text_features = self.text_encoder(prompts, token_ids)  # (B, embed_dim)
        scale = self.loss_kwargs["supcon"]["scale"]
        loss_dict = {
            "loss_supcon_i2t": supcon_loss(image_features, text_features, targets, targets) * scale,
            "loss_supcon_t2i": supcon_loss(text_features, image_features, targets, targets) * scale,
        }
        if self.heads is not None:
            # The pseudo-labels are E_A's targets: only L_feat shapes them (docs/METHOD.md),
            # unless MODEL.ATTR.ALIGN_GRAD_TO_PROMPTS lets L_attrA pull V towards E_A too.
            pseudo_labels = self.prompt_learner.pseudo_labels[targets]  # (B, r, width)
            if not self.loss_kwargs["attr"].get("align_grad_to_prompts", False):
                pseudo_labels = pseudo_labels.detach()
            loss_dict["loss_attr_align"] = (
                attribute_loss(self.heads(image_features), pseudo_labels) * self.loss_kwargs["attr"]["align_weight"]
            )
        return loss_dict

    def losses(self, outputs: ImageFeatures, gt_labels: Tensor) -> Dict[str, Tensor]:
        """Phase ``guide``: L_id on both classifiers, L_tri on (f_last, f, f_proj), L_CE, beta * L_attrG."""
        logits = self.classifier(self.bnneck(outputs.final))
        logits_proj = self.classifier_proj(self.bnneck_proj(outputs.proj))
        log_accuracy(logits.detach(), gt_labels)

        loss_dict = {}
        loss_names = self.loss_kwargs["loss_names"]
        ce_kwargs = self.loss_kwargs["ce"]
        if "CrossEntropyLoss" in loss_names:
            loss_dict["loss_cls"] = ce_kwargs["scale"] * sum(
                cross_entropy_loss(scores, gt_labels, ce_kwargs["eps"], ce_kwargs["alpha"])
                for scores in (logits, logits_proj)
            )
        if "TripletLoss" in loss_names:
            tri_kwargs = self.loss_kwargs["tri"]
            loss_dict["loss_triplet"] = tri_kwargs["scale"] * sum(
                triplet_loss(feature, gt_labels, tri_kwargs["margin"], tri_kwargs["norm_feat"], tri_kwargs["hard_mining"])
                for feature in outputs
            )
        i2t_scale = self.loss_kwargs["i2t"]["scale"]
        if i2t_scale > 0:
            # Label-smoothed like the ID loss, as CLIP-ReID does.
            i2t_kwargs = self.loss_kwargs["i2t"]
            loss_dict["loss_i2t"] = i2t_scale * image_to_text_ce(
                outputs.proj, self.text_features, gt_labels, ce_kwargs["eps"],
                form=i2t_kwargs.get("form", "raw"), logit_scale=i2t_kwargs.get("logit_scale", 1.0),
            )
        if self.heads is not None:
            attr_kwargs = self.loss_kwargs["attr"]
            pseudo_labels = self.prompt_learner.pseudo_labels[gt_labels].detach()  # (B, r, width)
            loss_dict["loss_attr_guide"] = attr_kwargs["guide_weight"] * attribute_loss(
                self.heads(outputs.proj), pseudo_labels, attr_kwargs["threshold"]
            )
        return loss_dict
