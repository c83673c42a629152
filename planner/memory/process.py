"""Non-PyTorch memory of the trainer process: what cudaMemGetInfo counts that the caching
allocator does not (CUDA context, loaded kernel modules, cuBLAS/cuBLASLt handles, NCCL).

Source: data/calibration/h100-trl1.16-train.jsonl (H100, torch 2.11, CUDA 13.0). The bare
context after ``torch.cuda.init()`` is 527 MiB (``used_mib_at_init``); once a model has run a
training step (kernel modules loaded lazily for SDPA, cuBLASLt, bitsandbytes) the process holds
771-787 MiB outside the allocator (``device_used_mib_after_load - reserved_mib_after_load`` of
every model measured after the first). A fresh process's first load shows 619 MiB, and grows to
the same ~770 MiB during its first step (``device_used_mib_end``).
"""

from __future__ import annotations

from ..specs.units import MIB

CUDA_CONTEXT_BYTES = 527 * MIB  # bare context, H100 / CUDA 13 (calibration env row)
KERNEL_MODULES_BYTES = 253 * MIB  # lazily loaded kernels + library handles after one step
NCCL_BUFFER_BYTES_PER_RANK = 512 * MIB  # communicators in multi-GPU runs (NCCL default buffers)
# cuBLAS / cuBLASLt workspaces that PyTorch allocates *through the caching allocator* on the first
# matmul and keeps: every model measured after the first shows 66 MiB allocated before its first
# step beyond weights + adapters (calibration ``before_mib - weights_mib - adapter_mib``).
CUBLAS_WORKSPACE_BYTES = 66 * MIB


def non_torch_bytes(world_size: int = 1) -> int:
    """Device memory of the trainer process outside PyTorch's caching allocator.

    CUDA context plus kernel modules; with ``world_size > 1`` NCCL communicator buffers too.
    """
    nccl = NCCL_BUFFER_BYTES_PER_RANK if world_size > 1 else 0
    return CUDA_CONTEXT_BYTES + KERNEL_MODULES_BYTES + nccl


def cublas_workspace_bytes() -> int:
    """Allocator-visible cuBLAS/cuBLASLt workspaces, alive from the first matmul on."""
    return CUBLAS_WORKSPACE_BYTES
