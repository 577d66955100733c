"""fastreid's ReID evaluator with the project's exact fast ranking and sparse re-ranking."""
from __future__ import annotations

import copy
import itertools
import logging
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from fastreid.evaluation import reid_evaluation
from fastreid.evaluation.query_expansion import aqe
from fastreid.utils import comm
from fastreid.utils.compute_dist import build_dist

from .rank import evaluate_rank
from .rerank import re_ranking

logger = logging.getLogger(__name__)

__all__ = ["ReidEvaluator"]


def _check_finite(features: torch.Tensor, name: str) -> None:
    finite = torch.isfinite(features).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero(as_tuple=True)[0]
        raise ValueError(f"{name} have {bad.numel()} rows with NaN/Inf (first: row {int(bad[0])})")


class ReidEvaluator(reid_evaluation.ReidEvaluator):
    """fastreid's :class:`~fastreid.evaluation.ReidEvaluator`, with two replacements.

    - Ranking: :func:`agreid.evaluation.evaluate_rank` (exact, vectorised, chunked; same numbers
      as fastreid's Python ranker, in seconds instead of minutes).
    - ``TEST.RERANK.ENABLED``: :func:`agreid.evaluation.re_ranking` (Zhong et al.'s k-reciprocal
      re-ranking, sparse, with ``TEST.RERANK.K1/K2/LAMBDA``). It works on L2-normalised
      features whatever ``TEST.METRIC`` says (the method is defined on Euclidean distances of
      normalised features). fastreid's evaluator instead mixes its ``TEST.METRIC`` distance with
      the OpenUnReID Jaccard variant, a different formula, so its re-ranked numbers differ.

    Everything else is fastreid's: ``process()`` (flip-test happens before it, in
    ``inference_on_dataset``), ``TEST.METRIC`` without re-ranking, ``TEST.AQE`` (its
    ``query_expansion.aqe``), ``TEST.ROC`` and the result keys, so the printed table is the same.

    Args:
        cfg: the fastreid config.
        num_query: the first ``num_query`` processed images are queries, the rest gallery.
        output_dir: unused, kept for fastreid's signature.
    """

    def _gathered(self) -> Optional[Tuple[torch.Tensor, np.ndarray, np.ndarray]]:
        """Features, ids and cameras of every image from every process, or ``None`` off rank 0."""
        predictions = self._predictions
        if comm.get_world_size() > 1:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return None
        if not predictions:
            raise ValueError("ReidEvaluator.evaluate() called before any process(): no features")
        features = torch.cat([p["feats"] for p in predictions], dim=0)
        pids = torch.cat([p["pids"] for p in predictions], dim=0).numpy()
        camids = torch.cat([p["camids"] for p in predictions], dim=0).numpy()
        return features, pids, camids

    def evaluate(self) -> Dict[str, float]:
        """Rank-1/5/10, mAP, mINP and ``metric`` (and TPR@FPR with ``TEST.ROC``), in percent."""
        gathered = self._gathered()
        if gathered is None:
            return {}
        features, pids, camids = gathered
        num_query = self._num_query
        if not 0 < num_query < features.shape[0]:
            raise ValueError(f"num_query={num_query} but {features.shape[0]} images were processed: "
                             "need at least one query and one gallery image")
        query_features, gallery_features = features[:num_query], features[num_query:]
        _check_finite(query_features, "query features")
        _check_finite(gallery_features, "gallery features")
        query_pids, gallery_pids = pids[:num_query], pids[num_query:]
        query_camids, gallery_camids = camids[:num_query], camids[num_query:]

        test = self.cfg.TEST
        if test.AQE.ENABLED:
            logger.info("Test with AQE setting")
            query_features, gallery_features = aqe(query_features, gallery_features,
                                                   test.AQE.QE_TIME, test.AQE.QE_K, test.AQE.ALPHA)
        if test.RERANK.ENABLED:
            logger.info("Test with rerank setting (sparse k-reciprocal re-ranking, k1=%d k2=%d "
                        "lambda=%.2f)", test.RERANK.K1, test.RERANK.K2, test.RERANK.LAMBDA)
            dist = re_ranking(query_features, gallery_features, k1=test.RERANK.K1,
                              k2=test.RERANK.K2, lambda_value=test.RERANK.LAMBDA)
        else:
            dist = build_dist(query_features, gallery_features, test.METRIC)

        cmc, all_ap, all_inp = evaluate_rank(dist, query_pids, gallery_pids, query_camids, gallery_camids)
        mean_ap, mean_inp = float(np.mean(all_ap)), float(np.mean(all_inp))
        self._results = OrderedDict()
        for rank in (1, 5, 10):
            self._results[f"Rank-{rank}"] = cmc[min(rank, len(cmc)) - 1] * 100
        self._results["mAP"] = mean_ap * 100
        self._results["mINP"] = mean_inp * 100
        self._results["metric"] = (mean_ap + cmc[0]) / 2 * 100

        if test.ROC.ENABLED:
            from fastreid.evaluation.roc import evaluate_roc
            from sklearn import metrics

            scores, labels = evaluate_roc(dist, query_pids, gallery_pids, query_camids, gallery_camids)
            fprs, tprs, _ = metrics.roc_curve(labels, scores)
            for fpr in (1e-4, 1e-3, 1e-2):
                self._results[f"TPR@FPR={fpr:.0e}"] = tprs[np.argmin(np.abs(fprs - fpr))]
        return copy.deepcopy(self._results)
