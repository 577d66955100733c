#!/usr/bin/env python
"""Reproduce the paper's tables 2-6 on the real datasets; the logic lives in agreid.experiments.reproduce (run with --help for everything)."""
import sys

from agreid.experiments.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
