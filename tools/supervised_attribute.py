#!/usr/bin/env python
"""How well can SynthCLIP's image tower learn one attribute when trained on that alone? The logic lives in agreid.analysis.supervised_attribute (run with --help for everything)."""
import sys

from agreid.analysis.supervised_attribute import main

if __name__ == "__main__":
    sys.exit(main())
