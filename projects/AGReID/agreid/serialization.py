"""Reading and writing checkpoint files: loading never executes code, saving never leaves half a file.

Every checkpoint the project reads (training resume, ``MODEL.WEIGHTS``, ``--eval-only``, the
tools, the deployed-encoder loader, CLIP weights) goes through :func:`load_checkpoint_file`:

* a safetensors file (recognised by its header, whatever its name) is read with safetensors;
* anything else with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists,
  tuples and dicts only. A pickle that names any other Python callable (the way a malicious
  file runs code, e.g. ``os.system``) is refused with :class:`UnsafeCheckpointError` before
  that callable is ever looked up.

OpenAI's TorchScript CLIP archive is the one exception, read by ``torch.jit.load`` in
:mod:`agreid.modeling.clip_loader`.

Before any weights are loaded into a model (TorchScript's too), :func:`check_weights` refuses
tensors that hold NaN/Inf, or that the model holds as floating point but the file does not (a
cast to int would load as meaningless numbers), naming the first bad key
(:class:`BadWeightsError`).

:func:`save_checkpoint_file` writes through a temporary file that is flushed, fsynced and then
renamed over the target, so a crash or a full disk leaves the previous file as it was. The
project's one such writer is :func:`write_atomically` (text: :func:`write_text_atomically`): the
checkpoints, ``last_checkpoint``, the exported image encoder and the experiments' result files
go through it.
"""
from __future__ import annotations

import collections
import errno
import logging
import math
import os
import pickle
import re
import struct
from typing import IO, Any, Callable, Dict, Mapping, Optional

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "TEMP_SUFFIX",
    "BadWeightsError",
    "CheckpointFileError",
    "UnsafeCheckpointError",
    "all_finite",
    "check_weights",
    "is_safetensors_file",
    "load_checkpoint_file",
    "plain_values",
    "safetensors_metadata",
    "save_checkpoint_file",
    "write_atomically",
    "write_text_atomically",
]


class CheckpointFileError(ValueError):
    """A file that should hold a checkpoint cannot be read as one (the message names it)."""


class UnsafeCheckpointError(CheckpointFileError):
    """A checkpoint holds code (a reference to a Python callable); it was not loaded."""


