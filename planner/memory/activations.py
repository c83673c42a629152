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

from ..specs.model import ModelSpec
from .lora import ADAPTER_BYTES_PER_PARAM, lora_targets

# Eager attention (architectures without an SDPA path, e.g. Gemma 2's soft-capped logits): per
# score element, the soft-cap's tanh output (bf16), the fp32 softmax output and its bf16 copy are
# saved (2 + 4 + 2 B); without checkpointing backward adds the fp32 gradient of one layer's
# scores (4 B). With checkpointing the recomputed layer's 8 B are the peak (the traced Gemma 2
# steps, benchmarks/results/trace_vs_analytic.txt: 5.5-7.6 B per score at the peak).
EAGER_SAVED_BYTES_PER_SCORE = 8
EAGER_BACKWARD_BYTES_PER_SCORE = 4
# (saved, backward) bytes per score by model type ("": Gemma 2's, above). gpt-oss (no SDPA path:
# ``_supports_sdpa = False``, modeling_gpt_oss.py:380; eager attention :227-255): the sink column is
# concatenated to the scores, the max is subtracted and the softmax runs in bf16; what stays is the
# softmax output (2 B per score, one more column) and the max's int64 indices per row.
EAGER_BYTES_PER_SCORE = {"": (EAGER_SAVED_BYTES_PER_SCORE, EAGER_BACKWARD_BYTES_PER_SCORE), "gpt_oss": (2, 4)}

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


# -- layer kinds (mixer x MLP) ---------------------------------------------------------------------

GDN_LINEARS = frozenset({"in_proj_qkvz", "in_proj_ba", "out_proj"})


def layer_kinds(spec: ModelSpec) -> dict:
    """How many decoder layers of each ``(mixer, mlp)`` kind: mixer "attention" (softmax attention,
    full or sliding) or "linear_attention" (gated delta-net); mlp "dense" or "moe"."""
    moe = set(spec.moe_layers)
    linear = [t == "linear_attention" for t in spec.layer_types] or [False] * spec.num_layers
    kinds: dict = {}
    for i in range(spec.num_layers):
        kind = ("linear_attention" if i < len(linear) and linear[i] else "attention", "moe" if i in moe else "dense")
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _target_kind(t) -> tuple[str | None, str | None]:
    """Which part of a layer a LoRA target sits in: (mixer kind or None, mlp kind or None); (None, None)
    for a vision-tower linear (no text token passes it)."""
    if t.group == "attention":
        return ("linear_attention" if t.name in GDN_LINEARS else "attention"), None
    if t.group == "mlp":
        return None, ("moe" if t.name.startswith("shared_expert") else "dense")
    if t.group in ("experts", "router"):
        return None, "moe"
    return None, None


def _lora_bytes_per_token(spec: ModelSpec, targets, kind: tuple, lora_rank: int, s: int) -> float:
    """PEFT ``lora.Linear`` on a layer of ``kind``: each wrapped linear keeps an fp32 copy of its input
    (cast before ``lora_A``) and ``lora_A``'s r-wide fp32 output. ParamWrappers (converted experts and
    router) keep neither: their cost is in ``moe_saved_bytes_per_token`` and ``moe_layer_constant_bytes``."""
    from .lora import MOE_CONVERTED_MODEL_TYPES

    converted = spec.model_type in MOE_CONVERTED_MODEL_TYPES
    out = 0.0
    for t in targets:
        mixer, mlp = _target_kind(t)
        if (mixer is not None and mixer != kind[0]) or (mlp is not None and mlp != kind[1]) or (mixer is mlp is None):
            continue
        if converted and (t.group == "experts" or t.name == "router"):
            continue
        per_token = 1.0
        if t.group == "experts":
            # experts see only the tokens routed to them: k of E experts per token
            per_token = spec.num_experts_per_tok / max(t.count, 1)
        copy = ADAPTER_BYTES_PER_PARAM if s != ADAPTER_BYTES_PER_PARAM else 0
        out += per_token * t.count * (copy * t.in_features + ADAPTER_BYTES_PER_PARAM * lora_rank)
    return out


