"""agreid.analysis.occlusion and tools/occlusion_breakdown.py on a tiny trained run.

The run (one epoch per phase on the tiny synthetic dataset, random init, 64x32 images) is trained
once per session; its breakdown is checked against the trainer's own evaluation, the numbers the
training log printed, and occlusion.json.
"""
import json
import os
import shutil

import numpy as np
import pytest

import agreid  # noqa: F401  (patches fastreid)
from agreid.analysis import GroundTruthMissingError, load_run
from agreid.analysis import occlusion as occ
from agreid.analysis import occlusion_breakdown as occlusion_breakdown_tool

# Trains, exports or starts processes: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow

# Small images and batches, one epoch per phase: seconds on a CPU (as tests/faults' tiny_run).
PARTITIONS = ("all", "occlusion", "occluder", "region", "fraction")


@pytest.fixture(scope="session")
def trained_run(tiny_run):
    """The shared tiny AG-ReID run (tests/conftest.py): model_stage1.pth, model_final.pth, log.txt."""
    return tiny_run


@pytest.fixture(scope="session")
def run(trained_run):
    return load_run(str(trained_run), name="tiny")


@pytest.fixture(scope="session")
def result(run):
    return occ.breakdown_runs([run])


@pytest.fixture(scope="module")
def tool():
    """The module behind tools/occlusion_breakdown.py: its main(argv) runs in this process."""
    return occlusion_breakdown_tool


def run_tool(tool, capsys, *args):
    """``(exit status, stdout, stderr)`` of the tool."""
    status = tool.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def query_records(tiny_dataset_root):
    """occlusion.json's records of the queries, in the evaluation's query order."""
    from fastreid.data.datasets import DATASET_REGISTRY

    data = DATASET_REGISTRY.get("SyntheticOccluded")(root=tiny_dataset_root)
    with open(os.path.join(data.dataset_dir, "occlusion.json")) as f:
        occlusion = json.load(f)
    return [occlusion["query/" + os.path.basename(path)] for path, _, _ in data.query]


# ------------------------------------------------------------------------------------ unit tests
RECORDS = [
    {"occluder": "none", "fraction": 0.0, "regions": [], "region_fractions": {r: 0.0 for r in occ.BODY_REGIONS}},
    {"occluder": "pole", "fraction": 0.25, "regions": [],
     "region_fractions": {"head": 0.3, "upper": 0.3, "lower": 0.1, "feet": 0.0}},
    {"occluder": "car", "fraction": 0.6, "regions": ["lower", "feet"],
     "region_fractions": {"head": 0.0, "upper": 0.2, "lower": 0.7, "feet": 0.9}},
    {"occluder": "board", "fraction": 1.0, "regions": ["head", "upper", "lower", "feet"],
     "region_fractions": {"head": 1.0, "upper": 1.0, "lower": 1.0, "feet": 1.0}},
]


def test_categories_of_hand_made_records():
    groups = occ.query_breakdowns(RECORDS)
    members = {name: {c: idx.tolist() for c, idx in cats.items() if idx.size} for name, cats in groups.items()}
    assert members["occlusion"] == {"whole": [0], "occluded": [1, 2, 3]}
    assert members["occluder"] == {"none": [0], "pole": [1], "car": [2], "board": [3]}
    # Ties go to the first region in head, upper, lower, feet order.
    assert members["region"] == {"none": [0], "head": [1, 3], "feet": [2]}
    assert members["hidden regions"] == {"head": [3], "upper": [3], "lower": [2, 3], "feet": [2, 3],
                                         occ.NO_REGION: [0, 1]}
    # Bins are [low, high), the last one closed; whole queries have their own category.
    assert members["fraction"] == {"whole (0%)": [0], "25-50%": [1], "50-75%": [2], "75-100%": [3]}
    assert list(groups["fraction"]) == ["whole (0%)", "0-25%", "25-50%", "50-75%", "75-100%"]
    assert list(occ.query_breakdowns(RECORDS, bins=[0, 0.5, 1])["fraction"])[1:] == ["0-50%", "50-100%"]


def test_bins_must_run_from_0_to_1():
    for bad in ([0, 0.5], [0.1, 1], [0, 0.6, 0.5, 1], [0]):
        with pytest.raises(ValueError):
            occ.check_bins(bad)


# ------------------------------------------------------------------------------- on a trained run
def test_all_queries_equal_the_evaluation(run, result, trained_run):
    from agreid.engine import AGReIDTrainer

    direct = AGReIDTrainer.test(run.cfg, run.model)  # what training's evaluation hook runs
    overall = result["breakdowns"]["all"]["categories"]["all queries"]
    assert overall["queries"] == result["queries"] == 16
    assert overall["runs"]["tiny"]["mAP"] == pytest.approx(direct["mAP"], abs=1e-9)
    assert overall["runs"]["tiny"]["Rank-1"] == pytest.approx(direct["Rank-1"], abs=1e-9)
    # ... and the numbers the run reported in its log (printed with two decimals).
    log = (trained_run / "log.txt").read_text()
    header, _, values = [line.split("]: ", 1)[-1] for line in log.splitlines()
                         if "| Dataset" in line or "| SyntheticOccluded" in line or ":---" in line][-3:]
    names = [c.strip() for c in header.strip("| ").split("|")]
    reported = dict(zip(names, [c.strip() for c in values.strip("| ").split("|")]))
    assert f"{overall['runs']['tiny']['mAP']:.2f}" == reported["mAP"]
    assert f"{overall['runs']['tiny']['Rank-1']:.2f}" == reported["Rank-1"]


