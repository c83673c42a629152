"""Unsloth's ``fast_inference=True`` runtime: vLLM in the training process, one copy of the weights.

``FastLanguageModel.from_pretrained(..., fast_inference=True)`` starts vLLM first and builds the
trainable model on vLLM's weights, so the weights live once, inside vLLM's
``gpu_memory_utilization`` share; the trainer adds only LoRA adapters, their gradients and
optimizer state, activations (Unsloth's checkpointing keeps layer inputs on the CPU) and the
chunked GRPO loss. Unsloth also rewrites what vLLM receives (:func:`vllm_utilization`). The rules
are read from the unsloth / unsloth_zoo wheels, release by release (``versions.unsloth_facts``).

    r = unsloth_estimate("meta-llama/Llama-3.1-8B-Instruct", "T4", load_in_4bit=True,
                         gpu_memory_utilization=0.6, max_seq_length=1024, lora_rank=32)
    r.vllm_gpu_memory_utilization, r.fits, r.to_dict()["from_pretrained"]

No torch import: every term is arithmetic on the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InvalidSetupError, VersionError
from ..memory import vllm as _vllm
from ..memory.activations import checkpoint_bytes_per_token, transient_bytes_per_token
from ..memory.allocator import allocator_reserve_bytes
from ..memory.gradients import gradient_bytes
from ..memory.logprob_head import fused_head_bytes
from ..memory.lora import (
    ADAPTER_BYTES_PER_PARAM,
    adapter_bytes,
    lora_params,
    lora_tensor_numels,
)
from ..memory.optimizer import optimizer_state_bytes
from ..memory.process import cublas_workspace_bytes
from ..specs.gpu import GpuSpec, resolve_gpu
from ..specs.model import ModelSpec, resolve_model
from ..specs.units import GIB, MIB
from ..specs.versions import (
    UNSLOTH_4BIT_WEIGHT_FACTOR,
    UNSLOTH_ACTIVATION_BATCH,
    UNSLOTH_ACTIVATION_SLACK,
    UNSLOTH_CUDAGRAPH_GRAPHS,
    UNSLOTH_FP8_ON_THE_FLY_MIN_CC,
    UNSLOTH_LORA_RANKS,
    UNSLOTH_RETRY_SEQS,
    UNSLOTH_RL_DEFAULTS,
    UNSLOTH_VISION_KV_SHARE,
    UNSLOTH_VISION_MIN_BATCHED_TOKENS,
    VLLM_FP8_MIN_CC,
    UnslothFacts,
    parse_version,
    unsloth_facts,
    unsloth_retry_utilization,
    unsloth_vision_turns_standby_off,
    unsloth_vllm_version,
    vllm_facts,
)

# Memory already in use on the card when load_vllm reads torch.cuda.mem_get_info() (unsloth_zoo 2025.5.8
# vllm_utils.py:851-852, 903): the process's CUDA context and nothing of Unsloth's. unsloth 2025.5.7 creates
# the context at import (kernels/utils.py:88-91 reads each device's current stream; no tensor) and calls
# load_vllm (models/llama.py:1826) before any weight is on the card. A CUDA context holds a fixed part
# (driver state, the runtime's loaded modules) and a local-memory reserve of (stack bytes per thread) x
# (threads resident at once = SMs x the compute capability's resident threads per SM), so it grows with
# the card's SMs, not its memory. Modelled as CUDA_CONTEXT_FIXED_BYTES + CUDA_CONTEXT_BYTES_PER_THREAD x
# resident threads, least squares on each run's own figure (fit set, decided before fitting: the 8 Unsloth
# runs that print their utilisation; each figure from its printed utilisation, benchmarks/unsloth_pre_vllm.py
# -> benchmarks/results/unsloth_pre_vllm.txt): 50.3 MiB + 1996 B per thread. Fit-set error max 26 MiB (median 15);
# held out (leave one run out, refitted on the other 7): max 31 MiB, median 18. Independent checks: the H100
# calibration env row's bare context (data/calibration, used_mib_at_init 527 MiB; modelled in that results
# file) and record 10's A100-40GB utilisation cut after "88." (benchmarks/unsloth_reports.py). Two T4 runs of
# unsloth 2025.2.4 sit ~40 MiB below the model (103-104 MiB against 142). A card outside CARD_SMS takes
# PRE_VLLM_USED_BYTES; a live card (``--gpu auto``) gives the real figure.
CUDA_CONTEXT_FIXED_BYTES = 52_773_000  # 50.3 MiB
CUDA_CONTEXT_BYTES_PER_THREAD = 1996  # 1.95 KiB
# SMs per card (the vendors' datasheets), by planner card name
CARD_SMS = {"H100-80GB": 132, "H100-PCIe-80GB": 114, "H100-NVL-94GB": 132, "H200": 132, "H20-96GB": 78,
            "GH200-96GB": 132, "B200": 148, "A100-80GB": 108, "A100-40GB": 108, "L40S": 142, "L40": 142,
            "A40": 84, "L20": 92, "RTX-A6000": 84, "RTX-6000-Ada": 142, "RTX-PRO-6000-Blackwell": 188,
            "A10G": 80, "A10": 72, "L4": 58, "RTX-4090": 128, "RTX-3090": 82, "RTX-5090": 170, "RTX-5080": 84,
            "RTX-4080": 76, "RTX-4070-Ti": 60, "RTX-4070": 46, "RTX-4060-Ti-16GB": 34, "RTX-3060-12GB": 28,
            "T4": 40, "V100-16GB": 80, "V100-32GB": 80}
# resident threads per SM by compute capability (CUDA C++ Programming Guide, "Technical Specifications per
# Compute Capability": 1024 on 7.5, 1536 on 8.6/8.9/12.x, 2048 on 7.0/8.0/9.0/10.0)
THREADS_PER_SM = {"7.0": 2048, "7.5": 1024, "8.0": 2048, "8.6": 1536, "8.7": 2048, "8.9": 1536, "9.0": 2048,
                  "10.0": 2048, "12.0": 1536}
# the fallback for a card without an SM count: the median of the 8 runs' own figures rounded up (143 MiB) is
# a T4's; 256 MiB, the figure shipped before the per-card model, covers the cards in between
PRE_VLLM_USED_BYTES = 256 * MIB


def resident_threads(card: GpuSpec) -> int | None:
    """SMs x resident threads per SM of ``card`` (None for a card without an SM count)."""
    sms = CARD_SMS.get(card.name)
    per_sm = THREADS_PER_SM.get(card.compute_capability)
    return None if sms is None or per_sm is None else sms * per_sm


def pre_vllm_used_bytes(card: GpuSpec) -> int:
    """What is on ``card`` when load_vllm reads the free memory: the CUDA context (see CARD_SMS)."""
    threads = resident_threads(card)
    if threads is None:
        return PRE_VLLM_USED_BYTES
    return CUDA_CONTEXT_FIXED_BYTES + threads * CUDA_CONTEXT_BYTES_PER_THREAD


def vllm_engine(vllm_version: str | None, card: GpuSpec, load_in_4bit: bool) -> str:
    """The engine vLLM 0.8.5 starts inside Unsloth: "v0" below compute capability 8.0 (engine/arg_utils.py:
    1349-1356) and with bitsandbytes weights (every 0.8.5 Unsloth log of a 4-bit run prints V0's
    worker.py:287 lines; the reason is not in the wheels read), else "v1"; "v1" from 0.9."""
    try:
        first = vllm_facts(vllm_version).first
    except VersionError:
        return "v1"
    major = int((card.compute_capability or "8.0").split(".")[0])
    return "v0" if first == "0.8.5" and (major < 8 or load_in_4bit) else "v1"
COMPUTE_BYTES = 2  # bf16 / fp16 activations and vLLM LoRA slots
MAX_LORAS = 1      # load_vllm(max_loras=1) (unsloth_zoo 2026.10.9 vllm_utils.py:4388)
# "tiers_le" releases (2025.10.10-2025.11.1) replace a standby request at or below this with the tier
# (unsloth_zoo 2025.10.10 vllm_utils.py:1466 ``gpu_memory_utilization <= 0.9``)
STANDBY_REPLACES_AT_MOST = 0.9


# -- what vLLM receives ---------------------------------------------------------------------------

def standby_target(facts: UnslothFacts, total_bytes: int, vllm_version: str | None) -> float | None:
    """The utilisation standby imposes on a card of ``total_bytes`` (None: the release has none)."""
    if facts.standby_rule == "none":
        return None
    if facts.standby_rule == "floor":
        return facts.standby_floor
    ten_percent = total_bytes / GIB * 0.1
    new_vllm = vllm_version is None or parse_version(vllm_version, "vLLM") >= (0, 11, 0)
    tiers = facts.standby_tiers if (new_vllm or not facts.standby_tiers_pre_0_11) else facts.standby_tiers_pre_0_11
    target = next(u for floor, u in tiers if ten_percent >= floor)
    return target * facts.standby_factor_0_11 if new_vllm else target


def requested_utilization(facts: UnslothFacts, requested: float, standby: bool, total_bytes: int,
                          vllm_version: str | None) -> tuple[float, str]:
    """(utilisation after the standby override, why)."""
    target = standby_target(facts, total_bytes, vllm_version) if standby else None
    if target is None:
        return requested, "as requested" if not standby else f"standby: Unsloth {facts.release} keeps the request"
    if facts.standby_rule == "tiers_le" and requested <= STANDBY_REPLACES_AT_MOST and requested != target:
        verb = "raises" if requested < target else "lowers"
        return target, f"standby {verb} {requested} to {target:.4g} (card-size target; a request <= 0.9 is replaced)"
    if requested < target:
        kind = "its floor" if facts.standby_rule == "floor" else "card-size target"
        return target, f"standby raises {requested} to {target:.4g} ({kind})"
    if requested > target and facts.standby_rule == "tiers_set":
        return target, f"standby lowers {requested} to {target:.4g} (card-size target)"
    return requested, "as requested (at or above the standby target)"


def unsloth_activation_estimate_bytes(spec: ModelSpec, max_seq_length: int) -> float:
    """Unsloth's training-activation allowance (bsz 2, 25% slack, 2 B; hidden // heads x kv heads
    for K/V as in the source): what load_vllm leaves outside vLLM at the least."""
    hd, mlp = spec.hidden_size, spec.intermediate_size
    kv = hd // spec.num_attention_heads * spec.num_kv_heads
    tokens = max_seq_length * UNSLOTH_ACTIVATION_BATCH
    elements = tokens * (hd + 2 * kv) + tokens * 2 + tokens * 2 * mlp + mlp * hd
    return elements * UNSLOTH_ACTIVATION_SLACK * 2


def vllm_utilization(facts: UnslothFacts, requested: float, standby: bool, total_bytes: int, free_bytes: int,
                     spec: ModelSpec, max_seq_length: int, vllm_version: str | None,
                     training: bool = True) -> tuple[float, str]:
    """(the gpu_memory_utilization load_vllm passes to vLLM and prints, why).

    ``util x free / total`` of torch.cuda.mem_get_info() (the "shrink": 0.7 -> 69.3% when 1% of
    the card is in use), lowered to ``1 - activation / total`` when the request leaves less than
    Unsloth's activation estimate outside vLLM.
    """
    util, why = requested_utilization(facts, requested, standby, total_bytes, vllm_version)
    share = util * free_bytes
    act = unsloth_activation_estimate_bytes(spec, max_seq_length) if training else 0
    if total_bytes - share < act:
        share = total_bytes - act
        why += "; capped to leave Unsloth's activation estimate outside vLLM"
    else:
        why += f"; x free/total = {free_bytes / total_bytes:.4f} (memory in use before vLLM)"
    return share / total_bytes, why


def vllm_lora_rank(facts: UnslothFacts, lora_rank: int) -> int:
    """``max_lora_rank`` as vLLM gets it: rounded up to a rank vLLM accepts from 2025.11.3 on."""
    if not facts.rounds_lora_rank:
        return lora_rank
    for r in UNSLOTH_LORA_RANKS:
        if r >= lora_rank:
            return r
    raise InvalidSetupError(f"vLLM does not support LoRA rank {lora_rank}: Unsloth accepts up to "
                            f"{UNSLOTH_LORA_RANKS[-1]} ({', '.join(map(str, UNSLOTH_LORA_RANKS))})")


def unsloth_kv_estimate_bytes(facts: UnslothFacts, spec: ModelSpec, vllm_util: float, total_bytes: int,
                              load_in_4bit: bool, max_lora_rank: int, weights_fp8: bool = False) -> float:
    """Unsloth's "vLLM's KV Cache can use up to X GB": its share less its own weight and LoRA
    estimate (and, from 2026.3.1, a CUDA-graph allowance). Not what vLLM then allocates. FP8 weights
    at 8/5 of 16 bits (the note on ``versions.UNSLOTH_LOAD_IN_FP8_FROM``)."""
    hd, mlp, layers = spec.hidden_size, spec.intermediate_size, spec.num_layers
    kv = hd // spec.num_attention_heads * spec.num_kv_heads
    quantizable = ((2 * hd + 2 * kv) * hd + 3 * hd * mlp) * layers * 2
    float16 = (2 * hd + spec.vocab_size * hd * (1 if spec.tie_word_embeddings else 2)) * 2
    factor = UNSLOTH_4BIT_WEIGHT_FACTOR if load_in_4bit else (8 / 5 if weights_fp8 else 1)
    r = max_lora_rank
    lora = (hd * r * 4 + r * (2 * hd + 2 * kv) + hd * r * 2 + mlp * r + r * 2 * mlp + r * hd) * layers * 2
    left = vllm_util * total_bytes - (quantizable / factor + float16 + lora * MAX_LORAS)
    if facts.estimate_subtracts_cudagraphs:
        left -= min(max(UNSLOTH_CUDAGRAPH_GRAPHS * hd * layers * 4, int(0.15 * GIB)), int(1.0 * GIB))
    return max(0.0, left)


_V2025_SEQS = ((2, 128), (4, 160), (8, 192), (12, 224), (16, 256), (24, 288), (40, 320), (48, 226), (80, 368))
_V2026 = ((2, 2048, 8), (4, 2048, 16), (8, 4096, 32), (12, 4096, 48), (16, 6144, 64), (24, 6144, 80),
          (40, 8192, 96), (48, 8192, 112), (80, 8192, 128))


def unsloth_batch_limits(facts: UnslothFacts, kv_estimate_bytes: float, max_seq_length: int,
                         float8_kv_cache: bool = False) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) load_vllm gives vLLM, from its KV estimate in GiB."""
    gb = kv_estimate_bytes / GIB
    if facts.batch_table == "v2025":
        seqs = next((s for limit, s in _V2025_SEQS if gb <= limit), 368)
        mnbt = max_seq_length
    else:
        mnbt, seqs = next(((t, s) for limit, t, s in _V2026 if gb <= limit), (8192, 256))
    if float8_kv_cache:
        seqs = int(seqs * 1.05)
    if facts.batch_table == "v2026":
        mnbt = min(mnbt, seqs * max_seq_length)
        mnbt = max(mnbt, seqs)
    return seqs, mnbt


