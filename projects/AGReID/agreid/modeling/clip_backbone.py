"""CLIP image encoder E_M with overlapping patches (OLP) and side information embedding (SIE)."""
from __future__ import annotations

import logging
from typing import NamedTuple, Optional, Tuple

import torch
from fastreid.modeling.backbones import BACKBONE_REGISTRY
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from timm.layers import resample_abs_pos_embed, trunc_normal_
from torch import Tensor, nn

from .clip_loader import load_clip

logger = logging.getLogger(__name__)

# The stride of a CLIP ResNet's layer3 map (stem /4, then layer2 and layer3 /2 each); layer4
# halves it once more unless its stride is set to 1 (MODEL.BACKBONE.LAST_STRIDE).
_RESNET_LAYER3_STRIDE = 16


class ImageFeatures(NamedTuple):
    """The three image features of CLIP-ReID (and AG-ReID).

    For a ViT: ``last`` is the CLS token after the second-to-last block, ``final`` the CLS token
    after the last block and ``ln_post``, ``proj`` is ``final @ proj`` (the CLIP embedding).
    For a ResNet: ``last`` and ``final`` are the average-pooled layer3 and layer4 maps and
    ``proj`` the attention-pool output (docs/METHOD.md).
    """

    last: Tensor  # (B, last_dim)
    final: Tensor  # (B, final_dim)
    proj: Tensor  # (B, embed_dim)


