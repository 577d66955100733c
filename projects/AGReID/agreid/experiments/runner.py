"""One runner for the experiment tools (``tools/ablate.py``, ``tools/reproduce_paper.py``).

A :class:`Job` is one ``tools/train_net.py`` training (a config file, an output folder, overrides,
a seed or none) and the result record it leaves (a JSON file). :class:`Runner` takes a list of
jobs and, one after the other:

- skips a job whose result record exists (refusing one measured with another config: its
  ``fingerprint`` differs from the job's);
- shares the result of a job with the identical config (same fingerprint and seed) that already
  has its own record: a copy naming this job, with ``same_as``; identical configs train once;
- reads a run that finished (``model_final.pth`` and an evaluation in ``log.txt``) but stopped
  before its record was written from its log, without training again;
- otherwise runs ``train_net.py`` as a subprocess logged to ``<output_dir>/stdout.txt``
  (``--resume`` when the folder holds a ``last_checkpoint``), reads the final evaluation table of
  the job's test set from ``<output_dir>/log.txt`` and writes the record.

A dry run (or :meth:`Runner.plan`) decides the same way and trains nothing; a job with the config
of one planned before it is planned as sharing its result.

The record: the job's own ``fields`` (the tool's description of the run, e.g. ablate's
``run``/``seed``/``leaf``/``preset``..., reproduce's ``experiment``/``config``/``paper``/
``num_gpus``), then ``fingerprint``, ``metrics`` (the test set's row of the evaluation table),
``seconds``, ``resumed``, ``output_dir``, ``command`` (train_net.py's arguments), ``finished``
(UTC) and ``machine``; ``same_as`` in a shared copy. A record without ``fingerprint`` (written by
an older reproduce_paper.py) counts as measured with the current config of its job.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from agreid.experiments import common

Key = Tuple[str, Optional[int]]  # (job name, seed or None)


class Job(NamedTuple):
    """One training of an experiment and where its result goes."""

    name: str  # the run (ablate) or experiment (reproduce) name
    config_file: str  # relative to the repository root
    output_dir: str  # OUTPUT_DIR; relative paths are relative to the repository root
    overrides: Tuple[str, ...]  # KEY VALUE pairs given to train_net.py (SEED included, if any)
    seed: Optional[int]
    result_path: str  # the JSON record; relative paths are relative to the repository root
    test_set: str  # the row of the evaluation table that is the result (a DATASETS.TESTS name)
    fingerprint: str  # common.config_fingerprint of the resolved config
    fields: Mapping[str, object] = {}  # the tool's own keys of the record
    identity: Tuple[str, ...] = ()  # keys of ``fields`` naming this job: replaced in a shared copy

    @property
    def key(self) -> Key:
        return self.name, self.seed

    @property
    def label(self) -> str:
        return self.name if self.seed is None else f"{self.name} seed {self.seed}"


class Step(NamedTuple):
    """What the runner does (or would do) with a job.

    ``state``: ``done`` (its record exists), ``shared`` (a twin's record exists: copied),
    ``planned_twin`` (a twin is planned before it: would share), ``resume`` or ``train``.
    """

    job: Job
    state: str
    command: List[str]
    twin: Optional[str] = None
    record: Optional[dict] = None


def metrics_from_log(log_path: str, test_set: str) -> Optional[Dict[str, float]]:
    """The last evaluation of ``test_set`` in a fastreid ``log.txt`` (None: none, or no log)."""
    if not os.path.isfile(log_path):
        return None
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return common.parse_eval_tables(f.read()).get(test_set)


def logged_seconds(log_path: str) -> float:
    """Seconds between the first and the last time stamp of a fastreid log (``[MM/DD HH:MM:SS``)."""
    stamps = []
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("[") and len(line) > 15:
                try:
                    stamps.append(datetime.datetime.strptime(line[1:15], "%m/%d %H:%M:%S"))
                except ValueError:
                    continue
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0.0


class Runner:
    """Runs jobs one after the other (see the module docstring).

    Args:
        tag: the prefix of its messages (``[tag] ...``).
        program: the tool named in its errors (``tools/ablate.py: ...``).
        load: returns every result record there is now, ``{(name, seed): record}`` (records of
            other jobs than these too: a twin of an earlier sitting is shared); default: the
            records at the result paths of the jobs given to the runner.
        num_gpus: train_net.py ``--num-gpus``.
        keep_going: after a failed job, go on with the others (else stop, SystemExit).
        dry_run: decide and print, train and write nothing.
        on_result: called with each new record (trained or shared).
        changed: what else may have changed when a record's fingerprint differs (in the message).
    """

    def __init__(self, tag: str, program: str, load: Optional[Callable[[], Mapping[Key, dict]]] = None, *,
                 num_gpus: int = 1,
                 keep_going: bool = False, dry_run: bool = False,
                 on_result: Optional[Callable[[dict], None]] = None, changed: str = "a changed config"):
        self.tag, self.program = tag, program
        self.load = load or self._load_own
        self.num_gpus, self.keep_going, self.dry_run = num_gpus, keep_going, dry_run
        self.on_result, self.changed = on_result, changed
        self.planned: Dict[Tuple[str, Optional[int]], str] = {}  # (fingerprint, seed) -> the job to train it
        self._jobs: Dict[Key, Job] = {}

    def _add(self, jobs: Sequence[Job]) -> None:
        self._jobs.update((job.key, job) for job in jobs)

    def _load_own(self) -> Dict[Key, dict]:
        found = {}
        for key, job in self._jobs.items():
            path = common.repo_path(job.result_path)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    found[key] = json.load(f)
        return found

    # ----------------------------------------------------------------------------- deciding
    def _fingerprint(self, key: Key, record: Mapping) -> Optional[str]:
        job = self._jobs.get(key)
        return record.get("fingerprint", job.fingerprint if job is not None else None)

    def decide(self, job: Job, results: Mapping[Key, dict], planning: bool = False) -> Step:
        """What to do with ``job`` given the records there are; ``planning``: also share with a
        twin planned before it (recorded in :attr:`planned`)."""
        output_dir = common.repo_path(job.output_dir)
        resume = common.has_checkpoint(output_dir)
        cmd = common.train_command(job.config_file, job.output_dir, job.overrides, resume=resume,
                                   num_gpus=self.num_gpus)
        done = results.get(job.key)
        if done is not None:
            measured = self._fingerprint(job.key, done) or job.fingerprint
            if measured != job.fingerprint:
                raise SystemExit(
                    f"{self.program}: {common.repo_path(job.result_path)} was measured with another config "
                    f"(fingerprint {measured}, now {job.fingerprint}: other overrides or {self.changed}). "
                    f"Use another --output, or delete that file to measure again.")
            return Step(job, "done", cmd, done.get("same_as"), done)
        twin = next((key for key, record in results.items()
                     if key[0] != job.name and key[1] == job.seed and "same_as" not in record
                     and self._fingerprint(key, record) == job.fingerprint), None)
        if twin is not None:
            record = dict(results[twin], **{k: job.fields[k] for k in job.identity}, same_as=twin[0])
            return Step(job, "shared", cmd, twin[0], record)
        if planning:
            planned = self.planned.get((job.fingerprint, job.seed))
            if planned is not None:
                return Step(job, "planned_twin", cmd, planned)
            self.planned[(job.fingerprint, job.seed)] = job.name
        return Step(job, "resume" if resume else "train", cmd)

    def plan(self, jobs: Sequence[Job]) -> List[Step]:
        """What a run of ``jobs`` would do with each, from the records there are now."""
        self._add(jobs)
        self.planned = {}
        results = self.load()
        return [self.decide(job, results, planning=True) for job in jobs]

    # ------------------------------------------------------------------------------ running
    def run(self, jobs: Sequence[Job]) -> int:
        """Run (or, in a dry run, plan) ``jobs`` in order; returns the number that failed."""
        self._add(jobs)
        self.planned = {}
        failed = 0
        for job in jobs:
            record, new = self.run_one(job)
            if record is None and not self.dry_run:
                failed += 1
            elif new and self.on_result is not None:
                self.on_result(record)
        return failed

    def _fail(self, message: str) -> Tuple[None, bool]:
        if self.keep_going:
            print(message, file=sys.stderr)
            return None, False
        raise SystemExit(message)

    def run_one(self, job: Job) -> Tuple[Optional[dict], bool]:
        """Train and evaluate ``job`` (or reuse its record, or a twin's); write its record.

        Returns:
            The record (None after a failure or in a dry run, except a skipped or shared one)
            and whether it is new.
        """
        self._jobs.setdefault(job.key, job)
        tag, label = self.tag, job.label
        step = self.decide(job, self.load(), planning=self.dry_run)
        if step.state == "done":
            print(f"[{tag}] {label}: done ({step.record['metrics']['mAP']:.2f} mAP), skipped")
            return step.record, False
        if step.state == "shared":
            print(f"[{tag}] {label}: same config as {step.twin}, result shared")
            if self.dry_run:
                return step.record, False
            common.write_json(common.repo_path(job.result_path), step.record)
            return step.record, True
        if step.state == "planned_twin":
            print(f"[{tag}] {label}: same config as {step.twin}, would share its result")
            return None, False
        resume, cmd = step.state == "resume", step.command
        print(f"[{tag}] {label}: {step.state}: {' '.join(cmd[1:])}")
        if self.dry_run:
            return None, False

        output_dir = common.repo_path(job.output_dir)
        stdout_log = os.path.join(output_dir, "stdout.txt")
        log_txt = os.path.join(output_dir, "log.txt")
        start = time.time()
        if os.path.isfile(os.path.join(output_dir, "model_final.pth")) and metrics_from_log(log_txt, job.test_set):
            # Trained and evaluated, but stopped before its record was written: read the log.
            print(f"[{tag}] {label}: finished earlier, reading {log_txt}")
            status, seconds = 0, logged_seconds(log_txt)
        else:
            status = common.run_logged(cmd, stdout_log)
            seconds = time.time() - start
        if status != 0:
            return self._fail(f"[{tag}] {label} failed (exit {status}); its output: {stdout_log}\n"
                              + common.tail(stdout_log, 15))
        metrics = metrics_from_log(log_txt, job.test_set)
        if metrics is None:
            return self._fail(f"[{tag}] {label}: no evaluation of {job.test_set} in {job.output_dir}/log.txt")
        record = dict(job.fields)
        record.update({
            "fingerprint": job.fingerprint, "metrics": metrics, "seconds": round(seconds, 1), "resumed": resume,
            "output_dir": job.output_dir, "command": cmd[1:],
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": common.machine(),
        })
        common.write_json(common.repo_path(job.result_path), record)
        print(f"[{tag}] {label}: mAP {metrics['mAP']:.2f}, Rank-1 {metrics['Rank-1']:.2f} "
              f"in {seconds / 60:.1f} min")
        return record, True
