"""agreid.evaluation.evaluate_rank and ReidEvaluator against fastreid's, on small random problems."""
import logging

import numpy as np
import pytest
import torch

import agreid  # noqa: F401  # fastreid compatibility fixes before any fastreid import
from agreid.evaluation import ReidEvaluator, evaluate_rank
from fastreid.config import get_cfg
from fastreid.evaluation import ReidEvaluator as FastreidEvaluator
from fastreid.evaluation.rank import evaluate_rank as fastreid_evaluate_rank
from fastreid.evaluation.rerank import re_ranking as fastreid_re_ranking


def _ranking_problem(seed, num_query=60, num_gallery=300, num_ids=25, num_cams=3, dtype=np.float32):
    """Random distances with identity structure; some query ids are absent from the gallery."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, num_ids + 5, num_query)  # ids >= num_ids never appear in the gallery
    g_pids = rng.integers(0, num_ids, num_gallery)
    q_camids = rng.integers(0, num_cams, num_query)
    g_camids = rng.integers(0, num_cams, num_gallery)
    dist = rng.random((num_query, num_gallery)) + 0.6 * (q_pids[:, None] != g_pids[None, :])
    return dist.astype(dtype), q_pids, g_pids, q_camids, g_camids


def _fastreid(dist, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    cmc, all_ap, all_inp = fastreid_evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank,
                                                  use_cython=False)
    return cmc, np.asarray(all_ap), np.asarray(all_inp)


@pytest.mark.parametrize("seed,num_cams,dtype", [(0, 2, np.float32), (1, 3, np.float32),
                                                 (2, 6, np.float64), (3, 8, np.float32)])
def test_matches_fastreid(seed, num_cams, dtype):
    problem = _ranking_problem(seed, num_cams=num_cams, dtype=dtype)
    expected = _fastreid(*problem)
    cmc, all_ap, all_inp = evaluate_rank(*problem)
    assert cmc.dtype == np.float32 and cmc.shape == (50,)
    assert all_ap.shape == expected[1].shape  # the same queries were skipped
    np.testing.assert_allclose(cmc, expected[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(all_ap, expected[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(all_inp, expected[2], rtol=0, atol=1e-6)


def test_same_camera_matches_are_dropped():
    # One query (id 1, camera 0); gallery ordered by distance: same-cam match, other id, match.
    dist = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    cmc, all_ap, _ = evaluate_rank(dist, [1], [1, 2, 1], [0], [0, 1, 1], max_rank=2)
    np.testing.assert_array_equal(cmc, [0.0, 1.0])
    np.testing.assert_allclose(all_ap, [0.5])


def test_skipped_queries_are_counted(caplog):
    problem = _ranking_problem(4)
    with caplog.at_level(logging.WARNING, logger="agreid.evaluation.rank"):
        _, all_ap, _ = evaluate_rank(*problem)
    num_skipped = len(problem[1]) - len(all_ap)
    assert num_skipped > 0
    assert f"{num_skipped} of {len(problem[1])} queries have no true match" in caplog.text


def test_ties_follow_gallery_order():
    # All distances tie: the stable order is the gallery order, so hits are at ranks 1 and 3.
    dist = np.full((1, 5), 0.5, dtype=np.float32)
    cmc, all_ap, all_inp = evaluate_rank(dist, [1], [1, 2, 1, 2, 3], [0], [1, 1, 1, 1, 1], max_rank=5)
    np.testing.assert_array_equal(cmc, [1, 1, 1, 1, 1])
    np.testing.assert_allclose(all_ap, [(1 / 1 + 2 / 3) / 2])
    np.testing.assert_allclose(all_inp, [2 / 3])
    # Reversed gallery: now the first hit is at rank 2.
    cmc, all_ap, _ = evaluate_rank(dist, [1], [3, 2, 1, 2, 1], [0], [1, 1, 1, 1, 1], max_rank=5)
    np.testing.assert_array_equal(cmc, [0, 0, 1, 1, 1])
    np.testing.assert_allclose(all_ap, [(1 / 3 + 2 / 5) / 2])


def test_ties_match_fastreid_with_a_stable_sort(monkeypatch):
    dist, *ids = _ranking_problem(5)
    dist = np.round(dist * 4) / 4  # a handful of distinct values: ties everywhere
    argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda a, axis=-1, **kw: argsort(a, axis=axis, kind="stable"))
    expected = _fastreid(dist, *ids)
    monkeypatch.undo()
    cmc, all_ap, all_inp = evaluate_rank(dist, *ids)
    np.testing.assert_allclose(cmc, expected[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(all_ap, expected[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(all_inp, expected[2], rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 7, 59, 1000])
def test_chunk_size_does_not_change_results(chunk_size):
    problem = _ranking_problem(6)
    reference = evaluate_rank(*problem)
    result = evaluate_rank(*problem, chunk_size=chunk_size)
    for got, want in zip(result, reference):
        np.testing.assert_array_equal(got, want)


def test_torch_inputs_and_infinite_distances():
    dist, *ids = _ranking_problem(7)
    rows = np.arange(len(dist))
    dist[rows, rows * 3] = np.inf  # one +inf and one -inf per row: no ties
    dist[rows, rows * 3 + 1] = -np.inf
    expected = _fastreid(dist, *ids)
    result = evaluate_rank(torch.from_numpy(dist), *(torch.from_numpy(x) for x in ids))
    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_max_rank_is_capped_at_gallery_size():
    dist, q_pids, g_pids, q_camids, g_camids = _ranking_problem(8, num_gallery=12, num_ids=3)
    cmc, _, _ = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank=50)
    assert cmc.shape == (12,)


@pytest.mark.parametrize("case,message", [
    ("nan", "contains NaN"),
    ("empty_query", "empty evaluation"),
    ("empty_gallery", "empty evaluation"),
    ("short_g_pids", "g_pids has 299 entries"),
    ("float_pids", "q_pids must hold integers"),
    ("no_valid_query", "no query has a true match"),
])
def test_bad_inputs_raise(case, message):
    dist, q_pids, g_pids, q_camids, g_camids = _ranking_problem(9)
    if case == "nan":
        dist[3, 5] = np.nan
    elif case == "empty_query":
        dist, q_pids, q_camids = dist[:0], q_pids[:0], q_camids[:0]
    elif case == "empty_gallery":
        dist, g_pids, g_camids = dist[:, :0], g_pids[:0], g_camids[:0]
    elif case == "short_g_pids":
        g_pids = g_pids[:-1]
    elif case == "float_pids":
        q_pids = q_pids.astype(np.float64)
    elif case == "no_valid_query":
        q_pids = q_pids + 1000
    with pytest.raises(ValueError, match=message):
        evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu():
    problem = _ranking_problem(10, num_query=200, num_gallery=2000)
    on_cpu = evaluate_rank(*problem, device="cpu")
    on_gpu = evaluate_rank(*problem, device="cuda")
    for got, want in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- evaluator


def _feature_batches(seed, num_query=40, num_gallery=200, num_ids=20, dim=32, batch=32):
    """fastreid-style (inputs, outputs) batches: queries first, then gallery."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    pids = np.concatenate([rng.integers(0, num_ids, num_query), rng.integers(0, num_ids, num_gallery)])
    camids = rng.integers(0, 4, num_query + num_gallery)
    features = centres[pids] + 1.0 * rng.standard_normal((len(pids), dim))
    features = torch.from_numpy(features.astype(np.float32))
    return [({"targets": torch.from_numpy(pids[i:i + batch]), "camids": torch.from_numpy(camids[i:i + batch])},
             features[i:i + batch]) for i in range(0, len(pids), batch)], num_query


