"""tools/visualize_ranklist.py (agreid.cli.visualize_ranklist): query order, two models side by side,
1/0 marks and colours."""
import numpy as np
import pytest
from PIL import Image

import agreid
from _tiny_model import tiny_run
from agreid.cli import visualize_ranklist
from agreid.visualization import BORDER, MATCH_COLOR, MISMATCH_COLOR, TILE_SIZE

TILE_W, TILE_H = TILE_SIZE[0] + 2 * BORDER, TILE_SIZE[1] + 2 * BORDER
ROW_H = 14 + TILE_H + 14  # title line, tile, caption line
GAP = 16


def test_query_orders():
    ap = np.array([0.5, 0.1, 0.9, 0.3, 0.7])
    second = np.array([0.6, 0.8, 0.9, 0.2, 0.75])
    assert visualize_ranklist.choose_queries("hardest", ap, None, 3, 0) == [1, 3, 0]
    assert visualize_ranklist.choose_queries("best", ap, None, 2, 0) == [2, 4]
    assert visualize_ranklist.choose_queries("improved", ap, second, 2, 0) == [1, 0]  # gains 0.7, 0.1
    assert visualize_ranklist.choose_queries("first", ap, None, 2, 0) == [0, 1]
    assert visualize_ranklist.choose_queries("mixed", ap, None, 5, 0) == [2, 0, 1, 4, 3]  # best, middle, hardest, ...
    random = visualize_ranklist.choose_queries("random", ap, None, 3, 7)
    assert random == visualize_ranklist.choose_queries("random", ap, None, 3, 7) and len(set(random)) == 3
    with pytest.raises(ValueError, match="second-weights"):
        visualize_ranklist.choose_queries("improved", ap, None, 2, 0)


def test_two_models_side_by_side(tiny_dataset_root, tmp_path, capsys):
    _, first = tiny_run(tmp_path / "a", seed=0)
    _, second = tiny_run(tmp_path / "b", seed=1)
    out = tmp_path / "compare.png"
    root = ["DATASETS.ROOT", tiny_dataset_root]
    assert visualize_ranklist.main(["--config-file", str(tmp_path / "a" / "config.yaml"), "--output", str(out),
                                    "--num-queries", "3", "--top-k", "4", "--order", "improved", "--names", "A,B",
                                    "--second-weights", second, "MODEL.WEIGHTS", first, *root]) == 0
    assert "mean AP A" in capsys.readouterr().out
    picture = Image.open(out).convert("RGB")
    assert picture.size == (TILE_W + 2 * (GAP + 4 * TILE_W), 3 * ROW_H)

    # The frames say what the rankings say: recompute the first row of model B independently.
    cfg_a = agreid.get_agreid_cfg(str(tmp_path / "a" / "config.yaml"), ["MODEL.WEIGHTS", first, *root])
    cfg_b = agreid.get_agreid_cfg(str(tmp_path / "a" / "config.yaml"), ["MODEL.WEIGHTS", second, *root])
    ranking_a = visualize_ranklist.Ranking(cfg_a, "SyntheticOccluded", 4)
    ranking_b = visualize_ranklist.Ranking(cfg_b, "SyntheticOccluded", 4)
    query = int(np.argmax(ranking_b.ap - ranking_a.ap))
    left = TILE_W + GAP + (GAP + 4 * TILE_W)  # model B's panel
    for k, match in enumerate(ranking_b.matches[query]):
        frame = picture.getpixel((left + k * TILE_W + 1, 14 + TILE_H // 2))
        assert frame == (MATCH_COLOR if match else MISMATCH_COLOR)


def test_errors_name_the_file(tiny_dataset_root, tmp_path, capsys):
    _, first = tiny_run(tmp_path / "a")
    config = str(tmp_path / "a" / "config.yaml")
    assert visualize_ranklist.main(["--config-file", config, "--second-weights", str(tmp_path / "gone.pth"),
                                    "--output", str(tmp_path / "x.png"), "MODEL.WEIGHTS", first,
                                    "DATASETS.ROOT", tiny_dataset_root]) == 2
    assert "gone.pth" in capsys.readouterr().err
    assert visualize_ranklist.main(["--config-file", config, "--order", "improved", "--output", str(tmp_path / "x.png"),
                                    "MODEL.WEIGHTS", first, "DATASETS.ROOT", tiny_dataset_root]) == 2
    assert "second-weights" in capsys.readouterr().err
