"""tools/ablate.py (agreid.experiments.ablations): run names, leaves, the SynthCLIP check,
resume/skip, rendering, one tiny real run."""
import json
import os

import pytest

import _warm
import agreid
from agreid.experiments import ablations as ablate
from agreid.experiments import common as ex
from agreid.experiments import paper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_WEIGHTS = ["MODEL.BACKBONE.PRETRAIN_PATH", "", "MODEL.BACKBONE.PRETRAIN", "none"]
TINY = ["SOLVER.STAGE1.MAX_EPOCH", "1", "SOLVER.MAX_EPOCH", "1", "INPUT.SIZE_TRAIN", "[64,32]",
        "INPUT.SIZE_TEST", "[64,32]", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.STAGE1.IMS_PER_BATCH", "16",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.STAGE1.WARMUP_EPOCHS", "0"]


def _cfg(run, *opts):
    return agreid.get_agreid_cfg(os.path.join(REPO, ablate.leaf_file(run)), NO_WEIGHTS + list(opts))


# ------------------------------------------------------------------------------- run names
def test_run_names_groups_and_patterns():
    assert ablate.resolve_runs("table4") == ["baseline", "at", "ap", "at_ap"]
    assert ablate.resolve_runs("threshold_*") == [
        "threshold_p50", "threshold_p75", "threshold_p90", "threshold_otsu", "threshold_none"]
    assert ablate.resolve_runs("at,table4, at") == ["at", "baseline", "ap", "at_ap"]
    everything = ablate.resolve_runs("all")
    assert set(everything) == set(ablate.available_runs()) and len(everything) == 25
    assert ablate.resolve_runs("cosine") == ["cosine/baseline", "cosine/at", "cosine/at_ap", "cosine/at_d_known",
                                             "cosine/at_d_filler"]
    assert ablate.resolve_runs("template_controls/*") == ["template_controls/at_d_known",
                                                          "template_controls/at_d_filler"]


def test_unknown_run_stops_naming_it():
    with pytest.raises(SystemExit, match="unknown run 'at_apx'"):
        ablate.resolve_runs("baseline,at_apx")
    with pytest.raises(SystemExit, match="unknown run 'nothing_\\*'"):
        ablate.resolve_runs("nothing_*")
    proc = _warm.run("tools/ablate.py", "--runs", "tabel4", "--dry-run", timeout=120)  # its own process, warm
    assert proc.returncode != 0 and "unknown run 'tabel4'" in proc.stderr


# ---------------------------------------------------------------------------------- leaves
def test_leaves_express_the_ablations():
    def key(cfg):
        return cfg.MODEL.PROMPT.TEMPLATE, cfg.MODEL.ATTR.ENABLED

    assert key(_cfg("baseline")) == ("default", False)
    assert key(_cfg("at")) == ("d", False)
    assert key(_cfg("ap")) == ("default", True)
    assert key(_cfg("at_ap")) == ("d", True)
    assert _cfg("align_grad").MODEL.ATTR.ALIGN_GRAD_TO_PROMPTS is True
    assert _cfg("train_in_guide").MODEL.ATTR.TRAIN_IN_GUIDE is True
    assert _cfg("threshold_p75").MODEL.ATTR.THRESHOLD == "p75"
    assert _cfg("template_longer").MODEL.PROMPT.TEMPLATE == "longer"
    # The same run under three names: trained once, the result shared.
    reference = ex.config_fingerprint(_cfg("at_ap"))
    assert ex.config_fingerprint(_cfg("template_d")) == reference
    assert ex.config_fingerprint(_cfg("threshold_otsu")) == reference
    assert ex.config_fingerprint(_cfg("template_default")) == ex.config_fingerprint(_cfg("ap"))
    assert ex.config_fingerprint(_cfg("at_ap", "OUTPUT_DIR", "elsewhere")) == reference
    assert ex.config_fingerprint(_cfg("at_ap", "SOLVER.MAX_EPOCH", "3")) != reference


