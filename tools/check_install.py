#!/usr/bin/env python
"""Check the installed packages with ``pip check``, saying plainly what is expected.

fastreid 1.4.0's wheel pins torch 1.13.1, torchvision 0.14.1 and old releases of a few small
libraries; this project installs it with ``--no-deps`` and newer versions on purpose (``import
agreid`` repairs fastreid for them, docs/COMPAT.md). Those pins are reported in one sentence;
any *other* conflict is printed as pip reports it, and makes the exit status 1.

    python tools/check_install.py
"""
import re
import subprocess
import sys
from typing import List, Tuple

# fastreid's pins that the project overrides deliberately.
OVERRIDDEN = ("torch", "torchvision", "opencv-python-headless", "tabulate", "termcolor")
_FASTREID_PIN = re.compile(r"^fastreid 1\.4\.0 (?:has requirement|requires) ([A-Za-z0-9_.\-]+)")


def split_conflicts(report: str) -> Tuple[List[str], List[str]]:
    """``pip check``'s lines as (fastreid pins overridden on purpose, every other problem)."""
    expected, other = [], []
    for line in report.splitlines():
        line = line.strip()
        if not line or line.startswith("No broken requirements"):
            continue
        match = _FASTREID_PIN.match(line)
        if match and match.group(1).lower() in OVERRIDDEN:
            expected.append(match.group(1))
        else:
            other.append(line)
    return expected, other


def main() -> int:
    report = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    expected, other = split_conflicts(report.stdout + report.stderr)
    if expected:
        print(f"fastreid 1.4.0 pins {', '.join(sorted(set(expected)))} to old releases; this project "
              f"overrides those pins on purpose (fastreid is installed with --no-deps and repaired by "
              f"`import agreid`, see docs/COMPAT.md).")
    for line in other:
        print(f"pip check: {line}", file=sys.stderr)
    return 1 if other else 0


if __name__ == "__main__":
    sys.exit(main())
