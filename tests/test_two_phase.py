"""AG-ReID's two phases in one run, through tools/train_net.py and the trainer, on CPU."""
import json
import os
import shutil

import pytest
import torch

import _warm
import agreid
from agreid.engine import AGReIDTrainer
from agreid.serialization import load_checkpoint_file
from fastreid.config import get_cfg
from fastreid.engine.train_loop import HookBase

# Trains, exports or starts processes: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow

CONFIG = "configs/Synthetic/agreid.yml"
STAGE1_EPOCHS, STAGE2_EPOCHS = 16, 10
FAST = ["SOLVER.IMS_PER_BATCH", "16", "SOLVER.STAGE1.IMS_PER_BATCH", "16",
        "SOLVER.STAGE1.WARMUP_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.STEPS", "[100]",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.CHECKPOINT_PERIOD", "4", "SOLVER.STAGE1.CHECKPOINT_PERIOD", "4",
        "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]",
        # Random init: the tests cannot rely on a pretrained tiny CLIP being on disk.
        "MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", ""]


def _run(repo_root, args, timeout=600):
    """``python tools/train_net.py ARGS``, which must succeed, in a process forked from a warm
    interpreter (tests/_warm.py; tests/faults/conftest.py's deterministic_run is a new interpreter's)."""
    proc = _warm.run("tools/train_net.py", *args, cwd=repo_root, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _train_args(dataset_root, out, *extra):
    return ["--config-file", CONFIG, *FAST, "DATASETS.ROOT", dataset_root, "OUTPUT_DIR", str(out),
            "SOLVER.STAGE1.MAX_EPOCH", str(STAGE1_EPOCHS), "SOLVER.MAX_EPOCH", str(STAGE2_EPOCHS),
            *extra]


@pytest.fixture(scope="module")
def two_phase_run(tiny_dataset_root, tmp_path_factory):
    """One full two-phase run on the tiny synthetic set (reused by the resume tests)."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path_factory.mktemp("two_phase")
    _run(repo_root, _train_args(tiny_dataset_root, out, "TEST.EVAL_PERIOD", "4"))
    return out


def _metrics(out):
    with open(out / "metrics.json") as f:
        return [json.loads(line) for line in f if line.strip()]


def _load(path):
    return load_checkpoint_file(path)  # the project's checkpoints load with weights_only


def test_losses_go_down_in_both_phases(two_phase_run):
    rows = _metrics(two_phase_run)
    align = [r for r in rows if "loss_supcon_i2t" in r]
    guide = [r for r in rows if "loss_cls" in r]
    assert len(align) >= STAGE1_EPOCHS - 1 and len(guide) >= STAGE2_EPOCHS - 1
    assert not any("loss_cls" in r for r in align) and not any("loss_supcon_i2t" in r for r in guide)
    assert align[-1]["total_loss"] < align[0]["total_loss"] - 0.5
    assert align[-1]["loss_attr_align"] < align[0]["loss_attr_align"]
    assert guide[-1]["total_loss"] < guide[0]["total_loss"]
    assert guide[-1]["loss_triplet"] < guide[0]["loss_triplet"]


def test_log_cache_checkpoints_and_evaluation(two_phase_run):
    log = (two_phase_run / "log.txt").read_text()
    assert log.count("Stage-1 feature cache: 64 images") == 1
    assert log.index("Entering phase 'align'") < log.index("Entering phase 'guide'")
    assert "Evaluation results for SyntheticOccluded in csv format" in log
    assert list(two_phase_run.glob("events.out.tfevents.*")), "no TensorBoard events"
    stage1 = _load(two_phase_run / "model_stage1.pth")
    final = _load(two_phase_run / "model_final.pth")
    assert stage1["phase"] == {"phase": "align"} and stage1["epoch"] == STAGE1_EPOCHS - 1
    assert final["phase"] == {"phase": "guide"} and final["epoch"] == STAGE1_EPOCHS + STAGE2_EPOCHS - 1
    # Stage 2 froze the pseudo-labels and the text encoder, and trained the image encoder.
    for key in ("prompt_learner.pseudo_labels", "text_encoder.text_projection"):
        assert torch.equal(stage1["model"][key], final["model"][key]), key
    assert not torch.equal(stage1["model"]["backbone.visual.conv1.weight"], final["model"]["backbone.visual.conv1.weight"])
    assert final["model"]["text_features"].abs().sum() > 0


def test_periods_count_epochs_of_their_phase(two_phase_run):
    # SOLVER.STAGE1.CHECKPOINT_PERIOD 4 over 16 stage-1 epochs (the last one is model_stage1);
    # SOLVER.CHECKPOINT_PERIOD 4 and TEST.EVAL_PERIOD 4 over 10 stage-2 epochs, plus the end.
    names = sorted(p.name for p in two_phase_run.glob("model_*.pth"))
    assert names == ["model_0003.pth", "model_0007.pth", "model_best.pth", "model_final.pth",
                     "model_stage1.pth", "model_stage1_0003.pth", "model_stage1_0007.pth",
                     "model_stage1_0011.pth"]
    assert _load(two_phase_run / "model_stage1_0007.pth")["epoch"] == 7  # global epochs inside
    assert _load(two_phase_run / "model_0003.pth")["epoch"] == STAGE1_EPOCHS + 3
    log = (two_phase_run / "log.txt").read_text()
    evaluations = [i for i in range(len(log)) if log.startswith("Evaluation results for SyntheticOccluded", i)]
    assert len(evaluations) == 3  # after stage-2 epochs 4, 8 and 10, none in stage 1
    assert evaluations[0] > log.index("Entering phase 'guide'")
    # The periodic ones are in metrics.json (the one at the end comes after the last write).
    evaluated = [r["iteration"] for r in _metrics(two_phase_run) if "metric" in r]
    iterations_per_epoch = 4
    assert evaluated == [(STAGE1_EPOCHS + e) * iterations_per_epoch - 1 for e in (4, 8)]


def _resume(repo_root, tiny_dataset_root, two_phase_run, tmp_path, checkpoint):
    out = tmp_path / "resumed"
    shutil.copytree(two_phase_run, out)
    (out / "last_checkpoint").write_text(checkpoint)
    (out / "log.txt").unlink()
    _run(repo_root, ["--resume", *_train_args(tiny_dataset_root, out)])
    return out, (out / "log.txt").read_text()


def test_resume_in_align_phase(repo_root, tiny_dataset_root, two_phase_run, tmp_path):
    epoch = 7
    out, log = _resume(repo_root, tiny_dataset_root, two_phase_run, tmp_path, f"model_stage1_{epoch:04d}.pth")
    assert f"Starting training from epoch {epoch + 1}" in log
    assert log.index("Entering phase 'align'") < log.index("Entering phase 'guide'")
    assert "Loading optimizer from" in log
    assert _load(out / "model_final.pth")["phase"] == {"phase": "guide"}


def test_resume_in_guide_phase(repo_root, tiny_dataset_root, two_phase_run, tmp_path):
    epoch = STAGE1_EPOCHS + 3
    out, log = _resume(repo_root, tiny_dataset_root, two_phase_run, tmp_path, "model_0003.pth")
    assert f"Starting training from epoch {epoch + 1}" in log
    assert "Stage-1 feature cache" not in log  # no stage-1 work when resuming in stage 2
    assert "Entering phase 'guide'" in log
    # Global iterations continue across phases of different lengths (4 iterations an epoch here).
    iterations = [r["iteration"] for r in _metrics(out)]
    assert iterations[-1] == (STAGE1_EPOCHS + STAGE2_EPOCHS) * 4 - 1
    resumed = iterations[len(_metrics(two_phase_run)):]
    assert resumed[0] == (epoch + 1) * 4 + 3


def test_stage2_from_stage1_checkpoint_in_new_process(repo_root, tiny_dataset_root, two_phase_run, tmp_path):
    out = tmp_path / "stage2"
    _run(repo_root, _train_args(tiny_dataset_root, out, "SOLVER.STAGE1.MAX_EPOCH", "0",
                                "MODEL.WEIGHTS", str(two_phase_run / "model_stage1.pth")))
    log = (out / "log.txt").read_text()
    assert "Stage-1 feature cache" not in log and "Entering phase 'guide'" in log
    stage1 = _load(two_phase_run / "model_stage1.pth")["model"]
    final = _load(out / "model_final.pth")["model"]
    assert torch.equal(stage1["prompt_learner.pseudo_labels"], final["prompt_learner.pseudo_labels"])


class _Snapshots(HookBase):
    """Copies of the model state before training and at the end of stage 1."""

    def __init__(self, stage1_epochs):
        self.stage1_epochs, self.states = stage1_epochs, {}

    def before_train(self):
        self.states["start"] = {k: v.clone() for k, v in self.trainer.model.state_dict().items()}

    def after_epoch(self):
        if self.trainer.epoch + 1 == self.stage1_epochs:
            self.states["stage1"] = {k: v.clone() for k, v in self.trainer.model.state_dict().items()}


def _changed(a, b):
    return {k.split(".", 1)[0] for k in a if a[k].dtype.is_floating_point and not torch.equal(a[k], b[k])}


def test_cache_once_and_what_each_phase_trains(repo_root, tiny_dataset_root, tmp_path):
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.merge_from_file(os.path.join(repo_root, CONFIG))
    cfg.merge_from_list(FAST + ["DATASETS.ROOT", tiny_dataset_root, "OUTPUT_DIR", str(tmp_path),
                                "SOLVER.STAGE1.MAX_EPOCH", "3", "SOLVER.MAX_EPOCH", "2",
                                "SOLVER.STAGE1.CACHE_BATCH", "24"])
    trainer = AGReIDTrainer(cfg)
    model = trainer.model
    calls = {"encode_image": 0, "backbone_align": 0}
    encode_image, backbone_forward = model.encode_image, model.backbone.forward

    def counting_encode(batch):
        calls["encode_image"] += 1
        return encode_image(batch)

    def counting_backbone(*args, **kwargs):
        if model.training and trainer.phase == "align":
            calls["backbone_align"] += 1
        return backbone_forward(*args, **kwargs)

    model.encode_image, model.backbone.forward = counting_encode, counting_backbone
    snapshots = _Snapshots(3)
    trainer.register_hooks([snapshots])
    trainer.train()
    assert calls == {"encode_image": 3, "backbone_align": 0}  # ceil(64 / 24) batches, once
    start, stage1, final = snapshots.states["start"], snapshots.states["stage1"], model.state_dict()
    assert _changed(start, stage1) == {"prompt_learner", "heads"}
    assert _changed(stage1, final) == {"backbone", "bnneck", "bnneck_proj", "classifier",
                                       "classifier_proj", "text_features"}
    assert torch.equal(start["bnneck.bias"], final["bnneck.bias"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CPU (gloo) multi-process path")
@pytest.mark.parametrize("launcher", ["num_gpus", "torchrun"])
def test_two_processes_both_phases(repo_root, tiny_dataset_root, tmp_path, launcher):
    out = tmp_path / launcher
    args = _train_args(tiny_dataset_root, out, "SOLVER.STAGE1.MAX_EPOCH", "2", "SOLVER.MAX_EPOCH", "2")
    # The launcher is forked from a warm interpreter (tests/_warm.py); the two ranks it starts are
    # new interpreters, as for the user.
    if launcher == "num_gpus":
        proc = _warm.run("tools/train_net.py", "--num-gpus", "2", "--dist-url", "auto", *args, cwd=repo_root)
    else:  # python -m torch.distributed.run ...
        proc = _warm.run("torch.distributed.run", "--nproc_per_node", "2", "--standalone", "tools/train_net.py",
                         *args, cwd=repo_root, module=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log
    assert "Entering phase 'guide'" in log and "Evaluation results" in log
    assert _load(out / "model_final.pth")["phase"] == {"phase": "guide"}


def test_pseudo_label_probe_runs_on_a_trained_checkpoint(repo_root, tiny_dataset_root, two_phase_run):
    proc = _warm.run(
        "tools/probe_pseudo_labels.py", "--config-file", str(two_phase_run / "config.yaml"),
        "--folds", "2", "MODEL.WEIGHTS", str(two_phase_run / "model_final.pth"),
        "DATASETS.ROOT", tiny_dataset_root, cwd=repo_root, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "16 training identities" in out
    for attribute in ("upper_color", "lower_length", "bag", "hat", "hair_color"):
        assert f"| {attribute}" in out
    assert "| occluded" in out and "| whole" in out


def test_rank_list_picture(repo_root, tiny_dataset_root, two_phase_run, tmp_path):
    from PIL import Image

    out = tmp_path / "ranklist.png"
    proc = _warm.run(
        "tools/visualize_ranklist.py", "--config-file", str(two_phase_run / "config.yaml"),
        "--output", str(out), "--num-queries", "3", "--top-k", "5",
        "MODEL.WEIGHTS", str(two_phase_run / "model_final.pth"), "DATASETS.ROOT", tiny_dataset_root,
        cwd=repo_root, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    width, height = Image.open(out).size
    # query + gap + 5 matches; 3 rows of title line, tile and 1/0 caption line
    assert width == 6 * (64 + 8) + 16 and height == 3 * (14 + 128 + 8 + 14)
