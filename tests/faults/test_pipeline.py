"""Images of every kind decode to RGB alike in the check and the loader; a failing loader
ends the run with the file's name within seconds, never a hang."""
import gc
import glob
import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

import agreid  # isort: skip  (patches fastreid before its modules are imported)
from fastreid.data import common
from fastreid.engine.train_loop import HookBase
from agreid.data import verify_images
from agreid.data.datasets import BadImageError, ImageReadError
from agreid.engine import AGReIDTrainer
from faultkit import CONFIG, REPO, TINY


def _write_images(folder):
    """One image per awkward mode, with the RGB value each must decode to."""
    folder.mkdir(exist_ok=True)
    cases = {}

    def add(name, image, expected, **save):
        path = str(folder / name)
        image.save(path, **save)
        cases[path] = expected

    add("rgba.png", Image.new("RGBA", (8, 16), (10, 20, 30, 0)), (10, 20, 30))
    add("cmyk.jpg", Image.new("CMYK", (8, 16), (0, 0, 0, 0)), (255, 255, 255), quality=100)
    add("gray16.png", Image.fromarray(np.full((16, 8), 257 * 100, dtype=np.uint16)), (100, 100, 100))
    add("gray.png", Image.new("L", (8, 16), 77), (77, 77, 77))
    add("gray_alpha.png", Image.new("LA", (8, 16), (90, 255)), (90, 90, 90))
    palette = Image.new("P", (8, 16), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    add("palette.png", palette, (10, 200, 30))
    add("tiny.png", Image.new("RGB", (1, 1), (5, 6, 7)), (5, 6, 7))
    return cases


def test_every_mode_decodes_to_rgb_in_the_check_and_the_loader(tmp_path):
    cases = _write_images(tmp_path / "images")
    items = [(path, "p_1", "c_0") for path in cases]
    assert verify_images(items, "error", "odd images") == items
    for path, expected in cases.items():
        image = common.read_image(path)  # what fastreid's datasets call, patched by agreid.compat
        assert image.mode == "RGB", path
        pixel = image.getpixel((0, 0))
        assert all(abs(a - b) <= 1 for a, b in zip(pixel, expected)), (path, pixel, expected)
    # And through fastreid's dataset and test transforms: 3 channels at the configured size.
    cfg = agreid.get_agreid_cfg(os.path.join(REPO, CONFIG), TINY)
    from fastreid.data.transforms import build_transforms

    dataset = common.CommDataset([(p, 1, 0) for p in cases], build_transforms(cfg, is_train=False), relabel=False)
    for i in range(len(dataset)):
        assert tuple(dataset[i]["images"].shape) == (3, 64, 32)


def test_undecodable_files_are_named_before_training(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = folder / "good.png"
    Image.new("RGB", (8, 16)).save(good)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.png").write_bytes(good.read_bytes()[:30])
    items = [(str(p), "p_1", "c_0") for p in sorted(folder.iterdir())]
    with pytest.raises(BadImageError) as error:
        verify_images(items, "error", "train set")
    assert "empty.jpg" in str(error.value) and "truncated.png" in str(error.value)
    assert "good.png" not in str(error.value)
    assert verify_images(items, "skip", "train set") == [(str(good), "p_1", "c_0")]


class _DeleteImages(HookBase):
    """Delete every training image after the first stage-2 step (the loader keeps reading)."""

    def __init__(self, root):
        self.root, self.deleted_at = root, None

    def after_step(self):
        if self.deleted_at is None:
            for path in glob.glob(os.path.join(self.root, "SyntheticOccluded", "bounding_box_train", "*")):
                os.remove(path)
            self.deleted_at = time.monotonic()


def _no_hang(seconds):
    """Threads left behind by fastreid's loaders are daemons: only this test's thread counts."""
    return seconds < 60


@pytest.fixture
def one_torch_thread():
    """One torch thread in this process while the loaders read: their prefetch thread (workers 0)
    or worker processes (2) beside two OpenMP threads on two cores make each small op wait for a
    core (seconds an iteration on a busy machine; what is tested does not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shut_down_workers():
    """End the loader workers a failed evaluation left behind (its traceback holds their iterator):
    left to the garbage collector, they are joined with a timeout of seconds each, at the latest
    when the session ends. (Training ends its own: tested below.)"""
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    for obj in gc.get_objects():
        if type(obj) is _MultiProcessingDataLoaderIter:  # isinstance would touch deprecated proxies
            obj._shutdown_workers()


@pytest.mark.timeout(300)  # a hang fails here instead of after the suite's 15 minutes
@pytest.mark.parametrize("workers", [0, 2])
def test_image_deleted_mid_training_ends_the_run(dataset_copy, tmp_path, workers, one_torch_thread):
    (tmp_path / "out").mkdir()
    cfg = agreid.get_agreid_cfg(os.path.join(REPO, CONFIG), TINY + [
        "DATASETS.ROOT", str(dataset_copy), "OUTPUT_DIR", str(tmp_path / "out"),
        "DATALOADER.NUM_WORKERS", str(workers), "SOLVER.STAGE1.MAX_EPOCH", "0", "SOLVER.MAX_EPOCH", "30"])
    trainer = AGReIDTrainer(cfg)
    hook = _DeleteImages(str(dataset_copy))
    trainer.register_hooks([hook])
    children = set(multiprocessing.active_children())
    with pytest.raises((ImageReadError, FileNotFoundError, RuntimeError)) as error:
        trainer.train()
    assert hook.deleted_at is not None and _no_hang(time.monotonic() - hook.deleted_at)
    assert "bounding_box_train" in str(error.value) and ".jpg" in str(error.value)
    assert trainer.iter < trainer.max_iter
    # The failed run ended its loader's worker processes (the traceback still holds their iterator).
    assert set(multiprocessing.active_children()) <= children


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [0, 2])
def test_image_deleted_during_evaluation_ends_it(dataset_copy, tmp_path, tiny_run, workers, monkeypatch,
                                                 one_torch_thread):
    cfg = agreid.get_agreid_cfg(str(tiny_run / "config.yaml"), [
        "DATASETS.ROOT", str(dataset_copy), "OUTPUT_DIR", str(tmp_path / "eval"),
        "DATALOADER.NUM_WORKERS", str(workers), "TEST.IMS_PER_BATCH", "4",
        "MODEL.WEIGHTS", str(tiny_run / "model_final.pth")])
    model = AGReIDTrainer.build_trained_model(cfg)
    build_test_loader = AGReIDTrainer.build_test_loader.__func__
    started = []

    def build_then_delete(cls, cfg, dataset_name):
        loader = build_test_loader(cls, cfg, dataset_name)  # images checked here...
        for path in glob.glob(os.path.join(str(dataset_copy), "SyntheticOccluded", "bounding_box_test", "*")):
            os.remove(path)  # ... and gone when the features are computed
        started.append(time.monotonic())
        return loader

    monkeypatch.setattr(AGReIDTrainer, "build_test_loader", classmethod(build_then_delete))
    children = set(multiprocessing.active_children())
    with pytest.raises((ImageReadError, FileNotFoundError, RuntimeError)) as error:
        AGReIDTrainer.test(cfg, model)
    assert started and _no_hang(time.monotonic() - started[0])
    assert "bounding_box_test" in str(error.value)
    # The failed evaluation ended its loader's worker processes (the traceback still holds their iterator).
    left = set(multiprocessing.active_children()) - children
    _shut_down_workers()
    assert not left


@pytest.mark.timeout(300)
def test_model_error_during_evaluation_ends_the_loader_workers(tiny_run, tmp_path, monkeypatch, one_torch_thread):
    """An error raised by the model (not the loader) half-way through the test set: the
    exception reaches the caller and the loader's worker processes end with the evaluation."""
    cfg = agreid.get_agreid_cfg(str(tiny_run / "config.yaml"), [
        "OUTPUT_DIR", str(tmp_path / "eval"), "DATALOADER.NUM_WORKERS", "2", "TEST.IMS_PER_BATCH", "1",
        "MODEL.WEIGHTS", str(tiny_run / "model_final.pth")])
    model = AGReIDTrainer.build_trained_model(cfg)
    forward, calls = model.forward, []

    def fail_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("model failed on the third test batch")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", fail_on_third_batch)
    children = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="third test batch"):
        AGReIDTrainer.test(cfg, model)
    left = set(multiprocessing.active_children()) - children
    _shut_down_workers()
    assert len(calls) == 3 and not left
