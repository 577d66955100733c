"""AG-ReID's image encoder alone, for deployment: no text encoder, prompts or attribute encoder.

Inference needs the image encoder only (docs/METHOD.md). :class:`DeployedImageEncoder` holds
the CLIP image encoder (OLP, SIE), the BNNecks when ``MODEL.HEADS.NECK_FEAT`` is ``after``, and
the pixel normalisation; its output is AGReID's eval-mode test feature.

:func:`build_deployed_encoder` builds it from a full training checkpoint (with the config it
was trained with) or from an exported ``image_encoder.safetensors`` (no config needed), and only ever
builds CLIP's vision tower. The exported file holds the weights and the few settings needed to
rebuild the encoder (:class:`EncoderSettings`); ``tools/export_image_encoder.py`` writes it.

:func:`export_program` writes the encoder as a ``torch.export`` program (``.pt2``): a graph of
ATen operators plus the weights, which ``torch.export.load(path).module()`` runs with torch
alone (no agreid, fastreid or open_clip), with a dynamic batch and the input contract of the
ONNX files checked inside the graph (:class:`ProgramEncoder`). :func:`trace_deployed_encoder`
(TorchScript) is the legacy route: ``torch.jit`` is deprecated (torch 2.14 warns on ``trace`` and ``load``).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import warnings
from typing import Dict, List, Optional, Tuple, Union

import open_clip
import torch
from open_clip.model import _build_vision_tower
from open_clip.transformer import QuickGELU
from torch import Tensor, nn

from ..serialization import (
    check_weights,
    is_safetensors_file,
    load_checkpoint_file,
    safetensors_metadata,
    write_atomically,
)
from .clip_backbone import CLIPImageEncoder
from .clip_loader import clip_uses_quick_gelu  # also re-exported: callers import it from here
from .meta_arch import _DEPLOYED_MODULES, AGReID, test_feature

logger = logging.getLogger(__name__)

# The extra file of a .pt2 archive that holds the input contract (JSON; see export_program).
PROGRAM_CONTRACT_FILE = "agreid_contract.json"
# Messages of the contract checks inside a .pt2 graph (raised as RuntimeError on the CPU).
BATCH_MESSAGE = "images has batch size 0: the encoder needs at least 1 image (batch >= 1)."

# Marks an exported encoder file; the version changes when its layout does.
EXPORT_FORMAT = "agreid-image-encoder"
# 2: safetensors with the settings as JSON metadata; 1: a torch.save dict (still read).
EXPORT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
    """What it takes to rebuild the deployed encoder, besides its weights.

    Attributes:
        clip_name: open_clip model name (``MODEL.BACKBONE.CLIP_NAME``), for the record.
        clip_config: open_clip's model config of ``clip_name`` (``embed_dim``, ``vision_cfg``),
            stored so the file rebuilds even where open_clip does not know the name.
        quick_gelu: whether the ViT's MLPs use QuickGELU (OpenAI's weights do). It is not in
            the weights, and a wrong activation silently changes every feature.
        input_size: (height, width) of the input images.
        stride: patch-embedding stride (OLP).
        num_cameras: rows of the SIE table; 0 = no SIE.
        sie_coe: SIE coefficient.
        neck_feat: test feature ``before`` or ``after`` the BNNecks.
        pixel_mean, pixel_std: per-channel normalisation of 0-255 images.
        interpolation: the resize of test images (``INPUT.INTERPOLATION_TEST``), so that the
            features of a user's images match the evaluated ones.
        last_stride: stride of a ResNet's layer4 (``MODEL.BACKBONE.LAST_STRIDE``; 2 in files
            written before the key existed).
    """

    clip_name: str
    clip_config: dict
    quick_gelu: bool
    input_size: Tuple[int, int]
    stride: int
    num_cameras: int
    sie_coe: float
    neck_feat: str
    pixel_mean: Tuple[float, float, float]
    pixel_std: Tuple[float, float, float]
    last_stride: int = 2
    # Test-time resize (INPUT.INTERPOLATION_TEST); files written before the key existed resized bicubically.
    interpolation: str = "bicubic"

    @classmethod
    def from_config(cls, cfg, *, num_cameras: int, quick_gelu: Optional[bool] = None) -> "EncoderSettings":
        """Settings of an AG-ReID config.

        Args:
            cfg: the config the model was trained with.
            num_cameras: rows of the SIE table (the checkpoint knows; the config may say 0 = auto).
            quick_gelu: the activation, or None to derive it from the configured CLIP weights.
        """
        clip_name = cfg.MODEL.BACKBONE.CLIP_NAME
        clip_config = open_clip.get_model_config(clip_name)
        if clip_config is None:
            raise ValueError(f"open_clip has no model config {clip_name!r} (MODEL.BACKBONE.CLIP_NAME).")
        return cls(
            clip_name=clip_name,
            clip_config={"embed_dim": clip_config["embed_dim"], "vision_cfg": dict(clip_config["vision_cfg"])},
            quick_gelu=clip_uses_quick_gelu(cfg) if quick_gelu is None else bool(quick_gelu),
            input_size=(int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1])),
            stride=int(cfg.MODEL.BACKBONE.STRIDE),
            num_cameras=int(num_cameras),
            sie_coe=float(cfg.MODEL.BACKBONE.SIE_COE),
            neck_feat=cfg.MODEL.HEADS.NECK_FEAT,
            pixel_mean=tuple(float(v) for v in cfg.MODEL.PIXEL_MEAN),
            pixel_std=tuple(float(v) for v in cfg.MODEL.PIXEL_STD),
            last_stride=int(cfg.MODEL.BACKBONE.LAST_STRIDE),
            interpolation=str(cfg.INPUT.INTERPOLATION_TEST),
        )

    def to_dict(self) -> dict:
        """Plain Python values (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "EncoderSettings":
        """The inverse of :meth:`to_dict`."""
        values = dict(values)
        for key in ("input_size", "pixel_mean", "pixel_std"):
            values[key] = tuple(values[key])
        return cls(**values)


class DeployedImageEncoder(nn.Module):
    """AG-ReID's test-time model: images (0-255) and camera ids in, L2-normalised features out.

    Args:
        backbone: the CLIP image encoder (:class:`CLIPImageEncoder`).
        pixel_mean, pixel_std: per-channel normalisation of 0-255 images.
        neck_feat: ``before`` or ``after`` the BNNecks (``MODEL.HEADS.NECK_FEAT``).
        bnneck, bnneck_proj: the BNNecks on ``f`` and ``f_proj``; required for ``after``,
            dropped for ``before``.
        settings: how to rebuild it (needed to :func:`save_deployed_encoder`).
    """

    def __init__(
        self,
        backbone: CLIPImageEncoder,
        *,
        pixel_mean,
        pixel_std,
        neck_feat: str = "before",
        bnneck: Optional[nn.BatchNorm1d] = None,
        bnneck_proj: Optional[nn.BatchNorm1d] = None,
        settings: Optional[EncoderSettings] = None,
    ):
        super().__init__()
        if neck_feat not in ("before", "after"):
            raise ValueError(f"neck_feat must be 'before' or 'after', not {neck_feat!r}.")
        if neck_feat == "after" and (bnneck is None or bnneck_proj is None):
            raise ValueError("neck_feat 'after' needs both BNNecks.")
        self.backbone = backbone
        self.bnneck = bnneck if neck_feat == "after" else None
        self.bnneck_proj = bnneck_proj if neck_feat == "after" else None
        self.neck_feat = neck_feat
        self.settings = settings
        # (1, 3, 1, 1); kept in `settings`, not in the state dict, as in fastreid's Baseline.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.eval()

    @classmethod
    def from_agreid(cls, model: AGReID, settings: Optional[EncoderSettings] = None) -> "DeployedImageEncoder":
        """A copy of ``model``'s image encoder (and BNNecks for ``after``), in eval mode.

        Args:
            model: a built AG-ReID model; its text side is not touched.
            settings: the model's :class:`EncoderSettings`, needed only to save the copy.
        """
        if settings is not None and settings.quick_gelu != uses_quick_gelu(model.backbone):
            raise ValueError(f"settings.quick_gelu is {settings.quick_gelu} but the model's encoder "
                             f"{'uses' if uses_quick_gelu(model.backbone) else 'does not use'} QuickGELU.")
        after = model.neck_feat == "after"
        encoder = cls(
            copy.deepcopy(model.backbone),
            pixel_mean=model.pixel_mean.flatten().tolist(),
            pixel_std=model.pixel_std.flatten().tolist(),
            neck_feat=model.neck_feat,
            bnneck=copy.deepcopy(model.bnneck) if after else None,
            bnneck_proj=copy.deepcopy(model.bnneck_proj) if after else None,
            settings=settings,
        )
        return encoder.to(model.pixel_mean.device).eval()

    def forward(self, images: Tensor, camids: Optional[Tensor] = None) -> Tensor:
        """Test features (B, final_dim + embed_dim) of images (B, 3, H, W, 0-255); camids (B,) for SIE."""
        features = self.backbone((images - self.pixel_mean) / self.pixel_std, camids)
        return test_feature(features, self.bnneck, self.bnneck_proj)


# The camera-agnostic rules: an image of unknown camera uses the mean of the SIE table's rows,
# or no camera embedding at all (zeros); a training camera index picks that camera's row.
CAMERA_RULES = ("mean", "zero")


def camera_agnostic_encoder(encoder: DeployedImageEncoder, camera: Union[str, int] = "mean") -> DeployedImageEncoder:
    """A copy of ``encoder`` whose SIE table is one row, the ``camera`` rule's; camera id 0 selects it.

    Args:
        encoder: a deployed encoder; returned as it is when it has no SIE.
        camera: ``mean``, ``zero`` or a training camera index (see :data:`CAMERA_RULES`: the mean of the table's rows, or zeros).

    Raises:
        ValueError: an unknown rule or a camera index outside the SIE table.
    """
    table = encoder.backbone.camera_embedding
    if table is None:
        return encoder
    row = camera_row(table.detach(), camera)
    agnostic = copy.deepcopy(encoder)
    agnostic.backbone.camera_embedding = nn.Parameter(row.unsqueeze(0).clone(), requires_grad=False)
    return agnostic.eval()


def camera_row(table: Tensor, camera: Union[str, int]) -> Tensor:
    """The SIE vector (width,) that stands in for an unknown camera under rule ``camera``."""
    if isinstance(camera, str) and camera.lstrip("-").isdigit():
        camera = int(camera)
    if camera == "mean":
        return table.mean(dim=0)
    if camera == "zero":
        return torch.zeros_like(table[0])
    if isinstance(camera, int):
        if not 0 <= camera < table.shape[0]:
            raise ValueError(f"camera {camera} is outside the SIE table (cameras 0..{table.shape[0] - 1}).")
        return table[camera]
    raise ValueError(f"camera rule {camera!r}: use one of {CAMERA_RULES} or a camera index.")


def build_image_encoder(settings: EncoderSettings) -> DeployedImageEncoder:
    """A deployed encoder with random weights: CLIP's vision tower only, nothing of the text side."""
    # open_clip's vision-tower builder is the one its CLIP class calls; the public
    # create_model would build (and initialise) the text tower too.
    visual = _build_vision_tower(
        settings.clip_config["embed_dim"], dict(settings.clip_config["vision_cfg"]), quick_gelu=settings.quick_gelu
    )
    backbone = CLIPImageEncoder(
        visual,
        input_size=settings.input_size,
        stride=settings.stride,
        num_cameras=settings.num_cameras,
        sie_coe=settings.sie_coe,
        last_stride=settings.last_stride,
    )
    after = settings.neck_feat == "after"
    return DeployedImageEncoder(
        backbone,
        pixel_mean=settings.pixel_mean,
        pixel_std=settings.pixel_std,
        neck_feat=settings.neck_feat,
        bnneck=nn.BatchNorm1d(backbone.final_dim) if after else None,
        bnneck_proj=nn.BatchNorm1d(backbone.embed_dim) if after else None,
        settings=settings,
    )


def build_deployed_encoder(cfg=None, weights_path: str = "", *, quick_gelu: Optional[bool] = None) -> DeployedImageEncoder:
    """The deployed encoder of a training checkpoint or of an exported ``image_encoder.safetensors``.

    Args:
        cfg: the config the model was trained with; needed for a training checkpoint, ignored
            for an exported file (which carries its settings).
        weights_path: a training checkpoint (fastreid's ``{"model": state_dict, ...}`` or a bare
            AGReID state dict) or a file written by :func:`save_deployed_encoder`.
        quick_gelu: override the activation derived from the config (training checkpoints only).

    Raises:
        FileNotFoundError: ``weights_path`` does not exist.
        BadWeightsError: a weight holds NaN/Inf, or is not floating point where the encoder's is.
        ValueError: the file is not a checkpoint, holds no image encoder, or does not fit the config.
    """
    checkpoint = _load_file(weights_path)
    if isinstance(checkpoint, dict) and checkpoint.get("format") == EXPORT_FORMAT:
        if checkpoint.get("version") not in _READABLE_VERSIONS:
            raise ValueError(f"{weights_path}: exported encoder version {checkpoint.get('version')}, "
                             f"this code reads versions {_READABLE_VERSIONS}.")
        settings = EncoderSettings.from_dict(checkpoint["settings"])
        state_dict = checkpoint["state_dict"]
    else:
        if cfg is None:
            raise ValueError(f"{weights_path} is a training checkpoint: pass the config it was trained with.")
        state_dict = _image_encoder_state(checkpoint, weights_path)
        camera_embedding = state_dict.get("backbone.camera_embedding")
        num_cameras = 0 if camera_embedding is None else camera_embedding.shape[0]
        settings = EncoderSettings.from_config(cfg, num_cameras=num_cameras, quick_gelu=quick_gelu)
        if settings.neck_feat == "before":
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("bnneck.", "bnneck_proj."))}
    encoder = build_image_encoder(settings)
    # NaN/Inf, or a floating weight cast to int, would load silently and give meaningless features.
    check_weights(state_dict, weights_path, reference=encoder.state_dict())
    try:
        incompatible = encoder.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{weights_path} does not fit the image encoder of {settings.clip_name} "
                         f"(is the config the one it was trained with?): {error}") from error
    if incompatible.missing_keys or incompatible.unexpected_keys:
        raise ValueError(
            f"{weights_path} does not fit the image encoder of {settings.clip_name} (is the config the "
            f"one it was trained with?): missing keys {_head(incompatible.missing_keys)}, "
            f"unexpected keys {_head(incompatible.unexpected_keys)}"
        )
    logger.info("Deployed image encoder %s (%s) from %s", settings.clip_name,
                _describe(settings), weights_path)
    return encoder.eval()


