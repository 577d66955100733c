"""Every fix fastreid 1.4.0 needs on Python 3.11+, torch 2.x, numpy 2.x and CPU-only machines.

fastreid's last release predates all of these; it is installed with ``pip install --no-deps``
and patched here, once, when ``import agreid`` runs :func:`apply`. Each fix is one function,
named after what it repairs, and has a test in ``tests/test_compat.py`` that fails without it.
Nothing of fastreid is copied: functions are wrapped, defaults changed, or a module global
is pointed at a corrected callable.
"""
from __future__ import annotations

import collections
import collections.abc
import functools
import logging
import sys
import types

import torch

logger = logging.getLogger(__name__)

_APPLIED = False


def _fix_removed_imports() -> None:
    """``torch._six`` and ``collections.Mapping`` are gone; fastreid.data imports both."""
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        six.int_classes = int
        six.inf = float("inf")
        sys.modules["torch._six"] = six
        torch._six = six
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


class _PrefetchFailure:
    """An exception of the prefetch thread, queued for the thread that consumes the batches."""

    def __init__(self, error: BaseException):
        self.error = error


def _fix_dataloader_without_cuda() -> None:
    """``DataLoaderX`` creates a CUDA stream and calls ``cuda.set_device``: use neither on CPU.
    Its prefetch thread swallowed exceptions (a worker error, a deleted image) and the run
    hung in ``queue.get``: the consumer now gets the exception and the queue ends."""
    from fastreid.data import data_utils

    original_init = data_utils.DataLoaderX.__init__
    original_preload = data_utils.DataLoaderX.preload
    original_next = data_utils.DataLoaderX.__next__
    original_run = data_utils.BackgroundGenerator.run
    original_next_item = data_utils.BackgroundGenerator.next

    @functools.wraps(original_init)
    def __init__(self, local_rank, **kwargs):
        if torch.cuda.is_available():
            return original_init(self, local_rank, **kwargs)
        kwargs["pin_memory"] = False
        torch.utils.data.DataLoader.__init__(self, **kwargs)
        self.stream = None
        self.local_rank = local_rank

    @functools.wraps(original_preload)
    def preload(self):
        if self.stream is not None:
            return original_preload(self)
        self.batch = next(self.iter, None)

    @functools.wraps(original_next)
    def __next__(self):
        if self.stream is not None:
            return original_next(self)
        batch = self.batch
        if batch is None:
            raise StopIteration
        self.preload()
        return batch

    @functools.wraps(original_run)
    def run(self):
        # fastreid's thread dies on any exception without a word to the consumer, which then
        # waits in queue.get forever: hand the exception over, then end the queue.
        try:
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            for item in self.generator:
                if self.exit_event.is_set():
                    break
                self.queue.put(item)
        except BaseException as error:  # noqa: B902 - re-raised in the consumer
            self.queue.put(_PrefetchFailure(error))
        finally:
            self.queue.put(None)

    @functools.wraps(original_next_item)
    def next_item(self):
        while True:
            item = self.queue.get()
            if isinstance(item, _PrefetchFailure):
                if self.exit_event.is_set():
                    continue  # shutting down: the consumer no longer wants items
                raise item.error
            if item is None:
                raise StopIteration
            return item

    data_utils.DataLoaderX.__init__ = __init__
    data_utils.DataLoaderX.preload = preload
    data_utils.DataLoaderX.__next__ = __next__
    data_utils.BackgroundGenerator.run = run
    data_utils.BackgroundGenerator.next = next_item


def _fix_image_reading() -> None:
    """fastreid reads images without a target mode: RGBA/CMYK arrive with 4 channels, palette
    images as grey palette indices, and 16-bit PNGs raise in the middle of a run. Images are
    now decoded to RGB exactly as the pre-training check decodes them, and a read error names
    the file."""
    from fastreid.data import common

    from .data.datasets import read_image

    common.read_image = read_image


def _fix_cython_compile_at_start() -> None:
    """``ReidEvaluator`` runs ``make`` inside site-packages and ``sys.exit(1)``s when it can't."""
    from fastreid.evaluation import reid_evaluation

    def _compile_dependencies(self):
        logger.debug("fastreid's Cython ranker is not built; evaluation uses the Python ranker.")

    reid_evaluation.ReidEvaluator._compile_dependencies = _compile_dependencies


