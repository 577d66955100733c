#!/usr/bin/env python
"""Images per second of the deployed image encoder through each back-end; the logic lives in
agreid.benchmarks.inference (run with --help for everything)."""
import sys

from agreid.benchmarks.inference import main

if __name__ == "__main__":
    sys.exit(main())
