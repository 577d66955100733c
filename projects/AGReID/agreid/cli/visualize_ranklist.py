"""Draw rank lists of a registered dataset: each query, then its top-k matches per model.

    python tools/visualize_ranklist.py --config-file logs/demo/agreid/config.yaml \\
        --output logs/demo/ranklist.png MODEL.WEIGHTS logs/demo/agreid/model_final.pth

    # two models side by side (the paper's figure 1), queries where the second gains most:
    python tools/visualize_ranklist.py --config-file logs/demo/clipreid/config.yaml \\
        --second-config logs/demo/agreid/config.yaml --second-weights logs/demo/agreid/model_final.pth \\
        --names CLIP-ReID,AG-ReID --order improved --output compare.png \\
        MODEL.WEIGHTS logs/demo/clipreid/model_final.pth

Each match is marked ``1`` (same identity, green frame) or ``0`` (red frame) under its tile.
Gallery images of the query's identity seen by the query's camera are left out, as in the
evaluation protocol. ``--order``: ``mixed`` (default: best, middle and hardest queries in
turn, so the picture shows what works and what does not), ``hardest`` / ``best`` (lowest /
highest AP of the first model), ``improved`` (largest AP gain of the second model over the
first), ``random`` (``--seed``), ``first`` (dataset order). KEY VALUE overrides apply to the
first model's config; the second model's config gets ``MODEL.WEIGHTS`` from ``--second-weights``.
"""
import argparse
import logging
import sys
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from fastreid.utils.logger import setup_logger

from ..config import get_agreid_cfg
from ..engine import AGReIDTrainer
from ..visualization import RankedImage, RankPanel, RankRow, draw_rank_rows, save_picture

ORDERS = ("mixed", "hardest", "best", "improved", "random", "first")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="config of the (first) model")
    parser.add_argument("--output", default="ranklist.png", help="PNG to write")
    parser.add_argument("--dataset", default="", help="test dataset (default: first of DATASETS.TESTS)")
    parser.add_argument("--num-queries", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--order", choices=ORDERS, default="mixed")
    parser.add_argument("--seed", type=int, default=0, help="for --order random")
    parser.add_argument("--second-config", default="", metavar="FILE",
                        help="config of a second model drawn beside the first (default: --config-file)")
    parser.add_argument("--second-weights", default="", help="checkpoint of the second model")
    parser.add_argument("--names", default="", help="panel titles, comma-separated (default: model 1,model 2)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (first model)")
    return parser.parse_args(argv)


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
    if len(hits) == 0 or hits[-1] == 0:
        return 0.0
    return float((matches * hits / np.arange(1, len(matches) + 1)).sum() / hits[-1])


class Ranking:
    """One model's ranked galleries: per query, AP, top-k gallery indices and their 0/1 matches."""

    def __init__(self, cfg, dataset: str, top_k: int):
        model = AGReIDTrainer.build_trained_model(cfg)
        loader, num_query = AGReIDTrainer.build_test_loader(cfg, dataset)
        feats, pids, camids, self.paths = extract(model, loader)
        feats = F.normalize(feats, dim=1)
        self.num_query = num_query
        self.q_pids, g_pids = pids[:num_query], pids[num_query:]
        self.q_cams, g_cams = camids[:num_query], camids[num_query:]
        dist = (1 - feats[:num_query] @ feats[num_query:].t()).numpy()
        self.ap, self.top, self.matches = [], [], []
        for i in range(num_query):
            order = np.argsort(dist[i], kind="stable")
            order = order[~((g_pids[order] == self.q_pids[i]) & (g_cams[order] == self.q_cams[i]))]
            matches = g_pids[order] == self.q_pids[i]
            self.ap.append(average_precision(matches.astype(np.float64)))
            self.top.append(order[:top_k])
            self.matches.append(matches[:top_k])
        self.ap = np.asarray(self.ap)

    def panel(self, query: int, title: str) -> RankPanel:
        """The drawn top-k of ``query``."""
        images = [RankedImage(self.paths[self.num_query + g], bool(m)) for g, m in zip(self.top[query], self.matches[query])]
        return RankPanel(f"{title}  AP {self.ap[query]:.2f}", images)


def choose_queries(order: str, ap: np.ndarray, ap_second: Optional[np.ndarray], count: int, seed: int) -> List[int]:
    """Indices of the ``count`` queries to draw under ``order`` (see the module docstring)."""
    count = min(count, len(ap))
    by_ap = np.argsort(ap, kind="stable")  # hardest first
    if order == "first":
        return list(range(count))
    if order == "hardest":
        return by_ap[:count].tolist()
    if order == "best":
        return by_ap[::-1][:count].tolist()
    if order == "random":
        return np.random.default_rng(seed).choice(len(ap), count, replace=False).tolist()
    if order == "improved":
        if ap_second is None:
            raise ValueError("--order improved compares two models: give --second-weights.")
        return np.argsort(-(ap_second - ap), kind="stable")[:count].tolist()
    # mixed: best, middle, hardest, second best, ... without repeats.
    picks: List[int] = []
    middle = len(by_ap) // 2
    sources = [by_ap[::-1].tolist(), by_ap[middle:].tolist() + by_ap[:middle][::-1].tolist(), by_ap.tolist()]
    while len(picks) < count:
        for source in sources:
            candidate = next((q for q in source if q not in picks), None)
            if candidate is not None and len(picks) < count:
                picks.append(candidate)
    return picks


def main(argv=None) -> int:
    """Rank the test set with each model and draw the chosen queries; exit status 2 on bad input."""
    args = parse_args(argv)
    setup_logger(name="fastreid")
    names = [n.strip() for n in args.names.split(",")] if args.names else ["model 1", "model 2"]
    try:
        cfg = get_agreid_cfg(args.config_file, args.opts)
        dataset = args.dataset or cfg.DATASETS.TESTS[0]
        rankings = [Ranking(cfg, dataset, args.top_k)]
        if args.second_config and not args.second_weights:
            raise ValueError("--second-config needs --second-weights (the second model's checkpoint).")
        if args.second_weights:
            second_cfg = get_agreid_cfg(
                args.second_config or args.config_file,
                ["DATASETS.ROOT", cfg.DATASETS.ROOT, "MODEL.WEIGHTS", args.second_weights])
            second = Ranking(second_cfg, dataset, args.top_k)
            if second.paths != rankings[0].paths:
                raise ValueError(f"the two models' test sets of {dataset} differ (check DATASETS.ROOT).")
            rankings.append(second)
        if len(names) < len(rankings):
            raise ValueError(f"--names gives {len(names)} name(s) for {len(rankings)} models.")
        queries = choose_queries(args.order, rankings[0].ap, rankings[1].ap if len(rankings) > 1 else None,
                                 args.num_queries, args.seed)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = rankings[0]
    rows = [RankRow(first.paths[q], f"query {first.q_pids[q]} cam {first.q_cams[q]}",
                    [ranking.panel(q, name) for ranking, name in zip(rankings, names)]) for q in queries]
    save_picture(draw_rank_rows(rows), args.output)
    logging.getLogger("fastreid").info("Rank lists of %d queries (%s) written to %s", len(rows), args.order, args.output)
    print(f"Rank-list picture: {args.output}  (mean AP {', '.join(f'{n} {r.ap.mean():.3f}' for n, r in zip(names, rankings))})")
    return 0

