"""One atomic writer (agreid.serialization.write_atomically) behind every file written whole: a write
that fails leaves the previous file as it was and no temporary file behind; a write that succeeds
is fsynced before the rename."""
import errno
import io
import os

import pytest
import torch

from _tiny_model import tiny_run
from agreid import serialization
from agreid.experiments import common
from agreid.modeling.deploy import build_deployed_encoder, save_deployed_encoder


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes."""

    room = 1000

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def _old_file(folder, name="result.md", content=b"old content\n"):
    path = folder / name
    path.write_bytes(content)
    return path, content


def _left_as_it_was(path, content):
    assert path.read_bytes() == content
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary file left behind


def test_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path, content = _old_file(tmp_path)

    def half_then_fail(f):
        f.write(b"half of the new con")
        raise RuntimeError("stopped mid-write")

    with pytest.raises(RuntimeError, match="stopped mid-write"):
        serialization.write_atomically(str(path), half_then_fail)
    _left_as_it_was(path, content)
    with pytest.raises(UnicodeEncodeError):  # text is UTF-8: a lone surrogate fails half-way
        serialization.write_text_atomically("new text \ud800", str(path))
    _left_as_it_was(path, content)
    with pytest.raises(Exception):  # torch.save cannot pickle a lambda: fails after the tensors
        serialization.save_checkpoint_file({"w": torch.zeros(100), "f": lambda: 0}, str(path))
    _left_as_it_was(path, content)
    serialization.write_text_atomically("new text é\n", str(path))
    assert path.read_text(encoding="utf-8") == "new text é\n" and os.listdir(tmp_path) == [path.name]


def test_experiments_write_atomic_is_the_same_writer(tmp_path, monkeypatch):
    path, content = _old_file(tmp_path)
    with pytest.raises(UnicodeEncodeError):
        common.write_atomic(str(path), "# results\n\ud800")
    _left_as_it_was(path, content)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    common.write_atomic(str(tmp_path / "new" / "table.md"), "| a |\n")  # makes the folder
    assert (tmp_path / "new" / "table.md").read_text() == "| a |\n" and synced
    assert os.listdir(tmp_path / "new") == ["table.md"]


def test_deployed_encoder_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    cfg, checkpoint = tiny_run(tmp_path / "run")
    encoder = build_deployed_encoder(cfg, checkpoint)
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    path, _ = _old_file(deploy, "image_encoder.safetensors", b"")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    save_deployed_encoder(encoder, str(path))  # the settings ride in the header
    assert synced and os.listdir(deploy) == [path.name]
    content = path.read_bytes()
    rebuilt = build_deployed_encoder(None, str(path))
    images, camids = torch.rand(2, 3, *encoder.backbone.input_size) * 255, torch.tensor([0, 3])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images, camids), encoder(images, camids), rtol=0, atol=0)

    with torch.no_grad():
        encoder.backbone.camera_embedding.add_(1.0)  # another encoder, on a disk that fills up half-way
    monkeypatch.setattr(serialization, "_open_for_writing", lambda name: _FullDisk(name, "wb"))
    with pytest.raises(OSError) as error:
        save_deployed_encoder(encoder, str(path))
    assert error.value.errno == errno.ENOSPC and str(path) in str(error.value)
    _left_as_it_was(path, content)
