"""Throughput of AG-ReID's two training phases and of inference, beside fastreid's Baseline.

Three models, random weights, random batches (no data loading is timed):

- AG-ReID with CLIP ViT-B/16, stride 12, 256x128 (``configs/Base-AGReID.yml``);
- fastreid's own ``Baseline`` with its TransReID-style ViT-B/16 (``build_vit_backbone``),
  stride 12, 256x128, BNNeck head, ID + triplet losses (ResNet-50 if its ViT does not build);
- AG-ReID with the tiny CLIP, 128x64 (``configs/Synthetic/agreid.yml``).

Measured in rounds of one step of each kind (interleaved, so that the numbers compared share
the load of a busy machine); medians of ``--runs`` timed rounds after ``--warmup`` untimed ones:

- stage 2 (phase ``guide``): forward + backward + Adam step on an image batch, train mode;
- stage 1 (phase ``align``): the same on a batch of cached features (SOLVER.STAGE1.IMS_PER_BATCH);
- inference: eval-mode forward without gradients.

From these, the cost of one epoch of each stage on a dataset of ``--dataset-size`` images
(Occluded-Duke's 15,618): stage 1 = N/64 align steps + the one-off feature cache (N eval-mode
image forwards) spread over the stage-1 epochs; stage 2 = N images through guide steps.

    python tools/benchmark_train.py                          # CPU, or CUDA when present
    python tools/benchmark_train.py --device cuda --amp --batch-vit 64 --batch-infer-vit 128
"""
import argparse
import gc
import logging
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Tuple

import torch

import agreid
from agreid.engine import AGReIDTrainer
from agreid.phases import ALIGN, GUIDE
from agreid.experiments.common import REPO
from fastreid.config import get_cfg
from fastreid.modeling import build_model
from fastreid.solver import build_optimizer
from fastreid.utils.events import EventStorage
from tabulate import tabulate

# Occluded-Duke: training images and identities, cameras.
OCCDUKE_TRAIN_IMAGES = 15618
OCCDUKE_IDS = 702
OCCDUKE_CAMERAS = 8
# Images per identity in a stage-2 batch (NaiveIdentitySampler's NUM_INSTANCE).
IMAGES_PER_ID = 4
MODELS = ("agreid-vit", "fastreid-vit", "agreid-tiny")
# ViT-B/16 batch and timed runs on a CPU: a 64-image step takes over a minute there.
CPU_BATCH_VIT = 16
CPU_RUNS_VIT = 3


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda when a GPU is visible, else cpu")
    parser.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler on CUDA (ignored on CPU)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="models to measure")
    parser.add_argument("--runs", type=int, default=5, help="timed steps per measurement (the median is reported)")
    parser.add_argument("--runs-vit", type=int, default=None,
                        help="timed steps of the ViT-B/16 models (default: 3 on CPU, --runs on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    parser.add_argument("--batch", type=int, default=64, help="stage-2 batch of the tiny config")
    parser.add_argument("--batch-infer", type=int, default=64, help="inference batch of the tiny config")
    parser.add_argument("--batch-vit", type=int, default=None,
                        help="stage-2 batch of the ViT-B/16 models (default: 16 on CPU, --batch on CUDA)")
    parser.add_argument("--batch-infer-vit", type=int, default=None,
                        help="inference batch of the ViT-B/16 models (default: 16 on CPU, --batch-infer on CUDA)")
    parser.add_argument("--dataset-size", type=int, default=OCCDUKE_TRAIN_IMAGES,
                        help="training images N for the per-epoch estimates (Occluded-Duke: 15618)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    return parser.parse_args(argv)


# ------------------------------------------------------------------ machine
def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 ** 3 if sys.platform == "darwin" else 1024 ** 2)


# ------------------------------------------------------------------ configs
def agreid_cfg(config_file: str, device: str):
    """An AG-ReID config as tools/train_net.py builds it, random CLIP weights, Occluded-Duke sizes."""
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config_file))
    cfg.merge_from_list([
        "MODEL.DEVICE", device,
        "MODEL.BACKBONE.PRETRAIN", "none",
        "MODEL.BACKBONE.PRETRAIN_PATH", "",  # the tiny config names its SynthCLIP file: random weights instead
        "MODEL.HEADS.NUM_CLASSES", OCCDUKE_IDS,
        "MODEL.BACKBONE.NUM_CAMERAS", OCCDUKE_CAMERAS,
    ])
    return cfg


