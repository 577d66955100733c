"""Start one or many training processes: fastreid's ``launch``, plus ``torchrun``."""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
from fastreid.engine import launch as fastreid_launch
from fastreid.utils import comm

from ..compat import _leave_process_group


def _launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _init_from_torchrun() -> None:
    """Join the process group torchrun describes in the environment (NCCL on GPUs, else gloo)."""
    local_rank = int(os.environ["LOCAL_RANK"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= local_size
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    machine_rank = dist.get_rank() // local_size
    for i in range(dist.get_world_size() // local_size):
        group = dist.new_group(list(range(i * local_size, (i + 1) * local_size)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()


def share_cpu_threads(processes: int) -> Optional[int]:
    """Before starting ``processes`` CPU processes on this machine: give each its share of the cores
    through ``OMP_NUM_THREADS`` (read by torch in the new processes), as torchrun does, unless the
    user set it. Left alone, each process would start one thread per core and, together with its
    loader workers, oversubscribe the machine many times over. Returns the value set (None if
    nothing was set)."""
    if processes <= 1 or "OMP_NUM_THREADS" in os.environ or torch.cuda.is_available():
        return None
    threads = max(1, (os.cpu_count() or 1) // processes)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: Optional[str] = None, args: Sequence = ()) -> None:
    """Run ``main_func(*args)`` in every process of a (possibly distributed) job.

    Under ``torchrun`` the process joins the group torchrun set up. Otherwise this is fastreid's
    ``launch`` (``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``): NCCL on
    GPUs, gloo on a machine without them (``--num-gpus 2`` then runs two CPU processes, each
    with its share of the cores: :func:`share_cpu_threads`).
    """
    if _launched_by_torchrun():
        _init_from_torchrun()
        main_func(*args)
        _leave_process_group()
        return
    share_cpu_threads(num_gpus_per_machine)
    fastreid_launch(main_func, num_gpus_per_machine, num_machines=num_machines,
                    machine_rank=machine_rank, dist_url=dist_url, args=tuple(args))
