"""The caching allocator's reserve: device memory PyTorch holds in segments beyond what live
tensors use, at the step's peak (``max_memory_reserved - max_memory_allocated``).

With the default allocator, blocks freed by one layer's recomputation cannot always be reused for
the next, differently sized, allocations, so the reserve grows with the per-step transient bytes
(the activations and the head), not with the weights. Measured on the calibration rows (H100):
150-1,600 MiB, 13-35% of the transient bytes with gradient checkpointing and 1-5% without
(where the saved activations are long-lived and reused in order). ``expandable_segments:True``
maps one segment per pool in 2 MiB (small) / 20 MiB (large) pages and lets it grow in place instead of
creating one segment per large request (PyTorch docs, "Optimizing memory usage with PYTORCH_CUDA_ALLOC_CONF"),
which removes the per-segment rounding but not the stranding between long-lived blocks inside the segment
(its constants below). Fractions and the intercept were
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
# Expandable segments (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True): one segment per pool that
# grows in 20 MiB (large pool) / 2 MiB (small pool) pages, blocks split down to 512 bytes, freed memory
# mapped until empty_cache (planner/profiler/allocator_sim.py replays these rules). What goes is the
# default's intercept (a segment per large request, 20 MiB segments of 1-10 MiB requests, the unsplittable
# 1 MiB remainders): RESERVE_BASE_BYTES_EXPANDABLE. What stays is the stranding inside the one segment:
# a free hole between long-lived blocks serves only the requests that fit it. The fractions are derived
# from the rules, not from measurements of that setting: every calibration row's traced step replayed
# with them (benchmarks/allocator_replay_expandable.py), (replayed reserve - 64 MiB) / recycled bytes over
# the steps after each family's first, the largest rounded up to 0.01 (safety first): checkpointed LoRA
# and QLoRA 0.085-0.199 (n 32) -> 0.20; not checkpointed -0.031-0.021 (n 35) -> 0.03. Full fine-tuning
# keeps the default's 0.30: the trace lacks the 8-bit optimizer's step, whose buffers are most of the
# full rows' measured reserve, so the replay cannot bound it. Scored on the 10 steps measured with the
# setting (benchmarks/results/h100_heldout/expandable.json, Qwen2.5-1.5B LoRA): the replay reproduces their
# reserve within 18 MiB after the first step; the step model's errors are benchmarks/results/reserve_by_moment.txt.
RESERVE_FRACTION_CHECKPOINTED_EXPANDABLE = 0.20
RESERVE_FRACTION_NOT_CHECKPOINTED_EXPANDABLE = 0.03
# A run of varied completion lengths with expandable segments: not measured; half the default's run
# fractions (the setting exists for changing sizes: a longer request grows the segment's free end in place
# instead of mapping a segment beside the ones cut for shorter lengths).
EXPANDABLE_RUN_FRACTION_FACTOR = 0.5


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


def allocator_reserve_bytes(transient_bytes: int, gradient_checkpointing: bool,
                            expandable_segments: bool, finetune: str = "lora") -> int:
    """Reserved-but-unallocated bytes at the peak, from the step's transient (activation) bytes:
    ``base + fraction x recycled``, the default allocator's fitted constants or expandable segments'
    derived ones (above)."""
    full_gc = gradient_checkpointing and finetune == "full"
    if expandable_segments:
        frac = (RESERVE_FRACTION_CHECKPOINTED_FULL if full_gc else RESERVE_FRACTION_CHECKPOINTED_EXPANDABLE
                if gradient_checkpointing else RESERVE_FRACTION_NOT_CHECKPOINTED_EXPANDABLE)
        return int(RESERVE_BASE_BYTES_EXPANDABLE + frac * transient_bytes)
    frac = (RESERVE_FRACTION_CHECKPOINTED_FULL if full_gc else RESERVE_FRACTION_CHECKPOINTED
            if gradient_checkpointing else RESERVE_FRACTION_NOT_CHECKPOINTED)
    return int(RESERVE_BASE_BYTES + frac * transient_bytes)


def run_reserve_bytes(recycled_bytes: int, gradient_checkpointing: bool, expandable_segments: bool) -> int:
    """Reserved-but-unallocated bytes at a run's longest micro-batch when completion lengths vary
    from micro-batch to micro-batch (measured fractions above; no intercept was needed)."""
    frac = RUN_RESERVE_FRACTION_CHECKPOINTED if gradient_checkpointing else RUN_RESERVE_FRACTION_NOT_CHECKPOINTED
    if expandable_segments:
        return int(RESERVE_BASE_BYTES_EXPANDABLE + EXPANDABLE_RUN_FRACTION_FACTOR * frac * recycled_bytes)
    return int(frac * recycled_bytes)
