#!/usr/bin/env python
"""Alias of tools/probe_attributes.py + tools/analyze_noise_mask.py --thresholds otsu; the logic lives in agreid.analysis.probe_pseudo_labels (run with --help for everything)."""
import sys

from agreid.analysis.probe_pseudo_labels import main

if __name__ == "__main__":
    sys.exit(main())
