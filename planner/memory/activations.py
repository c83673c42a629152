"""Activations saved for backward in a GRPO training step, per token, per layer.

Derivation (ours, op by op through the transformers decoder layer with SDPA's flash /
memory-efficient kernel, which keeps no seq x seq scores: Korthikanti et al. 2022 §4.1 with the
5as^2b term gone). Autograd saves, per token, in bytes (``s`` = compute dtype bytes, 2 for bf16):

- RMSNorm (HF): upcasts its input to fp32 and saves it for ``pow``/``mul``: 4h per norm. With a
  trainable weight (full fine-tuning) it also saves the normalised bf16 tensor: + s*h.
- q/k-norm (Qwen3, Gemma 3): the same on q and k: 4*(q_dim + kv_dim).
- SDPA saves q, k, v, the output (s each) and an fp32 log-sum-exp per head: s*(2*q_dim + 2*kv_dim) + 4*heads.
- SwiGLU/GeGLU MLP: the activation saves its input, the product saves both factors: 3*s*I.
- A frozen linear (LoRA base, NF4 base) saves nothing but its weight; a trainable one (full
  fine-tuning) saves its input: s*(h + h + I) for q/k/v, gate/up and down (o_proj's input is
  SDPA's output, already saved: the flash kernel's output layout makes the transpose free).
- PEFT LoRA casts each wrapped layer's input to the adapter dtype (fp32) before ``lora_A``, and
  ``lora_A`` saves that copy: 4*in per wrapped linear (q, k and v each keep their own copy);
  ``lora_B`` saves the r-wide fp32 ``lora_A`` output: 4*r.
- Fused projections (Phi-3): v is a view of the qkv output, so SDPA's saved v keeps all of it.

Per sequence (seq^2 terms): a sliding window needs an explicit mask, which SDPA's memory-efficient
kernel turns into an additive bias each masked layer saves (batch x seq^2 x s); architectures with no
SDPA path (Gemma 2) run eager attention and save the scores (batch x heads x seq^2, 8 B each).

Without gradient checkpointing every layer keeps all of the above. With it (non-reentrant,
per decoder layer, TRL's default), each layer keeps only its bf16 input (s*h) and backward
recomputes one layer at a time, so the peak holds the L checkpoints plus one layer's saved
tensors plus the backward working set.

The backward working set (gradient of the residual stream, the final norm and LM-head inputs,
and the fp32 gradient of the widest LoRA input) is the one fitted term:
``BACKWARD_BYTES_PER_HIDDEN * h + BACKWARD_BYTES_PER_INTERMEDIATE * I`` per token, fitted by
benchmarks/fit_trainer_coefficients.py on the LoRA rows of data/calibration (H100, TRL 1.16).
The derived per-layer bytes above were checked against the same data's no-checkpointing rows:
within 2-6% for all eight models (Qwen2.5, Qwen3, Llama 3, Gemma 3; bf16 and NF4).
"""

from __future__ import annotations

from ..model_spec import ModelSpec
from .lora import ADAPTER_BYTES_PER_PARAM, lora_targets

# Eager attention (architectures without an SDPA path, e.g. Gemma 2's soft-capped logits): per
# score element, the soft-cap's tanh output (bf16), the fp32 softmax output and its bf16 copy are
# saved (2 + 4 + 2 B); without checkpointing backward adds the fp32 gradient of one layer's
# scores (4 B). With checkpointing the recomputed layer's 8 B are the peak (the traced Gemma 2
# steps, benchmarks/results/trace_vs_analytic.txt: 5.5-7.6 B per score at the peak).
EAGER_SAVED_BYTES_PER_SCORE = 8
EAGER_BACKWARD_BYTES_PER_SCORE = 4

# Fitted on data/calibration/h100-trl1.16-train.jsonl (benchmarks/fit_trainer_coefficients.py).
BACKWARD_BYTES_PER_HIDDEN = 12.02  # per token per hidden unit
BACKWARD_BYTES_PER_INTERMEDIATE = 4.01  # per token per MLP unit
FUSED_GATE_UP_BACKWARD_BYTES = 6  # derived: 2 (bf16) + 4 (fp32) per MLP unit, checked by the trace