def _fix_contiguous_optimizer() -> None:
    """torch>=2 ``zero_grad`` sets grads to None, so the contiguous buffer never steps: default off."""
    from fastreid.solver import build

    build.build_optimizer.__defaults__ = (False,)


def _fix_distance_helpers() -> None:
    """``compute_euclidean_distance`` uses the removed ``addmm_(beta, alpha, ...)`` form;
    ``compute_jaccard_distance`` moves features to CUDA unconditionally."""
    from fastreid.utils import compute_dist

    @torch.no_grad()
    def compute_euclidean_distance(features, others):
        dist_m = (features.pow(2).sum(dim=1, keepdim=True)
                  + others.pow(2).sum(dim=1, keepdim=True).t())
        dist_m.addmm_(features, others.t(), beta=1, alpha=-2)
        return dist_m.cpu().numpy()

    original_jaccard = compute_dist.compute_jaccard_distance

    @functools.wraps(original_jaccard)
    def compute_jaccard_distance(features, k1=20, k2=6, search_option=0, fp16=False):
        if not torch.cuda.is_available():
            search_option = 3  # faiss on the CPU
        return original_jaccard(features, k1=k1, k2=k2, search_option=search_option, fp16=fp16)

    compute_dist.compute_euclidean_distance = compute_euclidean_distance
    compute_dist.compute_jaccard_distance = compute_jaccard_distance


def _fix_amp_without_cuda() -> None:
    """``AMPTrainer`` asserts CUDA; on a CPU it now trains in fp32 (bf16 autocast is slower here)."""
    from fastreid.engine import train_loop

    original_run_step = train_loop.AMPTrainer.run_step
    warned = []

    @functools.wraps(original_run_step)
    def run_step(self):
        if torch.cuda.is_available():
            return original_run_step(self)
        if not warned:
            logger.warning("SOLVER.AMP.ENABLED is set but there is no CUDA device: training in fp32.")
            warned.append(True)
        return train_loop.SimpleTrainer.run_step(self)

    train_loop.AMPTrainer.run_step = run_step


def _distributed_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank,
                        dist_url, args):
    """fastreid's worker, with gloo on machines without enough GPUs instead of asserting CUDA."""
    import torch.distributed as dist
    from fastreid.utils import comm

    _use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= num_gpus_per_machine
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(backend="nccl" if _use_cuda else "gloo", init_method=dist_url,
                            world_size=world_size, rank=global_rank)
    if _use_cuda:
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        ranks_on_i = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        group = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    main_func(*args)
    _leave_process_group()


def _leave_process_group() -> None:
    """Wait for every process, then tear the group down: a process that exits with gloo's
    threads still running aborts ("terminate called without an active exception")."""
    import torch.distributed as dist
    from fastreid.utils import comm

    comm.synchronize()
    dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None


def _fix_launch_without_cuda() -> None:
    """``launch`` hard-codes NCCL and ``cuda.set_device``: multi-process runs on CPU use gloo."""
    import fastreid.engine  # noqa: F401  (the package re-exports a *function* named launch)

    sys.modules["fastreid.engine.launch"]._distributed_worker = _distributed_worker


def _ddp(model, device_ids=None, broadcast_buffers=False, **kwargs):
    """DistributedDataParallel that tolerates phase-idle parameters and CPU modules.

    With ``broadcast_buffers=False`` (fastreid's choice) torch no longer copies rank 0's buffers
    when wrapping either: they are copied here once (e.g. the prompt's template embedding, drawn
    on each rank), and :func:`sync_buffers` copies them again before each evaluation.
    """
    from torch.nn.parallel import DistributedDataParallel

    on_cuda = next(model.parameters()).is_cuda
    wrapped = DistributedDataParallel(model, device_ids=device_ids if on_cuda else None,
                                      broadcast_buffers=broadcast_buffers,
                                      find_unused_parameters=True, **kwargs)
    sync_buffers(model)
    return wrapped


