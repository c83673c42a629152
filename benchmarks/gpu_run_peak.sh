#!/usr/bin/env bash
# Run-level peaks on an NVIDIA GPU (benchmarks/gpu_run_peak.py), one model per fresh process.
# Needs the same as gpu_profile.sh. Writes $OUT/run_peak.jsonl and $OUT/run_peak.log.
set -uo pipefail
OUT="${OUT:-$(pwd)/gpu_run_peak_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-240}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/run_peak.log"
: > "$LOG"
start=$(date +%s)
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .cache/site .whl/*.whl 2>&1 | tail -3
  export PYTHONPATH="$PYTHONPATH:$PWD/.cache/site"
fi
one() {
  if (( $(date +%s) - start > BUDGET_S )); then echo "skip $* (budget)" | tee -a "$LOG"; return; fi
  echo "== $* ($(( $(date +%s) - start )) s)" | tee -a "$LOG"
  timeout 120 "$PY" benchmarks/gpu_run_peak.py --output "$OUT/run_peak.jsonl" "$@" 2>&1 \
    | grep -v "Warning\|warnings.warn" | tail -3 | tee -a "$LOG"
}
one --model Qwen/Qwen2.5-7B-Instruct --batch 8 --prompt 256 --completion 1792
one --model Qwen/Qwen2.5-0.5B-Instruct --batch 8 --prompt 256 --completion 1792
one --model Qwen/Qwen2.5-3B-Instruct --batch 8 --prompt 256 --completion 1792
one --model Qwen/Qwen3-4B --weights nf4 --batch 8 --prompt 256 --completion 1792
one --model Qwen/Qwen3-0.6B --batch 16 --prompt 128 --completion 1024
one --model meta-llama/Llama-3.2-1B-Instruct --no-gradient-checkpointing --batch 2 --prompt 256 --completion 1024
one --model Qwen/Qwen2.5-0.5B-Instruct --finetune full --batch 8 --prompt 256 --completion 1792
echo "done in $(( $(date +%s) - start )) s" | tee -a "$LOG"