def test_every_leaf_differs_from_agreid_only_where_it_says():
    import yaml

    base = _cfg("at_ap")
    for run in ablate.available_runs():
        with open(os.path.join(REPO, ablate.leaf_file(run))) as f:
            stated = yaml.safe_load(f)
        assert stated.pop("_BASE_") == "../" * (run.count("/") + 1) + "agreid.yml", run
        assert stated.pop("OUTPUT_DIR") == f"logs/synthetic/ablations/{run}"
        cfg = _cfg(run)
        _assert_stated(cfg.MODEL, stated.get("MODEL", {}), run)
        cfg.defrost()
        for section in stated.get("MODEL", {}):
            cfg.MODEL[section] = base.MODEL[section]
        cfg.OUTPUT_DIR = base.OUTPUT_DIR
        assert cfg == base, run


def _assert_stated(node, stated, run):
    """Every value a leaf states is the value of the resolved config (nested sections too)."""
    for name, value in stated.items():
        if isinstance(value, dict):
            _assert_stated(node[name], value, run)
        else:
            assert node[name] == value, (run, name)


# ------------------------------------------------------------------------- bad input, dry run
def test_missing_synthclip_file_stops_before_anything_runs(tmp_path, capsys):
    missing = tmp_path / "pretrained" / "SynthCLIP-Tiny.pt"
    with pytest.raises(SystemExit, match=f"MODEL.BACKBONE.PRETRAIN_PATH {missing} does not exist"):
        ablate.main(["--preset", "tiny", "--runs", "table4", "--output", str(tmp_path / "out"),
                     "--data-root", str(tmp_path / "data"), "MODEL.BACKBONE.PRETRAIN_PATH", str(missing)])
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_dry_run_plans_resumes_and_shares(tmp_path, capsys, tiny_dataset_root):
    out = tmp_path / "out"
    interrupted = out / "runs" / "at" / "seed1"
    interrupted.mkdir(parents=True)
    (interrupted / "last_checkpoint").write_text("model_0000003.pth")
    code = ablate.main(["--preset", "tiny", "--runs", "at,at_ap,template_d", "--seeds", "2", "--output", str(out),
                        "--data-root", tiny_dataset_root, "--dry-run", *NO_WEIGHTS, "SOLVER.MAX_EPOCH", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "at seed 0: train:" in printed and "at seed 1: resume:" in printed
    assert "--resume" in printed.split("at seed 1: resume:")[1].splitlines()[0]
    assert "template_d seed 0: same config as at_ap" in printed
    assert "4 trainings to run" in printed
    assert "SOLVER.MAX_EPOCH 2" in printed and not list(out.glob("results/*/*.json"))


def test_finished_result_with_another_config_is_not_reused(tmp_path, tiny_dataset_root):
    out = tmp_path / "out"
    ex.write_json(str(out / "results" / "at" / "seed0.json"),
                  {"run": "at", "seed": 0, "fingerprint": "0123456789abcdef", "metrics": {"mAP": 1.0}})
    with pytest.raises(SystemExit, match="measured with another config"):
        ablate.main(["--preset", "tiny", "--runs", "at", "--output", str(out), "--data-root", tiny_dataset_root,
                     "--no-render", *NO_WEIGHTS])


# ------------------------------------------------------------------------------- rendering
LOG = """[12/01 07:56:03 fastreid.evaluation.testing]: Evaluation results in csv format: 
| Dataset           | Rank-1   | Rank-5   | Rank-10   | mAP   | mINP   | metric   |
|:------------------|:---------|:---------|:----------|:------|:-------|:---------|
| SyntheticOccluded | 1.00     | 6.25     | 25.00     | 7.68  | 7.90   | 3.84     |
[12/01 07:58:03 fastreid.engine.defaults]: later
| Dataset           | Rank-1   | Rank-5   | Rank-10   | mAP   | mINP   | metric   |
|:------------------|:---------|:---------|:----------|:------|:-------|:---------|
| SyntheticOccluded | 12.50    | 37.11    | 47.66     | 17.41 | 11.71  | 14.96    |
| OccludedDuke      | 2.00     | 3.00     | 4.00      | 5.00  | 6.00   | 3.50     |
done
"""


def test_parse_eval_tables_takes_the_last_table():
    tables = ex.parse_eval_tables(LOG)
    assert tables["SyntheticOccluded"] == {"Rank-1": 12.5, "Rank-5": 37.11, "Rank-10": 47.66, "mAP": 17.41,
                                           "mINP": 11.71, "metric": 14.96}
    assert tables["OccludedDuke"]["mAP"] == 5.0


def test_marked_sections_replace_only_their_own_text(tmp_path):
    copy = tmp_path / "RESULTS.md"
    original = "# Results measured here\n\nA paragraph the lead wrote.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    copy.write_text(original, encoding="utf-8")
    ex.update_markdown(str(copy), {"ablate:table4": "first"})
    text = copy.read_text(encoding="utf-8")
    assert text.startswith(original) and text.endswith("<!-- ablate:table4 -->\nfirst\n<!-- /ablate:table4 -->\n")
    # The lead edits around the section; a second render changes only the section.
    edited = "# Edited title\n" + text.replace("<!-- /ablate:table4 -->\n", "<!-- /ablate:table4 -->\nafter\n")
    copy.write_text(edited, encoding="utf-8")
    ex.update_markdown(str(copy), {"ablate:table4": "second\nline", "ablate:table5": "five"})
    assert copy.read_text(encoding="utf-8") == (
        edited.replace("\nfirst\n", "\nsecond\nline\n") + "\n<!-- ablate:table5 -->\nfive\n<!-- /ablate:table5 -->\n")
    with pytest.raises(ValueError, match="no matching <!-- /broken -->"):
        ex.replace_marked_section("x <!-- broken --> y", "broken", "z")


def _record(run, seed, mAP, r1, fingerprint="f", seconds=60.0):
    return {"run": run, "seed": seed, "preset": "small", "fingerprint": fingerprint + run, "seed_applied": True,
            "seconds": seconds, "invocation": "python tools/ablate.py --preset small",
            "metrics": {"mAP": mAP, "Rank-1": r1, "Rank-5": 50.0, "Rank-10": 60.0}, "machine": {"cpu_count": 2}}


def test_tables_show_mean_and_std_over_seeds(tmp_path):
    results = {"baseline": {0: _record("baseline", 0, 10.0, 20.0), 1: _record("baseline", 1, 12.0, 24.0)},
               "at_ap": {0: _record("at_ap", 0, 15.0, 30.0)},
               "threshold_p50": {0: _record("threshold_p50", 0, 9.0, 8.0)}}
    sections = ablate.render_sections(results, "figures/t4.png")
    assert set(sections) == {"ablate:table4", "ablate:table6"}
    table4 = sections["ablate:table4"]
    # mean 11, sample std of (10, 12) = sqrt(2) = 1.414; Rank-1 22 +- 2.83.
    assert ("| ✓ |  |  | 11.0 ± 1.4 | 22.0 ± 2.8 | 50.0 ± 0.0 | 60.0 ± 0.0 | reference | reference | 2 "
            "| 60.0 / 67.8 / 80.1 / 85.2 |") in table4
    # at_ap has seed 0 only: its paired difference from the baseline's seed 0, and no interval.
    assert ("| ✓ | ✓ | ✓ | 15.0 | 30.0 | 50.0 | 60.0 | +5.00 (1 seed: an interval needs ≥ 2) "
            "| +10.00 (1 seed: an interval needs ≥ 2) | 1 | 63.2 / 70.4 / 82.4 / 86.4 |") in table4
    assert "| ✓ | ✓ |  | not run |  |  |  |  |  | 0 |" in table4
    assert "![" in table4 and "(figures/t4.png)" in table4
    assert "3.0 min for 3 trained runs" in table4
    # Table 6's reference (Otsu) has not run: no difference can be shown.
    assert ("| P50 | 9.0 | 8.0 | 50.0 | 60.0 | – (reference not run) | – (reference not run) | 1 "
            "| 61.9 / 69.9 / 82.7 / 86.0 |") in sections["ablate:table6"]
    png = tmp_path / "t4.png"
    assert ablate.plot_table4(results, str(png)) and png.stat().st_size > 5000


# ------------------------------------------------------------------- paired differences by seed
# Worked out by hand: baseline mAP 30.0, 29.0, 31.0 and AT 29.0, 28.5, 30.0 over seeds 0, 1, 2 give
# differences -1.0, -0.5, -1.0: mean -0.8333, sd 0.2887 (ddof 1), t_{0.975, 2} = 4.3027,
# half-width 4.30265 * 0.288675 / sqrt(3) = 0.71711, interval [-1.55044, -0.11622]: excludes 0.
# (Rounding the half-width to 0.7172 first gives [-1.5505, -0.1161]; the tolerance is 1e-4 of the exact.)
def test_paired_difference_and_interval_by_hand():
    diff = ex.paired_difference({0: 30.0, 1: 29.0, 2: 31.0}, {0: 29.0, 1: 28.5, 2: 30.0})
    assert diff.seeds == (0, 1, 2) and diff.differences == (-1.0, -0.5, -1.0) and diff.n == 3
    assert diff.mean == pytest.approx(-0.8333, abs=1e-4)
    assert diff.sd == pytest.approx(0.2887, abs=1e-4)
    assert diff.t == pytest.approx(4.3027, abs=1e-4)
    assert (diff.high - diff.low) / 2 == pytest.approx(0.71711, abs=1e-4)
    assert diff.low == pytest.approx(-1.55044, abs=1e-4) and diff.high == pytest.approx(-0.11622, abs=1e-4)
    assert diff.excludes_zero is True
    assert ex.format_paired(diff) == "-0.83 [-1.55, -0.12] * (n=3)"
    # Another confidence, another quantile: t_{0.95, 2} = 2.9200.
    assert ex.paired_difference({0: 30.0, 1: 29.0, 2: 31.0}, {0: 29.0, 1: 28.5, 2: 30.0}, 0.90).t == \
        pytest.approx(2.9200, abs=1e-4)


def test_an_interval_that_includes_zero_is_not_marked():
    # Differences +1.0, -0.5, +0.2: mean 0.2333, sd 0.7506, half-width 4.3027 * 0.7506 / sqrt(3) = 1.8645.
    diff = ex.paired_difference({0: 30.0, 1: 29.0, 2: 31.0}, {0: 31.0, 1: 28.5, 2: 31.2})
    assert diff.low == pytest.approx(-1.6311, abs=1e-4) and diff.high == pytest.approx(2.0978, abs=1e-4)
    assert diff.excludes_zero is False
    assert ex.format_paired(diff) == "+0.23 [-1.63, 2.10] (n=3)"
    # An interval that only touches 0 does not exclude it.
    assert ex.PairedDifference((0, 1), (0.0, 2.0), 1.0, 1.0, 1.0, 0.0, 2.0, 0.95).excludes_zero is False


def test_seeds_missing_in_one_row_are_left_out_of_the_pairing():
    # Seed 3 only in the baseline, seed 5 only in the other row: paired over 0, 1, 2 as above.
    diff = ex.paired_difference({0: 30.0, 1: 29.0, 2: 31.0, 3: 99.0}, {0: 29.0, 1: 28.5, 2: 30.0, 5: -50.0})
    assert diff.seeds == (0, 1, 2) and diff.mean == pytest.approx(-0.8333, abs=1e-4)
    assert diff.low == pytest.approx(-1.55044, abs=1e-4)
    # One common seed: the difference, and no interval (none can be made from one difference).
    one = ex.paired_difference({0: 30.0, 1: 29.0}, {1: 28.5, 2: 30.0})
    assert one.seeds == (1,) and one.mean == -0.5 and one.low is None and one.high is None and one.sd is None
    assert one.excludes_zero is None
    assert ex.format_paired(one) == "-0.50 (1 seed: an interval needs ≥ 2)"
    none = ex.paired_difference({0: 30.0}, {1: 28.5})
    assert none.n == 0 and none.mean is None and ex.format_paired(none) == "– (no common seed)"
    with pytest.raises(ValueError, match="confidence"):
        ex.paired_difference({0: 1.0}, {0: 2.0}, confidence=95)


def _study():
    """Table-4 rows: the hand-worked baseline/AT pair, AP with an interval around 0, AT + AP with
    an extra seed 3 the baseline lacks, and a baseline seed measured with another budget."""
    baseline = {s: _record("baseline", s, m, r1) for s, m, r1 in ((0, 30.0, 24.0), (1, 29.0, 25.0), (2, 31.0, 23.0))}
    baseline[4] = dict(_record("baseline", 4, 0.0, 0.0), overrides=["SOLVER.MAX_EPOCH", "2"])
    return {
        "baseline": baseline,
        "at": {s: _record("at", s, m, r1) for s, m, r1 in ((0, 29.0, 24.5), (1, 28.5, 24.0), (2, 30.0, 23.2),
                                                         (4, 40.0, 40.0))},
        "ap": {s: _record("ap", s, m, r1) for s, m, r1 in ((0, 31.0, 24.0), (1, 28.5, 25.0), (2, 31.2, 23.0))},
        "at_ap": {s: _record("at_ap", s, m, r1) for s, m, r1 in ((0, 29.5, 23.0), (3, 10.0, 10.0))},
    }


# The rendered table 4 of _study(), byte for byte as tools/ablate.py rendered it before the runner
# moved into agreid.experiments (a study's results keep rendering to the same markdown).
STUDY_TABLE4 = (
    "**Table 4 on synthetic data: dual guidance** (AT: attribute template; AP: pseudo-label guidance).\n\n"
    "Synthetic preset `small`, seeds 0, 1, 2, 3, 4; training + evaluation 13.0 min for 13 trained runs "
    "(1.0 min a run) on 2 CPU cores.\n"
    "Measured with `python tools/ablate.py --preset small`.\n"
    "Mean ± sample standard deviation over seeds, in percent (one seed: its value).\n\n"
    "| Baseline | AT | AP | mAP | R@1 | R@5 | R@10 | Δ mAP vs Baseline (95% CI) | Δ R@1 vs Baseline (95% CI) | seeds "
    "| the paper's Occ-Duke (mAP / R@1 / R@5 / R@10) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
    "| ✓ |  |  | 22.5 ± 15.0 | 18.0 ± 12.0 | 50.0 ± 0.0 | 60.0 ± 0.0 | reference | reference | 4 "
    "| 60.0 / 67.8 / 80.1 / 85.2 |\n"
    "| ✓ | ✓ |  | 31.9 ± 5.5 | 27.9 ± 8.1 | 50.0 ± 0.0 | 60.0 ± 0.0 | -0.83 [-1.55, -0.12] * (n=3) "
    "| -0.10 [-2.07, 1.87] (n=3) | 4 | 62.4 / 69.7 / 81.7 / 86.2 |\n"
    "| ✓ |  | ✓ | 30.2 ± 1.5 | 24.0 ± 1.0 | 50.0 ± 0.0 | 60.0 ± 0.0 | +0.23 [-1.63, 2.10] (n=3) "
    "| +0.00 [0.00, 0.00] (n=3) | 3 | 62.2 / 69.2 / 81.9 / 86.3 |\n"
    "| ✓ | ✓ | ✓ | 19.8 ± 13.8 | 16.5 ± 9.2 | 50.0 ± 0.0 | 60.0 ± 0.0 | -0.50 (1 seed: an interval needs ≥ 2) "
    "| -1.00 (1 seed: an interval needs ≥ 2) | 2 | 63.2 / 70.4 / 82.4 / 86.4 |\n\n"
    "Δ: the row minus the Baseline row at each seed both have (same preset and overrides), in points: "
    "mean [95% Student-t interval, mean ± t(0.975, n−1)·sd/√n] over the n paired seeds; * the interval "
    "excludes 0. One paired seed: its difference only (an interval needs ≥ 2 seeds).\n\n"
    "![table-4 rows, mean and standard deviation over seeds; paired differences from the baseline with "
    "95% intervals](figures/t4.png)")


def test_a_study_renders_byte_for_byte_as_before():
    assert ablate.render_sections(_study(), "figures/t4.png")["ablate:table4"] == STUDY_TABLE4


def test_the_tables_quote_the_papers_numbers_from_one_place():
    assert ablate.TABLE4["at_ap"] == (("✓", "✓", "✓"), (63.2, 70.4, 82.4, 86.4)) == paper.TABLE4["at_ap"]
    assert ablate.TABLE5["template_b"] == ("Attribute Prompt b", (63.0, 70.5, 82.0, 86.5))
    assert list(ablate.TABLE6) == ["threshold_p50", "threshold_p75", "threshold_p90", "threshold_otsu",
                                   "threshold_none"]
    assert ablate.TABLE6["threshold_p75"] == paper.TABLE6["p75"] and ablate.TABLE6["threshold_none"][1] is None


def test_results_paths_are_the_studys():
    assert ablate.results_path("logs/ablations/small", "cosine/at", 2) == os.path.join(
        "logs/ablations/small", "results", "cosine/at", "seed2.json")
    assert ablate.run_dir("logs/ablations/small", "at", 0) == os.path.join("logs/ablations/small", "runs", "at", "seed0")


def test_rows_are_paired_with_the_baseline_of_their_table():
    results = _study()
    at = ablate.paired(results, "at", "baseline", "mAP")
    # Seed 4 of the baseline was measured with another budget: not paired.
    assert at.seeds == (0, 1, 2) and at.low == pytest.approx(-1.55044, abs=1e-4) and at.excludes_zero
    # Rank-1 differences +0.5, -1.0, +0.2: mean -0.1, interval includes 0.
    assert ablate.paired(results, "at", "baseline", "Rank-1").mean == pytest.approx(-0.1)
    assert ablate.paired(results, "at", "baseline", "Rank-1").excludes_zero is False
    assert ablate.paired(results, "at_ap", "baseline", "mAP").seeds == (0,)
    assert ablate.BASELINES["table4"][0] == "baseline" and ablate.BASELINES["table5"][0] == "template_default"
    assert ablate.BASELINES["table6"][0] == "threshold_otsu" and ablate.BASELINES["choices"][0] == "at_ap"
    for group, (run, _) in ablate.BASELINES.items():
        assert run in ablate.GROUPS[group]


def test_markdown_table_shows_the_paired_difference_columns():
    table4 = ablate.render_sections(_study(), None)["ablate:table4"]
    header = next(line for line in table4.splitlines() if line.startswith("| Baseline |"))
    assert ("| mAP | R@1 | R@5 | R@10 | Δ mAP vs Baseline (95% CI) | Δ R@1 vs Baseline (95% CI) | seeds |"
            in header)
    assert ("| ✓ |  |  | 22.5 ± 15.0 | 18.0 ± 12.0 | 50.0 ± 0.0 | 60.0 ± 0.0 | reference | reference | 4 |"
            in table4)
    # AT's seed 4 pairs with a baseline seed of another budget: left out (n=3, the hand-worked values).
    assert ("| ✓ | ✓ |  | 31.9 ± 5.5 | 27.9 ± 8.1 | 50.0 ± 0.0 | 60.0 ± 0.0 | -0.83 [-1.55, -0.12] * (n=3) "
            "| -0.10 [-2.07, 1.87] (n=3) | 4 |") in table4
    assert ("| ✓ |  | ✓ | 30.2 ± 1.5 | 24.0 ± 1.0 | 50.0 ± 0.0 | 60.0 ± 0.0 | +0.23 [-1.63, 2.10] (n=3) |"
            in table4)
    assert ("| -0.50 (1 seed: an interval needs ≥ 2) | -1.00 (1 seed: an interval needs ≥ 2) | 2 |" in table4)
    assert "* the interval excludes 0" in table4 and "mean ± t(0.975, n−1)·sd/√n" in table4
    # The other tables compare with their own reference row.
    results = {"template_default": {s: _record("template_default", s, 30.0 + s, 20.0) for s in (0, 1)},
               "template_a": {s: _record("template_a", s, 29.0 + s, 21.0) for s in (0, 1)},
               "threshold_otsu": {0: _record("threshold_otsu", 0, 10.0, 10.0)},
               "threshold_p50": {0: _record("threshold_p50", 0, 11.0, 9.0)}}
    sections = ablate.render_sections(results, None)
    assert "| Default Prompt | 30.5 ± 0.7 | 20.0 ± 0.0 | 50.0 ± 0.0 | 60.0 ± 0.0 | reference | reference |" in \
        sections["ablate:table5"]
    # Differences -1, -1 (sd 0): a zero-width interval at -1; +1, +1 in Rank-1.
    assert ("| Attribute Prompt a | 29.5 ± 0.7 | 21.0 ± 0.0 | 50.0 ± 0.0 | 60.0 ± 0.0 "
            "| -1.00 [-1.00, -1.00] * (n=2) | +1.00 [1.00, 1.00] * (n=2) | 2 |") in sections["ablate:table5"]
    assert "Δ mAP vs Default Prompt (95% CI)" in sections["ablate:table5"]
    assert "| P50 | 11.0 | 9.0 | 50.0 | 60.0 | +1.00 (1 seed: an interval needs ≥ 2) |" in sections["ablate:table6"]
    assert "| Otsu | 10.0 | 10.0 | 50.0 | 60.0 | reference | reference |" in sections["ablate:table6"]


def test_table4_plot_has_a_panel_of_paired_differences(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
    assert ablate.plot_table4(_study(), str(tmp_path / "t4.png"))
    (fig,) = saved
    bars, deltas = fig.axes
    assert "Paired by seed" in deltas.get_title()
    assert [t.get_text() for t in deltas.get_xticklabels()] == ["mAP", "Rank-1"]
    # AT's mAP interval excludes 0 and is starred; AP's does not.
    stars = [t for t in deltas.texts if t.get_text() == "*"]
    assert len(stars) == 1 and stars[0].xy[1] == pytest.approx(-0.11622, abs=1e-4)
    legend = [t.get_text() for t in deltas.get_legend().get_texts()]
    assert legend == ["+ AT (n=3)", "+ AP (n=3)", "+ AT + AP (1 seed: no interval)"]


# ------------------------------------------------------------------------- one real tiny run
@pytest.mark.slow
def test_two_tiny_runs_train_render_and_resume(tmp_path, tiny_dataset_root):
    import open_clip
    import torch

    weights = tmp_path / "SynthCLIP-Tiny.pt"
    torch.save(open_clip.create_model("AGReID-Tiny-ViT").state_dict(), weights)
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written text\n", encoding="utf-8")
    out, figure = tmp_path / "out", tmp_path / "fig" / "t4.png"
    cmd = ["tools/ablate.py", "--preset", "tiny", "--runs", "baseline,at", "--seeds", "1",
           "--data-root", tiny_dataset_root, "--output", str(out), "--results-md", str(md), "--figure", str(figure),
           "MODEL.BACKBONE.PRETRAIN_PATH", str(weights), *TINY]
    # python tools/ablate.py ...: a process forked from a warm interpreter (tests/_warm.py); the
    # training runs it starts are new interpreters (tools/train_net.py), as for the user.
    proc = _warm.run(*cmd, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for run in ("baseline", "at"):
        record = json.loads((out / "results" / run / "seed0.json").read_text())
        assert record["run"] == run and record["leaf"] == f"configs/Synthetic/ablations/{run}.yml"
        assert set(ex.METRICS) <= set(record["metrics"]) and 0 <= record["metrics"]["mAP"] <= 100
        log = (out / "runs" / run / "seed0" / "log.txt").read_text()
        assert record["metrics"]["mAP"] == ex.parse_eval_tables(log)["SyntheticOccluded"]["mAP"]
        assert str(weights) in (out / "runs" / run / "seed0" / "config.yaml").read_text()
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# Results\n\nhand-written text\n") and text.count("<!-- ablate:table4 -->") == 1
    assert "ablate:table5" not in text and figure.stat().st_size > 5000
    # A second sitting skips what is finished and trains nothing.
    again = _warm.run(*cmd, timeout=300)
    assert again.returncode == 0 and again.stdout.count("skipped") == 2 and "train:" not in again.stdout


def test_a_run_stopped_after_its_evaluation_is_read_from_its_log(tmp_path, tiny_dataset_root, capsys):
    out = tmp_path / "out"
    run = out / "runs" / "at" / "seed0"
    run.mkdir(parents=True)
    (run / "model_final.pth").write_bytes(b"")
    (run / "last_checkpoint").write_text("model_final.pth")
    (run / "log.txt").write_text(LOG)
    code = ablate.main(["--preset", "tiny", "--runs", "at", "--output", str(out), "--data-root", tiny_dataset_root,
                        "--no-render", *NO_WEIGHTS])
    assert code == 0 and "finished earlier" in capsys.readouterr().out
    record = json.loads((out / "results" / "at" / "seed0.json").read_text())
    assert record["metrics"]["mAP"] == 17.41 and record["metrics"]["Rank-1"] == 12.5
    assert record["seconds"] == 120.0  # 07:56:03 to 07:58:03 in the log
    assert not (run / "stdout.txt").exists()  # nothing was trained


def test_the_template_study_tables_pair_with_their_own_baselines():
    results = {run: {seed: _record(run, seed, m, r) for seed, (m, r) in enumerate(values)} for run, values in {
        "baseline": [(30.0, 24.0), (29.0, 23.0)],
        "template_controls/at_d_known": [(31.0, 25.0), (30.5, 24.0)],
        "cosine/baseline": [(32.0, 26.0), (31.0, 25.0)],
        "cosine/at": [(31.0, 26.0), (30.0, 25.0)],
    }.items()}
    sections = ablate.render_sections(results, None)
    assert {"ablate:controls", "ablate:cosine"} <= set(sections)
    controls = sections["ablate:controls"]
    # d_known vs the raw baseline: differences +1.0, +1.5 (mean +1.25); Rank-1 +1.0, +1.0.
    assert "| AT: template d_known (every slot next to a word SynthCLIP knows) | 30.8 ± 0.4 | 24.5 ± 0.7" in controls
    assert "+1.25 [" in controls and "| AT: template d | not run |" in controls
    # The cosine rows are paired with the cosine baseline, not the raw one: -1.00 at both seeds.
    cosine = sections["ablate:cosine"]
    assert "| AT: template d, cosine L_CE | 30.5 ± 0.7 | 25.5 ± 0.7 | 50.0 ± 0.0 | 60.0 ± 0.0 | -1.00 [-1.00, -1.00] *" in cosine
    # None of the study's runs falls into the open-choices table.
    assert "ablate:choices" not in sections