def test_subsets_partition_the_queries(result, tiny_dataset_root):
    records = query_records(tiny_dataset_root)
    total = len(records)
    groups = occ.query_breakdowns(records)
    for name in PARTITIONS[1:]:
        indices = np.concatenate(list(groups[name].values()))
        assert sorted(indices.tolist()) == list(range(total)), name
        counts = {c: s["queries"] for c, s in result["breakdowns"][name]["categories"].items()}
        assert counts == {c: idx.size for c, idx in groups[name].items()}
    assert result["breakdowns"]["hidden regions"]["overlapping"]
    assert sum(s["queries"] for s in result["breakdowns"]["hidden regions"]["categories"].values()) >= total
    # The tiny preset: every query occluded, so "whole" is empty.
    occlusion = result["breakdowns"]["occlusion"]["categories"]
    assert occlusion["whole"]["queries"] == 0 and occlusion["whole"]["runs"]["tiny"]["mAP"] is None
    assert occlusion["occluded"]["queries"] == total


def test_subsets_are_shares_of_the_full_evaluation(result):
    """mAP and Rank-1 are means over queries: a partition's valid-weighted mean is the overall value."""
    overall = result["breakdowns"]["all"]["categories"]["all queries"]
    for name in PARTITIONS[1:]:
        categories = [s for s in result["breakdowns"][name]["categories"].values() if s["valid"]]
        assert sum(s["valid"] for s in categories) == overall["valid"]
        for metric in occ.METRICS:
            mean = sum(s["valid"] * s["runs"]["tiny"][metric] for s in categories) / overall["valid"]
            assert mean == pytest.approx(overall["runs"]["tiny"][metric], abs=1e-5), (name, metric)  # float32 sums


def test_occluder_types_match_occlusion_json(result, tiny_dataset_root):
    records = query_records(tiny_dataset_root)
    for category, slot in result["breakdowns"]["occluder"]["categories"].items():
        assert slot["queries"] == sum(r["occluder"] == category for r in records)


# ----------------------------------------------------------------------------------------- tool
def test_tool_writes_table_numbers_and_plot(tool, capsys, trained_run, tmp_path):
    status, out, err = run_tool(tool, capsys, "--runs", trained_run, trained_run / "model_final.pth",
                                "--names", "first,second", "--output", tmp_path / "out")
    assert status == 0, err[-3000:]
    figure = tmp_path / "out" / "occlusion_breakdown.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    assert "| first mAP | first Rank-1 | second mAP | second Rank-1 |" in out
    assert (tmp_path / "out" / "occlusion_breakdown.md").read_text(encoding="utf-8").count("\n| ") >= 20
    saved = json.loads((tmp_path / "out" / "occlusion_breakdown.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in saved["runs"]] == ["first", "second"]
    overall = saved["breakdowns"]["all"]["categories"]["all queries"]["runs"]
    assert overall["first"] == overall["second"]  # one checkpoint given twice


def test_tool_output_as_a_figure_path(tool, capsys, trained_run, tmp_path):
    status, _, err = run_tool(tool, capsys, "--runs", trained_run, "--bins", "0,50,100",
                              "--output", tmp_path / "figs" / "occ.png")
    assert status == 0, err[-3000:]
    for name in ("occ.png", "occ.md", "occ.json"):
        assert (tmp_path / "figs" / name).is_file()
    saved = json.loads((tmp_path / "figs" / "occ.json").read_text(encoding="utf-8"))
    assert list(saved["breakdowns"]["fraction"]["categories"]) == ["whole (0%)", "0-50%", "50-100%"]


def test_tool_refuses_a_missing_run(tool, capsys, tmp_path):
    status, out, err = run_tool(tool, capsys, "--runs", tmp_path / "nowhere.pth", "--output", tmp_path / "out")
    assert status == 2 and out == ""
    assert err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_tool_refuses_a_dataset_without_occlusion(tool, capsys, trained_run, tiny_dataset_root, tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(tiny_dataset_root, root)
    os.remove(root / "SyntheticOccluded" / "occlusion.json")
    status, out, err = run_tool(tool, capsys, "--runs", trained_run, "--dataset-root", root,
                                "--output", tmp_path / "out")
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "occlusion.json" in lines[0]
    with pytest.raises(GroundTruthMissingError):
        occ.breakdown_runs([load_run(str(trained_run), opts=["DATASETS.ROOT", str(root)])])


def test_runs_need_distinct_names(run):
    with pytest.raises(ValueError, match="share a name"):
        occ.breakdown_runs([run, run])
