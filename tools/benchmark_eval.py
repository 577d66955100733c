#!/usr/bin/env python
"""Benchmark fastreid's evaluate_rank / re_ranking against agreid's; the logic lives in
agreid.benchmarks.evaluation (run with --help for everything)."""
import sys

from agreid.benchmarks.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
