"""agreid.analysis: the one linear probe (probes), probe_attributes, analyze_noise_mask and the
probe_pseudo_labels alias: the measurements, and runs on a tiny model."""
import json
import os

import numpy as np
import pytest
import torch

import agreid
from agreid.analysis import analyze_noise_mask as mask_tool
from agreid.analysis import probe_attributes as probe_tool
from agreid.analysis import probe_pseudo_labels, probes
from agreid.analysis.runs import identity_attributes, relabelled_items, training_set
from agreid.analysis.slots import slot_labels, slot_words

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IDS, NUM_CAMERAS = 16, 4  # the tiny synthetic preset


# ------------------------------------------------------------------------------ template slots
def test_slot_words_and_regions_of_the_templates():
    from agreid.modeling.prompts import TEMPLATES

    assert slot_words(TEMPLATES["d"]) == ["person"] * 2 + ["hair"] * 2 + ["upper"] * 2 + ["lower"] * 2 + ["carrying"] * 2
    assert mask_tool.slot_regions(TEMPLATES["d"]) == ["whole"] * 2 + ["head"] * 2 + ["upper"] * 2 + ["lower"] * 2 + ["upper"] * 2
    assert mask_tool.slot_regions(TEMPLATES["b"])[-2:] == ["feet", "feet"]
    assert mask_tool.slot_regions(TEMPLATES["c"])[2:4] == ["head", "head"]
    assert slot_words(TEMPLATES["random"]) == [""] * 10
    assert slot_labels(TEMPLATES["a"])[:3] == ["1 person", "2 person", "3 upper"]


