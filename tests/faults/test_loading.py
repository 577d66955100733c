"""Loading a checkpoint never executes code, on every path that loads one."""
import os

import open_clip
import pytest
import torch

import _warm
import agreid
from agreid.engine import AGReIDTrainer
from agreid.modeling.clip_loader import create_clip
from agreid.modeling.deploy import build_deployed_encoder
from agreid.serialization import CheckpointFileError, UnsafeCheckpointError, load_checkpoint_file
from faultkit import CONFIG, REPO, TINY, tiny_args, train_net

REFUSED = "holds code"


def _assert_refused(text, marker):
    assert REFUSED in text and "was not loaded" in text, text[-2000:]
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("which", ["evil_checkpoint", "evil_real_checkpoint"])
def test_loader_refuses_code_and_names_the_callable(request, which, marker):
    path = request.getfixturevalue(which)
    with pytest.raises(UnsafeCheckpointError) as error:
        load_checkpoint_file(path)
    _assert_refused(str(error.value), marker)
    assert "posix.system" in str(error.value) and str(path) in str(error.value)


def test_truncated_and_foreign_files_are_named(tmp_path, tiny_run):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((tiny_run / "model_final.pth").read_bytes()[:4000])
    with pytest.raises(CheckpointFileError, match="truncated.pth is not a PyTorch checkpoint"):
        load_checkpoint_file(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointFileError, match="notes.pth"):
        load_checkpoint_file(text)


def test_own_checkpoints_are_plain_values(tiny_run):
    for name in ("model_stage1.pth", "model_final.pth"):
        checkpoint = torch.load(tiny_run / name, map_location="cpu", weights_only=True)
        assert isinstance(checkpoint["epoch"], int) and isinstance(checkpoint["config"], str)
        assert checkpoint["phase"]["phase"] in ("align", "guide")
        assert "SEED:" in checkpoint["config"]


def test_eval_only_refuses(evil_real_checkpoint, marker, tiny_dataset_root, tmp_path):
    proc = train_net("--eval-only", *tiny_args(tiny_dataset_root, tmp_path / "eval"),
                     "MODEL.WEIGHTS", str(evil_real_checkpoint))
    assert proc.returncode == 2
    _assert_refused(proc.stderr, marker)
    assert "Traceback" not in proc.stderr


def _cfg(dataset_root, out, *extra):
    return agreid.get_agreid_cfg(os.path.join(REPO, CONFIG),
                                 TINY + ["DATASETS.ROOT", str(dataset_root), "OUTPUT_DIR", str(out), *extra])


def test_resume_and_training_from_weights_refuse(evil_checkpoint, evil_real_checkpoint, marker,
                                                 tiny_dataset_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last_checkpoint").write_text(os.path.relpath(evil_real_checkpoint, out))
    trainer = AGReIDTrainer(_cfg(tiny_dataset_root, out, "MODEL.WEIGHTS", str(evil_checkpoint)))
    with pytest.raises(UnsafeCheckpointError) as error:
        trainer.resume_or_load(resume=False)  # MODEL.WEIGHTS
    _assert_refused(str(error.value), marker)
    assert "evil.pth" in str(error.value)
    with pytest.raises(UnsafeCheckpointError) as error:
        trainer.resume_or_load(resume=True)  # OUTPUT_DIR/last_checkpoint
    _assert_refused(str(error.value), marker)
    assert "model_final.pth" in str(error.value)
    trainer._stop_prefetching()


def test_deployed_encoder_refuses(evil_real_checkpoint, marker, tiny_run):
    cfg = agreid.get_agreid_cfg(str(tiny_run / "config.yaml"))
    for config in (cfg, None):
        with pytest.raises(UnsafeCheckpointError) as error:
            build_deployed_encoder(config, str(evil_real_checkpoint))
        _assert_refused(str(error.value), marker)


# Tools that report a refused file as one line "error: ..." with exit status 2.
ONE_LINE = ("export_image_encoder", "probe_pseudo_labels", "probe_attributes")


@pytest.mark.parametrize("tool", ["export_image_encoder", "visualize_ranklist", "probe_pseudo_labels",
                                  "probe_attributes"])
def test_tools_refuse(tool, evil_real_checkpoint, marker, tiny_run, tiny_dataset_root, tmp_path):
    config = ["--config-file", str(tiny_run / "config.yaml")]
    if tool == "export_image_encoder":
        args = config + ["--weights", str(evil_real_checkpoint), "--output", str(tmp_path / "deploy")]
    elif tool == "probe_attributes":
        args = config + ["--weights", str(evil_real_checkpoint), "--output-dir", str(tmp_path / "probe"),
                         "DATASETS.ROOT", tiny_dataset_root]
    else:
        args = config + ["MODEL.WEIGHTS", str(evil_real_checkpoint), "DATASETS.ROOT", tiny_dataset_root]
    proc = _warm.run(f"tools/{tool}.py", *args, timeout=300)  # python tools/TOOL.py ARGS
    assert proc.returncode != 0
    _assert_refused(proc.stderr, marker)
    if tool in ONE_LINE:
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and str(evil_real_checkpoint) in errors[0], proc.stderr[-3000:]
        assert REFUSED in errors[0]
        assert not (tmp_path / "probe").exists()


def test_clip_weights_refuse_code_and_read_safetensors(tmp_path, marker, evil_checkpoint):
    with pytest.raises(UnsafeCheckpointError) as error:
        create_clip("AGReID-Tiny-ViT", checkpoint_path=str(evil_checkpoint))
    _assert_refused(str(error.value), marker)
    # A safetensors state dict (what model hubs ship) loads, whatever its file name.
    from safetensors.torch import save_file

    source = open_clip.create_model("AGReID-Tiny-ViT")
    path = tmp_path / "clip_weights.bin"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_clip("AGReID-Tiny-ViT", checkpoint_path=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
