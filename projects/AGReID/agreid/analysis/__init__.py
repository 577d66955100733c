"""Analyses of trained runs that only the synthetic data's ground truth makes possible.

- :mod:`agreid.analysis.text_features`: the per-identity text features T of stage 2's L_CE
  (norms, inter-identity cosines overall and for identities that look alike, top-1 through T,
  L_CE as trained and with T rescaled to a reference norm); ``tools/diagnose_text_features.py``.
- :mod:`agreid.analysis.occlusion`: mAP / Rank-1 by how the query is occluded (whole or not,
  occluder type, most hidden region, share hidden), over seeds with paired differences;
  ``tools/occlusion_breakdown.py``.
- :mod:`agreid.analysis.runs`: reading a run (checkpoint and embedded config, the model rebuilt
  as evaluation does) and the synthetic ground truth (``attributes.json``, ``occlusion.json``) in
  the trainer's label order (:func:`~agreid.analysis.runs.identity_attributes`,
  :func:`~agreid.analysis.runs.image_occlusion`, :func:`~agreid.analysis.runs.relabelled_items`).
- :mod:`agreid.analysis.supervised_attribute`: how well SynthCLIP's image tower learns one
  attribute when trained on it alone (the ceiling a zero-shot accuracy is read against);
  ``tools/supervised_attribute.py``.
- :mod:`agreid.analysis.probes`: the project's one linear probe and its cross-validation.
- :mod:`agreid.analysis.slots`: which word of a template each learnable slot qualifies, its region.

The command-line tools are shells over modules of the same name: ``probe_attributes``,
``analyze_noise_mask``, ``probe_pseudo_labels`` (an alias of the two), ``diagnose_text_features``,
``occlusion_breakdown``, ``zero_shot`` and ``supervised_attribute`` (SynthCLIP); ``tools/pretrain_clip.py`` is
:mod:`agreid.pretrain_clip` and ``tools/make_synthetic.py`` :mod:`agreid.data.make_synthetic`.

The submodules import torch and fastreid when used; ``import agreid.analysis`` alone is cheap.
"""
from .runs import GroundTruthMissingError, TrainedRun, load_run, one_line, run_config

__all__ = ["GroundTruthMissingError", "TrainedRun", "load_run", "one_line", "run_config"]
