#!/usr/bin/env python
"""Draw rank lists: each query, then its top-k gallery matches (green = same id, red = not).

    python tools/visualize_ranklist.py --config-file logs/demo/agreid/config.yaml \
        --output logs/demo/ranklist.png MODEL.WEIGHTS logs/demo/agreid/model_final.pth

Gallery images of the query's identity seen by the query's camera are left out, as in the
evaluation protocol. Queries are the hardest ones first (lowest AP) unless ``--order first``.
"""
import argparse
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import agreid
from agreid.engine import AGReIDTrainer
from fastreid.utils.logger import setup_logger

TILE = (64, 128)
BORDER = 4


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--output", default="ranklist.png", help="PNG to write")
    parser.add_argument("--dataset", default="", help="test dataset (default: first of DATASETS.TESTS)")
    parser.add_argument("--num-queries", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--order", choices=["hardest", "first"], default="hardest")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args()


@torch.no_grad()
def extract(model, loader):
    """Features, pids, camids and paths of every image the loader yields."""
    feats, pids, camids, paths = [], [], [], []
    for batch in loader:
        feats.append(model(batch).float().cpu())
        pids.append(batch["targets"].cpu())
        camids.append(batch["camids"].cpu())
        paths.extend(batch["img_paths"])
    return torch.cat(feats), torch.cat(pids).numpy(), torch.cat(camids).numpy(), paths


def average_precision(matches: np.ndarray) -> float:
    """AP of one ranked list of 0/1 matches (0 when there is no match)."""
    hits = np.cumsum(matches)
    if hits[-1] == 0:
        return 0.0
    return float((matches * hits / np.arange(1, len(matches) + 1)).sum() / hits[-1])


def tile(path: str, color) -> Image.Image:
    """The image at ``path`` resized to a tile with a coloured border."""
    img = Image.open(path).convert("RGB").resize(TILE)
    framed = Image.new("RGB", (TILE[0] + 2 * BORDER, TILE[1] + 2 * BORDER), color)
    framed.paste(img, (BORDER, BORDER))
    return framed


def main():
    args = parse_args()
    setup_logger(name="fastreid")
    cfg = agreid.get_agreid_cfg(args.config_file, args.opts)
    model = AGReIDTrainer.build_trained_model(cfg)

    dataset = args.dataset or cfg.DATASETS.TESTS[0]
    loader, num_query = AGReIDTrainer.build_test_loader(cfg, dataset)
    feats, pids, camids, paths = extract(model, loader)
    feats = F.normalize(feats, dim=1)
    q, g = feats[:num_query], feats[num_query:]
    dist = (1 - q @ g.t()).numpy()
    q_pids, g_pids = pids[:num_query], pids[num_query:]
    q_cams, g_cams = camids[:num_query], camids[num_query:]

    rows = []
    for i in range(num_query):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        order = order[keep]
        matches = (g_pids[order] == q_pids[i]).astype(np.float64)
        rows.append((average_precision(matches), i, order[:args.top_k], matches[:args.top_k]))
    if args.order == "hardest":
        rows.sort(key=lambda r: r[0])
    rows = rows[:args.num_queries]

    w, h = TILE[0] + 2 * BORDER, TILE[1] + 2 * BORDER
    gap, label_h = 12, 16
    sheet = Image.new("RGB", ((args.top_k + 1) * w + gap, len(rows) * (h + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (ap, qi, top, matches) in enumerate(rows):
        y = r * (h + label_h)
        draw.text((2, y + 2), f"query {q_pids[qi]} cam {q_cams[qi]}  AP {ap:.2f}", fill="black")
        sheet.paste(tile(paths[qi], (60, 60, 200)), (0, y + label_h))
        for k, (gi, match) in enumerate(zip(top, matches)):
            color = (40, 170, 60) if match else (210, 40, 40)
            sheet.paste(tile(paths[num_query + gi], color), (gap + (k + 1) * w, y + label_h))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    sheet.save(args.output)
    logging.getLogger("fastreid").info("Rank lists of %d queries written to %s", len(rows), args.output)
    print(f"Rank-list picture: {args.output}")


if __name__ == "__main__":
    main()
