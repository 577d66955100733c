"""Mistakes found at start-up, before any work: one ``error:`` line naming the keys and values,
exit status 2, no hang, and the output folder left as it was."""
import errno
import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest
import torch

import agreid
from agreid.engine import run_guard
from agreid.engine.cameras import map_test_cameras
from agreid.engine.run_guard import LOCK_FILE, OutputDirError, OutputDirLock
from agreid.serialization import load_checkpoint_file
from faultkit import CONFIG, REPO, tiny_args, train_net, train_net_in_process

RANDOM_INIT = ["MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", ""]
SMALL = ["INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]"]


def _one_line(proc) -> str:
    """The single ``error:`` line of a refused command (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    return _only_error_line(proc.stderr)


def _only_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "terminate called" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _in_process(argv, capsys) -> str:
    """The ``error:`` line of a command refused before any training, run in this process."""
    code, err = train_net_in_process(argv, capsys)
    assert code == 2, err[-3000:]
    return _only_error_line(err)


def _digest(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ batches the sampler cannot fill
@pytest.mark.parametrize("batch, expected", [
    ("6", "SOLVER.IMS_PER_BATCH 6 cannot be filled by NaiveIdentitySampler: it draws DATALOADER.NUM_INSTANCE 4"),
    ("2", "SOLVER.IMS_PER_BATCH 2 cannot be filled by NaiveIdentitySampler"),
    ("128", "SOLVER.IMS_PER_BATCH 128 with DATALOADER.NUM_INSTANCE 4 needs 32 identities in each batch, "
            "but the training set of ['SyntheticOccluded'] has 16 (64 images). Use SOLVER.IMS_PER_BATCH 64 or less"),
])
def test_a_batch_the_identity_sampler_cannot_fill_is_one_line(tiny_dataset_root, tmp_path, capsys, batch, expected):
    out = tmp_path / "run"
    # Before the fix this looped forever in fastreid's sampler (pytest's timeout fails the test).
    assert expected in _in_process(tiny_args(tiny_dataset_root, out, "SOLVER.IMS_PER_BATCH", batch), capsys)
    assert not out.exists()  # a refused command writes nothing


def test_a_hang_is_now_one_line_as_the_user_runs_it(tiny_dataset_root, tmp_path):
    proc = train_net(*tiny_args(tiny_dataset_root, tmp_path / "run", "SOLVER.IMS_PER_BATCH", "6"), timeout=120,
                     fresh=True)
    assert "SOLVER.IMS_PER_BATCH 6 cannot be filled" in _one_line(proc)


@pytest.mark.parametrize("key, value", [("SOLVER.STAGE1.OPT", "SDG"), ("SOLVER.OPT", "Adamm")])
def test_an_optimiser_typo_is_one_line(tiny_dataset_root, tmp_path, capsys, key, value):
    line = _in_process(tiny_args(tiny_dataset_root, tmp_path / "run", key, value), capsys)
    assert f"{key} {value!r} is not an optimiser of torch.optim" in line
    assert "Adam, AdamW" in line and "SGD" in line


# ----------------------------------------------------------- refused commands leave the run alone
def test_refused_commands_leave_the_run_folder_as_it_was(tiny_run, tiny_dataset_root, tmp_path):
    run = tmp_path / "R"
    shutil.copytree(tiny_run, run)
    before = _digest(run)
    # --resume under another stage-1 length.
    proc = train_net("--resume", *tiny_args(tiny_dataset_root, run, "SOLVER.STAGE1.MAX_EPOCH", "3", "SEED", "99"))
    assert "SOLVER.STAGE1.MAX_EPOCH 1, the config says 3" in _one_line(proc)
    assert _digest(run) == before
    # --eval-only with the run's own config and an override that does not fit the checkpoint.
    proc = train_net("--config-file", str(run / "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                     str(run / "model_final.pth"), "INPUT.SIZE_TEST", "[128,64]", "SEED", "99")
    assert "INPUT.SIZE_TEST" in proc.stderr and proc.returncode == 2
    assert _digest(run) == before
    # The run still evaluates as trained from its own config.yaml.
    proc = train_net("--config-file", str(run / "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                     str(run / "model_final.pth"), "DATASETS.ROOT", tiny_dataset_root,
                     "OUTPUT_DIR", str(tmp_path / "eval"))
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_eval_only_with_the_leaf_config_needs_no_pretraining_file(tiny_run, tiny_dataset_root, tmp_path):
    # The leaf config names a SynthCLIP file that is not on this machine; the run was trained
    # from random weights, which the checkpoint says.
    proc = train_net("--config-file", CONFIG, "--eval-only", *SMALL,
                     "MODEL.BACKBONE.PRETRAIN_PATH", str(tmp_path / "absent" / "SynthCLIP-Tiny.pt"),
                     "MODEL.WEIGHTS", str(tiny_run / "model_final.pth"), "DATASETS.ROOT", tiny_dataset_root,
                     "OUTPUT_DIR", str(tmp_path / "eval"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Evaluation results for SyntheticOccluded" in (tmp_path / "eval" / "log.txt").read_text()
    assert load_checkpoint_file(tiny_run / "model_final.pth")["quick_gelu"] is False


def test_the_recorded_activation_wins_over_the_initial_weights(tiny_run, tmp_path):
    # A checkpoint that records QuickGELU is rebuilt with it, whatever its config names.
    from agreid.engine import AGReIDTrainer
    from agreid.modeling.deploy import uses_quick_gelu

    checkpoint = load_checkpoint_file(tiny_run / "model_final.pth")
    cfg = agreid.get_agreid_cfg(str(tiny_run / "config.yaml"), ["MODEL.WEIGHTS", str(tmp_path / "m.pth")])
    assert not uses_quick_gelu(AGReIDTrainer.build_trained_model(_with(cfg, checkpoint, tmp_path)))
    checkpoint["quick_gelu"] = True
    with pytest.raises(ValueError, match="AGReID-Tiny-ViT was trained with QuickGELU"):
        AGReIDTrainer.build_trained_model(_with(cfg, checkpoint, tmp_path))


def _with(cfg, checkpoint, tmp_path):
    torch.save(checkpoint, tmp_path / "m.pth")
    return cfg.clone()


# ------------------------------------------------------------------------------ a full disk
def test_a_lock_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_guard.os, "fsync", disk_full)
    with pytest.raises(OutputDirError, match="No space left on the disk of OUTPUT_DIR"):
        OutputDirLock(str(tmp_path / "run")).acquire()
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    (tmp_path / "run").mkdir()
    with pytest.raises(OutputDirError, match="No space left on the disk of OUTPUT_DIR"):
        monkeypatch.setattr(run_guard.os, "fsync", disk_full)
        OutputDirLock(str(tmp_path / "run")).acquire()
    assert list((tmp_path / "run").iterdir()) == []


def test_an_empty_or_unreadable_lock_is_stale_once_it_is_old(tmp_path):
    lock = tmp_path / LOCK_FILE
    for content in ("", "{not json"):
        lock.write_text(content)
        # Just written: it may be a run writing its record right now.
        with pytest.raises(OutputDirError, match="in use"):
            OutputDirLock(str(tmp_path)).acquire()
        old = time.time() - run_guard.STALE_EMPTY_LOCK_S - 1
        os.utime(lock, (old, old))
        held = OutputDirLock(str(tmp_path)).acquire()
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        held.release()
        assert not lock.exists()


def test_a_full_disk_at_start_up_is_one_line_and_the_next_run_resumes(tiny_run, tiny_dataset_root, tmp_path):
    """The repro as a user meets it: a small tmpfs, a copy of a run, the disk filled."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here (the lock tests above cover the fix)")
    try:
        run = disk / "R"
        shutil.copytree(tiny_run, run)
        before = _digest(run)
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=100"], capture_output=True)
        proc = train_net("--resume", *tiny_args(tiny_dataset_root, run))
        line = _one_line(proc)
        assert "No space left on the disk of OUTPUT_DIR" in line and "Logging error" not in proc.stderr
        assert _digest(run) == before and not (run / LOCK_FILE).exists()
        filler.unlink()
        proc = train_net("--resume", *tiny_args(tiny_dataset_root, run))
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# -------------------------------------------------------------------- test sets with nothing to rank
def _reid_list(tmp_path, dataset_root, query_camid=None, query_ids=None):
    """ReIDList CSVs over the tiny dataset, every camera 0 (or the query's ``query_camid``)."""
    source = os.path.join(dataset_root, "SyntheticOccluded")
    rows = {}
    for split, folder in (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test")):
        lines = ["path,pid,camid"]
        for name in sorted(os.listdir(os.path.join(source, folder))):
            if name.endswith(".jpg"):
                pid = name.split("_")[0]
                if split == "query" and query_ids:
                    pid = query_ids(pid)
                camid = query_camid if split == "query" and query_camid is not None else 0
                lines.append(f"{os.path.join(source, folder, name)},{pid},{camid}")
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
        rows[split] = len(lines) - 1
    return ["DATASETS.NAMES", '("ReIDList",)', "DATASETS.TESTS", '("ReIDList",)',
            "DATASETS.LIST.TRAIN", str(tmp_path / "train.csv"), "DATASETS.LIST.QUERY", str(tmp_path / "query.csv"),
            "DATASETS.LIST.GALLERY", str(tmp_path / "gallery.csv")]


def test_a_single_camera_dataset_stops_before_training(tiny_dataset_root, tmp_path):
    out = tmp_path / "run"
    started = time.monotonic()
    proc = train_net(*tiny_args(tiny_dataset_root, out, *_reid_list(tmp_path, tiny_dataset_root)))
    line = _one_line(proc)
    assert "Test set ReIDList: no query has a true match in the gallery" in line
    assert "all its query and gallery images are in one camera (0)" in line
    assert "camera id of their own" in line
    assert not out.exists()  # nothing trained, nothing written
    # With a camera of their own, the same lists train and evaluate (SIE off: training saw one camera).
    proc = train_net(*tiny_args(tiny_dataset_root, out, *_reid_list(tmp_path, tiny_dataset_root, query_camid=1),
                                "MODEL.BACKBONE.SIE_CAMERA", "False"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - started < 300


def test_query_ids_in_another_letter_case_are_named(tiny_dataset_root, tmp_path):
    def named(pid):
        return f"Person{pid}"

    lists = _reid_list(tmp_path, tiny_dataset_root, query_camid=1, query_ids=named)
    gallery = (tmp_path / "gallery.csv").read_text().splitlines()
    (tmp_path / "gallery.csv").write_text("\n".join(
        [gallery[0]] + [",".join([p, f"person{pid}", c]) for p, pid, c in (r.split(",") for r in gallery[1:])]) + "\n")
    proc = train_net(*tiny_args(tiny_dataset_root, tmp_path / "run", *lists))
    line = _one_line(proc)
    assert "query id 'Person00" in line and "only as 'person00" in line and "letter case included" in line


# ----------------------------------------------------------------------------------- cameras
def test_unseen_camera_rule_applies_without_recorded_training_cameras():
    cfg = agreid.get_agreid_cfg(os.path.join(REPO, CONFIG), RANDOM_INIT + [
        "MODEL.BACKBONE.NUM_CAMERAS", "3", "TEST.UNSEEN_CAMERA", "mean"])
    assert list(cfg.MODEL.BACKBONE.TRAIN_CAMERAS) == []  # e.g. a converted CLIP-ReID checkpoint
    items = [("a.jpg", 1, 0), ("b.jpg", 1, 2), ("c.jpg", 2, 5), ("d.jpg", 2, 3), ("e.jpg", 3, 5)]
    mapped = map_test_cameras(cfg, "Test", "test", items)
    # Cameras 0-2 keep their rows; 3 and 5 get ids past the table (the mean row), still distinct.
    assert [cam for _, _, cam in mapped] == [0, 2, 4, 3, 4]
    cfg.TEST.UNSEEN_CAMERA = "error"
    with pytest.raises(ValueError, match="Test camera 5 of Test .* beyond the 3 SIE rows.*TEST.UNSEEN_CAMERA mean"):
        map_test_cameras(cfg, "Test", "test", items)


def test_camera_mistakes_are_one_line(tiny_run, tiny_dataset_root, tmp_path, capsys):
    line = _in_process(tiny_args(tiny_dataset_root, tmp_path / "a", "TEST.UNSEEN_CAMERA", "bogus"), capsys)
    assert "TEST.UNSEEN_CAMERA 'bogus': use one of error, mean" in line
    # --eval-only on a test set with a camera the checkpoint never saw.
    root = tmp_path / "datasets"
    shutil.copytree(tiny_dataset_root, root)
    query = root / "SyntheticOccluded" / "query"
    first = sorted(query.iterdir())[0]
    first.rename(query / first.name.replace(first.name.split("_")[1], "c8"))
    proc = train_net("--config-file", str(tiny_run / "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                     str(tiny_run / "model_final.pth"), "DATASETS.ROOT", str(root), "OUTPUT_DIR", str(tmp_path / "b"))
    line = _one_line(proc)
    assert "Test camera 7 of SyntheticOccluded" in line and "TEST.UNSEEN_CAMERA mean" in line


# --------------------------------------------------------------------------- weak messages
@pytest.mark.parametrize("content, expected", [
    ("MODEL:\n  META_ARCHITECTURE: [AGReID\n", "is not valid YAML at line 3"),
    ("", "is empty: it sets no keys"),
    ("- MODEL\n- SOLVER\n", "holds a YAML list, not a mapping of keys"),
    ("_BASE_: b.yml\n", "_BASE_ cycle:"),
    (None, "is a directory, not a YAML file"),
])
def test_config_files_that_cannot_be_read_are_one_line(tmp_path, capsys, content, expected):
    path = tmp_path / "a.yml"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
        (tmp_path / "b.yml").write_text("_BASE_: a.yml\n")
    line = _in_process(["--config-file", str(path)], capsys)
    assert expected in line and str(path) in line


def test_a_percentile_out_of_range_names_the_key(tiny_dataset_root, tmp_path, capsys):
    line = _in_process(tiny_args(tiny_dataset_root, tmp_path / "run", "MODEL.ATTR.THRESHOLD", "p150"), capsys)
    assert "MODEL.ATTR.THRESHOLD: Noise-mask percentile 'p150' must be in (0, 100)" in line


def test_an_empty_last_checkpoint_is_one_line(tiny_run, tiny_dataset_root, tmp_path):
    run = tmp_path / "R"
    shutil.copytree(tiny_run, run)
    (run / "last_checkpoint").write_text("")
    before = _digest(run)
    proc = train_net("--resume", *tiny_args(tiny_dataset_root, run))
    assert f"{run / 'last_checkpoint'} is empty: it names no checkpoint to resume from" in _one_line(proc)
    (run / "last_checkpoint").write_text("model_0042.pth")
    proc = train_net("--resume", *tiny_args(tiny_dataset_root, run))
    assert "names model_0042.pth, which is not in" in _one_line(proc)
    (run / "last_checkpoint").write_text("")
    assert _digest(run) == before
