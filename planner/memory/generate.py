"""Generation without vLLM (``use_vllm=False``, TRL's default): transformers' ``generate`` in the
trainer process, on the model's own weights (already resident).

What TRL 1.16 does (trl/trainer/grpo_trainer.py): every ``steps_per_generation`` micro-steps
``_prepare_inputs`` generates the whole local generation batch at once (:1538-1546), i.e.
``per_device_train_batch_size x steps_per_generation`` sequences, left-padded to the batch's longest
prompt (``_generate_single_turn``, :1814-1826), in one ``unwrapped_model.generate`` call under
``torch.no_grad()`` (:1861-1875) with ``unwrap_model_for_generation`` (gradient checkpointing off,
the cache on; ZeRO-3 gathers the full weights when ``ds3_gather_for_generation``, the default).
Nothing empties the allocator's cache around it. ``GenerationConfig`` (:1155-1173): sampling with
``max_new_tokens = max_completion_length``, temperature, top_p / top_k / min_p when set.

transformers 5.24 (derived from the source, not measured; the safe side where it says so):
- **KV cache**: ``DynamicCache``: per attention layer, keys and values of every sequence, grown by
  ``torch.cat`` each step (cache_utils.py:136), so at the last step one layer's cache exists twice
  for a moment. In the compute dtype, ``N x (P + C)`` tokens. Sliding-window layers keep only their
  window (:196-244); counted whole here (the safe side). MLA models cache full keys and values per
  head (``heads x (qk_nope + qk_rope + v_head)``), not vLLM's latent. Gated delta-net layers keep a
  recurrent state per sequence instead.
- **prefill**: one no-grad forward of ``N x P`` tokens, one layer at a time: the widest point of a
  decoder layer (planner.memory.vllm.forward_bytes_per_token), taken on top of the whole cache.
- **sampling**: ``logits_to_keep=1`` (generation/utils.py:2955-2956): the last position's logits
  ``[N, V]`` in the compute dtype, their fp32 copy (:3248), the processed scores and the softmax
  probabilities (:3275) and multinomial's working copy, fp32: ``N x V x (compute + 16)`` bytes.
- **4/8-bit weights**: bitsandbytes dequantises one weight at a time: the largest quantized matrix in
  bf16 (a decoder projection: ``lm_head`` and the embedding stay in 16 bits).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..specs.model import ModelSpec
from .lora import lora_targets
from .vllm import forward_bytes_per_token, kv_bytes_per_token, linear_attention_state_bytes

SAMPLING_FP32_COPIES = 4  # next_token_logits, processed scores, softmax probabilities, multinomial's copy


@dataclass(frozen=True)
class GenerationShape:
    """One ``generate`` call: ``sequences`` (``per_device_train_batch_size x steps_per_generation``),
    the length the prompts are padded to, and the completion length."""

    sequences: int
    prompt_length: int
    completion_length: int
    compute_bytes: int = 2  # the weights' dtype (fp32 weights generate in fp32)

    @property
    def tokens(self) -> int:
        return self.sequences * (self.prompt_length + self.completion_length)


def kv_bytes_per_cached_token(spec: ModelSpec, compute_bytes: int = 2) -> int:
    """Bytes one token holds in transformers' cache across all attention layers."""
    if spec.is_mla:
        per_layer = spec.num_attention_heads * (spec.qk_nope_head_dim + spec.qk_rope_head_dim + spec.v_head_dim)
        return spec.num_attention_layers * per_layer * compute_bytes
    return kv_bytes_per_token(spec) // 2 * compute_bytes  # vLLM's figure is 16-bit ("auto" on a bf16 model)


def generation_kv_cache_bytes(spec: ModelSpec, shape: GenerationShape) -> int:
    """The ``DynamicCache`` of the generation batch at its last step: every attention layer's keys
    and values for ``N x (P + C)`` tokens, plus gated delta-net layers' per-sequence states."""
    linear_layers = spec.num_layers - spec.num_attention_layers if spec.is_hybrid_linear else 0
    states = shape.sequences * linear_layers * linear_attention_state_bytes(spec, state_bytes=shape.compute_bytes)
    return shape.tokens * kv_bytes_per_cached_token(spec, shape.compute_bytes) + states


def largest_projection_params(spec: ModelSpec) -> int:
    """The largest linear projection of the decoder layers (what bitsandbytes quantizes; not lm_head)."""
    return max((t.in_features * t.out_features for t in lora_targets(spec, None)), default=0)


def generation_components(spec: ModelSpec, shape: GenerationShape, quantized: bool = False,
                          largest_matrix_params: int = 0) -> dict[str, int]:
    """The ``generate`` block (planner.memory.phases): the cache, the larger transient of the prefill
    forward and the cache's last concatenation, the sampling temporaries, and (4/8-bit weights) one
    dequantised matrix."""
    kv = generation_kv_cache_bytes(spec, shape)
    concat = kv // max(1, spec.num_attention_layers)  # one layer's torch.cat copy at the last step
    prefill = int(shape.sequences * shape.prompt_length * forward_bytes_per_token(spec) * shape.compute_bytes / 2)
    sampling = shape.sequences * spec.vocab_size * (shape.compute_bytes + 4 * SAMPLING_FP32_COPIES)
    return {"generate.kv_cache": kv, "generate.forward": max(prefill, concat), "generate.sampling": sampling,
            "generate.dequant": largest_matrix_params * 2 if quantized else 0}
