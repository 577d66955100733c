"""agreid.evaluation.re_ranking (sparse) against fastreid's dense re_ranking on small problems.

Tolerances: the two differ by float rounding only (fastreid accumulates in float32), so the
distances agree to 1e-5 and the rankings, hence mAP and Rank-1, to 1e-6.
"""
import numpy as np
import pytest
import torch

import agreid  # noqa: F401  # fastreid compatibility fixes before any fastreid import
from agreid.evaluation import evaluate_rank, re_ranking
from fastreid.evaluation.rerank import re_ranking as fastreid_re_ranking


def _features(seed, num_query, num_gallery, num_ids, dim, noise):
    """L2-normalisable features with an identity structure, and ids/cameras."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    q_pids = rng.integers(0, num_ids, num_query)
    g_pids = rng.integers(0, num_ids, num_gallery)
    features = centres[np.concatenate([q_pids, g_pids])]
    features = (features + noise * rng.standard_normal(features.shape)).astype(np.float32)
    cams = rng.integers(0, 4, num_query + num_gallery)
    return (features[:num_query], features[num_query:], q_pids, g_pids,
            cams[:num_query], cams[num_query:])


def _dense_reference(q_feat, g_feat, k1, k2, lambda_value):
    """fastreid's re_ranking fed Euclidean distances of the normalised features."""
    features = np.concatenate([q_feat, g_feat]).astype(np.float64)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * features @ features.T, 0.0))
    q = len(q_feat)
    return fastreid_re_ranking(dist[:q, q:], dist[:q, :q], dist[q:, q:], k1, k2, lambda_value)


@pytest.mark.parametrize("seed,sizes,params", [
    (0, (60, 300, 30, 64, 1.0), (20, 6, 0.3)),
    (1, (80, 400, 40, 128, 1.5), (20, 6, 0.3)),
    (2, (50, 250, 20, 32, 2.0), (11, 3, 0.5)),  # odd k1: round(k1 / 2) rounds half to even
    (3, (40, 200, 15, 48, 1.2), (7, 1, 0.1)),  # k2 = 1: no query expansion
    (4, (10, 12, 4, 16, 0.8), (20, 6, 0.3)),  # fewer images than k1 + 1
    (5, (70, 350, 35, 64, 1.2), (20, 6, 0.0)),  # pure Jaccard
])
def test_matches_fastreid_dense(seed, sizes, params):
    q_feat, g_feat, q_pids, g_pids, q_camids, g_camids = _features(seed, *sizes)
    expected = _dense_reference(q_feat, g_feat, *params)
    result = re_ranking(q_feat, g_feat, *params)
    assert result.dtype == np.float32 and result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)
    ours = evaluate_rank(result, q_pids, g_pids, q_camids, g_camids)
    theirs = evaluate_rank(expected, q_pids, g_pids, q_camids, g_camids)
    assert abs(np.mean(ours[1]) - np.mean(theirs[1])) <= 1e-6
    assert abs(ours[0][0] - theirs[0][0]) <= 1e-6


def test_pairs_without_shared_neighbours_have_jaccard_one():
    q_feat, g_feat, *_ = _features(6, 30, 150, 15, 64, 0.5)
    lambda_value = 0.3
    result = re_ranking(q_feat, g_feat, k1=6, k2=3, lambda_value=lambda_value).astype(np.float64)
    q = q_feat / np.linalg.norm(q_feat, axis=1, keepdims=True).astype(np.float64)
    g = g_feat / np.linalg.norm(g_feat, axis=1, keepdims=True).astype(np.float64)
    # fastreid's normalisation: squared distance over the largest one to any query or gallery image.
    max_d2 = (2 - 2 * q @ np.concatenate([q, g]).T).max(axis=1, keepdims=True)
    jaccard = (result - lambda_value * (2 - 2 * q @ g.T) / max_d2) / (1 - lambda_value)
    assert jaccard.min() >= -1e-6 and jaccard.max() <= 1 + 1e-6
    # Well-separated clusters: most pairs share no neighbour and get exactly Jaccard 1.
    assert (np.abs(jaccard - 1) < 1e-5).mean() > 0.7
    assert (jaccard < 0.9).sum() >= len(q_feat)  # and each query has close neighbours


def test_input_types_and_scale_do_not_matter():
    q_feat, g_feat, *_ = _features(7, 40, 200, 20, 32, 1.0)
    reference = re_ranking(q_feat, g_feat)
    scale = np.random.default_rng(0).uniform(0.5, 3.0, (len(g_feat), 1)).astype(np.float32)
    from_torch = re_ranking(torch.from_numpy(q_feat).double(), torch.from_numpy(g_feat * scale))
    np.testing.assert_allclose(from_torch, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case,message", [
    ("nan", "query features have 1 rows with NaN/Inf"),
    ("inf", "gallery features have 1 rows with NaN/Inf"),
    ("zero", "gallery features have 1 all-zero rows"),
    ("empty", "query features are empty"),
    ("dims", "query features have dim 32 but gallery features have dim 31"),
    ("k1", "k1 and k2 must be >= 1"),
])
def test_bad_inputs_raise(case, message):
    q_feat, g_feat, *_ = _features(8, 20, 60, 10, 32, 1.0)
    kwargs = {}
    if case == "nan":
        q_feat[2, 3] = np.nan
    elif case == "inf":
        g_feat[5, 0] = np.inf
    elif case == "zero":
        g_feat[7] = 0
    elif case == "empty":
        q_feat = q_feat[:0]
    elif case == "dims":
        g_feat = g_feat[:, :31]
    elif case == "k1":
        kwargs["k1"] = 0
    with pytest.raises(ValueError, match=message):
        re_ranking(q_feat, g_feat, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_dense():
    q_feat, g_feat, *_ = _features(9, 100, 500, 40, 64, 1.0)
    expected = _dense_reference(q_feat, g_feat, 20, 6, 0.3)
    np.testing.assert_allclose(re_ranking(torch.from_numpy(q_feat).cuda(), torch.from_numpy(g_feat).cuda()),
                               expected, rtol=0, atol=1e-5)


def test_block_and_chunk_sizes_do_not_change_the_result(monkeypatch):
    """Tiny blocks: output blocks and cache chunks that do not divide the number of queries."""
    import agreid.evaluation.rerank as rerank_module
    q_feat, g_feat, *_ = _features(10, 37, 180, 20, 32, 1.0)
    expected = _dense_reference(q_feat, g_feat, 20, 6, 0.3)
    reference = re_ranking(q_feat, g_feat)
    monkeypatch.setattr(rerank_module, "_BLOCK_ELEMENTS", 1000)
    monkeypatch.setattr(rerank_module, "_CACHE_ELEMENTS", 3 * 180 + 7)
    result = re_ranking(q_feat, g_feat)
    np.testing.assert_array_equal(result, reference)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)
