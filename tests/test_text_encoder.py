"""The CLIP text encoder over token embeddings, against open_clip's own encode_text."""
import open_clip
import torch

import agreid.modeling  # noqa: F401  (registers the tiny CLIP config)
from agreid.modeling.text_encoder import TextEncoder


def test_equals_open_clip_encode_text_on_prompts_of_different_lengths():
    torch.manual_seed(0)
    clip = open_clip.create_model("AGReID-Tiny-ViT").eval()
    tokens = open_clip.get_tokenizer("AGReID-Tiny-ViT")([
        "A photo of a person.",
        "A photo of a tall person with long black hair, wearing a red striped shirt and blue jeans.",
        "X",
    ])
    expected = clip.encode_text(tokens)  # open_clip runs all context positions
    embeddings = clip.token_embedding(tokens).detach().requires_grad_(True)
    ours = TextEncoder(clip)(embeddings, tokens)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    ours.sum().backward()
    assert embeddings.grad is not None and embeddings.grad[:, 30:].abs().sum() == 0
    assert all(not p.requires_grad for p in TextEncoder(clip).parameters())
