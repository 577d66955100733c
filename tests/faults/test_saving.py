"""Checkpoints are written atomically, never from non-finite weights, and a NaN or a full disk
leaves the last good checkpoint and ``last_checkpoint`` in place."""
import errno
import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

import agreid  # isort: skip  (patches fastreid first)
from fastreid.engine.train_loop import HookBase

from agreid import serialization
from agreid.engine import AGReIDTrainer
from agreid.engine.checkpoint import AtomicCheckpointer, NonFiniteWeightsError
from faultkit import CONFIG, REPO, TINY


def _last(folder):
    return (folder / "last_checkpoint").read_text().strip()


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes."""

    room = 1000

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(64, 64)
    checkpointer = AtomicCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000", epoch=0)
    before = (tmp_path / "model_0000.pth").read_bytes()
    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(serialization, "_open_for_writing", lambda path: _FullDisk(path, "wb"))
    with pytest.raises(OSError) as error:
        checkpointer.save("model_0001", epoch=1)
    message = str(error.value)
    assert error.value.errno == errno.ENOSPC
    assert "no space left on device" in message.lower() and str(tmp_path / "model_0001.pth") in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000.pth"]  # no partial file
    assert _last(tmp_path) == "model_0000.pth"
    assert (tmp_path / "model_0000.pth").read_bytes() == before
    restored = nn.Linear(64, 64)
    AtomicCheckpointer(restored).load(str(tmp_path / "model_0000.pth"))
    assert not torch.equal(restored.weight, model.weight)


def test_non_finite_weights_are_never_saved(tmp_path):
    model = nn.Linear(4, 4)
    checkpointer = AtomicCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000")
    with torch.no_grad():
        model.bias[2] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match=r"'bias' holds NaN/Inf.*model_0000.pth"):
        checkpointer.save("model_0001")
    assert not (tmp_path / "model_0001.pth").exists() and _last(tmp_path) == "model_0000.pth"


_SAVER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    import agreid
    from agreid.engine.checkpoint import AtomicCheckpointer
    model = nn.Linear(1024, 1024)  # 4 MiB a checkpoint
    checkpointer = AtomicCheckpointer(model, sys.argv[1])
    i = 0
    print("saving", flush=True)
    while True:
        with torch.no_grad():
            model.weight.fill_(i)
        checkpointer.save(f"model_{i % 3}", step=i)
        i += 1
""")


def test_kill_during_saves_leaves_a_loadable_last_checkpoint(tmp_path, delay=0.5):
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "saving"
    deadline = time.monotonic() + 120
    while not (tmp_path / "last_checkpoint").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoint = serialization.load_checkpoint_file(tmp_path / _last(tmp_path))
    step = checkpoint["step"]
    assert torch.all(checkpoint["model"]["weight"] == step)  # complete, and the one it claims


class _BlowUp(HookBase):
    """After the last step of epoch ``epoch``: scale the patch embedding by ``factor`` (the
    checkpoint of that epoch is then saved from these weights)."""

    def __init__(self, epoch, factor):
        self.epoch, self.factor, self.saved_before = epoch, factor, None

    def after_step(self):
        trainer = self.trainer
        if trainer.iter == (self.epoch + 1) * trainer.iters_per_epoch - 1:
            self.saved_before = list(trainer.checkpointer.saved)
            with torch.no_grad():
                trainer.model.backbone.visual.conv1.weight.mul_(self.factor)


def _trainer(dataset_root, out):
    out.mkdir(exist_ok=True)
    cfg = agreid.get_agreid_cfg(os.path.join(REPO, CONFIG), TINY + [
        "DATASETS.ROOT", dataset_root, "OUTPUT_DIR", str(out), "SOLVER.STAGE1.MAX_EPOCH", "0",
        "SOLVER.MAX_EPOCH", "4", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "0"])
    return AGReIDTrainer(cfg)


def test_nan_names_the_loss_and_keeps_the_last_good_checkpoint(tiny_dataset_root, tmp_path):
    out = tmp_path / "run"
    trainer = _trainer(tiny_dataset_root, out)
    hook = _BlowUp(epoch=1, factor=1e30)  # finite weights, NaN loss at the next step
    trainer.register_hooks([hook])
    with pytest.raises(FloatingPointError) as error:
        trainer.train()
    message = str(error.value)
    assert f"iteration {2 * trainer.iters_per_epoch}" in message and "loss_" in message and "nan" in message
    assert hook.saved_before, "no checkpoint was saved before the blow-up"
    good = hook.saved_before[-1]
    assert _last(out) == good
    assert f"last_checkpoint names {good}, the last checkpoint whose weights gave a finite loss" in message
    bad = [p.name for p in out.iterdir() if p.name.endswith(".pth.bad")]
    assert len(bad) == 1 and bad[0] not in (good + ".bad",)
    weights = serialization.load_checkpoint_file(out / good)["model"]["backbone.visual.conv1.weight"]
    assert weights.abs().max() < 1e3


class _BlowUpFirst(HookBase):
    """Before the first step: weights that give a NaN loss at once."""

    def before_step(self):
        if self.trainer.iter == 0:
            with torch.no_grad():
                self.trainer.model.backbone.visual.conv1.weight.mul_(1e30)


def test_nan_at_the_first_iteration_says_there_is_no_checkpoint(tiny_dataset_root, tmp_path):
    out = tmp_path / "run"
    trainer = _trainer(tiny_dataset_root, out)
    trainer.register_hooks([_BlowUpFirst()])
    with pytest.raises(FloatingPointError) as error:
        trainer.train()
    message = str(error.value)
    assert "Loss became NaN/Inf at iteration 0" in message
    assert "No checkpoint was saved before it, so there is nothing to resume from" in message
    assert "last_checkpoint names" not in message and not (out / "last_checkpoint").exists()


def test_inf_weights_stop_before_saving(tiny_dataset_root, tmp_path):
    out = tmp_path / "run"
    trainer = _trainer(tiny_dataset_root, out)
    hook = _BlowUp(epoch=1, factor=float("inf"))
    trainer.register_hooks([hook])
    with pytest.raises(NonFiniteWeightsError, match="backbone.visual.conv1.weight"):
        trainer.train()
    assert _last(out) == hook.saved_before[-1]
    assert not [p for p in out.iterdir() if p.name.endswith((".tmp", ".bad"))]
