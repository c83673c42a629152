"""What the user asks for, as frozen typed objects: built once (from the CLI or the Python API),
validated in one place that collects every problem, and never re-packed by hand.

    req = plan_request("Qwen/Qwen2.5-7B-Instruct", "H100-80GB", lora_rank=32, num_gpus=4)
    req.trainer.lora_rank, req.topology.num_gpus       # 32, 4
    dataclasses.replace(req, trainer=dataclasses.replace(req.trainer, weights="nf4"))

The defaults live here and nowhere else. :func:`plan_request` takes the flat keyword arguments of
``planner.plan`` (one name per field, see :data:`FIELDS`), rejects unknown names, and
:func:`validate_request` raises one :class:`~planner.errors.InvalidSetupError` whose message has
one line per problem. Relations that need the model (context length, tensor parallelism vs heads)
are checked by :func:`model_problems` once the model is resolved.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import InvalidSetupError
from .gpu_spec import GpuSpec
from .memory.logprob_head import LOGPROB_HEADS
from .memory.lora import lora_targets
from .memory.optimizer import OPTIMIZERS
from .memory.trainer import COMPLETION_LENGTHS, FINETUNE_MODES
from .memory.weights import WEIGHT_FORMATS
from .model_spec import ModelSpec

SLEEP_MODES = ("auto", "on", "off")
KV_CACHE_DTYPES = ("auto", "fp8")
LAYOUTS = ("auto", "colocate", "server")
ENGINES = ("auto", "ddp", "zero1", "zero2", "zero3", "fsdp")
MAX_GPUS_PER_NODE = 64  # a sanity bound: the largest NVLink domains have 72 GPUs in 18 nodes
MAX_NODES = 1024
ALL_LINEAR = "all-linear"  # PEFT's own spelling of "every linear projection" (= None here)


@dataclass(frozen=True)
class TrainerOptions:
    """The trainer side: weights, fine-tuning, optimizer, allocator."""

    weights: str = "bf16"  # bf16 | fp16 | fp32 | nf4 | int8
    finetune: str = "lora"  # lora | full
    lora_rank: int = 16  # higher: more adapter, gradient and optimizer bytes
    lora_target_modules: tuple[str, ...] | None = None  # None: every linear projection
    optim: str = "adamw_8bit"
    gradient_checkpointing: bool = True  # TRL's default; reduces memory
    logprob_head: str | None = None  # None: what the TRL release planned for uses
    expandable_segments: bool | None = None  # None: read PYTORCH_CUDA_ALLOC_CONF
    transformers_version: str | None = None  # None: installed, else the newest known


@dataclass(frozen=True)
class VllmOptions:
    """The vLLM engine TRL builds, and the releases planned for."""

    kv_cache_dtype: str = "auto"  # auto | fp8
    tensor_parallel_size: int | None = None  # None: 1 on one GPU, searched on several
    vllm_version: str | None = None  # None: installed, else the newest the TRL release supports
    trl_version: str | None = None  # None: installed, else the newest known


@dataclass(frozen=True)
class Targets:
    """What the search aims for and the bounds it keeps."""

    num_generations: int | None = None  # None: TRL's 8 first, then 16, 4, 2
    max_completion_length: int | None = None  # None: the TRL release's default
    prompt_length: int = 256  # longest prompt (tokens); sets vllm_max_model_length with the completion
    utilization_range: tuple[float, float] = (0.3, 0.7)  # vllm_gpu_memory_utilization searched
    margin: float = 0.05  # safety margin, a fraction of the card
    sleep_mode: str = "auto"  # auto | on | off
    max_batch: int = 64  # the largest per_device_train_batch_size tried
    max_completions_per_step: int = 512  # the most completions per device per optimizer step


@dataclass(frozen=True)
class TopologyOptions:
    """Where the processes run."""

    num_gpus: int = 1  # per node
    num_nodes: int = 1
    layout: str = "auto"  # auto | colocate | server
    engine: str = "auto"  # auto | ddp | zero1 | zero2 | zero3 | fsdp
    server_gpus: int | None = None  # None: searched
    server_host: str | None = None  # None: trl vllm-serve's default
    server_port: int = 8000
    server_utilization_range: tuple[float, float] = (0.5, 0.95)


@dataclass(frozen=True)
class PlanRequest:
    """Everything ``planner.plan`` takes."""

    model: Any  # a name, a path, or a ModelSpec
    gpu: Any = "auto"  # a name, "auto", a GpuSpec, or a list of them (one per GPU)
    trainer: TrainerOptions = TrainerOptions()
    vllm: VllmOptions = VllmOptions()
    targets: Targets = Targets()
    topology: TopologyOptions = TopologyOptions()
    calibration: Any = "auto"  # "auto", None (analytic) or a Calibration
    relax: bool = True  # when nothing fits, search for the closest plan that does

    def with_options(self, **changes: Any) -> PlanRequest:
        """A copy with flat field changes (``weights="nf4"``), each routed to its section."""
        sections: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for name, value in changes.items():
            section = FIELDS.get(name)
            if section is None:
                raise InvalidSetupError(_unknown(name))
            if section == "":
                top[name] = value
            else:
                sections.setdefault(section, {})[name] = value
        for section, kw in sections.items():
            top[section] = replace(getattr(self, section), **kw)
        return replace(self, **top)

    @property
    def multi_gpu(self) -> bool:
        """More than one GPU, or a layout only several GPUs have."""
        t = self.topology
        gpus = self.gpu if isinstance(self.gpu, (list, tuple)) else ()
        return t.num_gpus * t.num_nodes > 1 or t.layout == "server" or len(gpus) > 1


# flat keyword name -> the section that owns it ("" = PlanRequest itself)
FIELDS: dict[str, str] = {
    **{f.name: "trainer" for f in fields(TrainerOptions)},
    **{f.name: "vllm" for f in fields(VllmOptions)},
    **{f.name: "targets" for f in fields(Targets)},
    **{f.name: "topology" for f in fields(TopologyOptions)},
    "calibration": "", "relax": "",
}
# the Python API also takes TRL's spelling of the vLLM options
ALIASES = {"vllm_kv_cache_dtype": "kv_cache_dtype", "vllm_tensor_parallel_size": "tensor_parallel_size"}


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, list(FIELDS) + list(ALIASES), n=1)
    return f"unknown option '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def plan_request(model: Any, gpu: Any = "auto", **options: Any) -> PlanRequest:
    """A validated :class:`PlanRequest` from ``planner.plan``'s flat keyword arguments."""
    problems = [_unknown(k) for k in options if k not in FIELDS and k not in ALIASES]
    if problems:
        raise InvalidSetupError("\n".join(problems))
    options = {ALIASES.get(k, k): v for k, v in options.items()}
    if "lora_target_modules" in options:
        options["lora_target_modules"] = normalise_targets(options["lora_target_modules"])
    for key in ("utilization_range", "server_utilization_range"):
        if isinstance(options.get(key), list):
            options[key] = tuple(options[key])
    req = PlanRequest(model=model, gpu=tuple(gpu) if isinstance(gpu, list) else gpu).with_options(**options)
    validate_request(req)
    return req


