"""Experiments: training runs launched as ``tools/train_net.py`` subprocesses and their results.

- :mod:`agreid.experiments.common`: the command of a run, its log's evaluation table, a config's
  fingerprint, mean ± sd and paired differences over seeds, atomic files and marked markdown
  sections.

The submodules import torch only when used; ``import agreid.experiments`` alone is cheap.
"""