def fastreid_cfg(device: str, backbone: str):
    """fastreid's Baseline as in its bagtricks_vit config (TransReID-style ViT-B/16, stride 12).

    ``backbone`` is ``build_vit_backbone`` or ``build_resnet_backbone`` (the fallback).
    """
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    base = agreid_cfg("configs/Base-AGReID.yml", device)
    cfg.merge_from_list([
        "MODEL.DEVICE", device,
        "MODEL.META_ARCHITECTURE", "Baseline",
        "MODEL.BACKBONE.NAME", backbone,
        "MODEL.BACKBONE.PRETRAIN", "",
        "MODEL.HEADS.NAME", "EmbeddingHead",
        "MODEL.HEADS.NORM", "BN",
        "MODEL.HEADS.WITH_BNNECK", True,
        "MODEL.HEADS.NECK_FEAT", "before",
        "MODEL.HEADS.EMBEDDING_DIM", 0,
        "MODEL.HEADS.CLS_LAYER", "Linear",
        "MODEL.HEADS.NUM_CLASSES", OCCDUKE_IDS,
        "MODEL.LOSSES.NAME", ("CrossEntropyLoss", "TripletLoss"),
        "MODEL.LOSSES.CE.EPSILON", 0.1,
        "MODEL.LOSSES.TRI.MARGIN", 0.3,
        "MODEL.LOSSES.TRI.HARD_MINING", True,
        "MODEL.PIXEL_MEAN", list(base.MODEL.PIXEL_MEAN),
        "MODEL.PIXEL_STD", list(base.MODEL.PIXEL_STD),
        "INPUT.SIZE_TRAIN", list(base.INPUT.SIZE_TRAIN),
        "INPUT.SIZE_TEST", list(base.INPUT.SIZE_TEST),
        "SOLVER.OPT", "Adam",
        "SOLVER.BASE_LR", base.SOLVER.BASE_LR,
        "SOLVER.WEIGHT_DECAY", base.SOLVER.WEIGHT_DECAY,
    ])
    if backbone == "build_vit_backbone":
        cfg.merge_from_list([
            "MODEL.BACKBONE.DEPTH", "base",
            "MODEL.BACKBONE.FEAT_DIM", 768,
            "MODEL.BACKBONE.STRIDE_SIZE", (base.MODEL.BACKBONE.STRIDE,) * 2,
            "MODEL.HEADS.POOL_LAYER", "Identity",
        ])
    else:
        cfg.merge_from_list([
            "MODEL.BACKBONE.DEPTH", "50x",
            "MODEL.BACKBONE.FEAT_DIM", 2048,
            "MODEL.BACKBONE.LAST_STRIDE", 1,
            "MODEL.HEADS.POOL_LAYER", "GlobalAvgPool",
        ])
    return cfg


# ------------------------------------------------------------------ timing
class Step(NamedTuple):
    """One kind of step to time: ``prepare()`` and ``make_inputs()`` untimed, ``run(inputs)`` timed."""

    run: Callable[[dict], None]
    make_inputs: Callable[[], dict]
    prepare: Callable[[], None]
    batch: int


class Measurement(NamedTuple):
    """Seconds of each timed step (one per round) and the batch each processed."""

    times: List[float]
    batch: int

    @property
    def seconds(self) -> float:
        """Median seconds per step."""
        return statistics.median(self.times)

    @property
    def per_second(self) -> float:
        """Median items (images or features) per second."""
        return self.batch / self.seconds

    def __str__(self) -> str:
        slowest, fastest = self.batch / max(self.times), self.batch / min(self.times)
        return f"{self.per_second:,.1f} [{slowest:,.1f}-{fastest:,.1f}]"


class Timer:
    """Times several kinds of step in rounds, one step of each kind per round.

    Interleaving puts the steps compared with each other (stage 1 vs stage 2 vs inference)
    under the same load of a shared machine; CUDA is synchronised around each timed call.
    """

    def __init__(self, device: torch.device, runs: int, warmup: int):
        self.device, self.runs, self.warmup = device, runs, warmup

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, steps: Dict[str, Step]) -> Dict[str, Measurement]:
        """``warmup`` untimed rounds, then ``runs`` timed rounds over ``steps``."""
        times: Dict[str, List[float]] = {name: [] for name in steps}
        for index in range(self.warmup + self.runs):
            for name, step in steps.items():
                step.prepare()
                inputs = step.make_inputs()
                self._sync()
                start = time.perf_counter()
                step.run(inputs)
                self._sync()
                if index >= self.warmup:
                    times[name].append(time.perf_counter() - start)
        return {name: Measurement(times[name], step.batch) for name, step in steps.items()}


