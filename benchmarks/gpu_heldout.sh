#!/usr/bin/env bash
# Held-out measurements on an H100: models, ranks, shapes and an allocator setting that
# data/calibration does not have, each model in its own fresh process. The results test the
# trainer memory model (benchmarks/heldout_accuracy.py reads them back from
# benchmarks/results/h100_heldout/).
#
# Needs the same as gpu_profile.sh (an NVIDIA GPU; torch, transformers, peft, accelerate, trl==1.16.0,
# bitsandbytes installed, or TRL and bitsandbytes as wheels in .whl/). Run from the repository root:
#   bash benchmarks/gpu_heldout.sh
#
# Writes under $OUT: env.txt, heldout.log, and one calibration profile per group:
#   fresh.json       Qwen2.5-0.5B on the calibration shapes, first model of a fresh process
#   expandable.json  Qwen2.5-1.5B with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
#   heldout.json     every other held-out model (one file; each model measured in its own process)
set -uo pipefail

OUT="${OUT:-$(pwd)/gpu_heldout_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-400}"  # stop starting new models after this many seconds
CAL="1:256:512,4:256:1024,8:256:1792,16:128:896,2:512:3584"   # data/calibration's shapes
HELD="1:128:384,2:256:768,4:512:1536,8:128:1024,3:1024:3072"  # shapes it does not have
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/heldout.log"
: > "$LOG"
log() { echo "$*" | tee -a "$LOG"; }
start=$(date +%s)

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .cache/site .whl/*.whl \
    2>&1 | tail -3 | tee -a "$LOG"
  export PYTHONPATH="$PYTHONPATH:$PWD/.cache/site"
fi

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$PY" benchmarks/device_env.py
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$LOG"
grep -q "MISSING\|Traceback" "$OUT/env.txt" && { log "a package is missing (env.txt)"; exit 1; }

status=0
measure() {  # output-file model weights finetune rank shapes [env assignments...]
  local out=$1 model=$2 weights=$3 finetune=$4 rank=$5 shapes=$6; shift 6
  if (( $(date +%s) - start > BUDGET_S )); then log "== skip $model (budget)"; return; fi
  log "== $model $weights $finetune r$rank $* ($(( $(date +%s) - start )) s)"
  env "$@" timeout 150 "$PY" -m planner.cli profile --model "$model" --gpu auto --weights "$weights" \
    --finetune "$finetune" --lora-rank "$rank" --shapes "$shapes" --output "$OUT/$out" 2>&1 \
    | grep -v "it/s\]\|s/it\]" | tail -4 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  log "== exit $rc"
  [ "$rc" -eq 0 ] || status=1
}

measure fresh.json      Qwen/Qwen2.5-0.5B-Instruct         bf16 lora 16 "$CAL"
measure expandable.json Qwen/Qwen2.5-1.5B-Instruct         bf16 lora 16 "$HELD" PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
measure heldout.json    Qwen/Qwen3-0.6B                    bf16 lora 16 "$HELD"
measure heldout.json    meta-llama/Llama-3.2-3B-Instruct   bf16 lora 64 "$HELD"
measure heldout.json    microsoft/Phi-4-mini-instruct      bf16 lora 16 "$HELD"
measure heldout.json    google/gemma-2-2b-it               bf16 lora 16 "$HELD"
measure heldout.json    Qwen/Qwen3-1.7B                    bf16 full 16 "$HELD"
measure heldout.json    mistralai/Mistral-7B-Instruct-v0.3 nf4  lora 32 "$HELD"

log "done in $(( $(date +%s) - start )) s (status $status); files: $(ls "$OUT" | tr '\n' ' ')"
exit $status
