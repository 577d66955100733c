"""What a run sets up before any work: its seed, determinism, and a lock on its output folder."""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import socket
import time
from typing import Optional

import numpy as np
import torch

from ..serialization import TEMP_SUFFIX

logger = logging.getLogger(__name__)

LOCK_FILE = "run.lock"

__all__ = ["LOCK_FILE", "OutputDirError", "OutputDirLock", "epoch_seed", "resolve_seed", "seed_everything",
           "seed_generators"]


class OutputDirError(RuntimeError):
    """``OUTPUT_DIR`` cannot be used: not writable, or in use by another run."""


def resolve_seed(cfg) -> int:
    """``cfg.SEED``, or a fresh one written into ``cfg`` when it is negative (``cfg`` defrosted)."""
    if int(cfg.SEED) < 0:
        cfg.SEED = int.from_bytes(os.urandom(3), "big")
    return int(cfg.SEED)


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> None:
    """Seed python, numpy and torch with ``seed + rank``; optionally deterministic kernels only.

    Data-loader workers and fastreid's samplers draw their seeds from these generators, so a
    fixed seed fixes them too.
    """
    value = int(seed) + int(rank)
    seed_generators(value)
    if deterministic:
        # cuBLAS needs this to be deterministic; harmless on the CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    logger.info("Seed %d (SEED %d + rank %d)%s", value, seed, rank,
                ", deterministic algorithms only" if deterministic else "")


def seed_generators(value: int) -> None:
    """Seed python's, numpy's and torch's global generators with ``value``."""
    random.seed(value)
    np.random.seed(value % 2 ** 32)
    torch.manual_seed(value)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch`` of a run seeded with ``seed``: a function of the two alone.

    With ``DETERMINISTIC True`` every epoch's data order, augmentation and other randomness
    start from it, so a run resumed from the checkpoint of epoch ``e - 1`` repeats epoch ``e``
    exactly as the uninterrupted run did.
    """
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % 2 ** 31


class OutputDirLock:
    """An exclusive lock file ``OUTPUT_DIR/run.lock`` naming the run that holds it.

    A second run in the same folder refuses with :class:`OutputDirError` naming the first
    (pid, host, start time). A lock left by a run that died on this host (its pid is gone) is
    taken over with a warning; one from another host must be removed by hand.
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_FILE)
        self._held = False

    def acquire(self) -> "OutputDirLock":
        """Create the folder and the lock file, or raise :class:`OutputDirError`."""
        try:
            os.makedirs(self.output_dir, exist_ok=True)
        except OSError as error:
            raise OutputDirError(f"OUTPUT_DIR {self.output_dir!r} cannot be created: {error.strerror}") from error
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over_stale():
                    raise OutputDirError(self._in_use_message()) from None
                continue
            except OSError as error:
                raise OutputDirError(
                    f"OUTPUT_DIR {self.output_dir!r} is not writable ({error.strerror}): checkpoints and "
                    f"logs could not be saved. Choose a writable OUTPUT_DIR.") from error
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self._held = True
            self._remove_partial_saves()
            return self
        raise OutputDirError(self._in_use_message())

    def _remove_partial_saves(self) -> None:
        """Remove the ``*.tmp`` files a killed run left half-written (no other run writes here now)."""
        for name in sorted(os.listdir(self.output_dir)):
            if name == f"last_checkpoint{TEMP_SUFFIX}" or name.endswith(f".pth{TEMP_SUFFIX}"):
                path = os.path.join(self.output_dir, name)
                os.remove(path)
                logger.warning("Removed %s: a checkpoint a killed run had not finished writing", path)

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self._held:
            self._held = False
            try:
                if self._read().get("pid") == os.getpid():
                    os.remove(self.path)
            except OSError:
                pass

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _take_over_stale(self) -> bool:
        holder = self._read()
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        if _pid_alive(holder["pid"]):
            return False
        logger.warning("Taking over %s, left by run pid %d on %s, which is no longer running.",
                       self.path, holder["pid"], holder["host"])
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        return True

    def _in_use_message(self) -> str:
        holder = self._read()
        who = (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
               if holder else "another run")
        return (f"OUTPUT_DIR {self.output_dir!r} is in use by a running training ({who}): two runs in "
                f"one folder overwrite each other's checkpoints, config.yaml and log. Use another "
                f"OUTPUT_DIR, or remove {self.path} if that run is gone.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as error:
        return error.errno != errno.ESRCH
    return True


def held_lock(output_dir: str) -> Optional[dict]:
    """The record in ``output_dir``'s lock file, or None when there is none."""
    lock = OutputDirLock(output_dir)
    return lock._read() or None
