"""Before any work: the seed is set and recorded, the output folder is locked and writable,
and the user's config mistakes end in one line without a traceback."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from agreid.engine.run_guard import LOCK_FILE, OutputDirError, OutputDirLock
from agreid.serialization import load_checkpoint_file
from faultkit import CONFIG, REPO, SCHEDULE, tiny_args, train_net, train_net_in_process


def _final_weights(out):
    return load_checkpoint_file(out / "model_final.pth")["model"]


def test_same_seed_same_weights(tiny_run, deterministic_run, tiny_dataset_root, tmp_path):
    # Run a: the shared run of faultkit.SCHEDULE (SEED 3, DETERMINISTIC; tests/faults/conftest.py),
    # in a new interpreter. Run b: the same command, forked from the warm interpreter
    # (tests/_warm.py). Two processes that share nothing, not even the hash seed.
    proc = train_net(*tiny_args(tiny_dataset_root, tmp_path / "b", *SCHEDULE))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = []
    for out in (deterministic_run, tmp_path / "b"):
        assert "SEED: 3" in (out / "config.yaml").read_text()
        assert "Seed 3 (SEED 3 + rank 0), deterministic algorithms only" in (out / "log.txt").read_text()
        runs.append(_final_weights(out))
    a, b = runs
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # A run of another seed trains other weights (the comparison above can fail).
    other = _final_weights(tiny_run)
    assert not torch.equal(a["backbone.visual.conv1.weight"], other["backbone.visual.conv1.weight"])


def test_random_seed_is_recorded(tiny_run):
    config = (tiny_run / "config.yaml").read_text()
    seed = int(next(line.split(":")[1] for line in config.splitlines() if line.startswith("SEED:")))
    assert seed >= 0 and f"Seed {seed} (SEED {seed} + rank 0)" in (tiny_run / "log.txt").read_text()


def test_second_run_in_the_same_folder_refuses(tiny_dataset_root, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    # A live holder: this test process (the command runs in it too, and is refused all the same).
    (out / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                             "started": "2026-01-01 00:00:00"}))
    code, err = train_net_in_process(tiny_args(tiny_dataset_root, out), capsys)
    assert code == 2 and "Traceback" not in err
    assert f"in use by a running training (pid {os.getpid()} on host {socket.gethostname()}" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing of the first run touched


def test_lock_of_a_dead_run_is_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with OutputDirLock(str(tmp_path)) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(OutputDirError, match=f"pid {os.getpid()}"):
            OutputDirLock(str(tmp_path)).acquire()
    assert not (tmp_path / LOCK_FILE).exists() and lock is not None


def _read_only_dir(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits; /sys refuses everyone
        return "/sys/agreid-read-only-test"
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "out")


def test_read_only_output_dir(tiny_dataset_root, tmp_path):
    out = _read_only_dir(tmp_path)
    proc = train_net(*tiny_args(tiny_dataset_root, out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"OUTPUT_DIR {out!r}" in proc.stderr and ("not writable" in proc.stderr or "cannot be created" in proc.stderr)


@pytest.mark.parametrize("opts, expected", [
    (["MODEL.BACKBONE.STRIDEE", "12"], "Non-existent key: MODEL.BACKBONE.STRIDEE"),
    (["SOLVER.MAX_EPOCH", "many"], "for config key: SOLVER.MAX_EPOCH"),
    (["SOLVER.MAX_EPOCH"], "odd length"),
    (["MODEL.PROMPT.TEMPLATE", "a photo of a person"], "has no learnable 'X' word"),
])
def test_config_mistakes_are_one_line(capsys, tiny_dataset_root, tmp_path, opts, expected):
    argv = tiny_args(tiny_dataset_root, tmp_path / "out") + opts
    code, err = train_net_in_process(argv, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err[-2000:]
    assert "Traceback" not in err


def test_bad_threshold_name_is_one_line(tiny_dataset_root, tmp_path, capsys):
    code, err = train_net_in_process(tiny_args(tiny_dataset_root, tmp_path / "out", "MODEL.ATTR.THRESHOLD", "bogus"),
                                     capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert "MODEL.ATTR.THRESHOLD 'bogus': use otsu, p50, p75, p90, fixed" in lines[0]
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_unknown_key_in_a_yaml_file(capsys, tmp_path, tiny_dataset_root):
    leaf = tmp_path / "leaf.yml"
    leaf.write_text(f"_BASE_: {os.path.join(REPO, CONFIG)}\nSOLVER:\n  MAX_EPOCHS: 3\n")
    code, err = train_net_in_process(["--config-file", str(leaf), "DATASETS.ROOT",
                                      tiny_dataset_root, "OUTPUT_DIR", str(tmp_path / "o")], capsys)
    assert code == 2 and "SOLVER.MAX_EPOCHS" in err and str(leaf) in err and "Traceback" not in err


def _first_stage1_targets(dataset_root, out, seed):
    """The identities of the first stage-1 batch of a run seeded with ``seed`` (no DETERMINISTIC)."""
    import agreid
    from agreid.engine import AGReIDTrainer
    from agreid.engine.run_guard import seed_everything
    from faultkit import TINY

    cfg = agreid.get_agreid_cfg(os.path.join(REPO, CONFIG), TINY + [
        "DATASETS.ROOT", str(dataset_root), "OUTPUT_DIR", str(out), "SEED", str(seed)])
    out.mkdir()
    seed_everything(seed)  # what train_net does
    trainer = AGReIDTrainer(cfg)
    trainer.enter_phase("align")
    return [next(trainer._trainer._data_loader_iter)["targets"].tolist() for _ in range(3)]


def test_the_seed_drives_the_stage1_batch_order(tiny_dataset_root, tmp_path):
    first = _first_stage1_targets(tiny_dataset_root, tmp_path / "a", 1)
    assert _first_stage1_targets(tiny_dataset_root, tmp_path / "b", 1) == first
    # Before, the stage-1 batches were seeded with the process rank: every seed drew these.
    assert _first_stage1_targets(tiny_dataset_root, tmp_path / "c", 2) != first


def test_same_seed_same_stage1_checkpoint_without_deterministic(tiny_run, tiny_dataset_root, tmp_path):
    weights = {}
    for name, fresh in (("a", True), ("b", False)):  # a new interpreter and a warm fork, as above
        out = tmp_path / name
        # Stage 1 only (no stage-2 epoch): its checkpoint is what is compared.
        proc = train_net(*tiny_args(tiny_dataset_root, out, "SEED", "11", "SOLVER.MAX_EPOCH", "0"), fresh=fresh)
        assert proc.returncode == 0, proc.stderr[-3000:]
        weights[name] = load_checkpoint_file(out / "model_stage1.pth")["model"]
    a, b = weights["a"], weights["b"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # A run of another seed learns other pseudo-labels (the comparison above can fail).
    other = load_checkpoint_file(tiny_run / "model_stage1.pth")["model"]
    assert not torch.equal(a["prompt_learner.pseudo_labels"], other["prompt_learner.pseudo_labels"])
