"""Attribute encoder E_A: one image feature -> r predicted attribute tokens (training only)."""
from __future__ import annotations

import open_clip
import torch
from fastreid.config import configurable
from fastreid.modeling.heads import REID_HEADS_REGISTRY
from torch import Tensor, nn

from .prompts import parse_template


@REID_HEADS_REGISTRY.register()
class AttributeHead(nn.Module):
    """E_A of AG-ReID: predicts the r attribute tokens ``A = [a_1..a_r]`` of an image.

    The image feature ``f_proj`` is projected to ``dim`` and prepended to r learned query
    embeddings; a pre-norm transformer encoder mixes them and the r query outputs are projected to
    the token-embedding width. With ViT-B/16 widths (512 -> 512), r = 10 and the defaults
    (dim 256, 8 heads, ffn 704, 4 layers) it has about 2.76M parameters, the paper's figure.

    Args:
        embed_dim: width of the input image feature (CLIP's embedding dimension).
        token_width: width of a predicted token (CLIP's token-embedding width).
        num_slots: r, the number of learnable tokens of the prompt template.
        dim: width inside the encoder.
        num_heads: attention heads of each layer.
        ffn_dim: hidden width of each layer's MLP.
        num_layers: transformer encoder layers.
    """

    @configurable
    def __init__(
        self,
        *,
        embed_dim: int,
        token_width: int,
        num_slots: int,
        dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 704,
        num_layers: int = 4,
    ):
        super().__init__()
        self.num_slots = num_slots
        self.input_proj = nn.Linear(embed_dim, dim)
        self.queries = nn.Parameter(nn.init.normal_(torch.empty(num_slots, dim), std=0.02))
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=ffn_dim, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        self.output_proj = nn.Linear(dim, token_width)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Widths from the open_clip model config, r from the prompt template, sizes from MODEL.ATTR."""
        model_cfg = open_clip.get_model_config(cfg.MODEL.BACKBONE.CLIP_NAME)
        tokenizer = open_clip.get_tokenizer(cfg.MODEL.BACKBONE.CLIP_NAME)
        return {
            "embed_dim": model_cfg["embed_dim"],
            "token_width": model_cfg["text_cfg"]["width"],
            "num_slots": len(parse_template(cfg.MODEL.PROMPT.TEMPLATE, tokenizer).slot_positions),
            "dim": cfg.MODEL.ATTR.DIM,
            "num_heads": cfg.MODEL.ATTR.NUM_HEADS,
            "ffn_dim": cfg.MODEL.ATTR.FFN_DIM,
            "num_layers": cfg.MODEL.ATTR.NUM_LAYERS,
        }

    def forward(self, image_features: Tensor) -> Tensor:
        """Predict attribute tokens (B, r, token_width) from image features (B, embed_dim)."""
        image_token = self.input_proj(image_features).unsqueeze(1)  # (B, 1, dim)
        queries = self.queries.unsqueeze(0).expand(image_features.shape[0], -1, -1)  # (B, r, dim)
        tokens = self.encoder(torch.cat([image_token, queries], dim=1))  # (B, 1 + r, dim)
        return self.output_proj(tokens[:, 1:])
