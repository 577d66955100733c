"""agreid.analysis.text_features and tools/diagnose_text_features.py on a tiny trained run.

The run (one epoch per phase on the tiny synthetic dataset, random init, 64x32 images) is trained
once per session; every number the diagnostics give is recomputed here directly from the model,
the images and attributes.json.
"""
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import agreid  # noqa: F401  (patches fastreid)
from agreid.analysis import GroundTruthMissingError, load_run
from agreid.analysis import text_features as tf
from agreid.analysis import diagnose_text_features as diagnose_text_features_tool

# Trains, exports or starts processes: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow

# Small images and batches, one epoch per phase: seconds on a CPU (as tests/faults' tiny_run).


@pytest.fixture(scope="session")
def trained_run(tiny_run):
    """The shared tiny AG-ReID run (tests/conftest.py): model_stage1.pth, model_final.pth, log.txt."""
    return tiny_run


@pytest.fixture(scope="session")
def final_run(trained_run):
    """The tiny run's final checkpoint, read with the paper's raw L_CE (the synthetic configs train
    with cosine logits; the checkpoint is the same, only the diagnosed loss differs)."""
    return load_run(str(trained_run), name="final", opts=["MODEL.LOSSES.I2T.FORM", "raw"])


@pytest.fixture(scope="module")
def final_direct(final_run, tiny_dataset_root):
    """:func:`direct_training_features` of the final run (seconds of image-by-image forwards, once)."""
    return direct_training_features(final_run, tiny_dataset_root)


@pytest.fixture(scope="module")
def tool():
    """The module behind tools/diagnose_text_features.py: its main(argv) runs in this process."""
    return diagnose_text_features_tool


def run_tool(tool, capsys, *args):
    """``(exit status, stdout, stderr)`` of the tool."""
    status = tool.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


# ------------------------------------------------------------------------- direct computations
def direct_training_features(run, dataset_root):
    """f_proj of every training image with its SIE row, and its identity, computed image by image."""
    from fastreid.data.data_utils import read_image
    from fastreid.data.datasets import DATASET_REGISTRY

    from agreid.data.transforms import build_agreid_transforms
    from agreid.engine.trainer import natural_key

    data = DATASET_REGISTRY.get("SyntheticOccluded")(root=dataset_root)
    pids = sorted({pid for _, pid, _ in data.train})  # fastreid's CommDataset relabelling
    cams = sorted({cam for _, _, cam in data.train}, key=natural_key)
    transform = build_agreid_transforms(run.cfg, is_train=False)
    features, targets = [], []
    with torch.no_grad():
        for path, pid, cam in data.train:
            images = transform(read_image(path))[None]
            out = run.model.backbone(run.model.preprocess_image({"images": images}), torch.tensor([cams.index(cam)]))
            features.append(out.proj[0].double())
            targets.append(pids.index(pid))
    return torch.stack(features), torch.tensor(targets), pids


def smoothed_ce(logits, targets, eps):
    """Label-smoothed cross-entropy written out: (1-eps) on the true class, eps/(K-1) on each other."""
    log_p = torch.log_softmax(logits.double(), dim=1)
    k = logits.shape[1]
    weights = torch.full_like(log_p, eps / (k - 1))
    weights[torch.arange(len(targets)), targets] = 1 - eps
    return float(-(weights * log_p).sum(dim=1).mean())


def attributes_of(pids, dataset_root):
    with open(os.path.join(dataset_root, "SyntheticOccluded", "attributes.json")) as f:
        identities = json.load(f)["identities"]
    return [identities[f"{int(pid.rsplit('_', 1)[1]):04d}"] for pid in pids]


# ------------------------------------------------------------------------------------ unit tests
def test_hard_pairs_need_all_three_visible_attributes():
    people = [{"upper_color": "red", "lower_color": "blue", "shoes": "black", "hat": "cap"},
              {"upper_color": "red", "lower_color": "blue", "shoes": "black", "hat": "none"},
              {"upper_color": "red", "lower_color": "blue", "shoes": "white", "hat": "cap"}]
    pairs = tf.hard_pairs(people)
    assert pairs.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    assert tf.VISIBLE_ATTRIBUTES == ("upper_color", "lower_color", "shoes")


