"""Each fix of agreid.compat, tested against the failure it repairs."""
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

import agreid  # noqa: F401  (applies the fixes)
from agreid import compat


def _cfg(**values):
    return agreid.get_agreid_cfg(opts=[item for pair in values.items() for item in pair])


def test_every_fix_is_listed_and_applied_once():
    assert len(compat.FIXES) == 14
    compat.apply()  # second call: a no-op, must not wrap anything twice
    from fastreid.engine import hooks

    assert hooks.EvalHook.after_train.__wrapped__.__name__ == "after_train"
    assert not hasattr(hooks.EvalHook.after_train.__wrapped__, "__wrapped__")


def test_removed_imports_torch_six_and_collections_mapping():
    from fastreid.data.build import fast_batch_collator

    batch = fast_batch_collator([{"img_paths": "a.jpg", "targets": 1},
                                 {"img_paths": "b.jpg", "targets": 2}])
    assert batch["img_paths"] == ["a.jpg", "b.jpg"]
    assert batch["targets"].tolist() == [1, 2]


def test_dataloaderx_iterates_without_cuda():
    from fastreid.data.build import fast_batch_collator
    from fastreid.data.data_utils import DataLoaderX

    data = [{"images": torch.full((3,), float(i)), "targets": i} for i in range(6)]
    loader = DataLoaderX(0, dataset=data, batch_size=2, collate_fn=fast_batch_collator,
                         pin_memory=True)
    targets = [b["targets"].tolist() for b in loader]
    assert targets == [[0, 1], [2, 3], [4, 5]]


def test_reid_evaluator_does_not_compile_or_exit(monkeypatch):
    import subprocess

    from fastreid.evaluation import ReidEvaluator

    def no_make(*args, **kwargs):
        raise AssertionError("fastreid tried to run make in site-packages")

    monkeypatch.setattr(subprocess, "run", no_make)
    ReidEvaluator(_cfg(), num_query=3)


def _train_steps(optimizer, model, steps=3):
    for _ in range(steps):
        loss = model(torch.randn(4, 5)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _small_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 2))
    model[0].weight.requires_grad_(False)  # frozen
    return model


@pytest.mark.parametrize("opt", ["Adam", "SGD"])
def test_optimizer_steps_trainable_weights_and_leaves_frozen_ones(opt):
    from fastreid.solver import build_optimizer

    cfg = _cfg(**{"SOLVER.OPT": opt, "SOLVER.BASE_LR": 0.1, "SOLVER.WEIGHT_DECAY": 0.1})
    model = _small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer, _ = build_optimizer(cfg, model)
    _train_steps(optimizer, model)
    after = model.state_dict()
    assert not torch.equal(before["1.weight"], after["1.weight"]), "trainable weight did not move"
    assert torch.equal(before["0.weight"], after["0.weight"]), "frozen weight moved"


def test_fastreid_contiguous_optimizer_is_the_silent_bug():
    """Why the default changed: fastreid's contiguous buffer never steps under torch 2."""
    from fastreid.solver import build_optimizer

    cfg = _cfg(**{"SOLVER.BASE_LR": 0.1})
    model = _small_model()
    before = model[1].weight.clone()
    optimizer, _ = build_optimizer(cfg, model, contiguous=True)
    _train_steps(optimizer, model)
    assert torch.equal(before, model[1].weight)


def test_euclidean_and_cpu_jaccard_distance():
    from fastreid.utils.compute_dist import (compute_euclidean_distance,
                                             compute_jaccard_distance)

    x, y = torch.randn(7, 4), torch.randn(9, 4)
    np.testing.assert_allclose(compute_euclidean_distance(x, y),
                               (torch.cdist(x, y) ** 2).numpy(), rtol=1e-4, atol=1e-4)
    jaccard = compute_jaccard_distance(torch.randn(40, 8), k1=5, k2=2)
    assert jaccard.shape == (40, 40)
    np.testing.assert_allclose(np.diag(jaccard), 0, atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CPU fallback")
def test_amp_trainer_runs_fp32_on_cpu():
    from fastreid.engine.train_loop import AMPTrainer
    from fastreid.utils.events import EventStorage

    class LossModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, batch):
            return {"loss": (self.w * batch).sum()}

    model = LossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = AMPTrainer(model, [torch.ones(3)] * 4, optimizer, None)
    with EventStorage(0) as trainer.storage:
        trainer.iter = 0
        trainer.run_step()
    assert torch.allclose(model.w, torch.full((3,), 0.5))


