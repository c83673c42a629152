"""Optimizer state, per optimizer.

- ``adamw_8bit`` / ``paged_adamw_8bit`` (bitsandbytes ``Optimizer2State`` with ``optim_bits=8``,
  block-wise since 0.44.0 with blocksize 256): tensors with at least ``min_8bit_size`` = 4096
  elements keep two uint8 states plus two fp32 absmax per 256 elements (2 + 8/256 = 2.031 B per
  parameter); smaller tensors fall back to two fp32 states (8 B per parameter). Source:
  ``bitsandbytes/optim/optimizer.py::Optimizer2State.init_state`` (docs/anchors.md §5).
- ``adamw_torch`` and ``adamw_torch_fused`` (``torch.optim.AdamW``, fused: transformers' default with
  torch >= 2.8, versions.default_optimizer): two states in the *parameter's* dtype
  (``_init_group``: ``torch.zeros_like(p)``; checked on torch 2.13 for the for-loop, foreach and
  fused variants), so 8 B per fp32 parameter (fp32 weights, LoRA adapters) and 4 B per bf16 one
  (full fine-tuning of a bf16 model: TRL trains the loaded dtype, no master copy); the fused step is
  one kernel over every tensor, with no temporaries.
- ``paged_adamw_32bit`` (bitsandbytes ``Optimizer2State``, 32-bit): two fp32 states whatever the
  parameter's dtype, 8 B per parameter.
- Paged variants allocate tensors of >= 1e5 elements with cudaMallocManaged: same bytes, but
  invisible to torch's allocator and evictable to host under pressure; we count them on the GPU
  (the worst case, and what happens when nothing else competes).
Measured (calibration, 8-bit, r=16): 29-93 MiB for 11-42 M LoRA parameters = 2.03 B/param plus
about 7 MiB of per-step bookkeeping, ``STATE_OVERHEAD_BYTES``.
"""

from __future__ import annotations

from ..specs.units import MIB

OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "adamw_torch", "adamw_torch_fused", "paged_adamw_32bit")
TORCH_ADAMW = ("adamw_torch", "adamw_torch_fused")  # states in the parameter's dtype
MIN_8BIT_SIZE = 4096
BLOCKWISE_8BIT_BLOCK = 256
STATE_OVERHEAD_BYTES = 8 * MIB  # quantisation maps, step counters, per-tensor bookkeeping


def is_paged(optim: str) -> bool:
    return optim.startswith("paged_")


def optimizer_state_bytes_per_tensor(numel: int, optim: str, param_bytes: int = 4) -> float:
    """Adam state bytes for one trainable tensor of ``numel`` elements of ``param_bytes`` each."""
    if optim in ("adamw_8bit", "paged_adamw_8bit"):
        if numel < MIN_8BIT_SIZE:
            return 8.0 * numel
        return 2.0 * numel + 8.0 * -(-numel // BLOCKWISE_8BIT_BLOCK)
    if optim in TORCH_ADAMW:
        return 2.0 * param_bytes * numel
    if optim == "paged_adamw_32bit":
        return 8.0 * numel
    raise ValueError(f"unknown optimizer {optim!r}")


def optimizer_state_bytes(tensors: list[tuple[int, int]], optim: str, param_bytes: int = 4) -> int:
    """Total optimizer state for ``tensors`` given as (numel, copies) pairs of ``param_bytes`` elements."""
    total = sum(optimizer_state_bytes_per_tensor(n, optim, param_bytes) * c for n, c in tensors)
    return int(total) + STATE_OVERHEAD_BYTES


def states_at_param_bytes(optimizer_state_bytes: int, from_param_bytes: int, to_param_bytes: int) -> int:
    """A torch AdamW state total computed for ``from_param_bytes`` parameters, for parameters of
    ``to_param_bytes`` (the bookkeeping, ``STATE_OVERHEAD_BYTES``, unchanged)."""
    states = max(0, int(optimizer_state_bytes) - STATE_OVERHEAD_BYTES)
    return states * to_param_bytes // from_param_bytes + STATE_OVERHEAD_BYTES


def optimizer_step_transient_bytes(trainable_params: int, optim: str, param_bytes: int) -> int:
    """Bytes the optimizer's ``step()`` allocates on top of parameters, gradients and state.

    - ``adamw_torch``: transformers builds ``torch.optim.AdamW`` without ``foreach``/``fused``
      (4.57.3 trainer.py:1500-1506), so on CUDA torch takes ``_multi_tensor_adamw``, which computes
      ``exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs)`` for *every* tensor of the group
      at once before ``_foreach_addcdiv_`` (torch/optim/adam.py, the non-capturable branch): one
      parameter-sized temporary in the state's dtype (the parameter's), ``param_bytes`` per
      trainable parameter. ``_foreach_lerp_``/``_foreach_mul_``/``_foreach_addcmul_`` work in place.
    - ``adamw_torch_fused``: ``torch._fused_adamw_`` updates in place in one kernel: 0.
    - bitsandbytes 8-bit and 32-bit (paged) optimizers update in place per tensor: 0.
    """
    if optim == "adamw_torch":
        return trainable_params * param_bytes
    if optim in OPTIMIZERS:
        return 0
    raise ValueError(f"unknown optimizer {optim!r}")


# torch's caching allocator rounds every allocation up to a 512-byte block
ALLOCATOR_MIN_BLOCK_BYTES = 512


def clip_grad_norm_bytes(num_trainable_tensors: int) -> int:
    """Bytes ``max_grad_norm`` clipping allocates (transformers' default ``max_grad_norm=1.0``,
    4.57.3 training_args.py:920; the Trainer calls ``accelerator.clip_grad_norm_``, trainer.py:2697-2715).

    ``torch.nn.utils.clip_grad_norm_`` with foreach: ``torch._foreach_norm`` returns one 0-d fp32 norm
    per gradient (a 512-byte block each), ``torch.stack`` of them and the total norm; the scaling is
    ``_foreach_mul_`` in place. A few hundred KiB at most: kept as a term so that the table shows
    that clipping was counted, not forgotten.
    """
    return (2 * num_trainable_tensors + 2) * ALLOCATOR_MIN_BLOCK_BYTES