def vision_batch_limits(facts: UnslothFacts, spec: ModelSpec, seqs: int, kv_estimate_bytes: float,
                        max_seq_length: int, vllm_version: str | None) -> tuple[int, int] | None:
    """(max_num_seqs, max_num_batched_tokens) load_vllm gives vLLM for a vision model, from the
    text rule's ``seqs``; None where the release has no vision branch (``UnslothFacts.vision_rule``).

    vLLM profiles the encoder on one dummy image per sequence where its profiler predates the
    encoder budget, so Unsloth keeps one sequence there; the prefill budget holds one whole image."""
    if facts.vision_rule == "none" or not spec.vision_params:
        return None
    mnbt = max(UNSLOTH_VISION_MIN_BATCHED_TOKENS, max_seq_length)
    if facts.vision_rule == "one":
        return 1, mnbt
    v = parse_version(vllm_version or "0.0.0", "vLLM")
    if v < (0, 11, 0):
        seqs = 1
    elif v < (0, 12, 0):
        item = mnbt * spec.hidden_size * 2  # 0.11 pads each dummy image to (budget, hidden)
        seqs = min(seqs, max(int(UNSLOTH_VISION_KV_SHARE * kv_estimate_bytes / item), 1))
    mnbt = min(mnbt, seqs * max_seq_length)
    return seqs, max(mnbt, seqs)


