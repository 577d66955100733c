#!/usr/bin/env python
"""Convert a checkpoint of CLIP-ReID's public code into this project's format (the baseline config); the logic lives in agreid.cli.convert_clipreid (run with --help for everything)."""
import sys

from agreid.cli.convert_clipreid import main

if __name__ == "__main__":
    sys.exit(main())
