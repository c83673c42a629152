"""Per-rank memory: the model structure the sharded terms need, one pure function per term
(the table in the package docstring), ``RankMemory`` / ``rank_trainer_memory``, and the phases
of a training rank and of a server GPU."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

from ..specs.model import ModelSpec
from ..specs.topology import (
    DEEPSPEED_ENGINES,
    SHARDED_PARAM_ENGINES,
    ZERO3_PARAM_PERSISTENCE_THRESHOLD,
    ZERO3_SUB_GROUP_SIZE,
    ZERO_OVERLAP_COMM,
    ZERO_REDUCE_BUCKET_SIZE,
    Topology,
)
from .lora import lora_params
from .optimizer import STATE_OVERHEAD_BYTES, TORCH_ADAMW, states_at_param_bytes, step_implementation
from .phases import STEP_COMPONENTS, merge_transient_bytes, trainer_blocks, vllm_blocks
from .process import NCCL_BUFFER_BYTES_PER_RANK
from .trainer import StepMoments, TrainerMemory, TrainerSetup, binding_moment, trainer_memory
from .vllm import VllmCapacity
from .weights import DTYPE_BYTES
from .weights import weights_bytes as trainer_weights_bytes

# -- model structure the sharded terms need ----------------------------------------------------

@lru_cache(maxsize=64)
def decoder_layer_params(spec: ModelSpec) -> int:
    """Parameters of the largest decoder layer: attention + (dense MLP or expert block) + norms."""
    attn = dense = moe = 0.0
    for s in spec.linear_shapes():
        per_layer = (s.weight_params + s.bias_params) / s.layers
        if s.group == "attention":
            attn += per_layer
        elif s.group in ("experts", "router") or s.name.startswith("shared_expert"):
            moe += per_layer
        else:
            dense += per_layer
    norms = spec.norms_per_layer * spec.hidden_size + (2 * spec.head_dim if spec.qk_norm else 0)
    mlp = max(dense if spec.num_dense_mlp_layers else 0, moe if spec.moe_layers else 0)
    return int(attn + mlp + norms)


def root_unit_params(spec: ModelSpec) -> int:
    """What FSDP's root unit holds when decoder layers are wrapped: embeddings, LM head, final norm."""
    c = spec.param_counts()
    return c.embeddings + c.lm_head + spec.hidden_size


@lru_cache(maxsize=64)
def largest_parameter_params(spec: ModelSpec) -> int:
    """Elements of the largest single parameter (the embedding or LM head for every shipped model;
    transformers >= 5 stores MoE experts as one fused 3-D parameter per projection)."""
    biggest = spec.vocab_size * spec.hidden_size
    for s in spec.linear_shapes():
        biggest = max(biggest, s.in_features * s.out_features * s.count)
    return biggest


@lru_cache(maxsize=64)
def zero3_persistent_params(spec: ModelSpec, threshold: int = ZERO3_PARAM_PERSISTENCE_THRESHOLD) -> int:
    """Parameters ZeRO-3 keeps whole on every rank: each one with at most ``threshold`` elements
    (``stage3_param_persistence_threshold``; DeepSpeed docs: "Do not partition parameters smaller
    than this threshold"). Norm weights and most biases."""
    n = spec.param_counts().norms if spec.hidden_size <= threshold else 0
    for s in spec.linear_shapes():
        if s.bias and s.out_features <= threshold:
            n += s.bias_params
    return n


# -- per-rank terms: one pure function each -----------------------------------------------------