def engine_batch_limits(facts: UnslothFacts, spec: ModelSpec, kv_estimate_bytes: float, max_seq_length: int,
                        float8_kv_cache: bool, vllm_version: str | None) -> tuple[int, int, bool]:
    """(max_num_seqs, max_num_batched_tokens, the vision rule applied) of the engine load_vllm builds."""
    seqs, mnbt = unsloth_batch_limits(facts, kv_estimate_bytes, max_seq_length, float8_kv_cache)
    table_seqs = unsloth_batch_limits(facts, kv_estimate_bytes, max_seq_length)[0]  # before fp8's x1.05
    vision = vision_batch_limits(facts, spec, table_seqs, kv_estimate_bytes, max_seq_length, vllm_version)
    return (seqs, mnbt, False) if vision is None else (*vision, True)


def profiled_images(spec: ModelSpec, max_num_seqs: int, max_num_batched_tokens: int,
                    vllm_version: str | None) -> int:
    """Dummy images vLLM's profile run encodes with ``limit_mm_per_prompt={"image": 1}``: one per
    sequence before 0.11 (V0's profiler, unsloth_zoo 2026.10.9 vllm_utils.py:2469), else as many
    as the encoder budget ``max(max_num_batched_tokens, one image)`` holds, at most one per sequence."""
    per_image = _vllm.image_tokens(spec)
    if not per_image:
        return 0
    if parse_version(vllm_version or "0.0.0", "vLLM") < (0, 11, 0):
        return max_num_seqs
    return min(max_num_seqs, -(-max(max_num_batched_tokens, per_image) // per_image))


def adjusted_batch_size(facts: UnslothFacts, per_device_train_batch_size: int, gradient_accumulation_steps: int,
                        num_generations: int, world_size: int = 1) -> int:
    """The per-device batch Unsloth's GRPOConfig runs: set to ``num_generations`` when the rule fails."""
    if facts.divisibility_rule == "ga_world":
        bad = (gradient_accumulation_steps * world_size * per_device_train_batch_size) % num_generations != 0
    else:
        bad = per_device_train_batch_size % num_generations != 0
    return num_generations if bad else per_device_train_batch_size


# -- the trainer outside vLLM's share -------------------------------------------------------------

def vllm_lora_slot_bytes(spec: ModelSpec, max_lora_rank: int) -> int:
    """vLLM's preallocated LoRA A/B buffers (max_loras x max_lora_rank, model dtype)."""
    return lora_params(spec, max_lora_rank) * COMPUTE_BYTES * MAX_LORAS


def trainer_terms(spec: ModelSpec, lora_rank: int, batch_size: int, prompt_length: int, completion_length: int,
                  optim: str = "adamw_8bit") -> dict:
    """Device bytes the trainer adds beyond vLLM's share during a step.

    Differs from planner.memory.trainer: no weights (vLLM's are shared); checkpointed layer inputs
    live in CPU memory (``host_checkpoint_bytes``), so only the recomputed layer's tensors plus the
    backward working set (``transient_bytes_per_token``) are on the GPU; the loss is chunked, so
    the fused, tiled head term stands for it (no full logits).
    """
    tokens = batch_size * (prompt_length + completion_length)
    adapters = adapter_bytes(spec, lora_rank)
    grads = gradient_bytes(lora_params(spec, lora_rank), ADAPTER_BYTES_PER_PARAM)
    opt = optimizer_state_bytes(lora_tensor_numels(spec, lora_rank), optim)
    layer = int(tokens * transient_bytes_per_token(spec, "lora", lora_rank, True, COMPUTE_BYTES))
    head = fused_head_bytes(spec, batch_size * completion_length, COMPUTE_BYTES)
    activations = layer + 2 * tokens * spec.hidden_size * COMPUTE_BYTES  # + the layer input and its grad
    transient = max(activations, head)
    reserve = allocator_reserve_bytes(transient, True, False)
    return {"adapters": adapters, "gradients": grads, "optimizer_state": opt, "activations": activations,
            "loss_chunk": head, "cublas_workspace": cublas_workspace_bytes(), "allocator_reserve": reserve,
            "host_checkpoint_bytes": int(tokens * checkpoint_bytes_per_token(spec, COMPUTE_BYTES))}


# -- the whole runtime ----------------------------------------------------------------------------

@dataclass(frozen=True)
class UnslothEstimate:
    model: ModelSpec
    gpu: GpuSpec
    facts: UnslothFacts
    vllm_version: str | None
    requested_gpu_memory_utilization: float
    standby: bool
    vllm_gpu_memory_utilization: float
    utilization_reason: str
    max_seq_length: int
    load_in_4bit: bool
    float8_kv_cache: bool
    lora_rank: int
    max_lora_rank: int
    unsloth_kv_estimate_bytes: float
    max_num_seqs: int
    max_num_batched_tokens: int
    per_device_train_batch_size: int
    requested_batch_size: int
    gradient_accumulation_steps: int
    num_generations: int
    max_prompt_length: int
    max_completion_length: int
    capacity: _vllm.VllmCapacity | None  # None when vLLM's release is not modelled
    vllm_not_modelled: str | None
    lora_slot_bytes: int
    kv_cache_bytes: int | None
    kv_cache_tokens: int | None
    trainer: dict
    phases: dict
    fits: bool | None
    pre_vllm_used_bytes: int
    vllm_version_reason: str = "given"
    standby_requested: bool = False  # asked for; ``standby`` is what Unsloth runs (vision models: off)
    # device bytes in use at each step of vLLM's start-up after the profile run (:func:`startup_steps`)
    startup: dict = field(default_factory=dict)
    load_in_fp8: bool = False  # from_pretrained(load_in_fp8=True): vLLM's FP8 weights, shared
    extra_cudagraph_bytes: int = 0  # graphs Unsloth's CompilationConfig adds to vLLM's default (FULL decode)
    # each phase's bytes by component (``phases`` holds their sums): load, generation, training
    phase_parts: dict = field(default_factory=dict)

    @property
    def trainer_peak_bytes(self) -> int:
        return sum(v for k, v in self.trainer.items() if k not in ("host_checkpoint_bytes", "loss_chunk"))

    def from_pretrained_kwargs(self) -> dict:
        return {"model_name": self.model.model_id, "max_seq_length": self.max_seq_length,
                "load_in_4bit": self.load_in_4bit, **({"load_in_fp8": True} if self.load_in_fp8 else {}),
                "fast_inference": True, "max_lora_rank": self.lora_rank,
                "gpu_memory_utilization": self.requested_gpu_memory_utilization,
                "float8_kv_cache": self.float8_kv_cache}

    def get_peft_model_kwargs(self) -> dict:
        return {"r": self.lora_rank, "lora_alpha": self.lora_rank,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                "use_gradient_checkpointing": "unsloth", "random_state": 3407}

    def grpo_config_kwargs(self) -> dict:
        return {"per_device_train_batch_size": self.per_device_train_batch_size,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "num_generations": self.num_generations, "max_prompt_length": self.max_prompt_length,
                "max_completion_length": self.max_completion_length, "optim": "adamw_8bit",
                # the precision Unsloth's GRPO notebooks set: bf16 = is_bfloat16_supported(), fp16 = not it
                # (from_pretrained's dtype=None picks the same: float16 on a T4 or V100, bfloat16 from Ampere)
                "bf16": bool(self.gpu.bf16), "fp16": not self.gpu.bf16}

    def env(self) -> dict:
        return {"UNSLOTH_VLLM_STANDBY": "1" if self.standby else "0"}

    def to_dict(self) -> dict:
        cap = self.capacity
        v = {"version": self.vllm_version, "version_reason": self.vllm_version_reason,
             "gpu_memory_utilization": self.vllm_gpu_memory_utilization,
             "utilization_reason": self.utilization_reason, "max_lora_rank": self.max_lora_rank,
             "max_num_seqs": self.max_num_seqs, "max_num_batched_tokens": self.max_num_batched_tokens,
             "unsloth_kv_estimate_bytes": int(self.unsloth_kv_estimate_bytes),
             "lora_slot_bytes": self.lora_slot_bytes, "not_modelled": self.vllm_not_modelled,
             "kv_cache_bytes": self.kv_cache_bytes, "kv_cache_tokens": self.kv_cache_tokens,
             "weights_bytes": None if cap is None else cap.weights_bytes + self.lora_slot_bytes,
             "budget_bytes": None if cap is None else cap.budget_bytes,
             "activation_peak_bytes": None if cap is None else cap.activation_peak_bytes,
             "cudagraph_bytes": None if cap is None else cap.cudagraph_bytes,
             "extra_cudagraph_bytes": self.extra_cudagraph_bytes,
             "startup_steps": dict(self.startup),
             "errors": [] if cap is None else list(cap.errors)}
        adjusted = self.per_device_train_batch_size != self.requested_batch_size
        return {
            "runtime": "unsloth",
            "unsloth_version": self.facts.release,
            "vllm": v,
            "trainer": {"peak_bytes": self.trainer_peak_bytes, "components": dict(self.trainer)},
            "phases": dict(self.phases),
            "fits": self.fits,
            "from_pretrained": self.from_pretrained_kwargs(),
            "get_peft_model": self.get_peft_model_kwargs(),
            "grpo_config": self.grpo_config_kwargs(),
            "batch_adjusted": (f"Unsloth changes per_device_train_batch_size {self.requested_batch_size} -> "
                               f"{self.per_device_train_batch_size} (= num_generations)") if adjusted else None,
            "env": self.env(),
            "pre_vllm_used_bytes": self.pre_vllm_used_bytes,
            "model": self.model.summary(), "gpu": self.gpu.to_dict(),
        }


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSetupError(f"{name} must be a positive integer, got {value}")
    return value


def _check_inputs(card: GpuSpec, util, max_seq_length, lora_rank, float8_kv_cache: bool,
                  load_in_4bit: bool = False, weights_fp8: bool = False) -> None:
    """One clear error for a bad utilisation, length or rank, or a card vLLM (or its fp8 KV cache, or its
    FP8 weights) cannot use."""
    if isinstance(util, bool) or not isinstance(util, (int, float)) or not 0 < util <= 1:
        raise InvalidSetupError(f"gpu_memory_utilization must be in (0, 1], got {util}")
    _positive("max_seq_length", max_seq_length)
    _positive("lora_rank", lora_rank)
    if float8_kv_cache and card.compute_capability and float(card.compute_capability) < 8.0:
        raise InvalidSetupError(f"float8_kv_cache needs compute capability >= 8.0; {card.name} has "
                                f"{card.compute_capability} (unsloth_zoo vllm_utils.py: 'Your GPU is too old')")
    if card.compute_capability and float(card.compute_capability) < 7.0:
        raise InvalidSetupError(f"vLLM needs compute capability >= 7.0; {card.name} has {card.compute_capability}")
    if weights_fp8 and load_in_4bit:
        raise InvalidSetupError("load_in_fp8 and load_in_4bit exclude each other (unsloth models/loader.py: "
                                "'not compatible with `load_in_4bit`')")
    if weights_fp8 and card.compute_capability and float(card.compute_capability) < VLLM_FP8_MIN_CC:
        raise InvalidSetupError(f"FP8 weights need compute capability >= {VLLM_FP8_MIN_CC} (vLLM's fp8 quantization; "
                                f"W8A16 Marlin on Ampere); {card.name} has {card.compute_capability}: use --weights nf4")


def unsloth_estimate(model, gpu, *, max_seq_length: int = 1024, load_in_4bit: bool = True,
                     gpu_memory_utilization: float | None = None, standby: bool = False,
                     float8_kv_cache: bool = False, lora_rank: int = 16,
                     per_device_train_batch_size: int | None = None, gradient_accumulation_steps: int | None = None,
                     num_generations: int | None = None, max_prompt_length: int = 256,
                     max_completion_length: int | None = None, unsloth_version: str | None = None,
                     vllm_version: str | None = None, free_bytes: int | None = None,
                     weights_fp8: bool = False, prequantized: bool | None = None) -> UnslothEstimate:
    """Memory of one Unsloth ``fast_inference=True`` GRPO setup; ``None`` takes Unsloth's defaults.

    ``free_bytes``: free memory when load_vllm runs (default: the card less its CUDA context, or
    the live free figure of a detected card). A vLLM release planner.memory.vllm does not model yet gives
    the Unsloth side only (``vllm_not_modelled`` says why) and ``fits = None``. ``prequantized``:
    the checkpoint is already bitsandbytes 4-bit (``*-bnb-4bit``; default: ``load_in_4bit``).
    """
    spec = resolve_model(model)
    card = resolve_gpu(gpu)
    facts = unsloth_facts(unsloth_version)
    util = facts.gpu_memory_utilization_default if gpu_memory_utilization is None else gpu_memory_utilization
    _check_inputs(card, util, max_seq_length, lora_rank, float8_kv_cache, load_in_4bit, weights_fp8)
    batch = _positive("per_device_train_batch_size", per_device_train_batch_size
                      or UNSLOTH_RL_DEFAULTS["per_device_train_batch_size"])
    ga = _positive("gradient_accumulation_steps", gradient_accumulation_steps
                   or UNSLOTH_RL_DEFAULTS["gradient_accumulation_steps"])
    gens = _positive("num_generations", num_generations or UNSLOTH_RL_DEFAULTS["num_generations"])
    completion = max_completion_length or max(1, max_seq_length - max_prompt_length)
    vllm_reason = "given"
    if vllm_version is None:
        vllm_version, vllm_reason = unsloth_vllm_version(facts.release, card.compute_capability, load_in_4bit)
    standby_requested = standby
    if standby and spec.vision_params and unsloth_vision_turns_standby_off(facts.release):
        standby = False
    total = card.total_bytes
    free = (card.usable_bytes - pre_vllm_used_bytes(card)) if free_bytes is None else free_bytes
    pre_used = total - free

    actual, why = vllm_utilization(facts, util, standby, total, free, spec, max_seq_length, vllm_version)
    rank = vllm_lora_rank(facts, lora_rank)
    est_4bit = (load_in_4bit if prequantized is None else prequantized) if facts.estimate_4bit_from_checkpoint \
        else load_in_4bit
    kv_est = unsloth_kv_estimate_bytes(facts, spec, actual, total, est_4bit, rank, weights_fp8)
    seqs, mnbt, vision = engine_batch_limits(facts, spec, kv_est, max_seq_length, float8_kv_cache, vllm_version)
    run_batch = adjusted_batch_size(facts, batch, ga, gens)
    slots = vllm_lora_slot_bytes(spec, rank)
    trainer = trainer_terms(spec, lora_rank, run_batch, max_prompt_length, completion)

    side = _vllm_side(facts, spec, card, actual, max_seq_length, float8_kv_cache, load_in_4bit, weights_fp8,
                      seqs, mnbt, vision, vllm_version, free, pre_used, slots, trainer, standby)
    cap = side["capacity"]
    return UnslothEstimate(
        model=spec, gpu=card, facts=facts, vllm_version=None if cap is None else cap.version,
        requested_gpu_memory_utilization=util, standby=standby, vllm_gpu_memory_utilization=actual,
        utilization_reason=why, max_seq_length=max_seq_length, load_in_4bit=load_in_4bit,
        float8_kv_cache=float8_kv_cache, lora_rank=lora_rank, max_lora_rank=rank, unsloth_kv_estimate_bytes=kv_est,
        max_num_seqs=seqs, max_num_batched_tokens=mnbt, per_device_train_batch_size=run_batch,
        requested_batch_size=batch, gradient_accumulation_steps=ga, num_generations=gens,
        max_prompt_length=max_prompt_length, max_completion_length=completion, capacity=cap,
        vllm_not_modelled=side["not_modelled"], lora_slot_bytes=slots, kv_cache_bytes=side["kv_bytes"],
        kv_cache_tokens=side["kv_tokens"], trainer=trainer, phases=side["phases"], fits=side["fits"],
        pre_vllm_used_bytes=pre_used, vllm_version_reason=vllm_reason, standby_requested=standby_requested,
        phase_parts=side["parts"], startup=side["startup"], extra_cudagraph_bytes=side["extra_graphs"],
        load_in_fp8=weights_fp8)


def _vllm_side(facts: UnslothFacts, spec: ModelSpec, card: GpuSpec, actual: float, max_seq_length: int,
               float8_kv_cache: bool, load_in_4bit: bool, weights_fp8: bool, seqs: int, mnbt: int, vision: bool,
               vllm_version: str | None, free: int, pre_used: int, slots: int, trainer: dict,
               standby: bool) -> dict:
    """vLLM as load_vllm starts it (planner.memory.vllm.vllm_capacity at the utilisation it receives),
    the KV cache less the LoRA slots, the phases and the start-up steps; the vLLM side empty (and
    ``not_modelled`` saying why) for a release planner.memory.vllm does not model."""
    total = card.total_bytes
    cap, not_modelled, kv_bytes, kv_tokens, phases, fits, parts = None, None, None, None, {}, None, {}
    startup, extra_graphs = {}, 0
    try:
        cap = _vllm.vllm_capacity(
            spec, card, gpu_memory_utilization=actual, max_model_len=min(max_seq_length, spec.max_position_embeddings),
            kv_cache_dtype="fp8" if float8_kv_cache else "auto",
            quantization="bitsandbytes" if load_in_4bit else ("fp8" if weights_fp8 else None),
            max_num_seqs=seqs, max_num_batched_tokens=max(mnbt, seqs), vllm_version=vllm_version,
            free_bytes=max(0, free), baseline=0, engine=vllm_engine(vllm_version, card, load_in_4bit),
            profile_images=profiled_images(spec, seqs, max(mnbt, seqs), vllm_version) if vision else 0)
    except VersionError as e:
        not_modelled = str(e)
    if cap is not None:
        available = cap.available_kv_bytes - slots  # the LoRA slots are allocated with the weights
        blocks = _vllm.num_blocks(available, cap.layout.bytes_per_block)
        kv_bytes = blocks * cap.layout.bytes_per_block
        conc = _vllm.max_concurrency(blocks, cap.layout.blocks_per_request)
        kv_tokens = _vllm.kv_cache_tokens(blocks, len(cap.layout.groups), cap.layout.block_size, conc,
                                          cap.max_model_len, cap.version)
        extra_graphs = unsloth_extra_cudagraph_bytes(facts, cap)
        parts = phase_components(cap, pre_used, slots, kv_bytes, trainer, standby, extra_graphs)
        phases = {f"{name}_bytes": sum(c.values()) for name, c in parts.items()}
        startup = startup_steps(cap, pre_used, slots, kv_bytes, extra_graphs)
        fits = bool(cap.startup_ok and blocks > 0 and max(phases.values()) <= total)
    return {"capacity": cap, "not_modelled": not_modelled, "kv_bytes": kv_bytes, "kv_tokens": kv_tokens,
            "phases": phases, "fits": fits, "parts": parts, "startup": startup, "extra_graphs": extra_graphs}


def unsloth_extra_cudagraph_bytes(facts: UnslothFacts, cap: _vllm.VllmCapacity) -> int:
    """CUDA-graph bytes Unsloth's CompilationConfig adds to what the vLLM release captures by default:
    the FULL decode graphs (one per capture size <= max_num_seqs) of ``cudagraph_mode=FULL_AND_PIECEWISE``
    (``UnslothFacts.cudagraph_mode``) on a vLLM whose default is PIECEWISE (0.10.1-0.10.x, the releases
    with a ``cudagraph_mode`` read), priced as planner.memory.vllm.cudagraph_bytes prices a graph."""
    vf = vllm_facts(cap.version)
    if (facts.cudagraph_mode != "full_and_piecewise" or vf.cudagraph_full_decode or cap.enforce_eager
            or parse_version(cap.version, "vLLM") < (0, 10, 1)):
        return 0
    full = sum(1 for size in cap.cudagraph_sizes if size <= cap.max_num_seqs)
    return full * cap.model.num_layers * vf.cudagraph_bytes_per_graph_layer


def startup_steps(cap: _vllm.VllmCapacity, pre_used: int, slots: int, kv_bytes: int,
                  extra_graphs: int = 0) -> dict[str, int]:
    """Device bytes in use at each step of vLLM's start-up after its profile run, in order.

    ``kv_cache_allocated``: what was in use before vLLM, the weights and LoRA slots, the KV cache
    and non-torch memory (the profile run's activations are freed again). ``cudagraph_capture``:
    then the CUDA graphs (vLLM's and Unsloth's extra FULL decode graphs), captured after the KV cache
    whether or not the release left room for them in its budget (``VllmFacts.cudagraph_estimate_subtracted``:
    not before 0.20). ``sampler_warmup``: then the sampler's warm-up, which vLLM runs after the graphs
    (0.10.2 and 0.11.0 v1/worker/gpu_worker.py compile_or_warm_up_model: ``_dummy_run(min(max_num_seqs,
    max_num_batched_tokens))`` and ``_dummy_sampler_run``), as large as the profile's sampler phase
    over that many rows (planner.memory.vllm.activation_peak_bytes, the release's bytes per logit).
    0.8.5's V0 engine has no sampler warm-up: it captures the graphs and stops (worker/worker.py:344-361).
    """
    rows = min(cap.max_num_seqs, cap.max_num_batched_tokens)
    allocated = pre_used + cap.weights_bytes + slots + kv_bytes + cap.non_torch_bytes + cap.moe_workspace_bytes
    graphs = allocated + cap.cudagraph_bytes + extra_graphs
    warmup = 0 if cap.engine == "v0" else _vllm.activation_peak_bytes(cap.model, rows, rows, cap.version,
                                                                       cap.tensor_parallel_size)
    return {"kv_cache_allocated": allocated, "cudagraph_capture": graphs, "sampler_warmup": graphs + warmup}


def phase_components(cap: _vllm.VllmCapacity, pre_used: int, slots: int, kv_bytes: int, trainer: dict,
                     standby: bool, extra_graphs: int = 0) -> dict[str, dict[str, int]]:
    """Each phase of the runtime by component. ``load``: what was in use before vLLM, vLLM's
    budget and the CUDA graphs it does not count in it. ``generation``: vLLM's share (the one copy
    of the weights, the LoRA slots, the KV cache, non-torch memory and graphs) beside the trainer's
    persistent terms and, without standby, the last step's (nothing empties the cache).
    ``training``: the same with the step; standby frees the KV cache while training.
    ``extra_graphs``: Unsloth's FULL decode graphs beyond the release's default (outside the budget)."""
    pre = {"process.pre_vllm": pre_used}
    vllm = {"vllm.weights": cap.weights_bytes, "vllm.lora_slots": slots, "vllm.kv_cache": kv_bytes,
            "vllm.non_torch": cap.non_torch_bytes, "vllm.cudagraph": cap.cudagraph_bytes + extra_graphs}
    persistent = {f"trainer.{k}": trainer[k] for k in ("adapters", "optimizer_state", "cublas_workspace")}
    step = {f"trainer.{k}": trainer[k] for k in ("gradients", "activations", "allocator_reserve")}
    graphs_outside = (0 if cap.cudagraph_subtracted else cap.cudagraph_bytes) + extra_graphs
    return {
        "load": {**pre, "vllm.budget": cap.budget_bytes, "vllm.cudagraph_outside_budget": graphs_outside},
        "generation": {**pre, **vllm, **persistent, **({} if standby else step)},
        "training": {**pre, **{k: v for k, v in vllm.items() if not (standby and k == "vllm.kv_cache")},
                     **persistent, **step},
    }


# -- the hand-off: a script --------------------------------------------------------------------

def _kwargs_src(kw: dict, indent: str = "    ") -> str:
    return "".join(f"{indent}{k}={v!r},\n" for k, v in kw.items())


def unsloth_snippet(kwargs: dict) -> str:
    """A complete Python script from an Unsloth plan's ``runtime_details.kwargs(plan.config)``: the
    environment variables (set before ``import unsloth``, which reads them),
    ``FastLanguageModel.from_pretrained``, ``get_peft_model``, ``GRPOConfig`` and ``GRPOTrainer``
    (a stand-in reward and dataset to replace)."""
    fp = dict(kwargs["from_pretrained"])
    model_name = fp.pop("model_name")
    lines = ["import os", ""]
    lines += [f"os.environ[{k!r}] = {v!r}" for k, v in kwargs.get("env", {}).items()]
    lines += ["", "from unsloth import FastLanguageModel  # import unsloth before trl", "from datasets import Dataset",
              "from trl import GRPOConfig, GRPOTrainer", "",
              f"model, tokenizer = FastLanguageModel.from_pretrained(\n    model_name={model_name!r},\n"
              f"{_kwargs_src(fp)})",
              f"model = FastLanguageModel.get_peft_model(\n    model,\n{_kwargs_src(kwargs['get_peft_model'])})",
              "", "def reward_len(completions, **kwargs):  # replace with your reward functions",
              "    return [-abs(100 - len(c)) / 100 for c in completions]", "",
              'dataset = Dataset.from_dict({"prompt": ["Write a haiku about memory."] * 64})  # replace', "",
              f"args = GRPOConfig(\n{_kwargs_src(kwargs['grpo_config'])}    output_dir='outputs',\n)",
              "trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward_len],",
              "                      args=args, train_dataset=dataset)", "trainer.train()", ""]
    return "\n".join(lines)


# -- pre-flight checks of the runtime ------------------------------------------------------------

def unsloth_checks(e: UnslothEstimate, *, trl_version: str | None = None, for_training: bool | None = None,
                   alloc_conf: str | None = None) -> list:
    """planner.checks.preflight.Check objects for an Unsloth setup: packages and pairings, the card, standby's
    requirements, the 4-bit plugin and what Unsloth will use instead of what was asked.

    Missing packages are warnings on a machine that only plans, errors with ``for_training``.
    ``alloc_conf``: the allocator settings (default: PYTORCH_CUDA_ALLOC_CONF and PYTORCH_ALLOC_CONF
    from the environment)."""
    env = "error" if for_training else "warning"
    return (_package_checks(e, env) + _trl_checks(e, env, trl_version) + _vllm_checks(e, env) + _card_checks(e)
            + _standby_checks(e, alloc_conf) + _request_checks(e) + _startup_checks(e))


def _package_checks(e: UnslothEstimate, env: str) -> list:
    """unsloth and unsloth_zoo installed, of the release planned for, and paired."""
    from ..checks.preflight import Check
    from ..specs.versions import installed_version as installed

    out = []
    facts = e.facts
    unsloth_v, zoo_v = installed("unsloth"), installed("unsloth_zoo")
    if unsloth_v is None or zoo_v is None:
        missing = " and ".join(n for n, v in (("unsloth", unsloth_v), ("unsloth_zoo", zoo_v)) if v is None)
        out.append(Check("unsloth-installed", env, f"{missing} not installed (planned for Unsloth {facts.release})",
                         f"pip install 'unsloth=={facts.release}' 'unsloth_zoo=={facts.release}'"))
    else:
        try:
            have = unsloth_facts(zoo_v)
        except VersionError as err:
            out.append(Check("unsloth-installed", "warning", str(err), "pass --unsloth-version"))
        else:
            same = have.first == facts.first
            out.append(Check("unsloth-installed", "info" if same else "warning",
                             f"unsloth {unsloth_v}, unsloth_zoo {zoo_v} installed"
                             + ("" if same else f"; the plan is for Unsloth {facts.release}, whose rules differ"),
                             "" if same else f"plan with --unsloth-version {zoo_v}"))
        if parse_version(zoo_v, "Unsloth") < parse_version(unsloth_v, "Unsloth")[:2] + (0,):
            out.append(Check("unsloth-zoo-pairing", env, f"unsloth_zoo {zoo_v} is older than unsloth {unsloth_v} "
                             "(unsloth requires unsloth_zoo of its own release or newer)",
                             f"pip install -U 'unsloth_zoo>={unsloth_v}'"))
    return out


def _trl_checks(e: UnslothEstimate, env: str, trl_version: str | None) -> list:
    """TRL installed within Unsloth's ceiling; standby's TRL floor."""
    from ..checks.preflight import Check
    from ..specs.versions import UNSLOTH_STANDBY_MIN_TRL, unsloth_trl_ceiling
    from ..specs.versions import installed_version as installed

    out = []
    facts = e.facts
    trl_installed = installed("trl")
    trl = trl_installed or trl_version
    ceiling = unsloth_trl_ceiling(facts.release)
    if trl_installed is None:
        out.append(Check("unsloth-trl", env, "TRL is not installed",
                         f"pip install 'trl<={ceiling}'" if ceiling else "pip install trl"))
    elif ceiling and parse_version(trl_installed, "TRL") > parse_version(ceiling, "TRL"):
        out.append(Check("unsloth-trl", env, f"TRL {trl_installed} is newer than Unsloth {facts.release} accepts "
                         f"(trl<={ceiling} in its requirements)", f"pip install 'trl<={ceiling}'"))
    else:
        out.append(Check("unsloth-trl", "info", f"TRL {trl_installed} installed"))
    if e.standby_requested and trl and parse_version(trl, "TRL") < parse_version(UNSLOTH_STANDBY_MIN_TRL, "TRL"):
        out.append(Check("unsloth-standby-trl", "error", f"standby needs TRL >= {UNSLOTH_STANDBY_MIN_TRL} (Unsloth "
                         f"hands TRL vllm_enable_sleep_mode only from there); TRL {trl}",
                         f"pip install -U 'trl>={UNSLOTH_STANDBY_MIN_TRL}' or --no-standby"))
    return out


def _vllm_checks(e: UnslothEstimate, env: str) -> list:
    """vLLM installed as planned; the bitsandbytes plugin for 4-bit on a vLLM without it in tree."""
    from ..checks.preflight import Check
    from ..specs.versions import UNSLOTH_BNB_PLUGIN, vllm_first_release
    from ..specs.versions import installed_version as installed

    out = []
    vllm_installed = installed("vllm")
    if vllm_installed is None:
        out.append(Check("unsloth-vllm-installed", env, "vLLM is not installed: fast_inference=True needs it "
                         f"(planned for vLLM {e.vllm_version or 'unknown'}, {e.vllm_version_reason})",
                         f"pip install 'vllm=={e.vllm_version}'" if e.vllm_version else "pip install vllm"))
    elif e.vllm_version and parse_version(vllm_installed, "vLLM") != parse_version(e.vllm_version, "vLLM"):
        out.append(Check("unsloth-vllm-installed", "warning", f"vLLM {vllm_installed} installed, the plan is for "
                         f"vLLM {e.vllm_version}", f"plan with --vllm-version {vllm_installed}"))
    vllm_v = vllm_installed or e.vllm_version
    no_bnb = vllm_first_release("bitsandbytes_supported", False)
    if e.load_in_4bit and vllm_v and no_bnb and parse_version(vllm_v, "vLLM") >= parse_version(no_bnb, "vLLM"):
        plugin = installed(UNSLOTH_BNB_PLUGIN)
        out.append(Check("unsloth-bnb-plugin", "info" if plugin else env,
                         f"load_in_4bit with vLLM {vllm_v} (>= {no_bnb}, bitsandbytes out of tree): "
                         + (f"{UNSLOTH_BNB_PLUGIN} {plugin} installed" if plugin else f"needs {UNSLOTH_BNB_PLUGIN}"),
                         "" if plugin else f"pip install {UNSLOTH_BNB_PLUGIN}"))
    return out


def _card_checks(e: UnslothEstimate) -> list:
    """The card's compute capability: vLLM's floor, the fp8 KV cache's."""
    from ..checks.preflight import Check

    out = []
    cc = e.gpu.compute_capability
    if cc:
        if float(cc) < 7.0:
            out.append(Check("unsloth-gpu-capability", "error", f"vLLM needs compute capability >= 7.0; "
                             f"{e.gpu.name} has {cc}", "use a newer card or fast_inference=False"))
        if e.load_in_fp8 and float(cc) < UNSLOTH_FP8_ON_THE_FLY_MIN_CC:
            out.append(Check("unsloth-fp8-weights", "warning", f"load_in_fp8 on {e.gpu.name} (compute capability "
                             f"{cc}): Unsloth quantizes on the fly only from {UNSLOTH_FP8_ON_THE_FLY_MIN_CC}, so "
                             f"{e.model.model_id} needs an FP8 checkpoint Unsloth maps it to",
                             "load an FP8 checkpoint (e.g. unsloth/<model>-FP8-Block) or use an H100"))
        if e.float8_kv_cache and float(cc) < 8.0:
            out.append(Check("unsloth-fp8-kv-cache", "error", f"float8_kv_cache needs compute capability >= 8.0; "
                             f"{e.gpu.name} has {cc}", "drop --float8-kv-cache"))
    return out


def _standby_checks(e: UnslothEstimate, alloc_conf: str | None) -> list:
    """Standby's allocator requirement, and vision models that turn it off."""
    import os

    from ..checks.preflight import Check

    out = []
    facts = e.facts
    if e.standby_requested:
        conf = alloc_conf if alloc_conf is not None else ",".join(
            os.environ.get(k, "") for k in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"))
        if "expandable_segments:True" in conf:
            out.append(Check("unsloth-standby-alloc-conf", "warning", "standby refuses expandable_segments:True "
                             "(vLLM's CuMemAllocator asserts); Unsloth strips it from the environment at import",
                             "unset PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF's expandable_segments:True"))
        if not e.standby:
            out.append(Check("unsloth-vision-standby", "warning", f"{e.model.model_id} is a vision model: Unsloth "
                             f"{facts.release} turns standby off (planned without it)",
                             "set UNSLOTH_VLLM_STANDBY_VISION=1 to force it"))
    return out


def _request_checks(e: UnslothEstimate) -> list:
    """What Unsloth uses instead of what was asked (utilisation, rank, batch), and the memory."""
    from ..checks.preflight import Check

    out = []
    facts = e.facts
    asked = e.requested_gpu_memory_utilization
    kept, why = requested_utilization(facts, asked, e.standby, e.gpu.total_bytes, e.vllm_version)
    changed = round(kept, 4) != round(asked, 4)
    out.append(Check("unsloth-utilization", "warning" if changed else "info",
                     f"gpu_memory_utilization={asked} asked; Unsloth gives vLLM "
                     f"{e.vllm_gpu_memory_utilization:.4f} ({e.utilization_reason})",
                     f"pass {kept:.4g} (what Unsloth uses) or plan without --standby" if changed else ""))
    if e.max_lora_rank != e.lora_rank:
        out.append(Check("unsloth-lora-rank", "info", f"max_lora_rank {e.lora_rank} goes to vLLM as "
                         f"{e.max_lora_rank} (a rank vLLM accepts)"))
    if e.per_device_train_batch_size != e.requested_batch_size:
        out.append(Check("unsloth-batch-adjust", "warning", f"Unsloth changes per_device_train_batch_size "
                         f"{e.requested_batch_size} -> {e.per_device_train_batch_size} (= num_generations)",
                         "pick a batch whose gradient_accumulation_steps x batch is a multiple of num_generations"))
    if e.fits is None:
        out.append(Check("unsloth-memory", "warning", f"vLLM side not modelled: {e.vllm_not_modelled}",
                         "pass a --vllm-version the planner models"))
    else:
        peak = max(e.phases.values()) if e.phases else 0
        out.append(Check("unsloth-memory", "info" if e.fits else "error",
                         f"peak {peak / GIB:.2f} GiB of {e.gpu.total_bytes / GIB:.2f} GiB"
                         + ("" if e.fits else "; vLLM: " + "; ".join(e.capacity.errors if e.capacity else [])),
                         "" if e.fits else "plan with `plan --runtime unsloth` for a setup that fits"))
    return out


# -- vLLM's start-up inside the Unsloth process -----------------------------------------------------

# The known miss of an Unsloth engine's CUDA-graph pool: the largest printed / predicted ratio on the shared runs
# that print "Graph capturing finished ... took X GiB" (benchmarks/results/unsloth_reports.txt: record 4 0.70 / 0.29,
# record 7 1.15 / 0.48; records 5 and 6 1.48 and 1.17), rounded up to 0.1 (tests/test_unsloth_startup.py recomputes
# it). Not a model: strict xfails pin the miss; this only says when a start that fits would not fit if the pool were
# that far under-predicted. Four runs, so a floor of what the miss can be, not a bound.
GRAPH_POOL_MISS_RATIO = 2.5

_STARTUP_CAUSE = {"kv_cache_allocated": "KV cache allocation",
                  "cudagraph_capture": "CUDA graphs (captured after the KV cache)",
                  "sampler_warmup": "sampler warm-up (after the KV cache and the CUDA graphs)"}


def startup_failure(e: UnslothEstimate) -> tuple[str, int] | None:
    """(the first start-up step over the card, its bytes), or None when vLLM starts or fails before
    (vLLM's own start-up and KV-cache errors, ``capacity.errors``)."""
    if e.capacity is None or not e.capacity.startup_ok or not e.kv_cache_bytes:
        return None
    total = e.gpu.total_bytes
    return next(((step, b) for step, b in e.startup.items() if b > total), None)


def retry_estimate(e: UnslothEstimate) -> tuple[int, float, dict[str, int]] | None:
    """Unsloth's one retry after a start that ran out of memory (none with standby): (max_num_seqs,
    utilisation vLLM receives, its start-up steps), with vLLM's KV cache re-sized as the release sizes it."""
    if e.standby or e.capacity is None:
        return None
    seqs = max(int(e.max_num_seqs * UNSLOTH_RETRY_SEQS), 1)
    util = e.vllm_gpu_memory_utilization * unsloth_retry_utilization(e.facts.release)
    return seqs, util, restart_steps(e, seqs, util)


def restart_steps(e: UnslothEstimate, seqs: int, util: float) -> dict[str, int]:
    """The start-up steps of the same engine with ``seqs`` sequences at utilisation ``util`` (received)."""
    cap = e.capacity
    assert cap is not None
    again = _vllm.vllm_capacity(
        e.model, e.gpu, gpu_memory_utilization=util, max_model_len=cap.max_model_len,
        kv_cache_dtype=cap.kv_cache_dtype, quantization=cap.quantization, max_num_seqs=seqs,
        max_num_batched_tokens=max(cap.max_num_batched_tokens, seqs), vllm_version=cap.version,
        free_bytes=cap.free_bytes, baseline=0, engine=cap.engine)
    blocks = _vllm.num_blocks(again.available_kv_bytes - e.lora_slot_bytes, again.layout.bytes_per_block)
    kv = blocks * again.layout.bytes_per_block
    return startup_steps(again, e.pre_vllm_used_bytes, e.lora_slot_bytes, kv,
                         unsloth_extra_cudagraph_bytes(e.facts, again))


def fewer_sequences(e: UnslothEstimate) -> int | None:
    """The most sequences (of 3/4, 1/2, 1/4 of max_num_seqs, 8, 1) at which the same utilisation starts."""
    for seqs in sorted({max(e.max_num_seqs * k // 4, 1) for k in (3, 2, 1)} | {8, 1}, reverse=True):
        if seqs < e.max_num_seqs and all(b <= e.gpu.total_bytes
                                         for b in restart_steps(e, seqs, e.vllm_gpu_memory_utilization).values()):
            return seqs
    return None


def _startup_fixes(e: UnslothEstimate, excess: int) -> list[str]:
    """What lets the start through: a lower utilisation (the KV cache gives back ``excess``), fewer
    sequences (the warm-up's logits, the decode graphs), standby off."""
    total, free = e.gpu.total_bytes, e.gpu.total_bytes - e.pre_vllm_used_bytes
    asked = math.floor((e.vllm_gpu_memory_utilization - excess / total) * total / free * 100) / 100
    rows = min(e.max_num_seqs, e.max_num_batched_tokens)
    lower = f"gpu_memory_utilization <= {asked:.2f}"
    kept, _why = requested_utilization(e.facts, asked, e.standby, total, e.vllm_version)
    if round(kept, 4) != asked:  # standby would not keep it
        lower += (" with UNSLOTH_VLLM_STANDBY_UTIL_OVERRIDE=1" if e.facts.standby_util_override_env
                  else " with standby off") + f" (standby uses {kept:.4g})"
    n = fewer_sequences(e)
    how = (f"from_pretrained(max_num_seqs={n})" if e.facts.max_num_seqs_kwarg else
           f"{n} would start; Unsloth {e.facts.release} sets max_num_seqs itself") if n else \
        "none starts at this utilisation"
    fixes = [lower, f"fewer sequences ({how}; max_num_seqs {e.max_num_seqs}: the warm-up samples {rows} x "
                    f"{e.model.vocab_size:,} logits)"]
    if e.standby:
        fixes.append("standby off (UNSLOTH_VLLM_STANDBY=0: the request is kept, and a failed start is retried)")
    return fixes


def _graph_miss_check(e: UnslothEstimate, steps: str, graphs: int):
    """The ``unsloth-startup`` check of a start that fits: info, or a warning when the spare after the last
    step is smaller than what the graph pool's known miss (:data:`GRAPH_POOL_MISS_RATIO`) could add."""
    from ..checks.preflight import Check

    total = e.gpu.total_bytes
    spare, unseen = total - max(e.startup.values()), int(graphs * (GRAPH_POOL_MISS_RATIO - 1))
    ok = f"vLLM starts: {steps} GiB of {total / GIB:.2f} GiB"
    if spare >= unseen:
        return Check("unsloth-startup", "info", ok)
    msg = (f"{ok}, {spare / GIB:.2f} GiB to spare; but an Unsloth engine's CUDA-graph pool has printed up to "
           f"{GRAPH_POOL_MISS_RATIO}x the predicted one (benchmarks/results/unsloth_reports.txt): at that the "
           f"{graphs / GIB:.2f} GiB of graphs take {unseen / GIB:.2f} GiB more and the start may run out of memory")
    return Check("unsloth-startup", "warning", msg, "; ".join(_startup_fixes(e, unseen - spare)))


def _startup_checks(e: UnslothEstimate) -> list:
    """``unsloth-startup``: whether vLLM's start-up after its profile run (KV cache, CUDA graphs, sampler
    warm-up, :func:`startup_steps`) fits the card; the cause and the fix when it does not, and whether
    Unsloth's retry (without standby) starts."""
    from ..checks.preflight import Check

    if not e.startup or e.capacity is None or not e.capacity.startup_ok or not e.kv_cache_bytes:
        return []  # vLLM stops before (the unsloth-memory check names its error)
    total = e.gpu.total_bytes
    steps = ", ".join(f"{k.replace('_', ' ')} {b / GIB:.2f}" for k, b in e.startup.items())
    failed = startup_failure(e)
    graphs = e.capacity.cudagraph_bytes + e.extra_cudagraph_bytes
    if failed is None:
        return [_graph_miss_check(e, steps, graphs)]
    step, peak = failed
    msg = (f"vLLM's start-up runs out of memory at the {_STARTUP_CAUSE[step]}: {peak / GIB:.2f} GiB of "
           f"{total / GIB:.2f} GiB ({steps} GiB; CUDA graphs {graphs / GIB:.2f} GiB, vLLM {e.vllm_version})")
    retry = retry_estimate(e)
    if retry is not None:
        seqs, util, again = retry
        ok = all(b <= total for b in again.values())
        msg += (f"; Unsloth retries once at {util:.4f} and {seqs} sequences, which "
                + ("starts" if ok else f"fails too ({max(again.values()) / GIB:.2f} GiB)"))
        if ok:
            return [Check("unsloth-startup", "warning", msg, "; ".join(_startup_fixes(e, peak - total)))]
    return [Check("unsloth-startup", "error", msg, "; ".join(_startup_fixes(e, peak - total)))]