def attention_saved_bytes_per_token(spec: ModelSpec, s: int = 2) -> float:
    """A softmax-attention block through SDPA: q, k, v and the output (s each), the fp32 log-sum-exp,
    q/k-norm inputs in fp32. MLA (DeepSeek-V2/V3, models/deepseek_v2/modeling_deepseek_v2.py:348-365,
    386-389): the values are a split view of ``kv_b_proj``'s output, so SDPA's saved v keeps all of it
    (heads x (qk_nope + v_head) wide), and ``kv_a_layernorm`` (and ``q_a_layernorm``) keep their fp32 input."""
    q, kv = spec.q_dim, spec.kv_dim
    qk = 4 * (q + kv) if spec.qk_norm else 0
    v_kept = spec.num_attention_heads * (spec.qk_nope_head_dim + spec.v_head_dim) if spec.is_mla else spec.v_dim
    attention = s * (q + kv + v_kept + spec.attn_out_dim) + 4 * spec.num_attention_heads
    if spec.fused_qkv:
        # Phi-3: q, k, v are views of one qkv_proj output; SDPA's saved v keeps all of it alive
        attention += s * (q + kv)
    if spec.is_mla:
        attention += 4 * (spec.kv_lora_rank + spec.q_lora_rank)
    if spec.attn_output_gate:
        # Qwen3-Next (modeling_qwen3_next.py:266-303): the gate half of q_proj's output is copied out
        # (reshape of a strided chunk) and sigmoid(gate) and the attention output are saved by the product
        attention += 2 * s * q
    return qk + attention


def gated_delta_net_saved_bytes_per_token(spec: ModelSpec, s: int = 2) -> float:
    """A gated delta-net layer (Qwen3-Next) on transformers' torch path (no flash-linear-attention /
    causal-conv1d installed: ``torch_chunk_gated_delta_rule``, models/qwen3_next/modeling_qwen3_next.py:371-509,
    and ``causal_conv1d_fn``, :340-361). Per token, with ``Hv`` value heads of ``dv`` and keys of ``dk``
    (q and k repeated to ``Hv`` heads), fp32 unless said: q/k cast and l2-normalised (2 Hv dk), q, k and v
    padded to the 64-token chunk (Hv (2 dk + dv)), v*beta (Hv dv), the two triangular solves (Hv (dv + dk)),
    q and k times their decays (2 Hv dk), one v_new per chunk (Hv dv), per chunk the intra-chunk products and
    decays (5 x Hv x 64), the recurrent state per chunk (Hv dk dv / 64), the gated RMSNorm's fp32 input,
    gate and silu (3 Hv dv) and its bf16 product (s Hv dv), and the conv1d's input and output (2 s conv_dim)."""
    hv, dk, dv = spec.linear_num_value_heads, spec.linear_key_head_dim, spec.linear_value_head_dim
    chunk = 64
    fp32 = 4 * hv * (2 * dk + (2 * dk + dv) + dv + (dv + dk) + 2 * dk + dv + 3 * dv)
    per_chunk = 4 * hv * (5 * chunk + dk * dv / chunk)
    return fp32 + per_chunk + s * hv * dv + 2 * s * spec.linear_conv_dim


# Routed experts (transformers' default grouped_mm path, integrations/moe.py:424-530). Per routed
# copy of a token (k per token): the sort permutation, its // k and the inverse permutation (int64) and
# the gathered routing weight; the down projection's output (saved by the product with the routing
# weights, which require grad); the activation's saved tensors per expert unit; with LoRA on the experts
# (PEFT ParamWrapper: the weights require grad) also the gathered input (gate_up) and the activation
# product (down). Activation units: SwiGLU saves gate_up's output (2I) and silu's (I): 3; gpt-oss's
# clamped gate (modeling_gpt_oss.py:82-88) saves gate_up's output (2I), the clamped gate, the sigmoid,
# the glu and up + 1 (I each): 6.
_EXPERT_ACT_UNITS = {"gpt_oss": 6}
_FP32_ROUTING = frozenset({"deepseek_v2", "deepseek_v3"})  # router in fp32 (modeling_deepseek_v2.py:92-116)


