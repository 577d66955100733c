#!/usr/bin/env bash
# `make demo`: synthetic ReID data -> SynthCLIP (the shipped file; pretrained when missing) ->
# AG-ReID (both phases) -> evaluation -> rank-list picture, on a CPU.
#   tools/demo.sh [DATA_ROOT] [OUTPUT_DIR]      (CONFIG=... to train another config, SYNTHCLIP=... for the file)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${1:-datasets}
OUT=${2:-logs/demo}
PY=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-configs/Synthetic/agreid.yml}
SYNTHCLIP=${SYNTHCLIP:-$($PY -c 'from agreid.synthclip import DEFAULT_OUTPUT; print(DEFAULT_OUTPUT)')}
NAME=$(basename "$CONFIG" .yml)
SECONDS=0
mkdir -p "$OUT"

echo "== 1/5 synthetic occluded ReID data"
$PY tools/make_synthetic.py --root "$DATA_ROOT" --preset small --seed 0 --preview
if [ -f "$SYNTHCLIP" ]; then
    echo "== 2/5 SynthCLIP: using $SYNTHCLIP (shipped with the repository; \`make synthclip\` retrains it)"
else
    echo "== 2/5 SynthCLIP: $SYNTHCLIP is missing, so the caption corpus is made and a tiny CLIP pretrained on it"
    $PY tools/make_synthetic.py --root "$DATA_ROOT" --preset pretrain --seed 0 --preview
    $PY tools/pretrain_clip.py --data "$DATA_ROOT/SyntheticCaptions" --output "$SYNTHCLIP"
fi
if [ -f "$DATA_ROOT/SyntheticCaptions/done.json" ]; then
    echo "== 3/5 does it know words? zero-shot attributes of held-out people"
    $PY tools/zero_shot.py --weights "$SYNTHCLIP" --data "$DATA_ROOT/SyntheticCaptions" --json "$OUT/zero_shot.json" \
        | sed -n '/^| attribute/,/^$/p'
else
    echo "== 3/5 zero-shot attributes: skipped (needs the caption corpus: \`make synthclip\`); docs/SYNTHCLIP.md has the table"
fi
echo "== 4/5 AG-ReID: stage 1 (align) and stage 2 (guide), then evaluation"
$PY tools/train_net.py --config-file "$CONFIG" DATASETS.ROOT "$DATA_ROOT" OUTPUT_DIR "$OUT/$NAME" \
    MODEL.BACKBONE.PRETRAIN_PATH "$SYNTHCLIP"
echo "== 5/5 rank lists"
$PY tools/visualize_ranklist.py --config-file "$OUT/$NAME/config.yaml" \
    --output "$OUT/$NAME/ranklist.png" MODEL.WEIGHTS "$OUT/$NAME/model_final.pth"
echo
echo "Demo done in $((SECONDS / 60)) min $((SECONDS % 60)) s: log $OUT/$NAME/log.txt, rank lists $OUT/$NAME/ranklist.png"
$PY tools/print_results.py "$OUT/$NAME"
