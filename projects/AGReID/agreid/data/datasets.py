"""Occluded ReID datasets (docs/METHOD.md) and the synthetic one, in fastreid's ``DATASET_REGISTRY``.

Each class is a fastreid ``ImageDataset`` of ``(img_path, pid, camid)`` items. Training items
carry dataset-prefixed string ids (fastreid's convention, so datasets can be combined);
query/gallery items carry integer ids. A missing folder or a badly named file stops with one
:class:`DatasetLayoutError` that names the folder and the layout expected there.
"""
from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

Item = Tuple[str, object, object]

_BOUNDING_BOX_NAME = re.compile(r"^([-\d]+)_c(\d+)")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder is missing or not laid out as its loader expects."""


class BadImageError(RuntimeError):
    """One or more images of a dataset cannot be decoded; ``bad`` holds one ``path: error`` each."""

    def __init__(self, message: str, bad: Sequence[str] = ()):
        super().__init__(message)
        self.bad = list(bad)


def _list_images(folder: str) -> List[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(_IMAGE_SUFFIXES))


class _LayoutDataset(ImageDataset):
    """Shared checks of the datasets below; ``LAYOUT`` is shown to the user when they fail."""

    dataset_dir = ""
    dataset_name = ""
    LAYOUT = ""

    def _require(self, folders: Sequence[str]) -> None:
        for folder in folders:
            if not os.path.isdir(folder):
                raise DatasetLayoutError(
                    f"{type(self).__name__}: folder not found: {folder}\n"
                    f"Expected layout under the dataset root {self.root!r} "
                    f"(DATASETS.ROOT or $FASTREID_DATASETS):\n{self.LAYOUT}")

    def _empty(self, folder: str, what: str) -> DatasetLayoutError:
        return DatasetLayoutError(
            f"{type(self).__name__}: no {what} in {folder}\nExpected layout:\n{self.LAYOUT}")


class _BoundingBoxDataset(_LayoutDataset):
    """Market/Duke-style layout: ``{bounding_box_train,query,bounding_box_test}/PPPP_cC_*.jpg``."""

    NUM_CAMERAS = 8

    def __init__(self, root: str = "datasets", **kwargs):
        self.root = root
        self.dataset_dir = os.path.join(root, type(self).dataset_dir)
        self.train_dir = os.path.join(self.dataset_dir, "bounding_box_train")
        self.query_dir = os.path.join(self.dataset_dir, "query")
        self.gallery_dir = os.path.join(self.dataset_dir, "bounding_box_test")
        self._require([self.dataset_dir, self.train_dir, self.query_dir, self.gallery_dir])

        train = self.process_dir(self.train_dir, is_train=True)
        query = self.process_dir(self.query_dir, is_train=False)
        gallery = self.process_dir(self.gallery_dir, is_train=False)
        super().__init__(train, query, gallery, **kwargs)

    def process_dir(self, dir_path: str, is_train: bool = True) -> List[Item]:
        """Parse ``PPPP_cC_*`` file names into ``(path, pid, camid)``; junk images (pid -1) dropped."""
        data = []
        paths = [p for p in _list_images(dir_path) if p.lower().endswith((".jpg", ".jpeg", ".png"))]
        if not paths:
            raise self._empty(dir_path, "images")
        for img_path in paths:
            match = _BOUNDING_BOX_NAME.search(os.path.basename(img_path))
            if match is None:
                raise DatasetLayoutError(
                    f"{type(self).__name__}: cannot read person id and camera from the file name "
                    f"{img_path!r}; expected names like '0001_c2_f0046182.jpg'.")
            pid, camid = int(match.group(1)), int(match.group(2))
            if pid == -1:
                continue
            if not 1 <= camid <= self.NUM_CAMERAS:
                raise DatasetLayoutError(
                    f"{type(self).__name__}: camera {camid} out of range 1..{self.NUM_CAMERAS} "
                    f"in {img_path!r}")
            camid -= 1
            if is_train:
                pid = f"{self.dataset_name}_{pid}"
                camid = f"{self.dataset_name}_{camid}"
            data.append((img_path, pid, camid))
        return data


@DATASET_REGISTRY.register()
class OccludedDuke(_BoundingBoxDataset):
    """Occluded-DukeMTMC (Miao et al., ICCV 2019): 15,618 train / 2,210 query / 17,661 gallery."""

    dataset_dir = "Occluded_Duke"
    dataset_name = "occludedduke"
    LAYOUT = ("  Occluded_Duke/bounding_box_train/0001_c2_f0046182.jpg ...\n"
              "  Occluded_Duke/query/*.jpg\n"
              "  Occluded_Duke/bounding_box_test/*.jpg\n"
              "(file names PPPP_cC_*.jpg, cameras 1..8)")


@DATASET_REGISTRY.register()
class SyntheticOccluded(_BoundingBoxDataset):
    """The embedded synthetic occluded dataset (``tools/make_synthetic.py``), Occluded-Duke layout."""

    dataset_dir = "SyntheticOccluded"
    dataset_name = "syntheticoccluded"
    LAYOUT = ("  SyntheticOccluded/{bounding_box_train,query,bounding_box_test}/PPPP_cC_fNNNNNNN.jpg\n"
              "Make it with: python tools/make_synthetic.py --root <DATASETS.ROOT> --preset small")


class _PidFolderDataset(_LayoutDataset):
    """Layouts with one sub-folder per person id: ``<split>/PID/*.ext``."""

    def _read_pid_folders(self, folder: str, camid, prefix: str = "") -> List[Item]:
        data = []
        pid_folders = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        if not pid_folders:
            raise self._empty(folder, "person-id sub-folders")
        for name in pid_folders:
            if not name.lstrip("-").isdigit():
                raise DatasetLayoutError(
                    f"{type(self).__name__}: sub-folder {os.path.join(folder, name)!r} is not a "
                    f"person id; expected numeric folder names.\nExpected layout:\n{self.LAYOUT}")
            pid = int(name)
            for img_path in _list_images(os.path.join(folder, name)):
                if prefix:
                    data.append((img_path, f"{prefix}_{pid}", f"{prefix}_{camid}"))
                else:
                    data.append((img_path, pid, camid))
        if not data:
            raise self._empty(folder, "images")
        return data


@DATASET_REGISTRY.register()
class OccludedREID(_PidFolderDataset):
    """Occluded-REID (Zhuo et al., ICME 2018): test only (train on Market-1501).

    Query = occluded body images (camera 0), gallery = whole body images (camera 1).
    """

    dataset_dir = "Occluded_REID"
    dataset_name = "occludedreid"
    LAYOUT = ("  Occluded_REID/occluded_body_images/001/001_01.tif ...\n"
              "  Occluded_REID/whole_body_images/001/001_01.tif ...")

    def __init__(self, root: str = "datasets", **kwargs):
        self.root = root
        self.dataset_dir = os.path.join(root, type(self).dataset_dir)
        occluded = os.path.join(self.dataset_dir, "occluded_body_images")
        whole = os.path.join(self.dataset_dir, "whole_body_images")
        self._require([self.dataset_dir, occluded, whole])
        query = self._read_pid_folders(occluded, camid=0)
        gallery = self._read_pid_folders(whole, camid=1)
        super().__init__([], query, gallery, **kwargs)


@DATASET_REGISTRY.register()
class PartialDuke(_PidFolderDataset):
    """P-DukeMTMC-reID (Zhuo et al., 2018).

    Query = test occluded, gallery = test whole; in training whole = camera 1, occluded = camera 0.
    """

    dataset_dir = "P-DukeMTMC-reID"
    dataset_name = "partialduke"
    LAYOUT = ("  P-DukeMTMC-reID/train/whole_body_images/PID/*.jpg\n"
              "  P-DukeMTMC-reID/train/occluded_body_images/PID/*.jpg\n"
              "  P-DukeMTMC-reID/test/whole_body_images/PID/*.jpg\n"
              "  P-DukeMTMC-reID/test/occluded_body_images/PID/*.jpg")

    def __init__(self, root: str = "datasets", **kwargs):
        self.root = root
        self.dataset_dir = os.path.join(root, type(self).dataset_dir)
        folders = {(split, kind): os.path.join(self.dataset_dir, split, f"{kind}_body_images")
                   for split in ("train", "test") for kind in ("whole", "occluded")}
        self._require([self.dataset_dir, *folders.values()])
        train = (self._read_pid_folders(folders["train", "occluded"], 0, self.dataset_name)
                 + self._read_pid_folders(folders["train", "whole"], 1, self.dataset_name))
        query = self._read_pid_folders(folders["test", "occluded"], camid=0)
        gallery = self._read_pid_folders(folders["test", "whole"], camid=1)
        super().__init__(train, query, gallery, **kwargs)


class ImageReadError(ValueError, RuntimeError):
    """An image file cannot be opened or decoded (the message names it).

    Raised by the data loaders while training or testing (:func:`read_image`) and by
    :mod:`agreid.predictor` (which re-exports it). A ValueError and a RuntimeError, so code
    that caught either of the two former classes still catches it.
    """


# 16-bit and 32-bit grey modes: np.asarray gives uint16/int32 values, which RGB conversion
# would clip (PIL) or refuse (fastreid's reader); they are scaled to 8 bits first.
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def decode_rgb(path: str) -> Image.Image:
    """Decode an image file as the training and test pipelines use it: an 8-bit RGB image.

    EXIF orientation is applied (as fastreid's reader does). Grey, palette, CMYK, RGBA/LA
    (alpha dropped), YCbCr and bilevel images are converted to RGB; 16-bit grey ("I;16",
    "I") is scaled from 0..65535 to 0..255, float grey ("F") from 0..1 (or its own range
    when larger). :func:`verify_images` decodes every image with this function before
    training, and the data loaders read images with it too (see :mod:`agreid.compat`).
    """
    with Image.open(path) as img:
        img.load()
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block must not stop an otherwise readable image
            pass
        if img.mode in _HIGH_DEPTH_MODES or img.mode == "F":
            values = np.asarray(img, dtype=np.float32)
            if img.mode == "F":
                values = values * 255.0 if values.size and values.max() <= 1.0 else values
            else:
                values = values / 257.0
            img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
        return img.convert("RGB")


def read_image(file_name: str, format: Optional[str] = None) -> Image.Image:
    """fastreid's ``read_image`` contract (a PIL image), decoded by :func:`decode_rgb`; any
    failure names the file."""
    try:
        img = decode_rgb(file_name)
    except Exception as error:
        raise ImageReadError(f"cannot read image {file_name}: {type(error).__name__}: {error}") from error
    if format not in (None, "RGB"):
        img = img.convert("RGB" if format == "BGR" else format)
        if format == "BGR":
            img = Image.fromarray(np.asarray(img)[:, :, ::-1].copy())
    return img


def _decode_error(path: str):
    try:
        decode_rgb(path)
    except Exception as exc:  # any decoder error is the user's to see, by path
        return f"{path}: {type(exc).__name__}: {exc}"
    return None


def verify_images(items: Iterable[Item], policy: str = "error", what: str = "dataset",
                  num_threads: int = 4) -> List[Item]:
    """Decode every image once before training, so a bad file never stops a run hours in.

    Args:
        items: ``(img_path, pid, camid)`` tuples.
        policy: ``"error"`` raises :class:`BadImageError` naming every bad file; ``"skip"``
            drops them with a warning naming each; ``"off"`` checks nothing.
        what: how to name the set in messages, e.g. ``"train set"``.
        num_threads: decoding threads.

    Returns:
        The items that decode (all of them, unless policy is ``"skip"``).
    """
    items = list(items)
    if policy == "off":
        return items
    if policy not in ("error", "skip"):
        raise ValueError(f"DATASETS.BAD_IMAGES must be 'error', 'skip' or 'off', got {policy!r}")
    with ThreadPoolExecutor(num_threads) as pool:
        errors = list(pool.map(_decode_error, [item[0] for item in items]))
    bad = [err for err in errors if err is not None]
    if not bad:
        return items
    if policy == "error":
        listing = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise BadImageError(
            f"{len(bad)} image(s) of the {what} cannot be decoded:\n  {listing}\n"
            f"Fix or remove them, or set DATASETS.BAD_IMAGES skip to train without them.", bad)
    for err in bad:
        logger.warning("Skipping unreadable image in the %s: %s", what, err)
    return [item for item, err in zip(items, errors) if err is None]
