"""One command that checks this project on a CUDA machine and prints one markdown table.

    make gpu-check                                # python tools/gpu_check.py --data-root datasets
    python tools/gpu_check.py --parts cuda-tests,eval
    python tools/gpu_check.py --dry-run           # the commands it would run (no CUDA needed)

Each part runs in subprocesses under its own time budget; the whole check stops at ``--budget``
seconds (default 470, under 8 minutes). A part that fails, or runs out of time, still gets a row
with its status and the first line of its error, so the table always prints:

- ``cuda-tests``: the suite's CUDA-only tests (``skipif(not torch.cuda.is_available())``), passed
  and failed counts;
- ``launch``: a short two-phase run of the tiny config on all GPUs (``--num-gpus N``, NCCL; with
  one GPU, torchrun with one process);
- ``eval``: ``evaluate_rank`` and ``re_ranking`` on CUDA vs CPU at Market-1501 scale
  (``tools/benchmark_eval.py``'s features and worker): time and agreement;
- ``faiss-gpu``: a flat inner-product search on the GPU vs the CPU, when faiss has GPU support;
- ``synthclip``: SynthCLIP pretraining steps (``tools/pretrain_clip.py --max-steps``), s/step;
- ``train-agreid``, ``train-clipreid``, ``train-fastreid-vit``: a few hundred steps of each
  training phase of ``configs/OccDuke/agreid.yml`` and ``configs/OccDuke/clipreid.yml`` (ViT-B/16,
  256x128, random weights) and of fastreid's ViT-B/16 Baseline, with AMP, timed by
  ``tools/benchmark_train.py``'s functions on images of the synthetic dataset (stage 1 on cached
  features, random as there): features or images per second, peak GPU memory, losses finite.

The parts run in this order, the heaviest last. The synthetic data (``DATA_ROOT/SyntheticOccluded``)
is used when it is there, else generated (preset small) under the work folder. Exit status: 0
when every part passed (faiss without GPU support included), 1 otherwise; without CUDA, one line
and 0.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from agreid.experiments.common import REPO
from agreid.phases import ALIGN, GUIDE

NO_CUDA_LINE = "gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing to check."
DEFAULT_BUDGET = 470  # seconds for the whole check (the target: at most 8 minutes)
DEFAULT_WORK_DIR = os.path.join("logs", "gpu_check")
SYNTHETIC_DIR = "SyntheticOccluded"
OK, FAILED, TIMEOUT, SKIPPED, NOT_INSTALLED = "ok", "FAILED", "timeout", "skipped", "not installed"
PASSING = (OK, NOT_INSTALLED)
# Models of the training parts: (config or None for fastreid's Baseline, label).
TRAIN_MODELS = {
    "agreid": ("configs/OccDuke/agreid.yml", "AG-ReID ViT-B/16 (configs/OccDuke/agreid.yml)"),
    "clipreid": ("configs/OccDuke/clipreid.yml", "CLIP-ReID baseline (configs/OccDuke/clipreid.yml)"),
    "fastreid-vit": (None, "fastreid Baseline ViT-B/16 (benchmark_train.py's)"),
    # The tiny CLIP at 128x64: a smoke test of the worker on a CPU (not a part of the check).
    "agreid-tiny": ("configs/Synthetic/agreid.yml", "AG-ReID tiny (configs/Synthetic/agreid.yml)"),
}
TRAIN_RUNS, TRAIN_WARMUP, TRAIN_BATCH, INFER_BATCH = 200, 10, 64, 128
POOL_IMAGES = 512  # synthetic training images held in memory for the training parts' batches
# The launch part: the tiny config's fault-test settings (tests/faults/faultkit.py), per-GPU batch 16.
LAUNCH_OPTS = ["SOLVER.STAGE1.WARMUP_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.STEPS", "[100]",
               "DATALOADER.NUM_WORKERS", "2", "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]",
               "SOLVER.STAGE1.MAX_EPOCH", "1", "SOLVER.MAX_EPOCH", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
               "SOLVER.STAGE1.CHECKPOINT_PERIOD", "1", "MODEL.BACKBONE.PRETRAIN", "none",
               "MODEL.BACKBONE.PRETRAIN_PATH", ""]
SYNTHCLIP_STEPS = 100


# ------------------------------------------------------------------------------ rows, table


class Row(NamedTuple):
    """One line of the table."""

    part: str
    status: str
    result: str
    seconds: float


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def format_table(rows: Sequence[Row]) -> str:
    """The markdown table: part, status, result (or the error's first line), seconds."""
    lines = ["| part | status | result | s |", "|:--|:--|:--|--:|"]
    lines += [f"| {_cell(r.part)} | {_cell(r.status)} | {_cell(r.result)} | {r.seconds:.0f} |" for r in rows]
    return "\n".join(lines)


def error_line(output: str) -> str:
    """The first line of the error in a command's output: Python's exception line (the last
    ``SomethingError: ...`` line of a traceback), else an ``error: ...`` line, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)|AssertionError|Killed)\b", line):
            return line
    for line in lines:
        if line.lower().startswith("error:"):
            return line
    return lines[-1] if lines else "(no output)"


# ------------------------------------------------------------------------------ context, commands


@dataclass
class Context:
    """Where a check runs and what it uses; ``num_gpus`` is what torch sees (1 in a dry run without)."""

    work: str
    data_root: str
    num_gpus: int
    python: str = sys.executable
    repo: str = REPO

    @property
    def synthetic_ready(self) -> bool:
        return os.path.isfile(os.path.join(self.data_root, SYNTHETIC_DIR, "done.json"))

    def path(self, *names: str) -> str:
        return os.path.join(self.work, *names)


class Command(NamedTuple):
    """One subprocess of a part: its argv and extra environment."""

    argv: List[str]
    env: Dict[str, str] = {}

    def __str__(self) -> str:
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (prefix + " " if prefix else "") + shlex.join(self.argv)


class Outcome(NamedTuple):
    """How a command ended."""

    returncode: Optional[int]  # None: killed at its time limit
    output: str
    seconds: float


@dataclass
class Part:
    """A row (or rows) of the table: commands to run within ``budget`` seconds, then a summary."""

    name: str
    budget: int
    commands: Callable[[Context], List[Command]]
    summarise: Callable[[Context, List[Outcome]], List[Row]]
    description: str = ""


def _tool(ctx: Context, script: str, *args: str) -> List[str]:
    return [ctx.python, os.path.join("tools", script), *args]


def _synthetic_data(ctx: Context) -> List[Command]:
    """Generate the synthetic dataset (preset small) when ``ctx.data_root`` has none."""
    if ctx.synthetic_ready:
        return []
    return [Command(_tool(ctx, "make_synthetic.py", "--root", ctx.data_root, "--preset", "small", "--seed", "0"))]


def _worker(ctx: Context, name: str, *args: str) -> Command:
    return Command(_tool(ctx, "gpu_check.py", "--worker", name, *args))


def _read_json(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)


# ------------------------------------------------------------------------------ cuda-tests


def cuda_only_tests(repo: str = REPO) -> List[str]:
    """Node ids of the suite's tests marked ``skipif(not torch.cuda.is_available())`` (on the
    function, or on the whole module through ``pytestmark``)."""

    def cuda_only(node: ast.AST) -> bool:
        text = ast.unparse(node).replace(" ", "")
        return "skipif" in text and "nottorch.cuda.is_available()" in text

    found = []
    for folder, dirs, files in os.walk(os.path.join(repo, "tests")):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in sorted(files):
            if not (name.startswith("test_") and name.endswith(".py")):
                continue
            path = os.path.join(folder, name)
            with open(path) as handle:
                tree = ast.parse(handle.read(), filename=path)
            relative = os.path.relpath(path, repo)
            module_marked = any(isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark"
                                                                     for t in node.targets) and cuda_only(node.value)
                                for node in tree.body)
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                    if module_marked or any(cuda_only(d) for d in node.decorator_list):
                        found.append(f"{relative}::{node.name}")
    return found


def _cuda_tests_commands(ctx: Context) -> List[Command]:
    tests = cuda_only_tests(ctx.repo)
    if not tests:
        return []
    return [Command([ctx.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                     f"--junitxml={ctx.path('cuda_tests.xml')}", *tests])]


def junit_counts(path: str) -> Dict[str, object]:
    """Counts (tests, failures, errors, skipped) and the first failure of a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    first = None
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            found = case.find(kind)
            if found is not None and first is None:
                message = (found.get("message") or found.text or "").strip().splitlines()
                first = f"{case.get('classname')}::{case.get('name')}: {message[0] if message else kind}"
    counts["first_failure"] = first
    return counts


