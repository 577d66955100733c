"""Features of your own images with a trained AG-ReID image encoder.

    from agreid import Predictor
    predictor = Predictor("logs/occduke/agreid/model_final.pth")   # or deploy/image_encoder.pth
    features = predictor(["a.jpg", "b.jpg"])                        # (2, D), L2-normalised

Image files are decoded as evaluation decodes them (:func:`agreid.data.datasets.decode_rgb`:
EXIF orientation applied, 16-bit grey scaled to 8 bits, alpha dropped), resized and turned
into 0-255 tensors by fastreid's own test transforms (the resize to the encoder's input size
with the evaluated interpolation, ``INPUT.INTERPOLATION_TEST``; ``ToTensor``), and normalised
inside the encoder, with the settings stored with the weights. A training checkpoint needs the
config it was trained with: given, else the one embedded in the checkpoint (this project's
checkpoints hold it), else ``config.yaml`` beside the checkpoint (fastreid's ``OUTPUT_DIR``
layout); an exported encoder carries its settings.

Camera ids. With SIE the encoder adds a learned camera embedding to the CLS token. Your own
photos have no camera id, so a camera-agnostic rule (:data:`CAMERA_RULES`) stands in for it:

- ``mean`` (default): the mean of the learned camera embeddings. The SIE table is trained to
  move features by camera; its mean moves every image by the same, "average camera" amount.
- ``zero``: no camera term at all (as if SIE were off).
- an integer ``k``: every image is treated as seen by training camera ``k``.

Camera ids given per image (``camids=``) are used as they are; they must be training camera
ids, ``0..num_cameras-1`` (a ValueError names any other).
"""
from __future__ import annotations

import csv
import logging
import os
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torchvision.transforms as T
from fastreid.data.transforms import ToTensor
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .config import get_agreid_cfg
from .data.datasets import BadImageError, ImageReadError, decode_rgb, verify_images
from .modeling.deploy import (CAMERA_RULES, EXPORT_FORMAT, DeployedImageEncoder, build_deployed_encoder,  # noqa: F401
                              camera_agnostic_encoder, camera_row)  # the camera rules live with the encoder
from .serialization import is_safetensors_file, load_checkpoint_file, safetensors_metadata

logger = logging.getLogger(__name__)

# fastreid writes the resolved config of a run here, beside its checkpoints.
RUN_CONFIG_FILE = "config.yaml"

ImageInput = Union[str, os.PathLike, Image.Image]


def read_image(path: Union[str, os.PathLike]) -> Image.Image:
    """The RGB image at ``path``, decoded as evaluation decodes it (:func:`decode_rgb`).

    Raises:
        ImageReadError: the file is missing or cannot be decoded (the message names it).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(f"image not found: {path}")
    try:
        return decode_rgb(path)
    except Exception as error:  # PIL raises several types; the user needs the file name
        raise ImageReadError(f"cannot read image {path}: {type(error).__name__}: {error}") from error


def check_images(paths: Sequence[str], camids: Optional[Sequence[int]] = None, *, skip_bad: bool = False,
                 what: str = "images", hint: str = "") -> Tuple[List[str], Optional[List[int]]]:
    """Decode every image once, before any model is read, as training does (:func:`verify_images`).

    Args:
        paths, camids: the images (and their camera ids, or None).
        skip_bad: drop the images that cannot be decoded, with a warning naming each
            (training's ``DATASETS.BAD_IMAGES skip``); else raise.
        what: how to name the set in messages, e.g. ``"images of my_crops/"``.
        hint: appended to the error, e.g. how to skip the bad images.

    Returns:
        ``(paths, camids)`` of the images that decode.

    Raises:
        ImageReadError: one line naming every image that cannot be decoded (not ``skip_bad``),
            or none is left (``skip_bad``).
    """
    items = [(path, 0, None if camids is None else camids[i]) for i, path in enumerate(paths)]
    try:
        kept = verify_images(items, "skip" if skip_bad else "error", what)
    except BadImageError as error:
        listing = "; ".join(" ".join(line.split()) for line in error.bad)
        raise ImageReadError(f"{len(error.bad)} of the {len(items)} {what} cannot be read: {listing}"
                             + (f" ({hint})" if hint else "")) from None
    if not kept:
        raise ImageReadError(f"none of the {len(items)} {what} can be read")
    return [item[0] for item in kept], (None if camids is None else [item[2] for item in kept])


def check_camids(camids: Sequence[int], num_cameras: int) -> None:
    """Raise ValueError naming the first camera id outside ``0..num_cameras-1`` (none without SIE)."""
    if num_cameras <= 0:
        return
    for camid in torch.as_tensor(camids).reshape(-1).tolist():
        if not 0 <= camid < num_cameras:
            raise ValueError(f"camid {camid} is not a training camera: camera ids must be in 0..{num_cameras - 1} "
                             f"(the SIE table has {num_cameras} rows).")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(source: Union[str, os.PathLike]) -> Tuple[List[str], Optional[List[int]]]:
    """Image paths (and camera ids, when listed) of a folder or a list file.

    Args:
        source: a folder (its images, searched recursively, in sorted order), one image, or a
            list file: one path per line, or a CSV with a ``path`` column and optionally a
            ``camid`` column. Relative paths in a list are relative to the list's folder.

    Returns:
        ``(paths, camids)``; ``camids`` is None unless the list has a ``camid`` column.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: no images, or a malformed list (the message names the file and line).
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(source)
            for name in names
            if name.lower().endswith(IMAGE_SUFFIXES)
        )
        if not paths:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {source}")
        return paths, None
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no such folder, image or list file: {source}")
    if source.lower().endswith(IMAGE_SUFFIXES):
        return [source], None
    return _read_list(source)


