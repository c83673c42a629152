"""The rollout buffers TRL's GRPOTrainer keeps on the GPU between generation and training.

``_generate_and_score_completions`` returns, for the whole generation batch
(``per_device_train_batch_size x steps_per_generation`` sequences), a dict that ``_prepare_inputs``
buffers and slices one micro-batch at a time (0.26.0 grpo_trainer.py:2025-2045): ``prompt_ids``,
``prompt_mask``, ``completion_ids``, ``completion_mask`` (int64), ``advantages`` (fp32, one per
sequence), ``old_per_token_logps`` (fp32 per completion token; always computed when vLLM's importance
sampling correction is on, the default: :1838-1856), ``importance_sampling_ratio`` (fp32 per token
with the default token-level correction) and ``ref_per_token_logps`` (fp32, only when ``beta != 0``).
The vLLM per-token log-probs (``sampling_per_token_logps``, :1786-1788) are padded the same way and
freed once the ratio exists; they are alive with the rest while it is computed.
"""

from __future__ import annotations

INDEX_BYTES = 8  # int64 ids and masks
LOGP_BYTES = 4  # fp32 per-token log-probs and ratios


def rollout_buffer_bytes(sequences: int, prompt_length: int, completion_length: int,
                         reference_logps: bool = False, importance_sampling: bool = True) -> int:
    """Bytes of the generation batch's buffers: ``sequences x (16 B x (prompt + completion)
    + 4 B x completion x fp32 per-token tensors + 4 B)``.

    fp32 per-token tensors: ``old_per_token_logps``, plus ``importance_sampling_ratio`` and vLLM's
    ``sampling_per_token_logps`` with importance sampling, plus ``ref_per_token_logps`` with a KL term.
    """
    if sequences <= 0:
        return 0
    per_token_fp32 = 1 + (2 if importance_sampling else 0) + (1 if reference_logps else 0)
    per_sequence = (2 * INDEX_BYTES * (prompt_length + completion_length)
                    + LOGP_BYTES * completion_length * per_token_fp32 + LOGP_BYTES)
    return sequences * per_sequence
