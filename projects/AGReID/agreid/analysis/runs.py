"""Trained runs and the synthetic ground truth, as the analyses read them.

A *run* is given as a training checkpoint (``model_final.pth``, ``model_stage1.pth``) or as the
run's output folder (its ``model_final.pth``). Its config is the one embedded in the
checkpoint (else ``config.yaml`` beside it: :func:`agreid.predictor.resolve_config`) and the
model is rebuilt exactly as evaluation rebuilds it
(:meth:`agreid.engine.AGReIDTrainer.build_trained_model`); files are read with
:func:`agreid.serialization.load_checkpoint_file` (never unpickling code).

The ground truth is that of the synthetic dataset (``agreid.data.synthetic``):
``attributes.json`` (every identity's attributes) and ``occlusion.json`` (every image's
occluder, fraction hidden and hidden regions), in the dataset folder. A dataset without them
(a real benchmark) raises :class:`GroundTruthMissingError`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "ATTRIBUTES_FILE",
    "OCCLUSION_FILE",
    "GroundTruthMissingError",
    "IdentityTruth",
    "TrainedRun",
    "dataset_of",
    "encode_training_images",
    "ground_truth",
    "identity_attributes",
    "identity_rows",
    "image_key",
    "image_occlusion",
    "load_run",
    "one_line",
    "relabelled_items",
    "resolve_weights",
    "run_config",
    "synthetic_identity_key",
    "training_set",
]

# The synthetic generator's file names (agreid.data.synthetic.ATTRIBUTES_FILE / OCCLUSION_FILE).
ATTRIBUTES_FILE = "attributes.json"
OCCLUSION_FILE = "occlusion.json"
# What a run folder is read as.
RUN_CHECKPOINT = "model_final.pth"


class GroundTruthMissingError(FileNotFoundError):
    """The dataset has no synthetic ground truth (``attributes.json`` / ``occlusion.json``)."""


@dataclass
class TrainedRun:
    """A trained model rebuilt from its checkpoint.

    Attributes:
        name: how tables name the run (given, else the run folder's name and the checkpoint's).
        weights: the checkpoint file.
        cfg: its resolved config (``MODEL.WEIGHTS`` set to ``weights``).
        model: the model in eval mode.
    """

    name: str
    weights: str
    cfg: object
    model: torch.nn.Module


def one_line(error: BaseException) -> str:
    """An error's message on one line (some, e.g. a dataset layout error, span several)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def resolve_weights(path: str) -> str:
    """The checkpoint of a run: ``path`` itself, or ``path/model_final.pth`` for a folder.

    Raises:
        FileNotFoundError: no such file, or a folder without ``model_final.pth``.
    """
    if os.path.isdir(path):
        weights = os.path.join(path, RUN_CHECKPOINT)
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{path}: a folder without {RUN_CHECKPOINT} (give the checkpoint file, "
                                    f"e.g. {os.path.join(path, 'model_stage1.pth')})")
        return weights
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint or run folder")
    return path


def _default_name(weights: str) -> str:
    folder = os.path.basename(os.path.dirname(os.path.abspath(weights)))
    stem = os.path.splitext(os.path.basename(weights))[0]
    return folder if stem == "model_final" else f"{folder}/{stem}"


def run_config(path: str, opts: Sequence[str] = (), device: Optional[str] = None):
    """The resolved config of the run at ``path`` (file or folder), ``MODEL.WEIGHTS`` set, not frozen.

    Args:
        opts: ``KEY VALUE`` overrides (e.g. ``DATASETS.ROOT``).
        device: ``MODEL.DEVICE``; None keeps the run's, falling back to ``cpu`` when it names
            CUDA and none is available.

    Raises:
        FileNotFoundError: no checkpoint.
        ValueError: an exported image encoder (no text side, no classifier), or a checkpoint
            without a readable config.
    """
    from ..predictor import resolve_config

    weights = resolve_weights(path)
    cfg = resolve_config(weights, "", list(opts))
    if cfg is None:
        raise ValueError(f"{weights} is an exported image encoder, not a training checkpoint: the analysis "
                         f"needs the run's checkpoint (model_final.pth or model_stage1.pth)")
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    if device is not None:
        cfg.MODEL.DEVICE = device
    elif str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def load_run(path: str, opts: Sequence[str] = (), name: Optional[str] = None, device: Optional[str] = None,
             cfg=None) -> TrainedRun:
    """Rebuild the trained model of a run (see the module docstring).

    Args:
        path: a checkpoint or a run folder.
        opts: ``KEY VALUE`` config overrides.
        name: the run's name in tables (default from its path).
        device: see :func:`run_config`.
        cfg: an already resolved :func:`run_config` of ``path`` (saves reading the file twice).

    Raises:
        FileNotFoundError: no checkpoint.
        ValueError: a damaged or unsafe checkpoint (``CheckpointFileError``), one that does not
            fit its config, or no config.
    """
    if cfg is None:
        cfg = run_config(path, opts, device)
    from ..engine import AGReIDTrainer

    model = AGReIDTrainer.build_trained_model(cfg)
    return TrainedRun(name or _default_name(cfg.MODEL.WEIGHTS), cfg.MODEL.WEIGHTS, cfg, model)


# ------------------------------------------------------------------------------- ground truth
def dataset_of(cfg, name: Optional[str] = None):
    """The fastreid dataset ``name`` (default: the first of ``DATASETS.NAMES``) under the run's root."""
    from ..data import build_dataset

    return build_dataset(cfg, name or cfg.DATASETS.NAMES[0])


