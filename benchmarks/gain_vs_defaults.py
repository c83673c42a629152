"""The plan against TRL's and Unsloth's defaults, predicted by the same memory model.

For each model (0.5B-8B, bf16 and NF4 LoRA r=16) and card, three colocated configurations at a
1024-token completion target and 256-token prompts:
- TRL defaults: vllm_gpu_memory_utilization 0.3, per_device_train_batch_size 8, 8 generations,
  gradient accumulation 1, vllm_max_model_length unset (= the model's context), sleep mode off;
- Unsloth defaults: utilisation 0.5, batch 4, accumulation 2, 8 generations (applied to TRL's
  colocate mode, which holds two weight copies; Unsloth itself shares one), same context rule;
- the plan (`planner.plan`).
Reported: fits (or why not: OOM phase / vLLM refuses to start), KV-cache tokens, completions
generated per wave (min(batch x accumulation, KV tokens // (prompt + completion))), idle memory
(card - the largest phase's peak).
Run: python benchmarks/gain_vs_defaults.py  (writes benchmarks/results/gain_vs_defaults.md)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner import estimate, plan  # noqa: E402
from planner.errors import PlannerError  # noqa: E402

MODELS = ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-3B-Instruct",
          "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"]
GPUS = ["H100-80GB", "A100-40GB", "L4", "RTX-4090"]
P, C = 256, 1024
GIB = 1024**3
DEFAULTS = {"TRL": dict(util=0.3, batch=8, accum=1), "Unsloth": dict(util=0.5, batch=4, accum=2)}


def _row(e, completions: int) -> tuple[str, str, str, str]:
    v = e.vllm
    if not v.startup_ok:
        what = "vLLM fails: " + ("free memory < budget" if v.free_at_init_bytes < v.budget_bytes
                                 else "KV cache < one max-length sequence")
        return what, f"{v.kv_cache_tokens:,}", "0", "-"
    if e.peak_bytes > e.gpu.total_bytes:
        return f"OOM ({e.phases.binding_phase})", f"{v.kv_cache_tokens:,}", "-", "-"
    # sequences of prompt + completion tokens the KV cache holds at once (vLLM allocates blocks as
    # sequences grow, so a long max_model_len does not reserve a full context per request)
    wave = min(completions, v.kv_cache_tokens // (P + C))
    return "fits", f"{v.kv_cache_tokens:,}", str(wave), f"{(e.gpu.total_bytes - e.peak_bytes) / GIB:.1f}"


def main() -> None:
    lines = ["| model | weights | GPU | config | fits | KV tokens | completions / wave | idle GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        for weights in ("bf16", "nf4"):
            for gpu in GPUS:
                for name, d in DEFAULTS.items():
                    try:
                        e = estimate(model, gpu, weights=weights, batch_size=d["batch"], prompt_length=P,
                                     completion_length=C, vllm_gpu_memory_utilization=d["util"],
                                     steps_per_generation=d["accum"])
                        cells = _row(e, d["batch"] * d["accum"])
                    except PlannerError as err:
                        cells = (f"error: {err}"[:60], "-", "-", "-")
                    cfg = f"{name}: u={d['util']} B={d['batch']} GA={d['accum']}"
                    lines.append(f"| {model.split('/')[1]} | {weights} | {gpu} | {cfg} | " + " | ".join(cells) + " |")
                try:
                    p = plan(model, gpu, weights=weights, max_completion_length=C, prompt_length=P)
                    c = p.config
                    cfg = (f"**plan**: u={c['vllm_gpu_memory_utilization']} B={c['per_device_train_batch_size']} "
                           f"GA={c['gradient_accumulation_steps']} G={c['num_generations']} "
                           f"C={c['max_completion_length']}{' sleep' if c['vllm_enable_sleep_mode'] else ''}")
                    cells = _row(p, c["generation_batch_size"])  # one GPU: B x steps per generation
                except PlannerError as err:
                    cfg, cells = "**plan**", ("no plan: " + str(err).split(":")[1][:50], "-", "-", "-")
                lines.append(f"| {model.split('/')[1]} | {weights} | {gpu} | {cfg} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "gain_vs_defaults.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