def save_deployed_encoder(encoder: DeployedImageEncoder, path: str) -> None:
    """Write ``encoder``'s weights and settings to ``path`` as safetensors (read by
    :func:`build_deployed_encoder`): tensors plus a JSON text of :class:`EncoderSettings` in
    the header's metadata, nothing that could run code when read. Written whole or not at all
    (:func:`agreid.serialization.write_atomically`): a failure leaves an earlier file as it was.

    Raises:
        BadWeightsError: a weight holds NaN/Inf; nothing is written.
    """
    if encoder.settings is None:
        raise ValueError("This encoder has no settings: build it with build_deployed_encoder, or "
                         "DeployedImageEncoder.from_agreid(model, EncoderSettings.from_config(cfg, ...)).")
    from safetensors.torch import save

    state_dict = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in encoder.state_dict().items()}
    check_weights(state_dict, "the image encoder", outcome=f"{path} was not written")
    metadata = {"format": EXPORT_FORMAT, "version": str(EXPORT_VERSION),
                "settings": json.dumps(encoder.settings.to_dict(), sort_keys=True)}
    data = save(state_dict, metadata=metadata)  # the safetensors file's bytes
    write_atomically(path, lambda f: f.write(data))


class ProgramEncoder(nn.Module):
    """The deployed encoder as :func:`export_program` exports it: the input contract of the ONNX
    files (docs/DEPLOY.md), checked inside the graph so that the program checks it without agreid.

    ``forward(images, camids)`` when SIE is on and ``camera`` is None; ``forward(images)`` without
    SIE, or camera-agnostic (one SIE vector for every image, the ``camera`` rule's: ``mean``,
    ``zero`` or a training camera index). An empty batch and camera ids outside
    ``0..num_cameras-1`` fail a runtime assertion (``torch._assert_async``: a RuntimeError with the
    message on the CPU; a device-side assertion on CUDA) instead of giving empty or silently wrong
    features (the eager encoder maps unknown cameras to the mean embedding; the graph would
    take ``-1`` as the last camera).
    """

    def __init__(self, encoder: DeployedImageEncoder, camera: Optional[Union[str, int]] = None):
        super().__init__()
        self.num_cameras = encoder.backbone.num_cameras
        self.with_camids = camera is None and self.num_cameras > 0
        if self.num_cameras > 0 and camera is not None:
            encoder = camera_agnostic_encoder(encoder, camera)
        self.encoder = encoder
        self.camids_message = (f"camids must be training camera ids in 0..{self.num_cameras - 1} "
                               f"(int64, one per image).")
        self.eval()

    def forward(self, images: Tensor, camids: Optional[Tensor] = None) -> Tensor:
        """Features (B, D) of 0-255 images (B, 3, H, W); camids (B,) only with :attr:`with_camids`."""
        torch._assert_async(torch.scalar_tensor(images.shape[0]) > 0, BATCH_MESSAGE)
        if self.with_camids:
            torch._assert_async(((camids >= 0) & (camids < self.num_cameras)).all(), self.camids_message)
        elif self.num_cameras > 0:  # camera-agnostic: the encoder's one-row SIE table
            camids = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        return self.encoder(images, camids)


