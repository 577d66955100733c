"""Heat maps of what one or two models look at (the paper's figure 3), with the grad-cam package.

    python tools/gradcam.py --weights logs/demo/clipreid/model_final.pth \\
        --second-weights logs/demo/agreid/model_final.pth --names CLIP-ReID,AG-ReID \\
        --images datasets/SyntheticOccluded/query --max-images 6 --output heatmaps.png

Each row: the image, then each model's heat map over it. The heat map's target is the cosine
similarity of the image's feature to a reference feature: the mean feature of ``--reference``
(an image, folder or list), or by default the mean feature of all the ``--images`` (so with
pictures of one person, what makes them look like that person); each model uses its own
features. The similarity is written under each map. ``--attributes`` (AG-ReID training
checkpoints, training images only) adds a strip of the attribute slots under each map: green
= kept, grey = dropped by the noise mask (similarity of E_A's prediction to the identity's
pseudo-labels, threshold over the drawn images as over a training batch). ``--weights`` and
``--config-file`` are as in tools/extract_features.py; ``--attributes`` needs the training
config (the checkpoint's ``config.yaml``) and ``DATASETS.ROOT`` to find the identities.
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..heatmaps import METHODS, HeatMapper, attribute_slot_mask, overlay
from ..predictor import Predictor, list_images, resolve_config
from ..visualization import save_picture

TILE = (64, 128)  # (width, height) of a drawn tile, whatever the model's input size
TEXT_H = 14
STRIP_H = 8
GAP = 6


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="training checkpoint or exported image_encoder.pth")
    parser.add_argument("--config-file", default="", help="config of a training checkpoint (default: config.yaml beside it)")
    parser.add_argument("--second-weights", default="", help="a second model drawn beside the first")
    parser.add_argument("--second-config", default="", help="config of the second model (default: beside it)")
    parser.add_argument("--names", default="", help="column titles, comma-separated")
    parser.add_argument("--images", required=True, help="image, folder or list file")
    parser.add_argument("--reference", default="", help="image, folder or list whose mean feature is the target")
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument("--method", default="gradcam", choices=sorted(METHODS))
    parser.add_argument("--camera", default="mean", help="SIE rule without camera ids: mean, zero or a camera index")
    parser.add_argument("--attributes", action="store_true", help="draw which attribute slots the noise mask drops")
    parser.add_argument("--output", default="heatmaps.png", help="PNG to write")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ... (both models)")
    return parser.parse_args(argv)


class Column:
    """One model's heat maps (and attribute masks) for the images."""

    def __init__(self, weights: str, config_file: str, args, paths: List[str], reference_paths: List[str]):
        predictor = Predictor(weights, config_file=config_file, opts=args.opts, camera=args.camera, device="cpu")
        images = predictor.load(paths)
        # First, as it may refuse the images (they must be training images).
        self.mask: Optional[torch.Tensor] = None
        if args.attributes:
            self.mask = slot_mask(weights, config_file, args.opts, paths, images)
        mapper = HeatMapper(predictor.encoder, args.method, args.camera)
        reference = mapper.features(predictor.load(reference_paths)).mean(dim=0)
        self.images = images
        self.heat = mapper(images, reference.expand(len(paths), -1))
        self.similarity = torch.nn.functional.cosine_similarity(mapper.features(images), reference[None], dim=1)