def mlp_width_per_token(spec: ModelSpec) -> float:
    """MLP units a token activates, averaged over layers (MoE: top-k experts plus shared)."""
    if not spec.is_moe:
        return float(spec.intermediate_size)
    moe_frac = len(spec.moe_layers) / spec.num_layers
    moe_width = spec.num_experts_per_tok * spec.moe_intermediate_size + spec.shared_expert_intermediate_size
    return moe_frac * moe_width + (1 - moe_frac) * spec.intermediate_size


def layer_saved_bytes_per_token(spec: ModelSpec, finetune: str = "lora", lora_rank: int = 16,
                                compute_bytes: int = 2, lora_target_modules=None) -> float:
    """Bytes one decoder layer saves for backward per token (derivation in the module docstring)."""
    s = compute_bytes
    h, q, kv, I = spec.hidden_size, spec.q_dim, spec.kv_dim, mlp_width_per_token(spec)
    norms = spec.norms_per_layer * 4 * h
    qk = 4 * (q + kv) if spec.qk_norm else 0
    # q, k, v and the output (MLA: v and the output are v_head_dim wide, q and k qk_nope + qk_rope)
    attention = s * (q + kv + spec.v_dim + spec.attn_out_dim) + 4 * spec.num_attention_heads
    if spec.fused_qkv:
        # Phi-3: q, k, v are views of one qkv_proj output; SDPA's saved v keeps all of it alive
        attention += s * (q + kv)
    mlp = 3 * s * I
    if spec.is_moe:
        mlp += 4 * spec.num_experts + 2 * s * h * spec.num_experts_per_tok  # router logits, token dispatch copies
    if finetune == "full":
        norms += spec.norms_per_layer * s * h
        qk += s * (q + kv) if spec.qk_norm else 0
        # q/k/v share the first norm's output, gate/up the second's; down_proj saves the SwiGLU
        # product. o_proj's input is SDPA's output itself: the flash and memory-efficient kernels
        # allocate it as (batch, seq, heads, head_dim), so transformers' transpose(1, 2).contiguous()
        # copies nothing and the tensor is already counted in ``attention``. Eager attention
        # (Gemma 2) makes a real (batch, heads, seq, head_dim) -> (batch, seq, ...) copy.
        o_input = q if spec.eager_attention else 0
        linear_inputs = s * (2 * h + o_input + I)
        return norms + qk + attention + mlp + linear_inputs
    # LoRA: frozen base saves nothing; each wrapped linear keeps an fp32 copy of its input.
    lora = 0.0
    for t in lora_targets(spec, lora_target_modules):
        per_layer = t.layers / spec.num_layers
        width = t.in_features
        if t.group == "experts":
            # experts see only the tokens routed to them: k of E experts per token
            per_layer *= spec.num_experts_per_tok / max(t.count, 1)
        copy = ADAPTER_BYTES_PER_PARAM if s != ADAPTER_BYTES_PER_PARAM else 0
        lora += per_layer * t.count * (copy * width + ADAPTER_BYTES_PER_PARAM * lora_rank)
    return norms + qk + attention + mlp + lora


def checkpoint_bytes_per_token(spec: ModelSpec, compute_bytes: int = 2) -> float:
    """Gradient checkpointing keeps each decoder layer's input hidden state: L * s * h per token."""
    return spec.num_layers * compute_bytes * spec.hidden_size


