#!/usr/bin/env python
"""Check this project on a CUDA machine and print one markdown table; the logic lives in
agreid.benchmarks.gpu_check (run with --help for everything)."""
import sys

from agreid.benchmarks.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