class CLIPImageEncoder(nn.Module):
    """CLIP's image tower for ReID: OLP and SIE on a ViT, re-sized attention pool on a ResNet.

    Args:
        visual: ``clip_model.visual`` of an open_clip CLIP model (``VisionTransformer`` or
            ``ModifiedResNet``), weights already loaded; it is modified in place.
        input_size: (height, width) of the input images, e.g. (256, 128).
        stride: patch-embedding stride of a ViT (OLP); its patch size means no overlap.
        num_cameras: rows of the SIE table; 0 disables SIE.
        sie_coe: factor of the SIE embedding (lambda of TransReID).
        last_stride: stride of a ResNet's layer4, 2 (CLIP's) or 1 (CLIP-ReID's: a 16x8 map
            for 256x128 images instead of 8x4). Ignored by ViTs.
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        input_size: Tuple[int, int],
        stride: int,
        num_cameras: int = 0,
        sie_coe: float = 1.0,
        last_stride: int = 2,
    ):
        super().__init__()
        self.visual = visual
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.sie_coe = float(sie_coe)
        self.camera_embedding: Optional[nn.Parameter] = None
        if isinstance(visual, VisionTransformer):
            self._adapt_vision_transformer(stride, num_cameras)
        elif isinstance(visual, ModifiedResNet):
            self._adapt_modified_resnet(stride, num_cameras, last_stride)
        else:
            raise TypeError(f"CLIPImageEncoder supports open_clip ViTs and ResNets, not {type(visual).__name__}")

    def _adapt_vision_transformer(self, stride: int, num_cameras: int) -> None:
        visual = self.visual
        if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise ValueError("CLIPImageEncoder needs a ViT that pools its CLS token (CLIP's own ViTs do).")
        patch_h, patch_w = visual.patch_size
        grid = ((self.input_size[0] - patch_h) // stride + 1, (self.input_size[1] - patch_w) // stride + 1)
        visual.conv1.stride = (stride, stride)
        # (num_tokens, width); the CLS position (prefix token) is kept, the patch grid resampled.
        position = resample_abs_pos_embed(
            visual.positional_embedding.detach().unsqueeze(0),
            new_size=list(grid),
            old_size=list(visual.grid_size),
            num_prefix_tokens=1,
            interpolation="bilinear",
            antialias=False,
        )[0]
        visual.positional_embedding = nn.Parameter(position)
        visual.grid_size = grid
        visual.image_size = self.input_size
        self.last_dim = self.final_dim = visual.transformer.width
        self.embed_dim = visual.proj.shape[1]
        if num_cameras > 0:
            self.camera_embedding = nn.Parameter(torch.zeros(num_cameras, self.final_dim))
            trunc_normal_(self.camera_embedding, std=0.02)
        logger.info(
            "CLIP ViT: input %s, patch %s stride %d -> grid %s (%d tokens), SIE cameras %d x %.2f",
            self.input_size, visual.patch_size, stride, grid, grid[0] * grid[1] + 1, num_cameras, self.sie_coe,
        )

    def _adapt_modified_resnet(self, stride: int, num_cameras: int, last_stride: int) -> None:
        visual = self.visual
        if num_cameras > 0 or stride != 16:
            logger.warning("CLIP ResNet: OLP (STRIDE %d) and SIE (%d cameras) apply to ViTs only; ignored.",
                           stride, num_cameras)
        if last_stride not in (1, 2):
            raise ValueError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2 for a CLIP ResNet, got {last_stride}")
        if last_stride == 1:
            # CLIP's ResNet downsamples with an average pool (in the block and on its shortcut)
            # before stride-1 convolutions: removing both pools gives stride 1, same weights.
            first = visual.layer4[0]
            first.avgpool = nn.Identity()
            first.downsample[0] = nn.Identity()
            first.stride = 1
        self.output_stride = _RESNET_LAYER3_STRIDE * last_stride
        old_side = visual.image_size // (_RESNET_LAYER3_STRIDE * 2)
        grid = (self.input_size[0] // self.output_stride, self.input_size[1] // self.output_stride)
        # The attention pool has a position embedding over the last feature map (+ its mean token).
        position = resample_abs_pos_embed(
            visual.attnpool.positional_embedding.detach().unsqueeze(0),
            new_size=list(grid),
            old_size=[old_side, old_side],
            num_prefix_tokens=1,
            interpolation="bilinear",
            antialias=False,
        )[0]
        visual.attnpool.positional_embedding = nn.Parameter(position)
        visual.image_size = self.input_size
        self.last_dim = visual.layer3[-1].bn3.num_features
        self.final_dim = visual.layer4[-1].bn3.num_features
        self.embed_dim = visual.output_dim
        logger.info("CLIP ResNet: input %s, last stride %d -> %s map for the attention pool",
                    self.input_size, last_stride, grid)

    @property
    def num_cameras(self) -> int:
        """Rows of the SIE table (0 when SIE is off)."""
        return 0 if self.camera_embedding is None else self.camera_embedding.shape[0]

    def camera_rows(self, camids: Tensor) -> Tensor:
        """SIE rows (B, width) of ``camids``; ids past the table (test cameras training never
        saw, TEST.UNSEEN_CAMERA mean) get the mean row, a camera-agnostic embedding."""
        table = self.camera_embedding
        rows = table[camids.clamp(max=table.shape[0] - 1)]
        return torch.where((camids >= table.shape[0]).unsqueeze(1), table.mean(dim=0, keepdim=True), rows)

    def forward(self, images: Tensor, camids: Optional[Tensor] = None, *, sie: bool = True) -> ImageFeatures:
        """Encode normalised images (B, 3, H, W).

        Args:
            images: normalised images of the size the encoder was built for.
            camids: (B,) camera ids; needed when SIE is on and ``sie`` is True.
            sie: add the camera embedding (False: encode as if SIE were off, e.g. for the
                stage-1 feature cache, as CLIP-ReID does).
        """
        if tuple(images.shape[-2:]) != self.input_size:
            raise ValueError(
                f"CLIPImageEncoder was built for {self.input_size} images (INPUT.SIZE_TRAIN), "
                f"got {tuple(images.shape[-2:])}: set INPUT.SIZE_TEST equal to INPUT.SIZE_TRAIN."
            )
        if isinstance(self.visual, ModifiedResNet):
            return self._forward_resnet(images)
        return self._forward_vit(images, camids, sie)

    def _forward_vit(self, images: Tensor, camids: Optional[Tensor], sie: bool) -> ImageFeatures:
        visual = self.visual
        x = visual.conv1(images)  # (B, width, grid_h, grid_w)
        x = x.flatten(2).transpose(1, 2)  # (B, grid_h * grid_w, width)
        cls_token = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, width)
        if self.camera_embedding is not None and sie:
            if camids is None:
                raise ValueError("SIE is on (MODEL.BACKBONE.SIE_CAMERA): pass the camera ids.")
            cls_token = cls_token + self.sie_coe * self.camera_rows(camids).unsqueeze(1).to(x.dtype)
        x = torch.cat([cls_token, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.ln_pre(visual.patch_dropout(x))
        num_blocks = len(visual.transformer.resblocks)
        x, (penultimate,) = visual.transformer.forward_intermediates(x, indices=[num_blocks - 2])
        final = visual.ln_post(x[:, 0])
        return ImageFeatures(last=penultimate[:, 0], final=final, proj=final @ visual.proj)

    def _forward_resnet(self, images: Tensor) -> ImageFeatures:
        # Intermediates are numbered stem=0, layer1..layer4=1..4.
        outputs = self.visual.forward_intermediates(images, indices=[3, 4])
        layer3, layer4 = outputs["image_intermediates"]
        return ImageFeatures(
            last=layer3.mean(dim=(2, 3)), final=layer4.mean(dim=(2, 3)), proj=outputs["image_features"]
        )


@BACKBONE_REGISTRY.register()
def build_clip_backbone(cfg) -> CLIPImageEncoder:
    """The CLIP image encoder of ``MODEL.BACKBONE.CLIP_NAME`` with OLP and SIE as configured."""
    num_cameras = 0
    if cfg.MODEL.BACKBONE.SIE_CAMERA:
        num_cameras = cfg.MODEL.BACKBONE.NUM_CAMERAS
        if num_cameras <= 0:
            raise ValueError(
                "MODEL.BACKBONE.SIE_CAMERA is on but MODEL.BACKBONE.NUM_CAMERAS is "
                f"{num_cameras}: set it to the number of training cameras (the trainer does)."
            )
    clip_model = load_clip(cfg)
    return CLIPImageEncoder(
        clip_model.visual,
        input_size=tuple(cfg.INPUT.SIZE_TRAIN),
        stride=cfg.MODEL.BACKBONE.STRIDE,
        num_cameras=num_cameras,
        sie_coe=cfg.MODEL.BACKBONE.SIE_COE,
        last_stride=cfg.MODEL.BACKBONE.LAST_STRIDE,
    )
