"""Progress that tells the truth: loaders shown as progress, and a training log with a per-phase ETA.

- :class:`Progress` wraps a finite loader (the stage-1 feature cache pass, the test loaders):
  a tqdm bar on a terminal, periodic lines in the log otherwise, and one summary line at the end.
- :class:`PhaseMetricPrinter` replaces fastreid's ``CommonMetricPrinter`` for models with
  phases: each phase's remaining steps are timed at that phase's own pace, and a phase that has
  not run yet is said to be untimed instead of being guessed from the other phase's pace.
"""
from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fastreid.utils import comm
from fastreid.utils.events import CommonMetricPrinter, get_event_storage
from tqdm import tqdm

from ..phases import ALIGN, GUIDE, PhaseSchedule

logger = logging.getLogger(__name__)

PHASE_LABELS = {ALIGN: "stage 1", GUIDE: "stage 2"}


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
    """Wrap a finite ``loader`` so that iterating it shows its progress (main process only).

    On a terminal (stderr is a tty) a tqdm bar; otherwise (a log file, ``nohup``, a job
    scheduler) a log line every :attr:`log_every_s` seconds with the batches done and the ETA.
    Either way one line at the end says how many batches took how long. Every other attribute
    is the loader's, so fastreid code that inspects the loader still works.

    Args:
        loader: a loader with a length.
        desc: what is being computed, e.g. ``"stage-1 feature cache"``.
        clock: seconds, for the log lines (tests pass a fake one).
    """

    log_every_s = 30.0

    def __init__(self, loader, desc: str, clock: Callable[[], float] = time.perf_counter):
        self._loader, self._desc, self._clock = loader, desc, clock

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __iter__(self):
        return self._iterate()

    def _iterate(self):
        iterator = self._loader  # DataLoaderX reads its first batch in iter(), which can fail
        try:
            iterator = iter(self._loader)
            if not comm.is_main_process():
                yield from _batches(iterator)
                return
            yield from self._show(_batches(iterator))
        finally:
            # Ended, failed or closed: end the loader's workers now. When the loader fails, the
            # traceback holds this frame and its iterator, and left to the garbage collector the
            # workers would linger, each joined with a timeout of seconds when collected.
            end_loader(iterator)

    def _show(self, iterator):
        total = len(self._loader)
        start = last_log = self._clock()
        done = 0
        if sys.stderr.isatty():
            for done, batch in enumerate(tqdm(iterator, desc=self._desc, total=total,
                                              dynamic_ncols=True, leave=False), start=1):
                yield batch
        else:
            logger.info("%s: %d batches", self._desc, total)
            for done, batch in enumerate(iterator, start=1):
                yield batch
                now = self._clock()
                if now - last_log >= self.log_every_s and done < total:
                    last_log = now
                    pace = (now - start) / done
                    logger.info("%s: %d/%d batches (%.0f%%), %s elapsed, eta %s", self._desc, done, total,
                                100.0 * done / max(total, 1), _duration(now - start),
                                _duration(pace * (total - done)))
        elapsed = self._clock() - start
        logger.info("%s: %d batches in %s (%.4f s/batch)", self._desc, done, _duration(elapsed),
                    elapsed / max(done, 1))


def _batches(iterator):
    """The batches of an iterator without calling ``iter()`` on it again: ``DataLoaderX`` is its
    own iterator, and its ``__iter__`` starts a new pass with new worker processes."""
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch


def stop_prefetching(loader) -> None:
    """Stop the prefetch thread of fastreid's ``DataLoaderX`` once it has started (anything else:
    nothing to do)."""
    if getattr(loader, "iter", None) is not None and hasattr(loader, "shutdown"):
        loader.shutdown()


def end_loader(iteration) -> None:
    """End a loader's iteration now: fastreid's prefetch thread (``DataLoaderX``, which is its own
    iterator and keeps torch's in ``.iter.generator``) and torch's worker processes."""
    stop_prefetching(iteration)
    torch_iterator = getattr(getattr(iteration, "iter", None), "generator", iteration)
    shutdown = getattr(torch_iterator, "_shutdown_workers", None)  # torch's multi-process iterator
    if shutdown is not None:
        shutdown()


Span = Tuple[str, int, int]  # (phase, first global iteration, end global iteration)


def phase_spans(schedule: PhaseSchedule, max_iter: int) -> List[Span]:
    """The global iterations ``[start, end)`` of each phase of ``schedule`` (empty phases left out)."""
    boundary = schedule.iterations_before(schedule.stage1_epochs)
    spans = [(ALIGN, 0, boundary), (GUIDE, boundary, max_iter)]
    return [span for span in spans if span[2] > span[1]]


def phase_paces(step_times: Sequence[Tuple[float, float]], spans: Sequence[Span],
                window: int = 1000) -> Dict[str, Optional[float]]:
    """Seconds per step of each phase: the median of its last ``window`` step times.

    Args:
        step_times: ``(seconds, iteration)`` pairs (an ``EventStorage`` history's ``values()``).
        spans: the phases' iteration ranges (:func:`phase_spans`).
        window: how many of a phase's latest steps count.

    Returns:
        ``{phase: seconds per step}``, ``None`` for a phase with no timed step.
    """
    paces: Dict[str, Optional[float]] = {}
    for phase, start, end in spans:
        own = [seconds for seconds, iteration in step_times if start <= iteration < end][-window:]
        paces[phase] = float(np.median(own)) if own else None
    return paces


