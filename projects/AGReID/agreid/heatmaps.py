"""Heat maps of what the image encoder looks at, with the ``grad-cam`` package (``pytorch_grad_cam``).

The target is the cosine similarity of an image's feature to a reference feature (the
package's embedding target for models without classes, as in its "pixel attribution for
embeddings" tutorial), so a heat map shows the pixels that make the image look like the
reference (another picture of the person, or the mean of a set). For a ViT the target layer is
the last block's first LayerNorm (its tokens still feed the CLS token through attention) and
the tokens are reshaped to the patch grid of the model, which is not square with OLP (e.g.
21x10 for 256x128 at stride 12): :func:`vit_reshape_transform` reads the grid from the model.
A CLIP ResNet uses its last stage.

:func:`attribute_slot_mask` gives, for AG-ReID, which attribute slots the noise mask drops for
images of known training identities: the similarity of ``E_A(f_proj)`` to the identity's
pseudo-labels, cut at the configured threshold over the batch, as in stage 2's L_attrG.
"""
from __future__ import annotations

import copy
import functools
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import Tensor, nn

from .modeling.deploy import DeployedImageEncoder
from .modeling.losses import noise_mask
from .predictor import camera_agnostic_encoder

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM,
           "xgradcam": XGradCAM, "layercam": LayerCAM}


class SimilarityToReference:
    """grad-cam target: cosine similarity of the model's output (D,) to a reference feature (D,)."""

    def __init__(self, reference: Tensor):
        self.reference = reference

    def __call__(self, model_output: Tensor) -> Tensor:
        return F.cosine_similarity(model_output, self.reference.to(model_output), dim=0)


def vit_reshape_transform(tokens: Tensor, grid: Tuple[int, int]) -> Tensor:
    """(B, 1 + gh*gw, D) ViT tokens -> (B, D, gh, gw) maps, the CLS token dropped."""
    batch, count, width = tokens.shape
    if count != 1 + grid[0] * grid[1]:
        raise ValueError(f"{count} tokens do not fit the {grid[0]}x{grid[1]} patch grid plus the CLS token.")
    return tokens[:, 1:].reshape(batch, grid[0], grid[1], width).permute(0, 3, 1, 2)


class _ImagesToFeatures(nn.Module):
    """``images -> features`` with the camera-agnostic SIE vector, for grad-cam's one-input models."""

    def __init__(self, encoder: DeployedImageEncoder, camera):
        super().__init__()
        agnostic = camera_agnostic_encoder(encoder, camera)
        # A copy of its own: grad-cam needs gradients, the caller's flags stay as they are.
        self.encoder = copy.deepcopy(agnostic) if agnostic is encoder else agnostic

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder(images, torch.zeros(images.shape[0], dtype=torch.long, device=images.device))


def target_layer(encoder: DeployedImageEncoder) -> Tuple[nn.Module, Optional[Callable[[Tensor], Tensor]]]:
    """grad-cam's target layer of ``encoder`` and the reshape transform its output needs."""
    visual = encoder.backbone.visual
    if isinstance(visual, VisionTransformer):
        grid = tuple(int(v) for v in visual.grid_size)
        return visual.transformer.resblocks[-1].ln_1, functools.partial(vit_reshape_transform, grid=grid)
    return visual.layer4[-1], None


class HeatMapper:
    """Heat maps of one encoder.

    Args:
        encoder: the deployed encoder (eval mode; its weights are not changed).
        method: a key of :data:`METHODS`.
        camera: the camera-agnostic SIE rule (:mod:`agreid.predictor`).
    """

    def __init__(self, encoder: DeployedImageEncoder, method: str = "gradcam", camera="mean"):
        if method not in METHODS:
            raise ValueError(f"heat-map method {method!r}: choose from {sorted(METHODS)}")
        self.model = _ImagesToFeatures(encoder, camera).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)
        layer, reshape = target_layer(self.model.encoder)
        self.cam = METHODS[method](model=self.model, target_layers=[layer], reshape_transform=reshape)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """Features (N, D) of 0-255 images (N, 3, H, W)."""
        return self.model(images)

    def __call__(self, images: Tensor, references: Tensor) -> np.ndarray:
        """Heat maps (N, H, W) in [0, 1] of images (N, 3, H, W, 0-255) towards references (N, D)."""
        targets = [SimilarityToReference(reference) for reference in references]
        return self.cam(input_tensor=images, targets=targets)


def overlay(image: Tensor, heat: np.ndarray) -> np.ndarray:
    """An RGB uint8 picture (H, W, 3) of a 0-255 image (3, H, W) with its heat map on top."""
    rgb = (image.permute(1, 2, 0).cpu().numpy() / 255.0).astype(np.float32)
    return show_cam_on_image(np.clip(rgb, 0, 1), heat, use_rgb=True)


@torch.no_grad()
def attribute_slot_mask(model, images: Tensor, identities: Sequence[int], camids: Optional[Tensor] = None
                        ) -> Tuple[Tensor, Tensor]:
    """Per-slot similarities (N, r) and the noise mask D (N, r) of AG-ReID for known identities.

    Args:
        model: a trained AGReID model (with its attribute encoder).
        images: 0-255 images (N, 3, H, W) of training identities.
        identities: each image's training identity index (the prompt learner's row).
        camids: camera ids for SIE (zeros when None).

    Raises:
        ValueError: the model has no attribute encoder, or an identity is out of range.
    """
    if getattr(model, "heads", None) is None or not hasattr(model, "prompt_learner"):
        raise ValueError("this model has no attribute encoder E_A (MODEL.ATTR.ENABLED off, or not AG-ReID).")
    identities = torch.as_tensor(list(identities), dtype=torch.long)
    num_ids = model.prompt_learner.pseudo_labels.shape[0]
    if identities.numel() and not (0 <= int(identities.min()) and int(identities.max()) < num_ids):
        raise ValueError(f"identity indices must be in 0..{num_ids - 1}, got {identities.tolist()}")
    device = model.pixel_mean.device
    if camids is None:
        camids = torch.zeros(len(images), dtype=torch.long)
    batch = {"images": images.to(device), "camids": camids.to(device)}
    was_training = model.training
    model.eval()
    try:
        features = model.backbone(model.preprocess_image(batch), model._camids(batch))
        predicted = model.heads(features.proj)  # (N, r, W)
    finally:
        model.train(was_training)
    pseudo_labels = model.prompt_learner.pseudo_labels[identities.to(device)]  # (N, r, W)
    similarities = F.cosine_similarity(predicted, pseudo_labels, dim=-1)  # (N, r)
    return similarities.cpu(), noise_mask(similarities, model.loss_kwargs["attr"]["threshold"]).cpu()

