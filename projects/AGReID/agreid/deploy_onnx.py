"""ONNX export of the deployed image encoder, checked with ``onnx.checker`` and onnxruntime.

The graph takes ``images`` (B, 3, H, W): RGB, float32, 0-255, already resized to the encoder's
input size, and returns ``features`` (B, D): the L2-normalised test feature. The pixel
normalisation is inside the graph; the batch size is dynamic. With SIE the graph also takes
``camids`` (B,) int64, unless it is exported camera-agnostic (one SIE vector for every image,
by a rule of :func:`agreid.predictor.camera_agnostic_encoder`). See docs/DEPLOY.md.

The graph comes from torch's current exporter, ``torch.onnx.export(..., dynamo=True)`` (a
``torch.export`` program translated by onnxscript, opset 18), when the ``onnxscript`` package is
installed; otherwise, or with ``exporter="legacy"``, from the TorchScript-based exporter that
torch deprecates (opset 17). Both are checked the same way; docs/DEPLOY.md compares them.

onnxruntime itself checks little of this contract: camera ids outside ``0..num_cameras-1``
(``-1`` picks the last camera's row), a ``camids`` of another length than the batch or an
empty batch end in node errors or in silently wrong features. :func:`onnx_session` returns an
:class:`OnnxImageEncoder`, which checks the inputs first and names what is wrong.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import re
import warnings
from typing import Dict, Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime
import torch
from torch import Tensor, nn

from .modeling.deploy import DeployedImageEncoder, contract_metadata, example_inputs
from .predictor import camera_agnostic_encoder

logger = logging.getLogger(__name__)

OPSET = 17  # the legacy exporter's
DYNAMO_OPSET = 18  # the dynamo exporter's own (onnxscript's torchlib); lower ones need a conversion
EXPORTERS = ("auto", "dynamo", "legacy")


def onnx_exporter(exporter: str = "auto") -> str:
    """``dynamo`` or ``legacy``: the exporter that ``exporter`` means here.

    ``auto`` is ``dynamo`` (``torch.onnx.export(..., dynamo=True)``) when the ``onnxscript``
    package it needs is installed, else ``legacy`` (with a warning saying so).

    Raises:
        ValueError: an unknown name, or ``dynamo`` without onnxscript.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"ONNX exporter {exporter!r}: choose one of {EXPORTERS}.")
    if exporter == "legacy":
        return exporter
    try:
        import onnxscript  # noqa: F401  (what torch's dynamo exporter translates with)
    except ImportError:
        if exporter == "dynamo":
            raise ValueError("the dynamo ONNX exporter needs the onnxscript package: pip install onnxscript "
                             "(or choose the legacy exporter).") from None
        logger.warning("onnxscript is not installed: exporting ONNX with torch's legacy TorchScript-based "
                       "exporter (pip install onnxscript for the current one).")
        return "legacy"
    return "dynamo"


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
    # In eval mode nn.MultiheadAttention takes a fused "fast path" op that the legacy ONNX exporter
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
    opset: Optional[int] = None,
    atol: float = 1e-4,
    exporter: str = "auto",
) -> float:
    """Write ``encoder`` to ``path`` as ONNX, check it, and compare onnxruntime with PyTorch.

    Args:
        encoder: the deployed encoder (on any device; exported from a CPU copy).
        path: the ``.onnx`` file to write.
        camera: None: a ``camids`` input when SIE is on; a rule (``mean``, ``zero``, index):
            camera-agnostic, images only. Ignored without SIE (images only).
        opset: ONNX opset; default 18 for the dynamo exporter, 17 for the legacy one.
        atol: largest allowed difference between onnxruntime and PyTorch features.
        exporter: ``dynamo`` (``torch.onnx.export(..., dynamo=True)``), ``legacy`` (the
            TorchScript-based one) or ``auto`` (:func:`onnx_exporter`).

    Returns:
        The largest absolute difference between onnxruntime's and PyTorch's features, on a
        batch of another size than the one exported with (so the dynamic batch is checked).

    Raises:
        RuntimeError: onnxruntime's features differ from PyTorch's by more than ``atol``.
        ValueError: an unknown exporter, or ``dynamo`` without onnxscript.
    """
    exporter = onnx_exporter(exporter)
    encoder = _cpu_copy(encoder)
    with_camids = camera is None and encoder.backbone.num_cameras > 0
    module = encoder if with_camids else CameraAgnosticEncoder(encoder, "mean" if camera is None else camera)
    input_names = ["images", "camids"] if with_camids else ["images"]
    example = example_inputs(encoder, 2, with_camids, 0)
    if exporter == "dynamo":
        _export_dynamo(module, example, path, input_names, DYNAMO_OPSET if opset is None else opset)
    else:
        _export_legacy(module, example, path, input_names, OPSET if opset is None else opset)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    _add_metadata(model, encoder, with_camids, camera, exporter)
    onnx.save(model, path)

    inputs = example_inputs(encoder, 5, with_camids, 1)
    with torch.no_grad():
        expected = module(*inputs).numpy()
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(["features"], {name: t.numpy() for name, t in zip(input_names, inputs)})[0]
    difference = float(np.abs(got - expected).max())
    if difference > atol:
        raise RuntimeError(f"{path}: onnxruntime's features differ from PyTorch's by {difference:.3g} "
                           f"(> {atol}); do not deploy this file.")
    logger.info("ONNX encoder %s (%s exporter): inputs %s, max |onnxruntime - PyTorch| = %.2g", path, exporter,
                input_names, difference)
    return difference


