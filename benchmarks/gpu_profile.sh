#!/usr/bin/env bash
# Measure the trainer's memory on an NVIDIA GPU and write calibration profiles.
#
# Needs: a machine with an NVIDIA GPU and CUDA build of torch, transformers, peft, accelerate,
# trl==1.16.0, bitsandbytes (and TRL's datasets, dill, multiprocess). Run from the repository root:
#   bash benchmarks/gpu_profile.sh
# A machine without network access can take TRL and bitsandbytes as wheels in .whl/ (installed into
# .cache/site before anything runs); download them elsewhere with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl trl==1.16.0 bitsandbytes==0.50.2 datasets dill multiprocess
#
# Writes under $OUT (default ./gpu_profile_out): env.txt, profile.log, the two calibration
# profiles (qwen2.5-0.5b-bf16.json, qwen3-4b-nf4.json) and the CPU trace of the same shapes with
# the same library versions (trace-*.json) for a like-for-like comparison.
# Each measured model takes well under a minute on an H100; the whole script about 3-4 minutes.
set -uo pipefail

OUT="${OUT:-$(pwd)/gpu_profile_out}"
mkdir -p "$OUT"
SHAPES="1:256:512,4:256:1024,8:256:1792,16:128:896,2:512:3584"  # the calibration README's shapes
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/profile.log"
: > "$LOG"

log() { echo "$*" | tee -a "$LOG"; }

# 1. Wheels in .whl/ (TRL, bitsandbytes and what TRL imports), if any, into a private site folder.
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .cache/site .whl/*.whl \
    2>&1 | tee -a "$LOG" || { log "pip install of .whl/ failed"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:$PWD/.cache/site"
else
  log "no .whl/ folder: using whatever is installed"
fi

# 2. What this machine has: GPU, driver, versions. Stop early, with the reason, if a piece is missing.
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$PY" benchmarks/device_env.py
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$LOG"
if grep -q "MISSING\|Traceback" "$OUT/env.txt"; then
  log "a package is missing (see env.txt): install it, or put its wheel in .whl/"
  exit 1
fi

# 3. Measure (each model in its own process: a clean allocator and CUDA context per profile).
status=0
measure() {  # model weights file
  log "== measure $1 ($2)"
  timeout 420 "$PY" -m planner.cli profile --model "$1" --gpu auto --weights "$2" --shapes "$SHAPES" \
    --output "$OUT/$3" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  log "== $1 ($2): exit $rc"
  [ "$rc" -eq 0 ] || status=1
}
measure Qwen/Qwen2.5-0.5B-Instruct bf16 qwen2.5-0.5b-bf16.json
measure Qwen/Qwen3-4B nf4 qwen3-4b-nf4.json

# 4. The CPU trace of the same shapes with this machine's library versions (no GPU used).
trace() {  # model weights file
  log "== trace $1 ($2)"
  timeout 300 "$PY" -m planner.cli profile --model "$1" --trace --weights "$2" --shapes "$SHAPES" \
    --gradient-checkpointing --json > "$OUT/$3" 2>> "$LOG" || status=1
}
trace Qwen/Qwen2.5-0.5B-Instruct bf16 trace-qwen2.5-0.5b-bf16.json
trace Qwen/Qwen3-4B nf4 trace-qwen3-4b-nf4.json

log "done (status $status); files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $status
