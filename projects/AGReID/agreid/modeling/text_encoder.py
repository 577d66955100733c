"""CLIP text encoder E_T over prompt embeddings (CoOp style): frozen in both stages."""
from __future__ import annotations

from open_clip.model import CLIP
from open_clip.transformer import text_global_pool
from torch import Tensor, nn


class TextEncoder(nn.Module):
    """CLIP's text transformer applied to token *embeddings*, so prompts can hold learned tokens.

    The prompt feature is the end-of-text token's output after ``ln_final``, times
    ``text_projection``. Every parameter is frozen; gradients still flow to the input embeddings.

    Args:
        clip_model: an open_clip ``CLIP`` model; its text modules are shared, not copied.
    """

    def __init__(self, clip_model: CLIP):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.requires_grad_(False)

    @property
    def embed_dim(self) -> int:
        """Width of the text feature (the CLIP embedding dimension)."""
        return self.text_projection.shape[1]

    def forward(self, prompt_embeddings: Tensor, token_ids: Tensor) -> Tensor:
        """Encode prompts.

        Args:
            prompt_embeddings: (B, context_length, width) token embeddings.
            token_ids: (B, context_length) token ids; the end-of-text token has the largest id.

        Returns:
            (B, embed_dim) text features, not normalised.
        """
        cast_dtype = self.transformer.get_cast_dtype()
        length, attn_mask = prompt_embeddings.shape[1], self.attn_mask
        if attn_mask is not None:
            # Causal attention: no token after the last end-of-text token can change any
            # end-of-text output, so the padding is not computed (2-3x less work for a prompt).
            length = int(token_ids.argmax(dim=-1).max()) + 1
            attn_mask = attn_mask[:length, :length]
        x = prompt_embeddings[:, :length].to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        x = self.transformer(x, attn_mask=attn_mask)
        x = self.ln_final(x)  # (B, length, width)
        x = text_global_pool(x, token_ids[:, :length], pool_type="argmax")  # (B, width)
        return x @ self.text_projection
