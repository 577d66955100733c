"""Prompt templates and the per-identity learnable tokens V (the attribute pseudo-labels).

A template is a sentence whose ``X`` words are learnable: each ``X`` is one BPE token whose
embedding is replaced by a learned vector ``V[k, j]`` of identity ``k``. Templates are data: the
named ones are below (see docs/METHOD.md for why each), and a config may give its own sentence.
"""
from __future__ import annotations

import re
from typing import Dict, NamedTuple, Tuple

import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import Tensor, nn

TEMPLATES: Dict[str, str] = {
    # CLIP-ReID's prompt.
    "default": "A photo of a X X X X person.",
    # CLIP-ReID's prompt with as many learnable tokens as template d (r = 10).
    "longer": "A photo of a X X X X X X X X X X person.",
    # No fixed word at all: as many tokens as CLIP-ReID's sentence, all learnable (r = 10).
    "random": "X X X X X X X X X X",
    # Attribute templates: learnable pairs dispersed after attribute words (ATPM's attributes).
    # a: body and clothing only (r = 6).
    "a": "A photo of a X X person wearing X X upper clothes and X X lower clothes.",
    # b: hair and shoes added (r = 10).
    "b": "A photo of a X X person with X X hair, wearing X X upper clothes, X X lower clothes and X X shoes.",
    # c: head-wear and carried objects instead of hair (r = 10).
    "c": "A photo of a X X person wearing a X X hat, X X upper clothes and X X lower clothes, carrying X X.",
    # d: this project's reading of the paper's description (r = 10); the paper does not give its wording.
    "d": "A photo of a X X person with X X hair, wearing X X upper clothes and X X lower clothes, carrying X X.",
    # Study controls, not from the paper: shaped exactly like d (29 tokens with start/end of text,
    # the X tokens at d's positions), only the fixed words around the slots differ.
    # d_known: every pair of slots before a garment noun of SynthCLIP's captions whose colour
    # SynthCLIP knows zero-shot (docs/SYNTHCLIP.md: upper and lower colour, shoes); no hair,
    # bag or build context. No full stop: the last slot pair needs its noun in that place.
    "d_known": "A photo of a X X top and X X bottoms, wearing X X upper clothes and X X lower clothes, in X X shoes",
    # d_filler: d's attribute words (hair, wearing, upper/lower clothes, carrying) replaced by
    # neutral fillers of the same token count; "A photo of a X X person" is kept, as in CLIP-ReID's.
    "d_filler": "A photo of a X X person with X X stuff, with X X some things and X X other things, with X X.",
}

# A learnable slot: the word X on its own (the tokenizer lower-cases, so x counts too).
_SLOT_WORD = re.compile(r"\b[Xx]\b")


class PromptTemplate(NamedTuple):
    """A tokenized template."""

    sentence: str
    token_ids: Tensor  # (context_length,) with start/end-of-text tokens, zero-padded
    slot_positions: Tensor  # (r,) positions of the learnable X tokens in token_ids


def parse_template(template: str, tokenizer: SimpleTokenizer) -> PromptTemplate:
    """Tokenize a named template or a sentence and find its learnable ``X`` tokens.

    Args:
        template: a key of :data:`TEMPLATES` or a sentence whose ``X`` words are learnable.
        tokenizer: CLIP's BPE tokenizer (``open_clip.get_tokenizer(model_name)``).

    Raises:
        ValueError: when the template has no ``X``, does not fit the context, or an ``X`` word
            is not exactly one token.
    """
    sentence = TEMPLATES.get(template, template)
    (slot_id,) = tokenizer.encode("X")
    num_tokens = len(tokenizer.encode(sentence)) + 2  # + start and end of text
    if num_tokens > tokenizer.context_length:
        raise ValueError(
            f"Prompt template {template!r} has {num_tokens} tokens; the text encoder takes "
            f"{tokenizer.context_length}."
        )
    token_ids = tokenizer([sentence])[0]
    slot_positions = torch.nonzero(token_ids == slot_id).flatten()
    num_slot_words = len(_SLOT_WORD.findall(sentence))
    if num_slot_words == 0:
        raise ValueError(
            f"Prompt template {template!r} has no learnable 'X' word: give a named template "
            f"({', '.join(TEMPLATES)}) or a sentence such as {TEMPLATES['d']!r}."
        )
    if len(slot_positions) != num_slot_words:
        raise ValueError(
            f"Prompt template {template!r}: {num_slot_words} 'X' words became {len(slot_positions)} "
            "'X' tokens; write each X as a separate word."
        )
    return PromptTemplate(sentence, token_ids, slot_positions)


class PromptLearner(nn.Module):
    """Prompt embeddings with per-identity learnable tokens spliced in at the template's X slots.

    Args:
        template: a key of :data:`TEMPLATES` or a sentence whose ``X`` words are learnable.
        num_ids: number of training identities.
        token_embedding: CLIP's (frozen) token embedding; used once, to embed the fixed words.
        tokenizer: CLIP's BPE tokenizer.
        init_std: std of the normal init of the learnable tokens.
    """

    def __init__(
        self,
        template: str,
        *,
        num_ids: int,
        token_embedding: nn.Embedding,
        tokenizer: SimpleTokenizer,
        init_std: float = 0.02,
    ):
        super().__init__()
        parsed = parse_template(template, tokenizer)
        self.sentence = parsed.sentence
        device = token_embedding.weight.device
        with torch.no_grad():
            template_embedding = token_embedding(parsed.token_ids.to(device))  # (context_length, width)
        self.register_buffer("token_ids", parsed.token_ids.to(device))
        self.register_buffer("slot_positions", parsed.slot_positions.to(device))
        self.register_buffer("template_embedding", template_embedding)
        num_slots, width = len(parsed.slot_positions), template_embedding.shape[-1]
        self.pseudo_labels = nn.Parameter(
            torch.empty(num_ids, num_slots, width, dtype=template_embedding.dtype, device=device)
        )
        nn.init.normal_(self.pseudo_labels, std=init_std)

    @property
    def num_learnable_tokens(self) -> int:
        """r: the number of learnable tokens of each identity."""
        return self.pseudo_labels.shape[1]

    @property
    def token_width(self) -> int:
        """Width of a token embedding."""
        return self.pseudo_labels.shape[2]

    def forward(self, pids: Tensor) -> Tuple[Tensor, Tensor]:
        """Prompts of the identities ``pids`` (B,).

        Returns:
            prompt embeddings (B, context_length, width) and their token ids (B, context_length).
        """
        batch = pids.shape[0]
        prompts = self.template_embedding.expand(batch, -1, -1).clone()
        prompts[:, self.slot_positions] = self.pseudo_labels[pids].to(prompts.dtype)
        return prompts, self.token_ids.expand(batch, -1)
