"""Exact CMC, mAP and mINP for ReID, vectorised and chunked over queries.

Same protocol and numbers as ``fastreid.evaluation.rank.evaluate_rank`` (Market-1501 metric):
gallery images with the query's identity *and* camera are dropped, queries with no remaining
true match are skipped (and counted in a warning).

Instead of arg-sorting every row and walking it in Python, each chunk of queries is sorted by
value once (``np.sort``, or ``torch.sort`` on a GPU), and the rank of each true match is found
by binary search in its sorted row. Only the few true matches of each query are then handled
individually, so the cost is one sort per row.

Ties: a gallery image with the same distance as another is ranked after it when its gallery
index is larger, i.e. the order is that of a *stable* sort of each row. fastreid uses
``np.argsort``'s default (unstable) sort, so with tied distances its numbers depend on numpy's
sort internals; without ties both agree to float rounding (< 1e-12 for AP, exactly for CMC).
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["evaluate_rank"]

# Elements of one (chunk, num_gallery) block: about 16M keeps each block's temporaries < 0.5 GB.
_CHUNK_ELEMENTS = 1 << 24


def _as_1d_long(values: ArrayLike, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not torch.is_tensor(values) else values)
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got dtype {tensor.dtype}")
    return tensor.to(torch.int64).cpu()


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sorted_rows(dist: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending (values only). numpy's SIMD sort is ~40x faster than torch's on a CPU."""
    if dist.is_cuda:
        return torch.sort(dist, dim=1).values
    return torch.from_numpy(np.sort(dist.numpy(), axis=1))


