"""ONNX export of the image encoder: onnx.checker, and onnxruntime against PyTorch."""
import os
import sys

import numpy as np
import onnx
import pytest
import torch

from _tiny_model import NUM_CAMERAS, tiny_cfg, tiny_model, tiny_run
from agreid import Predictor
from agreid.cli import export_image_encoder
from agreid.deploy_onnx import export_onnx, onnx_exporter, onnx_session
from agreid.modeling.deploy import DeployedImageEncoder
from agreid.benchmarks import inference as benchmark_infer
from agreid.predictor import list_images

# Trains, exports or starts processes: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow

ATOL = 1e-4
try:
    import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)

    HAS_ONNXSCRIPT = True
except ImportError:
    HAS_ONNXSCRIPT = False
needs_onnxscript = pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="the dynamo ONNX exporter needs onnxscript")


def _inputs(encoder, size, seed):
    generator = torch.Generator().manual_seed(seed)
    height, width = encoder.backbone.input_size
    return (torch.rand(size, 3, height, width, generator=generator) * 255,
            torch.randint(NUM_CAMERAS, (size,), generator=generator))


@pytest.mark.parametrize("neck_feat,exporter", [
    pytest.param("before", "dynamo", marks=needs_onnxscript),
    pytest.param("after", "dynamo", marks=needs_onnxscript),
    ("after", "legacy"),
])
def test_onnx_with_camids_matches_pytorch(tmp_path, neck_feat, exporter):
    encoder = DeployedImageEncoder.from_agreid(tiny_model(tiny_cfg("MODEL.HEADS.NECK_FEAT", neck_feat)))
    # The tiny config uses OLP (stride 12): a non-square, overlapping patch grid.
    assert encoder.backbone.visual.conv1.stride[0] < encoder.backbone.visual.patch_size[0]
    path = str(tmp_path / "encoder.onnx")
    assert export_onnx(encoder, path, exporter=exporter) < ATOL
    assert not os.path.exists(path + ".data")  # one file, weights inside
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["images", "camids"]
    assert model.opset_import[0].version == (18 if exporter == "dynamo" else 17)
    metadata = {p.key: p.value for p in model.metadata_props}
    assert "0-255" in metadata["input"] and "L2-normalised" in metadata["output"]
    assert f"dynamo={exporter == 'dynamo'}" in metadata["exporter"]
    session = onnx_session(path, ["CPUExecutionProvider"])
    for size in (1, 4, 7):  # dynamic batch
        images, camids = _inputs(encoder, size, size)
        got = session.run(None, {"images": images.numpy(), "camids": camids.numpy()})[0]
        with torch.no_grad():
            expected = encoder(images, camids).numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < ATOL
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def agnostic_export(tmp_path_factory):
    """``(encoder, path of its camera-agnostic ONNX export (camera "mean"), the export's own check)``:
    one export shared by the two tests that read it."""
    encoder = DeployedImageEncoder.from_agreid(tiny_model(tiny_cfg()))
    path = str(tmp_path_factory.mktemp("onnx") / "agnostic.onnx")
    return encoder, path, export_onnx(encoder, path, camera="mean")


