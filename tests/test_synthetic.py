"""The synthetic occluded ReID generator: determinism, protocol validity, ground truth, CLI."""
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import _warm
from agreid.data import synthetic
from agreid.data.synthetic.drawing import occlude

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME_PATTERN = re.compile(r"([-\d]+)_c(\d)")


def _hash_tree(folder: Path) -> dict:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _images(dataset_dir: Path, split: str) -> list:
    """(file name relative to the dataset dir, pid, camid) of one split's images."""
    rows = []
    for path in sorted((dataset_dir / synthetic.SPLIT_DIRS[split]).glob("*.jpg")):
        pid, camid = map(int, NAME_PATTERN.search(path.name).groups())
        rows.append((f"{synthetic.SPLIT_DIRS[split]}/{path.name}", pid, camid))
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny preset, seed 0, generated once for the read-only tests of this module."""
    root = tmp_path_factory.mktemp("tiny")
    synthetic.generate(root, "tiny", seed=0)
    return root / synthetic.DATASET_DIR


def test_same_seed_gives_same_bytes_and_other_seed_differs(tiny, tmp_path):
    synthetic.generate(tmp_path / "again", "tiny", seed=0, num_workers=2)
    synthetic.generate(tmp_path / "other", "tiny", seed=1)
    reference = _hash_tree(tiny)
    assert len([name for name in reference if name.endswith(".jpg")]) == 16 * 4 + 16 * 1 + 16 * 3
    assert _hash_tree(tmp_path / "again" / synthetic.DATASET_DIR) == reference
    other = _hash_tree(tmp_path / "other" / synthetic.DATASET_DIR)
    assert other != reference
    assert other[synthetic.ATTRIBUTES_FILE] != reference[synthetic.ATTRIBUTES_FILE]


def test_images_are_rgb_jpegs_of_the_default_size(tiny):
    for name, _, _ in _images(tiny, "query")[:4]:
        with Image.open(tiny / name) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 128))


def test_split_protocol_like_occluded_duke(tiny):
    train, query, gallery = (_images(tiny, split) for split in ("train", "query", "gallery"))
    assert len(train) and len(query) and len(gallery)
    train_ids = {pid for _, pid, _ in train}
    test_ids = {pid for _, pid, _ in query}
    assert train_ids.isdisjoint(test_ids)
    assert test_ids == {pid for _, pid, _ in gallery}
    assert len({name.split("/")[1].split("_f")[1] for name, _, _ in train + query + gallery}) == \
        len(train + query + gallery), "frame numbers run on"

    cameras_of = defaultdict(set)
    for _, pid, camid in train + gallery:
        cameras_of[pid].add(camid)
    assert all(len(cameras) >= 2 for cameras in cameras_of.values())
    for _, pid, camid in query:
        assert cameras_of[pid] - {camid}, f"query of {pid} in camera {camid} has no cross-camera match"


def test_occlusion_ground_truth(tiny):
    occlusion = json.loads((tiny / synthetic.OCCLUSION_FILE).read_text())
    names = {split: [name for name, _, _ in _images(tiny, split)] for split in ("train", "query", "gallery")}
    assert set(occlusion) == {name for split in names.values() for name in split}
    for name in names["query"]:
        record = occlusion[name]
        assert record["occluder"] in synthetic.OCCLUDER_TYPES
        assert 0.2 <= record["fraction"] <= 0.6
        assert set(record["regions"]) <= set(synthetic.BODY_REGIONS)
    occluded = {split: sum(occlusion[name]["fraction"] > 0 for name in split_names) / len(split_names)
                for split, split_names in names.items()}
    assert 0.15 <= occluded["train"] <= 0.45
    assert occluded["gallery"] <= 0.2
    for record in occlusion.values():
        if record["occluder"] == "none":
            assert record["fraction"] == 0.0 and record["regions"] == []
        else:
            assert 0.2 <= record["fraction"] <= 0.6


def test_occluder_hides_the_recorded_share_of_the_body(tiny):
    body = np.zeros((256, 128), dtype=bool)
    body[20:250, 40:88] = True
    region_of_row = np.searchsorted([60, 140, 230], np.arange(256), side="right")
    rng = np.random.default_rng(0)
    for attempt in range(10):
        layer, record = occlude(body, region_of_row, (128, 256), rng, [0, attempt])
        hidden = np.asarray(layer.getchannel("A")) > 0
        assert record["fraction"] == pytest.approx((hidden & body).sum() / body.sum(), abs=1e-4)
        assert 0.2 <= record["fraction"] <= 0.6
        for index, region in enumerate(synthetic.BODY_REGIONS):
            share = (hidden & body)[region_of_row == index].sum() / body[region_of_row == index].sum()
            assert record["region_fractions"][region] == pytest.approx(share, abs=1e-4)
            assert (region in record["regions"]) == (share >= synthetic.REGION_HIDDEN_SHARE)

    occlusion = json.loads((tiny / synthetic.OCCLUSION_FILE).read_text())
    assert len({record["occluder"] for record in occlusion.values()} - {"none"}) >= 3


def test_attributes_cover_every_identity_within_the_schema(tiny):
    payload = json.loads((tiny / synthetic.ATTRIBUTES_FILE).read_text())
    schema, identities = payload["schema"], payload["identities"]
    assert schema == synthetic.ATTRIBUTE_SCHEMA
    pids = {f"{pid:04d}" for split in ("train", "query", "gallery") for _, pid, _ in _images(tiny, split)}
    assert set(identities) == pids
    for attributes in identities.values():
        assert set(attributes) == set(schema)
        for name, value in attributes.items():
            assert value in schema[name]
    combinations = {tuple(sorted(attributes.items())) for attributes in identities.values()}
    assert len(combinations) == len(identities), "attributes identify people"

    def differences(first: str, second: str) -> list:
        return [name for name in schema if identities[first][name] != identities[second][name]]

    assert payload["hard_pairs"]
    for first, second, attribute in payload["hard_pairs"]:
        assert differences(first, second) == [attribute]


def test_is_complete_and_second_call_is_a_no_op(tmp_path):
    dataset_dir = tmp_path / synthetic.DATASET_DIR
    assert not synthetic.is_complete(dataset_dir)
    (dataset_dir / "query").mkdir(parents=True)
    (dataset_dir / "query" / "0001_c1_f0000001.jpg").write_bytes(b"half written")
    assert not synthetic.is_complete(dataset_dir)
    with pytest.raises(FileExistsError):
        synthetic.generate(tmp_path, "tiny", seed=0)

    summary = synthetic.generate(tmp_path, "tiny", seed=0, overwrite=True)
    assert synthetic.is_complete(dataset_dir)
    assert not summary["skipped"]
    assert summary["splits"]["query"] == {"ids": 16, "images": 16, "occluded": 16}
    assert not list(tmp_path.glob(".*partial*")), "the temporary folder is renamed, not left behind"
    mtimes = {path: path.stat().st_mtime_ns for path in dataset_dir.rglob("*")}

    again = synthetic.generate(tmp_path, "tiny", seed=0)
    assert again["skipped"] and again["splits"] == summary["splits"]
    assert {path: path.stat().st_mtime_ns for path in dataset_dir.rglob("*")} == mtimes
    with pytest.raises(FileExistsError):
        synthetic.generate(tmp_path, "tiny", seed=1)


def test_presets_match_their_documented_sizes():
    small, large = synthetic.PRESETS["small"], synthetic.PRESETS["large"]
    assert small.num_train_ids >= 100 and small.num_test_ids >= 100
    assert large.num_train_ids >= 700 and large.num_test_ids >= 1000
    assert 14000 <= large.num_train_ids * large.train_images_per_id <= 17000
    for preset in synthetic.PRESETS.values():
        assert 2 <= preset.num_cameras <= 8 and preset.gallery_images_per_id >= 2
    with pytest.raises(KeyError):
        synthetic.generate("unused", "huge")


def test_cli_writes_dataset_and_preview(tmp_path):
    # python tools/make_synthetic.py ...: a process forked from a warm interpreter (tests/_warm.py).
    command = [str(REPO_ROOT / "tools" / "make_synthetic.py"), "--root", str(tmp_path),
               "--preset", "tiny", "--seed", "3", "--preview"]
    result = _warm.run(*command, timeout=120)
    assert result.returncode == 0, result.stderr
    preview = tmp_path / synthetic.DATASET_DIR / "preview.png"
    assert str(preview) in result.stdout
    with Image.open(preview) as image:
        assert image.size == (synthetic.PREVIEW_LABEL_WIDTH + synthetic.PREVIEW_COLUMNS * synthetic.PREVIEW_CELL_WIDTH,
                              synthetic.PREVIEW_TITLE_HEIGHT + 8 * synthetic.PREVIEW_CELL_HEIGHT)

    clash = _warm.run(*command[:-1], "--seed", "4", timeout=120)
    assert clash.returncode == 2
    assert "--overwrite" in clash.stderr and "Traceback" not in clash.stderr
