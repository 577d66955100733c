#!/usr/bin/env python
"""Do the learned per-identity tokens V carry the true attributes, and which slot carries which; the logic lives in agreid.analysis.probe_attributes (run with --help for everything)."""
import sys

from agreid.analysis.probe_attributes import main

if __name__ == "__main__":
    sys.exit(main())
