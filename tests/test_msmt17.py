"""MSMT17TrainVal: fastreid's MSMT17 plus exactly the validation images in training."""
import pytest

import agreid  # noqa: F401  (fastreid patches, registration)
from fastreid.data.datasets import DATASET_REGISTRY

TRAIN = [("0000/0000_000_01_0303morning_0015_0.jpg", 0), ("0000/0000_001_02_0303morning_0016_0.jpg", 0),
         ("0001/0001_000_05_0303noon_0020_1.jpg", 1)]
VAL = [("0000/0000_009_15_0303afternoon_0030_0.jpg", 0), ("0001/0001_004_03_0303noon_0022_1.jpg", 1)]
QUERY = [("0002/0002_000_01_0303morning_0100_0.jpg", 2)]
GALLERY = [("0002/0002_003_04_0303morning_0101_0.jpg", 2), ("0003/0003_000_07_0303noon_0200_0.jpg", 3)]


@pytest.fixture
def msmt_root(tmp_path):
    base = tmp_path / "MSMT17_V1"
    for folder in ("train", "test"):
        (base / folder).mkdir(parents=True)
    for name, rows in (("train", TRAIN), ("val", VAL), ("query", QUERY), ("gallery", GALLERY)):
        (base / f"list_{name}.txt").write_text("".join(f"{path} {pid}\n" for path, pid in rows))
    return str(tmp_path)


def test_train_val_adds_the_validation_images(msmt_root):
    fastreid_msmt = DATASET_REGISTRY.get("MSMT17")(root=msmt_root)
    train_val = DATASET_REGISTRY.get("MSMT17TrainVal")(root=msmt_root)
    assert len(fastreid_msmt.train) == 3  # fastreid's is unchanged: train only
    assert len(train_val.train) == 5
    assert train_val.train[:3] == fastreid_msmt.train
    path, pid, camid = train_val.train[3]
    assert path.endswith("train/0000/0000_009_15_0303afternoon_0030_0.jpg")
    assert (pid, camid) == ("msmt17_0", "msmt17_14")  # same labels as the training images
    # Query and gallery stay the test sets (not merged into training as COMBINEALL would).
    assert train_val.query == fastreid_msmt.query and train_val.gallery == fastreid_msmt.gallery
    assert len(train_val.query) == 1 and len(train_val.gallery) == 2


def test_combineall_does_not_add_val_twice(msmt_root):
    combined = DATASET_REGISTRY.get("MSMT17TrainVal")(root=msmt_root, combineall=True)
    reference = DATASET_REGISTRY.get("MSMT17")(root=msmt_root, combineall=True)
    assert len(combined.train) == len(reference.train) == 3 + 2 + 1 + 2
