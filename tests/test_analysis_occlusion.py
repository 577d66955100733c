"""agreid.analysis.occlusion and tools/occlusion_breakdown.py on a tiny trained run.

The run (one epoch per phase on the tiny synthetic dataset, random init, 64x32 images) is trained
once per session; its breakdown is checked against the trainer's own evaluation, the numbers the
training log printed, and occlusion.json. Seeds (runs sharing a name) are checked on hand-made
numbers (mean, sd, paired difference worked out by hand) and on the run given several times.
"""
import dataclasses
import json
import math
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


# Three seeds of two models, worked out by hand (t(0.975, 2) = 4.303, t(0.975, 1) = 12.706):
# all queries, mAP:    baseline 30, 32, 34 -> 32 ± 2; AG-ReID 31, 34, 37 -> 34 ± 3;
#                      differences 1, 2, 3 -> mean 2, sd 1, 2 ± 4.303/√3 = [-0.484, 4.484] (contains 0)
# all queries, Rank-1: baseline 20, 25, 30 -> 25 ± 5; AG-ReID 24, 28, 35 -> 29 ± √31 = 5.568;
#                      differences 4, 3, 5 -> mean 4, sd 1, 4 ± 2.484 = [1.516, 6.484] (excludes 0: *)
# car, mAP:            baseline 10, –, 14 -> 12 ± 2√2 = 2.828 over 2 seeds; AG-ReID 11, 13, 17 -> 13.667 ± 3.055;
#                      paired at seeds 0 and 2: differences 1, 3 -> mean 2, sd √2, 2 ± 12.706 = [-10.706, 14.706]
# car, Rank-1:         no valid query at any seed.
SEED_NAMES = ["baseline"] * 3 + ["AG-ReID"] * 3
SEED_VALUES = {
    "all queries": [{"mAP": 30.0, "Rank-1": 20.0}, {"mAP": 32.0, "Rank-1": 25.0}, {"mAP": 34.0, "Rank-1": 30.0},
                    {"mAP": 31.0, "Rank-1": 24.0}, {"mAP": 34.0, "Rank-1": 28.0}, {"mAP": 37.0, "Rank-1": 35.0}],
    "car": [{"mAP": 10.0, "Rank-1": None}, {"mAP": None, "Rank-1": None}, {"mAP": 14.0, "Rank-1": None},
            {"mAP": 11.0, "Rank-1": None}, {"mAP": 13.0, "Rank-1": None}, {"mAP": 17.0, "Rank-1": None}],
}
T_975_2 = 4.303


def hand_result(names, values, seeds):
    """A breakdown_runs result holding ``values`` ({category: each run's numbers}) as two breakdowns."""
    def slot(category, queries, valid):
        return {"queries": queries, "valid": valid, **occ.combine_seeds(names, values[category])}

    return {"dataset": "SyntheticOccluded", "queries": 10, "bins": list(occ.DEFAULT_BINS),
            "models": list(dict.fromkeys(names)), "seeds": seeds, "runs": [],
            "breakdowns": {"all": {"overlapping": False, "categories": {"all queries": slot("all queries", 10, 10)}},
                           "occluder": {"overlapping": False, "categories": {"car": slot("car", 4, 3)}}}}


