"""Weights that hold NaN/Inf, or that were cast to an integer type, are refused by every loader,
naming the first bad key; the tools say so in one line and exit 2, writing nothing."""
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import _warm
from _tiny_model import tiny_cfg
from _tiny_model import tiny_run as saved_run
from agreid.engine.checkpoint import AtomicCheckpointer
from agreid.modeling.clip_loader import create_clip
from agreid.modeling.deploy import build_deployed_encoder, save_deployed_encoder
from agreid.serialization import BadWeightsError, CheckpointFileError, safetensors_metadata
from fastreid.modeling import build_model

CONV1 = "backbone.visual.conv1.weight"
DAMAGE = {
    "nan": (lambda t: t.clone().fill_(float("nan")), f"{CONV1} holds NaN/Inf"),
    "int32": (lambda t: t.to(torch.int32), f"{CONV1} is int32, expected a floating tensor"),
}


def _tool(name, *args):
    """``python tools/NAME.py ARGS`` (in a process forked from a warm interpreter: tests/_warm.py)."""
    return _warm.run(f"tools/{name}.py", *args, timeout=300)


def _one_error_line(proc, *expected):
    """Exit 2, no traceback, and a last stderr line ``error: ...`` holding every ``expected``."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    assert sum(line.startswith("error: ") for line in lines) == 1, proc.stderr[-3000:]
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny training run (random weights, not trained): config.yaml and model_final.pth."""
    directory = tmp_path_factory.mktemp("run")
    saved_run(directory)
    return directory


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """An exported image_encoder.safetensors of the tiny run."""
    import agreid

    cfg = agreid.get_agreid_cfg(str(run_dir / "config.yaml"))
    path = tmp_path_factory.mktemp("deploy") / "image_encoder.safetensors"
    save_deployed_encoder(build_deployed_encoder(cfg, str(run_dir / "model_final.pth")), str(path))
    return path


def _damaged_export(exported, tmp_path, how):
    tensors = load_file(str(exported))
    tensors[CONV1] = DAMAGE[how][0](tensors[CONV1])
    path = tmp_path / f"image_encoder_{how}.safetensors"
    save_file(tensors, str(path), metadata=safetensors_metadata(str(exported)))
    return path


def _damaged_checkpoint(run_dir, tmp_path, how):
    checkpoint = torch.load(run_dir / "model_final.pth", map_location="cpu", weights_only=True)
    checkpoint["model"][CONV1] = DAMAGE[how][0](checkpoint["model"][CONV1])
    path = tmp_path / f"model_{how}.pth"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_deployed_encoder_refuses_damaged_weights(how, exported, run_dir, tmp_path):
    import agreid

    build_deployed_encoder(None, str(exported))  # the export as written loads
    path = _damaged_export(exported, tmp_path, how)
    with pytest.raises(BadWeightsError, match=DAMAGE[how][1]) as error:
        build_deployed_encoder(None, str(path))
    assert str(error.value).startswith(f"{path}: ")
    # A training checkpoint given to the deployed loader (its integer buffers are fine).
    checkpoint = _damaged_checkpoint(run_dir, tmp_path, how)
    with pytest.raises(BadWeightsError, match=DAMAGE[how][1]):
        build_deployed_encoder(agreid.get_agreid_cfg(str(run_dir / "config.yaml")), str(checkpoint))


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_extract_features_refuses_damaged_encoder(how, exported, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):
        Image.new("RGB", (32, 64), (40 * index, 90, 200)).save(images / f"{index}.png")
    output = tmp_path / "feats.safetensors"
    path = _damaged_export(exported, tmp_path, how)
    proc = _tool("extract_features", "--weights", str(path), "--images", str(images), "--output", str(output),
                 "--device", "cpu")
    _one_error_line(proc, str(path), DAMAGE[how][1])
    assert not output.exists() and not (tmp_path / "feats.csv").exists()


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_training_checkpoint_loader_refuses(how, run_dir, tmp_path):
    """The loader of MODEL.WEIGHTS / --resume / --eval-only (AtomicCheckpointer)."""
    model = build_model(tiny_cfg())
    AtomicCheckpointer(model).load(str(run_dir / "model_final.pth"))  # integer buffers load
    checkpoint = _damaged_checkpoint(run_dir, tmp_path, how)
    before = model.state_dict()[CONV1].clone()
    with pytest.raises(BadWeightsError, match=f"{checkpoint}: {DAMAGE[how][1]}"):
        AtomicCheckpointer(model).load(str(checkpoint))
    assert torch.equal(model.state_dict()[CONV1], before), "the model was changed"


def test_eval_only_refuses_nan_checkpoint(run_dir, tiny_dataset_root, tmp_path):
    checkpoint = _damaged_checkpoint(run_dir, tmp_path, "nan")
    proc = _tool("train_net", "--config-file", str(run_dir / "config.yaml"), "--eval-only",
                 "MODEL.WEIGHTS", str(checkpoint), "DATASETS.ROOT", tiny_dataset_root,
                 "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "eval"))
    _one_error_line(proc, str(checkpoint), DAMAGE["nan"][1])


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_clip_weights_refused(how, tmp_path):
    import open_clip

    state = {k: v.contiguous() for k, v in open_clip.create_model("AGReID-Tiny-ViT").state_dict().items()}
    key = "visual.conv1.weight"
    state[key] = DAMAGE[how][0](state[key])
    path = tmp_path / "clip.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointFileError, match=f"{key} " + DAMAGE[how][1].split(" ", 1)[1]):
        create_clip("AGReID-Tiny-ViT", checkpoint_path=str(path))


def test_export_refuses_nan_checkpoint(run_dir, tmp_path):
    checkpoint = _damaged_checkpoint(run_dir, tmp_path, "nan")
    output = tmp_path / "deploy"
    proc = _tool("export_image_encoder", "--config-file", str(run_dir / "config.yaml"), "--weights", str(checkpoint),
                 "--output", str(output))
    _one_error_line(proc, str(checkpoint), DAMAGE["nan"][1])
    assert not output.exists()