def test_random_affine_builds_on_todays_torchvision():
    from fastreid.data.transforms import build_transforms
    from PIL import Image

    cfg = _cfg(**{"INPUT.AFFINE.ENABLED": True})
    transform = build_transforms(cfg, is_train=True)
    out = transform(Image.new("RGB", (64, 128), (120, 30, 200)))
    assert tuple(out.shape) == (3, 256, 128)


def test_checkpoint_with_numpy_metric_loads(tmp_path):
    # fastreid hands evaluation metrics (numpy floats) to the checkpointer: they are saved as
    # plain floats, so the file loads with weights_only; a foreign numpy pickle is refused.
    from fastreid.utils.checkpoint import Checkpointer

    from agreid.engine.checkpoint import AtomicCheckpointer
    from agreid.serialization import UnsafeCheckpointError

    model = nn.Linear(2, 2)
    AtomicCheckpointer(model, str(tmp_path)).save("ckpt", metric=np.float64(0.5), epoch=3)
    extra = Checkpointer(nn.Linear(2, 2)).load(str(tmp_path / "ckpt.pth"))
    assert extra["metric"] == 0.5 and type(extra["metric"]) is float and extra["epoch"] == 3
    torch.save({"model": model.state_dict(), "metric": np.float64(0.5)}, tmp_path / "foreign.pth")
    with pytest.raises(UnsafeCheckpointError, match="numpy"):
        Checkpointer(nn.Linear(2, 2)).load(str(tmp_path / "foreign.pth"))


def test_eval_period_zero_evaluates_once_at_the_end():
    from types import SimpleNamespace

    from fastreid.engine.hooks import EvalHook

    calls = []
    hook = EvalHook(0, lambda: calls.append(1) or {})
    hook.trainer = SimpleNamespace(epoch=4, max_epoch=5, storage=None)
    hook.after_epoch()
    hook.after_train()
    assert calls == [1]


def _ddp_worker(tmp_dir):
    """Run under launch(): a DDP model whose second head is unused, on gloo."""
    import torch.distributed as dist
    from fastreid.engine import defaults
    from fastreid.utils import comm

    model = nn.ModuleDict({"used": nn.Linear(3, 1), "idle": nn.Linear(3, 1)})
    torch.manual_seed(comm.get_rank())
    ddp = defaults.DistributedDataParallel(model, device_ids=[comm.get_local_rank()])
    for _ in range(2):
        loss = ddp.module["used"](torch.randn(4, 3)).sum()
        ddp.zero_grad()
        loss.backward()
    grad = model["used"].weight.grad.clone()
    dist.all_reduce(grad)
    torch.save({"rank": comm.get_rank(), "world": comm.get_world_size(),
                "backend": dist.get_backend(), "grad_sum": grad},
               os.path.join(tmp_dir, f"rank{comm.get_rank()}.pt"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CPU (gloo) path")
@pytest.mark.slow
def test_launch_two_cpu_processes_with_gloo_and_ddp_unused_parameters(tmp_path):
    from fastreid.engine import launch

    launch(_ddp_worker, 2, dist_url="auto", args=(str(tmp_path),))
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["world"] == 2 and r["backend"] == "gloo" for r in results)
    # DDP averaged the gradients: both ranks hold the same reduced gradient.
    assert torch.allclose(results[0]["grad_sum"], results[1]["grad_sum"])


_TO_TENSOR_WARNINGS = """
import sys, warnings
import agreid  # applies the fixes, the warning filters among them
if sys.argv[1] == "without-filter":
    warnings.filters[:] = [f for f in warnings.filters
                           if not (f[0] == "ignore" and f[1] is not None and "TypedStorage" in f[1].pattern)]
from fastreid.data.transforms import ToTensor
from PIL import Image
with warnings.catch_warnings(record=True) as caught:
    ToTensor()(Image.new("RGB", (8, 8)))
print("TypedStorage warnings:", sum("TypedStorage" in str(w.message) for w in caught))
"""


@pytest.mark.parametrize("mode,expected", [("with-filter", 0), ("without-filter", 1)])
def test_deprecation_noise_of_fastreid_to_tensor_is_silenced(mode, expected):
    # torch warns about TypedStorage once per process: only a fresh process shows whether the
    # filter works, and the same process without the filter shows that the check can fail.
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _TO_TENSOR_WARNINGS, mode], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"TypedStorage warnings: {expected}" in proc.stdout