def test_seeds_give_mean_sd_and_paired_differences():
    combined = occ.combine_seeds(SEED_NAMES, SEED_VALUES["all queries"])
    baseline, agreid = combined["runs"]["baseline"], combined["runs"]["AG-ReID"]
    assert list(combined["runs"]) == ["baseline", "AG-ReID"]
    assert baseline["per seed"] == {"mAP": [30.0, 32.0, 34.0], "Rank-1": [20.0, 25.0, 30.0]}
    assert (baseline["mAP"], baseline["sd"]["mAP"]) == (pytest.approx(32.0), pytest.approx(2.0))
    assert (baseline["Rank-1"], baseline["sd"]["Rank-1"]) == (pytest.approx(25.0), pytest.approx(5.0))
    assert (agreid["mAP"], agreid["sd"]["mAP"]) == (pytest.approx(34.0), pytest.approx(3.0))
    assert (agreid["Rank-1"], agreid["sd"]["Rank-1"]) == (pytest.approx(29.0), pytest.approx(math.sqrt(31)))
    assert baseline["n"] == agreid["n"] == {"mAP": 3, "Rank-1": 3}
    assert list(combined["differences"]) == ["AG-ReID"]  # only the later models
    delta = combined["differences"]["AG-ReID"]
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert delta["mAP"]["differences"] == [1.0, 2.0, 3.0] and delta["mAP"]["seeds"] == [0, 1, 2]
    assert (delta["mAP"]["mean"], delta["mAP"]["sd"], delta["mAP"]["n"]) == (pytest.approx(2.0), pytest.approx(1.0), 3)
    assert delta["mAP"]["t"] == pytest.approx(T_975_2, abs=1e-3)
    assert delta["mAP"]["low"] == pytest.approx(2.0 - half, abs=1e-3)
    assert delta["mAP"]["high"] == pytest.approx(2.0 + half, abs=1e-3)
    assert delta["mAP"]["excludes_zero"] is False
    assert delta["Rank-1"]["differences"] == [4.0, 3.0, 5.0]
    assert delta["Rank-1"]["low"] == pytest.approx(4.0 - half, abs=1e-3)
    assert delta["Rank-1"]["high"] == pytest.approx(4.0 + half, abs=1e-3)
    assert delta["Rank-1"]["excludes_zero"] is True


def test_seeds_without_a_valid_query_are_left_out_of_the_mean():
    combined = occ.combine_seeds(SEED_NAMES, SEED_VALUES["car"])
    baseline, agreid = combined["runs"]["baseline"], combined["runs"]["AG-ReID"]
    assert baseline["per seed"]["mAP"] == [10.0, None, 14.0]
    assert baseline["n"] == {"mAP": 2, "Rank-1": 0}
    assert baseline["mAP"] == pytest.approx(12.0) and baseline["sd"]["mAP"] == pytest.approx(2 * math.sqrt(2))
    assert agreid["mAP"] == pytest.approx(41 / 3) and agreid["sd"]["mAP"] == pytest.approx(math.sqrt(28 / 3))
    assert baseline["Rank-1"] is None and baseline["sd"]["Rank-1"] is None
    # Paired over the seeds both have: 0 and 2.
    delta = combined["differences"]["AG-ReID"]
    assert delta["mAP"]["seeds"] == [0, 2] and delta["mAP"]["differences"] == [1.0, 3.0]
    assert delta["mAP"]["low"] == pytest.approx(2.0 - 12.706, abs=1e-3)
    assert delta["mAP"]["high"] == pytest.approx(2.0 + 12.706, abs=1e-3)
    assert delta["Rank-1"]["mean"] is None and delta["Rank-1"]["n"] == 0


def test_markdown_of_seeds():
    result = hand_result(SEED_NAMES, SEED_VALUES, seeds=3)
    lines = occ.markdown(result).splitlines()
    assert lines[0] == ("| breakdown | category | queries | baseline mAP | baseline Rank-1 | AG-ReID mAP "
                        "| AG-ReID Rank-1 | Δ mAP vs baseline (95% CI) | Δ Rank-1 vs baseline (95% CI) |")
    assert lines[1] == "|---|---|---:|---:|---:|---:|---:|---|---|"
    assert lines[2] == ("| all | all queries | 10 | 32.00 ± 2.00 | 25.00 ± 5.00 | 34.00 ± 3.00 | 29.00 ± 5.57 "
                        "| +2.00 [-0.48, 4.48] (n=3) | +4.00 [1.52, 6.48] * (n=3) |")
    assert lines[3] == ("| occluder | car | 4 (3 valid) | 12.00 ± 2.83 (2 of 3 seeds) | – | 13.67 ± 3.06 | – "
                        "| +2.00 [-10.71, 14.71] (n=2) | – |")
    caption = occ.caption(result)
    assert caption.startswith("Test set SyntheticOccluded, 10 queries; mAP and Rank-1 in percent. 3 seeds per model")
    assert "minus baseline" in caption and "95% Student-t interval" in caption
    # Three models: the difference columns name their model.
    names = ["a", "b", "c"] * 2
    values = {c: [{"mAP": 10.0 + i, "Rank-1": 20.0 + 2 * i} for i in range(6)] for c in SEED_VALUES}
    header = occ.markdown(hand_result(names, values, seeds=2)).splitlines()[0]
    assert header.endswith("| b Δ mAP vs a (95% CI) | b Δ Rank-1 vs a (95% CI) "
                           "| c Δ mAP vs a (95% CI) | c Δ Rank-1 vs a (95% CI) |")
    # One model, several seeds: mean ± sd, no difference column.
    one = hand_result(["x", "x"], {c: v[:2] for c, v in SEED_VALUES.items()}, seeds=2)
    assert occ.markdown(one).splitlines()[2] == "| all | all queries | 10 | 31.00 ± 1.41 | 22.50 ± 3.54 |"


