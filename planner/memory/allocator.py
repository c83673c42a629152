"""The caching allocator's reserve: device memory PyTorch holds in segments beyond what live
tensors use, at the step's peak (``max_memory_reserved - max_memory_allocated``).

With the default allocator, blocks freed by one layer's recomputation cannot always be reused for
the next, differently sized, allocations, so the reserve grows with the per-step transient bytes
(the activations and the head), not with the weights. Measured on the calibration rows (H100):
150-1,600 MiB, 13-35% of the transient bytes with gradient checkpointing and 1-5% without
(where the saved activations are long-lived and reused in order). ``expandable_segments:True``
maps segments in 2 MiB pages and lets them grow in place, so fragmentation mostly disappears;
we keep a small page-granularity allowance (PyTorch docs, "Optimizing memory usage with
PYTORCH_CUDA_ALLOC_CONF"). Fractions fitted by benchmarks/fit_trainer_coefficients.py.
"""

from __future__ import annotations

import os

from ..units import MIB

RESERVE_BASE_BYTES = 314 * MIB  # fitted intercept (small-block pool, rounding, first-step leftovers)
RESERVE_BASE_BYTES_EXPANDABLE = 64 * MIB  # 2 MiB page granularity of the mapped segments
RESERVE_FRACTION_CHECKPOINTED = 0.22
RESERVE_FRACTION_NOT_CHECKPOINTED = 0.02
RESERVE_FRACTION_EXPANDABLE = 0.02


def expandable_segments_from_env(environ=None) -> bool:
    """Whether ``PYTORCH_CUDA_ALLOC_CONF`` (or ``PYTORCH_ALLOC_CONF``) enables expandable segments."""
    env = os.environ if environ is None else environ
    conf = env.get("PYTORCH_CUDA_ALLOC_CONF", "") + "," + env.get("PYTORCH_ALLOC_CONF", "")
    return "expandable_segments:true" in conf.replace(" ", "").lower()


def allocator_reserve_bytes(transient_bytes: int, gradient_checkpointing: bool,
                            expandable_segments: bool) -> int:
    """Reserved-but-unallocated bytes at the peak, from the step's transient (activation) bytes."""
    if expandable_segments:
        return int(RESERVE_BASE_BYTES_EXPANDABLE + RESERVE_FRACTION_EXPANDABLE * transient_bytes)
    if gradient_checkpointing:
        frac = RESERVE_FRACTION_CHECKPOINTED
    else:
        frac = RESERVE_FRACTION_NOT_CHECKPOINTED
    return int(RESERVE_BASE_BYTES + frac * transient_bytes)
