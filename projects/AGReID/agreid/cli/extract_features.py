"""Features of your own images: safetensors file of features + CSV of the image paths.

    python tools/extract_features.py --weights logs/occduke/agreid/model_final.pth \\
        --images my_crops/ --output feats.safetensors

writes ``feats.safetensors`` (tensor ``features``, N x D, L2-normalised, row i = line i of the
CSV; ``camids`` too when the list gave them) and ``feats.csv`` (``index,path[,camid]``).
``--weights`` is a training checkpoint (its config is ``--config-file``, else the one embedded
in the checkpoint, else ``config.yaml`` beside it) or an exported ``image_encoder.safetensors``.
``--images`` is a folder (recursive), one image, or a list file (one path per line, or a CSV
with ``path`` and optional ``camid``). Every image is decoded once before the model is read:
images that cannot be are all named in one error, or left out with a warning each under
``--skip-bad``. Without camera ids, SIE uses ``--camera`` (default ``mean``: the mean camera
embedding; ``zero``: no camera term; or a training camera index). See docs/DEPLOY.md.

Read the features back with ``safetensors.torch.load_file("feats.safetensors")["features"]``.
"""
import argparse
import csv
import json
import logging
import os
import sys

import torch
from safetensors.torch import save_file

from ..predictor import Predictor, check_images, list_images

FORMAT = "agreid-features"


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="training checkpoint or exported image_encoder.pth")
    parser.add_argument("--config-file", default="",
                        help="config of a training checkpoint (default: the one it embeds, else config.yaml beside it)")
    parser.add_argument("--images", required=True, help="folder, image, or list file (paths; or CSV path[,camid])")
    parser.add_argument("--output", required=True, help="features file to write, e.g. feats.safetensors")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out images that cannot be decoded (a warning names each) instead of stopping")
    parser.add_argument("--camera", default="mean", help="SIE rule without camera ids: mean, zero or a camera index")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0, help="image-decoding processes")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser.parse_args(argv)


def csv_path(features_path: str) -> str:
    """The CSV written beside a features file (same name, ``.csv``)."""
    return os.path.splitext(features_path)[0] + ".csv"


def write_features(path: str, features: torch.Tensor, paths, camids, metadata: dict) -> str:
    """Write ``features`` (+ camids) to ``path`` and the path list to its CSV; returns the CSV path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tensors = {"features": features.contiguous()}
    if camids is not None:
        tensors["camids"] = torch.as_tensor(camids, dtype=torch.long)
    save_file(tensors, path, metadata={key: str(value) for key, value in metadata.items()})
    table = csv_path(path)
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "path"] + (["camid"] if camids is not None else []))
        for index, image in enumerate(paths):
            writer.writerow([index, image] + ([camids[index]] if camids is not None else []))
    return table


def main(argv=None) -> int:
    """Extract and write the features; exit status 2 with one message on bad input."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths, camids = list_images(args.images)
        # Before the model is read: every bad file named at once, not one per run.
        paths, camids = check_images(paths, camids, skip_bad=args.skip_bad, what=f"images of {args.images}",
                                     hint="fix or remove them, or pass --skip-bad to leave them out")
        predictor = Predictor(args.weights, config_file=args.config_file, opts=args.opts, camera=args.camera,
                              device=args.device, batch_size=args.batch_size, num_workers=args.num_workers,
                              progress=True)
        features = predictor(paths, camids)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metadata = {
        "format": FORMAT,
        "weights": args.weights,
        "camera_rule": "per-image camids" if camids is not None else args.camera,
        "input_size": json.dumps(list(predictor.input_size)),
        "num_images": len(paths),
    }
    table = write_features(args.output, features, paths, camids, metadata)
    print(f"{len(paths)} images -> {tuple(features.shape)} features ({predictor.describe()})")
    print(f"features: {args.output}\npaths:    {table}")
    return 0

