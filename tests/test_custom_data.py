"""Datasets of your own: ReIDFolder (Market-style names) and ReIDList (CSV files), no-camera rule."""
import logging
import os

import pytest

import agreid  # first: it makes fastreid importable on today's torch
from _tiny_model import CONFIG, SIZE
from fastreid.data.datasets import DATASET_REGISTRY
from agreid.data.datasets import DatasetLayoutError
from agreid.engine import AGReIDTrainer


def _synthetic(root):
    return DATASET_REGISTRY.get("SyntheticOccluded")(root=root)


def _cfg(root, *opts):
    return agreid.get_agreid_cfg(CONFIG, ["DATASETS.ROOT", str(root), "MODEL.DEVICE", "cpu",
                                          "DATALOADER.NUM_WORKERS", "0", *SIZE, *opts])


def _write_csv(path, items, with_camids=True, names=None):
    lines = ["path,pid,camid" if with_camids else "path,pid"]
    for image, pid, camid in items:
        pid = names.get(pid, pid) if names else pid
        relative = os.path.relpath(image, os.path.dirname(path))
        lines.append(f"{relative},{pid},{camid}" if with_camids else f"{relative},{pid}")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def test_reid_folder_reads_a_market_style_folder(tiny_dataset_root, tmp_path):
    os.symlink(os.path.join(tiny_dataset_root, "SyntheticOccluded"), tmp_path / "my_shop")
    data = DATASET_REGISTRY.get("ReIDFolder")(root=str(tmp_path), cfg=_cfg(tmp_path, "DATASETS.FOLDER.NAME", "my_shop"))
    reference = _synthetic(tiny_dataset_root)
    strip = lambda items: [(os.path.basename(p), str(pid).split("_")[-1], str(c).split("_")[-1]) for p, pid, c in items]
    assert strip(data.train) == strip(reference.train) and len(data.train) == len(reference.train)
    assert strip(data.query) == strip(reference.query) and strip(data.gallery) == strip(reference.gallery)
    assert data.train[0][1].startswith("my_shop_")
    with pytest.raises(DatasetLayoutError, match="other_shop"):
        DATASET_REGISTRY.get("ReIDFolder")(root=str(tmp_path), cfg=_cfg(tmp_path, "DATASETS.FOLDER.NAME", "other_shop"))
    with pytest.raises(ValueError, match="DATASETS.FOLDER.NAME"):
        DATASET_REGISTRY.get("ReIDFolder")(root=str(tmp_path), cfg=_cfg(tmp_path))


def test_reid_list_with_cameras_and_named_ids(tiny_dataset_root, tmp_path):
    reference = _synthetic(tiny_dataset_root)
    # Identity names instead of numbers for two people; the rest keep their numbers.
    names = {reference.query[0][1]: "alice", reference.query[1][1]: "bob"}
    for split, items in (("train", reference.train), ("query", reference.query), ("gallery", reference.gallery)):
        _write_csv(tmp_path / f"{split}.csv", items, names=names if split != "train" else None)
    cfg = _cfg(tmp_path, "DATASETS.NAMES", '("ReIDList",)', "DATASETS.LIST.TRAIN", "train.csv",
               "DATASETS.LIST.QUERY", "query.csv", "DATASETS.LIST.GALLERY", str(tmp_path / "gallery.csv"))
    assert cfg.MODEL.BACKBONE.SIE_CAMERA  # the CSVs have cameras: SIE stays on
    data = DATASET_REGISTRY.get("ReIDList")(root=str(tmp_path), cfg=cfg)
    assert len(data.train) == len(reference.train) and len(data.query) == len(reference.query)
    assert [(os.path.basename(p), c) for p, _, c in data.query] == [(os.path.basename(p), c) for p, _, c in reference.query]
    # A named identity gets one number, the same in query and gallery, unused by numbered ones.
    alice = data.query[0][1]
    assert isinstance(alice, int) and alice not in {pid for _, pid, _ in reference.query}
    same_person = [pid for (path, pid, _), ref in zip(data.gallery, reference.gallery) if ref[1] == reference.query[0][1]]
    assert same_person and set(same_person) == {alice}


def test_reid_list_without_cameras_turns_sie_off_and_separates_query_from_gallery(tiny_dataset_root, tmp_path, caplog):
    reference = _synthetic(tiny_dataset_root)
    for split, items in (("train", reference.train), ("query", reference.query), ("gallery", reference.gallery)):
        _write_csv(tmp_path / f"{split}.csv", items, with_camids=False)
    opts = ["DATASETS.NAMES", '("ReIDList",)', "DATASETS.TESTS", '("ReIDList",)',
            "DATASETS.LIST.TRAIN", "train.csv", "DATASETS.LIST.QUERY", "query.csv", "DATASETS.LIST.GALLERY",
            "gallery.csv", "MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", "", "SOLVER.IMS_PER_BATCH", "16",
            "OUTPUT_DIR", str(tmp_path / "out")]
    with caplog.at_level(logging.WARNING):
        cfg = _cfg(tmp_path, *opts)
    assert not cfg.MODEL.BACKBONE.SIE_CAMERA
    assert "no camid column" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        data = DATASET_REGISTRY.get("ReIDList")(root=str(tmp_path), cfg=cfg)
    assert {c for _, _, c in data.query} == {0} and {c for _, _, c in data.gallery} == {1}
    assert "same-camera filter" in caplog.text
    # The trainer builds a model without SIE, and the protocol keeps the matches to evaluate.
    os.makedirs(cfg.OUTPUT_DIR)
    with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as handle:  # as train_net's setup does
        handle.write(cfg.dump())
    trainer = AGReIDTrainer(cfg)
    assert trainer.unwrapped_model.backbone.camera_embedding is None
    results = AGReIDTrainer.test(trainer.cfg, trainer.unwrapped_model)
    metrics = results["ReIDList"] if "ReIDList" in results else results
    assert 0 < metrics["mAP"] <= 100 and metrics["Rank-1"] >= 0


def test_reid_list_errors_name_file_and_line(tmp_path):
    (tmp_path / "bad.csv").write_text("file,person\na.jpg,1\n")
    cfg = _cfg(tmp_path, "DATASETS.LIST.QUERY", "bad.csv", "DATASETS.LIST.GALLERY", "bad.csv")
    with pytest.raises(DatasetLayoutError, match="bad.csv needs a header with 'path' and 'pid'"):
        DATASET_REGISTRY.get("ReIDList")(root=str(tmp_path), cfg=cfg)
    (tmp_path / "gone.csv").write_text("path,pid\nmissing.jpg,1\n")
    cfg = _cfg(tmp_path, "DATASETS.LIST.QUERY", "gone.csv", "DATASETS.LIST.GALLERY", "gone.csv")
    with pytest.raises(DatasetLayoutError, match="missing.jpg"):
        DATASET_REGISTRY.get("ReIDList")(root=str(tmp_path), cfg=cfg)
    with pytest.raises(ValueError, match="DATASETS.LIST.TRAIN"):
        DATASET_REGISTRY.get("ReIDList")(root=str(tmp_path), cfg=_cfg(tmp_path))
