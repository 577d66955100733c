"""Images per second of the deployed image encoder: eager PyTorch, the torch.export program
(.pt2), ONNX Runtime (both ONNX exporters), TorchScript (legacy) and torch.compile.

    python tools/benchmark_infer.py --weights deploy/occduke/image_encoder.safetensors --batch-size 32
    python tools/benchmark_infer.py --config-file configs/Synthetic/agreid.yml --rounds 3   # random weights

All back-ends run the same batch (random 0-255 images of the encoder's input size, camera ids
when SIE is on) in this process. Each is warmed up, then timed over ``--iters`` batches (its
figure: the median batch); with ``--rounds N`` the back-ends take turns N times (so a change of
load on the machine touches all of them alike) and the table gives the median of the N figures
with their range. ``pt2`` is the file ``tools/export_image_encoder.py`` writes, run as
``torch.export.load(path).module()``; ``onnxruntime`` uses torch's current ONNX exporter
(``dynamo=True``; the legacy one where onnxscript is missing), ``onnxruntime-legacy`` the
TorchScript-based one. The table gives images/s, ms per batch and the largest difference of
each back-end's features from eager PyTorch's. ``torch.compile`` needs a C++ compiler on a CPU
and is reported as ``n/a`` (with the reason) where it does not work. Without ``--weights`` the
encoder of ``--config-file`` is built with random weights (speed does not depend on them).
"""
import argparse
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np
import torch
from tabulate import tabulate

import agreid
from agreid.modeling.deploy import (
    EncoderSettings,
    build_image_encoder,
    export_program,
    load_program,
    trace_deployed_encoder,
)
from agreid.predictor import Predictor

BACKENDS = ("eager", "pt2", "torchscript", "onnxruntime", "onnxruntime-legacy", "compile")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="", help="training checkpoint or exported image_encoder.pth")
    parser.add_argument("--config-file", default="", help="config (of the checkpoint, or for random weights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=10, help="timed batches per back-end")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per back-end")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times every back-end is timed, in turns; the table gives the median (and range)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {BACKENDS}")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch/onnxruntime intra-op threads (0 = default)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser.parse_args(argv)


def build_encoder(args):
    """The deployed encoder of ``--weights``, or of ``--config-file`` with random weights."""
    if args.weights:
        return Predictor(args.weights, config_file=args.config_file, opts=args.opts, device="cpu").encoder
    if not args.config_file:
        raise ValueError("give --weights, or --config-file to time an encoder with random weights")
    cfg = agreid.get_agreid_cfg(args.config_file, ["MODEL.BACKBONE.PRETRAIN", "none", *args.opts])
    num_cameras = max(cfg.MODEL.BACKBONE.NUM_CAMERAS, 4) if cfg.MODEL.BACKBONE.SIE_CAMERA else 0
    return build_image_encoder(EncoderSettings.from_config(cfg, num_cameras=num_cameras, quick_gelu=False))


def time_it(run: Callable[[], object], warmup: int, iters: int, sync: Callable[[], None]) -> float:
    """Seconds per call of ``run`` after ``warmup`` calls (median of ``iters``)."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def make_runners(encoder, images, camids, backends: List[str], workdir: str, threads: int) -> Dict[str, object]:
    """A callable per back-end returning features as a CPU numpy array, or a string saying why not."""
    runners: Dict[str, object] = {}
    with_camids = encoder.backbone.num_cameras > 0
    if "eager" in backends:
        runners["eager"] = lambda: encoder(images, camids).cpu().numpy()
    if "pt2" in backends:
        path = os.path.join(workdir, "image_encoder.pt2")
        export_program(encoder, path)  # exported from a CPU copy, read back as a user would
        program, _ = load_program(path, device=images.device)
        inputs = (images, camids) if with_camids else (images,)
        runners["pt2"] = lambda: program(*inputs).cpu().numpy()
    if "torchscript" in backends:
        traced = trace_deployed_encoder(encoder)
        runners["torchscript"] = lambda: traced(images, camids).cpu().numpy()
    for name, exporter in (("onnxruntime", "auto"), ("onnxruntime-legacy", "legacy")):
        if name not in backends:
            continue
        from agreid.deploy_onnx import export_onnx, onnx_exporter, onnx_session

        exporter = onnx_exporter(exporter)
        path = os.path.join(workdir, f"encoder-{exporter}.onnx")
        export_onnx(encoder, path, exporter=exporter)
        session = onnx_session(path)
        if threads:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            session = onnxruntime.InferenceSession(path, options, providers=session.get_providers())
        feeds = {"images": images.cpu().numpy()}
        if with_camids:
            feeds["camids"] = camids.cpu().numpy()
        runners[name] = lambda session=session, feeds=feeds: session.run(["features"], feeds)[0]
        runners[f"{name} label"] = f"{name} ({session.get_providers()[0]}, {exporter} exporter)"
    if "compile" in backends:
        try:
            compiled = torch.compile(encoder)
            compiled(images, camids)  # compiles now, so a failure is reported here
            runners["compile"] = lambda: compiled(images, camids).cpu().numpy()
        except Exception as error:  # inductor fails in many ways without a compiler or triton
            runners["compile"] = f"n/a: {type(error).__name__}: {str(error).splitlines()[0][:80]}"
    return runners


def spread(values: List[float], digits: int) -> str:
    """The median of ``values``, and their range when there are several."""
    median = f"{np.median(values):.{digits}f}"
    if len(values) == 1:
        return median
    return f"{median} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def main(argv=None) -> int:
    """Time each back-end on the same batch and print one table."""
    args = parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        print(f"error: unknown back-end(s) {unknown}; choose from {BACKENDS}", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.iters < 1:
        print("error: --rounds and --iters must be at least 1", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        encoder = build_encoder(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = encoder.to(device).eval()
    height, width = encoder.backbone.input_size
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(args.batch_size, 3, height, width, generator=generator) * 255).to(device)
    camids = torch.randint(max(encoder.backbone.num_cameras, 1), (args.batch_size,), generator=generator).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    rows = []
    with torch.no_grad(), tempfile.TemporaryDirectory() as workdir:
        runners = make_runners(encoder, images, camids, backends, workdir, args.threads)
        labels = {name: runners.pop(f"{name} label", name) for name in backends}
        reference = runners["eager"]() if "eager" in runners else None
        seconds: Dict[str, List[float]] = {name: [] for name in backends if not isinstance(runners[name], str)}
        for _ in range(args.rounds):
            for name in seconds:
                seconds[name].append(time_it(runners[name], args.warmup, args.iters, sync))
        for name in backends:
            runner = runners[name]
            if isinstance(runner, str):
                rows.append([labels[name], runner, "", ""])
                continue
            difference = "" if reference is None else f"{np.abs(runner() - reference).max():.1e}"
            rows.append([labels[name], spread([args.batch_size / t for t in seconds[name]], 1),
                         spread([t * 1000 for t in seconds[name]], 1), difference])
    rounds = f", median of {args.rounds} rounds [range]" if args.rounds > 1 else ""
    print(f"image encoder {height}x{width}, {encoder.backbone.num_cameras} SIE cameras, batch {args.batch_size}, "
          f"{device}, torch threads {torch.get_num_threads()}, median of {args.iters} batches{rounds}")
    print(tabulate(rows, headers=["back-end", "images/s", "ms/batch", "max |diff| vs eager"], tablefmt="github"))
    return 0

