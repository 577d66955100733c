#!/usr/bin/env python
"""Compare checkpoints of different toolkits on one test set; the logic lives in agreid.experiments.compare_zoo (run with --help for everything)."""
import sys

from agreid.experiments.compare_zoo import main

if __name__ == "__main__":
    sys.exit(main())