def test_one_run_per_model_reads_as_before():
    """n = 1: the per-run values, the table and its caption as before seeds existed."""
    values = {"all queries": [{"mAP": 12.345, "Rank-1": 50.0}, {"mAP": 7.0, "Rank-1": 25.0}],
              "car": [{"mAP": None, "Rank-1": None}, {"mAP": None, "Rank-1": None}]}
    result = hand_result(["first", "second"], values, seeds=1)
    assert result["breakdowns"]["all"]["categories"]["all queries"] == {
        "queries": 10, "valid": 10, "runs": {"first": {"mAP": 12.345, "Rank-1": 50.0},
                                             "second": {"mAP": 7.0, "Rank-1": 25.0}}}
    expected = ["| breakdown | category | queries | first mAP | first Rank-1 | second mAP | second Rank-1 |",
                "|---|---|---:|---:|---:|---:|---:|",
                "| all | all queries | 10 | 12.35 | 50.00 | 7.00 | 25.00 |",
                "| occluder | car | 4 (3 valid) | – | – | – | – |"]
    assert occ.markdown(result).splitlines() == expected
    assert occ.caption(result) == "Test set SyntheticOccluded, 10 queries; mAP and Rank-1 in percent."
    # A result written before seeds existed (no "models", no "seeds") reads the same.
    old = {k: v for k, v in result.items() if k not in ("models", "seeds")}
    old["runs"] = [{"name": "first"}, {"name": "second"}]
    assert occ.markdown(old).splitlines() == expected and occ.caption(old) == occ.caption(result)


