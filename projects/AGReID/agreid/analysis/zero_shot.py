"""Does SynthCLIP know words? Zero-shot attribute classification and retrieval on held-out people.

Example::

    python tools/zero_shot.py --weights pretrained/SynthCLIP-Tiny-58d11b4b.safetensors --data datasets/SyntheticCaptions \\
        --markdown docs/synthclip_zero_shot.md --plot docs/images/synthclip_zero_shot.png

For every attribute, each held-out image (captions_val.csv) whose body region for that attribute
is visible is given the value whose prompt ("a photo of a person with blond hair", one prompt per
value) is nearest; the table compares the accuracy with chance and with always answering the
most frequent value. Image->text and text->image Recall@1/5 are measured on the held-out pairs.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from ..data.captions import VAL_CAPTIONS_FILE, CaptionFileError, read_captions
from ..synthclip import (encode_images, encode_texts, linear_probe_attributes, load_synthclip,
                              retrieval_recall, zero_shot_attributes, zero_shot_prompts)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a SynthCLIP (open_clip) checkpoint")
    parser.add_argument("--data", required=True, help="caption corpus folder (captions_val.csv, labels.json)")
    parser.add_argument("--model", default=None, help="open_clip model name (default: read from the weights)")
    parser.add_argument("--json", default=None, help="write the numbers as JSON here")
    parser.add_argument("--markdown", default=None, help="write the tables as Markdown here")
    parser.add_argument("--plot", default=None, help="write a bar chart (PNG) here")
    parser.add_argument("--linear-probe", action="store_true",
                        help="also the project's linear probe (agreid.analysis.probes: standardised logistic regression, "
                             "5-fold stratified over people) from the image embeddings to each attribute")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def markdown(rows, recall, weights: str, probe=None) -> str:
    """The zero-shot and retrieval tables (and the linear probe's column when measured)."""
    lines = [f"Zero-shot attribute classification of `{weights}` on held-out people "
             "(images where the attribute's body region is visible):", "",
             "| attribute | values | images | zero-shot accuracy | majority class | chance |"
             + (" linear probe |" if probe else "") + " prompt cosines | prompt (first value) |",
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if probe else "") + "---:|---|"]
    for row in rows:
        probe_cell = f" {probe[row.attribute]:.3f} |" if probe else ""
        lines.append(f"| {row.attribute} | {row.num_values} | {row.images} | **{row.accuracy:.3f}** | "
                     f"{row.majority:.3f} | {row.chance:.3f} |{probe_cell} "
                     f"{row.prompt_cosine_min:.2f}-{row.prompt_cosine_max:.2f} | {zero_shot_prompts(row.attribute)[0]} |")
    lines += ["", "Prompt cosines: the least and the most similar pair of the attribute's prompts (cosine of "
              "their text embeddings); near 1.00 when the text tower cannot tell the values' words apart.",
              "", "| retrieval on held-out pairs | R@1 | R@5 |", "|---|---:|---:|"]
    for direction in ("image_to_text", "text_to_image"):
        lines.append(f"| {direction.replace('_', ' ')} | {recall[direction + '_R@1']:.3f} | "
                     f"{recall[direction + '_R@5']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: str) -> None:
    """Bar chart: zero-shot accuracy beside the majority class and chance, per attribute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(rows))
    figure, axis = plt.subplots(figsize=(10, 3.8))
    axis.bar(x - 0.27, [r.accuracy for r in rows], 0.27, label="SynthCLIP zero-shot", color="#2b6cb0")
    axis.bar(x, [r.majority for r in rows], 0.27, label="majority class", color="#a0aec0")
    axis.bar(x + 0.27, [r.chance for r in rows], 0.27, label="chance", color="#e2e8f0")
    axis.set_xticks(x, [r.attribute for r in rows], rotation=35, ha="right")
    axis.set_ylim(0, 1.15)
    axis.set_ylabel("accuracy")
    axis.legend(loc="upper center", ncol=3, fontsize=8)
    axis.set_title("Zero-shot attribute classification on held-out synthetic people")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    """Evaluate and write what was asked for."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        model, transform, tokenizer, _ = load_synthclip(args.weights, args.model, device=args.device)
        pairs = read_captions(Path(args.data) / VAL_CAPTIONS_FILE)
        image_features = encode_images(model, [p for p, _ in pairs], transform, device=args.device)
        rows = zero_shot_attributes(model, tokenizer, args.data, transform, device=args.device,
                                    image_features=image_features)
    except (CaptionFileError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text_features = encode_texts(model, tokenizer, [c for _, c in pairs], device=args.device)
    recall = retrieval_recall(image_features, text_features)
    probe = linear_probe_attributes(image_features, args.data) if args.linear_probe else None
    table = markdown(rows, recall, args.weights, probe)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"zero_shot": [vars(r) for r in rows], "retrieval": recall,
                                               "linear_probe": probe},
                                              indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.plot:
        plot(rows, args.plot)
    return 0

