#!/usr/bin/env bash
# Continue training the aligned 128 px generator (future builtin:faces128, issue #14) from its committed state.
# Re-renders the training data if this machine lacks it (deterministic: seeds 0-19999), copies the committed run
# state into runs/faces128 unless a newer run is already there, and resumes. Ctrl-C writes a checkpoint.
# Runs the CLI as a module from the repository root, so it works even where the editable install is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=training/faces128
if [ ! -f runs/faces128/checkpoint.pt ]; then
  mkdir -p runs/faces128
  cp "$here/checkpoint.pt" "$here/config.json" "$here/log.jsonl" runs/faces128/
fi
if [ "$(find runs/aligned128-data/images -name '*.png' 2>/dev/null | wc -l)" -lt 20000 ]; then
  python3 -m partseg.cli data synth --mode aligned --n 20000 --size 128 --seed 0 --out runs/aligned128-data
fi
exec python3 -m partseg.cli gan train runs/aligned128-data/images --out runs/faces128 --resolution 128 --batch 32 --kimg 3000 \
  --channels 4:128,8:128,16:128,32:64,64:32,128:16 --z-dim 256 --w-dim 256 --n-mlp 2 --pl-weight 0 \
  --ckpt-kimg 4 --workers 1 --amp auto "$@"