def image_batch(batch: int, size, num_classes: int, num_cameras: int, device: torch.device) -> Callable[[], dict]:
    """A maker of fresh fastreid batches: ``batch // 4`` identities x 4 images, 0-255 floats."""
    generator = torch.Generator().manual_seed(0)

    def make() -> dict:
        num_ids = max(batch // IMAGES_PER_ID, 1)
        targets = torch.randperm(num_classes, generator=generator)[:num_ids].repeat_interleave(IMAGES_PER_ID)[:batch]
        return {
            "images": (torch.rand(batch, 3, *size, generator=generator) * 255).to(device),
            "targets": targets.to(device),
            "camids": torch.randint(num_cameras, (batch,), generator=generator).to(device),
        }

    return make


class Stepper:
    """Optimisation and inference steps of a fastreid model, with AMP on CUDA when asked."""

    def __init__(self, model: torch.nn.Module, device: torch.device, amp: bool):
        self.model, self.device = model, device
        self.amp = amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)

    def _autocast(self):
        return torch.autocast(self.device.type, enabled=self.amp)

    def train_step(self, optimizer: torch.optim.Optimizer) -> Callable[[dict], None]:
        """forward + backward + optimiser step on one batch."""

        def step(batch: dict) -> None:
            optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss_dict = self.model(batch)
            self.scaler.scale(sum(loss_dict.values())).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

        return step

    def infer_step(self, batch: dict) -> None:
        """Forward without gradients."""
        with torch.no_grad(), self._autocast():
            self.model(batch)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (or of those requiring grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------- measuring
def measure_agreid(name: str, cfg, args, batch: int, batch_infer: int, timer: Timer,
                   stepper_class: type = Stepper, make_batch: Callable = image_batch) -> Dict[str, object]:
    """Stage-1 step, stage-2 step and inference of AG-ReID built from ``cfg``, interleaved.

    ``stepper_class`` and ``make_batch`` (:class:`Stepper`, :func:`image_batch`) are what
    ``agreid.benchmarks.gpu_check`` replaces: a stepper that checks the losses, real images.
    """
    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(0)
    model = build_model(cfg)
    stepper = stepper_class(model, device, args.amp)
    size = tuple(cfg.INPUT.SIZE_TRAIN)
    num_classes, num_cameras = cfg.MODEL.HEADS.NUM_CLASSES, cfg.MODEL.BACKBONE.NUM_CAMERAS
    align_batch = cfg.SOLVER.STAGE1.IMS_PER_BATCH
    generator = torch.Generator().manual_seed(1)

    def feature_batch() -> dict:
        # Stage 1 runs on cached features f_proj (B, embed_dim), as the trainer feeds them.
        return {
            "features": torch.randn(align_batch, model.backbone.embed_dim, generator=generator).to(device),
            "targets": torch.randint(num_classes, (align_batch,), generator=generator).to(device),
        }

    def phase(name: str) -> Callable[[], None]:
        def prepare() -> None:
            model.train()
            model.set_phase(name)
        return prepare

    # Each phase's optimiser over exactly its parameters, as the trainer builds them; the
    # text-feature table of stage 2 is built once, as at the phase switch.
    align_optimizer = AGReIDTrainer.build_phase_optimizer(cfg, model, ALIGN)
    guide_optimizer = AGReIDTrainer.build_phase_optimizer(cfg, model, GUIDE)
    model.build_text_features()
    measured = timer({
        ALIGN: Step(stepper.train_step(align_optimizer), feature_batch, phase(ALIGN), align_batch),
        GUIDE: Step(stepper.train_step(guide_optimizer), make_batch(batch, size, num_classes, num_cameras, device),
                      phase(GUIDE), batch),
        "infer": Step(stepper.infer_step, make_batch(batch_infer, size, num_classes, num_cameras, device),
                      model.eval, batch_infer),
    })
    row: Dict[str, object] = {
        "name": name, "size": size, "params": count_parameters(model),
        "guide_params": sum(p.numel() for _, p in model.trainable_parameters(GUIDE)),
        "stage1_epochs": cfg.SOLVER.STAGE1.MAX_EPOCH, "stage2_epochs": cfg.SOLVER.MAX_EPOCH,
        **measured,
    }
    del align_optimizer, guide_optimizer
    _finish(row, model, device)
    return row


def build_fastreid_baseline(device: str):
    """fastreid's Baseline with its ViT-B/16; ResNet-50 and the reason when the ViT fails to build."""
    try:
        cfg = fastreid_cfg(device, "build_vit_backbone")
        torch.manual_seed(0)
        return cfg, build_model(cfg), "ViT-B/16 s12 (build_vit_backbone)", None
    except Exception as error:  # any failure of fastreid's ViT is reported, then ResNet-50 stands in
        reason = f"fastreid's build_vit_backbone failed ({type(error).__name__}: {error}); using ResNet-50"
        cfg = fastreid_cfg(device, "build_resnet_backbone")
        torch.manual_seed(0)
        return cfg, build_model(cfg), "ResNet-50 (build_resnet_backbone)", reason


def measure_fastreid(args, device: str, batch: int, batch_infer: int, timer: Timer,
                     stepper_class: type = Stepper, make_batch: Callable = image_batch) -> Dict[str, object]:
    """Stage-2-style step (ID + triplet, Adam from fastreid's build_optimizer) and inference of Baseline
    (``stepper_class`` and ``make_batch`` as in :func:`measure_agreid`)."""
    cfg, model, backbone_name, reason = build_fastreid_baseline(device)
    torch_device = torch.device(device)
    stepper = stepper_class(model, torch_device, args.amp)
    size = tuple(cfg.INPUT.SIZE_TRAIN)
    optimizer, _ = build_optimizer(cfg, model)
    # fastreid's Baseline normalises the batch in place: every step gets a fresh one.
    measured = timer({
        GUIDE: Step(stepper.train_step(optimizer), make_batch(batch, size, OCCDUKE_IDS, OCCDUKE_CAMERAS, torch_device),
                      model.train, batch),
        "infer": Step(stepper.infer_step, make_batch(batch_infer, size, OCCDUKE_IDS, OCCDUKE_CAMERAS, torch_device),
                      model.eval, batch_infer),
    })
    row: Dict[str, object] = {
        "name": f"fastreid Baseline {backbone_name}", "size": size, "params": count_parameters(model),
        "guide_params": count_parameters(model, trainable_only=True), "note": reason, **measured,
    }
    del optimizer
    _finish(row, model, torch_device)
    return row


def _finish(row: Dict[str, object], model: torch.nn.Module, device: torch.device) -> None:
    """Record peak memory, then free the model before the next one is built."""
    row["rss"] = peak_rss_gib()
    if device.type == "cuda":
        row["gpu_mem"] = torch.cuda.max_memory_allocated(device) / 1024 ** 3
        torch.cuda.reset_peak_memory_stats(device)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ report
def epoch_costs(row: Dict[str, object], dataset_size: int) -> Dict[str, float]:
    """Seconds of one stage-1 and one stage-2 epoch on ``dataset_size`` images, and their ratio.

    Stage 1: N/64 align steps plus the feature cache (N eval-mode forwards, at the measured
    inference rate) spread over the stage-1 epochs. Stage 2: N images at the measured rate.
    The ratio is the median of the per-round ratios (steps of a round ran under the same load).
    """
    align, guide, infer = row[ALIGN], row[GUIDE], row["infer"]
    align_steps = dataset_size / align.batch

    def costs(t_align: float, t_guide: float, t_infer: float) -> Tuple[float, float, float]:
        cache = dataset_size * t_infer / infer.batch
        return cache, align_steps * t_align + cache / row["stage1_epochs"], dataset_size * t_guide / guide.batch

    cache, stage1, stage2 = costs(align.seconds, guide.seconds, infer.seconds)
    ratios = [s1 / s2 for _, s1, s2 in (costs(*t) for t in zip(align.times, guide.times, infer.times))]
    return {
        "cache": cache,
        "stage1": stage1,
        "stage2": stage2,
        "ratio": statistics.median(ratios),
        "ratio_range": (min(ratios), max(ratios)),
        "total1": align_steps * align.seconds * row["stage1_epochs"] + cache,
        "total2": stage2 * row["stage2_epochs"],
    }


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds:,.2f} s"


