"""Gradients held during backward.

Gradients take the dtype of their parameter: fp32 LoRA adapters -> 4 B per trainable parameter;
full fine-tuning of a bf16 model -> 2 B per parameter. TRL's fused LM head accumulates the LM-head
weight gradient in fp32 before casting (``_ChunkedLogProbFunction.backward``,
trl/kernels/chunked_logprob.py), counted in logprob_head.py. They are freed by ``zero_grad``.
"""

from __future__ import annotations


def gradient_bytes(trainable_params: int, param_bytes: int) -> int:
    """Bytes of ``.grad`` for every trainable parameter at the end of backward."""
    return trainable_params * param_bytes