def _shard(n_bytes: int, world: int) -> int:
    return -(-int(n_bytes) // world)


def weights_per_rank_bytes(weights_bytes: int, engine: str, world: int, persistent_bytes: int = 0) -> int:
    """Model weights on one rank. Replicated under DDP and ZeRO-1/2; partitioned 1/N under ZeRO-3
    (ZeRO paper §5.3, P_os+g+p) and FSDP FULL_SHARD, where ZeRO-3 also keeps its small persistent
    parameters whole (``persistent_bytes``, see ``zero3_persistent_params``)."""
    if engine in SHARDED_PARAM_ENGINES:
        return _shard(weights_bytes, world) + (persistent_bytes if engine == "zero3" else 0)
    return int(weights_bytes)


def optimizer_state_per_rank_bytes(optimizer_state_bytes: int, engine: str, world: int) -> int:
    """Optimizer state on one rank: partitioned 1/N from ZeRO-1 on (ZeRO paper §5.1, P_os) and under
    FSDP (states follow the sharded parameters); the per-tensor bookkeeping
    (``STATE_OVERHEAD_BYTES``) stays whole."""
    if engine == "ddp" or world == 1:
        return int(optimizer_state_bytes)
    states = max(0, int(optimizer_state_bytes) - STATE_OVERHEAD_BYTES)
    return _shard(states, world) + STATE_OVERHEAD_BYTES


def gradients_per_rank_bytes(gradient_bytes: int, engine: str, world: int) -> int:
    """Gradients on one rank: whole under DDP and ZeRO-1 (reduced at the accumulation boundary),
    partitioned 1/N from ZeRO-2 on (ZeRO paper §5.2, P_os+g: each rank keeps the reduced slice it
    owns) and under FSDP (reduce-scatter). Under ZeRO-3 the partition is a resident buffer
    (``rank_trainer_memory`` books it as ``gradient_partition``)."""
    if engine in ("zero2", "zero3", "fsdp"):
        return _shard(gradient_bytes, world)
    return int(gradient_bytes)


def master_weights_per_rank_bytes(trainable_params: int, engine: str, world: int, weights: str = "bf16") -> int:
    """DeepSpeed's fp32 master copy of the trainable parameters, partitioned 1/N (ZeRO-1/2/3).

    DeepSpeed runs the module in bf16 and its ZeRO optimizer owns an fp32 partition of every
    trainable parameter (``single_partition_of_fp32_groups``); DeepSpeed's estimators count it as
    "4_params_32bit" (stage_1_and_2.py, stage3.py). DDP/FSDP train the loaded dtype: no copy."""
    if engine not in DEEPSPEED_ENGINES or weights == "fp32":
        return 0
    return _shard(4 * trainable_params, world)


def fp32_gradient_partition_bytes(trainable_params: int, engine: str, world: int, weights: str = "bf16") -> int:
    """The fp32 gradient partition DeepSpeed builds for the optimizer step ("4_grads_32bit" in
    ``estimate_zero2/3_model_states_mem_needs``): 4 B per trainable parameter, 1/N per rank.
    It exists only at the step, after backward has freed the activations."""
    if engine not in DEEPSPEED_ENGINES or weights == "fp32":
        return 0
    return _shard(4 * trainable_params, world)


def ddp_bucket_bytes(gradient_bytes: int, engine: str, world: int) -> int:
    """DDP's all-reduce buckets: a second copy of every gradient. ``DistributedDataParallel``
    defaults to ``gradient_as_bucket_view=False``; PyTorch's docs for that flag: with True "the
    saved memory size will be equal to the total gradients size". One process: no DDP wrapper."""
    if engine != "ddp" or world == 1:
        return 0
    return int(gradient_bytes)


def zero_bucket_bytes(engine: str, compute_bytes: int = 2, reduce_bucket_size: int = ZERO_REDUCE_BUCKET_SIZE,
                      overlap_comm: bool = ZERO_OVERLAP_COMM) -> int:
    """DeepSpeed's gradient reduce (IPG) buffer: ``reduce_bucket_size`` elements in the gradient
    dtype, allocated whole whatever the model size, two with ``overlap_comm`` (DeepSpeed 0.19.8
    ``setup_buckets`` in stage_1_and_2.py; ``bucket.buffer = torch.empty(reduce_bucket_size)`` in
    stage3.py). Default 5e8 elements x 2 B = 0.93 GiB. ``allgather_bucket_size`` only chunks the
    all-gather into the existing flat parameter buffer: no buffer of its own."""
    if engine not in DEEPSPEED_ENGINES:
        return 0
    return int(reduce_bucket_size) * compute_bytes * (2 if overlap_comm else 1)


def optimizer_step_per_rank_bytes(step_bytes: int, trainable_params: int, engine: str, world: int,
                                  optim: str = "adamw_torch") -> int:
    """The optimizer step's temporaries on one rank (``step_bytes``: the single-process figure,
    planner.memory.optimizer.optimizer_step_transient_bytes; ``adamw_torch``'s foreach ``sqrt`` buffer,
    the for-loop's two copies of the largest tensor).

    DeepSpeed steps the client optimizer on the rank's fp32 master partition, not on the model's
    parameters: ZeRO-1/2 one parameter group at a time, each group one flat fp32 tensor of the
    rank's partition (0.19.8 stage_1_and_2.py ``_optimizer_step``: ``self.optimizer.param_groups =
    [original_param_groups[group_no]]``), ZeRO-3 one sub-group at a time (stage3.py
    ``_optimizer_step(sub_group_id)`` on ``fp32_partitioned_groups_flat[sub_group_id]``), a sub-group
    at most ``sub_group_size`` elements (default 1e9, runtime/zero/config.py). So the buffer is at
    most the rank's partition (1/N of the trainable parameters; the whole partition, the safe side of
    its two parameter groups) in fp32, capped at a sub-group under ZeRO-3. FSDP's optimizer holds the
    rank's shards of the parameters, in their dtype: 1/N of the single-process figure. DDP: all of it.
    The for-loop (``optim`` ``adamw_torch_forloop``) steps the flat partition as one tensor: two
    copies of it under DeepSpeed."""
    if not step_bytes or world == 1 or engine == "ddp":
        return step_bytes
    if engine in DEEPSPEED_ENGINES:
        numel = _shard(trainable_params, world)
        if engine == "zero3":
            numel = min(numel, ZERO3_SUB_GROUP_SIZE)
        return numel * 4 * (2 if step_implementation(optim) == "forloop" else 1)
    return _shard(step_bytes, world)


def gather_working_set_bytes(spec: ModelSpec, engine: str, compute_bytes: int = 2, finetune: str = "lora") -> int:
    """Parameters gathered on one rank while a layer computes (ZeRO-3 / FSDP).

    ZeRO-3 fetches submodule by submodule with prefetch: the largest gather unit (a decoder
    layer, the embedding or the LM head) in the compute dtype, x2 for the unit prefetched next
    (DeepSpeed's estimator counts ``4 x largest_layer`` = its 16-bit parameters and gradients; our
    gradients are counted in the reduce bucket). FSDP2 with decoder-layer wrapping keeps the
    root unit (embeddings, LM head, final norm) unsharded through forward and backward (FSDP2
    ``fully_shard``: the root's ``reshard_after_forward`` is False) plus the current and the
    prefetched layer, and, in full fine-tuning, one layer's unsharded gradient before its
    reduce-scatter."""
    layer = decoder_layer_params(spec)
    if engine == "zero3":
        unit = max(layer, spec.vocab_size * spec.hidden_size)
        return 2 * unit * compute_bytes
    if engine == "fsdp":
        grads = layer * compute_bytes if finetune == "full" else 0
        return (root_unit_params(spec) + 2 * layer) * compute_bytes + grads
    return 0


def nccl_bytes_per_rank(world: int, vllm_mode: str = "colocate") -> int:
    """NCCL communicator buffers on the worst training rank (~0.5 GiB each, planner.memory.process):
    one for the data-parallel group when ``world > 1``, and in server mode one more on rank 0, for
    the weight-transfer group with the server (``VLLMClient.init_communicator``)."""
    n = 1 if world > 1 else 0
    if vllm_mode == "server":
        n += 1
    return n * NCCL_BUFFER_BYTES_PER_RANK


def weight_sync_transient(spec: ModelSpec, setup: TrainerSetup, engine: str) -> dict:
    """Bytes allocated on each training rank while weights are pushed to vLLM (once per step).

    TRL 1.16 ``VLLMGeneration._iter_named_params``: PEFT merges the adapters first
    (``merge_transient``, planner.memory.phases). Under ZeRO-3 with PEFT it gathers **every** parameter
    at once (``gather_params(list(model.parameters()))``): the full model in the trainer's dtype
    on every GPU, on top of the shards. ZeRO-3 without PEFT gathers one parameter at a time; FSDP2
    materialises one parameter at a time (``full_tensor()``)."""
    s = setup.compute_bytes
    out = {}
    if setup.finetune == "lora":
        out["merge_transient"] = merge_transient_bytes(spec, setup)
        if engine == "zero3":
            adapters = lora_params(spec, setup.lora_rank, setup.lora_target_modules)
            out["zero3_full_gather"] = trainer_weights_bytes(spec, setup.weights, setup.double_quant) + adapters * s
        elif engine == "fsdp":
            out["fsdp_param_gather"] = largest_parameter_params(spec) * s
    elif engine in SHARDED_PARAM_ENGINES:
        out[f"{engine}_param_gather"] = largest_parameter_params(spec) * s
    return out


@dataclass(frozen=True)
class RankMemory(StepMoments):
    """One training rank's trainer memory: the step's terms, the resident state, the weight sync."""

    components: dict  # training-step peak by term (sums to peak_bytes): the binding moment's
    sync_components: dict  # transient bytes of the weight sync
    vllm_start_bytes: int  # what the trainer holds when a colocated vLLM starts
    engine: str = "ddp"
    moment_components: dict = field(default_factory=dict)  # each moment of the step on this rank, by term

    @property
    def peak_bytes(self) -> int:
        return sum(self.components.values())

    @property
    def steady_bytes(self) -> int:
        """Between steps: every term except those of the step itself."""
        return sum(v for k, v in self.components.items() if k not in STEP_COMPONENTS)

    @property
    def load_bytes(self) -> int:
        """After ``accelerator.prepare``, before the first step: DeepSpeed has built its optimizer
        partitions (``initialize_optimizer_states``); torch optimizers create state lazily."""
        lazy = () if self.engine in DEEPSPEED_ENGINES else ("optimizer_state",)
        return sum(v for k, v in self.components.items() if k not in STEP_COMPONENTS and k not in lazy)

    @property
    def sync_bytes(self) -> int:
        return sum(self.sync_components.values())

    def blocks(self) -> dict[str, dict[str, int]]:
        """The trainer's phase blocks (planner.memory.phases): load, resident, step, sync."""
        return trainer_blocks(self.components, self.sync_components,
                              lazy_optimizer=self.engine not in DEEPSPEED_ENGINES)

    def to_dict(self) -> dict:
        return {"peak_bytes": self.peak_bytes, "steady_bytes": self.steady_bytes, "load_bytes": self.load_bytes,
                "vllm_start_bytes": self.vllm_start_bytes, "sync_bytes": self.sync_bytes,
                "components": dict(self.components), "sync_components": dict(self.sync_components),
                "moments": dict(self.moments), "binding_moment": self.binding_moment}


def rank_trainer_memory(spec: ModelSpec, setup: TrainerSetup, topology: Topology,
                        trainer: TrainerMemory | None = None) -> RankMemory:
    """The trainer memory of the worst training rank (rank 0) under ``topology``.

    ``trainer``: the single-process terms (``trainer_memory`` with ``world_size=1``), when the
    caller has them (calibrated or cached). NCCL buffers are their own term here (``nccl``). Every
    moment of the step (planner.memory.trainer.MOMENTS) is sharded term by term and the rank's peak
    is its largest moment: sharding changes which moment binds (the optimizer step's temporaries
    shrink to the rank's partition, the activations do not)."""
    if trainer is None:
        trainer = trainer_memory(spec, replace(setup, world_size=1))
    N, engine = topology.world_size, topology.engine
    if N == 1 and engine != "ddp":
        engine = "ddp"  # one process: no sharding, whatever the config says
    moments = trainer.moment_components or {"step": trainer.components}
    ranked = {name: _rank_components(spec, setup, topology, engine, dict(c), trainer.trainable_params)
              for name, c in moments.items()}
    bind = binding_moment({name: sum(c.values()) for name, c in ranked.items()}) or "step"
    c = ranked[bind]
    if N == 1:  # one process: exactly the single-process terms (the sharding terms are all 0)
        c = {k: v for k, v in c.items() if v or k in trainer.components}
    # When a colocated vLLM starts (GRPOTrainer.__init__), DDP runs have the model on the GPU;
    # DeepSpeed and FSDP place it at accelerator.prepare() (docs/trl-grpo.md §3), except ZeRO-3's
    # zero.Init (zero3_init_flag), which loads the shards straight to the GPU.
    # No matmul has run yet, so no cuBLAS workspace exists.
    start = c["non_torch"] + c.get("nccl", 0)
    if engine in ("ddp", "zero3"):
        start += c["weights"] + c["adapters"]
    return RankMemory(components=c, sync_components=weight_sync_transient(spec, setup, engine),
                      vllm_start_bytes=start, engine=engine,
                      moment_components=ranked if trainer.moment_components else {})


def _rank_components(spec: ModelSpec, setup: TrainerSetup, topology: Topology, engine: str, c: dict,
                     trainable: int) -> dict:
    """One moment's single-process terms ``c`` as rank 0 holds them under ``engine`` on
    ``topology.world_size`` ranks (the table in the package docstring)."""
    N = topology.world_size
    s = setup.compute_bytes
    ds = engine in DEEPSPEED_ENGINES
    if ds and setup.finetune == "lora" and setup.weights != "fp32":
        # DeepSpeed's bf16 mode casts the whole module (adapters too) to bf16; the fp32 copy is
        # the master partition below.
        c["adapters"] = trainable * s
        if c["gradients"]:
            c["gradients"] = trainable * s
    persistent = zero3_persistent_params(spec) * s if engine == "zero3" else 0
    c["weights"] = weights_per_rank_bytes(c["weights"], engine, N, persistent)
    c["adapters"] = weights_per_rank_bytes(c["adapters"], engine, N)
    if ds and setup.finetune == "full" and setup.optim in TORCH_ADAMW and setup.weights != "fp32":
        # torch's AdamW keeps its states in the parameter's dtype, but under DeepSpeed it steps the fp32
        # master partition ("8_optimizer_states" in DeepSpeed's estimators): fp32 states
        c["optimizer_state"] = states_at_param_bytes(c["optimizer_state"], DTYPE_BYTES[setup.weights], 4)
    c["optimizer_state"] = optimizer_state_per_rank_bytes(c["optimizer_state"], engine, N)
    if "optimizer_step" in c:
        c["optimizer_step"] = optimizer_step_per_rank_bytes(c["optimizer_step"], trainable, engine, N, setup.optim)
    grads_whole = c["gradients"]
    c["gradients"] = gradients_per_rank_bytes(grads_whole, engine, N)
    if engine == "zero3":
        # ZeRO-3 allocates its 16-bit gradient partition once, at init, and keeps it
        # (DeepSpeed 0.19.8 stage3.py: grad_partitions_flat_buffer = torch.zeros(sum of
        # partition numels)): a resident term of exactly trainable x 2 B / N.
        c["gradients"] = 0
        c["gradient_partition"] = _shard(trainable * s, N)
    c["master_weights"] = master_weights_per_rank_bytes(trainable, engine, N, setup.weights)
    # At the optimizer step the activations are gone: the fp32 gradient partition only adds what
    # does not fit into the memory they freed (the same reasoning as trainer.py's gradients).
    fp32_grads = fp32_gradient_partition_bytes(trainable, engine, N, setup.weights)
    c["fp32_gradient_partition"] = max(0, fp32_grads - c.get("activations", 0) - c.get("logprob_head", 0))
    c["ddp_buckets"] = ddp_bucket_bytes(grads_whole, engine, N)
    c["zero_buckets"] = zero_bucket_bytes(engine, s)
    c["gather_working_set"] = gather_working_set_bytes(spec, engine, s, setup.finetune)
    c["nccl"] = nccl_bytes_per_rank(N, topology.vllm_mode)
    return c


# -- a server GPU --------------------------------------------------------------------------

def server_gpu_components(capacity: VllmCapacity, spec: ModelSpec) -> dict[str, int]:
    """One server GPU: vLLM's footprint (``vllm_process_bytes``: baseline + budget + graph
    overshoot) plus the weight-transfer group: its NCCL buffers and the largest tensor received
    whole before it is loaded (``update_named_params`` streams tensors one at a time)."""
    parts = dict(vllm_blocks(capacity)["vllm_awake"])
    parts["vllm.weight_transfer_nccl"] = NCCL_BUFFER_BYTES_PER_RANK
    parts["vllm.weight_transfer_tensor"] = largest_parameter_params(spec) * 2
    return parts
