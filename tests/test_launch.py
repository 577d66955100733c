"""--num-gpus N on a machine without GPUs: the N CPU processes share the cores, as under torchrun."""
import sys

import pytest

import agreid.engine.launch  # noqa: F401  (agreid.engine.launch the name is the function)

launch = sys.modules["agreid.engine.launch"]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(launch.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_cpu_processes_get_their_share_of_the_cores(no_cuda, monkeypatch):
    assert launch.share_cpu_threads(4) == 2
    assert launch.os.environ["OMP_NUM_THREADS"] == "2"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert launch.share_cpu_threads(16) == 1  # never 0


def test_one_process_or_the_users_setting_is_left_alone(no_cuda, monkeypatch):
    assert launch.share_cpu_threads(1) is None and "OMP_NUM_THREADS" not in launch.os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch.share_cpu_threads(4) is None and launch.os.environ["OMP_NUM_THREADS"] == "3"


def test_gpu_processes_are_left_alone(no_cuda, monkeypatch):
    monkeypatch.setattr(launch.torch.cuda, "is_available", lambda: True)
    assert launch.share_cpu_threads(4) is None and "OMP_NUM_THREADS" not in launch.os.environ


def test_launch_shares_the_cores_before_it_starts_the_processes(no_cuda, monkeypatch):
    seen = {}

    def fake_fastreid_launch(main_func, num_gpus_per_machine, **kwargs):
        seen["threads"] = launch.os.environ.get("OMP_NUM_THREADS")

    monkeypatch.setattr(launch, "fastreid_launch", fake_fastreid_launch)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    launch.launch(print, 2)
    assert seen["threads"] == "4"
