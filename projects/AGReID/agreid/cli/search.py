"""Search a gallery of your own images for the people in query images (top-k CSV + picture).

    python tools/search.py --weights logs/occduke/agreid/model_final.pth \\
        --gallery my_gallery/ --query person.jpg --top-k 10 --output search_out/

writes ``search_out/results.csv`` (``query,rank,gallery,score``, score = cosine similarity)
and ``search_out/ranklist.png`` (each query, then its top-k with scores). Gallery features are
cached in ``search_out/gallery_features.safetensors`` (``--cache`` to put them elsewhere) and
recomputed when the gallery's files (names, sizes, modification times), camera ids, the weights
or the camera rule change, and (with a warning) when the cache does not hold one feature row
per gallery image, for the same images in the same order. Every query image, and every gallery
image the cache does not hold, is decoded once before the model is read. The index is faiss's exact ``IndexFlatIP`` on L2-normalised features
(cosine similarity), on every GPU faiss sees, else on the CPU. ``--weights``, ``--config-file``
and ``--camera`` are as in tools/extract_features.py.
"""
import argparse
import csv
import hashlib
import json
import logging
import os
import sys
from typing import List, Sequence, Tuple

import faiss
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..predictor import Predictor, check_images, list_images
from ..visualization import RankedImage, RankPanel, RankRow, draw_rank_rows, save_picture

CACHE_FILE = "gallery_features.safetensors"
logger = logging.getLogger("agreid.search")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="training checkpoint or exported image_encoder.pth")
    parser.add_argument("--config-file", default="",
                        help="config of a training checkpoint (default: the one it embeds, else config.yaml beside it)")
    parser.add_argument("--gallery", required=True, help="gallery folder (recursive) or list file")
    parser.add_argument("--query", required=True, help="query image, folder or list file")
    parser.add_argument("--top-k", type=int, default=10, help="matches per query")
    parser.add_argument("--output", default="search_out", help="folder for results.csv and ranklist.png")
    parser.add_argument("--cache", default="", help=f"gallery feature cache (default: OUTPUT/{CACHE_FILE})")
    parser.add_argument("--num-queries-drawn", type=int, default=8, help="queries in the picture")
    parser.add_argument("--camera", default="mean", help="SIE rule without camera ids: mean, zero or a camera index")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)
    # Checked before anything is read: faiss would stop on them with a bare AssertionError.
    for option, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size)):
        if value < 1:
            parser.error(f"{option} must be at least 1, got {value}")
    if args.num_queries_drawn < 0:
        parser.error(f"--num-queries-drawn must be at least 0, got {args.num_queries_drawn}")
    return args


def fingerprint(paths: Sequence[str], camids, weights: str, camera: str) -> str:
    """A hash of what the gallery features depend on: the files, their camera ids, the weights
    and the camera rule."""
    digest = hashlib.sha256()
    for path in [weights, *paths]:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(f"camera={camera}\ncamids={None if camids is None else list(camids)}".encode())
    return digest.hexdigest()


