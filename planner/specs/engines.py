"""The engine settings emit.py writes: deepspeed.json and the accelerate config file."""

from __future__ import annotations

from .topology import (
    DEEPSPEED_ENGINES,
    ZERO3_MAX_LIVE_PARAMETERS,
    ZERO3_MAX_REUSE_DISTANCE,
    ZERO3_PARAM_PERSISTENCE_THRESHOLD,
    ZERO3_PREFETCH_BUCKET_SIZE,
    ZERO3_SUB_GROUP_SIZE,
    ZERO_ALLGATHER_BUCKET_SIZE,
    ZERO_CONTIGUOUS_GRADIENTS,
    ZERO_OVERLAP_COMM,
    ZERO_REDUCE_BUCKET_SIZE,
    Topology,
)

# -- engine settings (emit.py writes them) -----------------------------------------------------

def deepspeed_settings(topology: Topology, config: dict) -> dict | None:
    """deepspeed.json for a ZeRO stage: offload off, bf16 as in the GRPOConfig, batch sizes
    "auto" (transformers' HfTrainerDeepSpeedConfig fills them from the GRPOConfig), and every
    bucket size stated explicitly at DeepSpeed's default (``DEEPSPEED_DEFAULTS``)."""
    if topology.engine not in DEEPSPEED_ENGINES or topology.world_size == 1:
        return None
    stage = int(topology.engine[-1])
    zero = {"stage": stage, "offload_optimizer": {"device": "none"},
            "overlap_comm": ZERO_OVERLAP_COMM, "contiguous_gradients": ZERO_CONTIGUOUS_GRADIENTS,
            "reduce_scatter": True, "reduce_bucket_size": ZERO_REDUCE_BUCKET_SIZE}
    if stage < 3:
        zero["allgather_partitions"] = True
        zero["allgather_bucket_size"] = ZERO_ALLGATHER_BUCKET_SIZE
    else:
        zero.update({"offload_param": {"device": "none"},
                     "stage3_prefetch_bucket_size": ZERO3_PREFETCH_BUCKET_SIZE,
                     "stage3_param_persistence_threshold": ZERO3_PARAM_PERSISTENCE_THRESHOLD,
                     "stage3_max_live_parameters": ZERO3_MAX_LIVE_PARAMETERS,
                     "stage3_max_reuse_distance": ZERO3_MAX_REUSE_DISTANCE, "sub_group_size": ZERO3_SUB_GROUP_SIZE,
                     "stage3_gather_16bit_weights_on_model_save": True})
    bf16 = bool(config.get("bf16", True))
    return {
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


def accelerate_settings(topology: Topology, config: dict) -> dict:
    """The accelerate config file (``accelerate launch --config_file``), without the DeepSpeed JSON
    path, which emit.py fills in. With a DeepSpeed config file, ``mixed_precision`` must *not*
    be set here: accelerate 1.15 ``DeepSpeedPlugin._deepspeed_config_checks`` raises when it is
    (bf16 lives in deepspeed.json)."""
    N = topology.world_size
    d = {"compute_environment": "LOCAL_MACHINE", "debug": False}
    mixed = "bf16" if config.get("bf16") else "no"
    if N == 1:
        d.update(distributed_type="NO", mixed_precision=mixed)
    elif topology.engine in DEEPSPEED_ENGINES:
        ds = {"deepspeed_config_file": "deepspeed.json", "zero3_init_flag": topology.engine == "zero3"}
        if topology.training_nodes > 1:
            ds["deepspeed_multinode_launcher"] = "standard"
        d.update(distributed_type="DEEPSPEED", deepspeed_config=ds)
    elif topology.engine == "fsdp":
        d.update(distributed_type="FSDP", mixed_precision=mixed, fsdp_config={
            "fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True, "fsdp_offload_params": False,
            "fsdp_state_dict_type": "SHARDED_STATE_DICT", "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_activation_checkpointing": False})
    else:
        d.update(distributed_type="MULTI_GPU", mixed_precision=mixed)
    d.update(num_machines=topology.training_nodes, num_processes=N, machine_rank=0, gpu_ids="all",
             main_training_function="main", rdzv_backend="static", same_network=True, use_cpu=False)
    return d
