"""TRL's per-token log-prob head during the training forward/backward.

- ``fused`` (TRL with ``add_fused_lm_head``, 1.16): ``_ChunkedLogProbFunction`` projects the
  completion positions through ``lm_head`` in tiles of ``TOKEN_CHUNK_SIZE`` (4096) tokens by
  ``_CHUNKED_LOGPROB_CHUNK_SIZE`` (32768) vocabulary columns into one reused buffer in the compute
  dtype (trl/kernels/chunked_logprob.py, trl/trainer/utils.py). The full logits never exist: the
  head costs one tile buffer plus per-token fp32 statistics (in the activations' backward working
  set). When ``lm_head`` trains (full fine-tuning), backward accumulates its gradient in fp32: V*h*4.
- ``plain`` (older TRL): the model returns ``(batch, C+1, vocab)`` logits; bf16 logits (2 B), the
  fp32 log-softmax kept for backward (4 B) and the fp32 gradient in backward (4 B) are alive
  together: about 10 bytes per logit (docs/trl-grpo.md §4, derived, not measured).
"""

from __future__ import annotations

from ..model_spec import ModelSpec

LOGPROB_HEADS = ("fused", "plain")
FUSED_TOKEN_TILE = 4096
FUSED_VOCAB_TILE = 32768
PLAIN_BYTES_PER_LOGIT = 10


def fused_head_bytes(spec: ModelSpec, completion_tokens: int, compute_bytes: int = 2,
                     lm_head_trainable: bool = False) -> int:
    """Bytes alive during the fused head's backward: the tile buffer, the fp32 gradient of the
    completion hidden states (``grad_hidden``, 4*h per token) and their compacted bf16 copy
    (``hidden_states[mask]``), plus the fp32 head-weight gradient when ``lm_head`` trains."""
    tile = min(completion_tokens, FUSED_TOKEN_TILE) * min(spec.vocab_size, FUSED_VOCAB_TILE) * compute_bytes
    per_token = (4 + compute_bytes) * spec.hidden_size
    # fp32 accumulator, then the bf16 .grad of the head (or tied embedding) weight
    head_grad = spec.vocab_size * spec.hidden_size * (4 + compute_bytes) if lm_head_trainable else 0
    return tile + completion_tokens * per_token + head_grad


def plain_head_bytes(spec: ModelSpec, batch_size: int, completion_length: int) -> int:
    """Peak bytes of the full-logits head: ``batch x (C+1) x vocab`` logits at ~10 B each."""
    return batch_size * (completion_length + 1) * spec.vocab_size * PLAIN_BYTES_PER_LOGIT


def logprob_head_bytes(spec: ModelSpec, head: str, batch_size: int, completion_length: int,
                       compute_bytes: int = 2, lm_head_trainable: bool = False) -> int:
    """Peak bytes of the log-prob head for one micro-batch, by head kind."""
    if head == "fused":
        return fused_head_bytes(spec, batch_size * completion_length, compute_bytes, lm_head_trainable)
    if head == "plain":
        # nn.Linear's backward writes the weight gradient in the compute dtype (the new .grad)
        grad = spec.vocab_size * spec.hidden_size * compute_bytes if lm_head_trainable else 0
        return plain_head_bytes(spec, batch_size, completion_length) + grad
    raise ValueError(f"unknown log-prob head {head!r}")
