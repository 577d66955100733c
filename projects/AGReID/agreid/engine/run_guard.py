"""What a run sets up before any work: its seed, determinism, and a lock on its output folder."""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import socket
import time
from typing import Optional, Set

import numpy as np
import torch

from ..serialization import TEMP_SUFFIX, write_text_atomically

logger = logging.getLogger(__name__)

LOCK_FILE = "run.lock"

# A lock file that is empty or unreadable for this long was left by a start-up that failed
# while writing it (e.g. a full disk), not by a run that is writing it right now.
STALE_EMPTY_LOCK_S = 10.0

__all__ = ["LOCK_FILE", "OutputDirError", "OutputDirLock", "OutputDirSnapshot", "epoch_seed", "resolve_seed",
           "seed_everything", "seed_generators", "write_failure_message"]


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
        self._created_dir = False

    def acquire(self) -> "OutputDirLock":
        """Create the folder and the lock file, or raise :class:`OutputDirError`.

        A lock that cannot be written completely (a full disk) is removed again: it would
        otherwise refuse every later run in the folder.
        """
        try:
            self._created_dir = not os.path.isdir(self.output_dir)
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
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(json.dumps(record).encode())
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as error:
                self._remove_own_lock_file()
                raise OutputDirError(write_failure_message(self.output_dir, self.path, error)) from error
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
        """Remove the lock file if this process holds it (and the folder, if this lock created
        it and nothing else was written there)."""
        if self._held:
            self._held = False
            try:
                if self._read().get("pid") == os.getpid():
                    os.remove(self.path)
                if self._created_dir and not os.listdir(self.output_dir):
                    os.rmdir(self.output_dir)
            except OSError:
                pass

    def _remove_own_lock_file(self) -> None:
        try:
            os.remove(self.path)
            if self._created_dir and not os.listdir(self.output_dir):
                os.rmdir(self.output_dir)
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
        if not holder and self._age() >= STALE_EMPTY_LOCK_S:
            # Empty or unparsable: a start-up failed while writing it (e.g. a full disk).
            logger.warning("Taking over %s: it is empty or unreadable, left by a run that failed at "
                           "start-up.", self.path)
            return self._remove_stale()
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        if _pid_alive(holder["pid"]):
            return False
        logger.warning("Taking over %s, left by run pid %d on %s, which is no longer running.",
                       self.path, holder["pid"], holder["host"])
        return self._remove_stale()

    def _remove_stale(self) -> bool:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        return True

    def _age(self) -> float:
        try:
            return time.time() - os.path.getmtime(self.path)
        except OSError:
            return 0.0

    def _in_use_message(self) -> str:
        holder = self._read()
        who = (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
               if holder else "another run")
        return (f"OUTPUT_DIR {self.output_dir!r} is in use by a running training ({who}): two runs in "
                f"one folder overwrite each other's checkpoints, config.yaml and log. Use another "
                f"OUTPUT_DIR, or remove {self.path} if that run is gone.")


def write_failure_message(output_dir: str, path: str, error: OSError) -> str:
    """The one-line message for a file of the run that could not be written."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"No space left on the disk of OUTPUT_DIR {output_dir!r} (writing {path} failed: "
                f"{error.strerror}). Free some space there, or choose another OUTPUT_DIR.")
    return (f"OUTPUT_DIR {output_dir!r} is not writable ({error.strerror}, writing {path}): checkpoints "
            f"and logs could not be saved. Choose a writable OUTPUT_DIR.")


class OutputDirSnapshot:
    """What ``OUTPUT_DIR`` held before a command started, so a refused command leaves it as it was.

    A command refused at start-up (a config that does not fit the checkpoint, a resume under
    another schedule, a full disk, ...) has already written ``config.yaml``, the log and the
    event file by then. :meth:`restore` puts back ``config.yaml`` as it was, cuts the logs back
    to their old length and removes every file the command added; the lock file is left to
    :class:`OutputDirLock`.
    """

    TEXT_FILES = ("config.yaml",)

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self._entries: Set[str] = set(_listdir(output_dir))
        self._texts = {}
        self._sizes = {}
        for name in self._entries:
            path = os.path.join(output_dir, name)
            if name in self.TEXT_FILES and os.path.isfile(path):
                with open(path, "rb") as f:
                    self._texts[name] = f.read()
            elif name.startswith("log.txt") and os.path.isfile(path):
                self._sizes[name] = os.path.getsize(path)

    def restore(self) -> None:
        """Put the folder back as it was when the snapshot was taken (best effort, never raises)."""
        for name in set(_listdir(self.output_dir)) - self._entries - {LOCK_FILE}:
            path = os.path.join(self.output_dir, name)
            try:
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
            except OSError:
                pass
        for name, data in self._texts.items():
            path = os.path.join(self.output_dir, name)
            try:
                with open(path, "rb") as f:
                    unchanged = f.read() == data
                if not unchanged:
                    write_text_atomically(data.decode(), path)
            except (OSError, UnicodeDecodeError):
                pass
        for name, size in self._sizes.items():
            try:
                os.truncate(os.path.join(self.output_dir, name), size)
            except OSError:
                pass


def _listdir(path: str):
    try:
        return os.listdir(path)
    except OSError:
        return []


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