def moe_saved_bytes_per_token(spec: ModelSpec, targets=(), s: int = 2) -> float:
    """Bytes an MoE block saves per token: router, dispatch, routed experts and shared experts
    (derivation above; the router's by family, cited there)."""
    from .lora import FUSED_GATE_UP, MOE_CONVERTED_MODEL_TYPES

    k, E, I, h = spec.num_experts_per_tok, spec.num_experts, spec.moe_intermediate_size, spec.hidden_size
    names = {t.name for t in targets}
    router_wrapped = "router" in names and spec.model_type in MOE_CONVERTED_MODEL_TYPES
    fp32_routing = spec.model_type in _FP32_ROUTING
    w = 4 if fp32_routing else s
    if spec.model_type == "gpt_oss":
        # topk over the logits, softmax over the k kept (modeling_gpt_oss.py:126-130)
        router = 8 * k + s * k
    else:
        # softmax in fp32 over E, topk indices; Qwen's norm_topk_prob divides the k values in place (a copy)
        router = 4 * E + 8 * k + (4 * k if getattr_norm_topk(spec) else 0)
        if router_wrapped:  # the router's weight requires grad: F.linear saves its input (fp32 for DeepSeek)
            router += (4 if fp32_routing else s) * h
    dispatch = 3 * 8 * k + w * k
    act = _EXPERT_ACT_UNITS.get(spec.model_type, 3)
    experts = s * k * (act * I + h)
    if FUSED_GATE_UP in names:
        experts += s * k * h
    if "experts.down_proj" in names:
        experts += s * k * I
    Is = spec.shared_expert_intermediate_size
    shared = 3 * s * Is if Is else 0
    if Is and spec.model_type in ("qwen2_moe", "qwen3_next"):
        shared += s * h + s  # sigmoid(shared_expert_gate) x shared output saves both
    return router + dispatch + experts + shared


def getattr_norm_topk(spec: ModelSpec) -> bool:
    return bool(spec.raw_config.get("norm_topk_prob", spec.model_type in ("qwen3_moe", "qwen3_next")))


def moe_layer_constant_bytes(spec: ModelSpec, targets=(), lora_rank: int = 16, s: int = 2) -> tuple[int, int]:
    """(saved, backward transient) bytes per MoE layer that do not scale with tokens: PEFT's ParamWrapper
    over the experts materialises ``W + B A`` for the whole expert stack in every forward
    (``_LoraFactorsProxy``: one ``baddbmm`` in the weight's dtype, peft/tuners/lora/layer.py:2305-2324),
    which grouped_mm saves for backward together with the bf16 casts of the factors; backward makes
    that stack's gradient (the largest, gate_up's, bounds the transient). The router's ParamWrapper
    (rank r over one E x h weight) keeps ``W + delta`` and the delta."""
    from .lora import FUSED_GATE_UP, lora_rank_of

    saved = backward = 0
    for t in targets:
        if t.group not in ("experts", "router") or t.name not in (FUSED_GATE_UP, "experts.down_proj", "router"):
            continue
        r = lora_rank_of(t, lora_rank)
        if t.name == "router":
            saved += 2 * s * t.in_features * t.out_features
            continue
        stack = t.count * t.in_features * t.out_features
        saved += s * stack + s * t.count * r * (t.in_features + t.out_features)
        backward = max(backward, s * stack)
    return saved, backward


