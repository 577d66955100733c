"""Experiments: training runs launched as ``tools/train_net.py`` subprocesses and their results.

- :mod:`agreid.experiments.common`: the command of a run, its log's evaluation table, a config's
  fingerprint, mean ± sd and paired differences over seeds, atomic files and marked markdown
  sections.
- :mod:`agreid.experiments.runner`: the one runner of the ablations and the paper reproduction: a
  :class:`~agreid.experiments.runner.Job` per training, run one after the other (skip what is done,
  share the result of an identical config, resume from a checkpoint, read a finished run from its
  log), one result record per job; dry-run planning.
- :mod:`agreid.experiments.paper`: the paper's numbers (its tables 2-6), quoted as the paper's.
- :mod:`agreid.experiments.ablations`: ``tools/ablate.py``: the ablation runs on the synthetic data
  (run selection, leaves), their tables and plot rendered into marked sections of docs/RESULTS.md.
- :mod:`agreid.experiments.reproduce`: ``tools/reproduce_paper.py``: tables 2-6 on the real data,
  checked (configs, datasets, weights, batch per GPU), run and summarised beside the paper's.
- :mod:`agreid.experiments.print_results`: ``tools/print_results.py``: the last evaluation of
  finished runs as one table.
- :mod:`agreid.experiments.compare_zoo`: ``tools/compare_zoo.py``: checkpoints of different
  toolkits evaluated on one test set, in one table (imports torch and fastreid).

Apart from compare_zoo, the submodules import torch and fastreid only inside the functions that
need them.
"""
