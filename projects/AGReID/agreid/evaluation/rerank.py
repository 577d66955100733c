"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) computed sparsely, so that it fits MSMT17.

fastreid's ``re_ranking`` holds several dense (q+g)^2 matrices (about 20 bytes per pair), which
for MSMT17's 93,820 images is ~200 GB. Every quantity of the method is local, though: the
k-reciprocal sets live among the ``k1 + 1`` nearest neighbours, the encoding vectors ``V`` have a
few dozen non-zeros per row, and the Jaccard distance is 1 wherever two rows share none. This
module computes the same thing from

- one exhaustive all-vs-all pass (blocked matrix products in torch, on the GPU when there is
  one) that keeps the ``k1 + 1`` nearest neighbours of every image, its farthest image (which
  fastreid's normalisation needs, see below) and the query-gallery similarities. It visits
  only the upper triangle of the symmetric similarity matrix: half the flops of a faiss
  ``IndexFlatIP`` search, which would also need a second full search for the farthest images;
- the k-reciprocal sets and their expansion (the 2/3 overlap rule) as fixed-width index arrays,
  with pair similarities looked up in the neighbour lists where they are there (most pairs);
- ``V`` and its query expansion (mean over the ``k2`` nearest neighbours) as ``scipy.sparse``;
- ``sum_k min(V_ik, V_jk)`` only over pairs that share a non-zero (an inverted index);
- the dense (num_query, num_gallery) result, one block of queries at a time.

Semantics are those of ``fastreid.evaluation.rerank.re_ranking`` fed the Euclidean distances of
the L2-normalised features (q-g, q-q, g-g):

- ``original_dist`` there is the squared distance ``d2 = 2 - 2 cos`` divided, for row ``i``, by
  the largest ``d2`` from image ``i`` to any of the q+g images (its code divides by the column
  maxima of a symmetric matrix and transposes). The farthest-image search gives that maximum.
- the Jaccard term is ``1 - m / (2 - m)`` with ``m = sum_k min(V_ik, V_jk)``, as in fastreid.

Differences are float rounding only: fastreid works in float32, this module in float64 for the
weights and the Jaccard term; neighbours whose distances differ by a rounding error can come out
of ``torch.topk`` and ``np.argsort`` in different orders. ``docs/PERFORMANCE.md`` reports the agreement.
"""
from __future__ import annotations

from typing import Iterator, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch


ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["re_ranking"]

# Budget of elements per block of temporaries (about 16M: a few hundred MB at most).
_BLOCK_ELEMENTS = 1 << 24
# Elements of a chunk that several passes visit in turn (a few hundred KB: stays in cache).
_CACHE_ELEMENTS = 1 << 16


def _normalised_features(features: ArrayLike, name: str) -> np.ndarray:
    """``features`` as a C-contiguous float32 array of unit rows, or a ValueError naming ``name``."""
    if torch.is_tensor(features):
        features = features.detach().cpu().numpy()
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_images, dim), got shape {features.shape}")
    if features.shape[0] == 0:
        raise ValueError(f"{name} are empty")
    if not np.issubdtype(features.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got dtype {features.dtype}")
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name} have {bad.size} rows with NaN/Inf (first: row {bad[0]})")
    norms = np.sqrt(np.einsum("nd,nd->n", features, features, dtype=np.float64))[:, None]
    if (norms == 0).any():
        raise ValueError(f"{name} have {int((norms == 0).sum())} all-zero rows, which cannot be "
                         f"L2-normalised (first: row {np.flatnonzero(norms[:, 0] == 0)[0]})")
    return np.ascontiguousarray(features / norms, dtype=np.float32)


def _blocks(costs: np.ndarray, budget: int) -> Iterator[Tuple[int, int]]:
    """Consecutive ``[start, stop)`` ranges whose summed cost stays within ``budget`` (>= 1 row each)."""
    cumulative = np.cumsum(costs, dtype=np.int64)
    start, total = 0, len(costs)
    while start < total:
        offset = cumulative[start - 1] if start else 0
        stop = int(np.searchsorted(cumulative, offset + budget, side="right"))
        stop = min(max(stop, start + 1), total)
        yield start, stop
        start = stop


def _neighbours(features: torch.Tensor, k: int, num_query: int, query_gallery: np.ndarray,
                block: int = 4096) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exhaustive all-vs-all search, one pass over the upper triangle of the similarity matrix.

    Args:
        features: (N, d) unit rows on the device doing the work; the first ``num_query`` are queries.
        k: neighbours to keep per image.
        query_gallery: (num_query, N - num_query) float32 output, filled with the query-gallery
            cosine similarities on the way (they are needed at the end; this saves a GEMM).

    Returns:
        ``(nearest, nearest_similarity, min_similarity)``: (N, k) indices of the most similar
        images, nearest first, their (N, k) float32 similarities, and (N,) each image's smallest
        similarity to any image (its farthest one).
    """
    num = features.shape[0]
    starts = list(range(0, num, block))
    # Per row block: candidate (similarity, index) lists, reduced to the top k every few blocks.
    candidates = [[] for _ in starts]
    min_sim = torch.full((num,), float("inf"), device=features.device)

    def reduce(block_id: int) -> None:
        sims = torch.cat([sim for sim, _ in candidates[block_id]], dim=1)
        index = torch.cat([idx for _, idx in candidates[block_id]], dim=1)
        top_sim, order = sims.topk(min(k, sims.shape[1]), dim=1)
        candidates[block_id] = [(top_sim, index.gather(1, order))]

    def add(block_id: int, sims: torch.Tensor, offset: int) -> None:
        top_sim, top_idx = sims.topk(min(k, sims.shape[1]), dim=1)
        candidates[block_id].append((top_sim, top_idx + offset))
        if len(candidates[block_id]) >= 8:
            reduce(block_id)
        rows = slice(starts[block_id], starts[block_id] + sims.shape[0])
        min_sim[rows] = torch.minimum(min_sim[rows], sims.min(dim=1).values)

    # Each (row block, column block >= it) product serves both blocks: half the flops.
    for row_id, row_start in enumerate(starts):
        rows = slice(row_start, min(row_start + block, num))
        for col_id in range(row_id, len(starts)):
            cols = slice(starts[col_id], min(starts[col_id] + block, num))
            sims = features[rows] @ features[cols].T  # (b_rows, b_cols)
            add(row_id, sims, cols.start)
            if col_id != row_id:
                add(col_id, sims.T.contiguous(), row_start)
            # Query-gallery part of this block (queries come first, so it is never in sims.T).
            query_rows = slice(rows.start, min(rows.stop, num_query))
            gallery_cols = slice(max(cols.start, num_query), cols.stop)
            if query_rows.start < query_rows.stop and gallery_cols.start < gallery_cols.stop:
                query_gallery[query_rows, gallery_cols.start - num_query:gallery_cols.stop - num_query] = \
                    sims[:query_rows.stop - rows.start, gallery_cols.start - cols.start:].cpu().numpy()
        reduce(row_id)  # no later product touches this row block
    nearest = torch.cat([candidates[block_id][0][1] for block_id in range(len(starts))])
    nearest_sim = torch.cat([candidates[block_id][0][0] for block_id in range(len(starts))])
    return nearest.cpu().numpy(), nearest_sim.cpu().numpy(), min_sim.double().cpu().numpy()


def _reciprocal(nearest: np.ndarray) -> np.ndarray:
    """(N, k) mask: ``nearest[i, a]`` has ``i`` among its own ``k`` nearest."""
    num, k = nearest.shape
    mask = np.empty((num, k), dtype=bool)
    for start, stop in _blocks(np.full(num, k * k), _BLOCK_ELEMENTS):
        backward = nearest[nearest[start:stop]]  # (c, k, k)
        mask[start:stop] = (backward == np.arange(start, stop)[:, None, None]).any(axis=2)
    return mask


def _expanded_sets(nearest: np.ndarray, k1: int) -> Tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the expanded k-reciprocal set of every image.

    ``R(i)`` = k-reciprocal neighbours of ``i`` within ``k1 + 1``; each ``c`` in ``R(i)`` adds its
    own ``round(k1 / 2)``-reciprocal set ``H(c)`` when ``|H(c) & R(i)| > 2/3 |H(c)|``.
    """
    num = nearest.shape[0]
    half = min(int(np.around(k1 / 2.0)) + 1, nearest.shape[1])
    reciprocal = np.where(_reciprocal(nearest), nearest, -1)  # (N, k1+1), -1 = not reciprocal
    near_half = np.ascontiguousarray(nearest[:, :half])
    half_reciprocal = np.where(_reciprocal(near_half), near_half, -1)  # (N, half)
    width = reciprocal.shape[1]

    rows, cols = [], []
    for start, stop in _blocks(np.full(num, width * width * half), _BLOCK_ELEMENTS):
        own = reciprocal[start:stop]  # (c, w)
        candidate_sets = half_reciprocal[np.maximum(own, 0)]  # (c, w, half)
        candidate_sets[own < 0] = -1
        in_own = (candidate_sets[..., None] == own[:, None, None, :]).any(axis=3) & (candidate_sets >= 0)
        overlap = in_own.sum(axis=2)
        size = (candidate_sets >= 0).sum(axis=2)
        # fastreid's exact float test: len(intersect) > 2. / 3 * len(candidate set).
        accepted = (own >= 0) & (overlap > 2.0 / 3 * size)
        added = np.where(accepted[..., None], candidate_sets, -1).reshape(stop - start, -1)
        members = np.sort(np.concatenate([own, added], axis=1), axis=1)
        members[:, 1:][members[:, 1:] == members[:, :-1]] = -1  # drop repeats
        block_rows, slots = np.nonzero(members >= 0)
        rows.append(block_rows + start)
        cols.append(members[block_rows, slots])
    return np.concatenate(rows), np.concatenate(cols)


def _pair_similarity(features: np.ndarray, rows: np.ndarray, cols: np.ndarray, nearest: np.ndarray,
                     nearest_sim: np.ndarray) -> np.ndarray:
    """Cosine similarity of each (rows[p], cols[p]) pair, in float64.

    Most pairs (about 85% at Market scale) join an image to one of its own ``k1 + 1`` nearest
    neighbours, whose similarity the search already holds; only the others take a dot product.
    """
    out = np.empty(rows.size, dtype=np.float64)
    known = np.empty(rows.size, dtype=bool)
    for start, stop in _blocks(np.full(rows.size, nearest.shape[1]), _BLOCK_ELEMENTS):
        hit = nearest[rows[start:stop]] == cols[start:stop, None]  # (p, k): at most one per row
        found = known[start:stop] = hit.any(axis=1)
        out[start:stop][found] = nearest_sim[rows[start:stop][found], hit[found].argmax(axis=1)]
    missing = np.flatnonzero(~known)
    rows, cols = rows[missing], cols[missing]
    step = max(1, _BLOCK_ELEMENTS // (2 * features.shape[1]))
    for start in range(0, rows.size, step):
        stop = start + step
        out[missing[start:stop]] = np.einsum("pd,pd->p", features[rows[start:stop]],
                                             features[cols[start:stop]], dtype=np.float64)
    return out


@torch.no_grad()
def re_ranking(q_feat: ArrayLike, g_feat: ArrayLike, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranked distances between queries and gallery, computed sparsely.

    Equals fastreid's ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)`` fed the
    Euclidean distances of the L2-normalised features, up to float rounding (see the module
    docstring), without ever holding a (q+g)^2 matrix.

    Args:
        q_feat: (num_query, dim) query features, numpy or torch; L2-normalised here.
        g_feat: (num_gallery, dim) gallery features.
        k1: size of the k-reciprocal neighbourhood (``round(k1 / 2)`` for the expansion).
        k2: neighbours averaged in the local query expansion (1 = none).
        lambda_value: weight of the original distance; ``1 - lambda_value`` goes to Jaccard.

    Returns:
        (num_query, num_gallery) float32 numpy array: ``(1 - lambda) * jaccard + lambda * d2 /
        max d2``, with ``jaccard = 1`` for pairs whose encodings share no neighbour.

    Raises:
        ValueError: on empty, non-2-D, mismatched, NaN/Inf or all-zero features, or bad k1/k2/lambda.
    """
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    query = _normalised_features(q_feat, "query features")
    gallery = _normalised_features(g_feat, "gallery features")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query features have dim {query.shape[1]} but gallery features have "
                         f"dim {gallery.shape[1]}")
    num_query, num_gallery = query.shape[0], gallery.shape[0]
    features = np.concatenate([query, gallery])
    num = features.shape[0]
    del query

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Filled with query-gallery similarities by the search, turned into final distances at the end.
    out = np.empty((num_query, num_gallery), dtype=np.float32)
    nearest, nearest_similarity, min_similarity = _neighbours(
        torch.from_numpy(features).to(device), min(k1 + 1, num), num_query, out)
    # Largest squared distance from each image to any image: fastreid's normaliser.
    max_d2 = np.maximum(2.0 - 2.0 * min_similarity, 0.0)
    max_d2[max_d2 == 0] = 1.0  # every image identical to this one: all distances are 0 anyway

    # Encoding V: exp(-normalised d2) over the expanded set, rows summing to 1.
    rows, cols = _expanded_sets(nearest, k1)
    d2 = np.maximum(2.0 - 2.0 * _pair_similarity(features, rows, cols, nearest, nearest_similarity), 0.0)
    weight = np.exp(-d2 / max_d2[rows])
    weight /= np.bincount(rows, weights=weight, minlength=num)[rows]
    encoding = sp.csr_matrix((weight, (rows, cols)), shape=(num, num))
    del rows, cols, d2, weight

    if k2 != 1:
        num_expand = min(k2, nearest.shape[1])
        averaging = sp.csr_matrix(
            (np.full(num * num_expand, 1.0 / num_expand),
             (np.repeat(np.arange(num), num_expand), nearest[:, :num_expand].ravel())),
            shape=(num, num))
        encoding = (averaging @ encoding).tocsr()
    del nearest, nearest_similarity

    query_encoding = encoding[:num_query]
    # Inverted index: for each neighbour k, the gallery images whose encoding uses it.
    gallery_by_neighbour = encoding[num_query:].tocsc()
    column_nnz = np.diff(gallery_by_neighbour.indptr)
    # Work per query: pairs (k, gallery image) to visit, and one dense row of the output.
    query_rows = np.repeat(np.arange(num_query), np.diff(query_encoding.indptr))
    pairs_per_query = np.bincount(query_rows, weights=column_nnz[query_encoding.indices],
                                  minlength=num_query).astype(np.int64)
    costs = pairs_per_query + num_gallery

    # Rows of the output transformed at a time: small enough to stay in cache through its passes.
    chunk = max(1, _CACHE_ELEMENTS // num_gallery)
    for start, stop in _blocks(costs, max(_BLOCK_ELEMENTS, num_gallery)):
        size = stop - start
        block = query_encoding[start:stop]
        block_rows = np.repeat(np.arange(size) * num_gallery, np.diff(block.indptr))
        # Expand each non-zero (row, k, a) to every gallery image j with V_jk = b: min(a, b).
        lengths = column_nnz[block.indices]
        first = gallery_by_neighbour.indptr[block.indices]
        total = int(lengths.sum())
        positions = np.arange(total) + np.repeat(first - (np.cumsum(lengths) - lengths), lengths)
        minimum = np.minimum(np.repeat(block.data, lengths), gallery_by_neighbour.data[positions])
        keys = np.repeat(block_rows, lengths)
        keys += gallery_by_neighbour.indices[positions]
        del positions
        overlap = np.bincount(keys, weights=minimum, minlength=size * num_gallery).reshape(size, num_gallery)
        del keys, minimum
        scale = (lambda_value / max_d2[start:stop, None]).astype(np.float32)

        # In place, in float32 like fastreid: lambda * d2 / max d2 + (1 - lambda) * jaccard, where
        # jaccard = 1 - m / (2 - m), which is 1 for pairs sharing no neighbour (m = 0).
        for row in range(0, size, chunk):
            final = out[start + row:min(start + row + chunk, stop)]
            shared = overlap[row:row + chunk]
            final *= -2.0
            final += 2.0
            np.maximum(final, 0.0, out=final)
            final *= scale[row:row + chunk]
            final += 1.0 - lambda_value
            jaccard_part = (1.0 - lambda_value) * shared
            jaccard_part /= 2.0 - shared
            final -= jaccard_part.astype(np.float32)
    return out