def _cuda_tests_rows(ctx: Context, outcomes: List[Outcome]) -> List[Row]:
    if not outcomes:
        return [Row("cuda-tests", FAILED, "no CUDA-only test found in tests/ (skipif(not torch.cuda.is_available()))",
                    0.0)]
    counts = junit_counts(ctx.path("cuda_tests.xml"))
    failed = counts["failures"] + counts["errors"]
    passed = counts["tests"] - failed - counts["skipped"]
    text = f"{passed} passed, {failed} failed, {counts['skipped']} skipped of {counts['tests']}"
    if failed:
        text += f"; first: {counts['first_failure']}"
    status = OK if not failed and passed > 0 else FAILED
    return [Row("cuda-tests", status, text, outcomes[-1].seconds)]


# ------------------------------------------------------------------------------ training throughput


def _train_part(key: str, budget: int) -> Part:
    out_name = f"train_{key}.json"

    def commands(ctx: Context) -> List[Command]:
        return [*_synthetic_data(ctx),
                _worker(ctx, "train", "--model", key, "--data-root", ctx.data_root, "--out", ctx.path(out_name))]

    def summarise(ctx: Context, outcomes: List[Outcome]) -> List[Row]:
        return [train_row(f"train-{key}", _read_json(ctx.path(out_name)), outcomes[-1].seconds)]

    return Part(f"train-{key}", budget, commands, summarise, TRAIN_MODELS[key][1])


