"""Dataset registrations on fake trees in each real layout."""
import os

import pytest
from PIL import Image

import agreid  # noqa: F401  (registration)
from agreid.data.datasets import BadImageError, DatasetLayoutError, verify_images
from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY


def _image(path, color=(128, 64, 32), size=(32, 64)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _bounding_box_tree(root, name):
    base = os.path.join(root, name)
    for pid, cam, frame in [(1, 1, 1), (1, 2, 2), (5, 3, 3), (5, 3, 4), (-1, 1, 9)]:
        _image(os.path.join(base, "bounding_box_train", f"{pid:04d}_c{cam}_f{frame:07d}.jpg"))
    for pid, cam in [(7, 1), (9, 2)]:
        _image(os.path.join(base, "query", f"{pid:04d}_c{cam}_f0000001.jpg"))
    for pid, cam in [(7, 2), (7, 8), (9, 3), (0, 4)]:
        _image(os.path.join(base, "bounding_box_test", f"{pid:04d}_c{cam}_f0000002.jpg"))


@pytest.mark.parametrize("name,folder,prefix", [
    ("OccludedDuke", "Occluded_Duke", "occludedduke"),
    ("SyntheticOccluded", "SyntheticOccluded", "syntheticoccluded"),
])
def test_bounding_box_layout(tmp_path, name, folder, prefix):
    _bounding_box_tree(tmp_path, folder)
    data = DATASET_REGISTRY.get(name)(root=str(tmp_path))
    assert [(p, c) for _, p, c in data.train] == [
        (f"{prefix}_1", f"{prefix}_0"), (f"{prefix}_1", f"{prefix}_1"),
        (f"{prefix}_5", f"{prefix}_2"), (f"{prefix}_5", f"{prefix}_2")]  # junk pid -1 dropped
    assert [(p, c) for _, p, c in data.query] == [(7, 0), (9, 1)]
    assert sorted((p, c) for _, p, c in data.gallery) == [(0, 3), (7, 1), (7, 7), (9, 2)]
    relabelled = CommDataset(data.train, relabel=True)
    assert relabelled.num_classes == 2 and relabelled.num_cameras == 3
    assert relabelled[2]["targets"] == 1 and relabelled[0]["targets"] == 0


def test_occluded_reid_layout(tmp_path):
    base = tmp_path / "Occluded_REID"
    for kind in ("occluded_body_images", "whole_body_images"):
        for pid in (1, 2):
            for k in range(2):
                _image(str(base / kind / f"{pid:03d}" / f"{pid:03d}_{k:02d}.tif"))
    data = DATASET_REGISTRY.get("OccludedREID")(root=str(tmp_path))
    assert data.train == []
    assert len(data.query) == 4 and {c for _, _, c in data.query} == {0}
    assert len(data.gallery) == 4 and {c for _, _, c in data.gallery} == {1}
    assert sorted({p for _, p, _ in data.query}) == [1, 2]


def test_partial_duke_layout(tmp_path):
    base = tmp_path / "P-DukeMTMC-reID"
    for split, pids in (("train", (3, 4)), ("test", (10, 11, 12))):
        for kind in ("whole_body_images", "occluded_body_images"):
            for pid in pids:
                _image(str(base / split / kind / f"{pid:04d}" / f"{pid:04d}_a.jpg"))
    data = DATASET_REGISTRY.get("PartialDuke")(root=str(tmp_path))
    assert len(data.train) == 4
    assert {(p, c) for _, p, c in data.train} == {
        ("partialduke_3", "partialduke_0"), ("partialduke_4", "partialduke_0"),
        ("partialduke_3", "partialduke_1"), ("partialduke_4", "partialduke_1")}
    assert all("occluded_body_images" in path for path, _, _ in data.query)
    assert all("whole_body_images" in path for path, _, _ in data.gallery)
    assert {c for _, _, c in data.query} == {0} and {c for _, _, c in data.gallery} == {1}


@pytest.mark.parametrize("name,expected", [
    ("OccludedDuke", "Occluded_Duke/bounding_box_train"),
    ("OccludedREID", "occluded_body_images"),
    ("PartialDuke", "P-DukeMTMC-reID/train/whole_body_images"),
    ("SyntheticOccluded", "tools/make_synthetic.py"),
])
def test_missing_dataset_names_folder_and_layout(tmp_path, name, expected):
    with pytest.raises(DatasetLayoutError) as err:
        DATASET_REGISTRY.get(name)(root=str(tmp_path))
    message = str(err.value)
    assert "folder not found" in message and str(tmp_path) in message
    assert expected in message


def test_badly_named_file_is_reported(tmp_path):
    _bounding_box_tree(tmp_path, "Occluded_Duke")
    bad = tmp_path / "Occluded_Duke" / "query" / "person_seven.jpg"
    _image(str(bad))
    with pytest.raises(DatasetLayoutError, match="person_seven.jpg"):
        DATASET_REGISTRY.get("OccludedDuke")(root=str(tmp_path))


def test_unreadable_image_error_names_it_and_skip_drops_it(tmp_path, caplog):
    good = tmp_path / "0001_c1_f1.jpg"
    _image(str(good))
    bad = tmp_path / "0002_c1_f1.jpg"
    bad.write_bytes(good.read_bytes()[:200])  # truncated JPEG
    items = [(str(good), 1, 0), (str(bad), 2, 0)]
    with pytest.raises(BadImageError) as err:
        verify_images(items, "error", "train set")
    assert str(bad) in str(err.value) and "DATASETS.BAD_IMAGES skip" in str(err.value)
    assert verify_images(items, "skip", "train set") == [items[0]]
    assert str(bad) in caplog.text
    assert verify_images(items, "off") == items
    with pytest.raises(ValueError, match="DATASETS.BAD_IMAGES"):
        verify_images(items, "ignore")
