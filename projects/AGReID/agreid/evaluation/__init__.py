"""Exact, fast ReID evaluation and sparse k-reciprocal re-ranking (drop-ins for fastreid's)."""
from .evaluator import ReidEvaluator
from .rank import evaluate_rank
from .rerank import re_ranking

__all__ = ["ReidEvaluator", "evaluate_rank", "re_ranking"]
