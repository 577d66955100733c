"""`make install`'s last step: fastreid's known pins in one sentence, any other conflict shown."""
import os
import runpy
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "check_install.py")

PIP_CHECK = """\
fastreid 1.4.0 has requirement torch==1.13.1, but you have torch 2.14.1.
fastreid 1.4.0 requires termcolor<3.0.0,>=2.2.0, but you have termcolor 3.3.0 which is incompatible.
fastreid 1.4.0 has requirement opencv-python-headless<5.0.0.0,>=4.7.0.68, but you have opencv-python-headless 5.1.0.95.
fastreid 1.4.0 has requirement faiss-gpu==1.7.2, but you have faiss-gpu 1.8.0.
open-clip-torch 3.2.0 requires timm, which is not installed.
"""


def test_fastreid_pins_are_expected_and_other_conflicts_are_kept():
    split_conflicts = runpy.run_path(TOOL)["split_conflicts"]
    expected, other = split_conflicts(PIP_CHECK)
    assert expected == ["torch", "termcolor", "opencv-python-headless"]
    # A pin the project does not override, and another package's problem, stay visible.
    assert other == ["fastreid 1.4.0 has requirement faiss-gpu==1.7.2, but you have faiss-gpu 1.8.0.",
                     "open-clip-torch 3.2.0 requires timm, which is not installed."]
    assert split_conflicts("No broken requirements found.\n") == ([], [])


def test_this_install_has_only_the_expected_conflicts():
    proc = subprocess.run([sys.executable, TOOL], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stdout + proc.stderr
    assert "overrides those pins on purpose" in proc.stdout and "torch" in proc.stdout