def test_rescaled_sets_the_mean_norm_and_keeps_directions():
    table = torch.randn(5, 8) * torch.arange(1, 6).float()[:, None]
    scaled = tf.rescaled(table, 3.0)
    assert tf.mean_text_norm(scaled) == pytest.approx(3.0, rel=1e-6)
    assert torch.allclose(F.normalize(scaled, dim=1), F.normalize(table, dim=1), atol=1e-6)
    with pytest.raises(ValueError):
        tf.rescaled(table, 0.0)


# ------------------------------------------------------------------------------- on a trained run
def test_numbers_match_direct_computation(final_run, final_direct, tiny_dataset_root):
    result = tf.diagnose_run(final_run)
    table = final_run.model.text_features.detach().double()
    assert result["T_source"] == "checkpoint"
    assert result["T_norm"] == pytest.approx(float(table.norm(dim=1).mean()), rel=1e-6)

    features, targets, pids = final_direct
    assert result["num_ids"] == len(pids) == table.shape[0]
    assert result["num_images"] == len(targets)
    assert result["f_norm"] == pytest.approx(float(features.norm(dim=1).mean()), rel=1e-4)
    logits = features @ table.t()
    assert result["top1"] == pytest.approx(float((logits.argmax(dim=1) == targets).double().mean()))
    eps = final_run.cfg.MODEL.LOSSES.CE.EPSILON
    assert result["lce_eps"] == eps
    assert result["lce"] == pytest.approx(smoothed_ce(logits, targets, eps), rel=1e-4)

    cos = F.normalize(table, dim=1) @ F.normalize(table, dim=1).t()
    k = len(pids)
    all_pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    assert result["cos_all"] == pytest.approx(float(np.mean([cos[i, j] for i, j in all_pairs])), rel=1e-6)
    people = attributes_of(pids, tiny_dataset_root)
    hard = [(i, j) for i, j in all_pairs
            if all(people[i][a] == people[j][a] for a in ("upper_color", "lower_color", "shoes"))]
    assert result["hard_pairs"] == len(hard) > 0  # the tiny preset has some (its generator twins)
    assert result["cos_hard"] == pytest.approx(float(np.mean([cos[i, j] for i, j in hard])), rel=1e-6)


def test_rescaled_loss(final_run, final_direct):
    own = tf.mean_text_norm(final_run.model.text_features)
    same = tf.diagnose_run(final_run, reference_norm=own)
    assert same["lce_rescaled"] == pytest.approx(same["lce"], rel=1e-5)

    doubled = tf.diagnose_run(final_run, reference_norm=2 * own)
    features, targets, _ = final_direct
    logits = 2 * features @ final_run.model.text_features.detach().double().t()
    eps = final_run.cfg.MODEL.LOSSES.CE.EPSILON
    assert doubled["lce_rescaled"] == pytest.approx(smoothed_ce(logits, targets, eps), rel=1e-4)
    assert doubled["lce"] == pytest.approx(same["lce"], rel=1e-6)  # the trained loss does not move
    assert doubled["top1"] == same["top1"]


def test_stage1_checkpoint_builds_the_table(trained_run, final_run):
    stage1 = load_run(str(trained_run / "model_stage1.pth"))
    assert bool((stage1.model.text_features == 0).all())  # saved before stage 2 filled it
    table, source = tf.text_features_of(stage1.model)
    assert source == "built"
    # V and the text encoder are frozen in stage 2: the same table stage 2 trained with.
    assert torch.allclose(table, final_run.model.text_features.float(), atol=1e-5)
    assert stage1.name == f"{trained_run.name}/model_stage1"