def report(rows: List[Dict[str, object]], args, device: torch.device) -> str:
    """The side-by-side table (metrics as rows, models as columns)."""
    n = args.dataset_size
    table = {
        "input (H x W)": lambda r: "x".join(map(str, r["size"])),
        "timed steps (after warm-up)": lambda r: f"{len(r[GUIDE].times)} (after {args.warmup})",
        "parameters (all / trained in stage 2)": lambda r: f"{r['params'] / 1e6:.1f}M / {r['guide_params'] / 1e6:.1f}M",
        "stage-2 step, images/s": lambda r: f"{r[GUIDE]} (batch {r[GUIDE].batch})",
        "stage-1 step, features/s (cached f_proj)": lambda r: f"{r[ALIGN]} (batch {r[ALIGN].batch})"
        if ALIGN in r else "n/a (one stage)",
        "inference, images/s": lambda r: f"{r['infer']} (batch {r['infer'].batch})",
        "stage-1 feature cache, once (N forwards)": lambda r: _duration(epoch_costs(r, n)["cache"])
        if ALIGN in r else "n/a",
        "stage-1 epoch (N/64 steps + cache/120)": lambda r: _duration(epoch_costs(r, n)["stage1"])
        if ALIGN in r else "n/a",
        "stage-2 epoch (N images)": lambda r: _duration(n / r[GUIDE].per_second),
        "stage-1 epoch / stage-2 epoch": lambda r: "{:.3f} [{:.3f}-{:.3f}]".format(
            epoch_costs(r, n)["ratio"], *epoch_costs(r, n)["ratio_range"]) if ALIGN in r else "n/a",
        "whole run (stage 1 + stage 2, 120 + 60 epochs)": lambda r: (
            f"{_duration(epoch_costs(r, n)['total1'])} + {_duration(epoch_costs(r, n)['total2'])}"
            if ALIGN in r else f"60 epochs: {_duration(60 * n / r[GUIDE].per_second)}"),
        "peak RSS so far": lambda r: f"{r['rss']:.2f} GiB",
    }
    if device.type == "cuda":
        table["peak GPU memory"] = lambda r: f"{r['gpu_mem']:.2f} GiB"
    headers = ["", *[r["name"] for r in rows]]
    body = [[metric, *[cell(r) for r in rows]] for metric, cell in table.items()]
    return tabulate(body, headers=headers, tablefmt="github")


