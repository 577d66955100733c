"""Fixtures of the fault tests: private dataset copies, hostile files, a seeded deterministic run
(the tiny trained run, ``tiny_run``, is in tests/conftest.py)."""
import shutil

import pytest
import torch

from faultkit import SCHEDULE, Evil, tiny_args, train_net


@pytest.fixture(scope="session")
def deterministic_run(tiny_dataset_root, tmp_path_factory):
    """A finished run of ``faultkit.SCHEDULE`` (SEED 3, DETERMINISTIC) in a new interpreter: the
    uninterrupted run of test_kill.py, and one of the two runs of test_run_guard.py's same-seed
    test. Read it only."""
    out = tmp_path_factory.mktemp("deterministic_run")
    proc = train_net(*tiny_args(tiny_dataset_root, out, *SCHEDULE), fresh=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture
def dataset_copy(tiny_dataset_root, tmp_path):
    """A private copy of the tiny dataset root, free to damage."""
    root = tmp_path / "datasets"
    shutil.copytree(tiny_dataset_root, root)
    return root


@pytest.fixture
def marker(tmp_path):
    """The file a malicious checkpoint would create; tests assert it never appears."""
    return tmp_path / "pwned"


@pytest.fixture
def evil_checkpoint(tmp_path, marker):
    """A pickle whose "model" entry runs ``touch marker`` when unpickled without weights_only."""
    path = tmp_path / "evil.pth"
    torch.save({"model": Evil(marker), "iteration": 1}, path)
    return path


@pytest.fixture
def evil_real_checkpoint(tiny_run, tmp_path, marker):
    """A real trained checkpoint with the payload hidden in an extra key."""
    checkpoint = torch.load(tiny_run / "model_final.pth", weights_only=True)
    checkpoint["extra"] = Evil(marker)
    path = tmp_path / "model_final.pth"
    torch.save(checkpoint, path)
    return path
