#!/usr/bin/env python
"""Does the noise mask drop the slots whose body region is hidden (stage 2, synthetic data); the logic lives in agreid.analysis.analyze_noise_mask (run with --help for everything)."""
import sys

from agreid.analysis.analyze_noise_mask import main

if __name__ == "__main__":
    sys.exit(main())
