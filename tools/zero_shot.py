#!/usr/bin/env python
"""Does SynthCLIP know words? Zero-shot attribute classification and retrieval on held-out people; the logic lives in agreid.analysis.zero_shot (run with --help for everything)."""
import sys

from agreid.analysis.zero_shot import main

if __name__ == "__main__":
    sys.exit(main())
