"""Optimizer state and the optimizer step's temporaries, per optimizer.

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


# How each optimizer's ``step()`` runs (what it allocates beyond parameters, gradients and state):
# ``foreach`` / ``forloop`` / ``fused`` are torch.optim.AdamW's three implementations (torch 2.13
# torch/optim/adam.py: ``_multi_tensor_adam`` :553, ``_single_tensor_adam`` :347, ``_fused_adam`` :802),
# ``bnb`` bitsandbytes' per-tensor in-place kernels. transformers maps ``optim="adamw_torch"`` to
# ``torch.optim.AdamW`` with neither ``foreach`` nor ``fused`` (5.24.0 trainer_optimizer.py:201-208;
# 4.57.3 trainer.py:1500-1506) and torch then takes foreach for CUDA tensors
# (torch/optim/adam.py:936-940, optimizer.py:161-186 ``_default_to_fused_or_foreach``); ``adamw_torch_fused`` passes
# ``fused=True``. ``adamw_8bit`` / ``paged_adamw_8bit`` / ``paged_adamw_32bit`` go to bitsandbytes' ``AdamW``
# with ``optim_bits`` 8 when the name has "8bit" (else 32) and ``is_paged`` when it has "paged"
# (trainer_optimizer.py:246-289). No ``optim=`` string selects the for-loop: ``adamw_torch_forloop`` is this module's
# name for ``AdamW(..., foreach=False)`` passed through ``GRPOTrainer(optimizers=...)``.
STEP_IMPLEMENTATION = {"adamw_torch": "foreach", "adamw_torch_fused": "fused", "adamw_torch_forloop": "forloop",
                       "adamw_8bit": "bnb", "paged_adamw_8bit": "bnb", "paged_adamw_32bit": "bnb"}


def step_implementation(optim: str) -> str:
    """``foreach``, ``forloop``, ``fused`` or ``bnb``: how ``optim``'s step runs (STEP_IMPLEMENTATION)."""
    try:
        return STEP_IMPLEMENTATION[optim]
    except KeyError:
        raise ValueError(f"unknown optimizer {optim!r}") from None


def optimizer_step_transient_bytes(trainable_params: int, optim: str, param_bytes: int,
                                   largest_tensor_numel: int = 0) -> int:
    """Bytes the optimizer's ``step()`` allocates on top of parameters, gradients and state.

    - foreach (``adamw_torch``): ``_multi_tensor_adam`` groups the tensors by device and dtype
      (``_group_tensors_by_device_and_dtype``, adam.py:626) and, per group, computes
      ``exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs)`` (adam.py:762, the
      non-capturable branch) for every tensor of the group at once before ``_foreach_addcdiv_``:
      one temporary per parameter, in the state's dtype (the parameter's). ``_foreach_lerp_``,
      ``_foreach_mul_``, ``_foreach_addcmul_`` and the weight decay work in place; ``_foreach_neg``
      of the gradients only with ``maximize`` (off). One dtype on one device (every setup here) is
      one group: ``param_bytes`` per trainable parameter. (The Trainer's no-decay group of norms and
      biases is stepped after the decay group has freed its temporaries: counting every parameter is
      the safe side by well under 1%.)
    - for-loop (``adamw_torch_forloop``): ``_single_tensor_adam`` per tensor
      ``denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)`` (adam.py:544): the ``sqrt``
      and the quotient coexist for a moment, two copies of the tensor being stepped, freed before
      the next; so twice the largest trainable tensor (``largest_tensor_numel``).
    - fused (``adamw_torch_fused``): ``torch._fused_adamw_`` updates every tensor in place in one
      kernel (adam.py:877-895); only the 0-d step counters: 0.
    - bitsandbytes (``adamw_8bit``, ``paged_adamw_8bit``, ``paged_adamw_32bit``): ``Optimizer8bit.step``
      calls ``update_step`` tensor by tensor (0.49.0 bitsandbytes/optim/optimizer.py:281-291), which
      runs ``F.optimizer_update_8bit_blockwise`` / ``F.optimizer_update_32bit`` in place on the
      states (:496-600; ``.contiguous()`` of a contiguous tensor is itself): 0. The paged variants'
      states of >= 1e5 elements live in CUDA unified memory (``get_state_buffer`` -> ``F.get_paged``,
      ``cget_managed_ptr``, :326-334; functional.py:134-142), prefetched to the GPU tensor by tensor
      before its update (``prefetch_state``, :336-344): not in torch's allocator, and evictable to
      the host when the GPU runs short. The planner counts them on the device at every moment (what
      happens when nothing competes for the memory), so paging is a reserve of safety, not a saving.
    """
    kind = step_implementation(optim)
    if kind == "foreach":
        return trainable_params * param_bytes
    if kind == "forloop":
        return 2 * largest_tensor_numel * param_bytes
    return 0


# The caching allocator's segment rules (c10/cuda/CUDACachingAllocator.cpp): requests up to 1 MiB come from
# 2 MiB small-pool segments, requests under 10 MiB share 20 MiB segments, larger ones get a segment of their
# own rounded up to 2 MiB (with expandable segments: 2 MiB pages, the same rounding).
SMALL_SEGMENT_BYTES = 2 * MIB
MID_SEGMENT_BYTES = 20 * MIB
LARGE_ROUNDING_BYTES = 2 * MIB
SMALL_REQUEST_BYTES = 1 * MIB


def step_temporary_tensors(tensors: list[tuple[int, int]], optim: str, param_bytes: int) -> int:
    """How many of the step's temporaries leave the small pool (over 1 MiB): one per such trainable
    tensor for foreach, the two of the largest for the for-loop, none for fused and bitsandbytes."""
    kind = step_implementation(optim)
    large = sum(c for n, c in tensors if n * param_bytes > SMALL_REQUEST_BYTES)
    if kind == "foreach":
        return large
    if kind == "forloop":
        return 2 if large else 0
    return 0


def step_reserve_bound_bytes(large_temporaries: int) -> int:
    """What the allocator can hold beyond the step's live tensors, by its segment rules: where a
    temporary does not fit in a block the backward left cached it gets a segment of its own, at most
    2 MiB of rounding each, plus one partly used mid-size and one partly used small segment."""
    return large_temporaries * LARGE_ROUNDING_BYTES + MID_SEGMENT_BYTES + SMALL_SEGMENT_BYTES


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
