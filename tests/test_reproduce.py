"""tools/reproduce_paper.py (agreid.experiments.reproduce): configs parse, missing datasets and
weights are named, batch per GPU, the paper's numbers, a run with a stand-in for train_net.py."""
import json
import os

import pytest
from PIL import Image

from agreid.experiments import common, paper, reproduce

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_occluded_duke(root):
    """Occluded_Duke with two identities in two cameras per split (enough for the loader)."""
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        folder = root / "Occluded_Duke" / split
        folder.mkdir(parents=True)
        for pid, cam in ((1, 1), (1, 2), (2, 1), (2, 2)):
            Image.new("RGB", (32, 64), (pid * 60, cam * 60, 90)).save(folder / f"{pid:04d}_c{cam}_f{pid * 10 + cam:07d}.jpg")


def test_every_config_exists_and_every_table_is_covered():
    assert {e.table for e in reproduce.EXPERIMENTS.values()} == {2, 3, 4, 5, 6}
    for name, experiment in reproduce.EXPERIMENTS.items():
        assert os.path.isfile(os.path.join(REPO, experiment.config)), name
        assert experiment.paper is None or len(experiment.paper) in (2, 4)


def test_dry_run_names_every_missing_dataset_and_the_weights(tmp_path, capsys):
    weights = tmp_path / "ViT-B-16.pt"
    code = reproduce.main(["--datasets", str(tmp_path), "--weights", str(weights), "--num-gpus", "2", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"CLIP weights {weights} do not exist" in err
    for dataset in ("OccludedDuke", "OccludedREID", "PartialDuke", "Market1501", "DukeMTMC", "MSMT17"):
        assert f"dataset {dataset}:" in err, dataset
    assert str(tmp_path / "Occluded_Duke") in err and "MSMT17_V2/" in err
    # Every experiment is listed with its command; identical configs are trained once.
    assert "27 experiments, 2 GPU(s) each" in out
    assert "t4_at_ap: same config as occduke_agreid" in out and "t6_otsu: same config as occduke_agreid" in out
    assert "--config-file configs/OccDuke/ablations/threshold_p90.yml --num-gpus 2" in out
    assert f"MODEL.BACKBONE.PRETRAIN_PATH {weights} DATASETS.ROOT {tmp_path}" in out


def test_dry_run_passes_with_the_data_and_prints_the_batch_per_gpu(tmp_path, capsys):
    import agreid

    _fake_occluded_duke(tmp_path)
    weights = tmp_path / "ViT-B-16.pt"
    weights.write_bytes(b"not read by a dry run")
    code = reproduce.main(["--datasets", str(tmp_path), "--weights", str(weights), "--num-gpus", "2",
                           "--only", "occduke_agreid,occduke_clipreid,t4_at", "--tables", "2,4", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "3 experiments" in out and "everything is in place" in out and err == ""
    cfg = agreid.get_agreid_cfg(os.path.join(REPO, "configs/OccDuke/agreid.yml"))
    per_gpu = (f"stage 1 {cfg.SOLVER.STAGE1.IMS_PER_BATCH // 2}, stage 2 {cfg.SOLVER.IMS_PER_BATCH // 2} images per GPU "
               f"(of {cfg.SOLVER.STAGE1.IMS_PER_BATCH} / {cfg.SOLVER.IMS_PER_BATCH})")
    assert f"occduke_agreid [train] {per_gpu}" in out
    # An experiment with a checkpoint resumes.
    (tmp_path / "out" / "t4_at").mkdir(parents=True)
    (tmp_path / "out" / "t4_at" / "last_checkpoint").write_text("model_0000010.pth")
    reproduce.main(["--datasets", str(tmp_path), "--weights", str(weights), "--only", "t4_at", "--tables", "4",
                    "--output", str(tmp_path / "out"), "--dry-run"])
    out, _ = capsys.readouterr()
    assert "t4_at [resume]" in out and "--resume" in out


def test_dry_run_rejects_a_batch_that_does_not_split_over_the_gpus(tmp_path, capsys):
    _fake_occluded_duke(tmp_path)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    code = reproduce.main(["--datasets", str(tmp_path), "--weights", str(weights), "--num-gpus", "3",
                           "--only", "occduke_agreid", "--dry-run", "SOLVER.IMS_PER_BATCH", "64"])
    err = capsys.readouterr().err
    assert code == 1
    assert "configs/OccDuke/agreid.yml: SOLVER.IMS_PER_BATCH 64 is not divisible by --num-gpus 3" in err


def test_bad_selection_is_named():
    with pytest.raises(SystemExit, match="unknown experiment 'occduke'"):
        reproduce.main(["--only", "occduke", "--dry-run"])
    with pytest.raises(SystemExit, match="tables 2-6 only"):
        reproduce.main(["--tables", "1,2", "--dry-run"])


def test_summary_puts_the_paper_beside_the_measurement(tmp_path):
    out = tmp_path / "out"
    for name, mAP in (("occduke_agreid", 61.0), ("occreid_clipreid", 80.0)):
        (out / name).mkdir(parents=True)
        (out / name / "reproduce_result.json").write_text(json.dumps(
            {"metrics": {"mAP": mAP, "Rank-1": 70.0, "Rank-5": 80.0, "Rank-10": 85.0}}))
    assert reproduce.main(["--output", str(out), "--collect-only"]) == 0
    text = (out / "summary.md").read_text()
    assert ("| 2 | AG-ReID, Occ-Duke | `configs/OccDuke/agreid.yml` | OccludedDuke | 61.0 | 70.0 | 80.0 | 85.0 "
            "| 63.2 / 70.4 | -2.2 |") in text
    assert "| 80.0 | 70.0 | 80.0 | 85.0 | – (not in the paper) | – |" in text
    assert "MSMT17" not in text


def test_the_papers_numbers_come_from_one_place():
    experiments = reproduce.EXPERIMENTS
    assert list(experiments)[12:] == ["t4_baseline", "t4_at", "t4_ap", "t4_at_ap", "t5_default", "t5_longer",
                                      "t5_random", "t5_a", "t5_b", "t5_c", "t5_d", "t6_p50", "t6_p75", "t6_p90",
                                      "t6_otsu"]
    assert experiments["occduke_agreid"].paper == paper.TABLE2["OccludedDuke"]["AG-ReID"] == (63.2, 70.4)
    assert experiments["occreid_clipreid"].paper is None
    assert experiments["market1501_clipreid"].paper == (90.5, 95.4)
    assert experiments["t4_baseline"].paper == paper.TABLE4["baseline"][1] == (60.0, 67.8, 80.1, 85.2)
    assert experiments["t5_c"] == reproduce.Experiment(5, "Attribute Prompt c", "configs/OccDuke/ablations/template_c.yml",
                                                       "OccludedDuke", (62.8, 69.9, 82.6, 86.1))
    assert experiments["t6_otsu"].row == "Otsu" and experiments["t6_otsu"].paper == paper.TABLE6["otsu"][1]


LOG = """[12/01 07:56:03 fastreid.evaluation.testing]: Evaluation results in csv format:
| Dataset      | Rank-1 | Rank-5 | Rank-10 | mAP  | mINP |
|:-------------|:-------|:-------|:--------|:-----|:-----|
| OccludedDuke | 2.00   | 3.00   | 4.00    | 5.00 | 6.00 |
[12/01 07:58:03 fastreid.engine.defaults]: done
"""


def test_a_run_trains_once_per_config_and_shares(tmp_path, capsys, monkeypatch):
    """train_net.py replaced by a stand-in that writes the evaluation: identical configs (table 4's
    AG-ReID row, table 6's Otsu) train once; a record without a fingerprint (an older
    reproduce_paper.py) counts as done."""
    _fake_occluded_duke(tmp_path)
    weights = tmp_path / "ViT-B-16.pt"
    weights.write_bytes(b"x")
    out = tmp_path / "out"
    (out / "t4_at").mkdir(parents=True)
    (out / "t4_at" / "last_checkpoint").write_text("model_0000010.pth")
    (out / "occduke_clipreid").mkdir()
    (out / "occduke_clipreid" / "reproduce_result.json").write_text(json.dumps(
        {"experiment": "occduke_clipreid", "metrics": {"mAP": 50.0, "Rank-1": 60.0}}))
    trained = []

    def train(cmd, log_path, cwd=common.REPO, env=None):
        trained.append(cmd[cmd.index("OUTPUT_DIR") + 1])
        folder = os.path.dirname(log_path)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "log.txt"), "w") as f:
            f.write(LOG)
        return 0

    monkeypatch.setattr(common, "run_logged", train)
    monkeypatch.setattr(common, "machine", lambda: {"cpu_count": 2})
    code = reproduce.main(["--datasets", str(tmp_path), "--weights", str(weights), "--output", str(out),
                           "--only", "occduke_clipreid,occduke_agreid,t4_at,t4_at_ap,t6_otsu", "--tables", "2,4,6"])
    printed = capsys.readouterr().out
    assert code == 0
    assert trained == [str(out / "occduke_agreid"), str(out / "t4_at")]
    assert "occduke_clipreid: done (50.00 mAP), skipped" in printed
    assert "t4_at: resume: " in printed and "t6_otsu: same config as occduke_agreid, result shared" in printed
    record = json.loads((out / "t4_at" / "reproduce_result.json").read_text())
    assert record["resumed"] is True and "--resume" in record["command"]
    assert record["metrics"]["mAP"] == 5.0 and record["paper"] == [62.4, 69.7, 81.7, 86.2]
    assert record["experiment"] == "t4_at" and record["config"] == "configs/OccDuke/ablations/at_only.yml"
    assert record["num_gpus"] == 1 and record["output_dir"] == str(out / "t4_at") and len(record["fingerprint"]) == 16
    shared = json.loads((out / "t6_otsu" / "reproduce_result.json").read_text())
    source = json.loads((out / "occduke_agreid" / "reproduce_result.json").read_text())
    assert shared["same_as"] == "occduke_agreid" and shared["experiment"] == "t6_otsu"
    assert shared["paper"] == [63.2, 70.4, 82.4, 86.4] and shared["fingerprint"] == source["fingerprint"]
    assert shared["metrics"] == source["metrics"] and shared["command"] == source["command"]
    summary = (out / "summary.md").read_text()
    assert "| 6 | Otsu | `configs/OccDuke/ablations/threshold_otsu.yml` | OccludedDuke | 5.0 | 2.0 | 3.0 | 4.0 " in summary
    assert "| 2 | CLIP-ReID, Occ-Duke | `configs/OccDuke/clipreid.yml` | OccludedDuke | 50.0 | 60.0 |  |  " in summary