def _rate(measured: dict, unit: str) -> str:
    return (f"{measured['per_second']:,.0f} {unit}/s [{measured['slowest']:,.0f}-{measured['fastest']:,.0f}] "
            f"(batch {measured['batch']})")


def train_row(part: str, result: dict, seconds: float) -> Row:
    """A training part's row from its worker's JSON."""
    pieces = [result["name"]]
    if ALIGN in result:
        pieces.append("stage 1 " + _rate(result[ALIGN], "features"))
    pieces.append(("stage 2 " if ALIGN in result else "train ") + _rate(result[GUIDE], "img"))
    pieces.append("inference " + _rate(result["infer"], "img"))
    if result.get("gpu_mem_gib") is not None:
        pieces.append(f"peak GPU memory {result['gpu_mem_gib']:.2f} GiB")
    losses = result["losses"]
    bad = [phase for phase, loss in losses.items() if not loss["finite"]]
    pieces.append(("losses NOT finite in " + ", ".join(bad)) if bad else
                  "losses finite (last " + ", ".join(f"{phase} {loss['last']:.3g}" for phase, loss in losses.items())
                  + ")")
    pieces.append(f"{result['runs']} timed steps each after {result['warmup']}, AMP {'on' if result['amp'] else 'off'}")
    if result.get("note"):
        pieces.append(result["note"])
    status = OK if losses and not bad else FAILED
    return Row(part, status, "; ".join(pieces), seconds)