def _rank_chunk(dist: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor,
                q_camids: torch.Tensor, g_camids: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """AP, INP and first-hit rank of each query of one chunk, and which queries are valid.

    Args:
        dist: (c, g) distances of ``c`` queries, on the device that does the work.
        q_pids, q_camids: (c,) on the same device; g_pids, g_camids: (g,).

    Returns:
        ``(valid, ap, inp, first_rank)``, each (c,); entries of invalid queries are meaningless.
    """
    num_chunk, num_gallery = dist.shape
    device = dist.device
    if torch.isnan(dist).any():
        raise ValueError("distmat contains NaN")

    # Every gallery image of the query's identity, in row-major order: (n,) each.
    rows, cols = (g_pids.unsqueeze(0) == q_pids.unsqueeze(1)).nonzero(as_tuple=True)
    junk = g_camids[cols] == q_camids[rows]
    match_dist = dist[rows, cols]

    # Position of each match in its row's stable order = #smaller values + #equal values before it.
    counts = torch.bincount(rows, minlength=num_chunk)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.numel(), device=device) - starts[rows]
    width = int(counts.max()) if rows.numel() else 0
    padded = torch.full((num_chunk, max(width, 1)), float("inf"), dtype=dist.dtype, device=device)
    padded[rows, slot] = match_dist
    sorted_dist = _sorted_rows(dist).to(device)
    lower = torch.searchsorted(sorted_dist, padded)[rows, slot]
    upper = torch.searchsorted(sorted_dist, padded, right=True)[rows, slot]
    position = lower
    tied = (upper - lower > 1).nonzero(as_tuple=True)[0]
    if tied.numel():
        gallery_index = torch.arange(num_gallery, device=device)
        for block in torch.split(tied, max(1, _CHUNK_ELEMENTS // max(num_gallery, 1))):
            equal_before = ((dist[rows[block]] == match_dist[block].unsqueeze(1))
                            & (gallery_index.unsqueeze(0) < cols[block].unsqueeze(1)))
            position[block] += equal_before.sum(dim=1)

    # Order matches by (query, position); a match's rank among kept images skips the junk before it.
    order = torch.argsort(rows * num_gallery + position)
    rows, position, junk = rows[order], position[order], junk[order]
    junk_before = torch.cumsum(junk.long(), 0) - junk.long()
    junk_before = junk_before - junk_before[starts[rows]]
    kept_rank = position - junk_before

    hit = ~junk
    hit_rows, hit_rank = rows[hit], kept_rank[hit]
    num_rel = torch.bincount(hit_rows, minlength=num_chunk)
    hit_starts = torch.cumsum(num_rel, 0) - num_rel
    hits_so_far = torch.arange(hit_rows.numel(), device=device) - hit_starts[hit_rows] + 1
    precision_sum = torch.zeros(num_chunk, dtype=torch.float64, device=device)
    precision_sum.index_add_(0, hit_rows, hits_so_far.double() / (hit_rank.double() + 1.0))

    valid = num_rel > 0
    safe_rel = num_rel.clamp(min=1)
    last = hit_starts + safe_rel - 1
    first_rank = torch.zeros(num_chunk, dtype=torch.int64, device=device)
    last_rank = torch.zeros(num_chunk, dtype=torch.int64, device=device)
    if hit_rows.numel():
        first_rank[valid] = hit_rank[hit_starts[valid]]
        last_rank[valid] = hit_rank[last[valid]]
    ap = precision_sum / safe_rel.double()
    inp = num_rel.double() / (last_rank.double() + 1.0)
    return valid, ap, inp, first_rank


@torch.no_grad()
def evaluate_rank(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
                  g_camids: ArrayLike, max_rank: int = 50, chunk_size: Optional[int] = None,
                  device: Optional[Union[str, torch.device]] = None
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CMC curve, per-query AP and per-query INP, like fastreid's ``evaluate_rank``.

    Args:
        distmat: (num_query, num_gallery) distances, numpy or torch; smaller is closer. float32
            (or lower) and float64 are ranked at their own precision. NaN is an error; +-inf is allowed.
        q_pids, g_pids, q_camids, g_camids: integer identities and cameras, numpy or torch.
        max_rank: length of the CMC curve; capped at num_gallery (as fastreid does).
        chunk_size: queries per block; ``None`` picks about 16M distances per block. Any value
            gives the same result.
        device: where the work runs; ``None`` = CUDA when available, else CPU.

    Returns:
        ``(cmc, all_AP, all_INP)``: ``cmc`` is the float32 mean CMC over valid queries (length
        ``max_rank``); ``all_AP`` and ``all_INP`` are float64 arrays with one entry per valid
        query, in query order (fastreid returns lists; ``np.mean`` treats both alike).

    Raises:
        ValueError: on an empty query or gallery set, mismatched lengths, NaN distances, or when
            no query has a valid match. Queries without one are skipped with a warning.
    """
    if not torch.is_tensor(distmat):
        distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {tuple(distmat.shape)}")
    num_query, num_gallery = distmat.shape
    if num_query == 0 or num_gallery == 0:
        raise ValueError(f"empty evaluation: {num_query} queries and {num_gallery} gallery images")
    q_pids, g_pids = _as_1d_long(q_pids, "q_pids"), _as_1d_long(g_pids, "g_pids")
    q_camids, g_camids = _as_1d_long(q_camids, "q_camids"), _as_1d_long(g_camids, "g_camids")
    for name, values, expected in (("q_pids", q_pids, num_query), ("q_camids", q_camids, num_query),
                                   ("g_pids", g_pids, num_gallery), ("g_camids", g_camids, num_gallery)):
        if values.numel() != expected:
            raise ValueError(f"{name} has {values.numel()} entries but distmat has shape "
                             f"{tuple(distmat.shape)}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if num_gallery < max_rank:
        logger.info("Only %d gallery images: CMC is computed up to rank %d.", num_gallery, num_gallery)
        max_rank = num_gallery

    device = torch.device(device) if device is not None else _default_device()
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // num_gallery)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    g_pids, g_camids = g_pids.to(device), g_camids.to(device)

    all_ap, all_inp, first_ranks = [], [], []
    for start in range(0, num_query, chunk_size):
        stop = min(start + chunk_size, num_query)
        block = distmat[start:stop]
        if torch.is_tensor(block):
            block = block.to(device)
        else:
            if block.dtype not in (np.float32, np.float64):
                block = block.astype(np.float32)
            block = torch.from_numpy(np.ascontiguousarray(block)).to(device)
        if not block.is_floating_point() or block.dtype in (torch.float16, torch.bfloat16):
            block = block.float()
        valid, ap, inp, first_rank = _rank_chunk(
            block.contiguous(), q_pids[start:stop].to(device), g_pids,
            q_camids[start:stop].to(device), g_camids)
        all_ap.append(ap[valid].cpu())
        all_inp.append(inp[valid].cpu())
        first_ranks.append(first_rank[valid].cpu())

    first_ranks = torch.cat(first_ranks)
    num_valid = first_ranks.numel()
    if num_valid == 0:
        raise ValueError("no query has a true match in the gallery (after dropping same-camera "
                         "images of its identity): nothing to evaluate")
    if num_valid < num_query:
        logger.warning("%d of %d queries have no true match in the gallery (other than same-camera "
                       "images) and are skipped.", num_query - num_valid, num_query)
    hits_at = torch.bincount(first_ranks.clamp(max=max_rank), minlength=max_rank + 1)[:max_rank]
    cmc = torch.cumsum(hits_at, 0).numpy().astype(np.float32) / float(num_valid)
    return cmc, torch.cat(all_ap).numpy(), torch.cat(all_inp).numpy()
