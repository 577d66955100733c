"""Benchmarks and the CUDA check, behind the thin scripts in ``tools/``.

- :mod:`agreid.benchmarks.train`: throughput of the two training phases and of inference, AG-ReID
  beside fastreid's Baseline, random weights and batches; ``tools/benchmark_train.py``.
- :mod:`agreid.benchmarks.evaluation`: ``evaluate_rank`` / ``re_ranking``, fastreid's against
  agreid's, at Market-1501 and MSMT17 scale, each measurement in a worker process
  (``python -m agreid.benchmarks.evaluation --worker ...``); ``tools/benchmark_eval.py``.
- :mod:`agreid.benchmarks.inference`: images per second of the deployed image encoder through each
  back-end (eager, .pt2, TorchScript, ONNX Runtime, torch.compile); ``tools/benchmark_infer.py``.
- :mod:`agreid.benchmarks.gpu_check`: ``make gpu-check``, every part of the check on a CUDA machine
  in subprocesses under a time budget, one markdown table; ``tools/gpu_check.py``.

Each module has its tool's argument parser and ``main(argv=None) -> int``; ``import
agreid.benchmarks`` imports none of them.
"""
