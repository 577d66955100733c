#!/usr/bin/env python
"""Draw rank lists of a registered dataset: each query, then its top-k matches per model; the logic lives in agreid.cli.visualize_ranklist (run with --help for everything)."""
import sys

from agreid.cli.visualize_ranklist import main

if __name__ == "__main__":
    sys.exit(main())
