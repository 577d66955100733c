"""Progress that tells the truth: the training log's ETA per phase, and progress of the feature cache."""
import logging
import os

import pytest
import torch

import agreid  # before fastreid: agreid.compat makes fastreid importable on this Python
from fastreid.config import get_cfg
from fastreid.engine import DefaultTrainer, hooks
from fastreid.engine.train_loop import HookBase
from fastreid.utils import timer
from fastreid.utils.events import CommonMetricPrinter, EventStorage

from agreid.engine import AGReIDTrainer, feature_cache, progress
from agreid.engine.progress import PhaseMetricPrinter, Progress, with_phase_printer
from agreid.phases import PhaseSchedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/Synthetic/agreid.yml"
STAGE1_EPOCHS, STAGE2_EPOCHS = 3, 2
PACE = {"align": 0.01, "guide": 1.0}  # seconds per step, on a fake clock
FAST = ["SOLVER.IMS_PER_BATCH", "16", "SOLVER.STAGE1.IMS_PER_BATCH", "8",
        "SOLVER.STAGE1.WARMUP_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.STEPS", "[100]",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.STAGE1.CHECKPOINT_PERIOD", "0",
        "TEST.EVAL_PERIOD", "0", "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]",
        "MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", ""]


class FakeClock:
    """``perf_counter`` that moves only when a training step says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _LogEveryStep(HookBase):
    """After every step (and after fastreid's IterationTimer), write the trainer's log line and
    record ``(phase, iteration, message, eta_seconds, phase_eta_seconds)``."""

    def __init__(self, caplog):
        self.caplog, self.lines = caplog, []

    def after_step(self):
        writer = next(hook for hook in self.trainer._hooks if isinstance(hook, hooks.PeriodicWriter))
        printer = next(w for w in writer._writers if isinstance(w, CommonMetricPrinter))
        storage = self.trainer.storage
        for name in ("eta_seconds", "phase_eta_seconds"):
            storage.latest().pop(name, None)
        self.caplog.clear()
        printer.write()
        message = [r.getMessage() for r in self.caplog.records if "epoch/iter" in r.getMessage()][-1]
        eta, phase_eta = (storage.latest().get(name, (None,))[0] for name in ("eta_seconds", "phase_eta_seconds"))
        self.lines.append((self.trainer.phase, self.trainer.iter, message, eta, phase_eta))


def _trained_lines(tmp_path, dataset_root, monkeypatch, caplog, original_writer=False):
    """Train the tiny model 3 + 2 epochs on a fake clock (0.01 s per stage-1 step, 1 s per
    stage-2 step) and return the log line written after every step."""
    if original_writer:
        monkeypatch.setattr(AGReIDTrainer, "build_writers", DefaultTrainer.build_writers)
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, CONFIG))
    cfg.merge_from_list(FAST + ["DATASETS.ROOT", dataset_root, "OUTPUT_DIR", str(tmp_path),
                                "SOLVER.STAGE1.MAX_EPOCH", str(STAGE1_EPOCHS),
                                "SOLVER.MAX_EPOCH", str(STAGE2_EPOCHS)])
    clock = FakeClock()
    monkeypatch.setattr(timer, "perf_counter", clock)  # fastreid's IterationTimer reads this clock
    trainer = AGReIDTrainer(cfg)
    run_step = trainer.run_step

    def timed_step():
        run_step()
        clock.now += PACE[trainer.phase]

    trainer.run_step = timed_step
    probe = _LogEveryStep(caplog)
    trainer.register_hooks([probe])
    # fastreid's trainer set up the "fastreid" logger without propagation: listen to it directly.
    events_logger = logging.getLogger("fastreid.utils.events")
    events_logger.addHandler(caplog.handler)
    try:
        trainer.train()
    finally:
        events_logger.removeHandler(caplog.handler)
    return trainer, probe.lines


def _phase_lines(trainer, lines):
    stage1_end = trainer.schedule.iterations_before(STAGE1_EPOCHS)
    assert trainer.max_iter > stage1_end > 0
    align = [line for line in lines if line[0] == "align"]
    guide = [line for line in lines if line[0] == "guide"]
    assert len(align) == stage1_end and len(guide) == trainer.max_iter - stage1_end
    return stage1_end, align, guide


def _check_stage1(trainer, lines):
    stage1_end, align, _ = _phase_lines(trainer, lines)
    # fastreid's IterationTimer leaves out the first 3 steps of the run.
    for phase, iteration, message, eta, phase_eta in align[3:]:
        # Stage 2 has not run: no pace for it, said so, and no whole-run ETA claimed.
        left = stage1_end - iteration - 1
        assert phase_eta == pytest.approx(left * 0.01), message
        assert f"stage 1 {progress._duration(left * 0.01)} at 0.0100 s/it" in message, message
        assert f"stage 2 not timed yet ({trainer.max_iter - stage1_end} its)" in message, message
        assert eta is None, message


def _check_stage2(trainer, lines):
    _, _, guide = _phase_lines(trainer, lines)
    for phase, iteration, message, eta, phase_eta in guide:
        left = trainer.max_iter - iteration - 1
        # remaining stage-2 steps x the stage-2 pace, not a blend with the fast stage-1 steps
        assert eta == pytest.approx(left * 1.0), message
        assert phase_eta == pytest.approx(left * 1.0), message
        assert f"eta: {progress._duration(left)} (stage 2 {progress._duration(left)} at 1.0000 s/it)" in message
        assert "phase: guide" in message and "time: 1.0000" in message, message


def test_eta_counts_each_phase_at_its_own_pace(tiny_dataset_root, tmp_path, monkeypatch, caplog):
    trainer, lines = _trained_lines(tmp_path, tiny_dataset_root, monkeypatch, caplog)
    _check_stage1(trainer, lines)
    _check_stage2(trainer, lines)


@pytest.mark.parametrize("check", [_check_stage1, _check_stage2], ids=["stage1", "stage2"])
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="fastreid's CommonMetricPrinter blends both phases' step times")
def test_fastreid_printer_fails_the_same_checks(check, tiny_dataset_root, tmp_path, monkeypatch, caplog):
    trainer, lines = _trained_lines(tmp_path, tiny_dataset_root, monkeypatch, caplog, original_writer=True)
    check(trainer, lines)


def _storage_with_times(times):
    storage = EventStorage(0)
    storage.epoch = 10
    for iteration, seconds in enumerate(times):
        storage.iter = iteration
        storage.put_scalar("time", seconds)
    return storage


@pytest.mark.parametrize("printer_class", [
    PhaseMetricPrinter,
    pytest.param(CommonMetricPrinter, marks=pytest.mark.xfail(
        strict=True, raises=AssertionError, reason="fastreid's blended ETA")),
])
def test_stage2_eta_is_not_the_blended_average(printer_class, caplog):
    """1000 stage-1 steps at 0.01 s, then 100 of 1000 stage-2 steps at 1 s: 900 s are left."""
    schedule = PhaseSchedule(stage1_epochs=10, stage2_epochs=10, align_iters_per_epoch=100,
                             guide_iters_per_epoch=100)
    max_iter = schedule.iterations_before(schedule.max_epoch)
    printer = printer_class(max_iter, schedule) if printer_class is PhaseMetricPrinter else printer_class(max_iter)
    storage = _storage_with_times([0.01] * 1000 + [1.0] * 100)
    with storage:
        caplog.set_level(logging.INFO)
        printer.write()
    assert storage.latest()["eta_seconds"][0] == pytest.approx(900.0)


def test_single_phase_and_untimed_text():
    schedule = PhaseSchedule(stage1_epochs=1, stage2_epochs=1, align_iters_per_epoch=10, guide_iters_per_epoch=5)
    printer = PhaseMetricPrinter(15, schedule)
    text, total, current = printer.eta(1, [])  # nothing timed yet (fastreid's warm-up)
    assert text == "stage 1 not timed yet (8 its) + stage 2 not timed yet (5 its)"
    assert total is None and current is None
    # A run started from a stage-1 checkpoint has no stage 1 at all.
    only_guide = PhaseSchedule(stage1_epochs=0, stage2_epochs=2, guide_iters_per_epoch=5)
    printer = PhaseMetricPrinter(10, only_guide)
    text, total, current = printer.eta(4, [(2.0, i) for i in range(3, 5)])
    assert text == "0:00:10 (stage 2 0:00:10 at 2.0000 s/it)" and total == current == 10.0


def test_models_without_phases_keep_fastreid_printer(tmp_path):
    writers = [CommonMetricPrinter(100), object()]
    assert with_phase_printer(writers, 100, None) is writers
    replaced = with_phase_printer(writers, 100, PhaseSchedule(1, 1, 50, 50))
    assert isinstance(replaced[0], PhaseMetricPrinter) and replaced[1] is writers[1]


class _Tiny(torch.nn.Module):
    """Enough of a PhasedModel for the feature cache: ``encode_image`` of a batch."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)

    def encode_image(self, batch):
        return self.proj(batch["images"].mean(dim=(2, 3)))


def test_feature_cache_shows_progress(tiny_dataset_root, monkeypatch, caplog):
    cfg = agreid.get_agreid_cfg(os.path.join(REPO, CONFIG), [
        "DATASETS.ROOT", tiny_dataset_root, "DATALOADER.NUM_WORKERS", "0",
        "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]", "SOLVER.STAGE1.CACHE_BATCH", "16",
        "MODEL.BACKBONE.PRETRAIN", "none", "MODEL.BACKBONE.PRETRAIN_PATH", ""])
    train_set, _ = AGReIDTrainer.build_train_set(cfg)
    monkeypatch.setattr(Progress, "log_every_s", 0.0)  # a line after every batch
    caplog.set_level(logging.INFO, logger="agreid.engine.progress")
    features, _ = feature_cache.compute_feature_cache(cfg, _Tiny(), train_set)
    batches = -(-len(train_set) // 16)
    messages = [r.getMessage() for r in caplog.records if r.name == "agreid.engine.progress"]
    assert messages[0] == f"stage-1 feature cache: {batches} batches"
    assert f"stage-1 feature cache: 1/{batches} batches" in messages[1]
    assert "eta" in messages[1]
    assert messages[-1].startswith(f"stage-1 feature cache: {batches} batches in ")
    assert len(features) == len(train_set)


def test_progress_on_a_terminal_shows_a_bar(monkeypatch, capsys, caplog):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    caplog.set_level(logging.INFO, logger="agreid.engine.progress")
    assert list(Progress(range(5), "features X")) == [0, 1, 2, 3, 4]
    assert "features X" in capsys.readouterr().err  # tqdm's bar
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["features X: 5 batches"]
