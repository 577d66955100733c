"""Export AG-ReID's image encoder alone for deployment (docs/DEPLOY.md).

Writes ``DIR/image_encoder.safetensors`` (weights + the settings that rebuild the encoder, no text
encoder, prompts or attribute encoder) and ``DIR/image_encoder.pt2``, a ``torch.export`` program
that runs with torch alone: ``torch.export.load(path).module()(images, camids)`` (``images``
only without SIE); with SIE also ``DIR/image_encoder_agnostic.pt2`` (``images`` only; the SIE
vector of ``--camera``, default the mean camera embedding). Both take any batch size (>= 1),
check the input contract inside the graph and are checked against eager mode.

With ``--onnx``: ``DIR/image_encoder.onnx`` (inputs ``images`` and, with SIE, ``camids``) and,
with SIE, ``DIR/image_encoder_agnostic.onnx`` (``images`` only), from torch's current exporter
(``torch.onnx.export(..., dynamo=True)``, needs onnxscript) unless ``--onnx-exporter legacy``;
both normalise inside the graph, take any batch size, pass ``onnx.checker`` and match PyTorch in
onnxruntime. With ``--torchscript`` (legacy: torch.jit is deprecated): ``DIR/image_encoder.ts``
(traced, checked against eager mode). Prints the sizes of the checkpoint and of the export.

    python tools/export_image_encoder.py --config-file configs/OccDuke/agreid.yml \\
        --weights logs/occduke/agreid/model_final.pth --output deploy/occduke --onnx
"""
import argparse
import logging
import os
import sys

import torch
from tabulate import tabulate

from ..config import get_agreid_cfg
from ..modeling.deploy import (
    build_deployed_encoder,
    count_values,
    export_program,
    save_deployed_encoder,
    trace_deployed_encoder,
)
from ..serialization import load_checkpoint_file

ENCODER_FILE = "image_encoder.safetensors"
PROGRAM_FILE = "image_encoder.pt2"
PROGRAM_AGNOSTIC_FILE = "image_encoder_agnostic.pt2"
TORCHSCRIPT_FILE = "image_encoder.ts"
ONNX_FILE = "image_encoder.onnx"
ONNX_AGNOSTIC_FILE = "image_encoder_agnostic.onnx"
QUICK_GELU = {"auto": None, "yes": True, "no": False}
EXPORTERS = ("auto", "dynamo", "legacy")  # agreid.deploy_onnx.EXPORTERS, without importing onnx


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="",
                        help="the config the model was trained with (OUTPUT_DIR/config.yaml or the YAML file)")
    parser.add_argument("--weights", required=True, help="training checkpoint, e.g. OUTPUT_DIR/model_final.pth")
    parser.add_argument("--output", required=True,
                        help="folder that receives image_encoder.safetensors and image_encoder.pt2 (and the others)")
    parser.add_argument("--onnx", action="store_true",
                        help="also write ONNX files (with camids when SIE is on, and a camera-agnostic one)")
    parser.add_argument("--onnx-exporter", default="auto", choices=EXPORTERS,
                        help="dynamo: torch.onnx.export(..., dynamo=True), torch's current exporter (needs "
                             "onnxscript); legacy: its deprecated TorchScript-based one; auto: dynamo when "
                             "onnxscript is installed")
    parser.add_argument("--torchscript", action="store_true",
                        help="legacy: also write a traced TorchScript module (torch.jit, deprecated by torch; "
                             "image_encoder.pt2 replaces it)")
    parser.add_argument("--camera", default="mean",
                        help="SIE rule of the camera-agnostic .pt2 and ONNX files: mean, zero or a camera index")
    parser.add_argument("--quick-gelu", default="auto", choices=sorted(QUICK_GELU),
                        help="the encoder's activation; auto: from the config's CLIP weights (openai = yes)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser.parse_args(argv)


def load_config(config_file: str, opts):
    """The config as tools/train_net.py builds it, or None without a file."""
    if not config_file:
        return None
    return get_agreid_cfg(config_file, opts)


def file_mib(path: str) -> float:
    """Size of a file in MiB."""
    return os.path.getsize(path) / 2 ** 20


def main(argv=None) -> int:
    """Build the encoder from the checkpoint, save it and its programs, print the sizes."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config_file, args.opts)
    exporter = None
    if args.onnx:  # before anything is built or written
        from ..deploy_onnx import onnx_exporter

        try:
            exporter = onnx_exporter(args.onnx_exporter)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    try:
        encoder = build_deployed_encoder(cfg, args.weights, quick_gelu=QUICK_GELU[args.quick_gelu])
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    encoder_path = os.path.join(args.output, ENCODER_FILE)
    save_deployed_encoder(encoder, encoder_path)
    # The export must rebuild on its own and give the same features.
    rebuilt = build_deployed_encoder(None, encoder_path)
    height, width = encoder.backbone.input_size
    images = torch.rand(2, 3, height, width) * 255
    camids = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images, camids), encoder(images, camids), rtol=0, atol=1e-6)

    checkpoint = load_checkpoint_file(args.weights)  # never executes code (weights_only / safetensors)
    model_state = checkpoint.get("model", checkpoint.get("state_dict", checkpoint))
    rows = [
        [f"weights given ({os.path.basename(args.weights)})", f"{file_mib(args.weights):.1f}",
         f"{count_values(model_state) / 1e6:.2f}M"],
        [f"exported encoder ({ENCODER_FILE})", f"{file_mib(encoder_path):.1f}",
         f"{count_values(encoder.state_dict()) / 1e6:.2f}M"],
    ]
    with_sie = encoder.backbone.num_cameras > 0
    variants = [(None, "images, camids" if with_sie else "images")]
    if with_sie:
        variants.append((args.camera, "images"))
    for camera, inputs in variants:
        name = PROGRAM_FILE if camera is None else PROGRAM_AGNOSTIC_FILE
        program_path = os.path.join(args.output, name)
        try:
            difference = export_program(encoder, program_path, camera=camera)
        except (RuntimeError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        rows.append([f"torch.export ({name}: {inputs})", f"{file_mib(program_path):.1f}",
                     f"max |program - eager| {difference:.1e}"])
    if args.onnx:
        from ..deploy_onnx import export_onnx

        for camera, inputs in variants:
            name = ONNX_FILE if camera is None else ONNX_AGNOSTIC_FILE
            onnx_path = os.path.join(args.output, name)
            try:
                difference = export_onnx(encoder, onnx_path, camera=camera, exporter=exporter)
            except (RuntimeError, ValueError) as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            rows.append([f"ONNX, {exporter} exporter ({name}: {inputs})", f"{file_mib(onnx_path):.1f}",
                         f"max |onnxruntime - PyTorch| {difference:.1e}"])
    if args.torchscript:
        try:
            traced = trace_deployed_encoder(encoder)
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        ts_path = os.path.join(args.output, TORCHSCRIPT_FILE)
        traced.save(ts_path)
        rows.append([f"TorchScript, legacy ({TORCHSCRIPT_FILE})", f"{file_mib(ts_path):.1f}", "same as the export"])
    settings = encoder.settings
    print(f"image encoder {settings.clip_name}: {height}x{width}, stride {settings.stride}, "
          f"{settings.num_cameras} SIE cameras, neck feat {settings.neck_feat}, "
          f"{'QuickGELU' if settings.quick_gelu else 'GELU'}; test feature "
          f"{encoder.backbone.final_dim + encoder.backbone.embed_dim}-d")
    print(tabulate(rows, headers=["file", "MiB", "values (params + buffers)"], tablefmt="github"))
    return 0

