#!/usr/bin/env bash
# Cost benchmark on one GPU, in under 10 minutes: a TiM-B/4-sized network (paper Table 1:
# depth 12, width 768, patch 4 on 32x32x4 latents, no REPA projector) trained in bf16 with flow
# matching, TiM-DDE and TiM-JVP side by side, the DDE in each derivative precision mode
# (objective.derivative_precision: tim_dde is the default auto, i.e. mixed under bf16, then fp32,
# tf32 and bf16); SDPA vs flash attention when flash-attn is installed.
# Prints the JSON report on stdout (progress on stderr) and writes cost.json / cost.md to $OUT_DIR.
# Then the current vs previous attention block (block.json), eager vs torch.compile
# training step and 1-step sampling (compile.json), each capped at $EXTRA_TIMEOUT_S.
#
# Usage: benchmarks/gpu.sh [OUT_DIR]      (env: PYTHON=python3, BATCH=256, TIMEOUT_S=280, EXTRA_TIMEOUT_S=150)
set -euo pipefail

OUT_DIR="${1:-${OUT:-gpu_bench}}"
PYTHON="${PYTHON:-python3}"
BATCH="${BATCH:-256}"          # paper Table 1 batch (one A100)
TIMEOUT_S="${TIMEOUT_S:-280}"  # the cost benchmark
EXTRA_TIMEOUT_S="${EXTRA_TIMEOUT_S:-150}"  # each issue-14 comparison: 280 + 2 x 150 s < 10 minutes

cd "$(dirname "$0")/.."
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: no CUDA device visible to $PYTHON (torch $("$PYTHON" -c 'import torch; print(torch.__version__)'))" >&2
  exit 2
fi
if ! "$PYTHON" -c "import tim" 2>/dev/null; then
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # run from the checkout without installing
fi

BACKENDS="sdpa"
if "$PYTHON" -c "import flash_attn" 2>/dev/null; then
  BACKENDS="sdpa,flash"
fi
"$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" >&2
echo "attention backends: $BACKENDS" >&2

mkdir -p "$OUT_DIR"
timeout "$TIMEOUT_S" "$PYTHON" -m tim.cli.main bench cost \
  --model TiM-B/4 --model-override z_dim=0 \
  --batch-size "$BATCH" --device cuda --precision bf16 --attention "$BACKENDS" \
  --derivative-precision auto,fp32,tf32,bf16 \
  --timed-steps 20 --warmup-steps 3 \
  --sampling-steps 1,2,4,8,16,32,64,128 --sampling-batch 256 \
  --matmul-size 8192 --out "$OUT_DIR"
B4="--preset TiM-B/4 --override z_dim=0"
timeout "$EXTRA_TIMEOUT_S" "$PYTHON" benchmarks/bench_model.py $B4 --device cuda --dtype bfloat16 --batch "$BATCH" \
  --compare-legacy --iters 10 --repeats 5 > "$OUT_DIR/block.json" || echo "block comparison failed or timed out" >&2
timeout "$EXTRA_TIMEOUT_S" "$PYTHON" benchmarks/bench_compile.py $B4 --device cuda --bf16 --batch "$BATCH" \
  --repeats 10 > "$OUT_DIR/compile.json" || echo "compile comparison failed or timed out" >&2
