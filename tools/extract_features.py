#!/usr/bin/env python
"""Features of your own images: safetensors file of features + CSV of the image paths; the logic lives in agreid.cli.extract_features (run with --help for everything)."""
import sys

from agreid.cli.extract_features import main

if __name__ == "__main__":
    sys.exit(main())
