"""Every deployable format gives the eager features on a dynamic batch; the torch.export program
runs with torch alone and checks the input contract inside its graph."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from _tiny_model import NUM_CAMERAS, tiny_cfg, tiny_model, tiny_run
from agreid.cli import export_image_encoder
from agreid.deploy_onnx import onnx_exporter, onnx_session
from agreid.modeling.deploy import (
    DeployedImageEncoder,
    ProgramEncoder,
    build_deployed_encoder,
    export_program,
    load_program,
    trace_deployed_encoder,
)
from agreid.predictor import camera_agnostic_encoder

# Trains, exports or starts processes: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow

ATOL = 1e-5
SIZES = (1, 3)  # the tool exports with a batch of 2


def _inputs(encoder, size, seed):
    generator = torch.Generator().manual_seed(seed)
    height, width = encoder.backbone.input_size
    return (torch.rand(size, 3, height, width, generator=generator) * 255,
            torch.randint(NUM_CAMERAS, (size,), generator=generator))


def _max_diff(got, expected) -> float:
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    return float(np.abs(got - expected.numpy()).max())


def test_every_format_gives_the_eager_features_on_a_dynamic_batch(tmp_path, capsys):
    _, checkpoint = tiny_run(tmp_path / "run", "MODEL.HEADS.NECK_FEAT", "after")
    out = tmp_path / "deploy"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert export_image_encoder.main(["--config-file", str(tmp_path / "run" / "config.yaml"), "--weights", checkpoint,
                                          "--output", str(out), "--onnx", "--camera", "2"]) == 0
    # The default path (and --onnx) uses no deprecated torch.jit or TorchScript-based ONNX export.
    deprecated = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
                  and ("torch.jit" in str(w.message) or "TorchScript" in str(w.message))]
    assert not deprecated, deprecated
    exporter = onnx_exporter("auto")
    printed = capsys.readouterr().out
    assert f"ONNX, {exporter} exporter (image_encoder.onnx: images, camids)" in printed
    assert "torch.export (image_encoder.pt2: images, camids)" in printed
    assert "torch.export (image_encoder_agnostic.pt2: images)" in printed
    assert not [name for name in os.listdir(out) if name.startswith(".")]  # no scratch folder left

    eager = build_deployed_encoder(None, str(out / "image_encoder.safetensors"))
    from_checkpoint = build_deployed_encoder(tiny_cfg("MODEL.HEADS.NECK_FEAT", "after"), checkpoint)
    program = torch.export.load(str(out / "image_encoder.pt2")).module()
    agnostic_program = torch.export.load(str(out / "image_encoder_agnostic.pt2")).module()
    session = onnx_session(str(out / "image_encoder.onnx"), ["CPUExecutionProvider"])
    agnostic_session = onnx_session(str(out / "image_encoder_agnostic.onnx"), ["CPUExecutionProvider"])
    traced = trace_deployed_encoder(eager)
    traced.save(str(tmp_path / "image_encoder.ts"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
        torchscript = torch.jit.load(str(tmp_path / "image_encoder.ts"))
    for size in SIZES:
        images, camids = _inputs(eager, size, seed=size)
        with torch.no_grad():
            expected = eager(images, camids)
            expected_agnostic = eager(images, torch.full((size,), 2))  # --camera 2: camera 2 for every image
            got = {
                "checkpoint (eager)": from_checkpoint(images, camids),
                "pt2": program(images, camids),
                "onnx": session(images, camids),
                "torchscript": torchscript(images, camids),
            }
            got_agnostic = {"pt2": agnostic_program(images), "onnx": agnostic_session(images)}
        assert expected.shape == (size, 128 + 64)
        for name, features in got.items():
            assert tuple(features.shape) == (size, 192), name
            assert _max_diff(features, expected) < ATOL, (name, size)
        for name, features in got_agnostic.items():
            assert _max_diff(features, expected_agnostic) < ATOL, (name, size)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """``(encoder, path of its torch.export program, the export's own check)``: one export shared by
    the two tests of the program below."""
    encoder = DeployedImageEncoder.from_agreid(tiny_model(tiny_cfg()))
    path = str(tmp_path_factory.mktemp("program") / "image_encoder.pt2")
    return encoder, path, export_program(encoder, path)


def test_program_runs_with_torch_alone(tmp_path, program):
    encoder, path, difference = program
    assert difference < ATOL
    images, camids = _inputs(encoder, 3, seed=0)
    save_file({"images": images, "camids": camids}, str(tmp_path / "inputs.safetensors"))
    # Isolated mode (no PYTHONPATH, no current folder) with every import of the project and of
    # its model libraries refused: only torch (and safetensors, to pass tensors) is usable.
    child = f"""
import importlib.abc, sys
BLOCKED = ("agreid", "fastreid", "open_clip", "timm")
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked: {{name}}")
sys.meta_path.insert(0, Refuse())
try:
    import agreid
    raise SystemExit("agreid is importable")
except ModuleNotFoundError:
    pass
import torch
from safetensors.torch import load_file, save_file
inputs = load_file({str(tmp_path / 'inputs.safetensors')!r})
module = torch.export.load({path!r}).module()
with torch.no_grad():
    features = module(inputs["images"], inputs["camids"])
save_file({{"features": features}}, {str(tmp_path / 'features.safetensors')!r})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-I", "-c", child], capture_output=True, text=True,
                            cwd=str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = encoder(images, camids)
    assert _max_diff(load_file(str(tmp_path / "features.safetensors"))["features"], expected) < ATOL


def test_program_checks_the_input_contract_in_its_graph(tmp_path, program):
    # What the ONNX files leave to OnnxImageEncoder is in the .pt2 graph: it has no wrapper.
    encoder, path, _ = program
    module, contract = load_program(path)
    assert contract["camids"] == f"int64 (batch,) in 0..{NUM_CAMERAS - 1}"
    assert contract["num_cameras"] == str(NUM_CAMERAS) and contract["batch"] == "dynamic, at least 1"
    images, camids = _inputs(encoder, 3, seed=0)
    for bad in ([0, -1, 1], [0, NUM_CAMERAS, 1]):  # eager takes -1 as the last row, N as the mean
        with pytest.raises(RuntimeError, match=rf"camids must be training camera ids in 0\.\.{NUM_CAMERAS - 1}"):
            module(images, torch.tensor(bad))
    with pytest.raises(RuntimeError, match="batch size 0"):
        module(images[:0], camids[:0])
    with pytest.raises(Exception, match="camids.*images"):  # one camera id per image
        module(images, torch.zeros(5, dtype=torch.long))
    with pytest.raises(Exception, match=str(encoder.backbone.input_size[0])):  # the exported input size only
        module(images[:, :, 1:], camids)

    agnostic_path = str(tmp_path / "agnostic.pt2")
    export_program(encoder, agnostic_path, camera="mean")
    agnostic, contract = load_program(agnostic_path)
    assert contract["camids"] == "none (camera-agnostic SIE: mean)"
    with torch.no_grad():
        expected = camera_agnostic_encoder(encoder, "mean")(images, torch.zeros(3, dtype=torch.long))
        assert _max_diff(agnostic(images), expected) < ATOL
        assert _max_diff(ProgramEncoder(encoder, "mean")(images), expected) < ATOL
    with pytest.raises(RuntimeError, match="batch size 0"):
        agnostic(images[:0])

    no_sie = DeployedImageEncoder.from_agreid(tiny_model(tiny_cfg("MODEL.BACKBONE.SIE_CAMERA", "False")))
    no_sie_path = str(tmp_path / "no_sie.pt2")
    export_program(no_sie, no_sie_path)
    module, contract = load_program(no_sie_path)
    assert contract["camids"] == "none (no SIE)"
    with torch.no_grad():
        assert _max_diff(module(images), no_sie(images)) < ATOL
