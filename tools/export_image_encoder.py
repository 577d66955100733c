#!/usr/bin/env python
"""Export AG-ReID's image encoder alone for deployment (docs/DEPLOY.md); the logic lives in agreid.cli.export_image_encoder (run with --help for everything)."""
import sys

from agreid.cli.export_image_encoder import main

if __name__ == "__main__":
    sys.exit(main())
