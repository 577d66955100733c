#!/usr/bin/env bash
# `make demo`: synthetic data -> train (both phases) -> evaluate -> rank-list picture, on a CPU.
#   tools/demo.sh [DATA_ROOT] [OUTPUT_DIR]      (CONFIG=... to train another config)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${1:-datasets}
OUT=${2:-logs/demo}
PY=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-configs/Synthetic/agreid.yml}
NAME=$(basename "$CONFIG" .yml)

$PY tools/make_synthetic.py --root "$DATA_ROOT" --preset small --seed 0 --preview
$PY tools/train_net.py --config-file "$CONFIG" DATASETS.ROOT "$DATA_ROOT" OUTPUT_DIR "$OUT/$NAME"
$PY tools/visualize_ranklist.py --config-file "$OUT/$NAME/config.yaml" \
    --output "$OUT/$NAME/ranklist.png" MODEL.WEIGHTS "$OUT/$NAME/model_final.pth"
echo
echo "Demo done: log $OUT/$NAME/log.txt, rank lists $OUT/$NAME/ranklist.png"