def read_cache(cache: str, key: str, paths: Sequence[str]):
    """The features in ``cache`` if it was written for fingerprint ``key`` and holds one finite
    row per image of ``paths``, listed for those images in that order; else None (logged)."""
    if not os.path.isfile(cache):
        return None
    try:
        with safe_open(cache, framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("fingerprint") != key:
                logger.info("Gallery, weights or camera rule changed since %s was written: recomputing", cache)
                return None
            features = handle.get_tensor("features")
        listed = json.loads(metadata.get("paths", "null"))
    except (SafetensorError, OSError, ValueError) as error:
        logger.warning("Ignoring unreadable gallery cache %s (%s): recomputing", cache, error)
        return None
    # The fingerprint only says what the cache was written for, not that it holds it all.
    if features.dim() != 2 or features.shape[0] != len(paths):
        logger.warning("Gallery cache %s holds %s feature rows for %d gallery images: recomputing", cache,
                       features.shape[0] if features.dim() else 0, len(paths))
        return None
    if not isinstance(listed, list) or [os.path.abspath(str(p)) for p in listed] != [os.path.abspath(p) for p in paths]:
        logger.warning("Gallery cache %s lists other images than the %d of the gallery: recomputing", cache, len(paths))
        return None
    if not torch.isfinite(features).all():
        logger.warning("Gallery cache %s holds NaN/Inf features: recomputing", cache)
        return None
    return features


def gallery_features(predictor: Predictor, paths: List[str], camids, cache: str, key: str,
                     cached=None) -> Tuple[torch.Tensor, bool]:
    """The gallery's features: ``cached`` (from :func:`read_cache`) when they fit the predictor,
    else computed and written to ``cache``. Returns ``(features, from_cache)``."""
    if cached is not None:
        if cached.shape[1] == predictor.feature_dim:
            return cached, True
        logger.warning("Gallery cache %s holds %d-d features, the model gives %d-d: recomputing", cache,
                       cached.shape[1], predictor.feature_dim)
    features = predictor(paths, camids)
    os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
    save_file({"features": features.contiguous()}, cache,
              metadata={"fingerprint": key, "paths": json.dumps(paths)})
    return features, False


def build_index(features: torch.Tensor) -> faiss.Index:
    """An exact inner-product index of L2-normalised ``features`` (cosine), on GPUs when faiss has them."""
    matrix = np.ascontiguousarray(features.numpy(), dtype=np.float32)
    faiss.normalize_L2(matrix)
    index = faiss.IndexFlatIP(matrix.shape[1])
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(matrix)
    return index


def search(index: faiss.Index, queries: torch.Tensor, top_k: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(scores, indices)`` (Q, k) of the ``top_k`` nearest gallery items of each query."""
    matrix = np.ascontiguousarray(queries.numpy(), dtype=np.float32)
    faiss.normalize_L2(matrix)
    return index.search(matrix, min(top_k, index.ntotal))


def main(argv=None) -> int:
    """Index the gallery, search it, write the CSV and the picture; exit status 2 on bad input."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cache = args.cache or os.path.join(args.output, CACHE_FILE)
    try:
        gallery_paths, gallery_camids = list_images(args.gallery)
        query_paths, query_camids = list_images(args.query)
        # Before the model is read: every bad file named at once (gallery files only when the
        # cache does not hold their features).
        check_images(query_paths, what=f"query images of {args.query}")
        key = fingerprint(gallery_paths, gallery_camids, args.weights, str(args.camera)) \
            if os.path.isfile(args.weights) else ""
        cached = read_cache(cache, key, gallery_paths) if key else None
        if cached is None:
            check_images(gallery_paths, what=f"gallery images of {args.gallery}")
        predictor = Predictor(args.weights, config_file=args.config_file, opts=args.opts, camera=args.camera,
                              device=args.device, batch_size=args.batch_size, progress=True)
        gallery, cached = gallery_features(predictor, gallery_paths, gallery_camids, cache, key, cached)
        queries = predictor(query_paths, query_camids)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    index = build_index(gallery)
    scores, indices = search(index, queries, args.top_k)

    os.makedirs(args.output, exist_ok=True)
    results = os.path.join(args.output, "results.csv")
    with open(results, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "rank", "gallery", "score"])
        for q, query in enumerate(query_paths):
            for rank, (g, score) in enumerate(zip(indices[q], scores[q]), start=1):
                writer.writerow([query, rank, gallery_paths[g], f"{score:.6f}"])
    rows = [
        RankRow(query, os.path.basename(query), [RankPanel(
            f"top {len(indices[q])}",
            [RankedImage(gallery_paths[g], None, f"{score:.2f}") for g, score in zip(indices[q], scores[q])],
        )])
        for q, query in enumerate(query_paths[:args.num_queries_drawn])
    ]
    picture = save_picture(draw_rank_rows(rows), os.path.join(args.output, "ranklist.png"))
    print(f"gallery: {len(gallery_paths)} images ({'cached' if cached else 'computed'}: {cache}); "
          f"{len(query_paths)} queries; {predictor.describe()}; faiss on "
          f"{'GPU' if faiss.get_num_gpus() > 0 else 'CPU'}")
    print(f"results: {results}\npicture: {picture}")
    return 0

