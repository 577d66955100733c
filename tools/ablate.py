#!/usr/bin/env python
"""Run the paper's ablations on the synthetic data; the logic lives in agreid.experiments.ablations (run with --help for everything)."""
import sys

from agreid.experiments.ablations import main

if __name__ == "__main__":
    sys.exit(main())