# ------------------------------------------------------------------------------------- probe
def test_probe_finds_the_slot_that_carries_an_attribute():
    rng = np.random.default_rng(0)
    colours = ["black", "brown", "blond", "grey"]
    attributes = [{"hair_color": colours[k % 4], "bag": ["none", "backpack"][(k // 4) % 2]} for k in range(48)]
    tokens = rng.normal(0, 0.02, size=(48, 3, 16)).astype(np.float32)
    # Slot 1 encodes the hair colour (one direction per colour); slots 0 and 2 are noise.
    codes = rng.normal(0, 1, size=(4, 16))
    tokens[:, 1] += np.stack([codes[k % 4] for k in range(48)])
    control = rng.normal(0, 0.02, size=tokens.shape).astype(np.float32)
    result = probe_tool.probe(tokens, attributes, 4, control)
    assert result["attributes"] == ["bag", "hair_color"]
    rows = {row["attribute"]: row for row in result["rows"]}
    assert rows["hair_color"]["majority"] == 0.25 and rows["bag"]["majority"] == 0.5
    assert rows["hair_color"]["V"] == 1.0 and rows["hair_color"]["init"] < 0.6
    per_slot = np.array(result["per_slot"])
    assert per_slot.shape == (3, 2) and per_slot[1, 1] == 1.0 and per_slot[0, 1] < 0.6 and per_slot[2, 1] < 0.6
    result["slot_labels"], result["compare_name"] = ["1 a", "2 hair", "3 b"], None
    table = probe_tool.markdown(result)
    assert "| 2 hair | hair_color | 1.000 | 0.250 | +0.750 |" in table


def _tiny_run(directory, root, *opts):
    """A random-init AG-ReID model of the synthetic config saved like a training run."""
    from fastreid.modeling import build_model
    from fastreid.utils.checkpoint import Checkpointer

    cfg = agreid.get_agreid_cfg(os.path.join(REPO, "configs/Synthetic/agreid.yml"), [
        "MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", "", "MODEL.DEVICE", "cpu",
        "MODEL.HEADS.NUM_CLASSES", str(NUM_IDS), "MODEL.BACKBONE.NUM_CAMERAS", str(NUM_CAMERAS),
        "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "16", "DATASETS.ROOT", root, *opts])
    torch.manual_seed(0)
    model = build_model(cfg)
    os.makedirs(directory, exist_ok=True)
    config = os.path.join(directory, "config.yaml")
    with open(config, "w") as f:
        f.write(cfg.dump())
    Checkpointer(model, directory).save("model_stage1")
    return config, os.path.join(directory, "model_stage1.pth"), model


def test_probe_tool_on_a_tiny_checkpoint(tmp_path, tiny_dataset_root):
    config, weights, model = _tiny_run(str(tmp_path / "d"), tiny_dataset_root)
    other_config, other_weights, _ = _tiny_run(str(tmp_path / "default"), tiny_dataset_root,
                                              "MODEL.PROMPT.TEMPLATE", "default")
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n", encoding="utf-8")
    result = probe_tool.run(["--config-file", config, "--weights", weights, "--compare-config", other_config,
                              "--compare-weights", other_weights, "--folds", "2", "--attributes", "hair_color,bag",
                              "--output-dir", str(tmp_path / "out"), "--results-md", str(md)])
    truth = json.load(open(os.path.join(tiny_dataset_root, "SyntheticOccluded", "attributes.json")))["identities"]
    train_ids = sorted({name[:4] for name in os.listdir(os.path.join(tiny_dataset_root, "SyntheticOccluded",
                                                                     "bounding_box_train"))})
    hair = [truth[k]["hair_color"] for k in train_ids]
    assert len(hair) == NUM_IDS
    assert result["rows"][1]["majority"] == max(hair.count(v) for v in set(hair)) / NUM_IDS
    assert result["compare_name"] == "template default" and "compare" in result["rows"][0]
    assert np.array(result["per_slot"]).shape == (model.prompt_learner.num_learnable_tokens, 2)
    assert result["slot_labels"][2] == "3 hair"
    saved = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert saved["rows"] == result["rows"] and (tmp_path / "out" / "probe_heatmap.png").stat().st_size > 3000
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# Results\n") and "<!-- probe:attributes -->" in text and "probe_heatmap.png" in text
    with pytest.raises(SystemExit, match="unknown attribute 'hair_colour'"):
        probe_tool.run(["--config-file", config, "--weights", weights, "--attributes", "hair_colour",
                         "--output-dir", str(tmp_path / "out")])


# -------------------------------------------------------------------------------- noise mask
def test_identity_batches_are_like_the_stage2_sampler():
    pids = np.repeat(np.arange(6), [4, 4, 4, 2, 4, 4])
    batches = list(mask_tool.identity_batches(pids, 8, 4, np.random.default_rng(0)))
    assert len(batches) == 3 and all(len(b) == 8 for b in batches)
    for batch in batches:
        ids, counts = np.unique(pids[batch], return_counts=True)
        assert len(ids) == 2 and set(counts) == {4}
    # Identities with 4 images show each image once; the one with 2 repeats them.
    flat = np.concatenate(batches)
    assert sorted(flat[pids[flat] == 0]) == [0, 1, 2, 3]
    assert set(flat[pids[flat] == 3]) == {12, 13}


def test_drop_counts_by_hand():
    # 2 identities x 2 images x 2 slots; one batch of all 4 images per pass.
    sims = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    pids = np.array([0, 0, 1, 1])
    seen, dropped, gammas = mask_tool.drop_counts([sims, sims], pids, 0.5, 4, 2, seed=0)
    assert (seen == 2).all()
    np.testing.assert_array_equal(dropped, [[2, 0], [2, 0], [2, 0], [2, 0]])
    assert gammas == []
    # p50 of 0.1..0.9 (8 values) is 0.5: the same four dropped; p75 cuts at 0.725.
    seen, dropped, gammas = mask_tool.drop_counts([sims], pids, "p75", 4, 2, seed=0)
    np.testing.assert_array_equal(dropped, [[1, 0], [1, 0], [1, 1], [1, 1]])
    assert gammas == [pytest.approx(0.725)]
    hidden = np.array([[True, False], [False, False], [True, True], [False, False]])
    summary = mask_tool.summarise(seen, dropped, hidden, ["head", "upper"])
    # Hidden (image, slot): (0,0), (2,0), (2,1), all dropped -> 3/3; visible: (0,1) kept, (1,0)
    # dropped, (1,1) kept, (3,0) and (3,1) dropped -> 3/5.
    assert summary["hidden"] == 1.0 and summary["hidden_count"] == 3
    assert summary["visible"] == pytest.approx(3 / 5) and summary["visible_count"] == 5
    assert summary["per_region"]["upper"] == {"hidden": 1.0, "hidden_count": 1, "visible": pytest.approx(1 / 3),
                                              "visible_count": 3}
    assert summary["per_slot"][0]["visible"] == 1.0


def test_hidden_matrix_whole_means_any_region():
    records = [{"regions": []}, {"regions": ["upper"]}, {"regions": ["head", "feet"]}]
    hidden = mask_tool.hidden_matrix(records, ["whole", "head", "upper", "feet", ""])
    np.testing.assert_array_equal(hidden, [[0, 0, 0, 0, 0], [1, 0, 1, 0, 0], [1, 1, 0, 1, 0]])


def test_noise_mask_tool_on_a_tiny_checkpoint(tmp_path, tiny_dataset_root):
    config, weights, model = _tiny_run(str(tmp_path / "run"), tiny_dataset_root)
    md = tmp_path / "RESULTS.md"
    result = mask_tool.run(["--config-file", config, "--passes", "2", "--output-dir", str(tmp_path / "out"),
                             "--results-md", str(md), "MODEL.WEIGHTS", weights])
    occlusion = json.load(open(os.path.join(tiny_dataset_root, "SyntheticOccluded", "occlusion.json")))
    train = {k: v for k, v in occlusion.items() if k.startswith("bounding_box_train/")}
    assert result["images"] == len(train) == 64
    assert result["occluded_images"] == sum(bool(v["regions"]) for v in train.values())
    slots = model.prompt_learner.num_learnable_tokens
    for name in ("p50", "p75", "p90", "otsu"):
        row = result["thresholds"][name]
        # Batches of 16 = 4 identities x 4 images: every image once a pass, every slot has a region.
        assert row["hidden_count"] + row["visible_count"] == 2 * 64 * slots
        expected_hidden = 2 * sum(
            (2 * bool(v["regions"]) + 2 * ("head" in v["regions"]) + 4 * ("upper" in v["regions"])
             + 2 * ("lower" in v["regions"])) for v in train.values())
        assert row["hidden_count"] == expected_hidden
    # A percentile mask drops that share of each batch's values.
    assert result["thresholds"]["p75"]["all"] == pytest.approx(0.75, abs=0.01)
    assert result["thresholds"]["p50"]["all"] == pytest.approx(0.5, abs=0.01)
    assert (tmp_path / "out" / "noise_mask.png").stat().st_size > 3000
    assert "<!-- noise-mask:analysis -->" in md.read_text(encoding="utf-8")


# ------------------------------------------------------------------------ the one linear probe
def test_probe_cross_validation_is_stratified_shuffled_and_fixed():
    labels = np.array(["a"] * 30 + ["b"] * 15 + ["c"] * 5)
    splits = probes.probe_splits(labels, 5)
    assert splits.n_splits == 5 and splits.shuffle and splits.random_state == 0
    for _, test in splits.split(np.zeros((len(labels), 1)), labels):
        # Every fold keeps the classes' proportions (6 a, 3 b, 1 c).
        assert sorted(np.unique(labels[test], return_counts=True)[1]) == [1, 3, 6]
    # Fewer folds than asked when the largest class is smaller; never fewer than 2.
    assert probes.probe_splits(np.array(list("aabbc")), 5).n_splits == 2
    assert probes.probe_splits(np.array(list("aaabbb")), 5).n_splits == 3
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 4))
    features[:, 0] += (labels == "a") * 3.0
    first = probes.probe_accuracy(features, labels, 5)
    assert first == probes.probe_accuracy(features, labels, 5)  # deterministic
    assert first > probes.majority_rate(labels) == 0.6
    assert probes.probe_accuracy(features, np.array(["x"] * 50), 5) == 1.0


def test_probe_keeps_the_images_of_a_person_in_one_fold():
    # 40 people x 3 images; the attribute is the person's, the features a per-person code plus noise.
    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(40), 3)
    labels = np.array(["red", "blue"])[people % 2]
    splits = probes.probe_splits(labels, 5, people)
    assert splits.n_splits == 5 and splits.shuffle and splits.random_state == 0
    folds = list(splits.split(np.zeros((len(labels), 1)), labels, people))
    assert len(folds) == 5
    for train, test in folds:
        assert not set(people[train]) & set(people[test])
        assert set(labels[test]) == {"red", "blue"}
    assert sorted(np.concatenate([test for _, test in folds])) == list(range(120))
    # Features that tell people apart but say nothing of the attribute: recognising the person
    # would "predict" it when a person's images are split between folds, not when they are kept.
    features = rng.normal(size=(40, 30))[people] + 0.05 * rng.normal(size=(120, 30))
    kept, split = probes.probe_accuracy(features, labels, 5, groups=people), probes.probe_accuracy(features, labels, 5)
    assert kept < 0.65 and split > 0.8  # measured: 0.450 and 0.825
    # Fewer folds when the largest class has fewer people than asked.
    assert probes.probe_splits(labels[:9], 5, people[:9]).n_splits == 2


def test_attribute_table_uses_the_one_probe(monkeypatch):
    """probe_attributes' table calls agreid.analysis.probes for every cell."""
    calls = []

    def fake(features, labels, folds):
        calls.append((np.asarray(features).shape, folds))
        return 0.5

    monkeypatch.setattr(probes, "probe_accuracy", fake)
    monkeypatch.setattr(probe_tool, "probe_accuracy", fake)
    attributes = [{"hat": ["none", "cap"][k % 2]} for k in range(8)]
    tokens = np.zeros((8, 2, 3), dtype=np.float32)
    result = probe_tool.probe(tokens, attributes, 3, tokens)
    assert result["rows"][0]["V"] == 0.5 and calls == [((8, 6), 3), ((8, 6), 3), ((8, 3), 3), ((8, 3), 3)]
    # SynthCLIP's linear probe: tests/test_synthclip.py::test_linear_probe_is_the_projects_probe.


# ------------------------------------------------------------- ground truth in the trainer's order
def test_identity_attributes_are_in_the_trainers_label_order(tmp_path, tiny_dataset_root):
    from agreid.engine import AGReIDTrainer

    config, _, _ = _tiny_run(str(tmp_path / "run"), tiny_dataset_root)
    cfg = agreid.get_agreid_cfg(config)
    train_set, _ = AGReIDTrainer.build_train_set(cfg)
    truth = identity_attributes(cfg, train_set)
    attributes = json.load(open(os.path.join(tiny_dataset_root, "SyntheticOccluded", "attributes.json")))
    assert len(truth.keys) == NUM_IDS and truth.schema == attributes["schema"]
    for pid, row in train_set.pid_dict.items():  # the trainer's labels
        key = f"{int(pid.rsplit('_', 1)[1]):04d}"
        assert truth.keys[row] == key and truth.attributes[row] == attributes["identities"][key]
    items = relabelled_items(training_set(cfg))
    assert len(items) == 64 and all(train_set.pid_dict[pid] == row for (_, pid, _), (_, row, _)
                                    in zip(train_set.img_items, items))


# -------------------------------------------------------------- per-batch threshold, as training
def test_drop_counts_cut_each_batch_with_trainings_threshold():
    from agreid.modeling.noise_mask import mask_threshold, noise_mask, otsu_threshold

    rng = np.random.default_rng(1)
    pids = np.repeat(np.arange(8), 4)
    sims = rng.normal(0.2, 0.1, size=(32, 3))
    sims[pids >= 4] += 0.3  # two halves of the identities, far apart
    seen, dropped, gammas = mask_tool.drop_counts([sims], pids, "otsu", 8, 4, seed=0)
    batches = list(mask_tool.identity_batches(pids, 8, 4, np.random.default_rng(0)))
    assert len(gammas) == len(batches) == 4
    for batch, gamma in zip(batches, gammas):
        values = torch.from_numpy(sims[batch])
        assert gamma == pytest.approx(float(otsu_threshold(values)))
        assert gamma == pytest.approx(float(mask_threshold(values, "otsu")))
        np.testing.assert_array_equal(dropped[batch], 1 - noise_mask(values, "otsu").numpy())
    # One cut over the whole training set would drop differently (the low half entirely).
    whole = (sims <= float(otsu_threshold(torch.from_numpy(sims)))).astype(float)
    assert not np.array_equal(dropped, whole)
    split = mask_tool.by_image(seen, dropped, pids >= 4)
    assert split == {"occluded": pytest.approx(dropped[pids >= 4].mean()),
                     "whole": pytest.approx(dropped[pids < 4].mean())}


def test_mask_threshold_is_the_cut_of_noise_mask():
    from agreid.modeling.noise_mask import mask_threshold, noise_mask

    values = torch.linspace(0, 1, 40).reshape(8, 5)
    for threshold in ("otsu", "p50", "p90", 0.3):
        cut = mask_threshold(values, threshold)
        assert torch.equal(noise_mask(values, threshold), (values > cut).float())
    assert mask_threshold(values, None) is None and mask_threshold(values, -1) is None
    assert float(mask_threshold(values, "p50")) == pytest.approx(0.5)


# ------------------------------------------------------------------- the probe_pseudo_labels alias
def test_probe_pseudo_labels_alias_runs_both_tools(tmp_path, tiny_dataset_root, capsys, monkeypatch):
    config, weights, _ = _tiny_run(str(tmp_path / "run"), tiny_dataset_root)
    monkeypatch.chdir(tmp_path)
    assert probe_pseudo_labels.main(["--config-file", config, "--folds", "2", "MODEL.WEIGHTS", weights]) == 0
    out, err = capsys.readouterr()
    alias = [line for line in err.splitlines() if "is an alias" in line]
    assert len(alias) == 1 and f"--weights {weights}" in alias[0] and "--thresholds otsu" in alias[0]
    assert "16 training identities" in out
    for attribute in ("upper_color", "lower_length", "bag", "hat", "hair_color"):
        assert f"| {attribute}" in out
    assert "Otsu per batch of 16" in out and "| occluded" in out and "| whole" in out
    assert sorted(os.listdir(tmp_path)) == ["run"]  # nothing kept without --output-dir
    assert probe_pseudo_labels.main(["--config-file", config, "--folds", "2", "--output-dir", str(tmp_path / "o"),
                                     "MODEL.WEIGHTS", weights]) == 0
    result = json.loads((tmp_path / "o" / "noise_mask" / "noise_mask.json").read_text())
    assert list(result["thresholds"]) == ["otsu"] and set(result["thresholds"]["otsu"]["by_image"]) == {"occluded", "whole"}
    assert (tmp_path / "o" / "probe" / "probe.json").is_file()
