"""Where every process runs: the engine and layout names, DeepSpeed's and ``trl vllm-serve``'s
defaults, ``Topology`` and the GPUs given (``resolve_gpus``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidSetupError
from .gpu import GpuSpec, resolve_gpu

ENGINES = ("ddp", "zero1", "zero2", "zero3", "fsdp")
AUTO_ENGINES = ("ddp", "zero1", "zero2", "zero3")  # FSDP only on request (package docstring)
DEEPSPEED_ENGINES = ("zero1", "zero2", "zero3")
SHARDED_PARAM_ENGINES = ("zero3", "fsdp")
VLLM_MODES = ("colocate", "server", "generate")  # generate: no vLLM, transformers' generate (use_vllm=False)
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
ZERO3_SUB_GROUP_SIZE = 1_000_000_000  # elements of the fp32 partition the optimizer steps at once
DEEPSPEED_DEFAULTS = {
    "reduce_bucket_size": ZERO_REDUCE_BUCKET_SIZE,
    "allgather_bucket_size": ZERO_ALLGATHER_BUCKET_SIZE,
    "overlap_comm": ZERO_OVERLAP_COMM,
    "contiguous_gradients": ZERO_CONTIGUOUS_GRADIENTS,
    "stage3_prefetch_bucket_size": ZERO3_PREFETCH_BUCKET_SIZE,
    "stage3_param_persistence_threshold": ZERO3_PARAM_PERSISTENCE_THRESHOLD,
    "stage3_max_live_parameters": ZERO3_MAX_LIVE_PARAMETERS,
    "stage3_max_reuse_distance": ZERO3_MAX_REUSE_DISTANCE,
    "sub_group_size": ZERO3_SUB_GROUP_SIZE,
}

# `trl vllm-serve` (trl 1.16 trl/scripts/vllm_serve.py, ScriptArguments)
TRL_SERVE_DEFAULT_UTILIZATION = 0.9
TRL_SERVE_DEFAULT_HOST = "0.0.0.0"
TRL_SERVE_DEFAULT_PORT = 8000
SERVER_UTILIZATION_RANGE = (0.5, 0.95)  # the server owns its GPUs: the highest that fits wins


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
    vllm_mode: str = "colocate"  # colocate | server | generate (no vLLM: use_vllm=False)
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
        if self.vllm_mode in ("colocate", "generate"):
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
        if self.vllm_mode == "generate":
            return 0
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
        if self.vllm_mode == "generate":
            return "no vLLM (transformers generate)"
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
