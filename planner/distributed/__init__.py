"""Beyond one GPU: per-rank memory under DDP, DeepSpeed ZeRO-1/2/3 and FSDP, vLLM colocated with
tensor parallelism or served by ``trl vllm-serve`` on GPUs of its own, and the layout solver.

    dp = plan_distributed("Qwen/Qwen2.5-32B-Instruct", "H100-80GB", num_gpus=8)
    dp.topology          # here: DDP, `trl vllm-serve` on GPUs 0-3 (TP 4), 4 training ranks
    dp.config            # GRPOConfig keyword arguments
    print(render(dp))    # per-rank memory, phases, the layouts compared and why
    planner.emit.write_configs(dp, "run/")   # grpo.yaml, accelerate.yaml, deepspeed.json, *.sh

We plan runs and write the configs the engines read; nothing here starts a process.

**Per-rank memory** (``rank_trainer_memory``). The single-process trainer terms
(``planner.memory.trainer``) are computed once and sharded over the data-parallel world ``N``
(the training GPUs) by one pure function per term:

=================  =====  =====  =====  ===========  =========
term               DDP    ZeRO1  ZeRO2  ZeRO3         FSDP
=================  =====  =====  =====  ===========  =========
weights            1      1      1      1/N + small   1/N
optimizer state    1      1/N    1/N    1/N           1/N
fp32 master        -      1/N    1/N    1/N           -
gradients          1      1      1/N    1/N           1/N
extra              DDP    reduce bucket  bucket +     root unit +
                   buckets               2 x layer    2 x layer
=================  =====  =====  =====  ===========  =========

Sources: Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter
Models" (SC'20) §5 (P_os, P_os+g, P_os+g+p); DeepSpeed 0.19.8
``estimate_zero2_model_states_mem_needs`` (runtime/zero/stage_1_and_2.py: GPU = 2P + 18P/N with
"2 = params_16bit, 18 = 2_grads_16bit + 4_grads_32bit + 4_params_32bit + 8_optimizer_states")
and ``estimate_zero3_model_states_mem_needs`` (runtime/zero/stage3.py: GPU = 4 x largest_layer
+ 18P/N); FSDP ``FULL_SHARD`` is ZeRO-3 (PyTorch FSDP docs: "FULL_SHARD ... similar to ZeRO-3").
DeepSpeed runs the module in bf16 (``bf16.enabled``) and keeps the fp32 master copy and fp32
gradient partition in its ZeRO optimizer (ZeRO-3 also keeps its 16-bit gradient partition
resident, ``grad_partitions_flat_buffer``); DDP and FSDP train the loaded dtype (LoRA adapters in
fp32, as on one GPU). Activations, the log-prob head and the allocator reserve are per rank and
unchanged: data parallelism splits the batch, not the sequence.

**Weight sync** (TRL 1.16 ``trl/generation/vllm_generation.py`` ``_iter_named_params``): with
PEFT under ZeRO-3, ``gather_params(list(model.parameters()))`` gathers the *whole* model on every
rank at once before ``merge_adapter()``: a full-model spike per GPU in the trainer's dtype, its
own phase here. Without PEFT, ZeRO-3 gathers one parameter at a time; FSDP2 calls
``full_tensor()`` per parameter.

**vLLM.** Colocated: every TP group of training ranks runs one engine; each rank holds 1/TP of
its weights and KV cache (``planner.vllm.vllm_capacity(tensor_parallel_size=TP)``, including the
~1.5 GiB of NCCL/custom all-reduce buffers per GPU at TP > 1, docs/vllm-memory.md §8). Server mode:
training ranks hold no vLLM memory; the server GPUs run ``trl vllm-serve`` (trl 1.16
``trl/scripts/vllm_serve.py``: defaults ``--gpu-memory-utilization 0.9``, ``--tensor-parallel-size 1``,
``--data-parallel-size 1``, ``--port 8000``; it execs ``vllm serve``, so vLLM's
``OPENAI_API_SERVER`` batch defaults apply) with its own utilisation, TP and DP. Rank 0 also
holds the NCCL communicator to the server for weight transfer.

``estimate_distributed`` evaluates one fixed setup the same way (``plan estimate --num-gpus``).

**The solver** (``plan_distributed``) uses the single-GPU solver's objective, margin and
helpers (``planner.solver``: ``OBJECTIVE``, the completion-length ladder, the utilisation grid,
the target checks, TRL's group size 8 first and another only when 8 fits nowhere). Across
layouts it maximises, in order: the completion length; the completions per optimisation step
generated in one wave (global: all engines together; several waves only when not even that
fits, then the fewest); then the lowest-communication engine (DDP < ZeRO-1 < ZeRO-2 < ZeRO-3; so a higher stage is chosen
only when the lower ones fit fewer completions or none); the largest micro-batch; the smallest
vLLM TP; no sleep mode; the highest utilisation. FSDP is planned only when asked for
(``engine="fsdp"``): TRL marks PEFT weight sync under FSDP as untested.

**Where things live** (``planner.distributed.<module>``; every public name is also importable from
``planner.distributed`` itself):

- ``topology``: engine and layout names, DeepSpeed's and ``trl vllm-serve``'s defaults,
  ``Topology``, ``resolve_gpus``.
- ``sharding``: the model structure the sharded terms need, one pure function per per-rank term
  (the table above), ``RankMemory`` / ``rank_trainer_memory``, a server GPU's footprint.
- ``checks``: multi-GPU pitfalls (``tp_problem``, ``topology_checks``).
- ``engines``: deepspeed.json and the accelerate config (``deepspeed_settings``,
  ``accelerate_settings``).

The search over layouts is the one solver (``planner.solver``); ``planner.plan(..., num_gpus=N)``
and ``planner.estimate_layout`` are the entry points. Lower layers never import higher ones:
topology <- sharding <- checks, engines <- planner.solver.
"""