def _run(evaluator, batches):
    evaluator.reset()
    for inputs, outputs in batches:
        evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def _cfg(**overrides):
    cfg = get_cfg()
    cfg.merge_from_list([item for pair in overrides.items() for item in pair])
    return cfg


@pytest.mark.parametrize("overrides", [{}, {"TEST.METRIC": "euclidean"},
                                       {"TEST.AQE.ENABLED": True}, {"TEST.ROC.ENABLED": True}])
def test_evaluator_matches_fastreid(overrides):
    batches, num_query = _feature_batches(11)
    cfg = _cfg(**overrides)
    ours = _run(ReidEvaluator(cfg, num_query), batches)
    theirs = _run(FastreidEvaluator(cfg, num_query), batches)
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-4), key


def test_evaluator_rerank_matches_fastreid_re_ranking():
    batches, num_query = _feature_batches(12)
    cfg = _cfg(**{"TEST.RERANK.ENABLED": True, "TEST.RERANK.K1": 10, "TEST.RERANK.K2": 3})
    ours = _run(ReidEvaluator(cfg, num_query), batches)

    features = torch.cat([outputs for _, outputs in batches]).double()
    features = torch.nn.functional.normalize(features, dim=1)
    pids = torch.cat([inputs["targets"] for inputs, _ in batches]).numpy()
    camids = torch.cat([inputs["camids"] for inputs, _ in batches]).numpy()
    euclidean = torch.cdist(features, features).numpy()
    q = num_query
    dist = fastreid_re_ranking(euclidean[:q, q:], euclidean[:q, :q], euclidean[q:, q:], 10, 3, 0.3)
    cmc, all_ap, _ = _fastreid(dist, pids[:q], pids[q:], camids[:q], camids[q:])
    assert ours["mAP"] == pytest.approx(np.mean(all_ap) * 100, abs=1e-4)
    assert ours["Rank-1"] == pytest.approx(cmc[0] * 100, abs=1e-4)


@pytest.mark.parametrize("case,message", [("nan", "gallery features have 1 rows with NaN/Inf"),
                                          ("no_query", "num_query=0"),
                                          ("no_gallery", "need at least one query and one gallery")])
def test_evaluator_bad_inputs(case, message):
    batches, num_query = _feature_batches(13)
    if case == "nan":
        batches[-1][1][0, 0] = float("nan")
    elif case == "no_query":
        num_query = 0
    elif case == "no_gallery":
        num_query = sum(len(outputs) for _, outputs in batches)
    with pytest.raises(ValueError, match=message):
        _run(ReidEvaluator(get_cfg(), num_query), batches)
