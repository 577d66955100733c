#!/usr/bin/env python
"""Diagnostics of the text features T that stage 2's image-to-text loss L_CE classifies with; the logic lives in agreid.analysis.diagnose_text_features (run with --help for everything)."""
import sys

from agreid.analysis.diagnose_text_features import main

if __name__ == "__main__":
    sys.exit(main())