def _read_list(list_file: str) -> Tuple[List[str], Optional[List[int]]]:
    base = os.path.dirname(os.path.abspath(list_file))
    with open(list_file, newline="") as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"list file {list_file} is empty")
    header = [field.strip().lower() for field in lines[0].split(",")]
    if "path" in header:
        rows = list(csv.DictReader(lines))
        has_camids = "camid" in header
        paths, camids = [], []
        for number, row in enumerate(rows, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if not row.get("path"):
                raise ValueError(f"{list_file} line {number}: empty path")
            paths.append(os.path.join(base, row["path"]))
            if has_camids:
                if not row.get("camid", "").lstrip("-").isdigit():
                    raise ValueError(f"{list_file} line {number}: camid {row.get('camid')!r} is not an integer")
                camids.append(int(row["camid"]))
        return paths, (camids if has_camids else None)
    return [os.path.join(base, line.strip()) for line in lines], None


def inference_transform(input_size, interpolation: str = "bilinear") -> T.Compose:
    """The test-time transform for ``input_size`` (height, width): resize as trained, 0-255 tensor."""
    mode = T.InterpolationMode(interpolation)
    return T.Compose([T.Resize(tuple(input_size), interpolation=mode), ToTensor()])


def resolve_config(weights: str, config_file: str = "", opts: Sequence[str] = ()):
    """The config for a training checkpoint: ``config_file``, else the config embedded in the
    checkpoint, else ``config.yaml`` beside ``weights``.

    Returns None for an exported encoder (it carries its settings), or when ``weights`` is
    missing (building the encoder names it).

    Raises:
        FileNotFoundError: ``config_file`` is given but missing.
        ValueError: a training checkpoint with no config anywhere (the message says to pass
            one), or an embedded config this version cannot read.
    """
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        return get_agreid_cfg(config_file, list(opts))
    if not os.path.isfile(weights):
        return None
    if is_safetensors_file(weights):
        if safetensors_metadata(weights).get("format") == EXPORT_FORMAT:
            return None
        embedded = None
    else:
        checkpoint = load_checkpoint_file(weights)  # never executes code
        if isinstance(checkpoint, dict) and checkpoint.get("format") == EXPORT_FORMAT:
            return None
        from .engine.checkpoint import checkpoint_config

        embedded = checkpoint_config(checkpoint)
    if embedded is not None:
        logger.info("Using the config embedded in %s", weights)
        cfg = get_agreid_cfg()
        try:
            cfg.merge_from_other_cfg(embedded)
        except (KeyError, ValueError) as error:
            raise ValueError(f"the config embedded in {weights} does not fit this version of AG-ReID ({error}): "
                             f"pass the config it was trained with (--config-file).") from error
        cfg.merge_from_list(list(opts))
        return cfg
    beside = os.path.join(os.path.dirname(os.path.abspath(weights)), RUN_CONFIG_FILE)
    if os.path.isfile(beside):
        logger.info("Using the run's config %s for %s", beside, weights)
        return get_agreid_cfg(beside, list(opts))
    raise ValueError(f"{weights} is a training checkpoint with no config embedded and no {RUN_CONFIG_FILE} "
                     f"beside it: pass the config it was trained with (--config-file FILE; config_file= in Python).")


class _ImageFiles(Dataset):
    def __init__(self, images: Sequence[ImageInput], transform):
        self.images, self.transform = list(images), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        image = self.images[index]
        # Files: evaluation's decoding. PIL images are the caller's: taken as they are, in RGB.
        image = image.convert("RGB") if isinstance(image, Image.Image) else read_image(image)
        return self.transform(image)


class Predictor:
    """Test features of images, from a training checkpoint or an exported image encoder.

    Args:
        weights: a training checkpoint (``model_final.pth``), an exported ``image_encoder.pth``,
            or an already built :class:`DeployedImageEncoder`.
        config_file: the config a training checkpoint was trained with (default: the one
            embedded in the checkpoint, else the ``config.yaml`` beside it); ignored for an
            exported encoder.
        opts: ``KEY VALUE`` config overrides.
        camera: the camera-agnostic SIE rule for images without camera ids (module docstring).
        device: ``cuda`` when available, else ``cpu``, unless given.
        batch_size: images per forward pass.
        num_workers: image-decoding processes (0 = in this process).
        progress: show a tqdm progress bar.
        quick_gelu: the activation of a training checkpoint's encoder, when its CLIP weights
            file is not on this machine (see ``build_deployed_encoder``).
    """

    def __init__(
        self,
        weights: Union[str, DeployedImageEncoder],
        *,
        config_file: str = "",
        opts: Sequence[str] = (),
        camera: Union[str, int] = "mean",
        device: Optional[str] = None,
        batch_size: int = 64,
        num_workers: int = 0,
        progress: bool = False,
        quick_gelu: Optional[bool] = None,
    ):
        if isinstance(weights, DeployedImageEncoder):
            encoder, self.weights = weights, ""
        else:
            self.weights = os.fspath(weights)
            cfg = resolve_config(self.weights, config_file, opts)
            encoder = build_deployed_encoder(cfg, self.weights, quick_gelu=quick_gelu)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.encoder = encoder.to(self.device).eval()
        self.camera = camera
        self.agnostic_encoder = camera_agnostic_encoder(self.encoder, camera)
        self.batch_size, self.num_workers, self.progress = int(batch_size), int(num_workers), progress
        settings = getattr(self.encoder, "settings", None)
        self.transform = inference_transform(self.input_size, settings.interpolation if settings else "bilinear")

    @property
    def input_size(self):
        """(height, width) the encoder takes."""
        return self.encoder.backbone.input_size

    @property
    def feature_dim(self) -> int:
        """Length of a feature."""
        return self.encoder.backbone.final_dim + self.encoder.backbone.embed_dim

    @property
    def num_cameras(self) -> int:
        """Rows of the SIE table (0 = no SIE)."""
        return self.encoder.backbone.num_cameras

    def describe(self) -> str:
        """One line: input size, SIE and camera rule, feature size."""
        height, width = self.input_size
        sie = f"SIE {self.num_cameras} cameras, unknown camera = {self.camera}" if self.num_cameras else "no SIE"
        return f"{height}x{width} input, {sie}, {self.feature_dim}-d features on {self.device}"

    def load(self, images: Sequence[ImageInput]) -> Tensor:
        """The 0-255 input tensor (N, 3, H, W) of ``images`` (paths or PIL images)."""
        return torch.stack([_ImageFiles(images, self.transform)[i] for i in range(len(images))])

    @torch.no_grad()
    def encode(self, images: Tensor, camids: Optional[Tensor] = None) -> Tensor:
        """Features (N, D) of a 0-255 batch; without ``camids`` the camera rule applies."""
        images = images.to(self.device)
        if camids is None:
            zeros = torch.zeros(images.shape[0], dtype=torch.long, device=self.device)
            return self.agnostic_encoder(images, zeros).float()
        check_camids(camids, self.num_cameras)
        return self.encoder(images, torch.as_tensor(camids, device=self.device).long()).float()

    def __call__(self, images: Sequence[ImageInput], camids: Optional[Sequence[int]] = None) -> Tensor:
        """Features (N, D) of ``images`` (paths or PIL images), on the CPU, in their order.

        Raises:
            ImageReadError: an image cannot be read (named in the message).
            ValueError: ``camids`` does not have one id per image, or one is outside
                ``0..num_cameras-1`` (named in the message).
        """
        images = list(images)
        if camids is not None and len(camids) != len(images):
            raise ValueError(f"{len(camids)} camera ids for {len(images)} images.")
        if camids is not None:
            check_camids(camids, self.num_cameras)
        loader = DataLoader(_ImageFiles(images, self.transform), batch_size=self.batch_size,
                            num_workers=self.num_workers, shuffle=False)
        chunks: List[Tensor] = []
        start = 0
        for batch in tqdm(loader, desc="features", disable=not self.progress, dynamic_ncols=True):
            ids = None if camids is None else torch.as_tensor(list(camids[start:start + len(batch)]))
            chunks.append(self.encode(batch, ids).cpu())
            start += len(batch)
        if not chunks:
            return torch.zeros(0, self.feature_dim)
        return torch.cat(chunks)