def ground_truth(dataset_dir: str, which: str) -> dict:
    """``attributes.json`` or ``occlusion.json`` (``which``) of a synthetic dataset folder.

    Raises:
        GroundTruthMissingError: the file is not there (not the synthetic dataset).
    """
    path = os.path.join(dataset_dir, which)
    if not os.path.isfile(path):
        raise GroundTruthMissingError(
            f"{path} not found: this analysis needs the synthetic dataset's ground truth "
            f"({ATTRIBUTES_FILE}, {OCCLUSION_FILE}; python tools/make_synthetic.py), which {dataset_dir} does not have")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def synthetic_identity_key(pid) -> str:
    """The ``attributes.json`` key of a person id: ``"syntheticoccluded_12"`` or ``12`` -> ``"0012"``."""
    return f"{int(str(pid).rsplit('_', 1)[-1]):04d}"


def image_key(path: str, dataset_dir: str) -> str:
    """The ``occlusion.json`` key of an image: its path inside the dataset folder, with ``/``."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(dataset_dir)).replace(os.sep, "/")


# ----------------------------------------------------------------------------- training images
def training_set(cfg):
    """The training set exactly as the trainer builds it (:meth:`AGReIDTrainer.build_train_set`).

    Its ``pid_dict`` / ``cam_dict`` (fastreid's ``CommDataset`` relabelling: sorted person ids,
    cameras in natural order) give every image's row of the text-feature table and SIE table.
    """
    from ..engine import AGReIDTrainer

    train_set, _ = AGReIDTrainer.build_train_set(cfg)
    return train_set


@torch.no_grad()
def encode_training_images(model, cfg, train_set) -> Tuple[torch.Tensor, torch.Tensor]:
    """``f_proj`` of every training image, with the camera embedding, and its identity row.

    The images go through the test transforms (no augmentation) and the image encoder in eval
    mode, with the SIE row of the image's training camera: the feature stage 2's L_CE scores,
    without the training augmentation.

    Returns:
        ``(features (N, embed_dim) float32 on the CPU, targets (N,) int64)``, in ``train_set`` order.
    """
    from fastreid.data.build import build_reid_test_loader
    from fastreid.data.common import CommDataset

    from ..data.transforms import build_agreid_transforms

    dataset = CommDataset(relabelled_items(train_set), build_agreid_transforms(cfg, is_train=False), relabel=False)
    loader, _ = build_reid_test_loader(dataset, cfg.TEST.IMS_PER_BATCH, 0, num_workers=0)
    model.eval()
    features, targets = [], []
    for batch in loader:
        images = model.preprocess_image(batch)
        camids = batch["camids"].to(images.device)
        features.append(model.backbone(images, camids).proj.float().cpu())
        targets.append(batch["targets"].long())
    return torch.cat(features), torch.cat(targets)


def identity_rows(train_set) -> List[str]:
    """The training person ids in text-feature-table order (row k = ``pids[k]``)."""
    return [pid for pid, _ in sorted(train_set.pid_dict.items(), key=lambda item: item[1])]


def relabelled_items(train_set) -> List[Tuple[str, int, int]]:
    """Every training image as the trainer labels it: ``(path, identity row, camera row)``, in
    ``train_set`` order (fastreid's ``pid_dict``, the trainer's natural-order ``cam_dict``)."""
    return [(path, train_set.pid_dict[pid], train_set.cam_dict[cam]) for path, pid, cam in train_set.img_items]


class IdentityTruth(NamedTuple):
    """The synthetic ground truth of the training identities, row k = the trainer's label k.

    Attributes:
        keys: the ``attributes.json`` key of each row (``"0012"``).
        attributes: each row's true attributes (``{"hair_color": "blond", ...}``).
        truth: the whole ``attributes.json`` (``schema``, ``identities``, ``hard_pairs``).
    """

    keys: List[str]
    attributes: List[Dict[str, str]]
    truth: dict

    @property
    def schema(self) -> Dict[str, List[str]]:
        """Every attribute and its values."""
        return self.truth["schema"]


def identity_attributes(cfg, train_set=None) -> IdentityTruth:
    """The true attributes of the training identities in the trainer's label order.

    The one place that maps the trainer's labels to the synthetic ground truth: row k is
    ``identity_rows(train_set)[k]``, the row of V (pseudo-labels) and of T (text features) that
    training gave identity k.

    Args:
        train_set: :func:`training_set` of ``cfg`` (built when None).

    Raises:
        GroundTruthMissingError: the training set has no ``attributes.json`` (not the synthetic data).
        ValueError: more than one training dataset, or identities that ``attributes.json`` lacks.
    """
    if len(cfg.DATASETS.NAMES) != 1:
        raise ValueError(f"trained on {list(cfg.DATASETS.NAMES)}; the analysis needs one (synthetic) "
                         f"training dataset")
    truth = ground_truth(dataset_of(cfg).dataset_dir, ATTRIBUTES_FILE)
    train_set = training_set(cfg) if train_set is None else train_set
    keys = [synthetic_identity_key(pid) for pid in identity_rows(train_set)]
    missing = [key for key in keys if key not in truth["identities"]]
    if missing:
        raise ValueError(f"identities {missing[:5]} are not in {ATTRIBUTES_FILE}: another dataset than the run's?")
    return IdentityTruth(keys, [truth["identities"][key] for key in keys], truth)


def image_occlusion(cfg, train_set) -> List[dict]:
    """The ``occlusion.json`` record of every training image (fraction hidden, hidden regions), in
    ``train_set`` order.

    Raises:
        GroundTruthMissingError: the training set has no ``occlusion.json``.
    """
    dataset_dir = dataset_of(cfg).dataset_dir
    occlusion = ground_truth(dataset_dir, OCCLUSION_FILE)
    return [occlusion[image_key(path, dataset_dir)] for path, _, _ in train_set.img_items]