def layer_saved_bytes_per_token(spec: ModelSpec, finetune: str = "lora", lora_rank: int = 16,
                                compute_bytes: int = 2, lora_target_modules=None, kind: tuple | None = None) -> float:
    """Bytes one decoder layer of ``kind`` (``layer_kinds``; default the first kind) saves for backward
    per token (derivation in the module docstring)."""
    s = compute_bytes
    kind = kind or next(iter(layer_kinds(spec)))
    h, q, kv = spec.hidden_size, spec.q_dim, spec.kv_dim
    norms = spec.norms_per_layer * 4 * h
    if kind[0] == "linear_attention":
        mixer = gated_delta_net_saved_bytes_per_token(spec, s)
    else:
        mixer = attention_saved_bytes_per_token(spec, s)
    targets = lora_targets(spec, lora_target_modules) if finetune == "lora" else ()
    if kind[1] == "moe":
        mlp = moe_saved_bytes_per_token(spec, targets, s)
    else:
        mlp = 3 * s * spec.intermediate_size
    if finetune == "full":
        I = mlp_width_per_token(spec)
        norms += spec.norms_per_layer * s * h
        qk = s * (q + kv) if spec.qk_norm else 0
        # q/k/v share the first norm's output, gate/up the second's; down_proj saves the SwiGLU
        # product. o_proj's input is SDPA's output itself: the flash and memory-efficient kernels
        # allocate it as (batch, seq, heads, head_dim), so transformers' transpose(1, 2).contiguous()
        # copies nothing and the tensor is already counted in ``mixer``. Eager attention
        # (Gemma 2) makes a real (batch, heads, seq, head_dim) -> (batch, seq, ...) copy.
        o_input = q if spec.eager_attention else 0
        linear_inputs = s * (2 * h + o_input + I)
        if kind[1] == "dense" and not spec.is_moe:
            mlp = 3 * s * I
        return norms + qk + mixer + mlp + linear_inputs
    # LoRA: frozen base saves nothing; each wrapped linear keeps an fp32 copy of its input.
    return norms + mixer + mlp + _lora_bytes_per_token(spec, targets, kind, lora_rank, s)


def moe_backward_bytes_per_token(spec: ModelSpec, s: int = 2) -> float:
    """The first moment of an MoE block's backward, on top of everything the layer saved: the gradient
    of the summed expert outputs expanded to the k routed copies (``sum(dim=1)``'s backward), and the
    inverse permutation's gradient (``index`` backward: zeros and ``index_put``), 3 tensors of k x h
    per token in the weighted outputs' dtype (fp32 when the routing weights are: DeepSeek)."""
    w = 4 if spec.model_type in _FP32_ROUTING else s
    k = spec.num_experts_per_tok
    # with expert biases (gpt-oss) the gathered gate_up bias rows come back for its gradient (k x 2I)
    bias = s * k * 2 * spec.moe_intermediate_size if spec.expert_bias else 0
    return 3 * w * k * spec.hidden_size + bias


def _layer_moments(spec: ModelSpec, tokens: int, finetune: str, lora_rank: int, s: int,
                   lora_target_modules) -> tuple[int, list[tuple[int, int]]]:
    """(every layer's saved bytes, per layer kind (its saved bytes, what its backward adds beyond the
    working set's share)) for ``tokens`` tokens; MoE layers' constants included."""
    targets = lora_targets(spec, lora_target_modules) if finetune == "lora" else ()
    const_saved, const_backward = moe_layer_constant_bytes(spec, targets, lora_rank, s)
    total = 0
    kinds = []
    for kind, n in layer_kinds(spec).items():
        one = tokens * layer_saved_bytes_per_token(spec, finetune, lora_rank, s, lora_target_modules, kind)
        extra = 0.0
        if kind[1] == "moe":
            one += const_saved
            extra = max(const_backward, tokens * moe_backward_bytes_per_token(spec, s))
        total += n * int(one)
        kinds.append((int(one), int(extra)))
    return total, kinds


