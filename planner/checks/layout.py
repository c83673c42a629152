"""Multi-GPU pitfalls as ``planner.checks.preflight.Check``: TP vs heads (``tp_problem``) and every rule
``topology_checks`` reports."""

from __future__ import annotations

from ..errors import InvalidSetupError
from ..memory.sharding import nccl_bytes_per_rank
from ..memory.vllm import _check_tp
from ..specs.gpu import resolve_gpu
from ..specs.model import ModelSpec
from ..specs.topology import Topology
from ..specs.units import GIB
from .preflight import Check

# -- checks ----------------------------------------------------------------------------------

def _check(id_: str, severity: str, message: str, fix: str = "") -> Check:
    return Check(id_, severity, message, fix)


def tp_problem(spec: ModelSpec, tp: int) -> str | None:
    """Why vLLM refuses tensor-parallel size ``tp`` for ``spec`` (heads / KV heads), or None."""
    try:
        _check_tp(spec, tp)
    except InvalidSetupError as e:
        return str(e)
    return None


def topology_checks(spec: ModelSpec, topology: Topology, gpus=(), config: dict | None = None) -> list:
    """Multi-GPU pitfalls as ``planner.checks.preflight.Check``: GPU sizes, TP vs heads and world size, TP
    groups across nodes, server/training overlap, server DP for dense models, NCCL memory, the
    generation-batch rule at the real world size, the ZeRO-3 + PEFT sync spike."""
    out = []
    cards = [resolve_gpu(g) for g in gpus] if gpus else []
    sizes = sorted({g.total_bytes for g in cards})
    if len(sizes) > 1:
        small = min(cards, key=lambda g: g.total_bytes)
        big = max(cards, key=lambda g: g.total_bytes)
        out.append(_check("gpu-mixed-sizes", "warning",
                          f"GPUs of different sizes ({', '.join(sorted({g.name for g in cards}))}): planned for the "
                          f"smallest, {small.name} ({small.total_bytes / GIB:.1f} GiB); each {big.name} leaves "
                          f"{(big.total_bytes - small.total_bytes) / GIB:.1f} GiB unused",
                          "use GPUs of one size, or put the vLLM server on the larger ones"))
    tp = topology.vllm_tensor_parallel_size if topology.vllm_mode == "colocate" else topology.server_tensor_parallel_size
    why = tp_problem(spec, tp)
    if why:
        out.append(_check("vllm-tp-heads", "error", why, "pick a TP size that divides the attention heads"))
    elif not spec.is_mla and tp > spec.num_kv_heads:
        out.append(_check("vllm-tp-heads", "warning",
                          f"TP {tp} is larger than {spec.model_id}'s {spec.num_kv_heads} KV heads: vLLM replicates "
                          f"them, so the KV cache per GPU stops shrinking beyond TP {spec.num_kv_heads}",
                          f"prefer TP <= {spec.num_kv_heads}"))
    if topology.vllm_mode == "colocate":
        if topology.world_size % tp:
            # trl 1.16 vllm_generation.py:314-318
            out.append(_check("vllm-tensor-parallel", "error", f"tensor_parallel_size ({tp}) must divide world size "
                              f"({topology.world_size}) evenly.", "set vllm_tensor_parallel_size to a divisor of it"))
        if topology.num_gpus % tp:
            out.append(_check("vllm-tp-nodes", "error", f"TP groups of {tp} ranks would span nodes of "
                              f"{topology.num_gpus} GPUs (ranks are numbered node by node)",
                              f"use a TP size that divides {topology.num_gpus}"))
    else:
        server = set(range(topology.server_gpus))
        train = {int(i) for i in topology.training_devices.split(",")} if topology.num_nodes == 1 else set()
        if server & train:
            out.append(_check("server-gpu-overlap", "error", f"server GPUs {sorted(server & train)} also train",
                              "give the server and the training processes disjoint CUDA_VISIBLE_DEVICES"))
        else:
            where = "node 0" if topology.num_nodes > 1 else f"GPU{'s' if len(server) > 1 else ''} {topology.server_devices}"
            out.append(_check("server-gpu-overlap", "info", f"vLLM server on {where}; training on "
                              + (f"GPUs {topology.training_devices}" if topology.num_nodes == 1
                                 else f"nodes 1-{topology.num_nodes - 1}")))
        if topology.server_data_parallel_size > 1 and not spec.is_moe:
            out.append(_check("server-data-parallel", "error", "trl vllm-serve: data_parallel_size above 1 for "
                              "dense models is not supported and errors out (trl 1.16 vllm_serve.py, vLLM PR #30739)",
                              "use --data-parallel-size 1 and a larger --tensor-parallel-size"))
        if topology.idle_gpus:
            out.append(_check("idle-gpus", "warning", f"{topology.idle_gpus} GPU(s) of the server node stay idle",
                              "use a server TP that fills the node"))
    if topology.world_size > 1 or topology.vllm_mode == "server":
        n = nccl_bytes_per_rank(topology.world_size, topology.vllm_mode)
        out.append(_check("nccl-memory", "info", f"NCCL buffers counted per training rank: {n / GIB:.1f} GiB"
                          + (" (data-parallel group" + (" + weight transfer to the server on rank 0)"
                                                        if topology.vllm_mode == "server" else ")")
                             if n else ""),
                          "NCCL_BUFFSIZE / fewer communicators lower it"))
    if config:
        B = int(config.get("per_device_train_batch_size", 8))
        G = int(config.get("num_generations", 8))
        gbs = config.get("generation_batch_size")
        S = config.get("steps_per_generation") or config.get("gradient_accumulation_steps", 1)
        gbs = int(gbs if gbs is not None else B * topology.world_size * S)
        if gbs % (B * topology.world_size):
            out.append(_check("trl-generation-batch", "error", f"generation_batch_size ({gbs}) must be divisible by "
                              f"the global batch size ({B * topology.world_size}).",
                              "use a multiple of per_device_train_batch_size x world size"))
        elif gbs % G:
            out.append(_check("trl-generation-batch", "error", f"generation_batch_size ({gbs}) must be divisible by "
                              f"num_generations ({G}).", f"make it a multiple of {G}"))
        else:
            out.append(_check("trl-generation-batch", "info", f"generation batch {B} x {gbs // (B * topology.world_size)}"
                              f" x {topology.world_size} ranks = {gbs} completions = {gbs // G} prompts x {G}"))
    if topology.engine == "fsdp":
        out.append(_check("fsdp-peft", "warning", "TRL marks PEFT weight sync under FSDP as untested ('TODO: does "
                          "this work with FSDP?', trl 1.16 vllm_generation.py) and FSDP needs one dtype per wrapped "
                          "unit", "prefer DeepSpeed ZeRO for LoRA runs"))
    return out
