"""Autocast's weight cache: what mixed precision over fp32 weights holds during the forward.

TRL's ``GRPOConfig`` turns ``bf16`` on unless ``fp16`` is set (0.25.0 grpo_config.py:670, 0.26.0
:805), so a policy loaded in float32 (``versions.trl_default_model_dtype``: TRL < 0.27 with
transformers 4.x, or TRL >= 0.27 with no dtype) trains under accelerate's
``torch.autocast(dtype=bfloat16)``, which wraps the model's ``forward``. Autocast casts every fp32
leaf tensor that requires grad to bf16 the first time an op uses it and *caches* the copy until the
outermost autocast context exits (ATen ``autocast_mode.cpp``: ``can_try_cache`` needs a float32
leaf that requires grad, not a view; ``torch.autocast.__exit__`` clears the cache when nesting
reaches 0). So at the end of the forward every trainable matrix an ``nn.Linear`` multiplies
(including a tied LM head) has a bf16 twin alive: 2 B per such parameter. The embedding lookup is
not an autocast op, and frozen weights (``requires_grad=False``) are cast per use, not cached.
The cache is cleared before backward; gradient checkpointing's recomputation re-enters autocast
one layer at a time (one layer's copies, in the activations' transient).
"""

from __future__ import annotations

from ..specs.model import ModelSpec

AMP_COMPUTE_BYTES = 2  # bf16 or fp16 copies


def autocast_weight_cache_bytes(spec: ModelSpec, weights: str, finetune: str, trainable_params: int,
                                mixed_precision: str = "bf16") -> int:
    """Bytes of bf16/fp16 weight copies autocast caches during one forward.

    Full fine-tuning of fp32 weights: every linear weight plus the LM head (tied or not; a tied head
    is the embedding matrix used by ``F.linear``). LoRA: the trainable adapters if they are fp32
    (PEFT keeps them fp32 by default; the frozen base is cast per use, not cached). Nothing when the
    weights are already 16-bit or mixed precision is off.
    """
    if mixed_precision not in ("bf16", "fp16"):
        return 0
    if finetune == "lora":
        return trainable_params * AMP_COMPUTE_BYTES  # fp32 adapters, cached as 16-bit copies
    if weights != "fp32":
        return 0
    linear = sum(s.weight_params for s in spec.linear_shapes())
    return (linear + spec.vocab_size * spec.hidden_size) * AMP_COMPUTE_BYTES
