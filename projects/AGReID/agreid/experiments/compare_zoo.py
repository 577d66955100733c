"""Compare checkpoints of different toolkits on one test set: mAP, R1, R5, mINP, feature size, images/s.

    python tools/compare_zoo.py --dataset OccludedDuke \\
        --config configs/OccDuke/bagtricks_R50.yml --weights zoo/duke_bot_R50.pth \\
        --config configs/OccDuke/clipreid.yml --weights pretrained/clipreid_occduke.pth \\
        --config logs/occduke/agreid/config.yaml --weights logs/occduke/agreid/model_final.pth \\
        --names BoT-R50,CLIP-ReID,AG-ReID DATASETS.ROOT datasets

Each ``--config``/``--weights`` pair is loaded as ``tools/train_net.py --eval-only`` loads it
(fastreid model-zoo checkpoints with the configs in ``configs/<Dataset>/``, CLIP-ReID
checkpoints after ``tools/convert_clipreid.py``, this project's own), evaluated by the
project's evaluator on the same test set (``--dataset``, default the first pair's
``DATASETS.TESTS[0]``; ``KEY VALUE`` overrides apply to every config), and one table is
printed (``--markdown FILE`` also writes it as Markdown). images/s counts the model's forward
passes only (flip test included when ``TEST.FLIP.ENABLED``), not image decoding.
"""
import argparse
import os
import sys
import time
from typing import Dict, List

import torch
from tabulate import tabulate

import agreid
from agreid.engine import AGReIDTrainer
from agreid.evaluation import ReidEvaluator
from fastreid.utils.logger import setup_logger

COLUMNS = ["model", "mAP", "R1", "R5", "mINP", "feature size", "images/s"]


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="config of a model (repeat per model)")
    parser.add_argument("--weights", action="append", required=True, help="its checkpoint (same order)")
    parser.add_argument("--names", default="", help="row names, comma-separated (default: the weights' file names)")
    parser.add_argument("--dataset", default="", help="test dataset (default: the first config's DATASETS.TESTS[0])")
    parser.add_argument("--markdown", default="", help="also write the table to this Markdown file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every config")
    return parser.parse_args(argv)


@torch.no_grad()
def evaluate(cfg, dataset: str) -> Dict[str, float]:
    """The test metrics, feature size and forward throughput of ``cfg``'s trained model on ``dataset``."""
    model = AGReIDTrainer.build_trained_model(cfg)
    loader, num_query = AGReIDTrainer.build_test_loader(cfg, dataset)
    evaluator = ReidEvaluator(cfg, num_query)
    evaluator.reset()
    seconds, images, feature_size = 0.0, 0, 0
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for batch in loader:
        sync()
        start = time.perf_counter()
        features = model(batch)
        if cfg.TEST.FLIP.ENABLED:  # as fastreid's inference_on_dataset
            flipped = dict(batch, images=batch["images"].flip(dims=[3]))
            features = (features + model(flipped)) / 2
        sync()
        seconds += time.perf_counter() - start
        images += features.shape[0]
        feature_size = features.shape[1]
        evaluator.process(batch, features)
    results = evaluator.evaluate()
    return {"mAP": results["mAP"], "R1": results["Rank-1"], "R5": results["Rank-5"], "mINP": results["mINP"],
            "feature size": feature_size, "images/s": images / max(seconds, 1e-9)}


def main(argv=None) -> int:
    """Evaluate every pair and print the table; exit status 2 on bad input."""
    args = parse_args(argv)
    setup_logger(name="fastreid")
    if len(args.config) != len(args.weights):
        print(f"error: {len(args.config)} --config but {len(args.weights)} --weights: give them in pairs", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.names.split(",")] if args.names else [os.path.basename(w) for w in args.weights]
    if len(names) != len(args.config):
        print(f"error: --names gives {len(names)} names for {len(args.config)} models", file=sys.stderr)
        return 2
    rows: List[list] = []
    dataset = args.dataset
    for name, config, weights in zip(names, args.config, args.weights):
        try:
            if not os.path.isfile(config):
                raise FileNotFoundError(f"config file not found: {config}")
            cfg = agreid.get_agreid_cfg(config, [*args.opts, "MODEL.WEIGHTS", weights])
            dataset = dataset or cfg.DATASETS.TESTS[0]
            metrics = evaluate(cfg, dataset)
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            print(f"error: {name} ({config}, {weights}): {error}", file=sys.stderr)
            return 2
        rows.append([name, *(f"{metrics[c]:.1f}" for c in ("mAP", "R1", "R5", "mINP")),
                     metrics["feature size"], f"{metrics['images/s']:.1f}"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    title = f"{dataset}, {device}, torch threads {torch.get_num_threads()}"
    table = tabulate(rows, headers=COLUMNS, tablefmt="github", disable_numparse=True)  # keep "0.0"
    print(title)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(f"{title}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
