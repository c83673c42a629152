"""Optimizer state, per optimizer.

- ``adamw_8bit`` / ``paged_adamw_8bit`` (bitsandbytes ``Optimizer2State`` with ``optim_bits=8``,
  block-wise since 0.44.0 with blocksize 256): tensors with at least ``min_8bit_size`` = 4096
  elements keep two uint8 states plus two fp32 absmax per 256 elements (2 + 8/256 = 2.031 B per
  parameter); smaller tensors fall back to two fp32 states (8 B per parameter). Source:
  ``bitsandbytes/optim/optimizer.py::Optimizer2State.init_state`` (docs/anchors.md §5).
- ``adamw_torch`` / ``paged_adamw_32bit``: two fp32 states, 8 B per parameter (plus, in
  mixed-precision full fine-tuning of a bf16 model, no master copy: TRL trains the loaded dtype).
- Paged variants allocate tensors of >= 1e5 elements with cudaMallocManaged: same bytes, but
  invisible to torch's allocator and evictable to host under pressure; we count them on the GPU
  (the worst case, and what happens when nothing else competes).
Measured (calibration, 8-bit, r=16): 29-93 MiB for 11-42 M LoRA parameters = 2.03 B/param plus
about 7 MiB of per-step bookkeeping, ``STATE_OVERHEAD_BYTES``.
"""

from __future__ import annotations

from ..units import MIB

OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "adamw_torch", "paged_adamw_32bit")
MIN_8BIT_SIZE = 4096
BLOCKWISE_8BIT_BLOCK = 256
STATE_OVERHEAD_BYTES = 8 * MIB  # quantisation maps, step counters, per-tensor bookkeeping


def is_paged(optim: str) -> bool:
    return optim.startswith("paged_")


def optimizer_state_bytes_per_tensor(numel: int, optim: str) -> float:
    """Adam state bytes for one trainable tensor of ``numel`` elements."""
    if optim in ("adamw_8bit", "paged_adamw_8bit"):
        if numel < MIN_8BIT_SIZE:
            return 8.0 * numel
        return 2.0 * numel + 8.0 * -(-numel // BLOCKWISE_8BIT_BLOCK)
    if optim in ("adamw_torch", "paged_adamw_32bit"):
        return 8.0 * numel
    raise ValueError(f"unknown optimizer {optim!r}")


def optimizer_state_bytes(tensors: list[tuple[int, int]], optim: str) -> int:
    """Total optimizer state for ``tensors`` given as (numel, copies) pairs."""
    total = sum(optimizer_state_bytes_per_tensor(n, optim) * c for n, c in tensors)
    return int(total) + STATE_OVERHEAD_BYTES
