"""A tiny AG-ReID model with random weights, saved as a training run, for the tools' tests."""
import os
from typing import Tuple

import torch
from fastreid.modeling import build_model
from fastreid.utils.checkpoint import Checkpointer

import agreid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs/Synthetic/agreid.yml")
NUM_IDS = 6
NUM_CAMERAS = 4  # the tiny synthetic preset has 4 cameras
# Small inputs keep the tests fast; the tools read the size from the weights.
SIZE = ["INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]"]


def tiny_cfg(*opts):
    """The synthetic AG-ReID config with random init, 64x32 inputs, on the CPU."""
    return agreid.get_agreid_cfg(CONFIG, [
        "MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", "",
        "MODEL.HEADS.NUM_CLASSES", str(NUM_IDS), "MODEL.BACKBONE.NUM_CAMERAS", str(NUM_CAMERAS),
        "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", *SIZE, *opts,
    ])


def tiny_model(cfg, seed: int = 0):
    """An AGReID model of ``cfg`` whose BNNeck statistics and SIE table are not the initial ones."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for bnneck in (model.bnneck, model.bnneck_proj):
            bnneck.running_mean.normal_()
            bnneck.running_var.uniform_(0.5, 2.0)
            bnneck.weight.uniform_(0.5, 1.5)
        if model.backbone.camera_embedding is not None:
            model.backbone.camera_embedding.normal_()
    return model.eval()


def tiny_run(directory, *opts, seed: int = 0) -> Tuple[object, str]:
    """A training run's ``model_final.pth`` and ``config.yaml`` in ``directory``: ``(cfg, checkpoint)``."""
    cfg = tiny_cfg(*opts)
    model = tiny_model(cfg, seed)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(str(directory), "config.yaml"), "w") as handle:
        handle.write(cfg.dump())
    Checkpointer(model, str(directory)).save("model_final")
    return cfg, os.path.join(str(directory), "model_final.pth")
