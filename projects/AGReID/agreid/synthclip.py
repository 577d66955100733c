"""SynthCLIP: contrastive pretraining of a small CLIP on the synthetic caption corpus, offline.

OpenAI's CLIP weights cannot be downloaded everywhere, and a CLIP with random weights knows no
words, so AG-ReID's attribute prompts mean nothing to it. This module pretrains an open_clip
model on :mod:`agreid.data.captions` with open_clip's own model, transforms, tokenizer and
loss (``open_clip.create_model_and_transforms``, ``open_clip.get_tokenizer``,
``open_clip.loss.ClipLoss``), and measures what it learned: zero-shot attribute classification
and image/text retrieval on held-out people. A pretraining-only auxiliary objective (an attribute
classifier on the pooled image embedding, or a caption decoder with open_clip's ``CoCaLoss``)
breaks the contrastive loss's symmetry for small attributes such as hair colour; it is
discarded, and the text tower learns words from captions only.

The output is an ordinary open_clip checkpoint of the CLIP towers: a float16 safetensors file
(what the repository ships, the record in its header) or ``{"state_dict": ..., "name": ...}`` plus
a ``synthclip`` record of how it was made: ``MODEL.BACKBONE.PRETRAIN_PATH FILE`` and
``open_clip.create_model(name, pretrained=FILE)`` both load it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss, CoCaLoss
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .data.captions import CAPTIONS_FILE, LABELS_FILE, VAL_CAPTIONS_FILE, CaptionFileError, is_visible, read_captions
from .data.synthetic import ATTRIBUTES_FILE, ATTRIBUTE_SCHEMA, MARKER_FILE
from .modeling import clip_loader as _clip_loader  # registers the project's open_clip model configs
from .serialization import (CheckpointFileError, is_safetensors_file, load_checkpoint_file, safetensors_metadata,
                            save_checkpoint_file, write_atomically)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_OUTPUT",
    "SHIPPED_CORPUS",
    "recipe_fingerprint",
    "save_synthclip",
    "shipped_path",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "PretrainConfig",
    "ZERO_SHOT_PROMPTS",
    "encode_images",
    "encode_texts",
    "inputs_fingerprint",
    "linear_probe_attributes",
    "load_synthclip",
    "pretrain",
    "read_synthclip_record",
    "retrieval_recall",
    "zero_shot_attributes",
    "zero_shot_prompts",
]

# The corpus the shipped SynthCLIP is pretrained on (tools/make_synthetic.py --preset pretrain --seed 0).
SHIPPED_CORPUS = ("pretrain", 0)
# The pixel normalisation of every config that fine-tunes from SynthCLIP (0.5/0.5, CLIP-ReID's).
PIXEL_MEAN = (0.5, 0.5, 0.5)
PIXEL_STD = (0.5, 0.5, 0.5)
RECORD_KEY = "synthclip"


@dataclass
class PretrainConfig:
    """The pretraining recipe (every field goes into the checkpoint's record and its fingerprint).

    Args:
        model: an open_clip model name (the project ships ``AGReID-Tiny-ViT``).
        epochs: passes over ``captions.csv``.
        batch_size: image-caption pairs per step (the contrastive batch).
        lr: AdamW peak learning rate, reached after ``warmup_steps`` linear steps, then cosine to 0.
        weight_decay: AdamW weight decay (not on gains, biases, embeddings or the logit scale).
        warmup_steps: linear warm-up steps.
        seed: seeds the weights, the order of the data and the augmentation.
        crop_scale: RandomResizedCrop area range (timm's, with the aspect ratio of the images kept).
        aux: the pretraining-only objective beside the contrastive loss that breaks its symmetry
            (see :class:`AttributeHead` and :class:`CaptionHead`): ``"attributes"`` (a cosine
            classifier from the pooled image embedding to the generator's attributes), ``"caption"`` (a
            small decoder that writes the caption from the pooled image embedding, open_clip's
            ``MultimodalTransformer`` and ``CoCaLoss``) or ``"none"`` (contrastive only). The head
            is discarded: the saved file holds the CLIP towers only.
        aux_weight: the auxiliary loss's weight at its start.
        aux_schedule: ``"constant"``, or ``"linear"`` (from ``aux_weight`` down to 0 at the last step).
        aux_attribute_weights: ``((attribute, weight), ...)``: the attribute objective's weight of
            each attribute named (the others 1), for attributes the image tower learns slowly.
        caption_layers: decoder blocks of the caption head.
    """

    model: str = "AGReID-Tiny-ViT"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 200
    seed: int = 0
    crop_scale: Tuple[float, float] = (0.8, 1.0)
    aux: str = "attributes"
    aux_weight: float = 10.0
    aux_schedule: str = "constant"
    aux_attribute_weights: Tuple[Tuple[str, float], ...] = (("hat", 4.0), ("bag", 2.0))
    caption_layers: int = 1

    def __post_init__(self):
        if self.aux not in AUX_OBJECTIVES:
            raise ValueError(f"unknown auxiliary objective aux={self.aux!r}: choose one of {list(AUX_OBJECTIVES)}")
        if self.aux_schedule not in AUX_SCHEDULES:
            raise ValueError(f"unknown aux_schedule {self.aux_schedule!r}: choose one of {list(AUX_SCHEDULES)}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")
        self.crop_scale = tuple(self.crop_scale)
        self.aux_attribute_weights = tuple((str(a), float(w)) for a, w in self.aux_attribute_weights)
        for attribute, weight in self.aux_attribute_weights:
            if attribute not in ATTRIBUTE_SCHEMA:
                raise ValueError(f"aux_attribute_weights: unknown attribute {attribute!r}: choose from "
                                 f"{list(ATTRIBUTE_SCHEMA)}")
            if weight < 0:
                raise ValueError(f"aux_attribute_weights: {attribute} has weight {weight}, must be >= 0")

    def aux_weight_at(self, step: int, total: int) -> float:
        """The auxiliary loss's weight at ``step`` of ``total``."""
        if self.aux == "none":
            return 0.0
        if self.aux_schedule == "linear":
            return self.aux_weight * max(0.0, 1.0 - step / max(total, 1))
        return self.aux_weight


AUX_OBJECTIVES = ("none", "attributes", "caption")
AUX_SCHEDULES = ("constant", "linear")
IGNORE = -100  # an attribute the image does not show (cross_entropy's ignore_index)


class PairDataset(Dataset):
    """Image-caption pairs: ``(image tensor, token ids)``, captions tokenised once up front."""

    def __init__(self, pairs: Sequence[Tuple[str, str]], transform, tokenizer):
        self.paths = [path for path, _ in pairs]
        self.tokens = tokenizer([caption for _, caption in pairs])  # (N, context_length)
        self.transform = transform
        # Per pair, what the auxiliary head learns (attribute indices, or caption ids); None for none.
        self.targets: Optional[Tensor] = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                pixels = self.transform(image.convert("RGB"))
        except OSError as error:
            raise OSError(f"cannot read image {path}: {error}") from error
        if self.targets is None:
            return pixels, self.tokens[index]
        return pixels, self.tokens[index], self.targets[index]


def attribute_targets(data: os.PathLike, paths: Sequence[str]) -> Tensor:
    """``(N, attributes)`` value indices (``ATTRIBUTE_SCHEMA`` order) of the people in ``paths``,
    ``IGNORE`` where the image does not show the attribute (``captions.is_visible``).

    Reads the corpus's ``labels.json`` (image -> person, hidden regions) and ``attributes.json``.
    """
    data = Path(data)
    labels_path, people_path = data / LABELS_FILE, data / ATTRIBUTES_FILE
    for path in (labels_path, people_path):
        if not path.is_file():
            raise CaptionFileError(f"{path} is missing: the attribute objective needs the caption corpus's "
                                   f"ground truth (make it with tools/make_synthetic.py --preset pretrain)")
    labels = json.loads(labels_path.read_text())
    people = json.loads(people_path.read_text())["identities"]
    targets = torch.full((len(paths), len(ATTRIBUTE_SCHEMA)), IGNORE, dtype=torch.long)
    for row, path in enumerate(paths):
        key = str(Path(path).relative_to(data))
        try:
            label = labels[key]
        except KeyError:
            raise CaptionFileError(f"{labels_path} has no entry for {key}") from None
        person = people[label["pid"]]
        for column, (attribute, values) in enumerate(ATTRIBUTE_SCHEMA.items()):
            if is_visible(attribute, person, label["regions"]):
                targets[row, column] = values.index(person[attribute])
    return targets


class AttributeHead(nn.Module):
    """A cosine classifier from the pooled image embedding to every attribute.

    Pretraining only (discarded when the file is written). Contrastive learning alone sits at a
    saddle for small attributes such as hair colour: while neither tower varies with a word, the
    gradient that would teach either is zero. Supervising the image embedding gives the image
    side a start, and the contrastive loss then teaches the text tower the words.

    The logits are ``scale`` times the cosine between the embedding and each value's weight
    vector: a plain linear head on a unit-length embedding starts with logits near 0 and weights
    that grow slowly, so for hundreds of steps it passes almost no gradient back to the tower.
    """

    def __init__(self, embed_dim: int, scale: float = 10.0, attribute_weights: Sequence[Tuple[str, float]] = ()):
        super().__init__()
        self.sizes = [len(values) for values in ATTRIBUTE_SCHEMA.values()]
        self.scale = scale
        weights = dict(attribute_weights)
        self.attribute_weights = [weights.get(attribute, 1.0) for attribute in ATTRIBUTE_SCHEMA]
        self.weight = nn.Parameter(torch.randn(sum(self.sizes), embed_dim) * embed_dim ** -0.5)

    def logits(self, image_features: Tensor) -> List[Tensor]:
        """Per attribute, ``(N, values)`` logits."""
        cosine = F.normalize(image_features.float(), dim=-1) @ F.normalize(self.weight, dim=-1).T
        return list((self.scale * cosine).split(self.sizes, dim=1))

    def forward(self, image_features: Tensor, targets: Tensor) -> Tensor:
        """Mean over the attributes shown in the batch of each one's weight times its cross-entropy
        on the images that show it (0 if none do)."""
        losses = []
        for column, attribute_logits in enumerate(self.logits(image_features)):
            target = targets[:, column]
            if (target != IGNORE).any():  # an all-ignored batch would give NaN
                losses.append(self.attribute_weights[column]
                              * F.cross_entropy(attribute_logits, target, ignore_index=IGNORE))
        # (nothing to learn from: a zero that still joins the graph, so backward() works)
        return torch.stack(losses).mean() if losses else self.weight.sum() * 0.0


class CaptionHead(nn.Module):
    """A small caption decoder that writes the caption from the pooled image embedding alone.

    open_clip's ``MultimodalTransformer`` (causal self-attention, cross-attention to the image)
    over a vocabulary renumbered to the corpus's own tokens (index 0 is padding, which
    ``CoCaLoss`` ignores), trained with open_clip's ``CoCaLoss``. It attends to one token, the
    projected pooled embedding, so every word it writes must be in that embedding. Pretraining
    only: discarded when the file is written.
    """

    def __init__(self, embed_dim: int, vocabulary: Tensor, context_length: int, width: int = 128,
                 layers: int = 1, heads: int = 4):
        super().__init__()
        from open_clip.transformer import MultimodalTransformer

        # vocabulary: the sorted token ids of the corpus, 0 (padding) first.
        self.register_buffer("vocabulary", vocabulary, persistent=False)
        self.image_projection = nn.Linear(embed_dim, width)
        self.token_embedding = nn.Embedding(len(vocabulary), width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.decoder = MultimodalTransformer(width=width, layers=layers, heads=heads, context_length=context_length,
                                             output_dim=len(vocabulary))
        # open_clip 3.3.0 leaves the decoder's output projection as torch.empty (uninitialised memory:
        # NaN or huge values from the first step) and its init_parameters() reads a self.transformer it
        # does not have, so it is initialised here as that method means to (normal, std width^-0.5).
        nn.init.normal_(self.decoder.text_projection, std=width ** -0.5)

    def compact(self, tokens: Tensor) -> Tensor:
        """Token ids renumbered into the corpus vocabulary (positions in ``vocabulary``)."""
        return torch.searchsorted(self.vocabulary, tokens)

    def forward(self, image_features: Tensor, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        """``(logits (N, L-1, V), labels (N, L-1))``: each position predicts the next token."""
        ids = self.compact(tokens)
        inputs, labels = ids[:, :-1], ids[:, 1:]
        text = self.token_embedding(inputs) + self.positional_embedding[:inputs.shape[1]]
        image = self.image_projection(image_features.float()).unsqueeze(1)
        return self.decoder(image, text), labels


def corpus_vocabulary(tokens: Tensor) -> Tensor:
    """The sorted distinct token ids of a tokenised corpus, padding (0) first."""
    return torch.unique(torch.cat([tokens.flatten(), torch.zeros(1, dtype=tokens.dtype)]))


def build_aux_head(config: "PretrainConfig", tokens: Tensor) -> Optional[nn.Module]:
    """The auxiliary head of ``config.aux`` (None for "none"), seeded from ``config.seed``."""
    if config.aux == "none":
        return None
    embed_dim = open_clip.get_model_config(config.model)["embed_dim"]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed + 7919)
    try:
        if config.aux == "attributes":
            return AttributeHead(embed_dim, attribute_weights=config.aux_attribute_weights)
        return CaptionHead(embed_dim, corpus_vocabulary(tokens), context_length=tokens.shape[1],
                           layers=config.caption_layers)
    finally:
        torch.random.set_rng_state(generator_state)


def _check_model_name(name: str) -> None:
    if name not in open_clip.list_models():
        project = sorted(p.stem for p in _clip_loader.MODEL_CONFIG_DIR.glob("*.json"))
        raise ValueError(f"unknown open_clip model {name!r}: the project's own are {project}; "
                         f"open_clip knows {len(open_clip.list_models())} more (open_clip.list_models()).")


def captions_csv(data: os.PathLike) -> Path:
    """The pretraining ``captions.csv`` of a corpus folder (or the CSV itself)."""
    data = Path(data)
    return data / CAPTIONS_FILE if data.is_dir() or not data.suffix else data


def inputs_fingerprint(data: os.PathLike, config: PretrainConfig) -> str:
    """A hash of everything the pretrained weights depend on: captions, corpus marker, model, recipe."""
    csv_path = captions_csv(data)
    read_captions(csv_path, check_images=False)  # a missing or malformed file is named here
    digest = hashlib.sha256()
    digest.update(csv_path.read_bytes())
    marker = csv_path.parent / MARKER_FILE
    if marker.is_file():
        digest.update(marker.read_bytes())
    digest.update(json.dumps(open_clip.get_model_config(config.model), sort_keys=True).encode())
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def recipe_fingerprint(config: Optional[PretrainConfig] = None, preset: str = SHIPPED_CORPUS[0],
                       seed: int = SHIPPED_CORPUS[1]) -> str:
    """A hash of the recipe as the code states it: model config, ``config``, and the corpus's
    preset, seed and generator versions (not its bytes, so it needs no generated data).

    The shipped file is named with it, and a test compares it with the one the file records: a
    change of recipe without a retrained file fails CI.
    """
    from .data.captions import CAPTION_PRESETS, CAPTIONS_VERSION
    from .data.synthetic import GENERATOR_VERSION

    config = config or PretrainConfig()
    _check_model_name(config.model)
    recipe = {"model": open_clip.get_model_config(config.model), "recipe": asdict(config),
              "corpus": {"preset": preset, "seed": seed, "config": asdict(CAPTION_PRESETS[preset]),
                         "captions_version": CAPTIONS_VERSION, "generator_version": GENERATOR_VERSION}}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]


def shipped_path(config: Optional[PretrainConfig] = None) -> str:
    """``pretrained/SynthCLIP-Tiny-<recipe fingerprint>.safetensors``: the file the repository ships."""
    return f"pretrained/SynthCLIP-Tiny-{recipe_fingerprint(config)}.safetensors"


def _corpus_recipe_fingerprint(csv_path: Path, config: PretrainConfig) -> Optional[str]:
    """:func:`recipe_fingerprint` of the corpus ``csv_path`` belongs to (None when it has no marker)."""
    marker = csv_path.parent / MARKER_FILE
    try:
        done = json.loads(marker.read_text())
        return recipe_fingerprint(config, done["preset"], done["seed"])
    except (OSError, ValueError, KeyError):
        return None


def read_synthclip_record(path: os.PathLike) -> Optional[Dict[str, Any]]:
    """The ``synthclip`` record of a pretrained file, or None (not a SynthCLIP file, or unreadable)."""
    try:
        if is_safetensors_file(os.fspath(path)):
            record = safetensors_metadata(os.fspath(path)).get(RECORD_KEY)
            return json.loads(record) if record else None
        checkpoint = load_checkpoint_file(path)
    except (OSError, CheckpointFileError, ValueError):
        return None
    return checkpoint.get(RECORD_KEY) if isinstance(checkpoint, dict) else None


def save_synthclip(state_dict: Dict[str, Tensor], record: Dict[str, Any], path: os.PathLike) -> None:
    """Write the CLIP towers to ``path`` atomically: a ``.safetensors`` file (float16, the record as
    JSON metadata) or a ``torch.save`` dict ``{"name", "state_dict", "synthclip"}`` otherwise."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import save

        tensors = {key: (value.half() if value.is_floating_point() else value).contiguous()
                   for key, value in state_dict.items()}
        data = save(tensors, metadata={"name": record["config"]["model"], RECORD_KEY: json.dumps(record)})
        write_atomically(path, lambda f: f.write(data))
    else:
        save_checkpoint_file({"name": record["config"]["model"], "state_dict": state_dict, RECORD_KEY: record}, path)


def _parameter_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """open_clip's training rule: no weight decay on gains, biases, embeddings and the logit scale."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
            or "embedding" in name or "token" in name
        (no_decay if exclude else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _lr_at(step: int, total: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(total - config.warmup_steps, 1)
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_model_and_transforms(model_name: str, crop_scale: Tuple[float, float] = (0.8, 1.0)):
    """open_clip's model (random init) and its train/eval transforms with SynthCLIP's normalisation.

    The train crop keeps the images' aspect ratio (a person is twice as tall as wide); open_clip's
    default crop assumes square images, so timm's transform is asked for (open_clip's ``use_timm``).
    """
    _check_model_name(model_name)
    image_size = open_clip.get_model_config(model_name)["vision_cfg"]["image_size"]
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    aspect = width / height
    # force_image_size as a tuple: open_clip's timm path cannot take the list a JSON config holds.
    return open_clip.create_model_and_transforms(
        model_name, pretrained=None, force_image_size=(height, width), image_mean=PIXEL_MEAN, image_std=PIXEL_STD,
        image_interpolation="bilinear", image_resize_mode="squash",
        aug_cfg={"use_timm": True, "scale": tuple(crop_scale), "ratio": (aspect * 0.9, aspect / 0.9),
                 "re_prob": 0.0})


def pretrain(data: os.PathLike, output: os.PathLike, config: PretrainConfig, *, device: str = "cpu",
             num_workers: int = 1, log_dir: Optional[str] = None, resume: bool = True,
             max_steps: Optional[int] = None, threads: Optional[int] = None) -> Dict[str, Any]:
    """Pretrain ``config.model`` on the pairs of ``data`` and write an open_clip checkpoint to ``output``.

    Progress is saved after every epoch to ``output + ".resume"`` (model, optimiser, step), which
    ``resume`` continues from when its fingerprint matches; the file is removed at the end.

    Args:
        data: the caption corpus folder (``captions.csv``) or a CSV file.
        output: the checkpoint to write.
        config: the recipe.
        device: "cpu" or "cuda" (AMP in float16 on CUDA).
        num_workers: data-loading processes.
        log_dir: TensorBoard folder (loss, learning rate, logit scale); None for none.
        resume: continue an interrupted run of the same inputs.
        max_steps: stop after this many steps in all (tests); the schedule still spans all epochs.
        threads: torch's CPU threads (on "cpu"); default: the cores left after the loader
            workers. On 2 cores, 2 threads beside a decoding worker ran 3x slower than 1 thread.

    Returns:
        The ``synthclip`` record written into the checkpoint.

    Raises:
        CaptionFileError: missing or malformed captions, or an image it names that is absent.
        ValueError: an unknown model name.
    """
    _check_model_name(config.model)
    csv_path = captions_csv(data)
    pairs = read_captions(csv_path)
    fingerprint = inputs_fingerprint(data, config)
    output = Path(output)
    state_path = output.with_name(output.name + ".resume")

    caller_threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) - num_workers))
    torch.manual_seed(config.seed)
    model, train_transform, _ = build_model_and_transforms(config.model, config.crop_scale)
    model.to(device)
    tokenizer = open_clip.get_tokenizer(config.model)
    dataset = PairDataset(pairs, train_transform, tokenizer)
    aux_head = build_aux_head(config, dataset.tokens)
    if config.aux == "attributes":
        dataset.targets = attribute_targets(csv_path.parent, dataset.paths)
    elif config.aux == "caption":
        dataset.targets = dataset.tokens
    if aux_head is not None:
        aux_head.to(device)
    steps_per_epoch = len(dataset) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{csv_path} has {len(dataset)} pairs, fewer than one batch of {config.batch_size}")
    total_steps = steps_per_epoch * config.epochs
    trained = nn.ModuleDict({"clip": model, **({"aux": aux_head} if aux_head is not None else {})})
    optimizer = torch.optim.AdamW(_parameter_groups(trained, config.weight_decay), lr=config.lr,
                                  betas=(0.9, 0.98), eps=1e-6)
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    # open_clip's losses: ClipLoss, or CoCaLoss (contrastive + captioning, padding ignored).
    loss_fn = CoCaLoss(caption_loss_weight=1.0, clip_loss_weight=1.0, pad_id=0) if config.aux == "caption" \
        else ClipLoss()

    start_epoch, step = 0, 0
    if resume and state_path.is_file():
        state = load_checkpoint_file(state_path)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["state_dict"])
            if aux_head is not None:
                aux_head.load_state_dict(state["aux_state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, step = state["epoch"], state["step"]
            logger.info("Resuming SynthCLIP pretraining from %s at epoch %d (step %d)", state_path, start_epoch, step)
        else:
            logger.warning("Ignoring %s: it belongs to other inputs (fingerprint %s, now %s)",
                           state_path, state.get("fingerprint"), fingerprint)

    writer = None
    if log_dir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir)
    logger.info("SynthCLIP: %s (%.2fM parameters) on %d pairs, %d epochs x %d steps of %d, device %s",
                config.model, sum(p.numel() for p in model.parameters()) / 1e6, len(dataset),
                config.epochs, steps_per_epoch, config.batch_size, device)
    started = time.perf_counter()
    loss_value = aux_value = float("nan")
    trained.train()
    for epoch in range(start_epoch, config.epochs):
        # Everything random in an epoch follows from (seed, epoch), so a resumed run is the same run:
        # the order (the generator), loader workers (seeded from it) and in-process transforms.
        epoch_seed = config.seed * 1000 + epoch
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                            num_workers=num_workers, generator=torch.Generator().manual_seed(epoch_seed))
        bar = tqdm(loader, desc=f"SynthCLIP epoch {epoch + 1}/{config.epochs}", dynamic_ncols=True, leave=False)
        for batch in bar:
            lr = _lr_at(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, tokens = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            aux_weight = config.aux_weight_at(step, total_steps)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                image_features, text_features, logit_scale = model(images, tokens)[:3]
                if config.aux == "caption":  # CoCaLoss returns both terms
                    logits, labels = aux_head(image_features, batch[2].to(device))
                    contrastive, aux_loss = loss_fn(image_features, text_features, logits.float(), labels, logit_scale)
                else:
                    contrastive = loss_fn(image_features, text_features, logit_scale)
                    aux_loss = aux_head(image_features, batch[2].to(device)) if aux_head is not None \
                        else torch.zeros((), device=images.device)
                loss = contrastive + aux_weight * aux_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"SynthCLIP pretraining: loss is {loss.item()} at step {step} (contrastive "
                                         f"{contrastive.item()}, {config.aux} {aux_loss.item()})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                # CLIP's clamp: the temperature never exceeds 100.
                model.logit_scale.clamp_(0, math.log(100))
            loss_value, aux_value = contrastive.item(), aux_loss.item()
            bar.set_postfix(loss=f"{loss_value:.3f}", aux=f"{aux_value:.3f}", lr=f"{lr:.2e}")
            if writer is not None:
                writer.add_scalar("synthclip/loss", loss_value, step)
                if aux_head is not None:
                    writer.add_scalar(f"synthclip/{config.aux}_loss", aux_value, step)
                    writer.add_scalar("synthclip/aux_weight", aux_weight, step)
                writer.add_scalar("synthclip/lr", lr, step)
                writer.add_scalar("synthclip/logit_scale", model.logit_scale.exp().item(), step)
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        logger.info("SynthCLIP epoch %d/%d: contrastive loss %.4f, %s loss %.4f, %.0f s", epoch + 1, config.epochs,
                    loss_value, config.aux, aux_value, time.perf_counter() - started)
        if max_steps is not None and step >= max_steps:
            break
        save_checkpoint_file({"fingerprint": fingerprint, "state_dict": model.state_dict(),
                              "aux_state_dict": aux_head.state_dict() if aux_head is not None else {},
                              "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                              "epoch": epoch + 1, "step": step}, state_path)
    if writer is not None:
        writer.close()

    record = {"fingerprint": fingerprint, "recipe_fingerprint": _corpus_recipe_fingerprint(csv_path, config),
              "config": {**asdict(config), "crop_scale": list(config.crop_scale)},
              "data": str(csv_path), "pairs": len(dataset), "steps": step, "final_loss": loss_value,
              "final_aux_loss": aux_value,
              "seconds": round(time.perf_counter() - started, 1), "device": device,
              "threads": torch.get_num_threads(),
              "image_mean": list(PIXEL_MEAN), "image_std": list(PIXEL_STD)}
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    save_synthclip(state_dict, record, output)
    state_path.unlink(missing_ok=True)
    torch.set_num_threads(caller_threads)
    logger.info("SynthCLIP written to %s (%d steps, final loss %.4f)", output, step, loss_value)
    return record


# ---------------------------------------------------------------------------------------------
# What it learned
# ---------------------------------------------------------------------------------------------

# One prompt per attribute value; "{}" takes the value's words.
ZERO_SHOT_PROMPTS: Dict[str, Tuple[str, Dict[str, str]]] = {
    "hair_color": ("a photo of a person with {} hair", {}),
    "hair_length": ("a photo of a person with {} hair", {}),
    "hat": ("a photo of a person wearing {}", {"none": "no hat", "cap": "a cap", "beanie": "a beanie"}),
    "upper_color": ("a photo of a person wearing {} upper clothes", {}),
    "upper_pattern": ("a photo of a person wearing a {} top", {"stripes": "striped", "checks": "checked"}),
    "upper_sleeve": ("a photo of a person wearing a {} top", {"short": "short-sleeved", "long": "long-sleeved"}),
    "bag": ("a photo of a person carrying {}", {"none": "no bag", "backpack": "a backpack",
                                                "handbag": "a handbag", "shoulder_bag": "a shoulder bag"}),
    "lower_color": ("a photo of a person wearing {} lower clothes", {}),
    "lower_length": ("a photo of a person wearing {}", {"skirt": "a skirt"}),
    "shoes": ("a photo of a person wearing {} shoes", {}),
    "body_shape": ("a photo of a {} person", {"average": "medium-built"}),
    "height": ("a photo of a {} person", {"average": "average-height"}),
}


def zero_shot_prompts(attribute: str) -> List[str]:
    """The prompts of ``attribute``, one per value in ``ATTRIBUTE_SCHEMA`` order."""
    template, words = ZERO_SHOT_PROMPTS[attribute]
    return [template.format(words.get(value, value)) for value in ATTRIBUTE_SCHEMA[attribute]]


@torch.no_grad()
def encode_images(model: nn.Module, paths: Sequence[str], transform, batch_size: int = 256,
                  device: str = "cpu") -> Tensor:
    """L2-normalised image embeddings (N, D) of ``paths``."""
    chunks = []
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start:start + batch_size]:
            with Image.open(path) as image:
                batch.append(transform(image.convert("RGB")))
        chunks.append(model.encode_image(torch.stack(batch).to(device), normalize=True).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 512,
                 device: str = "cpu") -> Tensor:
    """L2-normalised text embeddings (N, D) of ``texts``."""
    chunks = [model.encode_text(tokenizer(list(texts[i:i + batch_size])).to(device), normalize=True).float().cpu()
              for i in range(0, len(texts), batch_size)]
    return torch.cat(chunks)


@dataclass
class ZeroShotRow:
    """Zero-shot accuracy of one attribute on the held-out images where its body region is visible."""

    attribute: str
    num_values: int
    images: int
    accuracy: float
    majority: float
    # The least and most similar pair of the attribute's prompts (cosine of their text embeddings):
    # near 1.00 when the text tower does not tell the values' words apart.
    prompt_cosine_min: float = float("nan")
    prompt_cosine_max: float = float("nan")
    chance: float = field(init=False)

    def __post_init__(self):
        self.chance = 1.0 / self.num_values


def zero_shot_attributes(model: nn.Module, tokenizer, data: os.PathLike, transform, device: str = "cpu",
                         image_features: Optional[Tensor] = None) -> List[ZeroShotRow]:
    """Classify every attribute of the held-out people by the nearest prompt (one per value).

    An image counts for an attribute only when the image shows it (``captions.is_visible``: its
    body region not occluded, and hair not under a hat); build and height count on every image.
    """
    data = Path(data)
    paths = [path for path, _ in read_captions(data / VAL_CAPTIONS_FILE)]
    if image_features is None:
        image_features = encode_images(model, paths, transform, device=device)
    shown = _shown_attributes(data, paths)
    rows = []
    for attribute, values in ATTRIBUTE_SCHEMA.items():
        text_features = encode_texts(model, tokenizer, zero_shot_prompts(attribute), device=device)
        predicted = (image_features @ text_features.T).argmax(dim=1).numpy()
        keep, shown_values = shown[attribute]
        truth = np.asarray([values.index(value) for value in shown_values])
        majority = np.bincount(truth, minlength=len(values)).max() / len(truth)
        cosines = (text_features @ text_features.T)[~torch.eye(len(values), dtype=torch.bool)]
        rows.append(ZeroShotRow(attribute, len(values), len(truth), float((predicted[keep] == truth).mean()),
                                float(majority), float(cosines.min()), float(cosines.max())))
    return rows


def linear_probe_attributes(image_features: Tensor, data: os.PathLike, folds: int = 5) -> Dict[str, float]:
    """Cross-validated accuracy of the project's linear probe from image embeddings to each attribute.

    Tells whether the image tower holds an attribute at all, whatever the words: the same
    held-out images and visibility rule as :func:`zero_shot_attributes` (row i of
    ``image_features`` is row i of ``captions_val.csv``). The probe and its cross-validation are
    :func:`agreid.analysis.probes.probe_accuracy` (standardised logistic regression, stratified
    k-fold over the held-out people, shuffled with seed 0: a person's two images share a fold).
    """
    from .analysis.probes import probe_accuracy

    data = Path(data)
    paths = [path for path, _ in read_captions(data / VAL_CAPTIONS_FILE, check_images=False)]
    labels = json.loads((data / LABELS_FILE).read_text())
    people = np.asarray([labels[str(Path(path).relative_to(data))]["pid"] for path in paths])
    result = {}
    for attribute, (rows, truth) in _shown_attributes(data, paths).items():
        result[attribute] = probe_accuracy(image_features[rows].numpy(), np.asarray(truth), folds, groups=people[rows])
    return result


def _shown_attributes(data: Path, paths: Sequence[str]) -> Dict[str, Tuple[List[int], List[str]]]:
    """Per attribute, ``(indices into paths, true values)`` of the held-out images that show it
    (:func:`attribute_targets`' rule: ``captions.is_visible``)."""
    targets = attribute_targets(data, paths)
    shown = {}
    for column, (attribute, values) in enumerate(ATTRIBUTE_SCHEMA.items()):
        rows = (targets[:, column] != IGNORE).nonzero().flatten().tolist()
        shown[attribute] = (rows, [values[index] for index in targets[rows, column].tolist()])
    return shown


def retrieval_recall(image_features: Tensor, text_features: Tensor, ks: Sequence[int] = (1, 5)
                     ) -> Dict[str, float]:
    """Image->text and text->image Recall@k of matched pairs (row i of each is one pair).

    Ties count in the pair's favour, so a caption that is word for word another image's
    (identical text features) does not count against that pair.
    """
    similarity = image_features @ text_features.T  # (N, N)
    ranks_i2t = (similarity > similarity.diag().unsqueeze(1)).sum(dim=1)
    ranks_t2i = (similarity > similarity.diag().unsqueeze(0)).sum(dim=0)
    result = {}
    for k in ks:
        result[f"image_to_text_R@{k}"] = float((ranks_i2t < k).float().mean())
        result[f"text_to_image_R@{k}"] = float((ranks_t2i < k).float().mean())
    return result


def load_synthclip(path: os.PathLike, model_name: Optional[str] = None, device: str = "cpu"):
    """``(model, eval transform, tokenizer, record)`` of a pretrained file, through the project's loader."""
    record = read_synthclip_record(path) or {}
    name = model_name or record.get("config", {}).get("model")
    if not name:
        raise ValueError(f"{path} does not say which model it is: pass the model name (--model)")
    model = _clip_loader.create_clip(name, checkpoint_path=str(path)).to(device).eval()
    return model, eval_transform(name), open_clip.get_tokenizer(name), record


def eval_transform(model_name: str):
    """open_clip's evaluation transform of ``model_name`` with SynthCLIP's resize and normalisation."""
    return open_clip.image_transform(open_clip.get_model_config(model_name)["vision_cfg"]["image_size"],
                                     is_train=False, mean=PIXEL_MEAN, std=PIXEL_STD, resize_mode="squash",
                                     interpolation="bilinear")


__all__ += ["CaptionFileError", "PairDataset", "ZeroShotRow", "build_model_and_transforms", "captions_csv",
            "encode_images", "encode_texts", "eval_transform", "linear_probe_attributes", "load_synthclip", "zero_shot_prompts"]


# Where configs/Synthetic/*.yml look for SynthCLIP (relative to the repository root): the shipped file.
DEFAULT_OUTPUT = shipped_path()