from __future__ import annotations

from .checks import topology_checks, tp_problem
from .engines import accelerate_settings, deepspeed_settings
from .sharding import (
    RankMemory,
    ddp_bucket_bytes,
    decoder_layer_params,
    fp32_gradient_partition_bytes,
    gather_working_set_bytes,
    gradients_per_rank_bytes,
    largest_parameter_params,
    master_weights_per_rank_bytes,
    nccl_bytes_per_rank,
    optimizer_state_per_rank_bytes,
    rank_trainer_memory,
    root_unit_params,
    server_gpu_components,
    weight_sync_transient,
    weights_per_rank_bytes,
    zero3_persistent_params,
    zero_bucket_bytes,
)
from .topology import (
    AUTO_ENGINES,
    DEEPSPEED_DEFAULTS,
    DEEPSPEED_ENGINES,
    ENGINE_LABELS,
    ENGINES,
    LAYOUTS,
    SERVER_UTILIZATION_RANGE,
    SHARDED_PARAM_ENGINES,
    TRL_SERVE_DEFAULT_HOST,
    TRL_SERVE_DEFAULT_PORT,
    TRL_SERVE_DEFAULT_UTILIZATION,
    VLLM_MODES,
    ZERO3_MAX_LIVE_PARAMETERS,
    ZERO3_MAX_REUSE_DISTANCE,
    ZERO3_PARAM_PERSISTENCE_THRESHOLD,
    ZERO3_PREFETCH_BUCKET_SIZE,
    ZERO_ALLGATHER_BUCKET_SIZE,
    ZERO_CONTIGUOUS_GRADIENTS,
    ZERO_OVERLAP_COMM,
    ZERO_REDUCE_BUCKET_SIZE,
    Topology,
    resolve_gpus,
)

__all__ = [
    # topology
    "ENGINES", "AUTO_ENGINES", "DEEPSPEED_ENGINES", "SHARDED_PARAM_ENGINES", "VLLM_MODES", "LAYOUTS",
    "ENGINE_LABELS", "ZERO_REDUCE_BUCKET_SIZE", "ZERO_ALLGATHER_BUCKET_SIZE", "ZERO_OVERLAP_COMM",
    "ZERO_CONTIGUOUS_GRADIENTS", "ZERO3_PREFETCH_BUCKET_SIZE", "ZERO3_PARAM_PERSISTENCE_THRESHOLD",
    "ZERO3_MAX_LIVE_PARAMETERS", "ZERO3_MAX_REUSE_DISTANCE", "DEEPSPEED_DEFAULTS", "TRL_SERVE_DEFAULT_UTILIZATION",
    "TRL_SERVE_DEFAULT_HOST", "TRL_SERVE_DEFAULT_PORT", "SERVER_UTILIZATION_RANGE", "Topology", "resolve_gpus",
    # sharding
    "decoder_layer_params", "root_unit_params", "largest_parameter_params",
    "zero3_persistent_params", "weights_per_rank_bytes", "optimizer_state_per_rank_bytes",
    "gradients_per_rank_bytes", "master_weights_per_rank_bytes", "fp32_gradient_partition_bytes",
    "ddp_bucket_bytes", "zero_bucket_bytes", "gather_working_set_bytes", "nccl_bytes_per_rank",
    "weight_sync_transient", "RankMemory", "rank_trainer_memory", "server_gpu_components",
    # checks
    "tp_problem", "topology_checks",
    # engines
    "deepspeed_settings", "accelerate_settings",
]
