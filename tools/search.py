#!/usr/bin/env python
"""Search a gallery of your own images for the people in query images (top-k CSV + picture); the logic lives in agreid.cli.search (run with --help for everything)."""
import sys

from agreid.cli.search import main

if __name__ == "__main__":
    sys.exit(main())