class SyntheticBatches:
    """Training batches of the synthetic dataset, as :func:`agreid.benchmarks.train.image_batch`
    makes random ones: ``batch // 4`` identities x 4 images through the training transforms
    (identities and cameras relabelled from 0), decoded once and held in memory (not timed)."""

    def __init__(self, data_root: str, max_images: int = POOL_IMAGES):
        self.data_root, self.max_images, self.pools = data_root, max_images, {}

    def pool(self, size):
        key = tuple(size)
        if key not in self.pools:
            import torch

            import agreid  # first: its fixes to fastreid
            from agreid.data.transforms import build_agreid_transforms
            from fastreid.config import get_cfg
            from fastreid.data.common import CommDataset
            from fastreid.data.datasets import DATASET_REGISTRY

            cfg = get_cfg()
            agreid.add_agreid_config(cfg)
            cfg.merge_from_file(os.path.join(REPO, "configs", "OccDuke", "agreid.yml"))
            cfg.merge_from_list(["INPUT.SIZE_TRAIN", list(key)])
            items = DATASET_REGISTRY.get("SyntheticOccluded")(root=self.data_root).train[:self.max_images]
            dataset = CommDataset(items, build_agreid_transforms(cfg, is_train=True), relabel=True)
            samples = [dataset[i] for i in range(len(dataset))]
            images = torch.stack([s["images"] for s in samples])
            targets = torch.tensor([s["targets"] for s in samples])
            camids = torch.tensor([s["camids"] for s in samples])
            by_id = [torch.nonzero(targets == pid).flatten() for pid in targets.unique()]
            self.pools[key] = (images, targets, camids, by_id)
        return self.pools[key]

    def image_batch(self, batch, size, num_classes, num_cameras, device):
        """agreid.benchmarks.train.image_batch's signature and batches, from the synthetic images."""
        import torch

        images, targets, camids, by_id = self.pool(size)
        if int(targets.max()) >= num_classes or int(camids.max()) >= num_cameras:
            raise ValueError(f"the synthetic data has {int(targets.max()) + 1} identities and {int(camids.max()) + 1} "
                             f"cameras, the model {num_classes} and {num_cameras}")
        generator = torch.Generator().manual_seed(0)

        num_ids = max(-(-batch // 4), 1)

        def make() -> dict:
            # Distinct identities while there are enough; always exactly ``batch`` images.
            ids = (torch.randperm(len(by_id), generator=generator)[:num_ids] if len(by_id) >= num_ids
                   else torch.randint(len(by_id), (num_ids,), generator=generator))
            index = torch.cat([by_id[i][torch.randint(len(by_id[i]), (4,), generator=generator)] for i in ids])[:batch]
            return {"images": images[index].to(device), "targets": targets[index].to(device),
                    "camids": camids[index].to(device)}

        return make


def train_worker(key: str, data_root: str, out: str, device_name: str, runs: int, warmup: int, batch: int,
                 batch_infer: int) -> dict:
    """Time the training phases and inference of one model with :mod:`agreid.benchmarks.train`'s functions.

    They build the model, its phase optimisers and the interleaved timer; here the image batches
    come from the synthetic data, and the stepper also records each phase's loss (finite or not)
    without synchronising the device.
    """
    import types

    import torch

    from agreid.benchmarks import train as bt
    from fastreid.utils.events import EventStorage

    losses: Dict[str, dict] = {}

    class LossCheckingStepper(bt.Stepper):
        """agreid.benchmarks.train.Stepper; the model call also keeps the summed loss of each phase."""

        def __init__(self, model, device, amp):
            super().__init__(model, device, amp)

            def forward(batched_inputs, _model=model):
                output = _model(batched_inputs)
                if isinstance(output, dict) and _model.training:
                    total = sum(output.values()).detach().float()
                    record = losses.setdefault(getattr(_model, "phase", None) or "train",
                                               {"finite": torch.ones((), dtype=torch.bool, device=total.device),
                                                "steps": 0})
                    record["finite"] = record["finite"] & torch.isfinite(total)
                    record["last"], record["steps"] = total, record["steps"] + 1
                return output

            self.model = forward

    batches = SyntheticBatches(data_root)
    device = torch.device(device_name)
    amp = device.type == "cuda"
    args = types.SimpleNamespace(amp=amp)
    timer = bt.Timer(device, runs, warmup)
    config, label = TRAIN_MODELS[key]
    with EventStorage():
        if config is None:
            row = bt.measure_fastreid(args, device.type, batch, batch_infer, timer, LossCheckingStepper,
                                      batches.image_batch)
        else:
            cfg = bt.agreid_cfg(config, device.type)  # random weights
            row = bt.measure_agreid(label, cfg, args, batch, batch_infer, timer, LossCheckingStepper,
                                    batches.image_batch)
    result = {"name": row["name"] if config is None else label, "runs": runs, "warmup": warmup, "amp": amp,
              "gpu_mem_gib": row.get("gpu_mem"), "note": row.get("note"), "losses": {}}
    for kind in (ALIGN, GUIDE, "infer"):
        if kind in row:
            measured = row[kind]
            result[kind] = {"per_second": measured.per_second, "batch": measured.batch,
                            "slowest": measured.batch / max(measured.times),
                            "fastest": measured.batch / min(measured.times)}
    for phase, record in losses.items():
        result["losses"][phase] = {"finite": bool(record["finite"]), "last": float(record["last"]),
                                   "steps": record["steps"]}
    with open(out, "w") as handle:
        json.dump(result, handle, indent=1)
    return result


# ------------------------------------------------------------------------------ eval


EVAL_SCALE = "market"
EVAL_DIM, EVAL_NOISE = 1280, 3.0
# A scale of a few hundred images for smoke tests of the worker on a CPU: (queries, gallery, ids), cameras.
SMOKE_SCALE = ("smoke", (100, 600, 40), 4)


def _eval_commands(ctx: Context) -> List[Command]:
    return [_worker(ctx, "eval", "--out", ctx.path("eval.json"), "--work", ctx.path("eval"))]


def eval_worker(out: str, work: str, scale: str = EVAL_SCALE, dim: int = EVAL_DIM) -> dict:
    """evaluate_rank and re_ranking on :mod:`agreid.benchmarks.evaluation`'s features: CPU in its
    worker processes with CUDA hidden; CUDA (when present) in this process through the same worker
    function, after one untimed call (CUDA's start-up)."""
    import numpy as np

    from agreid.benchmarks import evaluation as be

    name, sizes, cameras = SMOKE_SCALE
    be.SCALES.setdefault(name, sizes)
    be.NUM_CAMERAS.setdefault(name, cameras)
    data_dir = os.path.join(work, scale)
    os.makedirs(data_dir, exist_ok=True)
    features, pids, camids, num_query = be.make_features(scale, dim, EVAL_NOISE)
    np.save(os.path.join(data_dir, "features.npy"), features)
    np.savez(os.path.join(data_dir, "meta.npz"), pids=pids, camids=camids, num_query=num_query)
    del features

    hidden = dict(os.environ)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        cpu = {task: be.measure(f"ours-{task}", data_dir, 1, save_output=task == "rerank")
               for task in ("eval", "rerank")}
    finally:
        os.environ.clear()
        os.environ.update(hidden)
    import torch

    os.environ["BENCH_SAVE_OUTPUT"] = "1"
    here = {}
    for task in ("eval", "rerank"):
        warm, timed = os.path.join(data_dir, f"warm-{task}"), os.path.join(data_dir, f"device-{task}")
        os.makedirs(warm, exist_ok=True)
        os.makedirs(timed, exist_ok=True)
        be.worker(f"ours-{task}", data_dir, warm)
        be.worker(f"ours-{task}", data_dir, timed)
        here[task] = (_read_json(os.path.join(timed, "result.json")), timed)
    num_gallery = be.SCALES[scale][1]
    result = {"scale": f"{scale} {num_query}x{num_gallery}", "dim": dim,
              "device": "cuda" if torch.cuda.is_available() else "cpu"}
    for task in ("eval", "rerank"):
        (cpu_result, cpu_dir), (device_result, device_dir) = cpu[task], here[task]
        entry = {"cpu_s": cpu_result["seconds"], "device_s": device_result["seconds"],
                 "d_map": abs(cpu_result["mAP"] - device_result["mAP"]) * 100,
                 "d_r1": abs(cpu_result["R1"] - device_result["R1"]) * 100, "mAP": device_result["mAP"] * 100}
        if task == "rerank":
            entry["max_ddist"] = float(np.abs(np.load(os.path.join(cpu_dir, "dist.npy"))
                                              - np.load(os.path.join(device_dir, "dist.npy"))).max())
        result[task] = entry
    with open(out, "w") as handle:
        json.dump(result, handle, indent=1)
    shutil.rmtree(data_dir, ignore_errors=True)  # features and distance matrices: about 1 GB at Market scale
    return result


# Agreement limits: mAP/Rank-1 in points, re-ranked distances absolute.
EVAL_MAX_DMAP, RERANK_MAX_DDIST = 0.01, 1e-4


def eval_rows(result: dict, seconds: float) -> List[Row]:
    """Two rows (evaluate_rank, re_ranking) from the eval worker's JSON."""
    rows = []
    for task, function in (("eval", "evaluate_rank"), ("rerank", "re_ranking")):
        entry = result[task]
        agree = entry["d_map"] <= EVAL_MAX_DMAP and entry["d_r1"] <= EVAL_MAX_DMAP
        speedup = entry["cpu_s"] / max(entry["device_s"], 1e-9)
        text = (f"{function} {result['scale']} (dim {result['dim']}): CPU {entry['cpu_s']:.2f} s, "
                f"{result['device'].upper()} {entry['device_s']:.2f} s (x{speedup:.1f}); "
                f"mAP {entry['mAP']:.2f}, |dmAP| {entry['d_map']:.1e} pt, |dR1| {entry['d_r1']:.1e} pt")
        if "max_ddist" in entry:
            text += f", max|ddist| {entry['max_ddist']:.1e}"
            agree = agree and entry["max_ddist"] <= RERANK_MAX_DDIST
        rows.append(Row(f"eval: {function}", OK if agree else FAILED, text, seconds / 2))
    return rows


def _eval_rows(ctx: Context, outcomes: List[Outcome]) -> List[Row]:
    return eval_rows(_read_json(ctx.path("eval.json")), outcomes[-1].seconds)


# ------------------------------------------------------------------------------ launch


def _launch_commands(ctx: Context) -> List[Command]:
    gpus = max(ctx.num_gpus, 1)
    batch = str(16 * gpus)
    train_args = ["--config-file", "configs/Synthetic/agreid.yml", "SOLVER.IMS_PER_BATCH", batch,
                  "SOLVER.STAGE1.IMS_PER_BATCH", batch, *LAUNCH_OPTS, "DATASETS.ROOT", ctx.data_root,
                  "OUTPUT_DIR", ctx.path("launch")]
    if gpus == 1:  # one GPU: torchrun's single process still joins an NCCL group
        launch = [ctx.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                  os.path.join("tools", "train_net.py"), *train_args]
    else:
        launch = _tool(ctx, "train_net.py", "--num-gpus", str(gpus), "--dist-url", "auto", *train_args)
    return [*_synthetic_data(ctx), Command(launch)]


def _launch_rows(ctx: Context, outcomes: List[Outcome]) -> List[Row]:
    gpus = max(ctx.num_gpus, 1)
    out = ctx.path("launch")
    log = os.path.join(out, "log.txt")
    text = open(log).read() if os.path.isfile(log) else ""
    finished = os.path.isfile(os.path.join(out, "model_final.pth")) and "Evaluation results" in text
    how = (f"--num-gpus {gpus} (NCCL, {gpus} processes)" if gpus > 1 else
           "1 GPU: torchrun --standalone --nproc_per_node 1 (NCCL group of one; nothing to all-reduce)")
    result = f"{how}; tiny config, both phases, 1 epoch each, batch {16 * gpus}: " + (
        "model_final.pth written and evaluated" if finished else "no model_final.pth or no evaluation in log.txt")
    return [Row("launch", OK if finished else FAILED, result, outcomes[-1].seconds)]


# ------------------------------------------------------------------------------ faiss


def _faiss_commands(ctx: Context) -> List[Command]:
    return [_worker(ctx, "faiss", "--out", ctx.path("faiss.json"))]


def faiss_worker(out: str, num_base: int = 100_000, num_query: int = 5_000, dim: int = 256, k: int = 50) -> dict:
    """Flat inner-product search on GPU 0 vs the CPU: time and agreement; or why there is none."""
    try:
        import faiss
    except ImportError as error:
        result = {"status": NOT_INSTALLED, "result": f"faiss is not importable ({error})"}
    else:
        if faiss.get_num_gpus() == 0:
            result = {"status": NOT_INSTALLED,
                      "result": f"faiss {faiss.__version__} has no GPU support (faiss.get_num_gpus() == 0): "
                                "faiss-gpu is not installed"}
        else:
            import numpy as np

            rng = np.random.default_rng(0)
            base = rng.standard_normal((num_base, dim), dtype=np.float32)
            queries = rng.standard_normal((num_query, dim), dtype=np.float32)
            faiss.normalize_L2(base)
            faiss.normalize_L2(queries)
            cpu_index = faiss.IndexFlatIP(dim)
            cpu_index.add(base)
            start = time.perf_counter()
            cpu_distances, cpu_ids = cpu_index.search(queries, k)
            cpu_seconds = time.perf_counter() - start
            resources = faiss.StandardGpuResources()
            gpu_index = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
            gpu_index.search(queries[:100], k)  # warm-up
            start = time.perf_counter()
            gpu_distances, gpu_ids = gpu_index.search(queries, k)
            gpu_seconds = time.perf_counter() - start
            overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(cpu_ids, gpu_ids)])
            top1 = float(np.mean(cpu_ids[:, 0] == gpu_ids[:, 0]))
            d_max = float(np.abs(cpu_distances - gpu_distances).max())
            status = OK if top1 >= 0.999 and d_max <= 1e-3 else FAILED
            result = {"status": status,
                      "result": f"faiss {faiss.__version__}, {faiss.get_num_gpus()} GPU(s): flat IP search "
                                f"{num_query:,} x {num_base:,} (dim {dim}, k {k}) CPU {cpu_seconds:.2f} s, GPU "
                                f"{gpu_seconds:.2f} s (x{cpu_seconds / max(gpu_seconds, 1e-9):.0f}); top-1 equal "
                                f"{top1:.4f}, top-{k} overlap {overlap:.4f}, max|dD| {d_max:.1e}"}
    with open(out, "w") as handle:
        json.dump(result, handle)
    return result


