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
~1.5 GiB of NCCL/custom all-reduce buffers per GPU at TP > 1, vllm-memory.md §8). Server mode:
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

from . import solver as _solver
from .errors import InfeasibleError, InvalidSetupError
from .gpu_spec import GpuSpec, resolve_gpu
from .memory.optimizer import STATE_OVERHEAD_BYTES
from .memory.process import NCCL_BUFFER_BYTES_PER_RANK
from .memory.trainer import TrainerMemory, TrainerSetup, trainer_memory
from .memory.weights import weights_bytes as trainer_weights_bytes
from .model_spec import ModelSpec, resolve_model
from .phases import Phase, PhasePeaks, merge_transient_bytes
from .versions import trl_facts as _trl_facts
from .units import GIB

ENGINES = ("ddp", "zero1", "zero2", "zero3", "fsdp")
AUTO_ENGINES = ("ddp", "zero1", "zero2", "zero3")  # FSDP only on request (module docstring)
DEEPSPEED_ENGINES = ("zero1", "zero2", "zero3")
SHARDED_PARAM_ENGINES = ("zero3", "fsdp")
VLLM_MODES = ("colocate", "server")
LAYOUTS = ("auto", "colocate", "server")
ENGINE_LABELS = {"ddp": "DDP", "zero1": "ZeRO-1", "zero2": "ZeRO-2", "zero3": "ZeRO-3", "fsdp": "FSDP2"}
_COMMUNICATION_RANK = {"ddp": 0, "zero1": 1, "zero2": 2, "zero3": 3, "fsdp": 3}  # more = more traffic

# DeepSpeed's documented defaults (deepspeed 0.19.8 runtime/zero/config.py, DeepSpeedZeroConfig;
# the same values as the "ZeRO Optimizations" page of the DeepSpeed docs). The emitted
# deepspeed.json states every one of them explicitly, so the file and this model agree.
ZERO_REDUCE_BUCKET_SIZE = 500_000_000  # elements: the gradient reduce (IPG) bucket
ZERO_ALLGATHER_BUCKET_SIZE = 500_000_000  # elements: ZeRO-1/2 all-gather chunk (no buffer of its own)
ZERO_OVERLAP_COMM = False  # True would double the reduce bucket (DeepSpeed 0.19.8 setup_buckets)
ZERO_CONTIGUOUS_GRADIENTS = True
ZERO3_PREFETCH_BUCKET_SIZE = 50_000_000  # elements prefetched ahead of use
ZERO3_PARAM_PERSISTENCE_THRESHOLD = 100_000  # parameters this small stay whole on every rank
ZERO3_MAX_LIVE_PARAMETERS = 1_000_000_000
ZERO3_MAX_REUSE_DISTANCE = 1_000_000_000
DEEPSPEED_DEFAULTS = {
    "reduce_bucket_size": ZERO_REDUCE_BUCKET_SIZE,
    "allgather_bucket_size": ZERO_ALLGATHER_BUCKET_SIZE,
    "overlap_comm": ZERO_OVERLAP_COMM,
    "contiguous_gradients": ZERO_CONTIGUOUS_GRADIENTS,
    "stage3_prefetch_bucket_size": ZERO3_PREFETCH_BUCKET_SIZE,
    "stage3_param_persistence_threshold": ZERO3_PARAM_PERSISTENCE_THRESHOLD,
    "stage3_max_live_parameters": ZERO3_MAX_LIVE_PARAMETERS,
    "stage3_max_reuse_distance": ZERO3_MAX_REUSE_DISTANCE,
}

# `trl vllm-serve` (trl 1.16 trl/scripts/vllm_serve.py, ScriptArguments)
TRL_SERVE_DEFAULT_UTILIZATION = 0.9
TRL_SERVE_DEFAULT_HOST = "0.0.0.0"
TRL_SERVE_DEFAULT_PORT = 8000
SERVER_UTILIZATION_RANGE = (0.5, 0.95)  # the server owns its GPUs: the highest that fits wins

# Terms alive only during a training step; every other term is resident between steps.
STEP_COMPONENTS = ("gradients", "activations", "logprob_head", "allocator_reserve",
                   "fp32_gradient_partition", "gather_working_set")


