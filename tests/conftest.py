"""Shared fixtures: the tiny synthetic dataset, generated once per test session."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_dataset_root(tmp_path_factory):
    """A dataset root holding ``SyntheticOccluded`` (preset tiny, seed 0)."""
    from agreid.data import synthetic

    root = tmp_path_factory.mktemp("datasets")
    synthetic.generate(root, preset="tiny", seed=0)
    return str(root)


@pytest.fixture
def repo_root():
    """The repository root (where tools/ and configs/ are)."""
    return REPO


def python_exe():
    """The interpreter running the tests, for subprocesses."""
    return sys.executable