def contract_metadata(encoder: DeployedImageEncoder, with_camids: bool,
                      camera: Optional[Union[str, int]] = None) -> Dict[str, str]:
    """The input and output contract of an exported file, as text: ONNX metadata and the
    ``.pt2`` archive's :data:`PROGRAM_CONTRACT_FILE`."""
    height, width = encoder.backbone.input_size
    num_cameras = encoder.backbone.num_cameras
    values = {
        "input": f"images float32 (batch, 3, {height}, {width}) RGB 0-255, normalised inside",
        "output": f"features float32 (batch, {encoder.backbone.final_dim + encoder.backbone.embed_dim}) L2-normalised",
        "camids": (f"int64 (batch,) in 0..{num_cameras - 1}" if with_camids
                   else "none (no SIE)" if num_cameras == 0
                   else f"none (camera-agnostic SIE: {camera})"),
        "num_cameras": str(num_cameras),
        "batch": "dynamic, at least 1",
    }
    if encoder.settings is not None:
        values["clip_name"] = encoder.settings.clip_name
    return values


def export_program(
    encoder: DeployedImageEncoder,
    path: str,
    *,
    camera: Optional[Union[str, int]] = None,
    batch_size: int = 2,
    atol: float = 1e-5,
) -> float:
    """Write ``encoder`` to ``path`` as a ``torch.export`` program (``.pt2``) and check it.

    The program is exported from a CPU float32 copy with ``torch.export.export`` and a dynamic
    batch dimension (``torch.export.Dim``, at least 1), saved with ``torch.export.save`` (the
    contract as JSON in the archive's :data:`PROGRAM_CONTRACT_FILE`), read back with
    ``torch.export.load`` and compared with eager mode on batches of 1 and ``batch_size + 1``
    (not the export's size). Use it with torch alone::

        module = torch.export.load(path).module()
        features = module(images, camids)   # or module(images): no SIE, or camera-agnostic

    Args:
        encoder: the deployed encoder (on any device).
        path: the ``.pt2`` file to write (replaced only once the check passed).
        camera: None: a ``camids`` input when SIE is on; a rule (``mean``, ``zero``, index):
            camera-agnostic, images only. Ignored without SIE (images only).
        batch_size: the example batch size of the export (at least 2: torch.export
            specialises sizes 0 and 1).
        atol: largest allowed difference between the program's and eager mode's features.

    Returns:
        The largest absolute difference between the loaded program's and eager mode's features.

    Raises:
        RuntimeError: the features differ by more than ``atol``; nothing is written.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size {batch_size}: torch.export needs an example batch of at least 2.")
    encoder = copy.deepcopy(encoder).cpu().float().eval()
    module = ProgramEncoder(encoder, camera)
    example = example_inputs(encoder, batch_size, module.with_camids, seed=0)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=tuple({0: batch} for _ in example))
    contract = contract_metadata(encoder, module.with_camids, camera)
    contract["format"] = "torch.export program; torch.export.load(path).module()(images" + (
        ", camids)" if module.with_camids else ")")
    # Saved under its final name in a scratch folder (the archive's inner folder is named
    # after the file), checked, then moved: a file that fails the check is never left behind.
    folder = tempfile.mkdtemp(prefix=".export-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        scratch = os.path.join(folder, os.path.basename(path))
        torch.export.save(program, scratch, extra_files={PROGRAM_CONTRACT_FILE: json.dumps(contract, sort_keys=True)})
        loaded = torch.export.load(scratch).module()
        difference = 0.0
        for size, seed in ((1, 1), (batch_size + 1, 2)):
            inputs = example_inputs(encoder, size, module.with_camids, seed)
            with torch.no_grad():
                difference = max(difference, (loaded(*inputs) - module(*inputs)).abs().max().item())
        if not difference <= atol:
            raise RuntimeError(f"{path}: the torch.export program's features differ from eager mode's by "
                               f"{difference:.3g} (> {atol}); it was not written.")
        os.replace(scratch, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    logger.info("torch.export program %s: inputs %s, max |program - eager| = %.2g", path,
                "images, camids" if module.with_camids else "images", difference)
    return difference


def load_program(path: str, device: Optional[Union[str, torch.device]] = None) -> Tuple[nn.Module, Dict[str, str]]:
    """``(module, contract)`` of a ``.pt2`` file written by :func:`export_program`.

    ``module`` is ``torch.export.load(path).module()`` (loading runs no code of the file), moved to
    ``device`` with ``torch.export.passes.move_to_device_pass`` when one is given; ``contract``
    is the archive's :data:`PROGRAM_CONTRACT_FILE` (empty for other programs).
    """
    extra = {PROGRAM_CONTRACT_FILE: ""}
    program = torch.export.load(path, extra_files=extra)
    if device is not None and torch.device(device).type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, torch.device(device))
    contract = json.loads(extra[PROGRAM_CONTRACT_FILE]) if extra[PROGRAM_CONTRACT_FILE] else {}
    return program.module(), contract


def example_inputs(encoder: DeployedImageEncoder, size: int, with_camids: bool, seed: int) -> Tuple[Tensor, ...]:
    """Random 0-255 images (and camera ids) of the encoder's input size."""
    generator = torch.Generator().manual_seed(seed)
    height, width = encoder.backbone.input_size
    images = torch.rand(size, 3, height, width, generator=generator) * 255
    if not with_camids:
        return (images,)
    return images, torch.randint(encoder.backbone.num_cameras, (size,), generator=generator)


