"""`plan vllm`: what one vLLM engine gets on one GPU, term by term, and the log lines it will print.

    plan vllm --model meta-llama/Llama-3.1-8B-Instruct --gpu H100-80GB --gpu-memory-utilization 0.5 \\
              --max-model-len 4096
    plan vllm --model Qwen/Qwen2.5-7B-Instruct --gpu L4 --max-num-seqs 16 --max-num-batched-tokens 4096 --json
    plan vllm --model google/gemma-3-4b-it --gpu auto --gpu-memory-utilization 0.3   # NVML free memory

A thin layer over :func:`planner.memory.vllm.vllm_capacity`; no formula lives here.
"""

from __future__ import annotations

import json

from ..search.request import KV_CACHE_DTYPES
from ..specs.units import GIB, MIB


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "vllm", help="predict vLLM's KV-cache capacity and start-up errors for one engine",
        description="Predict what vllm.LLM(...) gets on one GPU: budget, weights, activation peak, "
                    "CUDA graphs, KV cache tokens and concurrency, and the start-up errors vLLM would raise.")
    p.add_argument("--model", required=True, help="Hugging Face id, alias, or path to a config.json")
    p.add_argument("--gpu", required=True, help="GPU name (see `plan gpus`) or 'auto' for the local card via NVML")
    p.add_argument("--gpu-memory-utilization", type=float, default=None, metavar="U",
                   help="fraction of the card's total memory vLLM claims (default: the release's, 0.92 from 0.20)")
    p.add_argument("--max-model-len", type=int, default=None, metavar="L",
                   help="context length (default: the model's max_position_embeddings)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, metavar="N", help="TP size; figures are per rank")
    p.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto",
                   help="fp8 halves the KV bytes per token")
    p.add_argument("--quantization", default=None, metavar="Q",
                   help="vLLM's name: fp8, bitsandbytes (what TRL passes for a 4-bit trainer model), awq, "
                        "awq_marlin, gptq, gptq_marlin, mxfp4 (gpt-oss) (default: the checkpoint's own)")
    p.add_argument("--max-num-seqs", type=int, default=None, metavar="N",
                   help="default: vLLM's for the GPU and usage context (TRL passes batch x steps_per_generation x TP)")
    p.add_argument("--max-num-batched-tokens", type=int, default=None, metavar="N",
                   help="default: vLLM's for the GPU and usage context (TRL passes 4096); sets the activation peak")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (TRL does not set it)")
    p.add_argument("--vllm-version", default=None, metavar="X",
                   help="vLLM release to plan for, 0.8.5 to 0.33.x (default: the installed vllm, else 0.33.0)")
    p.add_argument("--free-bytes", type=int, default=None, metavar="N",
                   help="free memory before vLLM starts (default: the whole card, or NVML free with --gpu auto)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    from ..memory.vllm import vllm_capacity  # keeps `plan --help` import-light

    cap = vllm_capacity(
        args.model, args.gpu, gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=args.max_model_len,
        tensor_parallel_size=args.tensor_parallel_size, kv_cache_dtype=args.kv_cache_dtype,
        quantization=args.quantization, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, enforce_eager=args.enforce_eager,
        vllm_version=args.vllm_version, free_bytes=args.free_bytes)
    if args.json:
        print(json.dumps(cap.to_dict(), indent=2))
    else:
        print(format_capacity(cap))
    return 0


def _g(n_bytes: float) -> str:
    return f"{n_bytes / GIB:8.2f}"


def format_capacity(cap) -> str:
    """The human-readable report: each term in GiB, then the vLLM log lines it predicts."""
    from ..memory.vllm import vllm_process_bytes
    from ..specs.versions import vllm_facts

    facts = vllm_facts(cap.version)
    lay = cap.layout
    graphs = (f"CUDA graphs ({len(cap.cudagraph_sizes)} sizes, estimate"
              + (", subtracted)" if cap.cudagraph_subtracted else ", NOT in the budget)"))
    rows = [
        ("budget = ceil(total x util)" if facts.budget_rounding == "ceil" else "budget = total x util",
         cap.budget_bytes, f"{cap.total_bytes / GIB:.2f} GiB x {cap.gpu_memory_utilization}"),
        *([("- held before vLLM + baseline", cap.held_outside_budget_bytes,
            "the whole GPU's use counts (0.8.5-0.9.0)")] if cap.held_outside_budget_bytes else []),
        ("- weights", cap.weights_bytes, cap.weight_scheme),
        ("- activation peak", cap.activation_peak_bytes, f"estimate, {cap.max_num_batched_tokens:,} tokens"),
        ("- non-torch", cap.non_torch_bytes, "estimate"),
    ]
    if cap.cudagraph_subtracted:
        rows.append(("- " + graphs, cap.cudagraph_bytes, ""))
    rows += [
        ("= available KV cache", cap.available_kv_bytes, ""),
        ("KV cache allocated", cap.kv_cache_bytes,
         f"{cap.num_blocks:,} blocks x {lay.bytes_per_block / MIB:.2f} MiB"),
    ]
    if not cap.cudagraph_subtracted:
        rows.append((graphs, cap.cudagraph_bytes, "captured after the KV cache"))
    rows += [
        ("baseline (context, cuBLAS, NCCL)", cap.baseline_bytes,
         "inside the budget" if facts.kv_budget_formula == "whole_device" else "outside the budget"),
        ("vLLM process while awake", vllm_process_bytes(cap), "baseline + budget + graph overshoot"),
    ]
    width = max(len(r[0]) for r in rows)
    out = [f"vLLM {cap.version}: {cap.model.model_id} on {cap.gpu.name}, TP {cap.tensor_parallel_size} (per rank)",
           f"  max_model_len {cap.max_model_len:,}, max_num_seqs {cap.max_num_seqs:,}, "
           f"max_num_batched_tokens {cap.max_num_batched_tokens:,}, kv_cache_dtype {cap.kv_cache_dtype}",
           "",
           f"  {'term':<{width}}      GiB"]
    out += [f"  {name:<{width}} {_g(b)}  {note}".rstrip() for name, b, note in rows]
    groups = ", ".join(f"{g.layers} {g.kind}" for g in lay.groups)
    out += ["",
            f"  KV bytes per token {cap.kv_bytes_per_token:,} B; block {lay.block_size} tokens; "
            f"{len(lay.groups)} group(s) of {lay.group_size} layers ({groups})"
            + (f"; {lay.padding_layers} padding layers" if lay.padding_layers else ""),
            f"  one {cap.max_model_len:,}-token request takes {lay.blocks_per_request:,} blocks",
            "",
            "predicted vLLM log:"]
    out += [f"  {line}" for line in cap.log_lines()]
    out.append("")
    if cap.startup_ok:
        out.append("start-up: OK")
    else:
        out.append("start-up: vLLM would fail with")
        out += [f"  ValueError: {e}" for e in cap.errors]
    return "\n".join(out)
