"""tools/benchmark_train.py (agreid.benchmarks.train) on the tiny config: random weights even though
the config names its SynthCLIP file, and the table of both phases and inference. (benchmark_infer:
tests/test_onnx.py; benchmark_eval's worker: tests/test_gpu_check.py.)"""
import pytest

from agreid.benchmarks import train as benchmark_train

# Builds and trains models: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow


def test_benchmark_train_times_both_phases_of_the_tiny_config(capsys):
    assert benchmark_train.main(["--models", "agreid-tiny", "--device", "cpu", "--runs", "2", "--warmup", "0",
                                 "--batch", "8", "--batch-infer", "8", "--dataset-size", "640"]) == 0
    printed = capsys.readouterr().out
    assert "N = 640 training images; random weights" in printed
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in printed.splitlines()
            if line.startswith("| ") and not line.startswith("|  ")}
    assert rows["input (H x W)"] == "128x64" and rows["timed steps (after warm-up)"] == "2 (after 0)"
    assert rows["stage-2 step, images/s"].endswith("(batch 8)")
    assert rows["stage-1 step, features/s (cached f_proj)"].endswith("(batch 64)")
    assert float(rows["inference, images/s"].split(" ")[0].replace(",", "")) > 0
    assert "n/a" not in rows["stage-1 epoch / stage-2 epoch"]


def test_epoch_costs_spread_the_feature_cache_over_the_stage_1_epochs():
    measured = {kind: benchmark_train.Measurement([seconds] * 3, batch)
                for kind, seconds, batch in (("align", 0.5, 64), ("guide", 2.0, 64), ("infer", 1.0, 128))}
    row = {"stage1_epochs": 120, "stage2_epochs": 60, **measured}
    costs = benchmark_train.epoch_costs(row, 1280)
    assert costs["cache"] == pytest.approx(10.0)  # 1280 forwards at 128 a second
    assert costs["stage1"] == pytest.approx(20 * 0.5 + 10.0 / 120)  # 20 align steps + the cache's share
    assert costs["stage2"] == pytest.approx(40.0) and costs["total2"] == pytest.approx(40.0 * 60)
    assert costs["ratio"] == pytest.approx(costs["stage1"] / costs["stage2"])