def trace_deployed_encoder(encoder: DeployedImageEncoder, batch_size: int = 2,
                           atol: float = 1e-5) -> torch.jit.ScriptModule:
    """Legacy: TorchScript of ``encoder`` by tracing ``(images, camids)``, checked against eager mode.

    ``torch.jit`` is deprecated (torch 2.14 warns with a FutureWarning on ``trace``, ``load``);
    :func:`export_program` is the current route. This is kept for runtimes that still read
    TorchScript; torch's deprecation notices are not repeated here. The traced module always
    takes both arguments (camids are ignored without SIE). Its output is compared with eager
    mode on the example batch and on a batch of another size.
    """
    encoder = encoder.eval()
    parameter = next(encoder.parameters())
    height, width = encoder.backbone.input_size
    num_cameras = max(encoder.backbone.num_cameras, 1)

    def example(size: int, seed: int) -> Tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(seed)
        images = torch.rand(size, 3, height, width, generator=generator) * 255
        camids = torch.randint(num_cameras, (size,), generator=generator)
        return images.to(parameter.device), camids.to(parameter.device)

    with torch.no_grad(), warnings.catch_warnings():
        # The input-size check reads the shape in Python: traced as a constant, which is the intent.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        traced = torch.jit.trace(encoder, example(batch_size, 0), check_trace=False)
        for size, seed in ((batch_size, 1), (batch_size + 3, 2)):
            inputs = example(size, seed)
            difference = (traced(*inputs) - encoder(*inputs)).abs().max().item()
            if difference > atol:
                raise RuntimeError(f"TorchScript output differs from eager mode by {difference:.3g} "
                                   f"(batch {size}); do not deploy this trace.")
    return traced


