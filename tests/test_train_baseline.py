"""fastreid's Baseline trained through this project's trainer and tools/train_net.py on CPU."""
import os

import pytest
import torch

import _warm
import agreid
from agreid.engine import AGReIDTrainer
from fastreid.config import get_cfg

# Trains, exports or starts processes: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow

CONFIG = "configs/Synthetic/baseline_r18.yml"
FAST = ["SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "2",
        "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]"]


def _cfg(repo_root, dataset_root, out_dir, opts=()):
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.merge_from_file(os.path.join(repo_root, CONFIG))
    cfg.merge_from_list(FAST + ["DATASETS.ROOT", dataset_root, "OUTPUT_DIR", str(out_dir), *opts])
    return cfg


class _FrozenStemTrainer(AGReIDTrainer):
    """The trainer with the first conv of the backbone frozen before the optimiser is built."""

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        model.backbone.conv1.weight.requires_grad_(False)
        return model


def test_training_steps_move_trainable_weights_only(repo_root, tiny_dataset_root, tmp_path):
    cfg = _cfg(repo_root, tiny_dataset_root, tmp_path, ["SOLVER.MAX_EPOCH", "2"])
    trainer = _FrozenStemTrainer(cfg)
    assert trainer.cfg.MODEL.DEVICE in ("cpu", "cuda")
    assert trainer.iters_per_epoch == 64 // 16
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    assert torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    assert not torch.equal(before["backbone.layer4.1.conv2.weight"], after["backbone.layer4.1.conv2.weight"])
    assert not torch.equal(before["heads.weight"], after["heads.weight"])
    assert trainer.cfg.MODEL.HEADS.NUM_CLASSES == 16
    assert trainer.cfg.MODEL.BACKBONE.NUM_CAMERAS == 4


def test_train_net_trains_and_evaluates(repo_root, tiny_dataset_root, tmp_path):
    out = tmp_path / "run"
    # python tools/train_net.py ...: in processes forked from a warm interpreter (tests/_warm.py;
    # tests/faults/conftest.py's deterministic_run is the suite's training run in a new interpreter).
    proc = _warm.run("tools/train_net.py", "--config-file", CONFIG, *FAST, "SOLVER.MAX_EPOCH", "2",
                     "DATASETS.ROOT", tiny_dataset_root, "OUTPUT_DIR", str(out), cwd=repo_root, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "Evaluation results for SyntheticOccluded in csv format" in log
    assert "Rank-1" in log and "mAP" in log
    assert (out / "model_final.pth").is_file()
    assert not list(out.glob("*.tmp"))

    # --eval-only on the saved weights gives the same table.
    proc = _warm.run("tools/train_net.py", "--config-file", str(out / "config.yaml"), "--eval-only",
                     "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"),
                     cwd=repo_root, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Rank-1" in (tmp_path / "eval" / "log.txt").read_text()


def test_cosine_schedule_shorter_than_warmup_is_a_clear_error(repo_root, tiny_dataset_root, tmp_path):
    cfg = _cfg(repo_root, tiny_dataset_root, tmp_path, ["SOLVER.MAX_EPOCH", "1"])
    with pytest.raises(ValueError, match=r"SOLVER.MAX_EPOCH \(1\) must exceed"):
        AGReIDTrainer(cfg)


def test_trained_model_needs_existing_weights(repo_root, tiny_dataset_root, tmp_path):
    cfg = _cfg(repo_root, tiny_dataset_root, tmp_path)
    with pytest.raises(ValueError, match="MODEL.WEIGHTS"):
        AGReIDTrainer.build_trained_model(cfg)
    cfg.MODEL.WEIGHTS = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        AGReIDTrainer.build_trained_model(cfg)
