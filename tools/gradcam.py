#!/usr/bin/env python
"""Heat maps of what one or two models look at (the paper's figure 3), with the grad-cam package; the logic lives in agreid.cli.gradcam (run with --help for everything)."""
import sys

from agreid.cli.gradcam import main

if __name__ == "__main__":
    sys.exit(main())