def backward_working_bytes_per_token(spec: ModelSpec, finetune: str = "lora", compute_bytes: int = 2) -> float:
    """Gradients and transients alive at the backward peak beyond the saved tensors (fitted), plus,
    for a fused gate_up_proj (Phi-3), the gradient of the second MLP half that the fused layer
    back-propagates together with the first (bf16 + the fp32 LoRA path: 6 B per MLP unit).

    The per-MLP-unit coefficient was fitted on LoRA steps, where the gradient of down_proj's input
    flows through PEFT's fp32 copy (4 B per unit). Full fine-tuning has no fp32 copy: that gradient
    is in the compute dtype, ``4 - s`` bytes less per unit (checked against the CPU trace and the
    measured full fine-tuning rows)."""
    per_unit = BACKWARD_BYTES_PER_INTERMEDIATE
    if finetune == "full":
        per_unit -= ADAPTER_BYTES_PER_PARAM - compute_bytes
    fused = FUSED_GATE_UP_BACKWARD_BYTES * spec.intermediate_size if spec.fused_gate_up else 0
    return BACKWARD_BYTES_PER_HIDDEN * spec.hidden_size + per_unit * mlp_width_per_token(spec) + fused


def saved_bytes_per_token(spec: ModelSpec, finetune: str = "lora", lora_rank: int = 16,
                          gradient_checkpointing: bool = True, compute_bytes: int = 2,
                          lora_target_modules=None) -> float:
    """Bytes per token kept from the forward until backward frees them.

    With checkpointing: the L layer inputs. Without: every layer's saved tensors.
    """
    if gradient_checkpointing:
        return checkpoint_bytes_per_token(spec, compute_bytes)
    layer = layer_saved_bytes_per_token(spec, finetune, lora_rank, compute_bytes, lora_target_modules)
    return spec.num_layers * layer


def transient_bytes_per_token(spec: ModelSpec, finetune: str = "lora", lora_rank: int = 16,
                              gradient_checkpointing: bool = True, compute_bytes: int = 2,
                              lora_target_modules=None) -> float:
    """Bytes per token alive only around one layer's backward: with checkpointing the recomputed
    layer's saved tensors plus the backward working set; without, the working set alone."""
    working = backward_working_bytes_per_token(spec, finetune, compute_bytes)
    if not gradient_checkpointing:
        return working
    layer = layer_saved_bytes_per_token(spec, finetune, lora_rank, compute_bytes, lora_target_modules)
    return layer + working


def activation_bytes(spec: ModelSpec, batch_size: int, prompt_length: int, completion_length: int,
                     finetune: str = "lora", lora_rank: int = 16, gradient_checkpointing: bool = True,
                     compute_bytes: int = 2, lora_target_modules=None) -> tuple[int, int]:
    """(saved, transient) activation bytes of one micro-batch of prompt + completion tokens.

    The step's activation peak is ``saved + max(transient, LM-head backward)`` (trainer.py).
    """
    tokens = batch_size * (prompt_length + completion_length)
    args = (spec, finetune, lora_rank, gradient_checkpointing, compute_bytes, lora_target_modules)
    saved = tokens * saved_bytes_per_token(*args)
    transient = tokens * transient_bytes_per_token(*args)
    seq = prompt_length + completion_length
    if spec.num_sliding_layers and not spec.eager_attention:
        # A sliding window needs an explicit mask: transformers builds a (batch, 1, seq, seq) boolean
        # mask once per forward, and SDPA's memory-efficient kernel (flash takes no mask) turns it
        # into an additive bias in the compute dtype that every sliding layer saves for backward.
        bias = batch_size * seq * seq * compute_bytes
        saved += batch_size * seq * seq  # the boolean mask, alive for the whole step
        if gradient_checkpointing:
            transient += bias  # the recomputed layer's bias
        else:
            saved += spec.num_sliding_layers * bias
    if spec.eager_attention:
        scores = attention_score_elements(spec, batch_size, seq)
        if gradient_checkpointing:  # one layer's scores at a time, during its recomputation
            transient += scores * EAGER_SAVED_BYTES_PER_SCORE
        else:
            saved += spec.num_layers * scores * EAGER_SAVED_BYTES_PER_SCORE
            transient += scores * EAGER_BACKWARD_BYTES_PER_SCORE
    return int(saved), int(transient)


def attention_score_elements(spec: ModelSpec, batch_size: int, seq_len: int) -> int:
    """Elements of one layer's eager attention scores: batch x heads x seq x seq."""
    return batch_size * spec.num_attention_heads * seq_len * seq_len
