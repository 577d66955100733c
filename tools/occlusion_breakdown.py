#!/usr/bin/env python
"""mAP and Rank-1 of trained runs broken down by how the query is occluded (synthetic data); the logic lives in agreid.analysis.occlusion_breakdown (run with --help for everything)."""
import sys

from agreid.analysis.occlusion_breakdown import main

if __name__ == "__main__":
    sys.exit(main())
