"""The vLLM memory model: how ``gpu_memory_utilization`` becomes KV-cache capacity.

    cap = vllm_capacity("meta-llama/Llama-3.1-8B-Instruct", "H100-80GB",
                        gpu_memory_utilization=0.5, max_model_len=4096)
    cap.kv_cache_tokens, cap.max_concurrency, cap.errors

One small pure function per term, each following the vLLM source it cites. Line numbers are for
the 0.33.0 release wheel (the reference, see docs/vllm-memory.md) unless another release
is named; what differs between releases is looked up in :mod:`planner.specs.versions`, never here.
The arithmetic vLLM does itself (budget, page sizes, block counts, concurrency, the token line and
the start-up errors) is reproduced exactly. Three terms vLLM *measures* are estimates here:
the activation peak, the non-torch growth and the CUDA-graph pool; each says what it is
calibrated on.

    budget      = ceil(total * util)                                    v1/worker/utils.py:724
                  (before 0.14: total * util, truncated at the end)
    available   = budget - weights - activation_peak - non_torch        v1/worker/gpu_worker.py:753
                  - cudagraph (when the release subtracts its estimate)
                  (0.8.5-0.9.0: also minus everything else on the GPU, see kv_budget_formula)
    num_blocks  = available // bytes_per_block                          v1/core/kv_cache_planning.py:681
    concurrency = num_blocks / blocks_per_request                       v1/core/kv_cache_utils.py:1087
    tokens      = int(concurrency * max_model_len)                      v1/core/kv_cache_utils.py:1128
                  (0.8.5-0.20: num_blocks // len(groups) * block_size)

Releases 0.8.5 to 0.18 (the V1 engine before 0.19) differ in the facts ``planner.specs.versions``
lists per range (budget formula and rounding, start-up check, capture sizes, graph modes,
hybrid grouping, batch defaults, error wording); below 0.8.5 the V0 engine is refused.

No torch, transformers or vLLM import anywhere in this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidSetupError
from ..specs.gpu import GpuSpec, resolve_gpu
from ..specs.model import ModelSpec, resolve_model
from ..specs.units import GIB
from ..specs.versions import VllmFacts, parse_version, vllm_facts
from .weights import mxfp4_bytes

USAGE_CONTEXTS = ("LLM_CLASS", "OPENAI_API_SERVER")

# kv_cache_dtype -> bytes per element; "auto" = the model dtype, which vLLM runs in 16 bits
# (float32 checkpoints are downcast, config/model.py:2440-2441). fp8 strings map to uint8
# storage (utils/torch_utils.py:46-48) with per-tensor scales only (KVQuantMode.FP8_PER_TENSOR,
# v1/kv_cache_interface.py:48), so a page holds exactly 1 byte per element.
KV_CACHE_DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}

# quantization name (vLLM's own) -> weight scheme. Marlin variants store the same bytes as their base;
# mxfp4 is gpt-oss's checkpoint format: its experts in MXFP4 (4.25 bits per weight), every other
# layer 16-bit (vLLM's Mxfp4Config quantizes FusedMoE layers only: linears get UnquantizedLinearMethod)
_QUANT_SCHEMES = {"fp8": "fp8", "bitsandbytes": "nf4", "awq": "awq", "awq_marlin": "awq",
                  "gptq": "gptq", "gptq_marlin": "gptq", "mxfp4": "mxfp4"}
MODELLED_QUANTIZATION = tuple(sorted(_QUANT_SCHEMES))
# vLLM's QUANTIZATION_METHODS (model_executor/layers/quantization/__init__.py), the union over the
# releases modelled (0.8.5-0.33): a name here that is not in _QUANT_SCHEMES is vLLM's, not modelled
VLLM_QUANTIZATION_METHODS = (
    "aqlm", "awq", "deepspeedfp", "tpu_int8", "fp8", "ptpc_fp8", "fbgemm_fp8", "modelopt", "modelopt_fp4",
    "marlin", "bitblas", "gguf", "gptq_marlin_24", "gptq_marlin", "gptq_bitblas", "awq_marlin", "gptq",
    "compressed-tensors", "bitsandbytes", "qqq", "hqq", "experts_int8", "neuron_quant", "ipex", "quark",
    "moe_wna16", "torchao", "auto-round", "rtn", "inc", "mxfp4", "petit_nvfp4")


def quantization_problem(name: Any) -> str | None:
    """One line when ``name`` is not a quantization the planner models (vLLM's names: ``fp8``,
    ``bitsandbytes``, ``awq``, ``awq_marlin``, ``gptq``, ``gptq_marlin``, ``mxfp4``), naming the
    modelled ones; None when it is (or when it is None / ``"none"``: the checkpoint's own)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        return f"--vllm-quantization must be a vLLM quantization name, got {name!r}"
    key = name.strip().lower()
    if key in _QUANT_SCHEMES or key == "none":
        return None
    what = ("is one of vLLM's methods the planner does not model" if key in VLLM_QUANTIZATION_METHODS
            else "is not a vLLM quantization method")
    return f"quantization '{name}' {what}; modelled: {', '.join(MODELLED_QUANTIZATION)}"

# Model weights and activations run in 16 bits in vLLM (see KV_CACHE_DTYPE_BYTES).
_ACT_BYTES = 2

# DEFAULT_VOCAB_PADDING_SIZE (model_executor/layers/vocab_parallel_embedding.py:36)
_VOCAB_PADDING = 64


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def vllm_gib(n_bytes: float) -> str:
    """vLLM's own GiB rendering in its log and error lines, ``f"{round(b / GiB, 2)}"``
    (utils/mem_utils.py:30-31): "39.6", not "39.60". The planner's own is units.format_gib."""
    return f"{round(n_bytes / GIB, 2)}"


# -- budget and the start-up check ----------------------------------------------------------------

def budget_bytes(total_bytes: int, gpu_memory_utilization: float, version: str | None = None) -> int:
    """Memory vLLM requests per GPU: ``math.ceil(total * gpu_memory_utilization)``.

    ``request_memory``, v1/worker/utils.py:716-772 (formula L724-726; the same in 0.19.0
    utils.py:408-410 and from 0.14.0, utils.py:258). Before 0.14 the request is the float
    ``total * util`` (0.10.2 gpu_worker.py:176-177; 0.8.5 gpu_worker.py:208-212) and the KV budget
    is truncated by ``int()`` at the end, which is the floor of it here. ``total`` is what
    cudaMemGetInfo reports (``GpuSpec.total_bytes``), so the budget is a fraction of the whole
    card, not of what is free.
    """
    _check_utilization(gpu_memory_utilization)
    if vllm_facts(version).budget_rounding == "float":
        return math.floor(total_bytes * gpu_memory_utilization)
    return math.ceil(total_bytes * gpu_memory_utilization)


def startup_error(free_at_init_bytes: int, total_bytes: int, gpu_memory_utilization: float,
                  requested_bytes: float, device: str = "cuda:0", version: str | None = None) -> str | None:
    """vLLM's start-up ValueError text when ``free_at_init < requested``, else None.

    v1/worker/utils.py:761-770 (identical in 0.19.0 utils.py:412-421 and 0.14.0 utils.py:264).
    ``free_at_init`` is the free memory at vLLM's init snapshot, i.e. after its own CUDA context,
    cuBLAS handles and NCCL communicators (gpu_worker.py:541) and after everything a colocated
    trainer already holds. 0.9.1-0.13 print no device name and compare with the float request
    (0.10.2 gpu_worker.py:176-188); 0.8.5-0.9.0 have no such check (``VllmFacts.startup_check``).
    """
    check = vllm_facts(version).startup_check
    if check == "none" or free_at_init_bytes >= requested_bytes:
        return None
    where = f"{device} " if check == "device_name" else ""
    return (f"Free memory on device {where}({vllm_gib(free_at_init_bytes)}/{vllm_gib(total_bytes)} GiB) "
            f"on startup is less than desired GPU memory utilization ({gpu_memory_utilization}, "
            f"{vllm_gib(requested_bytes)} GiB). Decrease GPU memory utilization or reduce GPU memory "
            f"used by other processes.")


# -- weights --------------------------------------------------------------------------------------

# How vLLM shards each projection under tensor parallelism (model_executor/layers/linear.py):
# ColumnParallelLinear / MergedColumnParallelLinear split the output features, RowParallelLinear
# the input features, ReplicatedLinear keeps the whole matrix on every rank. k/v go through
# QKVParallelLinear (linear.py:1064-1071): kv heads are split when tp <= kv heads, else every
# rank holds one replicated kv head.
_COLUMN = {"q_proj", "q_b_proj", "kv_b_proj", "gate_proj", "up_proj", "gate_up_proj",
           "experts.gate_proj", "experts.up_proj", "shared_expert.gate_proj", "shared_expert.up_proj"}
_ROW = {"o_proj", "down_proj", "experts.down_proj", "shared_expert.down_proj"}
_REPLICATED = {"router", "shared_expert_gate", "q_a_proj", "kv_a_proj_with_mqa"}
# Layers vLLM never quantizes: MoE routers are built with quant_config=None.
_NEVER_QUANTIZED = {"router", "shared_expert_gate"}


def kv_heads_per_rank(spec: ModelSpec, tp: int) -> int:
    """``max(1, total_kv_heads // tp)`` (config/model.py:1663-1683); MLA: always 1 latent head."""
    if spec.is_mla:
        return 1
    return max(1, spec.num_kv_heads // tp)


def _linear_rank_shape(name: str, in_f: int, out_f: int, spec: ModelSpec, tp: int) -> tuple[int, int]:
    if name in ("k_proj", "v_proj"):
        return in_f, kv_heads_per_rank(spec, tp) * spec.head_dim
    if name == "qkv_proj":  # fused (Phi-3): q split, kv as above
        return in_f, spec.q_dim // tp + 2 * kv_heads_per_rank(spec, tp) * spec.head_dim
    if name in _COLUMN:
        return in_f, out_f // tp
    if name in _ROW:
        return in_f // tp, out_f
    return in_f, out_f  # _REPLICATED and anything unknown


def _matrix_bytes(in_f: int, out_f: int, scheme: str) -> int:
    """Bytes of one ``in_f x out_f`` weight matrix stored with ``scheme``.

    * ``bf16``: 2 B per element.
    * ``fp8``: 1 B per element plus one fp32 per-tensor scale (online ``quantization="fp8"``).
    * ``nf4``: vLLM's in-flight bitsandbytes quantization (0.26.0
      model_executor/model_loader/bitsandbytes_loader.py:433-437: ``quantize_4bit(...,
      compress_statistics=True, quant_type="nf4")``, blocksize 64): packed 4-bit codes (n/2 B),
      one uint8 absmax per 64 elements, one fp32 second-level absmax per 256 blocks, and the
      16-entry NF4 code plus the 256-entry nested code in fp32 (1,088 B) per tensor.
    * ``awq``/``gptq``: int4 with group size 128: packed codes (n/2 B), fp16 scales and packed
      int4 zeros per group and output column; GPTQ also stores an int32 ``g_idx`` per input row.
    * ``mxfp4``: 4-bit e2m1 codes (n/2 B) and one e8m0 scale per 32 elements (n/32 B): 4.25 bits
      per weight (planner.memory.weights.mxfp4_bytes); gpt-oss's experts only.
    """
    n = in_f * out_f
    if scheme == "bf16":
        return n * 2
    if scheme == "fp8":
        return n + 4
    if scheme == "mxfp4":
        # Mxfp4MoEMethod.create_weights (0.19.0 model_executor/layers/quantization/mxfp4.py:138-226):
        # uint8 packed pairs (n/2 B) and one uint8 E8M0 scale per 32 elements; on Hopper the
        # Triton backend pads the intermediate size to a multiple of 64 only (oracle/mxfp4.py:398-399)
        return mxfp4_bytes(n)
    if scheme == "nf4":
        blocks = _cdiv(n, 64)
        return n // 2 + blocks + 4 * _cdiv(blocks, 256) + 4 * (16 + 256)
    if scheme in ("awq", "gptq"):
        groups = _cdiv(in_f, 128)
        q = n // 2 + groups * out_f * 2 + _cdiv(groups * out_f, 2)
        return q + (4 * in_f if scheme == "gptq" else 0)
    raise ValueError(scheme)  # pragma: no cover - schemes are validated before


def weight_scheme(spec: ModelSpec, quantization: str | None = None, version: str | None = None) -> str:
    """``bf16``/``fp8``/``nf4``/``awq``/``gptq``/``mxfp4`` for the weights vLLM will hold.

    ``quantization=None`` uses the checkpoint's own method (``spec.quantization``). Names are vLLM's
    (:data:`VLLM_QUANTIZATION_METHODS`); one the planner does not model is refused in one line
    naming the modelled ones. ``mxfp4`` is an MXFP4 checkpoint's (gpt-oss: its experts; the dense
    layers stay 16-bit); a model without MXFP4 experts is refused. TRL passes
    ``quantization="bitsandbytes"`` when the trainer model holds bitsandbytes ``Linear4bit``
    layers; vLLM removed that method in 0.28.0 (see ``VllmFacts.bitsandbytes_supported``) and
    then fails with "Unknown quantization method" (config/model.py:1464-1469).
    """
    facts = vllm_facts(version)
    name = quantization if quantization is not None else spec.quantization
    if name is None or str(name).lower() in ("none", ""):
        return "bf16"
    problem = quantization_problem(name)
    if problem:
        raise InvalidSetupError(problem)
    key = str(name).strip().lower()
    if key == "mxfp4":
        if spec.expert_quantization != "mxfp4":
            raise InvalidSetupError(f"quantization 'mxfp4' loads an MXFP4 checkpoint (gpt-oss's experts); "
                                    f"{spec.model_id} has none (vLLM refuses the mismatch)")
        return "mxfp4"
    if (quantization is not None and spec.quantization
            and _QUANT_SCHEMES.get(str(spec.quantization).lower()) != _QUANT_SCHEMES[key]):
        raise InvalidSetupError(f"quantization '{quantization}' does not match the checkpoint's own "
                                f"'{spec.quantization}' (vLLM refuses the mismatch)")
    if key == "bitsandbytes" and not facts.bitsandbytes_supported:
        raise InvalidSetupError(f"vLLM {facts.release} has no 'bitsandbytes' quantization (removed in 0.28.0), "
                                f"which TRL passes for a 4-bit trainer model; plan with --vllm-version 0.27 "
                                f"or a 16-bit trainer model")
    return _QUANT_SCHEMES[key]


def weights_bytes(spec: ModelSpec, quantization: str | None = None, tp: int = 1,
                  version: str | None = None) -> int:
    """Bytes of weights and buffers one vLLM rank holds: the "Model loading took X GiB" line.

    That log (v1/worker/gpu_model_runner.py:5089) reports the rise of torch's allocated memory
    while loading, i.e. parameters plus buffers. Counted per rank:

    * every decoder projection (``spec.linear_shapes()``), sharded as vLLM shards it (module
      comment above ``_COLUMN``), stored with the quantization scheme (``_matrix_bytes``); MoE
      routers stay 16-bit; biases are 16-bit;
    * embeddings and an untied LM head, 16-bit in every scheme, vocabulary padded to a multiple
      of 64 then split over TP (VocabParallelEmbedding, vocab_parallel_embedding.py:286-306);
    * norms, 16-bit and replicated; a vision tower (multimodal checkpoints load it) at 16 bits
      and split over TP (approximation: vLLM's SigLIP uses parallel linears);
    * the RoPE ``cos_sin_cache`` buffer, ``max_position_embeddings x rotary_dim`` in the model
      dtype (model_executor/layers/rotary_embedding/base.py:58-63); Gemma 3 builds two;
    * MLA only: the absorbed ``W_UK_T`` and ``W_UV`` copies of ``kv_b_proj`` that
      ``process_weights_after_loading`` keeps in the activation dtype
      (model_executor/layers/attention/mla_attention.py:1270-1277, 1345-1349).

    Check: Llama-3.1-8B bf16 = 8,030,261,248 x 2 B + 32 MiB RoPE = 14.99 GiB, vLLM's usual log.
    """
    _check_tp(spec, tp)
    scheme = weight_scheme(spec, quantization, version)
    total = 0
    linear_attention_params = 0
    for s in spec.linear_shapes():
        if s.group == "attention":
            linear_attention_params += s.weight_params + s.bias_params
        in_r, out_r = _linear_rank_shape(s.name, s.in_features, s.out_features, spec, tp)
        s_scheme = "bf16" if s.name in _NEVER_QUANTIZED or scheme == "mxfp4" else scheme  # mxfp4: experts only
        if s.group == "experts" and spec.expert_quantization == "mxfp4":
            s_scheme = "mxfp4"
        per = _matrix_bytes(in_r, out_r, s_scheme)
        total += per * s.count * s.layers
        if s.bias:
            total += out_r * 2 * s.count * s.layers
        if spec.is_mla and s.name == "kv_b_proj":
            total += in_r * out_r * _ACT_BYTES * s.layers  # absorbed W_UK_T + W_UV
    vocab_rank = _cdiv(spec.vocab_size, _VOCAB_PADDING) * _VOCAB_PADDING // tp
    total += vocab_rank * spec.hidden_size * 2 * (1 if spec.tie_word_embeddings else 2)
    total += spec.param_counts().norms * 2
    total += spec.vision_params * 2 // tp
    # attention parameters outside the linears (gpt-oss sinks, gated delta-net conv1d / dt_bias /
    # A_log), 16-bit and split over TP with the heads they belong to
    total += (spec.param_counts().attention - linear_attention_params) * 2 // tp
    rotary_dim = spec.qk_rope_head_dim if spec.is_mla else spec.head_dim
    n_ropes = 2 if spec.model_type.startswith("gemma3") and spec.num_sliding_layers else 1
    total += n_ropes * spec.max_position_embeddings * rotary_dim * _ACT_BYTES
    return total


# -- activation peak of profile_run ---------------------------------------------------------------

def forward_bytes_per_token(spec: ModelSpec, tp: int = 1) -> int:
    """Activation bytes one token holds at the widest point of one decoder layer, per rank.

    Live at once, in 16 bits: the residual stream and the normed input (2 x hidden), plus the
    larger of
    * attention: q, k, v projections and the attention output (MLA: q, the 576-wide latent,
      the ``kv_b_proj`` output and the value output);
    * dense MLP: gate/up output (2 x intermediate) and the activation output (intermediate);
    * MoE: fused-MoE caches for ``top_k`` experts (2 x moe_intermediate + moe_intermediate +
      hidden each), fp32 router logits, and a shared expert as a dense MLP.
    Intermediate widths are split over TP as the projections are.
    """
    h = spec.hidden_size
    heads_r = max(1, spec.num_attention_heads // tp)
    if spec.is_mla:
        attn = (heads_r * (spec.qk_nope_head_dim + spec.qk_rope_head_dim) + spec.kv_lora_rank
                + spec.qk_rope_head_dim + heads_r * (spec.qk_nope_head_dim + spec.v_head_dim)
                + heads_r * spec.v_head_dim)
    else:
        attn = 2 * heads_r * spec.head_dim + 2 * kv_heads_per_rank(spec, tp) * spec.head_dim
    widest = _ACT_BYTES * attn
    if spec.num_dense_mlp_layers:
        widest = max(widest, _ACT_BYTES * 3 * (spec.intermediate_size // tp))
    if spec.is_moe:
        im = spec.moe_intermediate_size // tp
        moe = (_ACT_BYTES * (spec.num_experts_per_tok * (3 * im + h) + 3 * (spec.shared_expert_intermediate_size // tp))
               + 4 * spec.num_experts)
        widest = max(widest, moe)
    return _ACT_BYTES * 2 * h + widest


def activation_peak_bytes(spec: ModelSpec, max_num_batched_tokens: int, max_num_seqs: int,
                          version: str | None = None, tp: int = 1, processed_logprobs: bool = False,
                          engine: str = "v1") -> int:
    """Transient torch peak of vLLM's ``profile_run`` (freed again, but reserved from the budget).

    ``profile_run`` (V2 runner v1/worker/gpu/model_runner.py:1022-1039; V1 runner
    gpu_model_runner.py:6072) runs one dummy forward over ``max_num_batched_tokens`` tokens,
    then the sampler over ``rows = min(max_num_batched_tokens, max_num_seqs)`` last-token hidden
    states (model_runner.py:993-1016, logits ``[rows, vocab]``; every TP rank gathers the full
    vocabulary). The two phases follow each other, so the peak is the larger one:

    * forward phase: ``mnbt x forward_bytes_per_token`` (``forward_bytes_per_token``);
    * sampler phase: ``rows x vocab x sampler_bytes_per_logit`` (bf16 logits + three fp32
      logits-sized buffers = 14 B; ``VllmFacts``) plus the dummy run's hidden states and
      residual, still held, ``mnbt x hidden x 2 x 2 B``. Where top-k/top-p takes PyTorch's sort
      (fewer than 8 rows from vLLM 0.17, ``VllmFacts.sampler_triton_min_rows``; every batch before
      0.17 when ``processed_logprobs``, as TRL >= 0.24 asks) the sort's outputs and temporaries make
      it ``sampler_sort_bytes_per_logit`` (38 B);

    plus ``activation_fixed_bytes`` (100 MiB). Calibration (``VllmFacts.sampler_bytes_per_logit``):
    at mnbt 8192 and 1024 rows this gives 1.93 GiB for Llama-3.1-8B, 2.24 for Qwen2.5-7B, 3.62 for
    Gemma-2-9B and 3.76 for Gemma-3-27B, against 1.9-2.2 and 3.65-3.99 GiB measured on v0.19
    (docs/vllm-memory.md §1.3, §8.4). It does not depend on ``max_model_len`` (chunked prefill).
    The forward phase is physically shaped but not calibrated (no data at small ``max_num_seqs``).

    ``engine="v0"`` (0.8.5's V0 engine, ``vllm_capacity``): the dummy run (0.8.5 worker/model_runner.py:
    1262-1360) prefills ``max_num_seqs`` sequences over ``max_num_batched_tokens`` tokens with top_p 0.99 and
    top_k vocab - 1 (L1267-1268) and samples every one: the fp32 copy and PyTorch's sort
    (model_executor/layers/sampler.py:270-275, ``_apply_top_k_top_p`` L387-413) unless FlashInfer's
    sampler is loaded (L25-33; Unsloth sets VLLM_USE_FLASHINFER_SAMPLER=0 below compute capability 8.0,
    unsloth_zoo 2025.5.7 vllm_utils.py:1027-1032, and 1 above only where flashinfer is installed): the sort's
    38 B per logit. V0 reports the increase over its own init snapshot (worker.py:245-253), so there is no
    fixed term.
    """
    facts = vllm_facts(version)
    if max_num_batched_tokens < 1 or max_num_seqs < 1:
        raise InvalidSetupError("max_num_batched_tokens and max_num_seqs must be >= 1")
    rows = min(max_num_batched_tokens, max_num_seqs)
    forward = max_num_batched_tokens * forward_bytes_per_token(spec, tp)
    if engine == "v0":
        sampler = (math.ceil(rows * spec.vocab_size * facts.sampler_sort_bytes_per_logit)
                   + max_num_batched_tokens * spec.hidden_size * _ACT_BYTES * 2)
        return max(forward, sampler)
    if facts.sampler_triton_min_rows is None:
        sorts = processed_logprobs  # before 0.17: the sort unless FlashInfer samples (see VllmFacts)
    else:
        sorts = rows < facts.sampler_triton_min_rows
    per_logit = facts.sampler_sort_bytes_per_logit if sorts else facts.sampler_bytes_per_logit
    sampler = (math.ceil(rows * spec.vocab_size * per_logit)
               + max_num_batched_tokens * spec.hidden_size * _ACT_BYTES * 2)
    return max(forward, sampler) + facts.activation_fixed_bytes


# -- the multimodal encoder's profile run (Qwen2.5-VL) -------------------------------------------

# Qwen2.5-VL's largest image: its processor's max_pixels 12845056 = 16384 x 28 x 28
# (preprocessor_config.json of the Qwen2.5-VL checkpoints, from memory; Unsloth's comment agrees:
# "For qwen 2.5 VL, this single image/video contributes to 16Ki tokens", unsloth_zoo 2025.9.7
# vllm_utils.py:1518). vLLM's dummy image for profiling is the one with the most features.
QWEN2_5_VL_MAX_IMAGE_TOKENS = 16384
_PIXEL_BYTES = 4  # the processor's float32 pixel_values


def _qwen2_5_vl_vision(spec: ModelSpec) -> dict | None:
    vc = spec.raw_config.get("vision_config") if spec.vision_params else None
    if not isinstance(vc, dict) or not str(vc.get("model_type") or spec.model_type).startswith("qwen2_5_vl"):
        return None
    return vc


def image_tokens(spec: ModelSpec) -> int:
    """Decoder tokens of the largest image vLLM profiles (0: no modelled vision tower)."""
    return QWEN2_5_VL_MAX_IMAGE_TOKENS if _qwen2_5_vl_vision(spec) else 0


def vision_profile_bytes(spec: ModelSpec, images: int) -> tuple[int, int]:
    """(encoder peak, encoder outputs kept) of the profile run's dummy images; (0, 0) without a
    modelled vision tower. NOT MEASURED: physically shaped, as ``forward_bytes_per_token``.

    vLLM's ``profile_run`` first runs the vision encoder on ``images`` dummy images of the largest
    size, keeps the outputs in its encoder cache and then runs the text dummy forward
    (docs/vllm-memory.md §1.3). Qwen2.5-VL's encoder sees ``tokens x spatial_merge_size^2``
    patches per image; at its widest point each holds the residual and normed input (2 x hidden),
    the larger of attention (qkv + output, 4 x hidden; windowed or memory-efficient, no N^2 term)
    and the gated MLP (3 x intermediate), in 16 bits, beside the patch's float32 pixels
    (channels x temporal_patch x patch^2). The outputs: ``tokens x out_hidden_size`` in 16 bits.
    """
    vc = _qwen2_5_vl_vision(spec)
    if vc is None or images < 1:
        return 0, 0
    d, ff = int(vc.get("hidden_size", 1280)), int(vc.get("intermediate_size", 3420))
    patch, temporal = int(vc.get("patch_size", 14)), int(vc.get("temporal_patch_size", 2))
    channels = int(vc.get("in_chans", vc.get("in_channels", 3)))
    patches = QWEN2_5_VL_MAX_IMAGE_TOKENS * int(vc.get("spatial_merge_size", 2)) ** 2
    per_patch = _ACT_BYTES * (2 * d + max(4 * d, 3 * ff)) + _PIXEL_BYTES * channels * temporal * patch * patch
    outputs = QWEN2_5_VL_MAX_IMAGE_TOKENS * int(vc.get("out_hidden_size", spec.hidden_size)) * _ACT_BYTES
    return images * patches * per_patch, images * outputs


def moe_workspace_bytes(spec: ModelSpec, max_num_batched_tokens: int, tp: int = 1,
                        version: str | None = None) -> int:
    """The fused-MoE workspace ``profile_run`` leaves allocated: a PERSISTENT buffer, not a transient.

    0.19.0 ``FusedMoEModularKernel._allocate_buffers`` (model_executor/layers/fused_moe/
    modular_kernel.py:1009-1071) takes its buffers from the worker's ``WorkspaceManager``
    (v1/worker/workspace.py:90-128, created in gpu_worker.py:291-293), which grows one tensor to the
    largest request and keeps it (locked after warm-up, gpu_model_runner.py:6038-6040). Sized for
    ``M = max_num_batched_tokens`` (one chunk, L1189-1200) with ``TritonExperts.workspace_shapes``
    (fused_moe.py:1976-1991): ``workspace13 = M x top_k x max(N/2, K)`` (shared with the ``M x K``
    output) and ``workspace2 = M x top_k x max(N, K)``, ``N = 2 x moe_intermediate / tp`` (w13),
    ``K = hidden``, 16-bit, each rounded up to 256 B. ``memory_profiling`` therefore sees it in
    ``total_consumed`` (weights-like), and the sampler's transient peak comes on top of it. Qwen3-30B-A3B
    on H100 at utilisation 0.95 (default mnbt 16384): 16384 x 8 x 2048 x 2 B x 2 = 1.0 GiB of a
    ~15.8 GiB KV budget, which the planner did not count (its +2.8% KV-token error, issue 13; the
    start-up log behind that figure is not in the repository, so the size is read from the code,
    not checked against it).

    Releases before 0.19 are not read (0 here: their chunked fused-MoE caches are transients, which
    ``forward_bytes_per_token`` covers); MXFP4 experts (gpt-oss) use another kernel family whose
    workspace is not read either (0).
    """
    if not spec.is_moe or spec.expert_quantization:
        return 0
    if parse_version(vllm_facts(version).release, "vLLM") < (0, 19, 0):
        return 0
    m, k, top_k = max_num_batched_tokens, spec.hidden_size, spec.num_experts_per_tok
    n = 2 * spec.moe_intermediate_size // tp
    ws13 = max(m * top_k * max(n // 2, k), m * k) * _ACT_BYTES
    ws2 = m * top_k * max(n, k) * _ACT_BYTES
    return _cdiv(ws13, 256) * 256 + _cdiv(ws2, 256) * 256


def non_torch_bytes(tp: int = 1, version: str | None = None) -> int:
    """Non-torch growth while vLLM profiles (inside the budget): attention-backend workspaces and
    lazily allocated NCCL / custom all-reduce buffers.

    vLLM measures it as the part of the free-memory drop that torch did not allocate
    (utils/mem_utils.py:305-321, ``non_torch_increase``). Here: ~0.25 GiB at TP1 and ~2.1 GiB at
    TP2 on H100 in v0.19 logs (docs/vllm-memory.md §8.5); TP > 2 is assumed equal to TP2. Releases
    that snapshot before NCCL set-up (0.9.1-0.10.x, ``VllmFacts.snapshot_after_distributed_init``)
    also measure the communicators here: the TP>1 baseline minus the TP1 one is moved inside
    (an assumption from the v0.19 numbers; no pre-0.19 log measured it).
    """
    facts = vllm_facts(version)
    if tp == 1:
        return facts.non_torch_bytes_tp1
    moved = 0 if facts.snapshot_after_distributed_init else facts.baseline_bytes_tp_multi - facts.baseline_bytes_tp1
    return facts.non_torch_bytes_tp_multi + moved


def baseline_bytes(tp: int = 1, version: str | None = None) -> int:
    """What vLLM allocates *before* its init snapshot, outside the budget: CUDA context, cuBLAS
    handles, NCCL communicators (Worker.init_device, v1/worker/gpu_worker.py:449-541).

    ~0.5 GiB at TP1, ~1.5 GiB at TP>1 for a fresh process on H100 (docs/vllm-memory.md §1.1, §8.2).
    In TRL's colocate mode vLLM runs inside the trainer's process and shares its CUDA context, so
    callers that already count the trainer's context pass a smaller ``baseline_bytes``.
    Before 0.11 the snapshot precedes NCCL set-up (0.10.2 gpu_worker.py:175 then :193), so the
    TP1 figure is used for every TP size (see ``non_torch_bytes``).
    """
    facts = vllm_facts(version)
    if tp == 1 or not facts.snapshot_after_distributed_init:
        return facts.baseline_bytes_tp1
    return facts.baseline_bytes_tp_multi


# -- CUDA graphs ----------------------------------------------------------------------------------

def cudagraph_capture_sizes(max_num_seqs: int, max_num_batched_tokens: int, version: str | None = None,
                            blackwell: bool = False, engine: str = "v1") -> tuple[int, ...]:
    """Batch sizes vLLM captures, as ``VllmConfig._set_cudagraph_sizes`` builds them.

    0.33.0 config/vllm.py:2398-2603 (no speculative decoding, ``uniform_decode_query_len`` 1):
    ``max_capture = min(max_num_seqs x 2, 512)`` (1024 on data-centre Blackwell, L2463-2471),
    capped at ``max_num_batched_tokens`` (L2552); sizes 1, 2, 4, every 8 below 256, every 16 up to
    ``max_capture`` (L2579-2590); plus ``max_num_batched_tokens`` when it fits (L2592-2596, from
    0.21.0) and ``max_num_seqs`` as the uniform-decode size (L2549-2550, L2597-2601, from 0.31.0).
    0.19.0 (config/vllm.py:1343) has only the grid. ``max_num_seqs`` >= 256 gives 51 sizes.
    Older rules (``VllmFacts.cudagraph_sizes_rule``): 0.8.5-0.9.x ``[1, 2, 4] + range(8, 513, 8)``
    whatever ``max_num_seqs`` is (67 sizes; 0.8.5 config.py:4031-4045); 0.10-0.11 ``[1, 2, 4] +
    range(8, min(2 x max_num_seqs, 512) + 1, 8)`` (0.10.2 config/scheduler.py:244,
    config/__init__.py:3640-3660); both filtered to ``<= max_num_batched_tokens`` only. 0.8.5's V0 engine
    (``engine="v0"``): ``[1, 2, 4] + 8 x i`` up to the first size >= ``max_num_seqs`` (0.8.5 config.py:4000-4030).
    """
    facts = vllm_facts(version)
    if engine == "v0":
        grid = [1, 2, 4] + [8 * i for i in range(1, 1025)]
        top = next((x for x in grid if x >= max_num_seqs), grid[-1])
        return tuple(x for x in grid if x <= top)
    if facts.cudagraph_sizes_rule in ("every8_to_512", "every8_to_2x_seqs"):
        top = 512 if facts.cudagraph_sizes_rule == "every8_to_512" else min(max_num_seqs * 2, 512)
        return tuple(s for s in [1, 2, 4] + list(range(8, top + 1, 8)) if s <= max_num_batched_tokens)
    ceiling = 1024 if (blackwell and facts.cudagraph_blackwell_1024) else 512
    max_capture = min(max_num_seqs * 2, ceiling)
    uniform = [max_num_seqs] if facts.cudagraph_appends_max_num_seqs and max_num_seqs <= max_capture else []
    max_capture = min(max_num_batched_tokens, max_capture)
    sizes = [i for i in (1, 2, 4) if i <= max_capture]
    if max_capture >= 8:
        sizes += list(range(8, min(max_capture + 1, 256), 8))
    if max_capture >= 256:
        sizes += list(range(256, max_capture + 1, 16))
    if facts.cudagraph_appends_mnbt and max_num_batched_tokens <= max_capture:
        sizes.append(max_num_batched_tokens)
    sizes += [s for s in uniform if s <= max_num_batched_tokens]
    return tuple(sorted(set(sizes)))


def cudagraph_bytes(spec: ModelSpec, max_num_seqs: int, max_num_batched_tokens: int, enforce_eager: bool = False,
                    version: str | None = None, tp: int = 1, blackwell: bool = False, engine: str = "v1") -> int:
    """ESTIMATE of the CUDA-graph pool vLLM captures (0 with ``enforce_eager``).

    vLLM profiles it (``profile_cudagraph_memory``, v1/worker/gpu/cudagraph_utils.py:922, with
    linear extrapolation L1031) and, from 0.20.0, subtracts that estimate from the KV budget
    (gpu_worker.py:707-757). Here it is modelled as

        graphs x num_layers x cudagraph_bytes_per_graph_layer + largest_size x forward_bytes_per_token

    with ``graphs`` = one PIECEWISE graph per capture size plus one FULL decode graph per size
    <= max_num_seqs (the default FULL_AND_PIECEWISE mode, v1/cudagraph_dispatcher.py:185-224;
    PIECEWISE only before 0.11, ``VllmFacts.cudagraph_full_decode``)
    and 280 KiB per graph per layer fitted to Llama-3.1-8B on H100 (51+51 graphs, 0.91 GiB
    actual, v0.19). Reported pools are 0.5-1.9 GiB on H100 for 2-30B models at default sizes,
    and vLLM's own estimate differs from the captured pool by up to ~2x either way
    (docs/vllm-memory.md §1.4, §4.3): treat this term as +-50%. 0.8.5's V0 engine (``engine="v0"``) captures
    one whole-model graph per size of its own list (0.8.5 worker/model_runner.py capture_model), counted as
    one graph per size.
    """
    if enforce_eager:
        return 0
    facts = vllm_facts(version)
    sizes = cudagraph_capture_sizes(max_num_seqs, max_num_batched_tokens, version, blackwell, engine)
    if not sizes:
        return 0
    full = sum(1 for s in sizes if s <= max_num_seqs) if facts.cudagraph_full_decode and engine == "v1" else 0
    graphs = len(sizes) + full
    return (graphs * spec.num_layers * facts.cudagraph_bytes_per_graph_layer
            + max(sizes) * forward_bytes_per_token(spec, tp))


# -- KV cache -------------------------------------------------------------------------------------

def kv_bytes_per_token_per_layer(spec: ModelSpec, kv_cache_dtype: str = "auto", tp: int = 1) -> int:
    """KV bytes one token needs in one attention layer on one rank.

    ``AttentionSpec.state_content_size_bytes`` x heads (v1/kv_cache_interface.py:585-595):
    ``num_kv_heads_per_rank x (head_size + head_size_v) x dtype bytes`` for full, GQA and
    sliding-window layers; MLA stores one latent head of ``kv_lora_rank + qk_rope_head_dim``
    with no separate V (``MLAAttentionSpec.head_size_v = 0``, L729-750), replicated on every TP
    rank (``get_num_kv_heads`` returns 1, config/model.py:1673-1675).
    """
    dtype_bytes = _kv_dtype_bytes(kv_cache_dtype)
    if spec.is_mla:
        return spec.mla_latent_dim * dtype_bytes
    return kv_heads_per_rank(spec, tp) * 2 * spec.head_dim * dtype_bytes


def kv_bytes_per_token(spec: ModelSpec, kv_cache_dtype: str = "auto", tp: int = 1) -> int:
    """KV bytes one token needs across all layers on one rank (DeepSeek-V2-Lite: 27 x 576 x 2 = 31,104).

    For sliding-window layers this is the cost of a token that is still inside the window. Gated
    delta-net layers (Qwen3-Next) hold no per-token KV: their state is per sequence
    (``linear_attention_state_bytes``).
    """
    return spec.num_attention_layers * kv_bytes_per_token_per_layer(spec, kv_cache_dtype, tp)


def linear_attention_state_bytes(spec: ModelSpec, tp: int = 1, state_bytes: int = _ACT_BYTES) -> int:
    """One gated delta-net layer's recurrent state for one sequence on one rank (the unpadded
    ``MambaSpec.page_size_bytes``, 0.19.0 v1/kv_cache_interface.py:283-291).

    ``MambaStateShapeCalculator.gated_delta_net_state_shape`` (0.19.0
    model_executor/layers/mamba/mamba_utils.py:177-200): a conv state of ``(kernel - 1) x conv_dim / tp``
    and a temporal state of ``value_heads / tp x value_head_dim x key_head_dim``, both in the model
    dtype by default (``_mamba_state_dtype``, L55-67: ``mamba_ssm_cache_dtype="auto"``).
    """
    if not spec.is_hybrid_linear:
        return 0
    conv = (spec.linear_conv_kernel_dim - 1) * (spec.linear_conv_dim // tp)
    temporal = (spec.linear_num_value_heads // tp) * spec.linear_value_head_dim * spec.linear_key_head_dim
    return (conv + temporal) * state_bytes


def hybrid_block_size(spec: ModelSpec, kv_cache_dtype: str = "auto", tp: int = 1, block_size: int = 16) -> int:
    """Attention block size of a gated delta-net hybrid: the smallest multiple of 16 tokens whose
    attention page holds one layer's recurrent state (``HybridAttentionMambaModelConfig``, 0.19.0
    model_executor/models/config.py:266-281, prefix caching off: hybrids do not support it by
    default, config/model.py:1785-1790, so ``mamba_cache_mode`` stays "none"); the state page is then
    padded to the attention page (L297-308). Qwen3-Next-80B at TP1: 1,097,728 B of state over
    2,048 B per token -> 544 tokens. Unchanged for models without linear-attention layers."""
    state = linear_attention_state_bytes(spec, tp)
    if not state:
        return block_size
    per_token = kv_bytes_per_token_per_layer(spec, kv_cache_dtype, tp)
    return max(block_size, 16 * _cdiv(state, 16 * per_token))


def kv_page_bytes(spec: ModelSpec, kv_cache_dtype: str = "auto", tp: int = 1, block_size: int = 16) -> int:
    """One layer's page: ``block_size x kv_bytes_per_token_per_layer`` (kv_cache_interface.py:593-602)."""
    return block_size * kv_bytes_per_token_per_layer(spec, kv_cache_dtype, tp)


def full_attention_blocks_per_request(max_model_len: int, block_size: int = 16) -> int:
    """``cdiv(max_model_len, block_size)`` (FullAttentionSpec.max_memory_usage_bytes, kv_cache_interface.py:643-648)."""
    return _cdiv(max_model_len, block_size)


def sliding_window_blocks_per_request(sliding_window: int, max_model_len: int, max_num_batched_tokens: int,
                                      version: str | None = None, block_size: int = 16) -> int:
    """``cdiv(min(window - 1 + in_flight, max_model_len), block_size) + 1``.

    SlidingWindowSpec.max_admission_blocks_per_request (kv_cache_interface.py:918-944) with
    ``in_flight = max_concurrent_batches x max_num_batched_tokens`` (config/vllm.py:588-609;
    2 batches with async scheduling from 0.26.0, 1 before: 0.20.0 kv_cache_interface.py:436).
    The +1 covers a window that does not start on a block boundary.
    """
    in_flight = vllm_facts(version).sliding_window_in_flight_batches * max_num_batched_tokens
    return _cdiv(min(sliding_window - 1 + in_flight, max_model_len), block_size) + 1


@dataclass(frozen=True)
class KvGroup:
    """One KV-cache group: ``layers`` layers of one kind sharing a block table."""

    kind: str  # "full_attention" | "sliding_attention" | "mla"
    layers: int
    blocks_per_request: int


@dataclass(frozen=True)
class KvLayout:
    """How vLLM groups layers and sizes a block (v1/core/kv_cache_planning.py:1113-1200)."""

    block_size: int
    page_bytes: int  # one layer's page (all layers share one page size here)
    group_size: int  # layers per group = layers whose pages one block holds
    groups: tuple[KvGroup, ...]
    padding_layers: int

    @property
    def bytes_per_block(self) -> int:
        """Largest group's page bytes (``_get_kv_cache_bytes_per_block``, kv_cache_planning.py:574-605)."""
        return self.group_size * self.page_bytes

    @property
    def blocks_per_request(self) -> int:
        """Blocks one ``max_model_len`` request takes from the shared pool: the sum over groups
        (``get_max_concurrency_for_kv_cache_config``, kv_cache_utils.py:1076-1086)."""
        return sum(g.blocks_per_request for g in self.groups)

    @property
    def request_bytes(self) -> int:
        """KV bytes one ``max_model_len`` request needs (``_max_memory_usage_bytes_from_groups``,
        kv_cache_planning.py:1253-1285: ``bytes_per_block x total_blocks``)."""
        return self.bytes_per_block * self.blocks_per_request

    def to_dict(self) -> dict:
        return {"block_size": self.block_size, "page_bytes": self.page_bytes, "group_size": self.group_size,
                "bytes_per_block": self.bytes_per_block, "padding_layers": self.padding_layers,
                "blocks_per_request": self.blocks_per_request,
                "groups": [{"kind": g.kind, "layers": g.layers, "blocks_per_request": g.blocks_per_request}
                           for g in self.groups]}


def kv_layout(spec: ModelSpec, max_model_len: int, max_num_batched_tokens: int, kv_cache_dtype: str = "auto",
              tp: int = 1, version: str | None = None, block_size: int = 16) -> KvLayout:
    """Group the layers as ``get_kv_cache_groups`` does (kv_cache_planning.py:1113-1200).

    * All layers alike (dense full attention, GQA, MLA, or all sliding with one window): one
      group of every layer (``_get_kv_cache_groups_uniform_spec``, L314-327).
    * Full and sliding layers with one page size (Gemma 2/3): buckets by kind, ``group_size`` =
      the smaller bucket, or the larger one when it is < 1.5 x the smaller (L520-533); each
      bucket becomes ``cdiv(len, group_size)`` groups and short buckets count padding layers
      (L534-541: Gemma-3-27B, 52 sliding / 10 full: 8 padding layers, 15.38%).
    A block then holds one page of each of ``group_size`` layers.

    Version differences (``VllmFacts``): before 0.9.1 there are no hybrid groups and sliding
    layers are sized as full attention (0.8.5 kv_cache_utils.py:699-708); the "larger bucket"
    threshold is 1.5 from 0.18, 1.25 in 0.12-0.17 and never taken in 0.9.1-0.11 (the smaller
    bucket always).
    """
    facts = vllm_facts(version)
    page = kv_page_bytes(spec, kv_cache_dtype, tp, block_size)
    full_blocks = full_attention_blocks_per_request(max_model_len, block_size)
    n_sliding = spec.num_sliding_layers if spec.sliding_window and facts.hybrid_kv_groups else 0
    n_linear = spec.num_linear_attention_layers
    n_full = spec.num_layers - n_sliding - n_linear
    sliding_blocks = (sliding_window_blocks_per_request(spec.sliding_window or 0, max_model_len, max_num_batched_tokens,
                                                        version, block_size) if n_sliding else 0)
    full_kind = "mla" if spec.is_mla else "full_attention"
    if not n_linear and (n_sliding == 0 or n_full == 0):
        kind, blocks = (full_kind, full_blocks) if n_sliding == 0 else ("sliding_attention", sliding_blocks)
        return KvLayout(block_size, page, spec.num_layers, (KvGroup(kind, spec.num_layers, blocks),), 0)
    buckets = [(full_kind, n_full, full_blocks), ("sliding_attention", n_sliding, sliding_blocks)]
    if n_linear:
        # gated delta-net layers: one (padded) state page per request (MambaSpec.max_memory_usage_bytes,
        # 0.19.0 kv_cache_interface.py:293-300, mamba_cache_mode "none": 1 + num_speculative_blocks)
        buckets = [b for b in buckets if b[1]] + [("linear_attention", n_linear, 1)]
    smallest = min(n for _, n, _ in buckets)
    largest = max(n for _, n, _ in buckets)
    group_size = largest if largest < smallest * facts.hybrid_group_max_ratio else smallest
    groups: list[KvGroup] = []
    padding = 0
    for kind, n, blocks in buckets:
        n_groups = _cdiv(n, group_size)
        padding += n_groups * group_size - n
        for i in range(n_groups):
            groups.append(KvGroup(kind, len(range(i, n, n_groups)), blocks))
    return KvLayout(block_size, page, group_size, tuple(groups), padding)


def num_blocks(available_kv_bytes: int, bytes_per_block: int) -> int:
    """``available_memory // bytes_per_block`` (kv_cache_planning.py:681; 0.20.0 kv_cache_utils.py:930:
    ``available // page_size // group_size``, the same number). Negative budgets give 0."""
    return max(0, available_kv_bytes // bytes_per_block)


def max_concurrency(n_blocks: int, blocks_per_request: int, version: str | None = None, block_size: int = 16,
                    max_model_len: int | None = None) -> float:
    """``num_blocks / blocks_per_request`` (kv_cache_utils.py:1087; 0.20.0 L872-890 and 0.9.2
    L626-640 compute the same ratio). The null block is included in ``num_blocks``, as vLLM does.
    0.8.5-0.9.0: ``num_blocks x block_size / max_model_len`` (0.8.5 kv_cache_utils.py:632-639)."""
    if vllm_facts(version).concurrency_formula == "tokens_over_len":
        if max_model_len is None:
            raise ValueError("max_model_len is needed for this release's concurrency formula")
        return n_blocks * block_size / max_model_len
    return n_blocks / blocks_per_request


def kv_cache_tokens(n_blocks: int, n_groups: int, block_size: int, concurrency: float, max_model_len: int,
                    version: str | None = None) -> int:
    """The number in vLLM's "GPU KV cache size: N tokens" line.

    From 0.21.0 ``int(max_concurrency x max_model_len)`` (kv_cache_utils.py:1120-1128); 0.19-0.20
    ``num_blocks // len(kv_cache_groups) x min_block_size`` (0.20.0 kv_cache_utils.py:1693-1697),
    which for hybrids is not the true capacity (compare concurrency instead). For one dense
    group both equal ``num_blocks x block_size`` up to rounding.
    """
    if vllm_facts(version).kv_tokens_formula == "blocks_per_group":
        return n_blocks // n_groups * block_size
    return int(concurrency * max_model_len)


def no_kv_memory_error(version: str | None = None) -> str:
    """vLLM's text when nothing is left for KV blocks (kv_cache_planning.py:56-65; 0.19.0 kv_cache_utils.py:625-631;
    without the docs link before 0.13: 0.8.5 kv_cache_utils.py:526-529, 0.9.2 :554-557)."""
    wording = vllm_facts(version).kv_error_wording
    if wording in ("v0.8", "v0.9"):
        return ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
                "initializing the engine.")
    if wording in ("v0.13", "v0.19"):
        return ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
                "initializing the engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ "
                "for more details.")
    return ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
            "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, "
            "despite its name). See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ "
            "for more details.")


def max_seq_len_error(max_model_len: int, needed_bytes: int, available_bytes: int, estimated_max_len: int,
                      version: str | None = None) -> str:
    """vLLM's text when one ``max_model_len`` request does not fit (kv_cache_planning.py:67-87;
    0.19.0 kv_cache_utils.py:633-652, with its "models's" typo).

    Older wordings: 0.8.5-0.9.0 lose the estimated length to an f-string on its own line (only
    "Based on the available memory," survives, kv_cache_utils.py:541-551) and print GiB with
    ``:.2f``; 0.9.1-0.12 keep it (0.9.2 :565-579); 0.13 adds the docs link (0.13.0 :705-719).
    """
    wording = vllm_facts(version).kv_error_wording
    if wording in ("v0.8", "v0.9", "v0.13"):
        head = (f"To serve at least one request with the models's max seq len ({max_model_len}), "
                f"({needed_bytes / GIB:.2f} GiB KV cache is needed, which is larger than the available KV cache "
                f"memory ({available_bytes / GIB:.2f} GiB).")
        if wording == "v0.8":
            est_old = " Based on the available memory," if estimated_max_len > 0 else ""
            return (f"{head}{est_old}  Try increasing `gpu_memory_utilization` or decreasing `max_model_len` "
                    f"when initializing the engine.")
        est_old = (f"Based on the available memory, the estimated maximum model length is {estimated_max_len}."
                   if estimated_max_len > 0 else "")
        text = (f"{head} {est_old} Try increasing `gpu_memory_utilization` or decreasing `max_model_len` "
                f"when initializing the engine.")
        if wording == "v0.13":
            text += " See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
        return text
    est = (f"Based on the available memory, the estimated maximum model length is {estimated_max_len}. "
           if estimated_max_len > 0 else "")
    head = (f"({max_model_len}), ({vllm_gib(needed_bytes)} GiB KV cache is needed, which is larger than the "
            f"available KV cache memory ({vllm_gib(available_bytes)} GiB). {est}")
    tail = "when initializing the engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
    if wording == "v0.19":
        return (f"To serve at least one request with the models's max seq len {head}"
                f"Try increasing `gpu_memory_utilization` or decreasing `max_model_len` {tail}")
    return (f"To serve at least one request with the model's max seq len {head}"
            f"Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU backend) "
            f"or decreasing `max_model_len` {tail}")


def estimate_max_model_len(spec: ModelSpec, available_bytes: int, max_model_len: int, max_num_batched_tokens: int,
                           kv_cache_dtype: str = "auto", tp: int = 1, version: str | None = None,
                           block_size: int = 16) -> int:
    """Largest length whose one-request KV need fits, by vLLM's binary search over 1..max_model_len
    (``_estimate_max_model_len_from_groups``, kv_cache_planning.py:1288-1334); 0 if nothing fits."""
    def fits(length: int) -> bool:
        return kv_layout(spec, length, max_num_batched_tokens, kv_cache_dtype, tp, version,
                         block_size).request_bytes <= available_bytes
    if not fits(1):
        return 0
    left, right, result = 1, max_model_len, 1
    while left <= right:
        mid = (left + right) // 2
        if fits(mid):
            result, left = mid, mid + 1
        else:
            right = mid - 1
    return result


def kv_check_error(spec: ModelSpec, layout: KvLayout, available_kv_bytes: int, max_model_len: int,
                   max_num_batched_tokens: int, kv_cache_dtype: str = "auto", tp: int = 1,
                   version: str | None = None) -> tuple[str | None, int | None]:
    """vLLM's KV start-up check (``_check_enough_kv_cache_memory``, kv_cache_planning.py:50-87).

    From 0.29.0 it plans against ``available - bytes_per_block`` (the null block BlockPool keeps,
    L1533-1545). Returns (error text or None, estimated maximum model length or None).
    """
    facts = vllm_facts(version)
    check = available_kv_bytes - (layout.bytes_per_block if facts.kv_check_reserves_null_block else 0)
    if check <= 0:
        return no_kv_memory_error(version), 0
    if layout.request_bytes > check:
        est = estimate_max_model_len(spec, check, max_model_len, max_num_batched_tokens, kv_cache_dtype, tp,
                                     version, layout.block_size)
        return max_seq_len_error(max_model_len, layout.request_bytes, check, est, version), est
    return None, None


# -- defaults -------------------------------------------------------------------------------------

def default_batch_limits(gpu: GpuSpec, max_model_len: int, usage_context: str = "LLM_CLASS",
                         max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                         version: str | None = None) -> tuple[int, int]:
    """``(max_num_seqs, max_num_batched_tokens)`` as vLLM fills them in.

    ``EngineArgs.get_batch_defaults`` (engine/arg_utils.py:2940-3039): by usage context and device
    memory: >= 160 GiB (from 0.28.0) 16384 / 1024; >= 70 GiB and not an A100 (nor a GB10 in 0.33)
    16384 / 1024 for ``LLM_CLASS`` (what ``vllm.LLM``, and so TRL, uses), 8192 / 1024 for
    ``OPENAI_API_SERVER``; otherwise 8192 / 256 and 2048 / 256. Then
    ``_set_default_max_num_seqs_and_batched_tokens_args`` (L3151-3241): a defaulted
    ``max_num_batched_tokens`` is capped at ``max_num_seqs x max_model_len`` (L3221-3224) and a
    defaulted ``max_num_seqs`` at ``max_num_batched_tokens`` (L3234). vLLM reads NVML's total
    for the tier (platforms/cuda.py:804-808); ``GpuSpec.total_bytes`` (CUDA's, 480 MiB less on
    H100) lands in the same tier for every shipped card.

    Older releases (``VllmFacts``): 0.8.5 puts an A100 80GB on the large tier (engine/arg_utils.py:1596);
    a defaulted ``max_num_seqs`` is capped at ``max_num_batched_tokens`` only from 0.10.1
    (0.10.2 arg_utils.py:1742) and a defaulted ``max_num_batched_tokens`` at ``max_num_seqs x
    max_model_len`` only from 0.12.0 (arg_utils.py:2004).
    """
    facts = vllm_facts(version)
    if usage_context not in USAGE_CONTEXTS:
        raise InvalidSetupError(f"usage_context must be one of {', '.join(USAGE_CONTEXTS)}, got {usage_context!r}")
    total = gpu.total_bytes
    name = gpu.name.lower()
    gb10 = facts.batch_defaults_gb10_small and gpu.compute_capability == "12.1"
    if facts.batch_defaults_160gib_tier and total >= 160 * GIB:
        tokens = {"LLM_CLASS": 16384, "OPENAI_API_SERVER": 16384}
        seqs = {"LLM_CLASS": 1024, "OPENAI_API_SERVER": 1024}
    elif total >= 70 * GIB and not (facts.batch_defaults_a100_small and "a100" in name) and not gb10:
        tokens = {"LLM_CLASS": 16384, "OPENAI_API_SERVER": 8192}
        seqs = {"LLM_CLASS": 1024, "OPENAI_API_SERVER": 1024}
    else:
        tokens = {"LLM_CLASS": 8192, "OPENAI_API_SERVER": 2048}
        seqs = {"LLM_CLASS": 256, "OPENAI_API_SERVER": 256}
    mns = seqs[usage_context] if max_num_seqs is None else max_num_seqs
    mnbt = max_num_batched_tokens
    if mnbt is None:
        mnbt = tokens[usage_context]
        if facts.batch_defaults_cap_tokens:
            mnbt = min(mns * max_model_len, mnbt)
    if max_num_seqs is None and facts.batch_defaults_cap_seqs:
        mns = min(mns, mnbt)
    return mns, mnbt


def default_block_size(spec: ModelSpec, gpu: GpuSpec) -> int:
    """16 (CacheConfig.DEFAULT_BLOCK_SIZE, config/cache.py:185), except MLA on Blackwell (cc 10.x),
    where the first MLA backend (FlashInfer-MLA, platforms/cuda.py:123-131) supports only 32 and 64
    (v1/attention/backends/mla/flashinfer_mla.py:204-205) and the smallest is chosen
    (v1/attention/backend.py:155-163). On Hopper FLASH_ATTN_MLA takes any multiple of 16."""
    if spec.is_mla and gpu.compute_capability.startswith("10."):
        return 32
    return 16


# -- validation -----------------------------------------------------------------------------------

def _check_utilization(u) -> None:
    if isinstance(u, bool) or not isinstance(u, (int, float)) or not (0 < u <= 1):
        raise InvalidSetupError(f"gpu_memory_utilization must be in (0, 1], got {u}")


def _check_tp(spec: ModelSpec, tp) -> None:
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise InvalidSetupError(f"tensor_parallel_size must be a positive integer, got {tp}")
    if spec.num_attention_heads % tp:
        # config/model.py:1559-1564
        raise InvalidSetupError(f"tensor_parallel_size ({tp}) must divide {spec.model_id}'s "
                                f"num_attention_heads ({spec.num_attention_heads})")
    kv = spec.num_kv_heads
    if not spec.is_mla and (kv % tp if tp <= kv else tp % kv):
        # QKVParallelLinear, model_executor/layers/linear.py:1066-1071
        raise InvalidSetupError(f"tensor_parallel_size ({tp}) and {spec.model_id}'s num_key_value_heads ({kv}) "
                                f"must divide one another")


def _kv_dtype_bytes(kv_cache_dtype: str) -> int:
    if kv_cache_dtype not in KV_CACHE_DTYPE_BYTES:
        raise InvalidSetupError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPE_BYTES)}, "
                                f"got {kv_cache_dtype!r}")
    return KV_CACHE_DTYPE_BYTES[kv_cache_dtype]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSetupError(f"{name} must be a positive integer, got {value}")
    return value


# -- the whole engine -----------------------------------------------------------------------------

@dataclass(frozen=True)
class VllmCapacity:
    """What one vLLM engine gets on one GPU (per TP rank), and whether it starts.

    All ``*_bytes`` are bytes; GiB appear only in ``format``/the CLI.
    """

    model: ModelSpec
    gpu: GpuSpec
    version: str
    gpu_memory_utilization: float
    tensor_parallel_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_dtype: str
    quantization: str | None
    weight_scheme: str
    enforce_eager: bool
    usage_context: str
    total_bytes: int
    free_bytes: int            # free before vLLM starts (the card, or what a trainer left)
    baseline_bytes: int        # vLLM's context/cuBLAS/NCCL before its snapshot, outside the budget
    budget_bytes: int          # ceil(total x util)
    weights_bytes: int
    activation_peak_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int       # estimated pool
    cudagraph_subtracted: bool  # the release takes the estimate out of the KV budget
    cudagraph_sizes: tuple
    available_kv_bytes: int    # "Available KV cache memory"
    kv_bytes_per_token: int
    layout: KvLayout
    num_blocks: int
    max_concurrency: float
    kv_cache_tokens: int
    startup_ok: bool
    errors: tuple
    estimated_max_model_len: int | None = None
    moe_workspace_bytes: int = 0  # persistent fused-MoE workspace (0.19+), inside the budget
    engine: str = "v1"  # "v0": the V0 engine of 0.8.5 (``vllm_capacity(engine=...)``)

    @property
    def kv_cache_bytes(self) -> int:
        """KV cache vLLM allocates: ``num_blocks x bytes_per_block``."""
        return self.num_blocks * self.layout.bytes_per_block

    @property
    def held_outside_budget_bytes(self) -> int:
        """Memory vLLM did not size that still comes out of its budget (0.8.5-0.9.0 only)."""
        if self.engine == "v0":  # V0 sizes from its own snapshot (vllm_capacity)
            return 0
        return held_outside_budget_bytes(self.total_bytes, self.free_bytes, self.baseline_bytes, self.version)

    @property
    def free_at_init_bytes(self) -> int:
        """Free memory at vLLM's init snapshot, what the start-up check compares with the budget."""
        return max(0, self.free_bytes - self.baseline_bytes)

    def log_lines(self) -> tuple[str, ...]:
        """The vLLM INFO lines this prediction corresponds to (texts of the release planned for)."""
        facts = vllm_facts(self.version)
        lines = [f"Model loading took {vllm_gib(self.weights_bytes)} GiB memory",
                 f"Available KV cache memory: {vllm_gib(self.available_kv_bytes)} GiB"]
        tokens = f"GPU KV cache size: {self.kv_cache_tokens:,} tokens"
        conc = (f"Maximum concurrency for {self.max_model_len:,} tokens per request: "
                f"{self.max_concurrency:.2f}x")
        if facts.capacity_log_lines == 1:
            lines.append(f"{tokens}, {conc}")
        else:
            lines += [tokens, conc]
        return tuple(lines)

    def to_dict(self) -> dict:
        v = {
            "version": self.version,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "kv_cache_dtype": self.kv_cache_dtype,
            "quantization": self.quantization,
            "weight_scheme": self.weight_scheme,
            "enforce_eager": self.enforce_eager,
            "usage_context": self.usage_context,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "baseline_bytes": self.baseline_bytes,
            "free_at_init_bytes": self.free_at_init_bytes,
            "budget_bytes": self.budget_bytes,
            "held_outside_budget_bytes": self.held_outside_budget_bytes,
            "weights_bytes": self.weights_bytes,
            "activation_peak_bytes": self.activation_peak_bytes,
            "moe_workspace_bytes": self.moe_workspace_bytes,
            "non_torch_bytes": self.non_torch_bytes,
            "cudagraph_bytes": self.cudagraph_bytes,
            "cudagraph_subtracted": self.cudagraph_subtracted,
            "cudagraph_capture_sizes": len(self.cudagraph_sizes),
            "available_kv_bytes": self.available_kv_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "kv_cache_tokens": self.kv_cache_tokens,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "block_size": self.layout.block_size,
            "bytes_per_block": self.layout.bytes_per_block,
            "blocks_per_request": self.layout.blocks_per_request,
            "num_blocks": self.num_blocks,
            "max_concurrency": self.max_concurrency,
            "kv_layout": self.layout.to_dict(),
            "startup_ok": self.startup_ok,
            "errors": list(self.errors),
            "estimated_max_model_len": self.estimated_max_model_len,
            "process_bytes": vllm_process_bytes(self),
            "sleep_resident_bytes": sleep_resident_bytes(self, 2),
            "log_lines": list(self.log_lines()),
        }
        return {"vllm": v, "model": self.model.summary(), "gpu": self.gpu.to_dict()}


def vllm_capacity(model, gpu, gpu_memory_utilization: float | None = None, max_model_len: int | None = None,
                  tensor_parallel_size: int = 1, kv_cache_dtype: str = "auto", quantization: str | None = None,
                  max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                  enforce_eager: bool = False, vllm_version: str | None = None, free_bytes: int | None = None,
                  usage_context: str = "LLM_CLASS", baseline: int | None = None,
                  processed_logprobs: bool = False, profile_images: int = 0, engine: str = "v1") -> VllmCapacity:
    """Predict what ``vllm.LLM(model, gpu_memory_utilization=..., ...)`` gets on ``gpu``.

    ``model``/``gpu``: names or specs. ``None`` arguments take vLLM's defaults for the release
    (``vllm_version``; None = installed vLLM, else 0.33.0). ``free_bytes``: free memory before
    vLLM starts (default: the live free figure of ``--gpu auto``, else the whole card).
    ``baseline``: bytes vLLM allocates before its snapshot (default ``baseline_bytes(tp)``; pass
    less when vLLM shares a trainer's CUDA context). Start-up failures vLLM would raise
    (free memory, no KV memory, max seq len) are returned in ``errors`` with ``startup_ok=False``;
    input vLLM would refuse as configuration raises :class:`InvalidSetupError`.
    ``processed_logprobs``: the engine was built with ``logprobs_mode="processed_logprobs"`` (TRL >=
    0.24 colocate), which before vLLM 0.17 profiles the sampler's sort (``activation_peak_bytes``).
    ``profile_images``: dummy images the profile run encodes first (``vision_profile_bytes``; 0 =
    the text-only peak, as the TRL path still plans). ``engine="v0"``: 0.8.5's V0 engine (the fallback
    below compute capability 8.0, engine/arg_utils.py:1349-1356, and what Unsloth's 0.8.5 runs log):
    ``total x util - (weights + torch peak increase + non-torch increase)`` over its init snapshot
    (worker/worker.py:245-253), so nothing held before vLLM comes out of the KV cache, and the sort
    sampler's activation peak (``activation_peak_bytes``).
    """
    spec = resolve_model(model)
    card = resolve_gpu(gpu)
    facts: VllmFacts = vllm_facts(vllm_version)
    version = facts.release
    util = facts.gpu_memory_utilization_default if gpu_memory_utilization is None else gpu_memory_utilization
    _check_utilization(util)
    tp = tensor_parallel_size
    _check_tp(spec, tp)
    _kv_dtype_bytes(kv_cache_dtype)
    max_model_len = _checked_max_model_len(spec, max_model_len)
    mns, mnbt = _checked_batch_limits(card, max_model_len, usage_context, max_num_seqs, max_num_batched_tokens,
                                      version)
    scheme = weight_scheme(spec, quantization, version)
    total = card.total_bytes
    free_bytes = _checked_free_bytes(card, free_bytes)
    base = baseline_bytes(tp, version) if baseline is None else baseline
    blackwell = card.compute_capability.startswith("10.")
    block = hybrid_block_size(spec, kv_cache_dtype, tp, default_block_size(spec, card))

    budget = budget_bytes(total, util, version)
    requested = budget if facts.budget_rounding == "ceil" else total * util
    errors: list[str] = []
    start_err = startup_error(max(0, free_bytes - base), total, util, requested, version=version)
    if start_err:
        errors.append(start_err)
    weights = weights_bytes(spec, quantization, tp, version)
    v0 = _checked_engine(engine, facts)
    activation = activation_peak_bytes(spec, mnbt, mns, version, tp, processed_logprobs, engine)
    encoder, encoded = vision_profile_bytes(spec, profile_images)
    activation = max(encoder, activation + encoded) if encoder else activation
    non_torch = non_torch_bytes(tp, version)
    sizes = () if enforce_eager else cudagraph_capture_sizes(mns, mnbt, version, blackwell, engine)
    graphs = cudagraph_bytes(spec, mns, mnbt, enforce_eager, version, tp, blackwell, engine)
    moe_ws = moe_workspace_bytes(spec, mnbt, tp, version)
    available = (budget - weights - moe_ws - activation - non_torch
                 - (graphs if facts.cudagraph_estimate_subtracted else 0)
                 - (0 if v0 else held_outside_budget_bytes(total, free_bytes, base, version)))
    layout = kv_layout(spec, max_model_len, mnbt, kv_cache_dtype, tp, version, block)
    kv_err, est = kv_check_error(spec, layout, available, max_model_len, mnbt, kv_cache_dtype, tp, version)
    if kv_err:
        errors.append(kv_err)
    blocks = num_blocks(available, layout.bytes_per_block)
    conc = max_concurrency(blocks, layout.blocks_per_request, version, block, max_model_len)
    tokens = kv_cache_tokens(blocks, len(layout.groups), block, conc, max_model_len, version)
    return VllmCapacity(
        model=spec, gpu=card, version=version, gpu_memory_utilization=util, tensor_parallel_size=tp,
        max_model_len=max_model_len, max_num_seqs=mns, max_num_batched_tokens=mnbt, kv_cache_dtype=kv_cache_dtype,
        quantization=quantization, weight_scheme=scheme, enforce_eager=enforce_eager, usage_context=usage_context,
        total_bytes=total, free_bytes=free_bytes, baseline_bytes=base, budget_bytes=budget, weights_bytes=weights,
        activation_peak_bytes=activation, non_torch_bytes=non_torch, cudagraph_bytes=graphs,
        cudagraph_subtracted=facts.cudagraph_estimate_subtracted, cudagraph_sizes=sizes,
        available_kv_bytes=available, kv_bytes_per_token=kv_bytes_per_token(spec, kv_cache_dtype, tp),
        layout=layout, num_blocks=blocks, max_concurrency=conc, kv_cache_tokens=tokens,
        startup_ok=not errors, errors=tuple(errors), estimated_max_model_len=est, moe_workspace_bytes=moe_ws,
        engine=engine)


def _checked_engine(engine: str, facts: VllmFacts) -> bool:
    """Whether ``engine`` is 0.8.5's V0 engine (refused for a release whose V0 path was not read)."""
    if engine not in ("v1", "v0"):
        raise InvalidSetupError(f"engine must be 'v1' or 'v0', got {engine!r}")
    if engine == "v0" and facts.first != "0.8.5":
        raise InvalidSetupError(f"the V0 engine is modelled for vLLM 0.8.5 only, not {facts.release}")
    return engine == "v0"


def _checked_max_model_len(spec: ModelSpec, max_model_len: int | None) -> int:
    """``max_model_len`` (default: the model's ``max_position_embeddings``), refused above that."""
    if max_model_len is None:
        max_model_len = spec.max_position_embeddings
    _positive_int("max_model_len", max_model_len)
    if max_model_len > spec.max_position_embeddings:
        raise InvalidSetupError(f"max_model_len ({max_model_len}) is larger than {spec.model_id}'s "
                                f"max_position_embeddings ({spec.max_position_embeddings})")
    return max_model_len


def _checked_batch_limits(card: GpuSpec, max_model_len: int, usage_context: str, max_num_seqs: int | None,
                          max_num_batched_tokens: int | None, version: str) -> tuple[int, int]:
    """``(max_num_seqs, max_num_batched_tokens)`` the engine runs with (``default_batch_limits``), each
    given one checked, and refused as vLLM's scheduler refuses fewer tokens than sequences."""
    if max_num_seqs is not None:
        _positive_int("max_num_seqs", max_num_seqs)
    if max_num_batched_tokens is not None:
        _positive_int("max_num_batched_tokens", max_num_batched_tokens)
    mns, mnbt = default_batch_limits(card, max_model_len, usage_context, max_num_seqs, max_num_batched_tokens,
                                     version)
    if mnbt < mns:
        # SchedulerConfig, config/scheduler.py:331-336
        raise InvalidSetupError(f"max_num_batched_tokens ({mnbt}) must be greater than or equal to "
                                f"max_num_seqs ({mns})")
    return mns, mnbt


def _checked_free_bytes(card: GpuSpec, free_bytes: int | None) -> int:
    """Free bytes before vLLM starts (default: ``card.usable_bytes``), at most the card's total and
    floored at 0: a trainer that overfills the card leaves nothing (vLLM's start-up error follows)."""
    total = card.total_bytes
    if free_bytes is None:
        free_bytes = card.usable_bytes
    if isinstance(free_bytes, bool) or not isinstance(free_bytes, int) or free_bytes > total:
        raise InvalidSetupError(f"free_bytes must be an integer no larger than the GPU's total ({total}), "
                                f"got {free_bytes}")
    return max(0, free_bytes)

def held_outside_budget_bytes(total_bytes: int, free_bytes: int, baseline: int, version: str | None = None) -> int:
    """What the budget loses to memory vLLM did not size itself: 0 from 0.9.1; in 0.8.5-0.9.0
    everything on the GPU at profiling (``kv_budget_formula == "whole_device"``).

    0.8.5 gpu_worker.py:180-212: ``available = total x util - peak``, where ``peak`` is torch's
    allocated peak in the process (a colocated trainer's tensors included, it shares the process)
    plus every non-torch byte on the device (``total - free - torch allocated``: CUDA contexts,
    other processes). So the memory held before vLLM starts (``total - free_bytes``) and vLLM's own
    baseline come out of the KV cache, and utilization is a cap on the whole GPU's use.
    """
    if vllm_facts(version).kv_budget_formula != "whole_device":
        return 0
    return (total_bytes - free_bytes) + baseline


# -- the device footprint the colocated phases add to the trainer ---------------------------------

def vllm_process_bytes(capacity: VllmCapacity, include_baseline: bool = True) -> int:
    """vLLM's device footprint while awake: baseline + budget + graph overshoot.

    Everything vLLM sizes (weights, KV cache, activation headroom, non-torch growth and, when
    the release subtracts it, the graph estimate) lies inside ``budget_bytes``. Outside it lie the
    baseline allocated before the snapshot (``include_baseline=False`` when the caller already
    counts a shared CUDA context) and, in releases that do not subtract the estimate (0.19), the
    whole graph pool, captured after the KV cache has taken the budget (gpu_worker.py:933-1004).
    In 0.8.5-0.9.0 the budget also covers what was on the GPU before vLLM and its baseline
    (``held_outside_budget_bytes``); only vLLM's own part is counted here.
    """
    overshoot = 0 if capacity.cudagraph_subtracted else capacity.cudagraph_bytes
    held = capacity.held_outside_budget_bytes
    own = max(0, capacity.budget_bytes - held)
    return (capacity.baseline_bytes if include_baseline else 0) + own + overshoot


def sleep_freed_bytes(capacity: VllmCapacity, level: int = 2) -> int:
    """Bytes ``LLM.sleep(level)`` gives back: the CuMem pools tagged ``weights`` and ``kv_cache``.

    docs/vllm-memory.md §5: ``CuMemAllocator.sleep`` (device_allocator/cumem.py:233-298) unmaps every
    tagged allocation; level 1 first copies ``weights`` to pinned host RAM, level 2 discards them.
    Both free the same device memory.
    """
    _check_level(level)
    return capacity.weights_bytes + capacity.kv_cache_bytes


def sleep_resident_bytes(capacity: VllmCapacity, level: int = 2, include_baseline: bool = True) -> int:
    """What stays on the GPU while vLLM sleeps (level 1 and level 2 alike).

    docs/vllm-memory.md §5: the CUDA context and cuBLAS handles, NCCL / custom all-reduce buffers
    (unless the experimental ``enable_nccl_comm_suspend``), the CUDA-graph pool (unless
    ``sleep_mode_offload_cudagraph``; TRL sets neither), and non-tagged runtime allocations
    (attention workspaces; modelled by ``non_torch_bytes``). The activation headroom goes back to
    torch's caching allocator, which in TRL's colocate mode is the trainer's own and reusable
    there, so it is not counted. ``Worker.sleep``: v1/worker/gpu_worker.py:301-339.
    """
    _check_level(level)
    return ((capacity.baseline_bytes if include_baseline else 0) + capacity.cudagraph_bytes
            + capacity.non_torch_bytes + capacity.moe_workspace_bytes)


def sleep_host_bytes(capacity: VllmCapacity, level: int = 2) -> int:
    """Pinned host RAM sleep needs: the weights at level 1; at level 2 only buffers (RoPE caches),
    saved to CPU before discarding (gpu_worker.py:305-315), counted here as 0."""
    _check_level(level)
    return capacity.weights_bytes if level == 1 else 0


def _check_level(level) -> None:
    if level not in (1, 2):
        raise InvalidSetupError(f"sleep level must be 1 or 2, got {level}")
