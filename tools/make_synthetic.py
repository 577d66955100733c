#!/usr/bin/env python
"""Generate the deterministic synthetic occluded ReID dataset, or the caption corpus for SynthCLIP; the logic lives in agreid.data.make_synthetic (run with --help for everything)."""
import sys

from agreid.data.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main())