def sync_buffers(model) -> None:
    """Give every process rank 0's buffers (BN running statistics, text features, ...).

    Each process updates its own buffers from its own batches; evaluation shards the test set
    over the processes, so they must agree first. Nothing happens in a single process.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    module = getattr(model, "module", model)
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def _fix_ddp_unused_parameters() -> None:
    """``DefaultTrainer`` wraps DDP without ``find_unused_parameters``: a two-phase model stops
    with "Expected to have finished reduction"; and it passes CUDA device ids for CPU models."""
    from fastreid.engine import defaults

    defaults.DistributedDataParallel = _ddp


class _TorchvisionTransforms(types.ModuleType):
    """``torchvision.transforms`` as fastreid's transform builder expects it (pre-0.13 names)."""

    def __init__(self):
        super().__init__("torchvision.transforms")

    def __getattr__(self, name):
        import torchvision.transforms as T

        return getattr(T, name)

    @staticmethod
    def RandomAffine(*args, resample=None, fillcolor=None, **kwargs):
        import torchvision.transforms as T

        if fillcolor is not None:
            kwargs.setdefault("fill", fillcolor)
        return T.RandomAffine(*args, **kwargs)


def _fix_random_affine() -> None:
    """``RandomAffine(resample=, fillcolor=)`` was renamed in torchvision 0.13: TypeError today."""
    from fastreid.data.transforms import build

    build.T = _TorchvisionTransforms()


def _fix_checkpoint_weights_only() -> None:
    """fastreid's checkpointer calls ``torch.load`` with the default of the installed torch
    (``weights_only=False`` before 2.6, or under ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``): a
    pickle checkpoint could then execute code. Every fastreid checkpointer now reads files
    through :func:`agreid.serialization.load_checkpoint_file`, which never does."""
    from fastreid.utils import checkpoint

    from .serialization import load_checkpoint_file

    def _load_file(self, f: str):
        return load_checkpoint_file(f)

    checkpoint.Checkpointer._load_file = _load_file


def _fix_nonfinite_loss_message() -> None:
    """fastreid's ``FloatingPointError`` prints every loss at once; it now names the loss
    that is NaN/Inf and the iteration, and says what was kept."""
    import math

    from fastreid.engine import train_loop

    original_write_metrics = train_loop.SimpleTrainer._write_metrics

    @functools.wraps(original_write_metrics)
    def _write_metrics(self, loss_dict, data_time):
        try:
            return original_write_metrics(self, loss_dict, data_time)
        except FloatingPointError:
            values = {name: float(value.detach().float().mean()) for name, value in loss_dict.items()}
            bad = [name for name, value in values.items() if not math.isfinite(value)]
            good = ", ".join(f"{name} = {values[name]:.4g}" for name in values if name not in bad)
            raise FloatingPointError(
                f"Loss became NaN/Inf at iteration {self.iter}: "
                + ", ".join(f"{name} = {values[name]}" for name in bad)
                + (f" (finite: {good})" if good else "")
                + ". Training stopped before the optimizer step.") from None

    train_loop.SimpleTrainer._write_metrics = _write_metrics


def _fix_eval_period_zero() -> None:
    """``TEST.EVAL_PERIOD 0`` divides by zero at the end; it now means "evaluate at the end only"."""
    from fastreid.engine import hooks

    original_after_train = hooks.EvalHook.after_train

    @functools.wraps(original_after_train)
    def after_train(self):
        if self._period > 0:
            return original_after_train(self)
        if self.trainer.epoch + 1 >= self.trainer.max_epoch:
            self._do_eval()
        del self._func

    hooks.EvalHook.after_train = after_train


def _silence_deprecation_noise() -> None:
    """fastreid's ``ToTensor`` and ``AMPTrainer`` warn on every worker and run about APIs that
    still work (``TypedStorage``, ``torch.cuda.amp.GradScaler``): keep the log readable."""
    import warnings

    warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.", category=FutureWarning)
    warnings.filterwarnings("ignore", message="torch.cuda.amp.GradScaler is enabled, but CUDA",
                            category=UserWarning)


FIXES = (
    _fix_removed_imports,
    _fix_dataloader_without_cuda,
    _fix_image_reading,
    _fix_cython_compile_at_start,
    _fix_contiguous_optimizer,
    _fix_distance_helpers,
    _fix_amp_without_cuda,
    _fix_launch_without_cuda,
    _fix_ddp_unused_parameters,
    _fix_random_affine,
    _fix_checkpoint_weights_only,
    _fix_eval_period_zero,
    _fix_nonfinite_loss_message,
    _silence_deprecation_noise,
)


def apply() -> None:
    """Apply every fix in :data:`FIXES`, once per process."""
    global _APPLIED
    if _APPLIED:
        return
    for fix in FIXES:
        fix()
    _APPLIED = True
