"""ONNX export of the deployed image encoder, checked with ``onnx.checker`` and onnxruntime.

The graph takes ``images`` (B, 3, H, W): RGB, float32, 0-255, already resized to the encoder's
input size, and returns ``features`` (B, D): the L2-normalised test feature. The pixel
normalisation is inside the graph; the batch size is dynamic. With SIE the graph also takes
``camids`` (B,) int64, unless it is exported camera-agnostic (one SIE vector for every image,
by a rule of :func:`agreid.predictor.camera_agnostic_encoder`). See docs/DEPLOY.md.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime
import torch
from torch import Tensor, nn

from .modeling.deploy import DeployedImageEncoder
from .predictor import camera_agnostic_encoder

logger = logging.getLogger(__name__)

OPSET = 17


class CameraAgnosticEncoder(nn.Module):
    """``images -> features`` with one SIE vector (the rule's) for every image.

    Args:
        encoder: a deployed encoder.
        camera: ``mean``, ``zero`` or a training camera index.
    """

    def __init__(self, encoder: DeployedImageEncoder, camera: Union[str, int] = "mean"):
        super().__init__()
        self.encoder = camera_agnostic_encoder(encoder, camera)
        self.camera = camera
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        """Features (B, D) of 0-255 images (B, 3, H, W)."""
        camids = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        return self.encoder(images, camids)


@contextlib.contextmanager
def _exportable_attention():
    # In eval mode nn.MultiheadAttention takes a fused "fast path" op that the ONNX exporter
    # has no symbolic for; the plain path computes the same.
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def export_onnx(
    encoder: DeployedImageEncoder,
    path: str,
    *,
    camera: Optional[Union[str, int]] = None,
    opset: int = OPSET,
    atol: float = 1e-4,
) -> float:
    """Write ``encoder`` to ``path`` as ONNX, check it, and compare onnxruntime with PyTorch.

    Args:
        encoder: the deployed encoder (on any device; exported from a CPU copy).
        path: the ``.onnx`` file to write.
        camera: None: a ``camids`` input when SIE is on; a rule (``mean``, ``zero``, index):
            camera-agnostic, images only. Ignored without SIE (images only).
        opset: ONNX opset.
        atol: largest allowed difference between onnxruntime and PyTorch features.

    Returns:
        The largest absolute difference between onnxruntime's and PyTorch's features, on a
        batch of another size than the one exported with (so the dynamic batch is checked).

    Raises:
        RuntimeError: onnxruntime's features differ from PyTorch's by more than ``atol``.
    """
    encoder = _cpu_copy(encoder)
    with_camids = camera is None and encoder.backbone.num_cameras > 0
    module = encoder if with_camids else CameraAgnosticEncoder(encoder, "mean" if camera is None else camera)
    input_names = ["images", "camids"] if with_camids else ["images"]
    dynamic_axes = {name: {0: "batch"} for name in (*input_names, "features")}
    with torch.no_grad(), _exportable_attention(), warnings.catch_warnings():
        # The input-size check reads the shape in Python: fixed in the graph, as intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # This is torch's TorchScript-based exporter on purpose: the torch.export-based one
        # needs the onnxscript package. Its deprecation notices are not the user's to act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, _example(encoder, 2, with_camids, 0), path, input_names=input_names,
                          output_names=["features"], dynamic_axes=dynamic_axes, opset_version=opset,
                          dynamo=False)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    _add_metadata(model, encoder, with_camids, camera)
    onnx.save(model, path)

    inputs = _example(encoder, 5, with_camids, 1)
    with torch.no_grad():
        expected = module(*inputs).numpy()
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(["features"], {name: t.numpy() for name, t in zip(input_names, inputs)})[0]
    difference = float(np.abs(got - expected).max())
    if difference > atol:
        raise RuntimeError(f"{path}: onnxruntime's features differ from PyTorch's by {difference:.3g} "
                           f"(> {atol}); do not deploy this file.")
    logger.info("ONNX encoder %s: inputs %s, max |onnxruntime - PyTorch| = %.2g", path, input_names, difference)
    return difference


def onnx_session(path: str, providers: Optional[Sequence[str]] = None) -> onnxruntime.InferenceSession:
    """An onnxruntime session of ``path``: the given providers, else CUDA when available, then CPU."""
    if providers is None:
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return onnxruntime.InferenceSession(path, providers=list(providers))


def _cpu_copy(encoder: DeployedImageEncoder) -> DeployedImageEncoder:
    return copy.deepcopy(encoder).cpu().float().eval()


def _example(encoder: DeployedImageEncoder, size: int, with_camids: bool, seed: int):
    generator = torch.Generator().manual_seed(seed)
    height, width = encoder.backbone.input_size
    images = torch.rand(size, 3, height, width, generator=generator) * 255
    if not with_camids:
        return (images,)
    return images, torch.randint(encoder.backbone.num_cameras, (size,), generator=generator)


def _add_metadata(model: onnx.ModelProto, encoder: DeployedImageEncoder, with_camids: bool, camera) -> None:
    height, width = encoder.backbone.input_size
    values = {
        "input": f"images float32 (batch, 3, {height}, {width}) RGB 0-255, normalised inside",
        "output": f"features float32 (batch, {encoder.backbone.final_dim + encoder.backbone.embed_dim}) L2-normalised",
        "camids": (f"int64 (batch,) in 0..{encoder.backbone.num_cameras - 1}" if with_camids
                   else "none (no SIE)" if encoder.backbone.num_cameras == 0
                   else f"none (camera-agnostic SIE: {camera})"),
    }
    if encoder.settings is not None:
        values["clip_name"] = encoder.settings.clip_name
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
