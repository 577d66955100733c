"""How well can SynthCLIP's image tower learn one attribute when it is trained on that alone?

Zero-shot accuracy (``tools/zero_shot.py``) says what a pretrained SynthCLIP knows; this says
what its image tower *could* know: the same open_clip image tower (random weights, optionally a
finer patch grid) trained with cross-entropy on one attribute of the caption corpus's training
images, scored on the held-out people's images that show it (the same visibility rule as the
zero-shot table, :func:`agreid.synthclip.attribute_targets`). When direct supervision does not
get past the pretrained model's zero-shot accuracy, the limit is what the tower sees, not what the
contrastive or auxiliary objective asks of it.

Images are decoded once into memory (uint8, about 24 kB each at 128x64); training draws batches
with replacement from a seeded generator, flips half of them, and uses AdamW at a rate that is a
cosine from the peak to 0 over the run times a linear warm-up factor.

    python tools/supervised_attribute.py --data datasets/SyntheticCaptions --attribute hat --steps 1500
    python tools/supervised_attribute.py --data datasets/SyntheticCaptions --attribute hat --patch-size 8

The held-out accuracy after every ``--eval-every`` steps is printed and written as JSON
(``--output``). A missing corpus or an unknown attribute or model ends with one line
``error: ...`` and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

DEFAULT_MODEL = "AGReID-Tiny-ViT"


def attribute_images(data: Path, csv_name: str, attribute: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 3, H, W), value indices (N,))`` of the images of ``csv_name`` that show
    ``attribute`` (:func:`agreid.synthclip.attribute_targets`' rule)."""
    from ..data.captions import read_captions
    from ..data.synthetic.schema import ATTRIBUTE_SCHEMA
    from ..synthclip import attribute_targets

    column = list(ATTRIBUTE_SCHEMA).index(attribute)
    paths = [path for path, _ in read_captions(data / csv_name, check_images=False)]
    targets = attribute_targets(data, paths)[:, column]
    keep = (targets >= 0).nonzero().flatten().tolist()
    if not keep:
        raise ValueError(f"no image of {data / csv_name} shows {attribute}")
    arrays = []
    for index in keep:
        with Image.open(paths[index]) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), targets[keep]


def build_image_tower(model_name: str, patch_size: Optional[int] = None) -> Tuple[nn.Module, int]:
    """open_clip's image tower of ``model_name`` (random weights), with ``patch_size`` in place of
    the config's when given; returns ``(tower, embedding width)``."""
    import open_clip
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    from ..synthclip import _check_model_name

    _check_model_name(model_name)
    config = open_clip.get_model_config(model_name)
    vision = dict(config["vision_cfg"])
    if patch_size is not None:
        size = vision["image_size"]
        height, width = (size, size) if isinstance(size, int) else size
        if patch_size <= 0 or height % patch_size or width % patch_size:
            raise ValueError(f"--patch-size {patch_size} must divide the image size {height}x{width}")
        vision["patch_size"] = patch_size
    return _build_vision_tower(config["embed_dim"], CLIPVisionCfg(**vision)), config["embed_dim"]


def _normalise(images: torch.Tensor) -> torch.Tensor:
    from ..synthclip import PIXEL_MEAN, PIXEL_STD

    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def accuracy(tower: nn.Module, head: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             batch_size: int = 512) -> float:
    """Share of ``images`` whose predicted value is the target (eval mode, no gradient)."""
    was_training = tower.training
    tower.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(targets), batch_size):
            logits = head(tower(_normalise(images[start:start + batch_size])))
            correct += int((logits.argmax(dim=1) == targets[start:start + batch_size]).sum())
    tower.train(was_training)
    return correct / len(targets)


def train_supervised(train: Tuple[torch.Tensor, torch.Tensor], held_out: Tuple[torch.Tensor, torch.Tensor],
                     num_values: int, *, model_name: str = DEFAULT_MODEL, patch_size: Optional[int] = None,
                     steps: int = 1500, batch_size: int = 128, lr: float = 1e-3, warmup_steps: int = 100,
                     weight_decay: float = 0.1, eval_every: int = 250, seed: int = 0,
                     log=print) -> List[Dict[str, float]]:
    """Train the image tower and a linear head on ``train``; the held-out accuracy every
    ``eval_every`` steps and at the end: ``[{"step", "accuracy", "loss", "seconds"}]``."""
    torch.manual_seed(seed)
    tower, width = build_image_tower(model_name, patch_size)
    head = nn.Linear(width, num_values)
    parameters = list(tower.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    images, targets = train
    history, start = [], time.perf_counter()
    tower.train()
    for step in range(1, steps + 1):
        # a linear warm-up factor times a cosine from lr to 0 over all the steps
        rate = lr * min(1.0, step / max(warmup_steps, 1)) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = rate
        index = torch.randint(len(targets), (batch_size,), generator=generator)
        batch = images[index]
        if torch.rand(1, generator=generator).item() < 0.5:
            batch = batch.flip(3)
        loss = F.cross_entropy(head(tower(_normalise(batch))), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % eval_every == 0 or step == steps:
            row = {"step": step, "accuracy": accuracy(tower, head, *held_out), "loss": loss.item(),
                   "seconds": time.perf_counter() - start}
            history.append(row)
            log(f"step {step}: training loss {row['loss']:.3f}, held-out accuracy {row['accuracy']:.3f} "
                f"({row['seconds']:.0f} s)")
    return history


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", required=True, help="caption corpus folder (captions.csv, captions_val.csv)")
    parser.add_argument("--attribute", required=True, help="a generator attribute, e.g. hat, bag, hair_color")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="open_clip model whose image tower is trained "
                                                               "(default %(default)s)")
    parser.add_argument("--patch-size", type=int, default=None, help="patch size instead of the model's")
    parser.add_argument("--steps", type=int, default=1500, help="default %(default)s")
    parser.add_argument("--batch-size", type=int, default=128, help="default %(default)s")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW peak rate (default %(default)s)")
    parser.add_argument("--eval-every", type=int, default=250, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="default %(default)s")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output", default=None, help="JSON file for the accuracies (default: none)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ..data.captions import CaptionFileError
    from ..data.synthetic.schema import ATTRIBUTE_SCHEMA

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    try:
        if args.attribute not in ATTRIBUTE_SCHEMA:
            raise ValueError(f"unknown attribute {args.attribute!r}: choose from {list(ATTRIBUTE_SCHEMA)}")
        train = attribute_images(data, "captions.csv", args.attribute)
        held_out = attribute_images(data, "captions_val.csv", args.attribute)
        values = ATTRIBUTE_SCHEMA[args.attribute]
        majority = float(np.bincount(held_out[1].numpy(), minlength=len(values)).max() / len(held_out[1]))
        print(f"{args.attribute}: {len(train[1])} training and {len(held_out[1])} held-out images show it; "
              f"held-out majority class {majority:.3f}")
        history = train_supervised(train, held_out, len(values), model_name=args.model, patch_size=args.patch_size,
                                   steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                   eval_every=args.eval_every, seed=args.seed)
    except (CaptionFileError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output:
        from ..serialization import write_text_atomically

        record = {"attribute": args.attribute, "model": args.model, "patch_size": args.patch_size,
                  "majority": majority, "history": history,
                  "invocation": "python tools/supervised_attribute.py " + " ".join(sys.argv[1:] if argv is None else argv)}
        write_text_atomically(json.dumps(record, indent=1) + "\n", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
