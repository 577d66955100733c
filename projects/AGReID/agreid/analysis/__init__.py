"""Analyses of trained runs that only the synthetic data's ground truth makes possible.

- :mod:`agreid.analysis.text_features`: the per-identity text features T of stage 2's L_CE
  (norms, inter-identity cosines overall and for identities that look alike, top-1 through T,
  L_CE as trained and with T rescaled to a reference norm); ``tools/diagnose_text_features.py``.
- :mod:`agreid.analysis.occlusion`: mAP / Rank-1 by how the query is occluded (whole or not,
  occluder type, most hidden region, share hidden); ``tools/occlusion_breakdown.py``.
- :mod:`agreid.analysis.runs`: reading a run (checkpoint and embedded config, the model rebuilt
  as evaluation does) and the synthetic ground truth (``attributes.json``, ``occlusion.json``).

The submodules import torch and fastreid when used; ``import agreid.analysis`` alone is cheap.
"""
from .runs import GroundTruthMissingError, TrainedRun, load_run, one_line, run_config

__all__ = ["GroundTruthMissingError", "TrainedRun", "load_run", "one_line", "run_config"]