def final_norm_bytes(spec: ModelSpec, tokens: int, compute_bytes: int = 2) -> int:
    """The decoder's output and its final RMSNorm's saved fp32 input: outside every checkpointed layer,
    alive from the end of the forward until the norm's backward, which runs after the log-prob head's
    (s + 4 bytes per hidden unit and token). It adds to the head's moment, not to the layers'."""
    return tokens * (compute_bytes + 4) * spec.hidden_size


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

    With checkpointing: the L layer inputs. Without: every layer's saved tensors (each layer kind's).
    """
    if gradient_checkpointing:
        return checkpoint_bytes_per_token(spec, compute_bytes)
    return sum(n * layer_saved_bytes_per_token(spec, finetune, lora_rank, compute_bytes, lora_target_modules, kind)
               for kind, n in layer_kinds(spec).items())


def transient_bytes_per_token(spec: ModelSpec, finetune: str = "lora", lora_rank: int = 16,
                              gradient_checkpointing: bool = True, compute_bytes: int = 2,
                              lora_target_modules=None) -> float:
    """Bytes per token alive only around one layer's backward: with checkpointing the recomputed
    layer's saved tensors (the largest layer kind's) plus the backward working set; without, the
    working set alone."""
    working = backward_working_bytes_per_token(spec, finetune, compute_bytes)
    if not gradient_checkpointing:
        return working
    layer = max(layer_saved_bytes_per_token(spec, finetune, lora_rank, compute_bytes, lora_target_modules, kind)
                for kind in layer_kinds(spec))
    return layer + working


def activation_bytes(spec: ModelSpec, batch_size: int, prompt_length: int, completion_length: int,
                     finetune: str = "lora", lora_rank: int = 16, gradient_checkpointing: bool = True,
                     compute_bytes: int = 2, lora_target_modules=None) -> tuple[int, int]:
    """(saved, transient) activation bytes of one micro-batch of prompt + completion tokens.

    The step's activation peak is ``saved + max(transient, LM-head backward)`` (trainer.py).
    """
    tokens = batch_size * (prompt_length + completion_length)
    s = compute_bytes
    working = int(tokens * backward_working_bytes_per_token(spec, finetune, s))
    every, kinds = _layer_moments(spec, tokens, finetune, lora_rank, s, lora_target_modules)
    # a layer's backward peaks either where the fitted working set is alive or, for an MoE block, at
    # its first moment (moe_backward_bytes_per_token) or around the expert stack's gradient
    if gradient_checkpointing:
        saved = tokens * checkpoint_bytes_per_token(spec, s)
        transient = max(one + max(working, extra) for one, extra in kinds)
    else:
        saved = every
        transient = max(max(working, extra) for _, extra in kinds)
    seq = prompt_length + completion_length
    if spec.num_sliding_layers and not spec.eager_attention:
        # A sliding window needs an explicit mask: transformers builds a (batch, 1, seq, seq) boolean
        # mask once per forward, and SDPA's memory-efficient kernel (flash takes no mask) turns it
        # into an additive bias in the compute dtype that every sliding layer saves for backward.
        bias = batch_size * seq * seq * s
        saved += batch_size * seq * seq  # the boolean mask, alive for the whole step
        if gradient_checkpointing:
            transient += bias  # the recomputed layer's bias
        else:
            saved += spec.num_sliding_layers * bias
    if spec.eager_attention:
        scores = attention_score_elements(spec, batch_size, seq)
        saved_per_score, backward_per_score = EAGER_BYTES_PER_SCORE.get(spec.model_type, EAGER_BYTES_PER_SCORE[""])
        if spec.model_type not in EAGER_BYTES_PER_SCORE:  # Gemma 2, as derived and traced before
            if gradient_checkpointing:  # one layer's scores at a time, during its recomputation
                transient += scores * saved_per_score
            else:
                saved += spec.num_layers * scores * saved_per_score
                transient += scores * backward_per_score
        else:
            # eager attention repeats the KV heads for every query head (repeat_kv) and saves the copies;
            # its backward comes after the layer's MLP backward has freed that block's tensors, so its
            # moment (backward_per_score) competes with the MLP's instead of adding to it
            expanded = tokens * s * 2 * (spec.q_dim - spec.kv_dim)
            if gradient_checkpointing:
                # the layers' inputs include the additive masks (one per attention kind, batch x seq^2),
                # kept for every recomputation
                masks = (1 + (spec.num_sliding_layers > 0)) * batch_size * seq * seq * s
                saved += masks
                transient += scores * saved_per_score + expanded
            else:
                saved += spec.num_attention_layers * (scores * saved_per_score + expanded)
                transient = max(transient, scores * backward_per_score)
    return int(saved), int(transient)


def attention_score_elements(spec: ModelSpec, batch_size: int, seq_len: int) -> int:
    """Elements of one layer's eager attention scores: batch x heads x seq x seq."""
    return batch_size * spec.num_attention_heads * seq_len * seq_len
