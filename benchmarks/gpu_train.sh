#!/usr/bin/env bash
# One prepared training run for a lent GPU (training campaign, docs/training.md).
#
#   benchmarks/gpu_train.sh MINUTES OUT_DIR [TEXTURES_DIR]
#
# On a CUDA machine without network: continues from the bundled weights (or resumes OUT_DIR
# exactly when it already holds a run), trains for MINUTES of wall time with large batches,
# bf16 autocast and clips rendered by worker processes on every CPU core, and writes the EMA
# weights (ema.safetensors, best.safetensors), log.csv and baselines.json into OUT_DIR.
# Needs torch, numpy, safetensors, tqdm, opencv and pillow (no install: PYTHONPATH=src).
#
# Dry run on a CPU:  DEVICE=cpu AMP=none BATCH=2 WORKERS=1 benchmarks/gpu_train.sh 1 /tmp/dry textures
set -euo pipefail
usage="usage: benchmarks/gpu_train.sh MINUTES OUT_DIR [TEXTURES_DIR]"
minutes=${1:?$usage}
out=${2:?$usage}
textures=${3:-textures}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
workers=${WORKERS:-$(nproc)}
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -d "$textures" ]; then
    echo "gpu_train.sh: texture folder not found: $textures (taptr textures fetch DIR)" >&2
    exit 2
fi
if [ -f "$out/last.pt" ]; then
    start=(--resume)
else
    start=(--init-weights "$root/src/taptr/assets/taptr_small.safetensors")
fi
exec "$python" -m taptr train --preset small --data synthetic --out "$out" "${start[@]}" \
    --textures "$textures" --device "${DEVICE:-cuda}" --set run.amp="${AMP:-bf16}" \
    --batch "${BATCH:-32}" --workers "$workers" --set data.num_points=128 \
    --set data.clip_length=16 --set data.curriculum_steps=0 --set data.difficulty=0.5 \
    --set optim.warmup_steps=20 --max-minutes "$minutes" --set eval.every=250 \
    --set run.ckpt_every=250 --set run.export_every=250 --no-progress
