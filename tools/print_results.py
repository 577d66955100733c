#!/usr/bin/env python
"""Print the last evaluation of finished training runs as one table; the logic lives in agreid.experiments.print_results (run with --help for everything)."""
import sys

from agreid.experiments.print_results import main

if __name__ == "__main__":
    sys.exit(main())
