#!/usr/bin/env python
"""Pretrain SynthCLIP: a small open_clip CLIP, trained contrastively on the synthetic caption corpus; the logic lives in agreid.pretrain_clip (run with --help for everything)."""
import sys

from agreid.pretrain_clip import main

if __name__ == "__main__":
    sys.exit(main())
