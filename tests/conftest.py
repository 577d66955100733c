"""Shared fixtures: the tiny synthetic dataset, generated once per test session."""
import os
import runpy
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    """The fault tests (tests/faults: mostly a command run as the user runs it) are slow-tier."""
    faults = os.path.join(REPO, "tests", "faults")
    for item in items:
        if str(item.path).startswith(faults + os.sep):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_handlers_on_closed_streams():
    """Drop log handlers left on an earlier test's captured (now closed) stdout/stderr.

    A tool run in-process under ``capsys`` sets up fastreid's loggers on the streams of that
    moment; a later test would otherwise get "--- Logging error ---" tracebacks on its stderr.
    """
    import logging

    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in list(logger.handlers):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)
    yield


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


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset_root, tmp_path_factory):
    """A finished one-epoch-per-phase AG-ReID run on the tiny dataset (random init):
    model_stage1.pth, model_final.pth, config.yaml, log.txt. Shared by every test that reads a
    trained run; copy it before changing anything in it. (tools/train_net.py in a process forked
    from a warm interpreter: tests/_warm.py.)"""
    kit = runpy.run_path(os.path.join(REPO, "tests", "faults", "faultkit.py"))
    out = tmp_path_factory.mktemp("tiny_run")
    proc = kit["train_net"](*kit["tiny_args"](tiny_dataset_root, out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out
