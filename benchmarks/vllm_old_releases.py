"""Predicted vs reported vLLM start-up terms for the Unsloth runs of vLLM releases the planner models (0.8.5+).

    python benchmarks/vllm_old_releases.py

Reads data/unsloth/unsloth-reports.jsonl (log lines of real runs). Inputs per run are what the log says
vLLM received: total = Unsloth's VRAM figure (cudaMemGetInfo total), utilisation = Unsloth's "actual GPU
utilization", max_num_seqs / max_num_batched_tokens = Unsloth's "Num Sequences" / "Chunked prefill tokens",
max_model_len = max_seq_length. The model is a shipped profile of the same architecture; where the run's
weights are not modelled (FP8-Block) vLLM's own "Model loading took" figure is used instead.

Caveat printed per run: Unsloth 2025.4-2025.5 runs vLLM 0.8.5 with the V0 engine (worker.py lines), whose KV
formula is total x util - weights - non_torch - activation (not the V1 whole-device formula of 0.8.5). For
those runs the V0 form is evaluated with the planner's per-term functions, so the comparison checks the terms
(weights, activation peak, non-torch) and the block arithmetic, not the V1 budget rule.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.memory.vllm import (  # noqa: E402
    activation_peak_bytes,
    budget_bytes,
    kv_layout,
    non_torch_bytes,
    num_blocks,
    vllm_capacity,
    weights_bytes,
)
from planner.specs.gpu import resolve_gpu  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402
from planner.specs.units import GIB  # noqa: E402
from planner.specs.versions import parse_version  # noqa: E402

REPORTS = ROOT / "data" / "unsloth" / "unsloth-reports.jsonl"  # a copy of shared/unsloth (data/unsloth/README.md)

# run model -> (shipped profile of the same architecture, quantization vLLM loads it with)
ARCH = {
    "unsloth/mistral-7b-instruct-v0.3-bnb-4bit": ("mistralai/Mistral-7B-Instruct-v0.3", "bitsandbytes"),
    "unsloth/Qwen3-4B-Base": ("Qwen/Qwen3-4B", None),
    "unsloth/Llama-3.2-3B-Instruct": ("meta-llama/Llama-3.2-3B-Instruct", None),
    "unsloth/Llama-3.2-1B-Instruct-FP8-Block": ("meta-llama/Llama-3.2-1B-Instruct", None),  # weights from the log
}
GPU = {"Tesla T4": "T4", "NVIDIA GeForce RTX 4090": "RTX-4090", "NVIDIA L4": "L4"}


def _g(b: float) -> str:
    return f"{b / GIB:6.2f}"


def rows():
    for line in REPORTS.read_text().splitlines():
        r = json.loads(line)
        v = r["versions"].get("vllm")
        if not v or parse_version(v, "vLLM") < (0, 8, 5) or r["model"] not in ARCH or r.get("kv_cache_gb") is None:
            continue
        yield r, v


def main() -> int:
    errs = []
    for r, v in rows():
        extra = r["extra"]
        profile, quant = ARCH[r["model"]]
        spec = resolve_model(profile)
        card = dataclasses.replace(resolve_gpu(GPU[r["gpu"]]), total_bytes=int(r["vram_gb"] * GIB), free_bytes=None)
        util, mml = r["actual_gpu_utilization"], r["max_seq_length"]
        mns, mnbt = extra["unsloth_num_sequences"], extra["unsloth_chunked_prefill_tokens"]
        v0 = any("worker.py" in e and "total_gpu_memory" in e for e in r["evidence"])
        print(f"\n{r['model']} on {r['gpu']}, vLLM {v} ({'V0 engine log' if v0 else 'V1 engine log'}), "
              f"util {util}, max_model_len {mml}, seqs {mns}, tokens {mnbt}")
        if v0:
            total = card.total_bytes
            budget = budget_bytes(total, util, "0.8.5")
            w = weights_bytes(spec, quant, version="0.8.5")
            a = activation_peak_bytes(spec, mnbt, mns, "0.8.5")
            n = non_torch_bytes(1, "0.8.5")
            kv = budget - w - a - n
            lay = kv_layout(spec, mml, mnbt, version="0.8.5")
            blocks = num_blocks(kv, lay.bytes_per_block)
            blocks_from_reported_kv = num_blocks(int(extra["vllm_kv_cache_gib"] * GIB), lay.bytes_per_block)
            rep = {"weights": extra["vllm_weights_gib"], "activation": extra["vllm_activation_peak_gib"],
                   "kv": extra["vllm_kv_cache_gib"]}
            print(f"  {'term':<22} predicted  reported")
            print(f"  {'budget = T x U':<22} {_g(budget)}    (log: T x {round(util, 2)} rounded)")
            print(f"  {'weights':<22} {_g(w)}    {rep['weights']:6.2f}")
            print(f"  {'activation peak':<22} {_g(a)}    {rep['activation']:6.2f}")
            print(f"  {'non-torch':<22} {_g(n)}    (log: {[e for e in r['evidence'] if 'non_torch' in e][0].split('non_torch_memory takes ')[1].split(';')[0]})")
            print(f"  {'KV cache GiB':<22} {_g(kv)}    {rep['kv']:6.2f}   error {100 * (kv / GIB / rep['kv'] - 1):+.1f}%")
            print(f"  {'# GPU blocks':<22} {blocks:6d}    {r['gpu_blocks']:6d}   "
                  f"(from the reported KV GiB: {blocks_from_reported_kv}; block arithmetic)")
            errs.append((r["model"], v, kv / GIB / rep["kv"] - 1))
        else:
            cap = vllm_capacity(spec, card, gpu_memory_utilization=util, max_model_len=mml, max_num_seqs=mns,
                                max_num_batched_tokens=mnbt, vllm_version=v)
            w_log = r["model_loading_gib"] * GIB
            kv = cap.available_kv_bytes + cap.weights_bytes - w_log  # vLLM's own weights figure replaces ours
            lay = cap.layout
            blocks = num_blocks(int(kv), lay.bytes_per_block)
            tokens = blocks * lay.block_size
            conc = blocks / lay.blocks_per_request
            print(f"  budget {_g(cap.budget_bytes)}  weights {w_log / GIB:.2f} (log)  activation {_g(cap.activation_peak_bytes)}"
                  f"  non-torch {_g(cap.non_torch_bytes)}  graphs {_g(cap.cudagraph_bytes)} (log {extra['cudagraph_gib']})")
            print(f"  KV GiB {kv / GIB:.2f} vs {extra['vllm_kv_cache_gib']:.2f}  error "
                  f"{100 * (kv / GIB / extra['vllm_kv_cache_gib'] - 1):+.1f}%")
            print(f"  tokens {tokens:,} vs {r['kv_tokens']:,}; concurrency {conc:.2f}x vs {r['max_concurrency']}x")
            errs.append((r["model"], v, kv / GIB / extra["vllm_kv_cache_gib"] - 1))
    print("\nKV error per run: " + ", ".join(f"{m.split('/')[-1]} ({v}) {100 * e:+.1f}%" for m, v, e in errs))
    print(f"mean |error| {100 * sum(abs(e) for *_, e in errs) / len(errs):.1f}% over {len(errs)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
