"""fastreid model-zoo configs and tools/compare_zoo.py (agreid.experiments.compare_zoo) on the tiny synthetic data."""
import glob
import os

import pytest
import torch
from fastreid.modeling import build_model
from fastreid.utils.checkpoint import Checkpointer

import agreid
from _tiny_model import REPO, SIZE, tiny_run
from agreid.engine import AGReIDTrainer
from agreid.experiments import compare_zoo as tool

ZOO = sorted(glob.glob(os.path.join(REPO, "configs", "*", "bagtricks_*.yml"))
             + glob.glob(os.path.join(REPO, "configs", "*", "AGW_R50.yml")))
SMALL = ["MODEL.BACKBONE.PRETRAIN", "", "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", *SIZE]


def test_every_dataset_has_the_three_zoo_configs():
    folders = {os.path.basename(os.path.dirname(p)) for p in ZOO}
    assert folders >= {"Market1501", "DukeMTMC", "MSMT17", "OccDuke", "PDuke", "OccREID"}
    assert len(ZOO) == 3 * len(folders)
    for path in ZOO:
        cfg = agreid.get_agreid_cfg(path)
        assert cfg.MODEL.META_ARCHITECTURE == "Baseline" and cfg.SOLVER.STAGE1.MAX_EPOCH == 0
        assert cfg.OUTPUT_DIR.endswith(os.path.splitext(os.path.basename(path))[0])


@pytest.mark.parametrize("name", ["bagtricks_R50", "AGW_R50", "bagtricks_vit"])
def test_zoo_models_build_and_give_features(name):
    cfg = agreid.get_agreid_cfg(os.path.join(REPO, "configs", "OccDuke", f"{name}.yml"),
                                [*SMALL, "MODEL.HEADS.NUM_CLASSES", "7"])
    model = build_model(cfg).eval()
    if name == "AGW_R50":
        assert any(type(m).__name__ == "Non_local" for m in model.modules())
        assert type(model.heads.pool_layer).__name__ == "GeneralizedMeanPooling"
    with torch.no_grad():
        features = model({"images": torch.rand(2, 3, 64, 32) * 255})
    assert features.shape == (2, cfg.MODEL.BACKBONE.FEAT_DIM)


def test_compare_zoo_one_table(tiny_dataset_root, tmp_path, capsys):
    # A fastreid BoT checkpoint (ResNet-18 to stay small) beside this project's model.
    root = ["DATASETS.ROOT", tiny_dataset_root]
    bot_config = os.path.join(REPO, "configs", "OccDuke", "bagtricks_R50.yml")
    small_bot = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512"]
    cfg = agreid.get_agreid_cfg(bot_config, [*SMALL, *small_bot, "MODEL.HEADS.NUM_CLASSES", "16", *root,
                                             "DATASETS.TESTS", '("SyntheticOccluded",)'])
    torch.manual_seed(0)
    Checkpointer(build_model(cfg), str(tmp_path)).save("bot")
    bot = str(tmp_path / "bot.pth")
    _, ours = tiny_run(tmp_path / "agreid")
    table = tmp_path / "zoo.md"
    assert tool.main(["--dataset", "SyntheticOccluded", "--config", bot_config, "--weights", bot,
                      "--config", str(tmp_path / "agreid" / "config.yaml"), "--weights", ours,
                      "--names", "BoT,AG-ReID", "--markdown", str(table),
                      *SMALL, *small_bot, *root]) == 0
    printed = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(printed) if line.startswith("| model"))
    lines = [line for line in printed[header + 2:] if line.startswith("| ")]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in lines)}
    assert set(rows) == {"BoT", "AG-ReID"}
    assert rows["BoT"][4] == "512" and rows["AG-ReID"][4] == "192"
    for values in rows.values():
        assert all(0 <= float(v) <= 100 for v in values[:4]) and float(values[5]) > 0
    # The same numbers as the evaluation of tools/train_net.py --eval-only.
    eval_cfg = agreid.get_agreid_cfg(str(tmp_path / "agreid" / "config.yaml"),
                                     [*SMALL, *root, "MODEL.WEIGHTS", ours, "DATASETS.TESTS", '("SyntheticOccluded",)'])
    results = AGReIDTrainer.test(eval_cfg, AGReIDTrainer.build_trained_model(eval_cfg))
    results = results.get("SyntheticOccluded", results)
    assert float(rows["AG-ReID"][0]) == pytest.approx(results["mAP"], abs=0.05)
    assert float(rows["AG-ReID"][1]) == pytest.approx(results["Rank-1"], abs=0.05)
    assert "| BoT" in table.read_text()

    assert tool.main(["--config", bot_config, "--weights", str(tmp_path / "zoo_missing.pth"), *SMALL]) == 2
    assert "zoo_missing.pth" in capsys.readouterr().err
    assert tool.main(["--config", bot_config, "--weights", bot, "--weights", ours]) == 2
    assert "pairs" in capsys.readouterr().err
