"""Predict each real Unsloth GRPO run of data/unsloth/unsloth-reports.jsonl from its stated setup.

    python benchmarks/unsloth_reports.py [path] > benchmarks/results/unsloth_reports.txt

Per record: the utilisation vLLM receives (target: within 0.01 of the printed one), Unsloth's own
"KV Cache can use up to" estimate and its Num Sequences / chunked-prefill choice, vLLM's KV cache
(target: within 10%), vLLM's activation peak and CUDA-graph pool where the log prints them (no target) and
fits vs the outcome. A record whose vLLM release planner.memory.vllm does not
model is printed with the reason, not dropped; it is predicted as soon as planner.memory.vllm covers it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner.errors import PlannerError
from planner.runtimes.unsloth import unsloth_estimate
from planner.specs.units import GIB

# a copy of shared/unsloth (data/unsloth/README.md)
DATA = Path(__file__).resolve().parent.parent / "data" / "unsloth" / "unsloth-reports.jsonl"

# model id in the record -> shipped profile with the same architecture
MODELS = {
    "unsloth/phi-4-bnb-4bit": "microsoft/phi-4",
    "/opt/tiger/test0/Phi-4": "microsoft/phi-4",
    "unsloth/qwen2.5-3b-instruct-unsloth-bnb-4bit": "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-Coder-3B-Instruct": "Qwen/Qwen2.5-3B-Instruct",  # same shapes, vocab 151936
    "unsloth/meta-llama-3.1-8b-instruct-unsloth-bnb-4bit": "meta-llama/Llama-3.1-8B-Instruct",
    "unsloth/mistral-7b-instruct-v0.3-bnb-4bit": "mistralai/Mistral-7B-Instruct-v0.3",
    "unsloth/Qwen3-4B-Base": "Qwen/Qwen3-4B",
    "unsloth/Llama-3.2-3B-Instruct": "meta-llama/Llama-3.2-3B-Instruct",
    "unsloth/Llama-3.2-1B-Instruct-FP8-Block": "meta-llama/Llama-3.2-1B-Instruct",
    "unsloth/DeepSeek-R1-Distill-Qwen-14B": "Qwen/Qwen2.5-14B-Instruct",
}
GPUS = {"Tesla T4": "T4", "NVIDIA GeForce RTX 4090": "RTX-4090", "NVIDIA L4": "L4",
        "NVIDIA A100-SXM4-80GB": "A100-80GB", "A100 40GB on Colab": "A100-40GB",
        "NVIDIA GeForce RTX 5090": "RTX-5090"}


def predict(rec: dict):
    """(estimate, None) or (None, why it cannot be predicted)."""
    model = MODELS.get(rec["model"])
    if model is None:
        return None, f"model {rec['model']} has no shipped profile"
    if rec["gpu_memory_utilization"] is None and not rec["standby_or_sleep"]:
        return None, "requested gpu_memory_utilization not stated"
    versions = rec["versions"]
    unsloth = versions.get("unsloth_zoo") or versions.get("unsloth")
    completion = rec["max_completion_length"]
    prompt = rec["max_prompt_length"] or 256
    msl = rec["max_seq_length"] or 2048
    if completion is None:
        completion = max(1, msl - prompt)
    est = unsloth_estimate(
        model, GPUS[rec["gpu"]], max_seq_length=msl, load_in_4bit=rec["quant"] == "4bit",
        gpu_memory_utilization=rec["gpu_memory_utilization"] or 0.5, standby=bool(rec["standby_or_sleep"]),
        lora_rank=rec["lora_rank"] or 16, per_device_train_batch_size=rec["batch_size"],
        gradient_accumulation_steps=rec["grad_accum"], num_generations=rec["num_generations"],
        max_prompt_length=prompt, max_completion_length=completion, unsloth_version=unsloth,
        vllm_version=versions.get("vllm") or "0.7.2", weights_fp8=rec["quant"] == "fp8",
        prequantized="bnb-4bit" in rec["model"].lower())
    return est, None


def truncated_verdict(rec: dict, predicted: float) -> str:
    """A print cut after its whole percent ("actual GPU Utilization= 88."): whether the prediction falls in
    that percent (empty when the record has no such line)."""
    import re

    for line in rec.get("evidence", ()):
        m = re.search(r"actual GPU [Uu]tili[sz]ation\s*=\s*(\d+)\.\s*$", line)
        if m:
            lo = int(m.group(1)) / 100
            ok = lo <= predicted < lo + 0.01
            return (f"; the excerpt keeps '{m.group(1)}.': [{lo:.2f}, {lo + 0.01:.2f}) "
                    + ("holds the prediction" if ok else "does NOT hold the prediction"))
    return ""


def main(path: Path = DATA) -> int:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    util_err, kv_err, fit_ok, fit_n = [], [], 0, 0
    root = DATA.parents[2]
    shown = path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path  # no machine's path
    print(f"{len(rows)} records from {shown}\n")
    for i, rec in enumerate(rows, 1):
        v = rec["versions"]
        head = (f"[{i}] {rec['model']} on {rec['gpu']}, unsloth {v.get('unsloth_zoo') or v.get('unsloth')}, "
                f"vLLM {v.get('vllm', 'not printed (assumed 0.7.2)')}, request {rec['gpu_memory_utilization']}, "
                f"standby {rec['standby_or_sleep']}, outcome {rec['outcome']}")
        print(head)
        try:
            est, why = predict(rec)
        except PlannerError as e:
            est, why = None, f"planner refused: {e}"
        if est is None:
            print(f"    not predicted: {why}\n")
            continue
        printed = rec["actual_gpu_utilization"]
        u = est.vllm_gpu_memory_utilization
        line = f"    utilisation vLLM receives: predicted {u:.4f}"
        if printed is not None:
            util_err.append(abs(u - printed))
            line += f", printed {printed:.4f}, |error| {abs(u - printed):.4f}"
        else:
            line += ", printed: none (excerpt truncated)" + truncated_verdict(rec, u)
        print(line + f"  ({est.utilization_reason})")
        ex = rec.get("extra") or {}
        if rec["kv_cache_gb"] is not None:
            print(f"    Unsloth KV estimate: predicted {est.unsloth_kv_estimate_bytes / GIB:.2f} GB, "
                  f"printed {rec['kv_cache_gb']}")
        if ex.get("unsloth_num_sequences") is not None:
            print(f"    Unsloth Num Sequences / chunked prefill: predicted {est.max_num_seqs} / "
                  f"{est.max_num_batched_tokens}, printed {ex['unsloth_num_sequences']} / "
                  f"{ex.get('unsloth_chunked_prefill_tokens')}")
        if est.requested_batch_size != est.per_device_train_batch_size:
            print(f"    batch auto-adjust: {est.requested_batch_size} -> {est.per_device_train_batch_size}")
        if est.capacity is None:
            print(f"    vLLM side not modelled: {est.vllm_not_modelled}\n")
            continue
        reported_kv = ex.get("vllm_kv_cache_gib")
        kv = est.kv_cache_bytes / GIB
        line = f"    vLLM KV cache: predicted {kv:.2f} GiB"
        if reported_kv:
            kv_err.append(abs(kv - reported_kv) / reported_kv)
            line += f", reported {reported_kv} GiB ({(kv - reported_kv) / reported_kv:+.1%})"
        print(line)
        cap = est.capacity
        parts = [f"{name}: predicted {mine / GIB:.2f} GiB, printed {ex[key]} GiB"
                 for name, mine, key in (("activation peak", cap.activation_peak_bytes, "vllm_activation_peak_gib"),
                                         ("CUDA graphs", cap.cudagraph_bytes + est.extra_cudagraph_bytes,
                                          "cudagraph_gib"))
                 if ex.get(key) is not None]
        if parts:
            print(f"    vLLM {cap.engine} engine; " + "; ".join(parts))
        if rec["outcome"] in ("ran",) or rec["outcome"].startswith("oom"):
            fit_n += 1
            want = rec["outcome"] == "ran"
            fit_ok += est.fits == want
            print(f"    fits: predicted {est.fits}, outcome {rec['outcome']}")
        print()
    print("summary")
    if util_err:
        print(f"  utilisation: {len(util_err)} records with a printed value, max |error| {max(util_err):.4f} "
              f"(target 0.01), {sum(e <= 0.01 for e in util_err)} within target")
    print(f"  vLLM KV cache: {len(kv_err)} records predicted" + (
        f", max |error| {max(kv_err):.1%} (target 10%)" if kv_err else " (their vLLM releases are not modelled yet)"))
    print(f"  fits vs outcome: {fit_ok} of {fit_n} records with a vLLM-side prediction and a known outcome")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA))
