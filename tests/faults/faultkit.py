"""Helpers shared by the fault tests (imported by name: this folder is on sys.path)."""
import os
import runpy
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/Synthetic/agreid.yml"
# Small images and batches: every run here takes seconds.
TINY = ["SOLVER.IMS_PER_BATCH", "16", "SOLVER.STAGE1.IMS_PER_BATCH", "16",
        "SOLVER.STAGE1.WARMUP_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.STEPS", "[100]",
        "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]",
        "SOLVER.STAGE1.MAX_EPOCH", "1", "SOLVER.MAX_EPOCH", "1",
        "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.STAGE1.CHECKPOINT_PERIOD", "1",
        # Random init: the tests cannot rely on pretrained files being present.
        "MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", ""]


class Evil:
    """Pickles to a call of ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def train_net(*args, timeout=600, env=None, fresh=False):
    """Run tools/train_net.py ARGS in a process of its own; returns the CompletedProcess (no check).

    The process is forked from a warm interpreter (tests/_warm.py: no seconds of imports first);
    ``fresh``: a new interpreter, ``python tools/train_net.py ARGS`` as the user types it.
    """
    if fresh:
        return subprocess.run([sys.executable, "tools/train_net.py", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env=env)
    import _warm  # tests/ (not on the path of killer.py's runs, which do not need it)

    return _warm.run("tools/train_net.py", *args, env=env, timeout=timeout)


# Two stage-1 and three stage-2 epochs of 4 iterations each on the tiny preset, seeded and
# deterministic: global iterations 0-7 are stage 1 (align), 8-19 stage 2 (guide).
SCHEDULE = ["SOLVER.STAGE1.MAX_EPOCH", "2", "SOLVER.MAX_EPOCH", "3", "SEED", "3", "DETERMINISTIC", "True",
            "TEST.EVAL_PERIOD", "0"]


def tiny_args(dataset_root, out, *extra):
    return ["--config-file", CONFIG, *TINY, "DATASETS.ROOT", str(dataset_root), "OUTPUT_DIR", str(out), *extra]


_TRAIN_NET = {}


def train_net_in_process(argv, capsys):
    """Run tools/train_net.py's command line in this process (no interpreter start-up: fast);
    returns ``(exit status, stderr)``. For commands that stop before any training."""
    from fastreid.engine import default_argument_parser

    if not _TRAIN_NET:
        _TRAIN_NET.update(runpy.run_path(os.path.join(REPO, "tools", "train_net.py"), run_name="train_net_tool"))
    code = _TRAIN_NET["run"](default_argument_parser().parse_args([str(a) for a in argv]))
    return code, capsys.readouterr().err