def test_camera_agnostic_and_no_sie_graphs_take_images_only(tmp_path, tiny_dataset_root, agnostic_export):
    encoder, path, difference = agnostic_export
    assert difference < ATOL
    session = onnx_session(path, ["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    paths, _ = list_images(os.path.join(tiny_dataset_root, "SyntheticOccluded", "query"))
    predictor = Predictor(encoder, camera="mean", device="cpu")
    images = predictor.load(paths[:6])
    got = session.run(None, {"images": images.numpy()})[0]
    assert np.abs(got - predictor(paths[:6]).numpy()).max() < ATOL

    no_sie = DeployedImageEncoder.from_agreid(tiny_model(tiny_cfg("MODEL.BACKBONE.SIE_CAMERA", "False")))
    path = str(tmp_path / "no_sie.onnx")
    assert export_onnx(no_sie, path) < ATOL
    assert [i.name for i in onnx.load(path).graph.input] == ["images"]


def test_export_tool_writes_both_onnx_files(tmp_path, capsys):
    cfg, checkpoint = tiny_run(tmp_path / "run")
    out = tmp_path / "deploy"
    assert export_image_encoder.main(["--config-file", str(tmp_path / "run" / "config.yaml"), "--weights", checkpoint,
                                      "--output", str(out), "--onnx", "--camera", "2"]) == 0
    printed = capsys.readouterr().out
    assert "image_encoder.onnx: images, camids" in printed and "image_encoder_agnostic.onnx: images" in printed
    encoder = Predictor(checkpoint, device="cpu").encoder
    images, _ = _inputs(encoder, 3, 0)
    agnostic = onnx_session(str(out / "image_encoder_agnostic.onnx"), ["CPUExecutionProvider"])
    got = agnostic.run(None, {"images": images.numpy()})[0]
    with torch.no_grad():
        expected = encoder(images, torch.full((3,), 2)).numpy()  # rule "2": camera 2 for every image
    assert np.abs(got - expected).max() < ATOL


def test_benchmark_tool_times_each_backend_on_the_same_batch(capsys):
    backends = ["eager", "pt2", "torchscript", "onnxruntime", "onnxruntime-legacy"]
    config = os.path.join(os.path.dirname(__file__), "..", "configs/Synthetic/agreid.yml")
    assert benchmark_infer.main(["--config-file", config, "--batch-size", "2", "--iters", "1", "--warmup", "0",
                                 "--rounds", "2", "--backends", ",".join(backends), "INPUT.SIZE_TEST", "[64,32]"]) == 0
    printed = capsys.readouterr().out
    assert "median of 2 rounds" in printed
    lines = [line for line in printed.splitlines() if line.startswith("| ")]
    rows = {line.split("|")[1].strip().split(" ")[0]: [c.strip() for c in line.split("|")[2:-1]] for line in lines[1:]}
    assert set(rows) == set(backends)
    for images_per_second, ms, difference in rows.values():
        # "median [min-max]" of the two rounds
        assert float(images_per_second.split(" ")[0]) > 0 and float(ms.split(" ")[0]) > 0 and "[" in ms
        assert float(difference) < ATOL
    assert f"{onnx_exporter('auto')} exporter" in printed and "legacy exporter" in printed
    assert benchmark_infer.main(["--batch-size", "2"]) == 2
    assert "--config-file" in capsys.readouterr().err


def test_onnx_wrappers_check_the_input_contract(tmp_path, agnostic_export):
    # What onnxruntime would answer with a node error (or, for camid -1, silently the last
    # camera's row) is refused with a ValueError that names the value and the valid range.
    encoder, agnostic_path, _ = agnostic_export
    path = str(tmp_path / "encoder.onnx")
    export_onnx(encoder, path)
    session = onnx_session(path, ["CPUExecutionProvider"])
    images, camids = _inputs(encoder, 3, 0)
    images, camids = images.numpy(), camids.numpy()
    height, width = encoder.backbone.input_size

    def refused(feeds, *patterns):
        with pytest.raises(ValueError) as error:
            session.run(None, feeds)
        for pattern in patterns:
            assert pattern in str(error.value), str(error.value)

    refused({"images": images, "camids": np.zeros(5, dtype=np.int64)}, "camids", "5", "3 images")
    refused({"images": images[:0], "camids": camids[:0]}, "batch", "0", "at least 1")
    refused({"images": images, "camids": np.array([0, -1, 1])}, "camid -1", f"0..{NUM_CAMERAS - 1}")
    refused({"images": images, "camids": np.array([0, NUM_CAMERAS, 1])}, f"camid {NUM_CAMERAS}", f"0..{NUM_CAMERAS - 1}")
    refused({"images": images, "camids": camids.astype(np.float32)}, "camids", "float32", "int64")
    refused({"images": images}, "camids", "required")
    refused({"images": images.astype(np.float64), "camids": camids}, "images", "float64", "float32")
    refused({"images": images[:, :, :height - 1], "camids": camids}, "images", f"(3, 3, {height - 1}, {width})",
            f"(batch, 3, {height}, {width})")
    # Valid input runs as before, also through the wrapper's call.
    got = session.run(None, {"images": images, "camids": camids})[0]
    with torch.no_grad():
        expected = encoder(torch.from_numpy(images), torch.from_numpy(camids)).numpy()
    assert np.abs(got - expected).max() < ATOL
    assert np.abs(session(images, camids) - expected).max() < ATOL

    agnostic = onnx_session(agnostic_path, ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="takes no camids"):
        agnostic.run(None, {"images": images, "camids": camids})
    with pytest.raises(ValueError, match="batch size 0"):
        agnostic(images[:0])


def test_exporter_choice(monkeypatch, caplog):
    assert onnx_exporter("legacy") == "legacy"
    with pytest.raises(ValueError, match="exporter 'jit'"):
        onnx_exporter("jit")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed
    with pytest.raises(ValueError, match="pip install onnxscript"):
        onnx_exporter("dynamo")
    assert onnx_exporter("auto") == "legacy"
    assert "onnxscript is not installed" in caplog.text
