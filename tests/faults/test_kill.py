"""SIGKILL anywhere in a two-phase run, then --resume: it finishes, in the right phase, with the
weights of the uninterrupted run (SEED and DETERMINISTIC fixed)."""
import os
import signal
import time

import pytest
import torch

import _warm
from faultkit import REPO, SCHEDULE, tiny_args
from agreid import serialization

# faultkit.SCHEDULE: two stage-1 epochs and three stage-2 epochs of 4 iterations each on the tiny
# preset (global iterations 0-7 are stage 1, align; 8-19 stage 2, guide), SEED 3, DETERMINISTIC.
# Where the run is killed, in order; each resumed run goes on to the next point.
POINTS = [
    "cache:1",                    # stage-1 feature cache, first run (nothing saved yet)
    "step:1",                     # stage 1, before any checkpoint
    "saving:model_stage1_0000",   # half-written stage-1 checkpoint
    "step:6",                     # stage 1, second epoch (feature cache rebuilt on resume)
    "saved:model_stage1",         # the phase switch: model_stage1.pth written, stage 2 not begun
    "switch",                     # entering stage 2
    "step:9",                     # stage 2, first epoch
    "saving:model_0000",          # half-written stage-2 checkpoint
    "step:13",                    # stage 2, second epoch
    "saving:model_final",         # half-written final checkpoint
    "eval",                       # final evaluation, after model_final.pth
]
KILLED = -9


def _killer(args, state, env=None):
    """``python tests/faults/killer.py ARGS``: a process of its own, forked from a warm interpreter
    (tests/_warm.py; the imports of a new interpreter, a dozen times, prove nothing here)."""
    env = dict(os.environ if env is None else env, KILL_POINTS=",".join(POINTS), KILL_STATE=str(state))
    return _warm.run(os.path.join(REPO, "tests", "faults", "killer.py"), *args, env=env, timeout=600)


def _weights(path):
    return serialization.load_checkpoint_file(str(path))["model"]


def test_killed_at_every_point_resumes_to_the_uninterrupted_weights(tiny_dataset_root, deterministic_run, tmp_path):
    # The uninterrupted run (tests/faults/conftest.py) is a new interpreter; the killed ones are
    # forked from a warm one (tests/_warm.py): processes that share nothing, not even the hash seed.
    reference = deterministic_run

    out, state = tmp_path / "killed", tmp_path / "state"
    state.mkdir()
    args = tiny_args(tiny_dataset_root, out, *SCHEDULE)
    logs = []
    for point in POINTS:
        proc = _killer(["--resume", *args] if logs else args, state)
        logs.append(proc.stdout + proc.stderr)
        (state / f"log{len(logs)}.txt").write_text(logs[-1])
        assert proc.returncode == KILLED, f"not killed at {point}: rc {proc.returncode}\n{logs[-1][-3000:]}"
        assert (state / point.replace(":", "_")).is_file(), point
        assert not list(out.glob("*.pth.tmp")) or point.startswith("saving:"), point
        last = out / "last_checkpoint"
        if last.is_file():  # what --resume will read is always a complete checkpoint
            serialization.load_checkpoint_file(str(out / last.read_text().strip()))
    proc = _killer(["--resume", *args], state)
    logs.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0, logs[-1][-3000:]
    # A half-written file is removed when the next run takes the folder.
    after_half_write = logs[POINTS.index("saving:model_0000") + 1]
    assert "Removed " in after_half_write and "model_0000.pth.tmp" in after_half_write
    assert not list(out.glob("*.tmp"))

    # The right phase after each kill: killed at the switch, the resumed run starts stage 2
    # without stage 1's feature cache; killed in stage 1's second epoch, stage 1 goes on.
    after_switch = logs[POINTS.index("switch") + 1]
    assert "Starting training from epoch 2" in after_switch, after_switch[-3000:]
    assert "Entering phase 'guide'" in after_switch and "Stage-1 feature cache" not in after_switch
    in_stage1 = logs[POINTS.index("step:6") + 1]  # resumed from model_stage1_0000
    assert "Starting training from epoch 1" in in_stage1 and "Stage-1 feature cache" in in_stage1

    final, expected = _weights(out / "model_final.pth"), _weights(reference / "model_final.pth")
    assert final.keys() == expected.keys()
    different = [name for name in expected if not torch.equal(final[name], expected[name])]
    assert not different, f"{len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"


def _children(pid):
    """Process ids whose parent is ``pid`` (from /proc; Linux only)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return sorted(found)


@pytest.mark.skipif(not os.path.isdir("/proc") or torch.cuda.is_available(),
                    reason="finds the ranks in /proc; tests the CPU (gloo) multi-process path")
def test_a_killed_rank_ends_a_two_process_run_within_seconds(tiny_dataset_root, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(tiny_dataset_root, out, "SOLVER.STAGE1.MAX_EPOCH", "200", "SOLVER.MAX_EPOCH", "200")
    # python tools/train_net.py --num-gpus 2 ...: the launcher is forked from a warm interpreter
    # (tests/_warm.py); the two ranks it spawns are new interpreters, as for the user.
    proc = _warm.start("tools/train_net.py", "--num-gpus", "2", "--dist-url", "auto", *args)
    try:
        deadline = time.monotonic() + 300
        log = out / "log.txt"
        # Both ranks inside the training loop: rank 0 logged the end of an epoch (an "epoch/iter"
        # line), whose steps rank 1 took with it (DDP averages every step's gradients).
        while not (log.is_file() and "Starting training" in log.read_text() and "epoch/iter:" in log.read_text()):
            assert proc.poll() is None, proc.wait().stderr[-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        ranks = [pid for pid in _children(proc.pid) if "spawn" in open(f"/proc/{pid}/cmdline").read()]
        assert len(ranks) == 2, ranks
        os.kill(ranks[-1], signal.SIGKILL)
        killed_at = time.monotonic()
        returncode = proc.wait(timeout=60).returncode
        took = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)
    print(f"the run ended {took:.1f} s after a rank was killed (exit status {returncode})")
    assert returncode != 0
    assert took < 15, f"the run took {took:.1f} s to end after a rank was killed"
    time.sleep(1)
    assert all(not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
               for pid in ranks), "a rank outlived the run"