def normalise_targets(mods: Any) -> Any:
    """LoRA targets as the request holds them: a list becomes a tuple, PEFT's ``"all-linear"``
    (alone, as a string or a one-item list) becomes None (every linear projection). Anything else
    is left for :func:`request_problems` to reject (a string like ``"q_proj,v_proj"`` is not a list)."""
    if isinstance(mods, list):
        mods = tuple(mods)
    if mods == ALL_LINEAR or mods == (ALL_LINEAR,):
        return None
    return mods


# -- validation --------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _positive_int(problems: list[str], name: str, v: Any, upper: int | None = None, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not _is_int(v) or v < 1:
        problems.append(f"{_flag(name)} must be a positive integer, got {v!r}")
    elif upper is not None and v > upper:
        problems.append(f"{_flag(name)} must be at most {upper}, got {v}")


def _choice(problems: list[str], name: str, v: Any, choices: tuple, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not isinstance(v, str) or v not in choices:
        problems.append(f"{_flag(name)} must be one of {', '.join(choices)}, got {v!r}")


def _range(problems: list[str], name: str, v: Any) -> None:
    if not isinstance(v, tuple) or len(v) != 2 or not all(_is_number(x) for x in v):
        problems.append(f"{_flag(name)} must be two numbers LO,HI (e.g. 0.3,0.7), got {v!r}")
    elif not 0 < v[0] <= v[1] <= 1:
        problems.append(f"{_flag(name)} must satisfy 0 < LO <= HI <= 1, got {v[0]},{v[1]}")


def _bool(problems: list[str], name: str, v: Any, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not isinstance(v, bool):
        problems.append(f"{name} must be True or False, got {v!r}")


def _version(problems: list[str], name: str, v: Any) -> None:
    if v is not None and (not isinstance(v, str) or not v.strip()):
        problems.append(f"{_flag(name)} must be a release number like '1.16.0', got {v!r}")


def request_problems(req: PlanRequest, colocated: bool = True) -> list[str]:
    """Every problem of the request that needs no model, one line each. ``colocated``: vLLM shares
    the trainer's GPU (a plan always may; an estimate only with a vLLM utilisation)."""
    p: list[str] = []
    t, v, g, o = req.trainer, req.vllm, req.targets, req.topology
    _choice(p, "weights", t.weights, WEIGHT_FORMATS)
    _choice(p, "finetune", t.finetune, FINETUNE_MODES)
    _positive_int(p, "lora_rank", t.lora_rank, upper=65536)
    mods = t.lora_target_modules
    if mods is not None and (not isinstance(mods, tuple) or not mods
                             or not all(isinstance(m, str) and m.strip() for m in mods)):
        p.append(f"--lora-target-modules must be a list of module names (e.g. ['q_proj', 'v_proj']) or "
                 f"'{ALL_LINEAR}', got {mods!r}")
    _choice(p, "optim", t.optim, OPTIMIZERS)
    _bool(p, "gradient_checkpointing", t.gradient_checkpointing)
    _choice(p, "logprob_head", t.logprob_head, LOGPROB_HEADS, optional=True)
    _bool(p, "expandable_segments", t.expandable_segments, optional=True)
    _version(p, "transformers_version", t.transformers_version)
    if t.finetune == "full" and t.weights in ("nf4", "int8"):
        p.append(f"full fine-tuning of {t.weights} weights is not possible; use --finetune lora")
    if t.weights == "int8" and colocated:
        p.append("--weights int8 cannot be colocated with vLLM: TRL raises 'vLLM does not support in-flight "
                 "8-bit quantization'; use --weights nf4 or bf16")
    _choice(p, "vllm_kv_cache_dtype", v.kv_cache_dtype, KV_CACHE_DTYPES)
    _positive_int(p, "vllm_tensor_parallel_size", v.tensor_parallel_size, upper=MAX_GPUS_PER_NODE, optional=True)
    _version(p, "vllm_version", v.vllm_version)
    _version(p, "trl_version", v.trl_version)
    if g.num_generations is not None and (not _is_int(g.num_generations) or g.num_generations < 2):
        p.append(f"--num-generations must be at least 2 (GRPO needs a group to compute advantages), "
                 f"got {g.num_generations!r}")
    _positive_int(p, "max_completion_length", g.max_completion_length, optional=True)
    if not _is_int(g.prompt_length) or g.prompt_length < 0:
        p.append(f"--prompt-length must be a non-negative integer, got {g.prompt_length!r}")
    _range(p, "utilization_range", g.utilization_range)
    if not _is_number(g.margin) or not 0 <= g.margin < 0.5:
        p.append(f"--margin must be in [0, 0.5), got {g.margin!r}")
    _choice(p, "sleep_mode", g.sleep_mode, SLEEP_MODES)
    _positive_int(p, "max_batch", g.max_batch, upper=4096)
    _positive_int(p, "max_completions_per_step", g.max_completions_per_step, upper=1 << 20)
    _positive_int(p, "num_gpus", o.num_gpus, upper=MAX_GPUS_PER_NODE)
    _positive_int(p, "num_nodes", o.num_nodes, upper=MAX_NODES)
    _choice(p, "layout", o.layout, LAYOUTS)
    _choice(p, "engine", o.engine, ENGINES)
    _positive_int(p, "server_gpus", o.server_gpus, upper=MAX_GPUS_PER_NODE, optional=True)
    if o.server_host is not None and (not isinstance(o.server_host, str) or not o.server_host.strip()
                                      or any(c.isspace() for c in o.server_host)):
        p.append(f"--server-host must be a host name or address, got {o.server_host!r}")
    if not _is_int(o.server_port) or not 1 <= o.server_port <= 65535:
        p.append(f"--server-port must be a port number 1-65535, got {o.server_port!r}")
    _range(p, "server_utilization_range", o.server_utilization_range)
    if _is_int(o.num_gpus) and _is_int(o.num_nodes) and o.num_gpus * o.num_nodes == 1 and o.layout == "server":
        p.append("--layout server needs at least 2 GPUs (one serves, one trains); use --num-gpus 2 or more")
    tp = v.tensor_parallel_size
    if tp is not None and _is_int(tp) and _is_int(o.num_gpus) and o.num_gpus >= 1 and tp > o.num_gpus:
        p.append(f"--vllm-tensor-parallel-size {v.tensor_parallel_size} is larger than the {o.num_gpus} GPU(s) "
                 f"per node; use --num-gpus {v.tensor_parallel_size} or a smaller TP")
    if not isinstance(req.relax, bool):
        p.append(f"relax must be True or False, got {req.relax!r}")
    if not (req.calibration is None or (isinstance(req.calibration, str) and req.calibration == "auto")
            or type(req.calibration).__name__ == "Calibration"):
        p.append(f"calibration must be 'auto', None or a Calibration (planner.calibration), got {req.calibration!r}")
    if not (isinstance(req.model, (str, ModelSpec)) and (not isinstance(req.model, str) or req.model.strip())):
        p.append(f"--model must be a model id, a path or a ModelSpec, got {req.model!r}")
    gpus = req.gpu if isinstance(req.gpu, tuple) else (req.gpu,)
    if not gpus or not all(isinstance(x, GpuSpec) or (isinstance(x, str) and x.strip()) for x in gpus):
        p.append(f"--gpu must be a GPU name, 'auto' or a GpuSpec, got {req.gpu!r}")
    return p


def validate_request(req: PlanRequest) -> None:
    """Raise one InvalidSetupError naming every problem (one line each)."""
    problems = request_problems(req)
    if problems:
        raise InvalidSetupError("\n".join(problems))


def model_problems(req: PlanRequest, spec: ModelSpec) -> list[str]:
    """Problems that need the model: the context, the rank, the targets."""
    p: list[str] = []
    g, t = req.targets, req.trainer
    C = g.max_completion_length
    if C is not None and g.prompt_length + C > spec.max_position_embeddings:
        p.append(f"prompt + completion ({g.prompt_length} + {C}) exceeds {spec.model_id}'s context of "
                 f"{spec.max_position_embeddings} tokens")
    if t.finetune == "lora" and t.lora_rank > spec.hidden_size:
        p.append(f"--lora-rank {t.lora_rank} is larger than the hidden size ({spec.hidden_size}) of {spec.model_id}")
    if t.finetune == "lora" and t.lora_target_modules:
        p += target_problems(t.lora_target_modules, spec)
    return p


def module_names(spec: ModelSpec) -> list[str]:
    """The LoRA target names the architecture has: its linear modules, ``experts`` and ``router``
    for a mixture of experts (planner.memory.lora matches them)."""
    names = [s.group if s.group in ("experts", "router") else s.name for s in spec.linear_shapes()]
    return list(dict.fromkeys(names))


def target_problems(targets: tuple, spec: ModelSpec) -> list[str]:
    """One line when no LoRA target wraps a module of ``spec`` (PEFT raises "Target modules ... not
    found in the base model"; the plan would have 0 trainable parameters), naming the targets and
    the names the architecture has. As in PEFT, a list of which some match wraps those (and the
    memory counts those)."""
    if any(lora_targets(spec, (m,)) for m in targets):
        return []
    quoted = ", ".join(repr(m) for m in targets)
    hint = f" ('{ALL_LINEAR}' alone means every one)" if ALL_LINEAR in targets else f" or '{ALL_LINEAR}'"
    return [f"--lora-target-modules {quoted} match{'es' * (len(targets) == 1)} no module of {spec.model_id}; "
            f"its linear modules are {', '.join(module_names(spec))}{hint}"]


def fixed_setup_problems(*, batch_size: Any = 1, prompt_length: Any = 0, completion_length: Any = 1,
                         steps_per_generation: Any = 1, gradient_accumulation_steps: Any = 1,
                         completion_lengths: Any = "varied", sleep_mode: Any = False,
                         vllm_gpu_memory_utilization: Any = None, vllm_max_model_len: Any = None,
                         vllm_max_num_seqs: Any = None, vllm_max_num_batched_tokens: Any = None,
                         vllm_enforce_eager: Any = False, vllm_quantization: Any = None) -> list[str]:
    """What ``planner.estimate`` takes beyond the request's fields (one fixed setup), with the same
    rules and messages; and the relations a fixed setup adds (vLLM's max_model_len vs the lengths)."""
    p: list[str] = []
    _positive_int(p, "batch_size", batch_size, upper=4096)
    _positive_int(p, "completion_length", completion_length)
    _positive_int(p, "steps_per_generation", steps_per_generation, upper=1 << 16)
    _positive_int(p, "gradient_accumulation_steps", gradient_accumulation_steps, upper=1 << 16)
    _choice(p, "completion_lengths", completion_lengths, COMPLETION_LENGTHS)
    _bool(p, "sleep_mode", sleep_mode)
    u = vllm_gpu_memory_utilization
    if u is not None and (not _is_number(u) or not 0 < u <= 1):
        p.append(f"--vllm-gpu-memory-utilization must be a number in (0, 1], got {u!r}")
    _positive_int(p, "vllm_max_model_len", vllm_max_model_len, optional=True)
    _positive_int(p, "vllm_max_num_seqs", vllm_max_num_seqs, optional=True)
    _positive_int(p, "vllm_max_num_batched_tokens", vllm_max_num_batched_tokens, optional=True)
    _bool(p, "vllm_enforce_eager", vllm_enforce_eager)
    if vllm_quantization is not None and (not isinstance(vllm_quantization, str) or not vllm_quantization.strip()):
        p.append(f"--vllm-quantization must be a vLLM quantization name, got {vllm_quantization!r}")
    mml, P, C = vllm_max_model_len, prompt_length, completion_length
    if u is not None and _is_int(mml) and _is_int(P) and _is_int(C) and 0 < mml < P + C:
        p.append(f"--vllm-max-model-len {mml} is shorter than prompt + completion ({P} + {C} = {P + C}): vLLM "
                 f"rejects longer prompts and cuts completions")
    return p


def fixed_model_problems(spec: ModelSpec, vllm_max_model_len: int | None, colocated: bool) -> list[str]:
    """The fixed setup's relations that need the model: vLLM refuses a max_model_len beyond the
    context (unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)."""
    if colocated and vllm_max_model_len is not None and vllm_max_model_len > spec.max_position_embeddings:
        return [f"--vllm-max-model-len {vllm_max_model_len} exceeds {spec.model_id}'s context of "
                f"{spec.max_position_embeddings} tokens; vLLM refuses it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1"]
    return []
