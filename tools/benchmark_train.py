#!/usr/bin/env python
"""Throughput of AG-ReID's training phases and inference beside fastreid's Baseline; the logic lives
in agreid.benchmarks.train (run with --help for everything)."""
import sys

from agreid.benchmarks.train import main

if __name__ == "__main__":
    sys.exit(main())
