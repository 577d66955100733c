"""A checkpoint of another architecture stops with the mismatched keys named (or, when asked
to fine-tune, lists what was re-initialised); --eval-only works with the leaf config."""
import logging
import os

import pytest
import torch

import agreid
from agreid.engine import AGReIDTrainer
from agreid.engine.checkpoint import CheckpointMismatchError, resolve_eval_config
from faultkit import CONFIG, REPO, TINY, tiny_args, train_net, train_net_in_process

RANDOM_INIT = ["MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", ""]
SMALL = ["INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]"]


def _leaf(*opts):
    return agreid.get_agreid_cfg(os.path.join(REPO, CONFIG), RANDOM_INIT + list(opts))


def test_eval_only_with_the_leaf_config(tiny_run, tiny_dataset_root, tmp_path):
    # The leaf config leaves the identity and camera counts to the training set (0).
    assert _leaf().MODEL.HEADS.NUM_CLASSES == 0 and _leaf().MODEL.BACKBONE.NUM_CAMERAS == 0
    proc = train_net("--config-file", CONFIG, "--eval-only", *RANDOM_INIT, *SMALL,
                     "MODEL.WEIGHTS", str(tiny_run / "model_final.pth"), "DATASETS.ROOT", tiny_dataset_root,
                     "OUTPUT_DIR", str(tmp_path / "eval"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "eval" / "log.txt").read_text()
    trained = (tiny_run / "log.txt").read_text()
    assert "Evaluation results for SyntheticOccluded" in log
    # Same model, same test set: the table the training run printed at its end.
    row = [line for line in trained.splitlines() if line.startswith("| SyntheticOccluded")][-1]
    assert row in log


def test_eval_only_disagreements_stop_before_evaluation(tiny_run, tiny_dataset_root, tmp_path, capsys):
    code, error = train_net_in_process(
        ["--config-file", CONFIG, "--eval-only", *RANDOM_INIT, "MODEL.BACKBONE.STRIDE", "16",
         "MODEL.BACKBONE.NUM_CAMERAS", "3", "MODEL.WEIGHTS", str(tiny_run / "model_final.pth"),
         "DATASETS.ROOT", tiny_dataset_root, "OUTPUT_DIR", str(tmp_path / "eval")], capsys)
    assert code == 2
    assert "Traceback" not in error and error.count("error:") == 1
    for key in ("INPUT.SIZE_TRAIN", "INPUT.SIZE_TEST", "MODEL.BACKBONE.STRIDE", "MODEL.BACKBONE.NUM_CAMERAS"):
        assert key in error, key
    assert "[64, 32] in the checkpoint, [128, 64] in the config" in error
    assert not (tmp_path / "eval").exists()  # refused before any work: nothing written


def test_another_clip_model_is_named(tiny_run):
    cfg = _leaf("MODEL.BACKBONE.CLIP_NAME", "ViT-B-16", *SMALL)
    with pytest.raises(CheckpointMismatchError, match="MODEL.BACKBONE.CLIP_NAME: 'AGReID-Tiny-ViT' in the "
                                                      "checkpoint, 'ViT-B-16' in the config"):
        resolve_eval_config(cfg, str(tiny_run / "model_final.pth"))


def test_without_embedded_config_counts_come_from_shapes_and_shapes_are_checked(tiny_run, tmp_path):
    checkpoint = torch.load(tiny_run / "model_final.pth", weights_only=True)
    del checkpoint["config"]
    bare = tmp_path / "bare.pth"
    torch.save(checkpoint, bare)
    num_ids = checkpoint["model"]["classifier.weight"].shape[0]
    cfg = _leaf(*SMALL, "MODEL.WEIGHTS", str(bare))
    model = AGReIDTrainer.build_trained_model(cfg)
    assert cfg.MODEL.HEADS.NUM_CLASSES == num_ids
    assert torch.equal(model.classifier.weight, checkpoint["model"]["classifier.weight"])
    cfg = _leaf("INPUT.SIZE_TRAIN", "[128,64]", "INPUT.SIZE_TEST", "[64,32]", "MODEL.WEIGHTS", str(bare))
    with pytest.raises(CheckpointMismatchError) as error:
        AGReIDTrainer.build_trained_model(cfg)
    message = str(error.value)
    assert "backbone.visual.positional_embedding: shape (" in message and "in the checkpoint" in message
    assert "Skip loading" not in message


def _other_identities(tiny_run, tmp_path, extra=4):
    """The tiny run's final checkpoint as if trained on ``extra`` more identities."""
    checkpoint = torch.load(tiny_run / "model_final.pth", weights_only=True)
    state = checkpoint["model"]
    for key in ("classifier.weight", "classifier_proj.weight", "prompt_learner.pseudo_labels"):
        value = state[key]
        state[key] = torch.cat([value, value[:extra]])
    path = tmp_path / "other_ids.pth"
    torch.save(checkpoint, path)
    return path, state


def _trainer(tiny_dataset_root, tmp_path, weights, *extra):
    (tmp_path / "out").mkdir(exist_ok=True)
    cfg = agreid.get_agreid_cfg(os.path.join(REPO, CONFIG), TINY + [
        "DATASETS.ROOT", tiny_dataset_root, "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.WEIGHTS", str(weights),
        *extra])
    return AGReIDTrainer(cfg)


def test_other_identity_count_stops_or_fine_tunes(tiny_run, tiny_dataset_root, tmp_path, caplog):
    path, state = _other_identities(tiny_run, tmp_path)
    trainer = _trainer(tiny_dataset_root, tmp_path, path)
    with pytest.raises(CheckpointMismatchError) as error:
        trainer.resume_or_load(resume=False)
    message = str(error.value)
    ids = state["classifier.weight"].shape[0]
    assert f"classifier.weight: shape ({ids}, " in message and f"({ids - 4}, " in message
    assert "prompt_learner.pseudo_labels" in message and "MODEL.WEIGHTS_FINETUNE True" in message
    trainer._stop_prefetching()

    trainer = _trainer(tiny_dataset_root, tmp_path, path, "MODEL.WEIGHTS_FINETUNE", "True")
    with caplog.at_level(logging.WARNING, logger="agreid.engine.checkpoint"):
        trainer.resume_or_load(resume=False)
    warning = " ".join(r.getMessage() for r in caplog.records if "re-initialised" in r.getMessage())
    for key in ("classifier.weight", "classifier_proj.weight", "prompt_learner.pseudo_labels"):
        assert key in warning, key
    model = trainer.model.state_dict()
    assert torch.equal(model["backbone.visual.conv1.weight"], state["backbone.visual.conv1.weight"])
    assert model["classifier.weight"].shape[0] == state["classifier.weight"].shape[0] - 4
    trainer._stop_prefetching()


def test_resume_with_another_stage1_length_is_refused(tiny_run, tiny_dataset_root, tmp_path, capsys):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(tiny_run, out)
    code, err = train_net_in_process(["--resume", *tiny_args(tiny_dataset_root, out, "SOLVER.STAGE1.MAX_EPOCH", "3")],
                                     capsys)
    assert code == 2
    assert "SOLVER.STAGE1.MAX_EPOCH 1, the config says 3" in err and "Traceback" not in err
