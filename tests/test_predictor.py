"""Features of your own images: agreid.Predictor, tools/extract_features.py and tools/search.py
(agreid.cli.extract_features, agreid.cli.search)."""
import csv
import os
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from _tiny_model import NUM_CAMERAS, tiny_cfg, tiny_run
from agreid import Predictor
from agreid.cli import extract_features, search
from agreid.engine import AGReIDTrainer
from agreid.modeling.deploy import build_deployed_encoder, save_deployed_encoder
from agreid.predictor import camera_agnostic_encoder, list_images
from agreid.visualization import BORDER, TILE_SIZE


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny training run (random weights): ``(cfg, checkpoint)``, config.yaml beside it."""
    return tiny_run(tmp_path_factory.mktemp("run"))


def _data(root, split):
    return os.path.join(root, "SyntheticOccluded", split)


def test_predictor_matches_the_trained_models_test_features(run, tiny_dataset_root):
    # Same reading, resizing and normalisation as fastreid's test loader, settings from the files only.
    cfg, checkpoint = run
    eval_cfg = tiny_cfg("DATASETS.ROOT", tiny_dataset_root, "MODEL.WEIGHTS", checkpoint)
    model = AGReIDTrainer.build_trained_model(eval_cfg)
    loader, _ = AGReIDTrainer.build_test_loader(eval_cfg, "SyntheticOccluded")
    batch = next(iter(loader))
    with torch.no_grad():
        expected = model(batch)
    predictor = Predictor(checkpoint, device="cpu", batch_size=5)  # config.yaml found beside it
    features = predictor(batch["img_paths"], camids=batch["camids"].tolist())
    assert features.shape == expected.shape
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    # An exported encoder gives the same features without any config.
    exported = os.path.join(os.path.dirname(checkpoint), "image_encoder.pth")
    save_deployed_encoder(build_deployed_encoder(cfg, checkpoint), exported)
    from_export = Predictor(exported, device="cpu")(batch["img_paths"], camids=batch["camids"].tolist())
    torch.testing.assert_close(from_export, expected, rtol=0, atol=1e-5)


def test_camera_rules(run, tiny_dataset_root):
    cfg, checkpoint = run
    paths, _ = list_images(_data(tiny_dataset_root, "query"))
    paths = paths[:3]
    encoder = build_deployed_encoder(cfg, checkpoint)
    assert encoder.backbone.num_cameras == NUM_CAMERAS
    predictor = Predictor(encoder, camera=1, device="cpu")
    # Rule "k": every image as if seen by camera k.
    torch.testing.assert_close(predictor(paths), predictor(paths, camids=[1] * 3), rtol=0, atol=1e-6)
    # Rule "mean": with every row of the table equal to one vector, the mean is that vector.
    with torch.no_grad():
        encoder.backbone.camera_embedding[:] = encoder.backbone.camera_embedding[2]
    torch.testing.assert_close(Predictor(encoder, camera="mean", device="cpu")(paths),
                               Predictor(encoder, device="cpu")(paths, camids=[0, 1, 2]), rtol=0, atol=1e-6)
    # Rule "zero": the same as an encoder without SIE on the same weights.
    zero = camera_agnostic_encoder(encoder, "zero")
    assert torch.count_nonzero(zero.backbone.camera_embedding) == 0
    without_sie = Predictor(encoder, camera="zero", device="cpu")(paths)
    encoder.backbone.camera_embedding = None
    torch.testing.assert_close(without_sie, Predictor(encoder, device="cpu")(paths), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="outside the SIE table"):
        Predictor(build_deployed_encoder(cfg, checkpoint), camera=NUM_CAMERAS)
    with pytest.raises(ValueError, match="camera rule 'median'"):
        Predictor(build_deployed_encoder(cfg, checkpoint), camera="median")


def test_extract_features_tool(run, tiny_dataset_root, tmp_path, capsys):
    _, checkpoint = run
    query = _data(tiny_dataset_root, "query")
    output = str(tmp_path / "out" / "feats.safetensors")
    assert extract_features.main(["--weights", checkpoint, "--images", query, "--output", output, "--batch-size", "4"]) == 0
    features = load_file(output)["features"]
    with open(tmp_path / "out" / "feats.csv") as handle:
        rows = list(csv.DictReader(handle))
    paths = sorted(os.path.join(query, name) for name in os.listdir(query))
    assert [row["path"] for row in rows] == paths and [int(row["index"]) for row in rows] == list(range(len(paths)))
    assert features.shape == (len(paths), Predictor(checkpoint).feature_dim)
    torch.testing.assert_close(features, Predictor(checkpoint, batch_size=7)(paths), rtol=0, atol=1e-6)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(len(paths)))

    # A CSV list with camera ids: relative paths, ids stored with the features.
    listing = tmp_path / "list.csv"
    listing.write_text("path,camid\n" + "".join(f"{os.path.relpath(p, tmp_path)},{i % 3}\n" for i, p in enumerate(paths[:4])))
    out2 = str(tmp_path / "with_cams.safetensors")
    assert extract_features.main(["--weights", checkpoint, "--images", str(listing), "--output", out2]) == 0
    assert load_file(out2)["camids"].tolist() == [0, 1, 2, 0]
    capsys.readouterr()


def test_tools_report_bad_input_by_name(run, tiny_dataset_root, tmp_path, capsys):
    _, checkpoint = run
    output = str(tmp_path / "f.safetensors")

    def error_of(tool, *argv):
        assert tool.main(list(argv)) == 2
        return capsys.readouterr().err

    assert "no_such_folder" in error_of(extract_features, "--weights", checkpoint, "--images", str(tmp_path / "no_such_folder"),
                                        "--output", output)
    assert "missing.pth" in error_of(extract_features, "--weights", str(tmp_path / "missing.pth"), "--images",
                                     _data(tiny_dataset_root, "query"), "--output", output)
    broken = tmp_path / "imgs"
    broken.mkdir()
    shutil.copy(os.path.join(_data(tiny_dataset_root, "query"), os.listdir(_data(tiny_dataset_root, "query"))[0]), broken)
    (broken / "broken.jpg").write_bytes(b"not a jpeg")
    message = error_of(extract_features, "--weights", checkpoint, "--images", str(broken), "--output", output)
    assert "broken.jpg" in message and "cannot be read" in message and "--skip-bad" in message
    # A checkpoint of another architecture: the message names the file and the keys that differ.
    other = tmp_path / "other" / "model_final.pth"
    other.parent.mkdir()
    shutil.copy(os.path.join(os.path.dirname(checkpoint), "config.yaml"), other.parent)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["model"]["backbone.visual.extra_layer.weight"] = torch.zeros(2)
    del state["model"]["backbone.visual.ln_post.weight"]
    torch.save(state, other)
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(os.path.join(_data(tiny_dataset_root, "query"), os.listdir(_data(tiny_dataset_root, "query"))[0]), good)
    message = error_of(search, "--weights", str(other), "--gallery", str(good), "--query", str(good),
                       "--output", str(tmp_path / "s"))
    assert str(other) in message and "visual.ln_post.weight" in message and "visual.extra_layer.weight" in message
    assert not os.path.exists(output)


def test_search_tool_finds_the_image_and_caches_the_gallery(run, tiny_dataset_root, tmp_path, capsys):
    _, checkpoint = run
    gallery = tmp_path / "gallery"
    shutil.copytree(_data(tiny_dataset_root, "bounding_box_test"), gallery)
    names = sorted(os.listdir(gallery))
    # The query is a gallery image saved again (re-encoded): its best match must be the original.
    query = tmp_path / "query.png"
    Image.open(gallery / names[5]).save(query)
    out = tmp_path / "out"
    argv = ["--weights", checkpoint, "--gallery", str(gallery), "--query", str(query), "--top-k", "4",
            "--output", str(out)]
    assert search.main(argv) == 0
    assert "computed" in capsys.readouterr().out
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert os.path.basename(rows[0]["gallery"]) == names[5] and float(rows[0]["score"]) > 0.99
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    tile_w, tile_h = TILE_SIZE[0] + 2 * BORDER, TILE_SIZE[1] + 2 * BORDER
    with Image.open(out / "ranklist.png") as picture:
        assert picture.size[0] == tile_w + 16 + 4 * tile_w and picture.size[1] > tile_h

    assert search.main(argv) == 0
    assert "cached" in capsys.readouterr().out
    os.utime(gallery / names[0], ns=(1, 1))  # a gallery file changed: features recomputed
    assert search.main(argv) == 0
    assert "computed" in capsys.readouterr().out
    os.remove(gallery / names[5])  # the matching image is gone: it must not come back from the cache
    assert search.main(argv) == 0
    capsys.readouterr()
    with open(out / "results.csv") as handle:
        assert names[5] not in handle.read()


def _exif_rotated_jpeg(path):
    """A JPEG stored 128 wide x 64 high whose EXIF orientation (6: rotate 90 degrees) shows it 64 x 128."""
    import numpy as np

    stored = np.zeros((64, 128, 3), dtype=np.uint8)
    stored[:, :, 0] = np.linspace(0, 255, 128, dtype=np.uint8)[None, :]  # left-right ramp: the rotation shows
    stored[:32, :, 1] = 200
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif, quality=95)


def _grey16_png(path):
    """A 16-bit grey PNG, mid-grey (32767 of 65535) with a darker band."""
    import numpy as np

    values = np.full((128, 64), 32767, dtype=np.uint16)
    values[40:60] = 8000
    Image.fromarray(values).save(path)


def test_predictor_reads_images_as_evaluation_does(run, tmp_path, capsys):
    # EXIF orientation applied, 16-bit grey scaled (not clipped to white): the evaluation reader's decoding.
    from fastreid.data import common

    from agreid.data.datasets import decode_rgb
    from agreid.data.transforms import build_agreid_transforms

    cfg, checkpoint = run
    folder = tmp_path / "images"
    folder.mkdir()
    rotated, grey = str(folder / "rotated.jpg"), str(folder / "grey16.png")
    _exif_rotated_jpeg(rotated)
    _grey16_png(grey)
    assert decode_rgb(rotated).size == (64, 128) and abs(float(torch.tensor(list(decode_rgb(grey).getdata())).float().mean()) - 110) < 10
    evaluation = build_agreid_transforms(cfg, is_train=False)  # the test loader's transform
    expected = torch.stack([evaluation(common.read_image(path)) for path in (rotated, grey)])
    predictor = Predictor(checkpoint, device="cpu")
    images = predictor.load([rotated, grey])
    assert images.shape == expected.shape
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    features = predictor([rotated, grey])
    torch.testing.assert_close(features, predictor.encode(expected), rtol=0, atol=1e-6)
    # The tools read through the Predictor: the same features.
    output = str(tmp_path / "feats.safetensors")
    assert extract_features.main(["--weights", checkpoint, "--images", str(folder), "--output", output]) == 0
    capsys.readouterr()
    torch.testing.assert_close(load_file(output)["features"], predictor.encode(expected[[1, 0]]), rtol=0, atol=1e-6)


def test_predictor_refuses_camids_outside_the_sie_table(run, tiny_dataset_root, tmp_path, capsys):
    _, checkpoint = run
    paths, _ = list_images(_data(tiny_dataset_root, "query"))
    predictor = Predictor(checkpoint, device="cpu")
    for bad in (-1, NUM_CAMERAS):
        with pytest.raises(ValueError, match=rf"camid {bad} .*0\.\.{NUM_CAMERAS - 1}"):
            predictor(paths[:2], camids=[0, bad])
    listing = tmp_path / "list.csv"
    listing.write_text(f"path,camid\n{paths[0]},1\n{paths[1]},-1\n")
    assert extract_features.main(["--weights", checkpoint, "--images", str(listing),
                                  "--output", str(tmp_path / "f.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "camid -1" in err and f"0..{NUM_CAMERAS - 1}" in err