def _faiss_rows(ctx: Context, outcomes: List[Outcome]) -> List[Row]:
    result = _read_json(ctx.path("faiss.json"))
    return [Row("faiss-gpu", result["status"], result["result"], outcomes[-1].seconds)]


# ------------------------------------------------------------------------------ synthclip


def _synthclip_commands(ctx: Context) -> List[Command]:
    captions = ctx.path("captions")
    commands = []
    if not os.path.isfile(os.path.join(captions, "SyntheticCaptions", "done.json")):
        commands.append(Command(_tool(ctx, "make_synthetic.py", "--root", captions, "--preset", "pretrain-tiny",
                                      "--seed", "0")))
    # pretrain-tiny: 960 pairs, 7 steps of 128 an epoch; enough epochs for SYNTHCLIP_STEPS steps.
    commands.append(Command(_tool(ctx, "pretrain_clip.py", "--data", os.path.join(captions, "SyntheticCaptions"),
                                  "--output", ctx.path("synthclip", "SynthCLIP-Tiny.pt"),
                                  "--epochs", str(SYNTHCLIP_STEPS // 7 + 1), "--max-steps", str(SYNTHCLIP_STEPS),
                                  "--workers", "4", "--force", "--no-resume")))
    return commands


def _synthclip_rows(ctx: Context, outcomes: List[Outcome]) -> List[Row]:
    from agreid.synthclip import read_synthclip_record

    record = read_synthclip_record(ctx.path("synthclip", "SynthCLIP-Tiny.pt"))
    config = record["config"]
    finite = record["final_loss"] == record["final_loss"] and abs(record["final_loss"]) != float("inf")
    text = (f"{config['model']}, batch {config['batch_size']}, {record['device']}: {record['steps']} steps in "
            f"{record['seconds']:.1f} s = {record['seconds'] / max(record['steps'], 1):.3f} s/step (first step and "
            f"data loading, 4 workers, included); final loss {record['final_loss']:.3f}")
    return [Row("synthclip", OK if finite and record["steps"] > 0 else FAILED, text, outcomes[-1].seconds)]


# ------------------------------------------------------------------------------ parts, running


PARTS: List[Part] = [  # budgets sum to DEFAULT_BUDGET; the heaviest parts come last
    Part("cuda-tests", 50, _cuda_tests_commands, _cuda_tests_rows, "the suite's CUDA-only tests"),
    Part("launch", 80, _launch_commands, _launch_rows, "--num-gpus N on all GPUs, tiny config"),
    Part("eval", 60, _eval_commands, _eval_rows, "evaluate_rank / re_ranking, CUDA vs CPU, Market scale"),
    Part("faiss-gpu", 25, _faiss_commands, _faiss_rows, "faiss flat search on the GPU vs the CPU"),
    Part("synthclip", 45, _synthclip_commands, _synthclip_rows, "SynthCLIP pretraining steps"),
    _train_part("agreid", 80),
    _train_part("clipreid", 75),
    _train_part("fastreid-vit", 55),
]


def _descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (Linux /proc; empty elsewhere). torchrun's workers run in a
    session of their own, so killing the launcher's process group would miss them."""
    parents: Dict[int, List[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parents.setdefault(int(handle.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _signal(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to ``proc`` and all it started, SIGKILL to what is left 5 s later."""
    tree = _descendants(proc.pid)
    _signal([proc.pid, *tree], signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    _signal([proc.pid, *tree, *_descendants(proc.pid)], signal.SIGKILL)
    proc.wait()


def run_command(command: Command, timeout: float, log_path: str, cwd: str = REPO) -> Outcome:
    """Run ``command`` with its output in ``log_path``; at ``timeout`` stop it and all it started
    (also on Ctrl-C: the command runs in a session of its own, which the terminal does not signal)."""
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command.argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **command.env), start_new_session=True)
        try:
            returncode = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            _stop(proc)
            returncode = None
        except BaseException:
            _stop(proc)
            raise
    with open(log_path, errors="replace") as log:
        return Outcome(returncode, log.read(), time.monotonic() - start)


def run_part(part: Part, ctx: Context, deadline: float) -> List[Row]:
    """Run a part's commands in order within its budget and the check's deadline; its rows."""
    start = time.monotonic()
    part_deadline = min(start + part.budget, deadline)
    if part_deadline - start < 5:
        return [Row(part.name, SKIPPED, f"no time left of the check's budget (needs up to {part.budget} s)", 0.0)]
    outcomes = []
    try:
        commands = part.commands(ctx)
        for index, command in enumerate(commands):
            log_path = ctx.path(f"{part.name}.{index}.log")
            print(f"gpu-check: {part.name}: {command}", file=sys.stderr, flush=True)
            outcome = run_command(command, part_deadline - time.monotonic(), log_path)
            outcomes.append(outcome)
            if outcome.returncode is None:
                return [Row(part.name, TIMEOUT, f"stopped after {part_deadline - start:.0f} s (its budget: "
                            f"{part.budget} s); last output: "
                            f"{error_line(outcome.output)} (log: {log_path})", time.monotonic() - start)]
            if outcome.returncode != 0:
                return [Row(part.name, FAILED, f"exit status {outcome.returncode}: {error_line(outcome.output)} "
                            f"(log: {log_path})", time.monotonic() - start)]
        rows = part.summarise(ctx, outcomes)
    except Exception as error:  # a summary that cannot read its results is a failed part, not a crash
        return [Row(part.name, FAILED, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                    time.monotonic() - start)]
    elapsed = time.monotonic() - start
    return [row._replace(seconds=elapsed if len(rows) == 1 else row.seconds) for row in rows]


def select_parts(names: Optional[str]) -> List[Part]:
    if not names:
        return list(PARTS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {part.name: part for part in PARTS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"error: unknown part(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [known[n] for n in wanted]


def make_context(args, num_gpus: int) -> Context:
    work = os.path.join(os.path.abspath(args.work_dir), time.strftime("%Y%m%d-%H%M%S"))
    data_root = os.path.abspath(args.data_root)
    ctx = Context(work=work, data_root=data_root, num_gpus=num_gpus)
    if not ctx.synthetic_ready:
        ctx.data_root = os.path.join(work, "datasets")
    return ctx


def machine_line(torch_module, num_gpus: int) -> str:
    names = ", ".join(sorted({torch_module.cuda.get_device_name(i) for i in range(num_gpus)}))
    return (f"gpu-check: {num_gpus} x {names}; torch {torch_module.__version__}, CUDA {torch_module.version.cuda}; "
            f"{time.strftime('%Y-%m-%d %H:%M')}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="datasets",
                        help="where SyntheticOccluded is (used when complete, else generated under the work folder)")
    parser.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="logs and outputs (a folder per check)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="seconds for the whole check")
    parser.add_argument("--parts", default=None, help=f"comma-separated subset of: {', '.join(p.name for p in PARTS)}")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each part's commands, run nothing (no CUDA needed)")
    # A part's own work, in a subprocess of the check.
    parser.add_argument("--worker", choices=("train", "eval", "faiss"), help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=sorted(TRAIN_MODELS), default="agreid", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=TRAIN_RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=TRAIN_WARMUP, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=TRAIN_BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--batch-infer", type=int, default=INFER_BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--eval-scale", default=EVAL_SCALE, help=argparse.SUPPRESS)
    parser.add_argument("--eval-dim", type=int, default=EVAL_DIM, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_worker(args) -> int:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.worker == "train":
        train_worker(args.model, os.path.abspath(args.data_root), args.out, device, args.runs, args.warmup,
                     args.batch, args.batch_infer)
    elif args.worker == "eval":
        eval_worker(args.out, args.work, args.eval_scale, args.eval_dim)
    else:
        faiss_worker(args.out)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    parts = select_parts(args.parts)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print(NO_CUDA_LINE)
        return 0
    num_gpus = torch.cuda.device_count() if cuda else 0
    ctx = make_context(args, num_gpus)
    if args.dry_run:
        print(f"gpu-check --dry-run: {num_gpus} GPU(s) seen; work folder {ctx.work}; data {ctx.data_root}")
        for part in parts:
            print(f"[{part.name}] budget {part.budget} s: {part.description}")
            for command in part.commands(ctx) or []:
                print(f"  {command}")
        return 0
    os.makedirs(ctx.work, exist_ok=True)
    deadline = time.monotonic() + args.budget
    rows: List[Row] = []
    for part in parts:
        rows += run_part(part, ctx, deadline)
        print(f"gpu-check: {part.name}: {rows[-1].status} ({rows[-1].seconds:.0f} s)", file=sys.stderr, flush=True)
    print(machine_line(torch, num_gpus))
    print()
    print(format_table(rows))
    return 0 if all(row.status in PASSING for row in rows) else 1