def test_plot_of_seeds_draws_means_with_sd_error_bars(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    drawn = []
    bar = Axes.bar

    def recording_bar(self, x, height, *args, **kwargs):
        drawn.append((kwargs.get("label"), list(height), kwargs.get("yerr")))
        return bar(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", recording_bar)
    path = occ.plot(hand_result(SEED_NAMES, SEED_VALUES, seeds=3), str(tmp_path / "seeds.png"))
    assert (tmp_path / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.endswith("seeds.png")
    # Panels row by row (all, occluder), mAP then Rank-1, a bar series per model.
    labels = [label for label, _, _ in drawn]
    assert labels[:2] == ["baseline (mean ± sd, 3 seeds)", "AG-ReID (mean ± sd, 3 seeds)"] and len(drawn) == 8
    assert drawn[0][1:] == ([pytest.approx(32.0)], [pytest.approx(2.0)])  # all queries, mAP, baseline
    assert drawn[3][1:] == ([pytest.approx(29.0)], [pytest.approx(math.sqrt(31))])  # all queries, Rank-1, AG-ReID
    assert drawn[4][1:] == ([pytest.approx(12.0)], [pytest.approx(2 * math.sqrt(2))])  # car, mAP, baseline
    assert np.isnan(drawn[6][1][0]) and np.isnan(drawn[6][2][0])  # car, Rank-1: no value
    # One run per model: bars at the values, no error bars.
    drawn.clear()
    occ.plot(hand_result(["first", "second"], {c: v[:2] for c, v in SEED_VALUES.items()}, seeds=1),
             str(tmp_path / "one.png"))
    assert drawn[0] == ("first", [pytest.approx(30.0)], None)


def test_names_need_the_same_number_of_runs():
    groups = occ.seed_groups(["b", "a", "b", "a"])
    assert groups == {"b": [0, 2], "a": [1, 3]}  # the i-th run of each name are paired
    with pytest.raises(ValueError, match=r"runs per name: baseline: 3, AG-ReID: 2$"):
        occ.seed_groups(["baseline"] * 3 + ["AG-ReID"] * 2)
    with pytest.raises(ValueError, match=r"a: 1, b: 2"):
        occ.combine_seeds(["a", "b", "b"], [{"mAP": 1.0, "Rank-1": 1.0}] * 3)


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
    # One run: the caption as before seeds existed.
    caption = (tmp_path / "figs" / "occ.md").read_text(encoding="utf-8").splitlines()[0]
    assert caption == "Test set SyntheticOccluded, 16 queries; mAP and Rank-1 in percent."


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


def test_one_run_per_model_keeps_its_json(result):
    assert result["models"] == ["tiny"] and result["seeds"] == 1
    assert [set(r) for r in result["runs"]] == [{"name", "weights", "reported"}]
    for entry in result["breakdowns"].values():
        for slot in entry["categories"].values():
            assert set(slot) == {"queries", "valid", "runs"} and set(slot["runs"]["tiny"]) == {"mAP", "Rank-1"}


def test_runs_sharing_a_name_are_seeds(run, result):
    seeds = occ.breakdown_runs([run, run])
    assert seeds["models"] == ["tiny"] and seeds["seeds"] == 2
    assert [r["seed"] for r in seeds["runs"]] == [0, 1]
    for breakdown, entry in result["breakdowns"].items():
        for category, slot in entry["categories"].items():
            one, two = slot["runs"]["tiny"], seeds["breakdowns"][breakdown]["categories"][category]
            assert (two["queries"], two["valid"]) == (slot["queries"], slot["valid"])
            assert "differences" not in two  # one model
            two = two["runs"]["tiny"]
            for metric in occ.METRICS:
                assert two["per seed"][metric] == [one[metric]] * 2
                assert two[metric] == (None if one[metric] is None else pytest.approx(one[metric]))
                assert two["sd"][metric] == (None if one[metric] is None else 0.0)
                assert two["n"][metric] == (0 if one[metric] is None else 2)


def test_unequal_seed_counts_stop_before_evaluating(run, monkeypatch):
    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before the names were checked")

    monkeypatch.setattr(occ, "evaluate_queries", no_evaluation)
    other = dataclasses.replace(run, name="other")
    with pytest.raises(ValueError, match="runs per name: tiny: 2, other: 1"):
        occ.breakdown_runs([run, other, run])


def test_tool_with_seeds(tool, capsys, trained_run, tmp_path):
    status, out, err = run_tool(tool, capsys, "--runs", trained_run, trained_run, trained_run, trained_run,
                                "--names", "a,b,a,b", "--output", tmp_path / "out")
    assert status == 0, err[-3000:]
    md = (tmp_path / "out" / "occlusion_breakdown.md").read_text(encoding="utf-8").splitlines()
    assert md[0].startswith("Test set SyntheticOccluded, 16 queries; mAP and Rank-1 in percent. 2 seeds per model")
    assert md[2] == ("| breakdown | category | queries | a mAP | a Rank-1 | b mAP | b Rank-1 "
                     "| Δ mAP vs a (95% CI) | Δ Rank-1 vs a (95% CI) |")
    saved = json.loads((tmp_path / "out" / "occlusion_breakdown.json").read_text(encoding="utf-8"))
    assert [(r["name"], r["seed"]) for r in saved["runs"]] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    overall = saved["breakdowns"]["all"]["categories"]["all queries"]
    mean_map, mean_r1 = overall["runs"]["a"]["mAP"], overall["runs"]["a"]["Rank-1"]
    # One checkpoint four times: sd 0, differences 0 with an interval of width 0.
    assert overall["runs"]["b"]["per seed"]["mAP"] == [mean_map] * 2 and overall["runs"]["a"]["sd"]["mAP"] == 0.0
    assert overall["differences"]["b"]["mAP"]["differences"] == [0.0, 0.0]
    row = next(line for line in md if line.startswith("| all | all queries |"))
    assert row == (f"| all | all queries | 16 | {mean_map:.2f} ± 0.00 | {mean_r1:.2f} ± 0.00 "
                   f"| {mean_map:.2f} ± 0.00 | {mean_r1:.2f} ± 0.00 "
                   f"| +0.00 [0.00, 0.00] (n=2) | +0.00 [0.00, 0.00] (n=2) |")
    assert row in out


def test_tool_refuses_unequal_seed_counts(tool, capsys, tmp_path):
    # The names are checked first: the (missing) checkpoints are never opened.
    status, out, err = run_tool(tool, capsys, "--runs", *(tmp_path / f"r{i}.pth" for i in range(3)),
                                "--names", "a,a,b", "--output", tmp_path / "out")
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("runs per name: a: 2, b: 1")
    assert not (tmp_path / "out").exists()