def slot_mask(weights: str, config_file: str, opts, paths: List[str], images: torch.Tensor) -> Optional[torch.Tensor]:
    """The noise mask (N, r) of an AG-ReID training checkpoint for training images ``paths``.

    None for a model without an attribute encoder (e.g. the CLIP-ReID baseline).
    """
    from ..engine import AGReIDTrainer

    cfg = resolve_config(weights, config_file, opts)
    if cfg is None:
        raise ValueError(f"--attributes needs the training config of {weights} (config.yaml beside it or --config-file).")
    cfg.MODEL.WEIGHTS = weights
    model = AGReIDTrainer.build_trained_model(cfg)
    if getattr(model, "heads", None) is None or not hasattr(model, "prompt_learner"):
        # E.g. the CLIP-ReID baseline beside AG-ReID: no attribute encoder, no strip.
        logging.getLogger(__name__).warning("%s has no attribute encoder: no attribute strip for it.", weights)
        return None
    if cfg.DATASETS.BAD_IMAGES == "error":
        # Training stopped on any bad image, so every one decoded: no need to decode them again.
        cfg.DATASETS.BAD_IMAGES = "off"
    # The trainer's own training set and relabelling (identity rows, SIE rows of the cameras).
    relabelled, _ = AGReIDTrainer.build_train_set(cfg)
    by_path = {os.path.abspath(path): (pid, camid) for path, pid, camid in relabelled.img_items}
    unknown = [p for p in paths if os.path.abspath(p) not in by_path]
    if unknown:
        raise ValueError(f"--attributes needs training images of {cfg.DATASETS.NAMES} (their identity picks the "
                         f"pseudo-labels); not training images: {', '.join(unknown[:3])}")
    identities = [relabelled.pid_dict[by_path[os.path.abspath(p)][0]] for p in paths]
    camids = torch.tensor([relabelled.cam_dict.get(by_path[os.path.abspath(p)][1], 0) for p in paths])
    if model.backbone.num_cameras == 0:
        camids = None
    return attribute_slot_mask(model, images, identities, camids)[1]


def _tile(picture: np.ndarray) -> Image.Image:
    return Image.fromarray(picture).resize(TILE, Image.BILINEAR)


def draw(paths: List[str], columns: List[Column], names: List[str]) -> Image.Image:
    """Rows of image | heat map per model, similarity and slot strip under each map."""
    tile_w, tile_h = TILE
    row_h = TEXT_H + tile_h + TEXT_H + (STRIP_H + 2 if any(c.mask is not None for c in columns) else 0)
    sheet = Image.new("RGB", ((1 + len(columns)) * (tile_w + GAP), TEXT_H + len(paths) * row_h), "white")
    pen = ImageDraw.Draw(sheet)
    for c, name in enumerate(["image", *names]):
        pen.text((c * (tile_w + GAP) + 2, 1), name, fill="black")
    for r, path in enumerate(paths):
        top = TEXT_H + r * row_h
        pen.text((2, top + 1), os.path.basename(path)[:10], fill="black")
        raw = columns[0].images[r].permute(1, 2, 0).clamp(0, 255).byte().numpy()
        sheet.paste(_tile(raw), (0, top + TEXT_H))
        for c, column in enumerate(columns, start=1):
            left = c * (tile_w + GAP)
            sheet.paste(_tile(overlay(column.images[r], column.heat[r])), (left, top + TEXT_H))
            pen.text((left + 2, top + TEXT_H + tile_h + 1), f"sim {column.similarity[r]:.2f}", fill="black")
            if column.mask is not None:
                slots = column.mask[r]
                width = tile_w / len(slots)
                y = top + TEXT_H + tile_h + TEXT_H
                for j, kept in enumerate(slots.tolist()):
                    pen.rectangle([left + j * width + 1, y, left + (j + 1) * width - 1, y + STRIP_H],
                                  fill=(40, 170, 60) if kept else (170, 170, 170))
    return sheet


def main(argv=None) -> int:
    """Compute and draw the heat maps; exit status 2 on bad input."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = list_images(args.images)[0][:args.max_images]
        reference_paths = list_images(args.reference)[0] if args.reference else paths
        models = [(args.weights, args.config_file)]
        if args.second_weights:
            models.append((args.second_weights, args.second_config))
        names = [n.strip() for n in args.names.split(",")] if args.names else [os.path.basename(w) for w, _ in models]
        if len(names) < len(models):
            raise ValueError(f"--names gives {len(names)} name(s) for {len(models)} models.")
        columns = [Column(w, c, args, paths, reference_paths) for w, c in models]
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_picture(draw(paths, columns, names[:len(models)]), args.output)
    print(f"Heat maps of {len(paths)} images ({args.method}, target: similarity to "
          f"{'the mean of ' + args.reference if args.reference else 'the mean feature of the images'}): {args.output}")
    return 0

