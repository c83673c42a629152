"""The caching allocator's reserve: device memory PyTorch holds in segments beyond what live
tensors use, at the step's peak (``max_memory_reserved - max_memory_allocated``).

With the default allocator, blocks freed by one layer's recomputation cannot always be reused for
the next, differently sized, allocations, so the reserve grows with the per-step transient bytes
(the activations and the head), not with the weights. Measured on the calibration rows (H100):
150-1,600 MiB, 13-35% of the transient bytes with gradient checkpointing and 1-5% without
(where the saved activations are long-lived and reused in order). ``expandable_segments:True``
maps segments in 2 MiB pages and lets them grow in place instead of creating one segment per
large request (PyTorch docs, "Optimizing memory usage with PYTORCH_CUDA_ALLOC_CONF"), which removes
the per-segment rounding and most cross-segment fragmentation. Fractions and the intercept were
fitted by benchmarks/fit_trainer_coefficients.py; the intercept is set so that no measured row is
under-predicted by more than 3% (safety first). Fit set: the 80 ok rows of data/calibration (fit-set
error: max |error| 20.5%, worst under -2.99%). Held out (benchmarks/heldout_fits.py, refitted with one
model family left out, that family's LoRA rows predicted): worst under -3.75%, median |error| 1.95% over
70 rows. 0.26 sits at the top of its grid; on a wider grid the fit gives 332 MiB / 0.48 / 0.34 (full),
whose held-out error is no better (worst under -3.75%, median |error| 2.25%), so the shipped values stay.
"""

from __future__ import annotations

import os

from ..specs.units import MIB

RESERVE_BASE_BYTES = 372 * MIB  # fitted intercept (small-block pool, rounding, first-step leftovers)
RESERVE_BASE_BYTES_EXPANDABLE = 64 * MIB  # 2 MiB page granularity of the mapped segments
RESERVE_FRACTION_CHECKPOINTED = 0.26
RESERVE_FRACTION_NOT_CHECKPOINTED = 0.01
# Full fine-tuning allocates every parameter's gradient during backward, between the recomputed
# layers' transient tensors, and those blocks stay: more of the freed space is stranded in segments
# that a persistent gradient pins. Fitted the same safety-first way on the full fine-tuning rows
# (one model, Qwen2.5-0.5B); on held-out Qwen3-1.7B full fine-tuning it over-predicts by 0.2-6%.
RESERVE_FRACTION_CHECKPOINTED_FULL = 0.30
# Expandable segments: not measured yet (no rows in data/calibration use it). Blocks inside an
# expandable segment can still fragment, so we keep half of the default fractions as a conservative
# allowance rather than assuming fragmentation disappears; `plan profile --gpu auto` calibrates it.
EXPANDABLE_FRACTION_FACTOR = 0.5


# A run, not one step: GRPO completions differ in length from micro-batch to micro-batch, and the
# pool keeps the segments cut for earlier lengths, so a long micro-batch after shorter ones finds its
# sizes split across segments and maps new ones. Measured as the reserve at a run's longest
# micro-batch over 16 micro-steps of random completion length (4 optimizer steps x 4 accumulation,
# the cache emptied once per optimizer step as TRL does around generation; 6 runs on an H100,
# benchmarks/results/h100_run_peak): 0.30-0.54 of the recycled bytes with checkpointing, 0.10
# without. The fractions are the largest measured ratio, rounded up (safety first).
RUN_RESERVE_FRACTION_CHECKPOINTED = 0.55
RUN_RESERVE_FRACTION_NOT_CHECKPOINTED = 0.10


def expandable_segments_from_env(environ=None) -> bool:
    """Whether ``PYTORCH_CUDA_ALLOC_CONF`` (or ``PYTORCH_ALLOC_CONF``) enables expandable segments."""
    env = os.environ if environ is None else environ
    conf = env.get("PYTORCH_CUDA_ALLOC_CONF", "") + "," + env.get("PYTORCH_ALLOC_CONF", "")
    return "expandable_segments:true" in conf.replace(" ", "").lower()


def _reserve_bytes(base_bytes: int, fraction: float, recycled_bytes: int, expandable_segments: bool) -> int:
    """``base + fraction x recycled``; with expandable segments, the page-granularity base and half
    the fraction (not measured; see EXPANDABLE_FRACTION_FACTOR)."""
    if expandable_segments:
        return int(RESERVE_BASE_BYTES_EXPANDABLE + EXPANDABLE_FRACTION_FACTOR * fraction * recycled_bytes)
    return int(base_bytes + fraction * recycled_bytes)


def allocator_reserve_bytes(transient_bytes: int, gradient_checkpointing: bool,
                            expandable_segments: bool, finetune: str = "lora") -> int:
    """Reserved-but-unallocated bytes at the peak, from the step's transient (activation) bytes."""
    frac = RESERVE_FRACTION_CHECKPOINTED if gradient_checkpointing else RESERVE_FRACTION_NOT_CHECKPOINTED
    if gradient_checkpointing and finetune == "full":
        frac = RESERVE_FRACTION_CHECKPOINTED_FULL
    return _reserve_bytes(RESERVE_BASE_BYTES, frac, transient_bytes, expandable_segments)


def run_reserve_bytes(recycled_bytes: int, gradient_checkpointing: bool, expandable_segments: bool) -> int:
    """Reserved-but-unallocated bytes at a run's longest micro-batch when completion lengths vary
    from micro-batch to micro-batch (measured fractions above; no intercept was needed)."""
    frac = RUN_RESERVE_FRACTION_CHECKPOINTED if gradient_checkpointing else RUN_RESERVE_FRACTION_NOT_CHECKPOINTED
    return _reserve_bytes(0, frac, recycled_bytes, expandable_segments)