# -- topology --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Topology:
    """Where every process runs. ``num_gpus`` is per node; ``world_size`` is the data-parallel world
    (the training processes), ``training_gpus`` the GPUs they use.

    Colocate: every GPU trains and runs its share of a vLLM engine; ranks
    ``[0..TP-1], [TP..2TP-1], ...`` form the engines (TRL's ``new_subgroups_by_enumeration``).
    Server: ``server_gpus = server TP x server DP`` GPUs run ``trl vllm-serve``: on one node, the
    first ``server_gpus`` GPUs (TRL's docs put the server on GPU 0); on several nodes, node 0
    serves and nodes 1.. train (torchrun needs the same number of processes on every node).
    """

    num_gpus: int  # per node
    num_nodes: int = 1
    engine: str = "ddp"  # ddp | zero1 | zero2 | zero3 | fsdp
    vllm_mode: str = "colocate"  # colocate | server
    vllm_tensor_parallel_size: int = 1  # colocate: TP of each engine (GRPOConfig.vllm_tensor_parallel_size)
    server_gpus: int = 0  # server: GPUs running `trl vllm-serve`
    server_tensor_parallel_size: int = 1
    server_data_parallel_size: int = 1
    world_size: int = field(init=False)
    training_gpus: int = field(init=False)

    def __post_init__(self):
        for name in ("num_gpus", "num_nodes", "vllm_tensor_parallel_size", "server_tensor_parallel_size",
                     "server_data_parallel_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidSetupError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.engine not in ENGINES:
            raise InvalidSetupError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.vllm_mode not in VLLM_MODES:
            raise InvalidSetupError(f"vllm_mode must be 'server' or 'colocate', got {self.vllm_mode!r}")
        total = self.num_gpus * self.num_nodes
        if self.vllm_mode == "colocate":
            if self.server_gpus:
                raise InvalidSetupError("server_gpus is for vllm_mode='server'; colocate runs vLLM on the "
                                        "training GPUs")
            training = total
        else:
            k = self.server_gpus
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise InvalidSetupError(f"server mode needs at least one server GPU, got server_gpus={k!r}")
            if k != self.server_tensor_parallel_size * self.server_data_parallel_size:
                raise InvalidSetupError(f"server_gpus ({k}) must equal server TP x DP "
                                        f"({self.server_tensor_parallel_size} x {self.server_data_parallel_size})")
            if k > self.num_gpus:
                raise InvalidSetupError(f"the vLLM server's {k} GPUs must fit on one node of {self.num_gpus}")
            training = total - self.num_gpus if self.num_nodes > 1 else total - k
            if training < 1:
                raise InvalidSetupError(f"server mode needs a training GPU: {k} of {total} GPUs serve, none train"
                                        + ("; with several nodes node 0 serves and the others train"
                                           if self.num_nodes > 1 else ""))
        object.__setattr__(self, "training_gpus", training)
        object.__setattr__(self, "world_size", training)

    @property
    def total_gpus(self) -> int:
        return self.num_gpus * self.num_nodes

    @property
    def training_nodes(self) -> int:
        return self.num_nodes - 1 if self.vllm_mode == "server" and self.num_nodes > 1 else self.num_nodes

    @property
    def training_gpus_per_node(self) -> int:
        return self.training_gpus // self.training_nodes

    @property
    def idle_gpus(self) -> int:
        return self.total_gpus - self.training_gpus - (self.server_gpus if self.vllm_mode == "server" else 0)

    @property
    def num_engines(self) -> int:
        """vLLM engines: TP groups of training ranks (colocate) or the server's DP replicas."""
        if self.vllm_mode == "colocate":
            return self.world_size // self.vllm_tensor_parallel_size
        return self.server_data_parallel_size

    @property
    def server_devices(self) -> str:
        """``CUDA_VISIBLE_DEVICES`` of the server (on node 0), or '' in colocate mode."""
        if self.vllm_mode != "server":
            return ""
        return ",".join(str(i) for i in range(self.server_gpus))

    @property
    def training_devices(self) -> str:
        """``CUDA_VISIBLE_DEVICES`` of the training processes on each training node."""
        if self.vllm_mode == "server" and self.num_nodes == 1:
            return ",".join(str(i) for i in range(self.server_gpus, self.num_gpus))
        return ",".join(str(i) for i in range(self.num_gpus))

    @property
    def label(self) -> str:
        if self.vllm_mode == "colocate":
            return f"colocate TP{self.vllm_tensor_parallel_size}"
        dp = f" DP{self.server_data_parallel_size}" if self.server_data_parallel_size > 1 else ""
        return f"server {self.server_gpus} GPU{'s' if self.server_gpus > 1 else ''} (TP{self.server_tensor_parallel_size}{dp})"

    def to_dict(self) -> dict:
        return {"num_gpus": self.num_gpus, "num_nodes": self.num_nodes, "total_gpus": self.total_gpus,
                "world_size": self.world_size, "training_gpus": self.training_gpus,
                "training_nodes": self.training_nodes, "engine": self.engine, "vllm_mode": self.vllm_mode,
                "vllm_tensor_parallel_size": self.vllm_tensor_parallel_size, "server_gpus": self.server_gpus,
                "server_tensor_parallel_size": self.server_tensor_parallel_size,
                "server_data_parallel_size": self.server_data_parallel_size, "idle_gpus": self.idle_gpus,
                "server_devices": self.server_devices, "training_devices": self.training_devices,
                "label": self.label}


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
    (``merge_transient``, planner.phases). Under ZeRO-3 with PEFT it gathers **every** parameter
    at once (``gather_params(list(model.parameters()))``): the full model in the trainer's dtype
    on every GPU, on top of the shards. ZeRO-3 without PEFT gathers one parameter at a time; FSDP2
    materialises one parameter at a time (``full_tensor()``)."""
    s = setup.compute_bytes
    out = {}
    if setup.finetune == "lora":
        out["merge_transient"] = merge_transient_bytes(spec, setup)
        if engine == "zero3":
            trainable = _trainable_params(spec, setup)
            out["zero3_full_gather"] = trainer_weights_bytes(spec, setup.weights, setup.double_quant) + trainable * s
        elif engine == "fsdp":
            out["fsdp_param_gather"] = largest_parameter_params(spec) * s
    elif engine in SHARDED_PARAM_ENGINES:
        out[f"{engine}_param_gather"] = largest_parameter_params(spec) * s
    return out


def _trainable_params(spec: ModelSpec, setup: TrainerSetup) -> int:
    from .memory.lora import lora_params

    if setup.finetune == "lora":
        return lora_params(spec, setup.lora_rank, setup.lora_target_modules)
    return spec.param_counts().active


@dataclass(frozen=True)
class RankMemory:
    """One training rank's trainer memory: the step's terms, the resident state, the weight sync."""

    components: dict  # training-step peak by term (sums to peak_bytes)
    sync_components: dict  # transient bytes of the weight sync
    vllm_start_bytes: int  # what the trainer holds when a colocated vLLM starts
    engine: str = "ddp"

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

    def to_dict(self) -> dict:
        return {"peak_bytes": self.peak_bytes, "steady_bytes": self.steady_bytes, "load_bytes": self.load_bytes,
                "vllm_start_bytes": self.vllm_start_bytes, "sync_bytes": self.sync_bytes,
                "components": dict(self.components), "sync_components": dict(self.sync_components)}


def rank_trainer_memory(spec: ModelSpec, setup: TrainerSetup, topology: Topology,
                        trainer: TrainerMemory | None = None) -> RankMemory:
    """The trainer memory of the worst training rank (rank 0) under ``topology``.

    ``trainer``: the single-process terms (``trainer_memory`` with ``world_size=1``), when the
    caller has them (calibrated or cached). NCCL buffers are their own term here (``nccl``)."""
    if trainer is None:
        trainer = trainer_memory(spec, replace(setup, world_size=1))
    N, engine = topology.world_size, topology.engine
    if N == 1 and engine != "ddp":
        engine = "ddp"  # one process: no sharding, whatever the config says
    c = dict(trainer.components)
    s = setup.compute_bytes
    ds = engine in DEEPSPEED_ENGINES
    trainable = trainer.trainable_params
    if ds and setup.finetune == "lora" and setup.weights != "fp32":
        # DeepSpeed's bf16 mode casts the whole module (adapters too) to bf16; the fp32 copy is
        # the master partition below.
        c["adapters"] = trainable * s
        c["gradients"] = trainable * s
    persistent = zero3_persistent_params(spec) * s if engine == "zero3" else 0
    c["weights"] = weights_per_rank_bytes(c["weights"], engine, N, persistent)
    c["adapters"] = weights_per_rank_bytes(c["adapters"], engine, N)
    c["optimizer_state"] = optimizer_state_per_rank_bytes(c["optimizer_state"], engine, N)
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
    # When a colocated vLLM starts (GRPOTrainer.__init__), DDP runs have the model on the GPU;
    # DeepSpeed and FSDP place it at accelerator.prepare() (trl-grpo.md §3), except ZeRO-3's
    # zero.Init (zero3_init_flag), which loads the shards straight to the GPU.
    start = c["non_torch"] + c["nccl"]
    if engine == "ddp":
        start += c["weights"] + c["adapters"] + c.get("cublas_workspace", 0)
    elif engine == "zero3":
        start += c["weights"] + c["adapters"]
    return RankMemory(components=c, sync_components=weight_sync_transient(spec, setup, engine),
                      vllm_start_bytes=start, engine=engine)


# -- phases ----------------------------------------------------------------------------------

def _prefixed(d: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": v for k, v in d.items()}


def _steady_parts(rank: RankMemory) -> dict:
    return {k: v for k, v in rank.components.items() if k not in STEP_COMPONENTS}


def _load_parts(rank: RankMemory) -> dict:
    parts = _steady_parts(rank)
    if rank.engine not in DEEPSPEED_ENGINES:
        parts["optimizer_state"] = 0
    return parts


def training_rank_phases(rank: RankMemory, capacity=None, sleep_mode: bool = False) -> tuple:
    """Phases of one training rank, as ``planner.phases`` models one colocated GPU.

    Colocated (``capacity`` given): load, weight_sync, generation, training, with vLLM awake, or
    asleep outside generation and sync with sleep mode (TRL then empties the trainer's cache
    before waking vLLM). Server mode (``capacity=None``): load, weight_sync, training; the
    trainer keeps its cached step memory through the sync (nothing empties it)."""
    from .phases import _vllm_asleep, _vllm_awake

    peak = _prefixed(rank.components, "trainer.")
    steady = _prefixed(_steady_parts(rank), "trainer.")
    load = _prefixed(_load_parts(rank), "trainer.")
    sync = _prefixed(rank.sync_components, "trainer.")
    if capacity is None:
        return (Phase("load", load), Phase("weight_sync", {**peak, **sync}), Phase("training", peak))
    awake = _vllm_awake(capacity)
    asleep = _vllm_asleep(capacity)
    if sleep_mode:
        # vLLM starts awake (it profiles and allocates its whole budget) and only then sleeps,
        # so the load phase counts it awake either way (as solver._search does)
        return (Phase("load", {**load, **awake}), Phase("weight_sync", {**steady, **awake, **sync}),
                Phase("generation", {**steady, **awake}), Phase("training", {**peak, **asleep}))
    return (Phase("load", {**load, **awake}), Phase("weight_sync", {**peak, **awake, **sync}),
            Phase("generation", {**peak, **awake}), Phase("training", {**peak, **awake}))


def _rank_peak(peak: int, steady: int, load: int, sync: int, awake: int | None, asleep: int, sleep: bool) -> int:
    """max over ``training_rank_phases`` without building them (the search's inner loop)."""
    if awake is None:
        return max(load, peak + sync)
    if sleep:
        return max(load + awake, steady + awake + sync, peak + asleep)
    return max(load + awake, peak + awake + sync)


def server_gpu_components(capacity, spec: ModelSpec) -> dict:
    """One server GPU: vLLM's footprint (``vllm_process_bytes``: baseline + budget + graph
    overshoot) plus the weight-transfer group: its NCCL buffers and the largest tensor received
    whole before it is loaded (``update_named_params`` streams tensors one at a time)."""
    from .phases import _vllm_awake

    parts = _vllm_awake(capacity)
    parts["vllm.weight_transfer_nccl"] = NCCL_BUFFER_BYTES_PER_RANK
    parts["vllm.weight_transfer_tensor"] = largest_parameter_params(spec) * 2
    return parts


# -- checks ----------------------------------------------------------------------------------

def _check(id_: str, severity: str, message: str, fix: str = ""):
    from .checks import Check

    return Check(id_, severity, message, fix)


def tp_problem(spec: ModelSpec, tp: int) -> str | None:
    """Why vLLM refuses tensor-parallel size ``tp`` for ``spec`` (heads / KV heads), or None."""
    from .vllm import _check_tp

    try:
        _check_tp(spec, tp)
    except InvalidSetupError as e:
        return str(e)
    return None


def topology_checks(spec: ModelSpec, topology: Topology, gpus=(), config: dict | None = None) -> list:
    """Multi-GPU pitfalls as ``planner.checks.Check``: GPU sizes, TP vs heads and world size, TP
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


# -- the solver ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Option:
    """One configuration of one layout (the search's candidate)."""

    topology: Topology
    completion_length: int
    batch_size: int
    completions_per_device: int  # B x S
    utilization: float  # colocate: vllm_gpu_memory_utilization; server: the server's
    sleep: bool
    concurrency: int  # sequences decoded at once by all engines together
    peak_bytes: int  # the training rank's largest phase
    server_peak_bytes: int = 0

    @property
    def completions(self) -> int:
        return self.completions_per_device * self.topology.world_size

    @property
    def one_wave(self) -> int:
        return min(self.completions, self.concurrency)

    @property
    def waves(self) -> int:
        return _waves(self.topology, self.completions_per_device, self.concurrency)

    def key(self) -> tuple:
        """``solver._Candidate.key``'s objective, globally (all engines together), with the
        communication preferences inserted before the micro-batch: length; one wave (then the most
        completions) or else the fewest waves; the lowest engine; micro-batch; the smallest TP; no
        sleep; utilisation."""
        t = self.topology
        single = self.waves == 1
        tp = t.vllm_tensor_parallel_size if t.vllm_mode == "colocate" else t.server_tensor_parallel_size
        return (self.completion_length, single, self.completions if single else -self.waves,
                -_COMMUNICATION_RANK[t.engine], self.batch_size, -tp, not self.sleep, self.utilization)


def _waves(topo: Topology, completions_per_device: int, concurrency: int) -> int:
    """Generation rounds per step: colocated, each engine serves its TP group's requests
    (``B x S x TP``) from its share of ``concurrency``; a server serves all ``B x S x N``."""
    if concurrency <= 0:
        return 0
    if topo.vllm_mode == "colocate":
        per_engine = max(1, concurrency // topo.num_engines)
        return max(1, math.ceil(completions_per_device * topo.vllm_tensor_parallel_size / per_engine))
    return max(1, math.ceil(completions_per_device * topo.world_size / concurrency))


@dataclass(frozen=True)
class LayoutResult:
    """One row of the layout comparison: a layout, its best configuration or why nothing fits."""

    topology: Topology
    option: _Option | None = None
    why: str = ""
    chosen: bool = False

    @property
    def fits(self) -> bool:
        return self.option is not None

    def to_dict(self) -> dict:
        t, o = self.topology, self.option
        d = {"layout": t.label, "vllm_mode": t.vllm_mode, "engine": t.engine,
             "vllm_tensor_parallel_size": t.vllm_tensor_parallel_size if t.vllm_mode == "colocate" else None,
             "server_gpus": t.server_gpus, "server_tensor_parallel_size": t.server_tensor_parallel_size
             if t.vllm_mode == "server" else None,
             "server_data_parallel_size": t.server_data_parallel_size if t.vllm_mode == "server" else None,
             "training_gpus": t.training_gpus, "fits": self.fits, "chosen": self.chosen, "why": self.why}
        if o is not None:
            d.update(peak_bytes=o.peak_bytes, server_peak_bytes=o.server_peak_bytes or None,
                     completion_length=o.completion_length, micro_batch=o.batch_size,
                     steps_per_generation=o.completions_per_device // o.batch_size,
                     completions_per_step=o.completions, completions_in_one_wave=o.one_wave,
                     concurrency=o.concurrency, utilization=o.utilization, sleep_mode=o.sleep, waves=o.waves)
        return d


class _Search:
    """Caches shared by every layout of one plan_distributed call."""

    def __init__(self, spec, card, base, ckpt, targets, lo, hi, margin, sleep_mode, vkw, server_range):
        self.spec, self.card, self.base, self.ckpt = spec, card, base, ckpt
        self.targets, self.lo, self.hi, self.margin, self.vkw = targets, lo, hi, margin, vkw
        self.P = targets["prompt_length"]
        self.sleeps = {"auto": [False, True], "on": [True], "off": [False]}[sleep_mode]
        G = targets["num_generations"]
        self.G_options = [G] if G else list(_solver.GENERATION_CHOICES)
        # the card less the margin, less whatever other processes hold on a live card (solver._search)
        self.budget = int(card.total_bytes * (1 - margin)) - (card.total_bytes - card.usable_bytes)
        self.utils = _solver._utilizations(lo, hi)
        self.server_range = server_range
        self._tm: dict = {}
        self._rows: dict = {}
        self._vllm: dict = {}
        self._server: dict = {}

    def setup(self, B: int, C: int, world: int = 1) -> TrainerSetup:
        return TrainerSetup(**self.base, gradient_checkpointing=self.ckpt, batch_size=B, prompt_length=self.P,
                            completion_length=C, world_size=world)

    def trainer(self, B: int, C: int):
        key = (B, C)
        if key not in self._tm:
            setup = self.setup(B, C)
            self._tm[key] = (setup, trainer_memory(self.spec, setup))
        return self._tm[key]

    def rank(self, topo: Topology, B: int, C: int) -> RankMemory:
        setup, tm = self.trainer(B, C)
        return rank_trainer_memory(self.spec, setup, topo, trainer=tm)

    def rows(self, topo: Topology, C: int) -> list:
        """``(peak, steady, load, sync, vllm_start)`` bytes of a training rank for B = 1, 2, ... while
        its own step and weight sync fit the budget."""
        key = (topo.engine, topo.world_size, topo.vllm_mode, C)
        if key not in self._rows:
            rows = []
            for B in range(1, _solver.MAX_BATCH + 1):
                r = self.rank(topo, B, C)
                row = (r.peak_bytes, r.steady_bytes, r.load_bytes, r.sync_bytes, r.vllm_start_bytes)
                if max(row[0], row[1] + row[3]) > self.budget:
                    break
                rows.append(row)
            self._rows[key] = rows
        return self._rows[key]

    def colocated(self, tp: int, u: float, C: int):
        """(capacity with the whole card free, awake bytes, asleep bytes) of the engine TRL builds
        (``estimation.colocated_vllm``, as solver._vllm_table); start-up is checked per layout."""
        key = (tp, u, C)
        if key not in self._vllm:
            from .estimation import colocated_vllm
            from .vllm import sleep_resident_bytes, vllm_process_bytes

            cap = colocated_vllm(self.spec, self.card, 0, u, weights=self.base["weights"],
                                 max_model_len=self.P + C, max_num_seqs=_solver.MAX_COMPLETIONS_PER_STEP,
                                 tensor_parallel_size=tp, kv_cache_dtype=self.vkw["vllm_kv_cache_dtype"],
                                 vllm_version=self.vkw["vllm_version"], trl_version=self.vkw["trl_version"])
            self._vllm[key] = (cap, vllm_process_bytes(cap), sleep_resident_bytes(cap, level=2))
        return self._vllm[key]

    def server(self, t: int, d: int, C: int):
        """The server's best utilisation at completion length C: (u, capacity, concurrency, GPU peak) or
        (None, why). The highest utilisation in ``server_range`` whose footprint fits the budget."""
        key = (t, d, C)
        if key in self._server:
            return self._server[key]
        from .vllm import baseline_bytes, vllm_capacity

        lo, hi = self.server_range
        spec, card = self.spec, self.card
        extra = NCCL_BUFFER_BYTES_PER_RANK + largest_parameter_params(spec) * 2
        ceiling = (self.budget - baseline_bytes(t, self.vkw["vllm_version"]) - extra) / card.total_bytes
        u = min(hi, math.floor(ceiling * 100) / 100)
        result = (None, f"the server's weights and buffers leave no room at utilisation >= {lo}")
        while u >= lo - 1e-9:
            cap = vllm_capacity(spec, card, gpu_memory_utilization=round(u, 2), max_model_len=self.P + C,
                                tensor_parallel_size=t, kv_cache_dtype=self.vkw["vllm_kv_cache_dtype"],
                                vllm_version=self.vkw["vllm_version"], usage_context="OPENAI_API_SERVER")
            peak = sum(server_gpu_components(cap, spec).values())
            if peak <= self.budget:
                if cap.startup_ok and cap.max_concurrency >= 1:
                    conc = d * min(int(cap.max_concurrency), cap.max_num_seqs)
                    result = (round(u, 2), cap, conc, peak)
                else:
                    result = (None, "vLLM server: " + "; ".join(cap.errors or ("no full-length sequence fits",)))
                break
            u -= 0.01
        self._server[key] = result
        return result


def _step(B: int, G: int, world: int) -> int:
    """Completions per device must be a multiple of B and make ``B x S x world`` a multiple of G."""
    g = G // math.gcd(G, world)
    return B * g // math.gcd(B, g)


def _first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".")


def _search_layout(s: _Search, topo: Topology, C: int, G: int) -> tuple:
    """(best _Option of this layout at completion length C and group size G, '') or (None, why)."""
    rows = s.rows(topo, C)
    budget = s.budget
    if not rows:
        r = s.rank(topo, 1, C)
        c = r.components
        big = max(c, key=c.get)
        if r.steady_bytes + r.sync_bytes > budget and r.sync_bytes > r.peak_bytes - r.steady_bytes:
            return None, (f"the weight sync allocates {r.sync_bytes / GIB:.1f} GiB per rank on top of "
                          f"{r.steady_bytes / GIB:.1f} GiB resident (budget {budget / GIB:.1f} GiB)")
        return None, (f"the trainer alone needs {r.peak_bytes / GIB:.1f} GiB per rank at batch 1 "
                      f"(largest term: {big} {c[big] / GIB:.1f} GiB; budget {budget / GIB:.1f} GiB)")
    N = topo.world_size
    steps = [_step(B, G, N) for B in range(1, len(rows) + 1)]
    best_k, best = None, None
    if topo.vllm_mode == "server":
        got = s.server(topo.server_tensor_parallel_size, topo.server_data_parallel_size, C)
        if got[0] is None:
            return None, got[1]
        u, cap, conc, server_peak = got
        n_cap = min(_solver.MAX_COMPLETIONS_PER_STEP, conc // N)
        for B, (peak, steady, load, sync, _) in enumerate(rows, start=1):
            p = _rank_peak(peak, steady, load, sync, None, 0, False)
            if p > budget:
                break
            step = steps[B - 1]
            n = max(step, n_cap // step * step)
            waves = _waves(topo, n, conc)
            k = (waves == 1, n if waves == 1 else -waves, B)
            if best_k is None or k > best_k:
                best_k, best = k, (B, n, u, False, conc, p, server_peak)
        if best is None:
            return None, "no micro-batch fits beside the weight sync"
        return _Option(topo, C, *best), ""
    from .vllm import startup_error

    tp = topo.vllm_tensor_parallel_size
    start_bytes = rows[0][4]
    total, usable = s.card.total_bytes, s.card.usable_bytes
    kv_why = start_why = ""
    lowest_started = None  # the lowest utilisation at which vLLM starts: the phases' best chance
    for u in s.utils:
        cap, awake, asleep = s.colocated(tp, u, C)
        if not cap.startup_ok or cap.max_concurrency < 1:
            kv_why = kv_why or (f"vLLM at utilisation {u} (TP {tp}, weights {cap.weights_bytes / GIB:.1f} GiB per "
                                f"GPU): " + _first_sentence("; ".join(cap.errors) or "no full-length sequence fits"))
            continue
        if startup_error(usable - start_bytes - cap.baseline_bytes, total, u, cap.budget_bytes):
            start_why = f"vLLM cannot start beside the trainer's {start_bytes / GIB:.1f} GiB (utilisation {u})"
            continue
        lowest_started = u
        conc_engine = int(cap.max_concurrency)
        conc = conc_engine * topo.num_engines
        n_cap = min(_solver.MAX_COMPLETIONS_PER_STEP, conc_engine) // tp
        for sleep in s.sleeps:
            for B, (peak, steady, load, sync, _) in enumerate(rows, start=1):
                p = _rank_peak(peak, steady, load, sync, awake, asleep, sleep)
                if p > budget:
                    break
                step = steps[B - 1]
                n = max(step, n_cap // step * step)
                waves = _waves(topo, n, conc)
                k = (waves == 1, n if waves == 1 else -waves, B, not sleep, u)
                if best_k is None or k > best_k:
                    best_k, best = k, (B, n, u, sleep, conc, p)
    if best is None:
        if lowest_started is not None:
            peak, steady, load, sync, _ = rows[0]
            _, awake, asleep = s.colocated(tp, lowest_started, C)
            need = min(_rank_peak(peak, steady, load, sync, awake, asleep, sl) for sl in s.sleeps)
            return None, (f"a training rank needs {need / GIB:.1f} GiB at batch 1 with vLLM at utilisation "
                          f"{lowest_started} ({awake / GIB:.1f} GiB), over the {budget / GIB:.1f} GiB budget")
        return None, (kv_why if kv_why.startswith(f"vLLM at utilisation {s.utils[0]} ") or not start_why
                      else start_why)
    return _Option(topo, C, *best), ""


def candidate_topologies(spec: ModelSpec, num_gpus: int, num_nodes: int = 1, layout: str = "auto",
                         engine: str = "auto", vllm_tensor_parallel_size: int | None = None,
                         server_gpus: int | None = None) -> tuple[list, list]:
    """Every layout to evaluate, and those the rules reject up front as ``(Topology, why)``.

    Colocate: TP in the divisors of the GPUs per node (TP groups stay on one node). Server: on
    one node, ``k = 1 .. num_gpus - 1`` server GPUs; on several nodes, node 0 serves. The server
    runs TP = k (dense models: ``trl vllm-serve`` refuses DP > 1), or TP x DP = k for MoE models."""
    if layout not in LAYOUTS:
        raise InvalidSetupError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if engine != "auto" and engine not in ENGINES:
        raise InvalidSetupError(f"--engine must be auto or one of {', '.join(ENGINES)}, got {engine!r}")
    total = num_gpus * num_nodes
    out, rejected = [], []

    def engines(world):
        if world == 1:
            return ["ddp"]
        return list(AUTO_ENGINES) if engine == "auto" else [engine]

    if layout in ("auto", "colocate"):
        tps = [vllm_tensor_parallel_size] if vllm_tensor_parallel_size else \
            [t for t in range(1, num_gpus + 1) if num_gpus % t == 0]
        for t in tps:
            why = tp_problem(spec, t)
            if why is None and num_gpus % t:
                why = f"TP {t} groups would span nodes of {num_gpus} GPUs"
            for e in engines(total):
                topo = Topology(num_gpus, num_nodes, e, "colocate", vllm_tensor_parallel_size=t)
                (rejected.append((topo, why)) if why else out.append(topo))
    if layout in ("auto", "server") and (total > 1):
        if num_nodes > 1:
            ks = [server_gpus] if server_gpus else [num_gpus]
        else:
            ks = [server_gpus] if server_gpus else list(range(1, num_gpus))
        for k in ks:
            if not 1 <= k <= num_gpus or (num_nodes == 1 and k >= num_gpus):
                raise InvalidSetupError(f"--server-gpus {k} leaves no training GPU on a node of {num_gpus}"
                                        if num_nodes == 1 else f"--server-gpus {k} must be at most {num_gpus}")
            splits = [(t, k // t) for t in range(1, k + 1) if k % t == 0] if spec.is_moe else [(k, 1)]
            for t, d in splits:
                why = tp_problem(spec, t)
                probe = Topology(num_gpus, num_nodes, "ddp", "server", server_gpus=k,
                                 server_tensor_parallel_size=t, server_data_parallel_size=d)
                for e in engines(probe.world_size):
                    topo = replace(probe, engine=e)
                    (rejected.append((topo, why)) if why else out.append(topo))
    return out, rejected


@dataclass(frozen=True)
class RoleMemory(PhasePeaks):
    """The memory of one role: a training rank (the worst, rank 0) or a server GPU."""

    role: str  # "training_rank" | "server_gpu"
    count: int
    devices: str
    phases: tuple  # of planner.phases.Phase
    budget_bytes: int
    rank: RankMemory | None = None
    vllm: object | None = None  # VllmCapacity of this GPU's vLLM share

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.peak_bytes

    def to_dict(self) -> dict:
        d = {"count": self.count, "devices": self.devices, "peak_bytes": self.peak_bytes,
             "budget_bytes": self.budget_bytes, "headroom_bytes": self.headroom_bytes,
             "binding_phase": self.binding_phase,
             "phases": {p.name: p.to_dict() for p in self.phases}}
        if self.rank is not None:
            d["trainer"] = self.rank.to_dict()
        if self.vllm is not None:
            d["vllm"] = self.vllm.to_dict()["vllm"]
        return d


@dataclass(frozen=True)
class DistributedPlan:
    """A multi-GPU plan: the layout, per-role memory, the configs the engines read, and why."""

    model: ModelSpec
    gpu: GpuSpec  # the card planned for (the smallest given)
    gpus: tuple  # every GpuSpec given (one per GPU, or one for all)
    topology: Topology
    setup: TrainerSetup
    config: dict  # GRPOConfig keyword arguments
    accelerate: dict  # accelerate config file content (emit.py adds the DeepSpeed JSON path)
    deepspeed: dict | None  # deepspeed.json content when a ZeRO stage is chosen
    server: dict | None  # `trl vllm-serve` settings in server mode
    roles: dict  # "training_rank" / "server_gpu" -> RoleMemory
    margin: float
    targets: dict
    reasons: tuple = ()
    layouts: tuple = ()  # LayoutResult rows
    checks: tuple = ()
    waves: int = 1
    memory_model: str = "analytic"
    warnings: tuple = ()
    extra: dict = field(default_factory=dict)

    @property
    def budget_bytes(self) -> int:
        return int(self.gpu.total_bytes * (1 - self.margin))

    @property
    def peak_bytes(self) -> int:
        """The largest per-GPU peak of any role."""
        return max(r.peak_bytes for r in self.roles.values())

    @property
    def fits(self) -> bool:
        ok = all(r.peak_bytes <= r.budget_bytes for r in self.roles.values())
        for r in self.roles.values():
            if r.vllm is not None:
                ok = ok and bool(r.vllm.startup_ok)
        return ok

    @property
    def layout(self) -> str:
        return self.topology.vllm_mode

    @property
    def lora_alpha(self) -> int | None:
        """LoRA alpha for the hand-off (2 x rank, as the single-GPU plan)."""
        return 2 * self.setup.lora_rank if self.setup.finetune == "lora" else None

    def to_dict(self) -> dict:
        return {
            "model": {"id": self.model.model_id, "params": self.model.n_params, "source": self.model.source},
            "gpu": self.gpu.to_dict() | {"total_bytes": self.gpu.total_bytes},
            "gpus": [g.name for g in self.gpus],
            "layout": self.layout,
            "topology": self.topology.to_dict(),
            "config": dict(self.config),
            "accelerate": dict(self.accelerate),
            "deepspeed": self.deepspeed,
            "server": self.server,
            "roles": {k: v.to_dict() for k, v in self.roles.items()},
            "fits": self.fits,
            "peak_bytes": self.peak_bytes,
            "budget_bytes": self.budget_bytes,
            "margin": self.margin,
            "waves": self.waves,
            "objective": list(_solver.OBJECTIVE),
            "reasons": list(self.reasons),
            "layouts": [row.to_dict() for row in self.layouts],
            "checks": [c.to_dict() if hasattr(c, "to_dict") else c for c in self.checks],
            "targets": dict(self.targets),
            "memory_model": self.memory_model,
            "warnings": list(self.warnings),
            "deepspeed_defaults": dict(DEEPSPEED_DEFAULTS),
            **self.extra,
        }


def resolve_gpus(gpu, num_gpus: int, num_nodes: int = 1) -> tuple[GpuSpec, tuple]:
    """``gpu``: one name/spec for every GPU, or a list (one per GPU, or one per GPU of a node).
    Returns (the smallest card, every card)."""
    total = num_gpus * num_nodes
    if isinstance(gpu, (list, tuple)):
        if not gpu:
            raise InvalidSetupError("empty GPU list")
        cards = tuple(resolve_gpu(g) for g in gpu)
        if len(cards) not in (1, num_gpus, total):
            raise InvalidSetupError(f"{len(cards)} GPU names for {total} GPUs: give one name, one per GPU of a "
                                    f"node ({num_gpus}) or one per GPU ({total})")
    else:
        cards = (resolve_gpu(gpu),)
    smallest = min(cards, key=lambda g: g.total_bytes)
    return smallest, cards


def plan_distributed(model: "str | ModelSpec", gpu="H100-80GB", num_gpus: int = 1, num_nodes: int = 1,
                     layout: str = "auto", *, engine: str = "auto", vllm_tensor_parallel_size: int | None = None,
                     server_gpus: int | None = None, server_host: str | None = None,
                     server_port: int = TRL_SERVE_DEFAULT_PORT,
                     server_utilization_range: tuple = SERVER_UTILIZATION_RANGE,
                     weights: str = "bf16", finetune: str = "lora", lora_rank: int = 16, lora_target_modules=None,
                     optim: str = "adamw_8bit", gradient_checkpointing: bool | None = None,
                     logprob_head: str | None = None, expandable_segments: bool | None = None,
                     num_generations: int | None = None, max_completion_length: int | None = None,
                     prompt_length: int = 256,
                     utilization_range: tuple = _solver.DEFAULT_UTILIZATION_RANGE, margin: float = 0.05,
                     sleep_mode: str = "auto", vllm_version: str | None = None, trl_version: str | None = None,
                     vllm_kv_cache_dtype: str = "auto", calibration="auto", relax: bool = True) -> DistributedPlan:
    """Choose the layout (colocate TP or a server split), the engine (DDP / ZeRO stage), batch and
    utilisation for ``num_gpus`` GPUs per node on ``num_nodes`` nodes (module docstring).

    ``gpu``: a name, a GpuSpec, or a list of them (GPUs of different sizes: planned for the
    smallest). ``layout``: ``auto``, ``colocate`` or ``server``; ``engine``: ``auto`` or one of
    ``ENGINES``; ``vllm_tensor_parallel_size`` / ``server_gpus``: fix them instead of searching.
    The other options are :func:`planner.solver.plan`'s; as there, when nothing fits and ``relax``
    is on, the error carries the closest plan that does (4-bit weights, then LoRA rank 8)."""
    options = dict(locals())
    if max_completion_length is None:  # TRL's own default for the release planned for
        max_completion_length = options["max_completion_length"] = \
            _trl_facts(trl_version).max_completion_length_default
    s, cards = _prepare(model, gpu, num_gpus, num_nodes, dict(
        layout=layout, engine=engine, server_utilization_range=server_utilization_range, weights=weights,
        finetune=finetune, lora_rank=lora_rank, lora_target_modules=lora_target_modules, optim=optim,
        gradient_checkpointing=gradient_checkpointing, logprob_head=logprob_head,
        expandable_segments=expandable_segments, num_generations=num_generations,
        max_completion_length=max_completion_length, prompt_length=prompt_length,
        utilization_range=utilization_range, margin=margin, sleep_mode=sleep_mode, vllm_version=vllm_version,
        trl_version=trl_version, vllm_kv_cache_dtype=vllm_kv_cache_dtype, calibration=calibration))
    spec, card = s.spec, s.card
    topos, rejected = candidate_topologies(spec, num_gpus, num_nodes, layout, engine, vllm_tensor_parallel_size,
                                           server_gpus)
    results, G = [], s.G_options[0]
    for C in _solver._completion_ladder(max_completion_length):
        for G in s.G_options:  # the user's G, else TRL's default 8 first, others only if 8 fits nowhere
            results = [LayoutResult(t, *_search_layout(s, t, C, G)) for t in topos]
            if any(r.fits for r in results):
                break
        if any(r.fits for r in results):
            break
    results += [LayoutResult(t, None, why) for t, why in rejected]
    fitting = [r for r in results if r.fits]
    if not fitting:
        shown = "; ".join(f"{r.topology.label} {ENGINE_LABELS[r.topology.engine]}: {r.why}" for r in results[:6])
        msg = f"no layout fits {spec.model_id} on {num_gpus * num_nodes} x {card.name}: {shown}"
        closest = _closest(options) if relax else None
        if closest is not None:
            c = closest.config
            msg += (f"; closest plan that fits: {closest.extra['relaxation']} with {closest.topology.label}, "
                    f"{ENGINE_LABELS[closest.topology.engine]}, micro-batch {c['per_device_train_batch_size']}, "
                    f"max_completion_length {c['max_completion_length']}")
        raise InfeasibleError(msg, closest=closest)
    best = max(fitting, key=lambda r: r.option.key())
    results = [replace(r, chosen=r is best) for r in results]
    host = server_host or TRL_SERVE_DEFAULT_HOST
    return _build_plan(s, best.option, results, cards, host, server_port, G, explicit_host=server_host is not None)


def _closest(options: dict):
    """The nearest plan that fits when the request does not (solver._infeasible's relaxations)."""
    tries = []
    if options["weights"] in ("bf16", "fp16", "fp32"):
        tries.append(("4-bit weights (--weights nf4)", dict(weights="nf4")))
    if options["finetune"] == "lora" and options["lora_rank"] > 8:
        tries.append(("LoRA rank 8", dict(lora_rank=8)))
    for label, change in tries:
        kw = {**options, **change, "relax": False}
        try:
            dp = plan_distributed(**kw)
        except (InfeasibleError, InvalidSetupError):
            continue
        return replace(dp, extra={**dp.extra, "relaxation": label})
    return None


def _prepare(model, gpu, num_gpus: int, num_nodes: int, o: dict) -> tuple:
    """Validate the options shared by plan_distributed and estimate_distributed; build the search."""
    from .estimation import default_logprob_head
    from .memory.allocator import expandable_segments_from_env

    spec = resolve_model(model)
    for name, v in (("num_gpus", num_gpus), ("num_nodes", num_nodes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidSetupError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
    card, cards = resolve_gpus(gpu, num_gpus, num_nodes)
    lo, hi = _solver._check_targets(spec, o["utilization_range"], o["margin"], o["num_generations"],
                                    o["max_completion_length"], o["prompt_length"], o["sleep_mode"], o["weights"])
    slo, shi = (float(x) for x in o["server_utilization_range"])
    if not 0 < slo <= shi <= 1:
        raise InvalidSetupError(f"server utilisation range must satisfy 0 < LO <= HI <= 1, got {slo},{shi}")
    es = o["expandable_segments"]
    es = expandable_segments_from_env() if es is None else es
    targets_ = o["lora_target_modules"]
    base = dict(weights=o["weights"], finetune=o["finetune"], lora_rank=o["lora_rank"],
                lora_target_modules=tuple(targets_) if targets_ else None, optim=o["optim"],
                logprob_head=o["logprob_head"] or default_logprob_head(), expandable_segments=bool(es))
    ckpt = True if o["gradient_checkpointing"] is None else bool(o["gradient_checkpointing"])
    targets = dict(num_generations=o["num_generations"], max_completion_length=o["max_completion_length"],
                   prompt_length=o["prompt_length"], utilization_range=[lo, hi], margin=o["margin"],
                   sleep_mode=o["sleep_mode"], layout=o["layout"], engine=o["engine"], num_gpus=num_gpus,
                   num_nodes=num_nodes)
    vkw = dict(vllm_version=o["vllm_version"], trl_version=o["trl_version"],
               vllm_kv_cache_dtype=o["vllm_kv_cache_dtype"], calibration=o["calibration"])
    return _Search(spec, card, base, ckpt, targets, lo, hi, o["margin"], o["sleep_mode"], vkw, (slo, shi)), cards


def estimate_distributed(model: "str | ModelSpec", gpu="H100-80GB", num_gpus: int = 1, num_nodes: int = 1, *,
                         layout: str = "colocate", engine: str = "ddp", vllm_tensor_parallel_size: int = 1,
                         server_gpus: int = 1, server_tensor_parallel_size: int | None = None,
                         server_data_parallel_size: int = 1, server_gpu_memory_utilization: float =
                         TRL_SERVE_DEFAULT_UTILIZATION, server_host: str | None = None,
                         server_port: int = TRL_SERVE_DEFAULT_PORT, batch_size: int = 1,
                         steps_per_generation: int = 1, num_generations: int = 8, prompt_length: int = 256,
                         completion_length: int = 512, vllm_gpu_memory_utilization: float = 0.3,
                         sleep_mode: bool = False, weights: str = "bf16", finetune: str = "lora",
                         lora_rank: int = 16, lora_target_modules=None, optim: str = "adamw_8bit",
                         gradient_checkpointing: bool = True, logprob_head: str | None = None,
                         expandable_segments: bool | None = None, margin: float = 0.05,
                         vllm_version: str | None = None, trl_version: str | None = None,
                         vllm_kv_cache_dtype: str = "auto", calibration="auto") -> DistributedPlan:
    """Per-rank memory of one fixed multi-GPU setup, no solving (``plan estimate --num-gpus``).

    The layout is given (``layout`` ``colocate`` or ``server``, the engine, TP / server split),
    so are batch, steps per generation, lengths and utilisations. Returns a
    :class:`DistributedPlan` whose ``fits`` says whether every GPU stays under the margin."""
    if layout not in VLLM_MODES:
        raise InvalidSetupError(f"--layout must be colocate or server for an estimate, got {layout!r}")
    s, cards = _prepare(model, gpu, num_gpus, num_nodes, dict(
        layout=layout, engine=engine, server_utilization_range=(server_gpu_memory_utilization,) * 2,
        weights=weights, finetune=finetune, lora_rank=lora_rank, lora_target_modules=lora_target_modules,
        optim=optim, gradient_checkpointing=gradient_checkpointing, logprob_head=logprob_head,
        expandable_segments=expandable_segments, num_generations=num_generations,
        max_completion_length=completion_length, prompt_length=prompt_length,
        utilization_range=(vllm_gpu_memory_utilization,) * 2, margin=margin,
        sleep_mode="on" if sleep_mode else "off", vllm_version=vllm_version, trl_version=trl_version,
        vllm_kv_cache_dtype=vllm_kv_cache_dtype, calibration=calibration))
    for name, v in (("batch_size", batch_size), ("steps_per_generation", steps_per_generation)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidSetupError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
    if layout == "colocate":
        topo = Topology(num_gpus, num_nodes, engine, "colocate", vllm_tensor_parallel_size=vllm_tensor_parallel_size)
    else:
        t = server_tensor_parallel_size or server_gpus // server_data_parallel_size
        topo = Topology(num_gpus, num_nodes, engine, "server", server_gpus=server_gpus,
                        server_tensor_parallel_size=t, server_data_parallel_size=server_data_parallel_size)
    why = tp_problem(s.spec, topo.vllm_tensor_parallel_size if layout == "colocate" else
                     topo.server_tensor_parallel_size)
    if why:
        raise InvalidSetupError(why)
    C, B, S = completion_length, batch_size, steps_per_generation
    r = s.rank(topo, B, C)
    row = (r.peak_bytes, r.steady_bytes, r.load_bytes, r.sync_bytes)
    if layout == "colocate":
        cap, awake, asleep = s.colocated(topo.vllm_tensor_parallel_size, vllm_gpu_memory_utilization, C)
        conc = int(cap.max_concurrency) * topo.num_engines
        peak = _rank_peak(*row, awake, asleep, sleep_mode)
        opt = _Option(topo, C, B, B * S, vllm_gpu_memory_utilization, sleep_mode, conc, peak)
    else:
        from .vllm import vllm_capacity

        scap = vllm_capacity(s.spec, s.card, gpu_memory_utilization=server_gpu_memory_utilization,
                             max_model_len=prompt_length + C, tensor_parallel_size=topo.server_tensor_parallel_size,
                             kv_cache_dtype=vllm_kv_cache_dtype, vllm_version=vllm_version,
                             usage_context="OPENAI_API_SERVER")
        conc = topo.server_data_parallel_size * min(int(scap.max_concurrency), scap.max_num_seqs)
        opt = _Option(topo, C, B, B * S, server_gpu_memory_utilization, False, conc, _rank_peak(*row, None, 0, False),
                      sum(server_gpu_components(scap, s.spec).values()))
    rows = (LayoutResult(topo, opt, chosen=True),)
    return _build_plan(s, opt, rows, cards, server_host or TRL_SERVE_DEFAULT_HOST, server_port, num_generations,
                       explicit_host=server_host is not None, evaluated=True)


def _build_plan(s: _Search, opt: _Option, results, cards, server_host, server_port, G: int,
                explicit_host: bool = False, evaluated: bool = False) -> DistributedPlan:
    from .estimation import colocated_vllm
    from .vllm import vllm_capacity

    spec, card, topo = s.spec, s.card, opt.topology
    N, B, C, P = topo.world_size, opt.batch_size, opt.completion_length, s.P
    n = opt.completions_per_device
    S = n // B
    setup = s.setup(B, C, world=N)
    from .estimation import calibrated_trainer_memory, resolve_calibration

    tm, label, warnings = calibrated_trainer_memory(spec, replace(setup, world_size=1),
                                                    resolve_calibration(spec, card, s.vkw["calibration"]))
    rank = rank_trainer_memory(spec, setup, topo, trainer=tm)
    roles = {}
    server = None
    if topo.vllm_mode == "colocate":
        tp = topo.vllm_tensor_parallel_size
        # what TRL passes: max_num_seqs = B x TP x S (grpo_trainer.py, VLLMGeneration(...))
        cap = colocated_vllm(spec, card, rank.vllm_start_bytes, opt.utilization, weights=s.base["weights"],
                             max_model_len=P + C, max_num_seqs=B * S * tp, tensor_parallel_size=tp,
                             kv_cache_dtype=s.vkw["vllm_kv_cache_dtype"], vllm_version=s.vkw["vllm_version"],
                             trl_version=s.vkw["trl_version"])
        roles["training_rank"] = RoleMemory("training_rank", N, topo.training_devices,
                                            training_rank_phases(rank, cap, opt.sleep), s.budget, rank, cap)
    else:
        t, d = topo.server_tensor_parallel_size, topo.server_data_parallel_size
        roles["training_rank"] = RoleMemory("training_rank", N, topo.training_devices,
                                            training_rank_phases(rank, None), s.budget, rank)
        scap = vllm_capacity(spec, card, gpu_memory_utilization=opt.utilization, max_model_len=P + C,
                             tensor_parallel_size=t, kv_cache_dtype=s.vkw["vllm_kv_cache_dtype"],
                             vllm_version=s.vkw["vllm_version"], usage_context="OPENAI_API_SERVER")
        roles["server_gpu"] = RoleMemory("server_gpu", topo.server_gpus, topo.server_devices,
                                         (Phase("serving", server_gpu_components(scap, spec)),), s.budget, None, scap)
        server = {"model": spec.model_id, "tensor_parallel_size": t, "data_parallel_size": d,
                  "gpu_memory_utilization": opt.utilization, "max_model_len": P + C,
                  "kv_cache_dtype": s.vkw["vllm_kv_cache_dtype"], "host": TRL_SERVE_DEFAULT_HOST,
                  "port": server_port, "cuda_visible_devices": topo.server_devices,
                  "node": 0, "max_num_seqs": scap.max_num_seqs, "max_num_batched_tokens": scap.max_num_batched_tokens}
    config = {
        "per_device_train_batch_size": B,
        "gradient_accumulation_steps": S,
        # Global and explicit: TRL derives steps_per_generation = generation_batch_size / (B x world)
        # = S at the real world size, and the file parses on any machine (grpo_config.py L1077-1095).
        "generation_batch_size": B * S * N,
        "num_generations": G,
        "max_completion_length": C,
        "use_vllm": True,
        "vllm_mode": topo.vllm_mode,
    }
    if topo.vllm_mode == "colocate":
        config.update({"vllm_gpu_memory_utilization": opt.utilization, "vllm_max_model_length": P + C,
                       "vllm_enable_sleep_mode": opt.sleep,
                       "vllm_tensor_parallel_size": topo.vllm_tensor_parallel_size})
    else:
        config.update({"vllm_server_host": server_host, "vllm_server_port": server_port})
    config.update({"gradient_checkpointing": s.ckpt, "bf16": bool(card.bf16) and s.base["weights"] != "fp32",
                   "optim": s.base["optim"]})
    accelerate = accelerate_settings(topo, config)
    deepspeed = deepspeed_settings(topo, config)
    checks = topology_checks(spec, topo, cards if len({c.total_bytes for c in cards}) > 1 else (), config)
    if topo.vllm_mode == "server" and topo.num_nodes > 1 and not explicit_host:
        checks.append(_check("server-host", "warning", f"vllm_server_host is {server_host}: the training nodes must "
                             "reach the server on node 0", "re-plan with --server-host <node 0 address>"))
    sync = rank.sync_components.get("zero3_full_gather")
    if sync:
        checks.append(_check("zero3-peft-sync", "info", f"ZeRO-3 + PEFT: each weight sync gathers the full model "
                             f"({sync / GIB:.1f} GiB per GPU) before merging the adapters (TRL 1.16 "
                             f"vllm_generation.py); counted in the weight_sync phase"))
    plan_rows = tuple(results)
    if evaluated:
        reasons = [f"evaluated as given (no search): {topo.label}, {ENGINE_LABELS[topo.engine]}, micro-batch {B} x "
                   f"{S} steps per generation x {N} ranks, completion length {C}"]
    else:
        reasons = _reasons(s, opt, plan_rows, roles, G, S)
    role_budget_ok = all(r.peak_bytes <= r.budget_bytes for r in roles.values())
    if not role_budget_ok:
        warnings.append("with the calibrated terms the plan exceeds the margin on at least one GPU")
    return DistributedPlan(model=spec, gpu=card, gpus=tuple(cards), topology=topo, setup=setup, config=config,
                           accelerate=accelerate, deepspeed=deepspeed, server=server, roles=roles,
                           margin=s.margin, targets=dict(s.targets), reasons=tuple(reasons), layouts=plan_rows,
                           checks=tuple(checks), waves=opt.waves, memory_model=label, warnings=tuple(warnings),
                           extra={"server_host": server_host, "server_port": server_port})


def _reasons(s: _Search, opt: _Option, rows, roles, G: int, S: int) -> list:
    topo, card = opt.topology, s.card
    tgt = s.targets["max_completion_length"]
    r = []
    if opt.completion_length == tgt:
        r.append(f"completion length {tgt} reached as requested")
    else:
        r.append(f"completion length cut to {opt.completion_length} (requested {tgt}): no layout fits longer on "
                 f"{card.name} with a {s.margin:.0%} margin")
    same_split = [x for x in rows if _same_split(x.topology, topo)]
    rivals = [x for x in rows if x.fits and not _same_split(x.topology, topo)]
    best_rival = max(rivals, key=lambda x: x.option.key(), default=None)
    if topo.vllm_mode == "colocate":
        what = (f"vLLM colocated on all {topo.world_size} GPUs, {topo.num_engines} engine(s) of TP "
                f"{topo.vllm_tensor_parallel_size}")
    else:
        what = (f"`trl vllm-serve` on GPU(s) {topo.server_devices}" + (" of node 0" if topo.num_nodes > 1 else "")
                + f" (TP {topo.server_tensor_parallel_size}, DP {topo.server_data_parallel_size}), "
                f"{topo.world_size} training GPU(s)")
    line = f"layout: {what}: {opt.one_wave} completions per step in one wave"
    if best_rival is not None:
        o = best_rival.option
        line += (f"; the best other layout, {best_rival.topology.label} with "
                 f"{ENGINE_LABELS[best_rival.topology.engine]}, gets {o.one_wave} at completion length "
                 f"{o.completion_length}, micro-batch {o.batch_size}")
    none_fit = [x for x in rows if not x.fits and not _same_split(x.topology, topo)]
    if none_fit and best_rival is None:
        line += f"; no other layout fits ({none_fit[0].topology.label}: {none_fit[0].why})"
    r.append(line)
    lower = [x for x in same_split if _COMMUNICATION_RANK[x.topology.engine] < _COMMUNICATION_RANK[topo.engine]]
    eng = ENGINE_LABELS[topo.engine]
    if topo.world_size == 1:
        r.append("engine: one training process, nothing to shard")
    elif not lower:
        r.append(f"engine: {eng}, the lowest-communication engine, fits")
    else:
        parts = []
        for x in lower:
            if x.fits:
                parts.append(f"{ENGINE_LABELS[x.topology.engine]} fits only {x.option.one_wave} completions in one "
                             f"wave (micro-batch {x.option.batch_size})")
            else:
                parts.append(f"{ENGINE_LABELS[x.topology.engine]} does not fit: {x.why}")
        r.append(f"engine: {eng}, because " + "; ".join(parts))
    r.append(f"{opt.completions} completions per step ({opt.completions // G} prompts x {G} generations) = "
             f"micro-batch {opt.batch_size} x {S} steps per generation x {topo.world_size} ranks; vLLM holds "
             f"{opt.concurrency} full-length sequences at once over {topo.num_engines} engine(s), so "
             f"{'one wave' if opt.waves == 1 else f'{opt.waves} waves'}")
    b_max = _largest_fitting_batch(s, opt)
    where = "beside vLLM" if topo.vllm_mode == "colocate" else "with the weight sync"
    if b_max > opt.batch_size:
        r.append(f"micro-batch {opt.batch_size}: up to {b_max} fits {where}, but B x S must be a multiple of B "
                 f"(and B x S x {topo.world_size} of {G}); {opt.batch_size} reaches the most completions in one wave")
    else:
        r.append(f"micro-batch {opt.batch_size}: the largest whose training step fits {where}")
    tr = roles["training_rank"]
    if topo.vllm_mode == "colocate":
        r.append(f"vllm_gpu_memory_utilization {opt.utilization:.2f}: the highest that keeps every phase of a training "
                 f"rank under {(1 - s.margin):.0%} of {card.total_bytes / GIB:.1f} GiB (binding phase: "
                 f"{tr.binding_phase})")
        r.append("sleep mode on: without it the training step does not fit beside vLLM's budget"
                 if opt.sleep else "sleep mode off: everything fits awake (no wake-up latency)")
    else:
        r.append(f"server --gpu-memory-utilization {opt.utilization:.2f}: the highest whose footprint stays under "
                 f"{(1 - s.margin):.0%} of the card (trl vllm-serve's default is {TRL_SERVE_DEFAULT_UTILIZATION}); "
                 f"training rank binding phase: {tr.binding_phase}")
    return r


def _largest_fitting_batch(s: _Search, opt: _Option) -> int:
    """The largest micro-batch whose phases fit at the chosen utilisation and sleep setting."""
    topo = opt.topology
    if topo.vllm_mode == "colocate":
        _, awake, asleep = s.colocated(topo.vllm_tensor_parallel_size, opt.utilization, opt.completion_length)
    else:
        awake, asleep = None, 0
    b = 0
    for B, (peak, steady, load, sync, _) in enumerate(s.rows(topo, opt.completion_length), start=1):
        if _rank_peak(peak, steady, load, sync, awake, asleep, opt.sleep) > s.budget:
            break
        b = B
    return b


def _same_split(a: Topology, b: Topology) -> bool:
    return (a.vllm_mode, a.vllm_tensor_parallel_size, a.server_gpus, a.server_tensor_parallel_size) == \
        (b.vllm_mode, b.vllm_tensor_parallel_size, b.server_gpus, b.server_tensor_parallel_size)


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
                     "stage3_max_reuse_distance": ZERO3_MAX_REUSE_DISTANCE,
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


# -- CLI hooks (the lead's planner/commands/plan.py calls these) --------------------------------

def add_topology_arguments(parser) -> None:
    """``--num-gpus``, ``--num-nodes``, ``--layout``, ``--engine``, ``--server-gpus``,
    ``--server-host``, ``--server-port``, ``--output-dir``. ``--gpu`` may be a comma-separated list
    (GPUs of different sizes). A ``--vllm-tensor-parallel-size`` registered before this call gets
    the default None (= let the solver choose); without one, this adds it."""
    g = parser.add_argument_group("multi-GPU layout")
    g.add_argument("--num-gpus", type=int, default=1, help="GPUs per node")
    g.add_argument("--num-nodes", type=int, default=1, help="nodes (server mode on several nodes: node 0 serves)")
    g.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="vLLM colocated on the training GPUs, a `trl vllm-serve` server on GPUs of its own, or auto")
    g.add_argument("--engine", choices=("auto",) + ENGINES, default="auto",
                   help="data-parallel engine (auto: the lowest ZeRO stage that reaches the objective)")
    g.add_argument("--server-gpus", type=int, default=None, help="GPUs for the vLLM server (default: searched)")
    g.add_argument("--server-host", default=None, help="address the trainer uses to reach the server")
    g.add_argument("--server-port", type=int, default=TRL_SERVE_DEFAULT_PORT)
    g.add_argument("--output-dir", default=None,
                   help="write grpo.yaml, accelerate.yaml, deepspeed.json, launch.sh (and vllm_serve.sh) here")
    if "--vllm-tensor-parallel-size" in parser._option_string_actions:
        parser.set_defaults(vllm_tensor_parallel_size=None)
    else:
        g.add_argument("--vllm-tensor-parallel-size", type=int, default=None,
                       help="colocated vLLM TP size (default: searched)")


def _gpu_arg(gpu):
    if isinstance(gpu, str) and "," in gpu:
        return [g.strip() for g in gpu.split(",") if g.strip()]
    return gpu


def plan_from_topology_args(args, **plan_kwargs) -> DistributedPlan:
    """``plan_distributed`` from parsed arguments: ``args.model``, ``args.gpu`` and the topology
    flags; ``plan_kwargs`` are passed through (trainer and vLLM options the caller parsed)."""
    kw = dict(plan_kwargs)
    for name in ("engine", "server_gpus", "server_host", "server_port"):
        if getattr(args, name, None) is not None:
            kw.setdefault(name, getattr(args, name))
    tp = getattr(args, "vllm_tensor_parallel_size", None)
    if tp is not None:
        kw.setdefault("vllm_tensor_parallel_size", tp)
    return plan_distributed(kw.pop("model", args.model), _gpu_arg(kw.pop("gpu", args.gpu)),
                            num_gpus=getattr(args, "num_gpus", 1), num_nodes=getattr(args, "num_nodes", 1),
                            layout=getattr(args, "layout", "auto"), **kw)


def estimate_from_topology_args(args, **estimate_kwargs) -> DistributedPlan:
    """``estimate_distributed`` from ``plan estimate``'s parsed arguments plus the topology flags:
    ``--layout auto`` means colocate, ``--engine auto`` DDP, an unset TP 1, an unset
    ``--server-gpus`` 1; ``estimate_kwargs`` (trainer / vLLM options) pass through."""
    kw = dict(estimate_kwargs)
    layout = getattr(args, "layout", "auto")
    kw.setdefault("layout", "colocate" if layout == "auto" else layout)
    engine = getattr(args, "engine", "auto")
    kw.setdefault("engine", "ddp" if engine in (None, "auto") else engine)
    for name in ("vllm_tensor_parallel_size", "server_gpus", "server_host", "server_port", "batch_size",
                 "steps_per_generation", "prompt_length", "completion_length", "vllm_gpu_memory_utilization",
                 "sleep_mode", "num_generations"):
        if getattr(args, name, None) is not None:
            kw.setdefault(name, getattr(args, name))
    return estimate_distributed(kw.pop("model", args.model), _gpu_arg(kw.pop("gpu", args.gpu)),
                                num_gpus=getattr(args, "num_gpus", 1), num_nodes=getattr(args, "num_nodes", 1), **kw)


# -- text output ----------------------------------------------------------------------------

def _g(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def layouts_table(plan: DistributedPlan) -> list[str]:
    """The layout comparison as markdown-style table lines."""
    head = ["| layout | engine | fits | per-rank peak | server GPU peak | completions/step in one wave | "
            "micro-batch | utilisation | |",
            "|---|---|---|---|---|---|---|---|---|"]
    out = []
    for row in plan.layouts:
        t, o = row.topology, row.option
        eng = "-" if t.world_size == 1 else ENGINE_LABELS[t.engine]
        if o is None:
            out.append(f"| {t.label} | {eng} | no: {row.why} | | | | | | |")
        else:
            sp = _g(o.server_peak_bytes) if o.server_peak_bytes else ""
            out.append(f"| {t.label} | {eng} | yes | {_g(o.peak_bytes)} | {sp} | {o.one_wave} | {o.batch_size} | "
                       f"{o.utilization:.2f}{' +sleep' if o.sleep else ''} | {'**chosen**' if row.chosen else ''} |")
    return head + out


def render(plan: DistributedPlan) -> str:
    """Human-readable plan: layout, config, per-role memory by phase, layouts compared, reasons."""
    t, spec = plan.topology, plan.model
    cards = sorted({g.name for g in plan.gpus})
    out = [f"{spec.model_id} ({spec.n_params / 1e9:.2f} B params) on {t.total_gpus} x {'/'.join(cards)}"
           f" ({t.num_nodes} node{'s' if t.num_nodes > 1 else ''}); planned for {plan.gpu.name} "
           f"({plan.gpu.total_bytes / GIB:.2f} GiB), margin {plan.margin:.0%}; memory model: {plan.memory_model}"]
    eng = "single process" if t.world_size == 1 else ENGINE_LABELS[t.engine]
    if t.vllm_mode == "colocate":
        out.append(f"layout: colocate, {t.world_size} training rank(s), {eng}, vLLM TP {t.vllm_tensor_parallel_size} "
                   f"({t.num_engines} engine(s))")
    else:
        sv = plan.server
        out.append(f"layout: server, `trl vllm-serve` on GPU(s) {t.server_devices}"
                   + (" of node 0" if t.num_nodes > 1 else "")
                   + f" (TP {sv['tensor_parallel_size']}, DP {sv['data_parallel_size']}, utilisation "
                   f"{sv['gpu_memory_utilization']}); {t.world_size} training rank(s) on "
                   + (f"GPUs {t.training_devices}" if t.num_nodes == 1 else f"nodes 1-{t.num_nodes - 1}")
                   + f", {eng}")
    out.append("GRPOConfig: " + ", ".join(f"{k}={v}" for k, v in plan.config.items()))
    for name, role in plan.roles.items():
        title = "training rank (rank 0, the worst)" if name == "training_rank" else "server GPU"
        out.append(f"{title} x {role.count}: peak {_g(role.peak_bytes)} of {_g(role.budget_bytes)} budget "
                   f"(binding phase {role.binding_phase}, headroom {_g(role.headroom_bytes)})")
        binding = max(role.phases, key=lambda p: p.peak_bytes)
        width = max(len(k) for k in binding.components)
        for k, v in binding.components.items():
            if v:
                out.append(f"    {k:<{width}}  {_g(v):>11}")
        out.append("  phases: " + ", ".join(f"{p.name} {_g(p.peak_bytes)}" for p in role.phases))
    out.append("layouts considered:")
    out += ["  " + line for line in layouts_table(plan)]
    out.append("why:")
    out += [f"  - {r}" for r in plan.reasons]
    for c in plan.checks:
        if c.severity != "info":
            out.append(f"{c.severity}: {c.id}: {c.message}" + (f" (fix: {c.fix})" if c.fix else ""))
    out += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(out)
