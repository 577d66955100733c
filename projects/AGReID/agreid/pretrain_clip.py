"""Pretrain SynthCLIP: a small open_clip CLIP, trained contrastively on the synthetic caption corpus
(with a pretraining-only attribute objective, discarded afterwards: --aux).

Examples::

    python tools/make_synthetic.py --root datasets --preset pretrain
    python tools/pretrain_clip.py --data datasets/SyntheticCaptions      # the shipped file, pretrained/SynthCLIP-Tiny-<fingerprint>.safetensors
    python tools/pretrain_clip.py --data datasets/SyntheticCaptions --output /tmp/s.pt --epochs 1 --log-dir logs/synthclip

A run is resumable (progress is kept in OUTPUT.resume after every epoch), and a file already made
from the same captions, model and recipe is reused (say --force to train anew). The output is an
ordinary open_clip checkpoint: MODEL.BACKBONE.PRETRAIN_PATH loads it, so does
open_clip.create_model(name, pretrained=FILE). See docs/SYNTHCLIP.md.
"""
import argparse
import logging
import sys
from pathlib import Path

import torch

from .data.captions import CaptionFileError
from .synthclip import AUX_OBJECTIVES, AUX_SCHEDULES, DEFAULT_OUTPUT, PretrainConfig, inputs_fingerprint, pretrain, read_synthclip_record

DEFAULTS = PretrainConfig()


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="caption corpus folder (with captions.csv) or a CSV file")
    parser.add_argument("--model", default=DEFAULTS.model, help="open_clip model name (default %(default)s)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="checkpoint to write (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="default %(default)s")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="default %(default)s")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="AdamW peak rate (default %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="default %(default)s")
    parser.add_argument("--warmup-steps", type=int, default=DEFAULTS.warmup_steps, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="default %(default)s")
    parser.add_argument("--aux", default=DEFAULTS.aux, choices=AUX_OBJECTIVES,
                        help="pretraining-only objective beside the contrastive loss (default %(default)s)")
    parser.add_argument("--aux-weight", type=float, default=DEFAULTS.aux_weight, help="default %(default)s")
    parser.add_argument("--aux-schedule", default=DEFAULTS.aux_schedule, choices=AUX_SCHEDULES,
                        help="the auxiliary weight over the run (default %(default)s)")
    parser.add_argument("--aux-attribute-weight", action="append", default=None, metavar="ATTRIBUTE=WEIGHT",
                        help="the attribute objective's weight of one attribute (others 1); repeatable "
                             f"(default {' '.join(f'{a}={w:g}' for a, w in DEFAULTS.aux_attribute_weights) or 'none'})")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the cores left after the loader workers)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="default: cuda when available (AMP), else cpu")
    parser.add_argument("--log-dir", default=None, help="TensorBoard folder (default: OUTPUT without suffix + _tb)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    parser.add_argument("--force", action="store_true", help="train even if OUTPUT was made from the same inputs")
    parser.add_argument("--no-resume", action="store_true", help="ignore OUTPUT.resume and start from scratch")
    return parser.parse_args(argv)


def _attribute_weights(values):
    """``["hat=4", ...]`` as ``(("hat", 4.0), ...)``; None (flag not given) is the recipe's default."""
    if values is None:
        return DEFAULTS.aux_attribute_weights
    pairs = []
    for value in values:
        name, _, weight = value.partition("=")
        try:  # no "=" leaves weight empty, which float() refuses too
            pairs.append((name, float(weight)))
        except ValueError:
            raise ValueError(f"--aux-attribute-weight {value!r}: expected ATTRIBUTE=WEIGHT, e.g. hat=4") from None
    return tuple(pairs)


def main(argv=None) -> int:
    """Pretrain, or say that the existing file is up to date."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    output = Path(args.output)
    try:
        config = PretrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, seed=args.seed,
                                aux=args.aux, aux_weight=args.aux_weight, aux_schedule=args.aux_schedule,
                                aux_attribute_weights=_attribute_weights(args.aux_attribute_weight))
        fingerprint = inputs_fingerprint(args.data, config)
        record = read_synthclip_record(output) if output.is_file() else None
        if record and record.get("fingerprint") == fingerprint and not args.force and args.max_steps is None:
            print(f"SynthCLIP {output} is up to date (same captions, model and recipe, fingerprint "
                  f"{fingerprint}): reusing it. Pass --force to train anew.")
            return 0
        log_dir = args.log_dir or str(output.with_suffix("")) + "_tb"
        record = pretrain(args.data, output, config, device=args.device, num_workers=args.workers,
                          log_dir=log_dir, resume=not args.no_resume, max_steps=args.max_steps,
                          threads=args.threads)
    except (CaptionFileError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"SynthCLIP written to {output}: {record['steps']} steps in {record['seconds']:.0f} s, "
          f"final loss {record['final_loss']:.4f}")
    return 0