# ----------------------------------------------------------------------------------------- tool
def test_tool_compares_runs_against_a_baseline(tool, capsys, trained_run, tmp_path):
    output = tmp_path / "out" / "tf.json"
    status, out, err = run_tool(tool, capsys, "--runs", trained_run, trained_run / "model_stage1.pth",
                                "--names", "final,stage1", "--baseline", trained_run / "model_stage1.pth",
                                "--output", output)
    assert status == 0, err[-3000:]
    rows = [line for line in out.splitlines() if line.startswith("| final ") or line.startswith("| stage1 ")]
    assert len(rows) == 2
    payload = json.loads(output.read_text())
    final, stage1 = payload["runs"]
    assert final["name"] == "final" and stage1["name"] == "stage1"
    assert payload["reference_norm"] == pytest.approx(stage1["T_norm"], rel=1e-6)
    # The baseline rescaled to its own norm: its loss as is.
    assert stage1["lce_rescaled"] == pytest.approx(stage1["lce"], rel=1e-5)
    assert final["T_norm"] == pytest.approx(stage1["T_norm"], rel=1e-5)
    assert f"L_CE at mean ‖T‖ = {payload['reference_norm']:.3f}" in out


def test_tool_refuses_a_missing_run(tool, capsys, tmp_path):
    status, out, err = run_tool(tool, capsys, "--runs", tmp_path / "nowhere", "--output", tmp_path / "x.json")
    assert status == 2 and out == ""
    assert err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "nowhere" in err
    assert not (tmp_path / "x.json").exists()


def test_tool_refuses_a_dataset_without_attributes(tool, capsys, trained_run, tiny_dataset_root, tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(tiny_dataset_root, root)
    os.remove(root / "SyntheticOccluded" / "attributes.json")
    status, out, err = run_tool(tool, capsys, "--runs", trained_run, "--dataset-root", root,
                                "--output", tmp_path / "x.json")
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "attributes.json" in lines[0]


def test_library_raises_ground_truth_missing(trained_run, tiny_dataset_root, tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(tiny_dataset_root, root)
    os.remove(root / "SyntheticOccluded" / "attributes.json")
    run = load_run(str(trained_run), opts=["DATASETS.ROOT", str(root)])
    with pytest.raises(GroundTruthMissingError, match="attributes.json"):
        tf.diagnose_run(run)


def test_cosine_logits_do_not_feel_the_rescaling(trained_run, final_run, final_direct):
    """With MODEL.LOSSES.I2T.FORM cosine, L_CE is the model's cosine loss and no rescaling moves it."""
    if "FORM" not in agreid.get_agreid_cfg().MODEL.LOSSES.I2T:
        pytest.skip("this version has no cosine L_CE")
    run = load_run(str(trained_run), opts=["MODEL.LOSSES.I2T.FORM", "cosine", "MODEL.LOSSES.I2T.LOGIT_SCALE", "30.0"])
    own = tf.mean_text_norm(run.model.text_features)
    result = tf.diagnose_run(run, reference_norm=3 * own)
    assert result["i2t_form"] == "cosine"
    assert result["lce_rescaled"] == pytest.approx(result["lce"], rel=1e-5)
    # The same checkpoint and input size: the image features computed directly for the final run
    # are this run's too (only the loss differs).
    backbone, final_backbone = run.model.backbone.state_dict(), final_run.model.backbone.state_dict()
    assert all(torch.equal(value, final_backbone[key]) for key, value in backbone.items())
    assert run.cfg.INPUT == final_run.cfg.INPUT
    assert (run.cfg.MODEL.PIXEL_MEAN, run.cfg.MODEL.PIXEL_STD) == (final_run.cfg.MODEL.PIXEL_MEAN,
                                                               final_run.cfg.MODEL.PIXEL_STD)
    features, targets, _ = final_direct
    table = run.model.text_features.detach().double()
    logits = 30 * F.normalize(features, dim=1) @ F.normalize(table, dim=1).t()
    assert result["lce"] == pytest.approx(smoothed_ce(logits, targets, run.cfg.MODEL.LOSSES.CE.EPSILON), rel=1e-4)
