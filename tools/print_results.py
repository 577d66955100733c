#!/usr/bin/env python
"""Print the last evaluation of a training run (OUTPUT_DIR/metrics.json) as a small table.

Example::

    python tools/print_results.py logs/demo/agreid
"""
import argparse
import json
import sys
from pathlib import Path

METRICS = ("mAP", "Rank-1", "Rank-5", "Rank-10", "mINP")


def last_evaluation(output_dir: Path) -> dict:
    """``{dataset: {metric: value}}`` of the last line of metrics.json that holds evaluation results."""
    metrics = output_dir / "metrics.json"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no such file (has the run in {output_dir} finished?)")
    for line in reversed(metrics.read_text().splitlines()):
        record = json.loads(line)
        results = {}
        for key, value in record.items():
            dataset, _, metric = key.rpartition("/")
            if metric in METRICS:
                results.setdefault(dataset, {})[metric] = value
        if results:
            return results
    raise ValueError(f"{metrics} holds no evaluation results (TEST.EVAL_PERIOD, or an unfinished run)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dirs", nargs="+", help="OUTPUT_DIR of one or more finished runs")
    args = parser.parse_args(argv)
    print(f"| run | dataset | {' | '.join(METRICS)} |")
    print("|---|---|" + "---:|" * len(METRICS))
    for folder in args.output_dirs:
        try:
            results = last_evaluation(Path(folder))
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for dataset, values in results.items():
            cells = " | ".join(f"{values[m]:.2f}" if m in values else "-" for m in METRICS)
            print(f"| {folder} | {dataset} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
