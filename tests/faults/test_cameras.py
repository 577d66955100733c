"""Test cameras use the SIE rows of the same cameras in training; an unseen one follows
TEST.UNSEEN_CAMERA (stop before any work, or the mean row with a warning)."""
import glob
import os
from types import SimpleNamespace

import pytest
import torch

import agreid
from agreid.engine import AGReIDTrainer
from agreid.engine.cameras import UnseenCameraError, map_test_cameras
from agreid.modeling.clip_backbone import CLIPImageEncoder
from faultkit import CONFIG, REPO, TINY, tiny_args, train_net_in_process

# Training saw cameras 0, 2 and 3 of the synthetic set, not camera 1.
SEEN = "['syntheticoccluded_0','syntheticoccluded_2','syntheticoccluded_3']"


def _cfg(dataset_root, *extra):
    return agreid.get_agreid_cfg(os.path.join(REPO, CONFIG), TINY + [
        "DATASETS.ROOT", str(dataset_root), "MODEL.BACKBONE.TRAIN_CAMERAS", SEEN, *extra])


def test_cameras_map_by_the_training_labels(tiny_dataset_root):
    cfg = _cfg(tiny_dataset_root)
    items = [("a.jpg", 1, 0), ("b.jpg", 1, 3), ("c.jpg", 2, 2)]
    assert map_test_cameras(cfg, "SyntheticOccluded", "syntheticoccluded", items) == [
        ("a.jpg", 1, 0), ("b.jpg", 1, 2), ("c.jpg", 2, 1)]
    with pytest.raises(UnseenCameraError, match=r"Test camera 1 of SyntheticOccluded \(e.g. d.jpg\)"):
        map_test_cameras(cfg, "SyntheticOccluded", "syntheticoccluded", items + [("d.jpg", 3, 1)])


def test_unseen_camera_in_the_test_loader(tiny_dataset_root, caplog):
    with pytest.raises(UnseenCameraError) as error:
        AGReIDTrainer.build_test_loader(_cfg(tiny_dataset_root), "SyntheticOccluded")
    assert "Test camera 1 of SyntheticOccluded" in str(error.value) and "_c2_" in str(error.value)
    loader, _ = AGReIDTrainer.build_test_loader(_cfg(tiny_dataset_root, "TEST.UNSEEN_CAMERA", "mean"),
                                                "SyntheticOccluded")
    rows = {}
    for path, _, row in loader.dataset.img_items:
        rows.setdefault(int(os.path.basename(path).split("_c")[1].split("_")[0]) - 1, set()).add(row)
    assert rows == {0: {0}, 1: {3}, 2: {1}, 3: {2}}  # camera 1 past the 3-row table
    assert "get the mean SIE row" in caplog.text


def test_ids_past_the_table_get_the_mean_row():
    table = torch.randn(3, 5)
    rows = CLIPImageEncoder.camera_rows(SimpleNamespace(camera_embedding=table), torch.tensor([2, 0, 3]))
    assert torch.equal(rows[0], table[2]) and torch.equal(rows[1], table[0])
    assert torch.allclose(rows[2], table.mean(dim=0))


def test_training_without_a_test_camera_stops_before_training(dataset_copy, tmp_path, capsys):
    for path in glob.glob(os.path.join(str(dataset_copy), "SyntheticOccluded", "bounding_box_train", "*_c2_*")):
        os.remove(path)
    out = tmp_path / "out"
    code, err = train_net_in_process(tiny_args(dataset_copy, out), capsys)
    assert code == 2 and "Traceback" not in err
    assert "Test camera 1 of SyntheticOccluded" in err and "TEST.UNSEEN_CAMERA mean" in err
    assert not out.exists()  # stopped before any work: nothing written
