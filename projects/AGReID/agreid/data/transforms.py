"""Image transforms: fastreid's, with CLIP-ReID's random erasing and test-time resize as options.

fastreid's ``ToTensor`` gives 0-255 float tensors and the model normalises them
(``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD``). CLIP-ReID normalises in the data pipeline and
then erases a box with per-pixel standard-normal noise (timm's ``RandomErasing(mode="pixel")``),
so the noise is N(0, 1) *after* normalisation. :class:`NormalizedRandomErasing` does exactly
that on a 0-255 tensor: it normalises, lets timm erase, and writes the erased pixels back in
0-255 units, so the model sees timm's noise after its own normalisation.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torchvision.transforms as T
from fastreid.data.transforms import build_transforms
from fastreid.data.transforms.transforms import ToTensor
from timm.data.random_erasing import RandomErasing
from torch import Tensor

REA_MODES = ("pixel", "const")
_INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


class NormalizedRandomErasing:
    """timm's ``RandomErasing`` applied in normalised space to a (3, H, W) 0-255 image.

    With ``mode="pixel"`` an erased box holds ``mean + std * z``, ``z ~ N(0, 1)`` per pixel and
    channel, i.e. ``z`` once the model has normalised the image. Pixels outside the box are
    returned unchanged (bit for bit).

    Args:
        pixel_mean: per-channel mean of the model's normalisation (0-255 units).
        pixel_std: per-channel std of the model's normalisation (0-255 units).
        probability: chance that an image gets a box.
        mode: timm's fill mode, ``"pixel"`` (per-pixel noise) or ``"rand"`` (per-channel noise).
        max_count: boxes per image at most (CLIP-ReID: 1).
    """

    def __init__(self, pixel_mean: Sequence[float], pixel_std: Sequence[float], probability: float = 0.5,
                 mode: str = "pixel", max_count: int = 1):
        self.mean = torch.tensor([float(v) for v in pixel_mean]).view(-1, 1, 1)
        self.std = torch.tensor([float(v) for v in pixel_std]).view(-1, 1, 1)
        self.erase = RandomErasing(probability=probability, mode=mode, max_count=max_count, device="cpu")

    def __call__(self, image: Tensor) -> Tensor:
        normalised = (image - self.mean) / self.std
        before = normalised.clone()
        self.erase(normalised)  # in place
        erased = normalised != before
        if not erased.any():
            return image
        out = image.clone()
        out[erased] = (normalised * self.std + self.mean)[erased]
        return out

    def __repr__(self) -> str:
        return f"NormalizedRandomErasing({self.erase!r})"


def build_agreid_transforms(cfg, is_train: bool = True) -> T.Compose:
    """fastreid's transforms of ``cfg``, with two choices of CLIP-ReID's pipeline.

    - training, ``INPUT.REA.ENABLED`` with ``INPUT.REA.MODE pixel``: random erasing fills the box
      with per-pixel noise after normalisation (:class:`NormalizedRandomErasing`, timm's);
      ``const`` keeps fastreid's erasing with the constant ``INPUT.REA.VALUE``.
    - test (also the stage-1 feature cache): resize with ``INPUT.INTERPOLATION_TEST``
      (``bilinear``, CLIP-ReID's, or ``bicubic``, fastreid's).
    """
    if is_train:
        mode = cfg.INPUT.REA.MODE
        if mode not in REA_MODES:
            raise ValueError(f"INPUT.REA.MODE must be one of {REA_MODES}, got {mode!r}")
        if not (cfg.INPUT.REA.ENABLED and mode == "pixel"):
            return build_transforms(cfg, is_train=True)
        plain = cfg.clone()
        plain.defrost()
        plain.INPUT.REA.ENABLED = False
        transforms = build_transforms(plain, is_train=True).transforms
        # fastreid's erasing sits right after ToTensor; this one takes its place.
        at = next(i for i, t in enumerate(transforms) if isinstance(t, ToTensor)) + 1
        transforms.insert(at, NormalizedRandomErasing(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD,
                                                      probability=cfg.INPUT.REA.PROB))
        return T.Compose(transforms)
    name = cfg.INPUT.INTERPOLATION_TEST
    if name not in _INTERPOLATIONS:
        raise ValueError(f"INPUT.INTERPOLATION_TEST must be one of {sorted(_INTERPOLATIONS)}, got {name!r}")
    transforms = build_transforms(cfg, is_train=False).transforms
    for t in transforms:
        if isinstance(t, T.Resize):
            t.interpolation = _INTERPOLATIONS[name]
    return T.Compose(transforms)
