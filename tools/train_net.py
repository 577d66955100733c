#!/usr/bin/env python
"""Train and evaluate AG-ReID (or any fastreid model) with fastreid's command-line flags.

    python tools/train_net.py --config-file configs/OccDuke/agreid.yml [KEY VALUE ...]
    python tools/train_net.py --config-file configs/OccDuke/agreid.yml --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 4
    torchrun --nproc_per_node 4 tools/train_net.py --config-file ...

A mistake in the config, the data or the checkpoint ends the run with one line
``error: ...`` on stderr and exit status 2, before any work starts (set AGREID_TRACEBACK=1
to see the traceback). Errors during training keep their traceback.
"""
import atexit
import os
import sys

import agreid
from agreid.config import ConfigFileError
from agreid.data.datasets import BadImageError, DatasetLayoutError
from agreid.engine import AGReIDTrainer, launch
from agreid.engine.preflight import check_test_cameras
from agreid.engine.checkpoint import CheckpointMismatchError
from agreid.engine.preflight import check_config
from agreid.engine.run_guard import (OutputDirError, OutputDirLock, OutputDirSnapshot, resolve_seed,
                                     seed_everything, write_failure_message)
from agreid.modeling.clip_loader import CLIPWeightsNotFoundError
from agreid.serialization import CheckpointFileError
from fastreid.engine import default_argument_parser, default_setup
from fastreid.utils import comm
from fastreid.utils.logger import setup_logger

# Raised for the user's input wherever they happen: no traceback.
USER_ERRORS = (OutputDirError, CheckpointFileError, CheckpointMismatchError, BadImageError,
               DatasetLayoutError, CLIPWeightsNotFoundError, FileNotFoundError)
# Raised while the config is read or the model and data are built: the config's values
# (unknown key, wrong type, a template without X, a bad threshold name, ...).
BUILD_ERRORS = (KeyError, ValueError, AssertionError)


_LOCKS = []  # output-folder locks this process holds


class UserError(Exception):
    """A mistake in the user's config, data or files; its message says what to change."""


def setup(args):
    """Config from fastreid's defaults, AG-ReID's keys, the file and the command line; the
    checks that need no data; seed, output-folder lock and logs.

    Returns ``(cfg, snapshot)``: ``snapshot`` (None on other ranks) restores ``OUTPUT_DIR`` as it
    was before this command, for a command refused before any work.
    """
    try:
        cfg = agreid.get_agreid_cfg(args.config_file, args.opts)
    except ConfigFileError as error:
        raise UserError(str(error)) from error
    except FileNotFoundError as error:
        raise UserError(f"config file: {error}") from error
    except BUILD_ERRORS as error:
        raise UserError(f"config {args.config_file or '(defaults)'}: {_message(error)}") from error
    try:
        check_config(cfg, comm.get_world_size())  # optimiser names, rules, batch arithmetic
    except ValueError as error:
        raise UserError(_message(error)) from error
    resolve_seed(cfg)  # SEED -1: a fresh seed, recorded in config.yaml
    cfg.freeze()
    snapshot = None
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        lock = OutputDirLock(cfg.OUTPUT_DIR).acquire()
        _LOCKS.append(lock)
        atexit.register(lock.release)  # also when a spawned process ends
        snapshot = OutputDirSnapshot(cfg.OUTPUT_DIR)
    try:
        default_setup(cfg, args)
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="agreid")
    except OSError as error:  # e.g. a full disk while writing config.yaml or the log
        if snapshot is not None:
            snapshot.restore()
        raise OutputDirError(write_failure_message(cfg.OUTPUT_DIR, error.filename or cfg.OUTPUT_DIR, error)) \
            from error
    # After default_setup, which seeds every generator at random.
    seed_everything(cfg.SEED, comm.get_rank(), cfg.DETERMINISTIC)
    return cfg, snapshot


def main(args):
    """One process of the run: evaluate MODEL.WEIGHTS, or train (and evaluate).

    A command refused before any work (the user's mistake) leaves ``OUTPUT_DIR`` as it was.
    """
    cfg, snapshot = setup(args)
    try:
        if args.eval_only:
            model = AGReIDTrainer.build_trained_model(cfg)
            check_test_cameras(cfg)  # with the training cameras the checkpoint records
        else:
            trainer = AGReIDTrainer(cfg)
            try:
                check_test_cameras(trainer.cfg)  # an unseen test camera stops here, not after training
                trainer.resume_or_load(resume=args.resume)
            except BaseException:
                trainer._stop_prefetching()  # a live prefetch thread aborts the exit
                raise
    except (*USER_ERRORS, *BUILD_ERRORS) as error:
        if snapshot is not None:
            snapshot.restore()
        if isinstance(error, USER_ERRORS):
            raise
        raise UserError(_message(error)) from error
    if args.eval_only:
        return AGReIDTrainer.test(cfg, model)
    return trainer.train()


def _message(error: BaseException) -> str:
    # KeyError's str() is the repr of its argument; the others read as they are.
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return str(text)


def run(args) -> int:
    """Launch :func:`main`; the user's mistakes become one line on stderr and status 2."""
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (UserError, *USER_ERRORS) as error:
        if os.environ.get("AGREID_TRACEBACK"):
            raise
        print(f"error: {_message(error)}", file=sys.stderr)
        return 2
    finally:
        while _LOCKS:
            _LOCKS.pop().release()
    return 0


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    sys.exit(run(args))
