"""Print the last evaluation of one or more finished training runs (their log.txt) as one table.

Example::

    python tools/print_results.py logs/demo/agreid logs/demo/clipreid
"""
import argparse
import sys
from pathlib import Path

from agreid.experiments.common import parse_eval_tables

METRICS = ("mAP", "Rank-1", "Rank-5", "Rank-10", "mINP")


def main(argv=None) -> int:
    """Read each OUTPUT_DIR/log.txt and print its last results, one row per run and test set."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dirs", nargs="+", help="OUTPUT_DIR of one or more finished runs")
    args = parser.parse_args(argv)
    rows = []
    for folder in args.output_dirs:
        log = Path(folder) / "log.txt"
        results = parse_eval_tables(log.read_text()) if log.is_file() else {}
        if not results:
            print(f"error: {log} holds no evaluation results (missing, or the run has not finished)",
                  file=sys.stderr)
            return 2
        rows += [(folder, dataset, values) for dataset, values in results.items()]
    print(f"| run | test set | {' | '.join(METRICS)} |")
    print("|---|---|" + "---:|" * len(METRICS))
    for folder, dataset, values in rows:
        cells = " | ".join(f"{values[m]:.2f}" if m in values else "-" for m in METRICS)
        print(f"| {folder} | {dataset} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
