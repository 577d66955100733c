"""The inference tools (extract_features.py, search.py) on bad input: what a user sees on the
command line, and that nothing wrong is written or trusted."""
import csv
import json
import os
import shutil

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import _warm


def tool(name, *args, timeout=300):
    """Run tools/<name>.py; returns the CompletedProcess (no check). In a process of its own, forked
    from a warm interpreter (tests/_warm.py): what the user sees, without seconds of imports first."""
    return _warm.run(f"tools/{name}.py", *args, timeout=timeout)


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if "error:" in line]


def _gallery(tiny_dataset_root, tmp_path):
    gallery = tmp_path / "gallery"
    shutil.copytree(os.path.join(tiny_dataset_root, "SyntheticOccluded", "bounding_box_test"), gallery)
    return gallery, sorted(os.listdir(gallery))


def _results(out):
    with open(out / "results.csv") as handle:
        return list(csv.DictReader(handle))


def test_search_cache_with_the_right_fingerprint_but_wrong_rows_is_recomputed(tiny_run, tiny_dataset_root, tmp_path):
    gallery, names = _gallery(tiny_dataset_root, tmp_path)
    assert len(names) == 48
    query = tmp_path / "query.png"
    Image.open(gallery / names[20]).save(query)  # re-saved gallery image 20: its own best match
    out = tmp_path / "out"
    argv = ["--weights", tiny_run / "model_final.pth", "--gallery", gallery, "--query", query, "--top-k", "10",
            "--output", out, "--device", "cpu"]
    proc = tool("search", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.basename(_results(out)[0]["gallery"]) == names[20]
    cache = out / "gallery_features.safetensors"
    with safe_open(str(cache), framework="pt") as handle:
        metadata = handle.metadata()
    features = load_file(str(cache))["features"]
    paths = json.loads(metadata["paths"])

    # 5 of the 48 rows, under the right fingerprint (a cache cut short, or written by other code).
    save_file({"features": features[:5].contiguous()}, str(cache),
              metadata={**metadata, "paths": json.dumps(paths[:5])})
    proc = tool("search", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warning = [line for line in proc.stderr.splitlines() if "gallery_features.safetensors" in line and "recomput" in line]
    assert warning and "5" in warning[0] and "48" in warning[0], proc.stderr[-3000:]
    assert "computed" in proc.stdout and "cached" not in proc.stdout
    rows = _results(out)
    assert os.path.basename(rows[0]["gallery"]) == names[20]
    assert len({row["gallery"] for row in rows}) == 10
    assert load_file(str(cache))["features"].shape[0] == 48  # the cache is whole again

    # All 48 rows, but listed for other images: recomputed too.
    save_file({"features": features.contiguous()}, str(cache),
              metadata={**metadata, "paths": json.dumps(paths[::-1])})
    proc = tool("search", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any("recomput" in line and "images" in line for line in proc.stderr.splitlines()), proc.stderr[-3000:]
    assert os.path.basename(_results(out)[0]["gallery"]) == names[20]
    # And the whole, right cache is used as it is.
    proc = tool("search", *argv)
    assert proc.returncode == 0 and "cached" in proc.stdout and "recomput" not in proc.stderr


def _bad_folder(tiny_dataset_root, tmp_path):
    folder = tmp_path / "crops"
    folder.mkdir()
    query = os.path.join(tiny_dataset_root, "SyntheticOccluded", "query")
    good = sorted(os.listdir(query))[:2]
    for name in good:
        shutil.copy(os.path.join(query, name), folder)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is text, not an image\n")
    whole = open(os.path.join(query, good[0]), "rb").read()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    return folder, good, ["empty.jpg", "notes.jpg", "truncated.jpg"]


def test_extract_features_names_every_bad_image_before_loading_the_model(tiny_run, tiny_dataset_root, tmp_path):
    folder, _, bad = _bad_folder(tiny_dataset_root, tmp_path)
    output = tmp_path / "feats.safetensors"
    for weights in (tiny_run / "model_final.pth", tmp_path / "no_such_model.pth"):
        # With a missing weights file too: the images are checked before the model is read.
        proc = tool("extract_features", "--weights", weights, "--images", folder, "--output", output)
        assert proc.returncode == 2, proc.stderr[-3000:]
        lines = error_lines(proc)
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
        assert all(name in lines[0] for name in bad) and "--skip-bad" in lines[0], lines[0]
        assert "Traceback" not in proc.stderr and not output.exists()


def test_extract_features_skip_bad_drops_them_with_a_warning_each(tiny_run, tiny_dataset_root, tmp_path):
    folder, good, bad = _bad_folder(tiny_dataset_root, tmp_path)
    output = tmp_path / "feats.safetensors"
    proc = tool("extract_features", "--weights", tiny_run / "model_final.pth", "--images", folder,
                "--output", output, "--skip-bad", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in bad:
        assert any(name in line and "WARNING" in line for line in proc.stderr.splitlines()), proc.stderr[-3000:]
    with open(tmp_path / "feats.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [os.path.basename(row["path"]) for row in rows] == good
    assert load_file(str(output))["features"].shape[0] == len(good)


def test_extract_features_uses_the_config_embedded_in_the_checkpoint(tiny_run, tiny_dataset_root, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tiny_run / "model_final.pth", alone)  # no config.yaml beside it, no --config-file
    images = os.path.join(tiny_dataset_root, "SyntheticOccluded", "query")
    output = tmp_path / "feats.safetensors"
    proc = tool("extract_features", "--weights", alone / "model_final.pth", "--images", images, "--output", output,
                "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from agreid import Predictor

    with open(tmp_path / "feats.csv") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    expected = Predictor(str(tiny_run / "model_final.pth"), device="cpu")(paths)  # config.yaml beside it
    torch.testing.assert_close(load_file(str(output))["features"], expected, rtol=0, atol=1e-6)

    # A checkpoint without an embedded config (and none beside it): one line that says what to pass.
    checkpoint = torch.load(tiny_run / "model_final.pth", map_location="cpu", weights_only=True)
    del checkpoint["config"]
    bare = tmp_path / "bare" / "model_final.pth"
    bare.parent.mkdir()
    torch.save(checkpoint, bare)
    proc = tool("extract_features", "--weights", bare, "--images", images, "--output", tmp_path / "bare.safetensors")
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 1 and str(bare) in lines[0] and "--config-file" in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("top_k", ["0", "-3"])
def test_search_refuses_a_top_k_below_one_before_loading_the_model(tmp_path, top_k):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 64)).save(image)
    # The weights file does not exist: the option must be refused before it is looked at.
    proc = tool("search", "--weights", tmp_path / "missing.pth", "--gallery", image, "--query", image,
                "--top-k", top_k, "--output", tmp_path / "out")
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 1 and "--top-k" in lines[0] and top_k in lines[0] and "missing.pth" not in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