def remaining_steps(iteration: int, spans: Sequence[Span]) -> Dict[str, int]:
    """Steps of each phase still to run after global iteration ``iteration`` has run."""
    return {phase: max(end - max(start, iteration + 1), 0) for phase, start, end in spans}


class PhaseMetricPrinter(CommonMetricPrinter):
    """fastreid's training log line with an ETA that knows the run's phases.

    fastreid's printer estimates the ETA from the step times of both phases together; stage-1
    steps (cached features) are much faster than stage-2 steps (images), so in stage 2 that ETA
    is far too short. Here each phase's remaining steps are counted at that phase's own pace
    (median of its last 1000 step times); a phase that has not run yet has no measured pace and
    is reported as ``stage 2 not timed yet (N its)``, not guessed::

        eta: 0:00:05 (stage 1 0:00:05 at 0.0100 s/it) + stage 2 not timed yet (400 its)  phase: align  epoch/iter: ...
        eta: 0:06:40 (stage 2 0:06:40 at 1.0000 s/it)  phase: guide  epoch/iter: ...

    ``time`` is the mean step time of the current phase. The scalar ``eta_seconds`` (metrics.json,
    TensorBoard) is written only when every remaining phase is timed; ``phase_eta_seconds``
    (what is left of the current phase) whenever the current phase is timed.

    Args:
        max_iter: iterations of the whole run.
        schedule: the run's phase schedule.
        window: how many of a phase's latest step times its pace is the median of.
    """

    def __init__(self, max_iter: int, schedule: PhaseSchedule, window: int = 1000):
        super().__init__(max_iter)
        self._spans = phase_spans(schedule, max_iter)
        self._window = window

    def _phase_at(self, iteration: int) -> str:
        for phase, start, end in self._spans:
            if start <= iteration < end:
                return phase
        return self._spans[-1][0] if self._spans else GUIDE

    def eta(self, iteration: int, step_times) -> Tuple[str, Optional[float], Optional[float]]:
        """``(text, seconds of the whole rest or None, seconds of the current phase's rest or None)``."""
        paces = phase_paces(step_times, self._spans, self._window)
        remaining = remaining_steps(iteration, self._spans)
        current = self._phase_at(iteration)
        timed, untimed, total = [], [], 0.0
        for phase, _, _ in self._spans:
            steps, pace = remaining[phase], paces[phase]
            if steps == 0 and phase != current:
                continue
            if pace is None:
                untimed.append(f"{PHASE_LABELS[phase]} not timed yet ({steps} its)")
            else:
                total += steps * pace
                timed.append(f"{PHASE_LABELS[phase]} {_duration(steps * pace)} at {pace:.4f} s/it")
        text = f"{_duration(total)} ({' + '.join(timed)})" if timed else ""
        text = " + ".join(([text] if text else []) + untimed)
        pace = paces.get(current)
        phase_seconds = remaining[current] * pace if pace is not None else None
        return text, (None if untimed else total), phase_seconds

    def write(self):
        storage = get_event_storage()
        iteration = storage.iter
        if iteration >= self._max_iter:
            return  # the run is over: nothing left to report (as fastreid's printer)
        histories = storage.histories()
        step_times = histories["time"].values() if "time" in histories else []
        eta_text, eta_seconds, phase_seconds = self.eta(iteration, step_times)
        if eta_seconds is not None:
            storage.put_scalar("eta_seconds", eta_seconds, smoothing_hint=False)
        if phase_seconds is not None:
            storage.put_scalar("phase_eta_seconds", phase_seconds, smoothing_hint=False)
        current = self._phase_at(iteration)
        _, start, end = next(span for span in self._spans if span[0] == current)
        own = [seconds for seconds, it in step_times if start <= it < end][-self._window:]
        fields = [f"eta: {eta_text}", f"phase: {current}",
                  f"epoch/iter: {storage.epoch}/{iteration}"]
        fields += [f"{name}: {history.median(200):.4g}" for name, history in histories.items() if "loss" in name]
        if own:
            fields.append(f"time: {float(np.mean(own)):.4f}")
        if "data_time" in histories:
            fields.append(f"data_time: {histories['data_time'].avg(20):.4f}")
        fields.append(f"lr: {histories['lr'].latest():.2e}" if "lr" in histories else "lr: N/A")
        if torch.cuda.is_available():
            fields.append(f"max_mem: {torch.cuda.max_memory_allocated() / 1024.0 / 1024.0:.0f}M")
        self.logger.info(" " + "  ".join(fields))


def with_phase_printer(writers: list, max_iter: int, schedule: Optional[PhaseSchedule]) -> list:
    """``writers`` with fastreid's ``CommonMetricPrinter`` replaced by a :class:`PhaseMetricPrinter`.

    Without a ``schedule`` (a model without phases) the writers are returned as they are: one
    phase, one pace, fastreid's ETA is right.
    """
    if schedule is None:
        return writers
    return [PhaseMetricPrinter(max_iter, schedule)
            if type(writer) is CommonMetricPrinter else writer for writer in writers]