def machine_line(device: torch.device, args) -> str:
    """CPU, cores, threads, torch version, device and precision."""
    parts = [
        f"CPU: {cpu_name()}",
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        f"torch {torch.__version__}",
        f"device {device.type}",
    ]
    if device.type == "cuda":
        parts.append(torch.cuda.get_device_name(device))
    parts.append("AMP fp16" if args.amp and device.type == "cuda" else "fp32")
    return "; ".join(parts)


def measure(model_name: str, args, device: torch.device) -> Dict[str, object]:
    """One column of the table: ``model_name`` is one of MODELS."""
    on_gpu = device.type == "cuda"
    if model_name == "agreid-tiny":
        cfg = agreid_cfg("configs/Synthetic/agreid.yml", device.type)
        timer = Timer(device, args.runs, args.warmup)
        return measure_agreid("AG-ReID tiny (AGReID-Tiny-ViT)", cfg, args, args.batch, args.batch_infer, timer)
    batch = args.batch_vit or (args.batch if on_gpu else CPU_BATCH_VIT)
    batch_infer = args.batch_infer_vit or (args.batch_infer if on_gpu else CPU_BATCH_VIT)
    timer = Timer(device, args.runs_vit or (args.runs if on_gpu else CPU_RUNS_VIT), args.warmup)
    if model_name == "agreid-vit":
        cfg = agreid_cfg("configs/Base-AGReID.yml", device.type)
        return measure_agreid("AG-ReID ViT-B/16 s12", cfg, args, batch, batch_infer, timer)
    return measure_fastreid(args, device.type, batch, batch_infer, timer)


def main(argv=None) -> int:
    """Measure the selected models and print the machine and one table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no GPU is visible", file=sys.stderr)
        return 2
    device_name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device_name)
    if args.amp and device.type != "cuda":
        print("note: --amp applies to CUDA only; CPU runs in fp32")

    print(machine_line(device, args))
    rows, notes = [], []
    start = time.perf_counter()
    # The models log their training accuracy to fastreid's event storage.
    with EventStorage():
        for model_name in args.models:
            print(f"measuring {model_name} ...", flush=True)
            rows.append(measure(model_name, args, device))
            if rows[-1].get("note"):
                notes.append(rows[-1]["note"])

    print()
    print(f"N = {args.dataset_size:,} training images; random weights, random inputs, no data loading; "
          "throughput = median [slowest-fastest] of the timed steps")
    print(report(rows, args, device))
    for note in notes:
        print(f"note: {note}")
    print(f"peak RSS {peak_rss_gib():.2f} GiB; benchmark took {time.perf_counter() - start:.0f} s")
    return 0

