"""Unsloth's defaults vs Unsloth's own standby choice vs the plan, per card and model (CPU, planner only).

    python benchmarks/unsloth_side_by_side.py    # writes benchmarks/results/unsloth_side_by_side.md

Three setups of FastLanguageModel(fast_inference=True) GRPO, 4-bit, LoRA r=32, max_seq_length 1024
(prompt 256 + completion 768), Unsloth 2026.10.9, the vLLM it pairs with on each card
(planner.specs.versions.unsloth_vllm_version), every figure from planner.runtimes.unsloth's memory model:

- defaults: gpu_memory_utilization=0.5, batch 4 x accumulation 2 x 8 generations, no standby;
- standby: the same with UNSLOTH_VLLM_STANDBY=1 (Unsloth replaces the 0.5 by its card tier);
- plan: `plan --runtime unsloth` (planner.plan(..., runtime="unsloth"): planner.search.unsloth_solver, the
  runtime's 5% margin, planner.search.margins.RUNTIME_MARGIN).

"fits" is every phase under the card; the plan also keeps the 5% margin. These are predictions, not
runs: the only real Unsloth runs the planner is checked against are benchmarks/unsloth_reports.py's.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner.errors import PlannerError
from planner.runtimes.unsloth import unsloth_estimate
from planner.search.unsloth_solver import unsloth_plan
from planner.specs.units import GIB

GPUS = ("T4", "L4", "RTX-4090", "A100-40GB")
MODELS = ("Qwen/Qwen2.5-3B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-14B-Instruct")
COMMON = dict(load_in_4bit=True, lora_rank=32, max_seq_length=1024, unsloth_version="2026.10.9")
PLAN = {k: v for k, v in COMMON.items() if k != "load_in_4bit"}  # the request's words: weights="nf4"
OUT = Path(__file__).resolve().parent / "results" / "unsloth_side_by_side.md"


def _fmt_est(e) -> str:
    if e.fits is None:
        return "vLLM not modelled"
    peak = max(e.phases.values()) / GIB
    verdict = "fits" if e.fits else ("**vLLM fails to start**" if e.capacity and e.capacity.errors else "**OOM**")
    return (f"{e.requested_gpu_memory_utilization:g} -> {e.vllm_gpu_memory_utilization:.3f}, "
            f"{e.per_device_train_batch_size}x{e.gradient_accumulation_steps}x{e.num_generations}, "
            f"KV {(e.kv_cache_bytes or 0) / GIB:.1f} GiB, peak {peak:.1f} GiB: {verdict}")


def row(model: str, gpu: str) -> str:
    defaults = unsloth_estimate(model, gpu, **COMMON)
    standby = unsloth_estimate(model, gpu, standby=True, **COMMON)
    try:
        p = unsloth_plan(model, gpu, weights="nf4", **PLAN)
        e = p.runtime_details.estimate
        cfg = p.config
        plan = (f"{e.requested_gpu_memory_utilization:g} -> {e.vllm_gpu_memory_utilization:.3f}"
                f"{', standby' if e.standby else ''}, {cfg['per_device_train_batch_size']}x"
                f"{cfg['gradient_accumulation_steps']}x{cfg['num_generations']}, completion "
                f"{cfg['max_completion_length']}, KV {(e.kv_cache_bytes or 0) / GIB:.1f} GiB, peak "
                f"{p.peak_bytes / GIB:.1f} of {p.budget_bytes / GIB:.1f} GiB")
    except PlannerError as err:
        plan = f"nothing fits: {str(err).split(';')[0]}"
    return (f"| {gpu} | {model.split('/')[-1]} | vLLM {defaults.vllm_version or '?'} | {_fmt_est(defaults)} | "
            f"{_fmt_est(standby)} | {plan} |")


def main() -> str:
    lines = ["# Unsloth defaults vs Unsloth's standby choice vs the plan",
             "",
             "FastLanguageModel(fast_inference=True), 4-bit, LoRA r=32, max_seq_length 1024 (prompt 256 + "
             "completion 768), Unsloth 2026.10.9; cells: utilisation asked -> what vLLM receives, batch x "
             "accumulation x generations, vLLM's KV cache, peak of the load / generation / training phases. "
             "Predictions of planner.runtimes.unsloth (`python benchmarks/unsloth_side_by_side.py`), not runs.",
             "",
             "| card | model | vLLM (assumed) | Unsloth defaults (0.5, 4x2x8) | Unsloth standby (its tier, 4x2x8) "
             "| plan (`plan --runtime unsloth`) |",
             "|---|---|---|---|---|---|"]
    for gpu in GPUS:
        for model in MODELS:
            lines.append(row(model, gpu))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = main()
    OUT.write_text(text)
    print(text)