def _export_dynamo(module: nn.Module, example, path: str, input_names, opset: int) -> None:
    """torch's current exporter: torch.export, then onnxscript's translation; one file."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings():
        # Inputs that share the batch dimension: torch notes that it names the axis once.
        warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used", category=UserWarning)
        torch.onnx.export(module, example, path, input_names=list(input_names), output_names=["features"],
                          dynamic_shapes=tuple({0: batch} for _ in example), opset_version=opset, dynamo=True,
                          external_data=False, verbose=False)


def _export_legacy(module: nn.Module, example, path: str, input_names, opset: int) -> None:
    """torch's TorchScript-based exporter (deprecated by torch; kept for where onnxscript is missing)."""
    dynamic_axes = {name: {0: "batch"} for name in (*input_names, "features")}
    with torch.no_grad(), _exportable_attention(), warnings.catch_warnings():
        # The input-size check reads the shape in Python: fixed in the graph, as intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Chosen (exporter="legacy", or onnxscript missing): torch's deprecation notice is known.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, example, path, input_names=list(input_names), output_names=["features"],
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)


class OnnxImageEncoder:
    """An onnxruntime session of an exported encoder that checks the input contract first.

    ``run(output_names, feeds)`` is the session's, after :meth:`check`; ``encoder(images,
    camids=None)`` returns the features; any other attribute (``get_inputs``, ``get_providers``,
    ...) is the session's.

    The contract (docs/DEPLOY.md): ``images`` float32 (batch, 3, H, W) at the exported input
    size, batch >= 1; ``camids`` int64 (batch,) in ``0..num_cameras-1``, given exactly when the
    graph has that input (SIE, not camera-agnostic).
    """

    def __init__(self, session: onnxruntime.InferenceSession):
        self.session = session
        inputs = {node.name: node for node in session.get_inputs()}
        if "images" not in inputs:
            raise ValueError(f"this ONNX graph takes {sorted(inputs)}, not an AG-ReID image encoder's 'images'.")
        dims = inputs["images"].shape[1:]
        self.input_size = tuple(dims[1:]) if all(isinstance(d, int) for d in dims) else None
        self.with_camids = "camids" in inputs
        metadata = session.get_modelmeta().custom_metadata_map
        if "num_cameras" in metadata:
            self.num_cameras: Optional[int] = int(metadata["num_cameras"])
        else:  # files exported before the key: "int64 (batch,) in 0..N-1"
            found = re.search(r"in 0\.\.(\d+)", metadata.get("camids", ""))
            self.num_cameras = int(found.group(1)) + 1 if found else None

    def __getattr__(self, name: str):
        if name == "session":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.session, name)

    def check(self, feeds: Dict[str, np.ndarray]) -> None:
        """Raise ValueError naming the input, its value and the valid range, if ``feeds`` breaks the contract."""
        expected = ["images", "camids"] if self.with_camids else ["images"]
        unknown = sorted(set(feeds) - set(expected))
        if unknown:
            extra = "; this graph takes no camids (no SIE, or camera-agnostic)" if "camids" in unknown else ""
            raise ValueError(f"unknown input(s) {unknown}: this graph takes {expected}{extra}.")
        if "images" not in feeds:
            raise ValueError(f"input 'images' is required: this graph takes {expected}.")
        images = feeds["images"]
        height, width = self.input_size or ("H", "W")
        if not isinstance(images, np.ndarray):
            raise ValueError(f"images must be a numpy array, got {type(images).__name__}.")
        if images.dtype != np.float32:
            raise ValueError(f"images has dtype {images.dtype}: the encoder takes float32 (RGB, 0-255).")
        if images.ndim != 4 or images.shape[1] != 3 or (self.input_size and tuple(images.shape[2:]) != self.input_size):
            raise ValueError(f"images has shape {tuple(images.shape)}: the encoder takes (batch, 3, {height}, {width}), "
                             f"RGB, resized to the exported input size.")
        batch = images.shape[0]
        if batch < 1:
            raise ValueError("images has batch size 0: the encoder needs at least 1 image (batch >= 1).")
        if not self.with_camids:
            return
        if "camids" not in feeds:
            raise ValueError(f"input 'camids' is required: this graph has SIE and takes int64 (batch,) camera ids "
                             f"in {self._camera_range()}.")
        camids = feeds["camids"]
        if not isinstance(camids, np.ndarray):
            raise ValueError(f"camids must be a numpy array, got {type(camids).__name__}.")
        if camids.dtype != np.int64:
            raise ValueError(f"camids has dtype {camids.dtype}: the encoder takes int64.")
        if camids.shape != (batch,):
            raise ValueError(f"camids has shape {tuple(camids.shape)}: one camera id per image is needed, "
                             f"shape ({batch},) for the {batch} images.")
        limit = self.num_cameras if self.num_cameras is not None else np.iinfo(np.int64).max
        outside = camids[(camids < 0) | (camids >= limit)]
        if outside.size:
            raise ValueError(f"camid {int(outside[0])} is outside {self._camera_range()}, the training cameras of "
                             f"this encoder.")

    def _camera_range(self) -> str:
        return f"0..{self.num_cameras - 1}" if self.num_cameras else "0..num_cameras-1"

    def run(self, output_names, input_feed: Dict[str, np.ndarray], run_options=None):
        """``InferenceSession.run`` after :meth:`check`."""
        self.check(input_feed)
        return self.session.run(output_names, input_feed, run_options)

    def __call__(self, images, camids=None) -> np.ndarray:
        """Features (B, D) of 0-255 images (B, 3, H, W) (numpy or torch); camids only with SIE."""
        feeds = {"images": images.detach().cpu().numpy() if isinstance(images, Tensor) else images}
        if camids is not None:
            camids = camids.detach().cpu().numpy() if isinstance(camids, Tensor) else np.asarray(camids)
            if np.issubdtype(camids.dtype, np.integer):
                camids = camids.astype(np.int64)
            feeds["camids"] = camids
        return self.run(["features"], feeds)[0]


def onnx_session(path: str, providers: Optional[Sequence[str]] = None) -> OnnxImageEncoder:
    """An onnxruntime session of ``path`` that checks its inputs (:class:`OnnxImageEncoder`): the
    given providers, else CUDA when available, then CPU."""
    if providers is None:
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return OnnxImageEncoder(onnxruntime.InferenceSession(path, providers=list(providers)))


def _cpu_copy(encoder: DeployedImageEncoder) -> DeployedImageEncoder:
    return copy.deepcopy(encoder).cpu().float().eval()



def _add_metadata(model: onnx.ModelProto, encoder: DeployedImageEncoder, with_camids: bool, camera,
                  exporter: str = "legacy") -> None:
    values = contract_metadata(encoder, with_camids, camera)
    values["exporter"] = ("torch.onnx.export dynamo=True (torch.export)" if exporter == "dynamo"
                          else "torch.onnx.export dynamo=False (TorchScript-based, legacy)")
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