def count_values(state_dict: Dict[str, Tensor]) -> int:
    """Number of numbers in a state dict (parameters and buffers)."""
    return sum(t.numel() for t in state_dict.values() if isinstance(t, Tensor))


def _load_file(path: str):
    """Read a checkpoint or an export on the CPU without executing code, with errors that name the file."""
    if not path:
        raise ValueError("No weights file given: pass a training checkpoint (model_final.pth) or an "
                         "exported image_encoder.safetensors.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file {path!r} not found: pass a training checkpoint "
                                "(e.g. OUTPUT_DIR/model_final.pth) or an exported image_encoder.safetensors.")
    # UnsafeCheckpointError and CheckpointFileError are ValueErrors that name the file.
    checkpoint = load_checkpoint_file(path)
    if is_safetensors_file(path):
        metadata = safetensors_metadata(path)
        if metadata.get("format") == EXPORT_FORMAT:
            try:
                settings = json.loads(metadata["settings"])
                version = int(metadata.get("version", 0))
            except (KeyError, ValueError) as error:
                raise ValueError(f"{path}: exported encoder with unreadable settings ({error}).") from error
            return {"format": EXPORT_FORMAT, "version": version, "settings": settings, "state_dict": checkpoint}
    return checkpoint


def _image_encoder_state(checkpoint, path: str) -> Dict[str, Tensor]:
    """The image-encoder and BNNeck entries of an AGReID training checkpoint."""
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} holds no model state dict.")
    # Saved from a DistributedDataParallel-wrapped model.
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    kept = {k: v for k, v in state_dict.items() if k.split(".", 1)[0] in _DEPLOYED_MODULES}
    if not any(k.startswith("backbone.") for k in kept):
        raise ValueError(f"{path} holds no AG-ReID image encoder (no 'backbone.*' weights); "
                         f"its first keys are {_head(list(state_dict))}.")
    return kept


def _head(keys: List[str], count: int = 5) -> str:
    """The first ``count`` keys, for error messages."""
    if not keys:
        return "none"
    more = f" and {len(keys) - count} more" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def _describe(settings: EncoderSettings) -> str:
    height, width = settings.input_size
    return (f"{height}x{width}, stride {settings.stride}, {settings.num_cameras} SIE cameras, "
            f"neck feat {settings.neck_feat}, {'QuickGELU' if settings.quick_gelu else 'GELU'}")


def uses_quick_gelu(module: nn.Module) -> bool:
    """Whether any of ``module``'s activations is open_clip's QuickGELU."""
    return any(isinstance(m, QuickGELU) for m in module.modules())