class BadWeightsError(CheckpointFileError):
    """Weights that should be floating point are not, or hold NaN/Inf; they were not loaded."""


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def is_safetensors_file(path: str) -> bool:
    """Whether ``path`` starts like a safetensors file: an 8-byte header length, then JSON."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (header_length,) = struct.unpack("<Q", head[:8])
    return 8 + header_length <= size


def load_checkpoint_file(path: str) -> Any:
    """Read a checkpoint without executing anything it contains.

    Args:
        path: a ``torch.save`` file (zip or legacy format) or a safetensors file.

    Returns:
        What ``torch.save`` stored (plain containers of tensors and values), or for a
        safetensors file the dict of its tensors (see :func:`safetensors_metadata`).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnsafeCheckpointError: the file holds code (the message names the callable it refers to).
        CheckpointFileError: the file is no checkpoint, or is truncated.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path!r}: no such file")
    if is_safetensors_file(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointFileError(f"{path} is not a readable safetensors file: {error}") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        found = _GLOBAL.search(message)
        if found:
            raise UnsafeCheckpointError(
                f"{path} holds code (a reference to the Python callable '{found.group(1)}'), not only "
                "tensors and plain values, so it was not loaded: loading it could run that code. "
                "Load checkpoints only from sources you trust; this project's own checkpoints and "
                "exported encoders hold tensors and plain values only.") from None
        raise CheckpointFileError(
            f"{path} is not a checkpoint that can be read safely (it was not loaded): "
            f"{_last_line(message)}") from None
    except Exception as error:  # torch raises several types for a file that is no checkpoint
        raise CheckpointFileError(
            f"{path} is not a PyTorch checkpoint, or it is truncated: {type(error).__name__}: "
            f"{_last_line(str(error))}") from error


def safetensors_metadata(path: str) -> Dict[str, str]:
    """The string metadata stored in a safetensors file's header (empty when there is none)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        return dict(f.metadata() or {})


def plain_values(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python numbers/tensors, recursively.

    ``torch.load(weights_only=True)`` refuses numpy objects; fastreid passes evaluation
    metrics (numpy floats) to the checkpointer.
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency of torch here
        return value
    if isinstance(value, dict):
        # state_dict() returns an OrderedDict, which weights_only loading accepts: keep it.
        container = type(value) if type(value) in (dict, collections.OrderedDict) else dict
        return container((k, plain_values(v)) for k, v in value.items())
    if isinstance(value, list):
        return [plain_values(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_values(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


# What a file being written is called until it is complete (a killed writer leaves it behind).
TEMP_SUFFIX = ".tmp"


def _open_for_writing(path: str):
    """The file object a checkpoint is written through (a seam for the full-disk test)."""
    return open(path, "wb")


def save_checkpoint_file(data: Any, path: str) -> None:
    """``torch.save(data)`` to ``path`` atomically: temporary file, flush, fsync, rename.

    On any failure the temporary file is removed and ``path`` is left as it was.

    Raises:
        OSError: writing failed; a full disk says "no space left on device" with the path.
    """
    path = os.fspath(path)
    write_atomically(path, lambda f: torch.save(data, f),
                     disk_full=f"No space left on device while writing the checkpoint {path}; the "
                               f"partial file was removed and the previous checkpoint is unchanged")


def write_text_atomically(text: str, path: str) -> None:
    """Write a text file (UTF-8; e.g. ``last_checkpoint``, a results table) through :func:`write_atomically`."""
    write_atomically(path, lambda f: f.write(text), binary=False)


def write_atomically(path: str, write: Callable[[IO], Any], *, binary: bool = True, disk_full: str = "") -> None:
    """``write(file)`` into ``path + TEMP_SUFFIX``, flushed and fsynced, then renamed over ``path``.

    On any failure (``write`` raising included) the temporary file is removed and ``path`` is
    left as it was; once this returns, the rename itself is fsynced too (where the system can).

    Args:
        write: writes the whole content into the open file (bytes, or UTF-8 text when not ``binary``).
        disk_full: the message of the OSError raised on a full disk (default: names ``path``).

    Raises:
        OSError: writing failed; a full disk says "no space left on device" with the path.
    """
    path = os.fspath(path)
    tmp_path = path + TEMP_SUFFIX
    try:
        with (_open_for_writing(tmp_path) if binary else open(tmp_path, "w", encoding="utf-8")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as error:
        _remove_quietly(tmp_path)
        if _is_disk_full(error):
            raise OSError(errno.ENOSPC, disk_full or f"No space left on device while writing {path}; "
                                                     f"it is unchanged") from error
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


def all_finite(state_dict: Dict[str, Any]) -> Optional[str]:
    """The first floating-point entry of ``state_dict`` holding NaN/Inf, or None if all are finite."""
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            if not bool(torch.isfinite(value).all()):
                return name
        elif isinstance(value, float) and not math.isfinite(value):
            return name
    return None


def check_weights(state_dict: Mapping[str, Any], source: str,
                  reference: Optional[Mapping[str, Any]] = None, *, outcome: str = "") -> None:
    """Refuse weights that would load as meaningless numbers: the one check every loader makes.

    Args:
        state_dict: the weights read from the file (name -> tensor; other values are ignored).
        source: what the weights came from (a path), the start of the error message.
        reference: the model's own ``state_dict()`` (or name -> dtype), keyed like
            ``state_dict``. When given, only the entries it has are checked (the others are not
            loaded), and each entry it holds as floating point must be a floating tensor here:
            ``load_state_dict`` would silently cast an integer tensor into the model. Integer
            buffers of the model (counters, token ids) stay integers. Without it, the tensors
            that are floating point are checked.
        outcome: what the message says was not done (default: the weights were not loaded,
            with the likely cause).

    Raises:
        BadWeightsError: for the first bad entry, named: ``<source>: <key> holds NaN/Inf`` or
            ``<source>: <key> is int32, expected a floating tensor``.
    """
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        if reference is not None:
            if key not in reference:
                continue
            expected = reference[key]
            expected = expected.dtype if isinstance(expected, torch.Tensor) else expected
            if isinstance(expected, torch.dtype) and expected.is_floating_point and not value.is_floating_point():
                raise BadWeightsError(
                    f"{source}: {key} is {_dtype_name(value.dtype)}, expected a floating tensor "
                    f"({_dtype_name(expected)} in the model); "
                    + (outcome or "the weights were not loaded: they were cast on the way, use the original file"))
        if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
            raise BadWeightsError(
                f"{source}: {key} holds NaN/Inf; "
                + (outcome or "the weights were not loaded: the file is damaged, or was saved from a run "
                              "that diverged"))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _is_disk_full(error: BaseException) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); not possible everywhere, so best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_TORCH_ADVICE = ("Weights only load failed", "In PyTorch", "Re-running", "Check the documentation",
                 "Please file an issue", "(1)", "(2)", "This file can still be loaded")


def _last_line(message: str) -> str:
    """The line of torch's error message that says what is wrong (not its generic advice)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_TORCH_ADVICE)]
    useful = [line.replace("WeightsUnpickler error:", "").strip() for line in useful]
    useful = [line for line in useful if line]
    return (useful or lines or [message])[0]
