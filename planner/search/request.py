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
from typing import Any, Literal, TypeGuard

from ..errors import InvalidSetupError, VersionError
from ..memory.calibration import Calibration
from ..memory.logprob_head import LIGER_HEADS, LOGPROB_HEADS
from ..memory.lora import lora_targets
from ..memory.optimizer import OPTIMIZERS
from ..memory.trainer import COMPLETION_LENGTHS, FINETUNE_MODES
from ..memory.vllm import quantization_problem
from ..memory.weights import WEIGHT_FORMATS
from ..specs.gpu import GpuSpec
from ..specs.model import ModelSpec
from ..specs.topology import ENGINES as TOPOLOGY_ENGINES
from ..specs.topology import LAYOUTS
from ..specs.versions import trl_facts

SLEEP_MODES = ("auto", "on", "off")
RUNTIMES = ("trl", "unsloth")
KV_CACHE_DTYPES = ("auto", "fp8")
ENGINES = ("auto", *TOPOLOGY_ENGINES)

# the closed choices of the public API as types (tests/test_api_vocabulary.py checks each against its tuple)
Weights = Literal["bf16", "fp16", "fp32", "nf4", "int8"]  # WEIGHT_FORMATS
Finetune = Literal["lora", "full"]  # FINETUNE_MODES
Optim = Literal["adamw_8bit", "paged_adamw_8bit", "adamw_torch", "adamw_torch_fused", "paged_adamw_32bit"]
LogprobHead = Literal["fused", "plain", "plain-bf16", "plain-bf16-inplace", "plain-bf16-noentropy", "plain-legacy",
                      "liger", "liger-seq", "chunked"]
SleepMode = Literal["auto", "on", "off"]  # SLEEP_MODES
KvCacheDtype = Literal["auto", "fp8"]  # KV_CACHE_DTYPES
Layout = Literal["auto", "colocate", "server"]  # planner.specs.topology.LAYOUTS
Engine = Literal["auto", "ddp", "zero1", "zero2", "zero3", "fsdp"]  # ENGINES
CompletionLengths = Literal["varied", "fixed"]  # planner.memory.trainer.COMPLETION_LENGTHS
Runtime = Literal["trl", "unsloth"]
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
    optim: str | None = None  # None: adamw_8bit, or adamw_torch when planning for this machine without bitsandbytes
    gradient_checkpointing: bool = True  # TRL's default; reduces memory
    logprob_head: str | None = None  # None: what the TRL release planned for uses
    use_liger_kernel: bool = False  # GRPOConfig.use_liger_kernel (use_liger_loss before TRL 0.25): the Liger head
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
    # the length a batch pads to (TRL pads each batch to its longest prompt): what the trainer and
    # transformers' generate hold; None: the longest prompt (the bound, the safe side)
    typical_prompt_length: int | None = None
    utilization_range: tuple[float, float] = (0.3, 0.7)  # vllm_gpu_memory_utilization searched
    margin: float | None = None  # safety margin, a fraction of the card; None: the memory model's band (planner.search.margins)
    sleep_mode: str = "auto"  # auto | on | off
    max_batch: int = 64  # the largest per_device_train_batch_size tried
    max_completions_per_step: int = 512  # the most completions per device per optimizer step
    # a multi-turn rollout_func that returns every turn's prompt and completion ids concatenated (TRL's
    # OpenEnv examples): vLLM serves one turn of prompt + completion, the trainer trains on up to this many
    rollout_turns: int = 1
    # the step time (planner.search.timing): the completions' expected length (None: the cap, the
    # slowest case) and the reward functions' seconds per completion
    expected_completion_length: int | None = None
    reward_seconds_per_completion: float = 0.0

    def timing_inputs(self) -> dict[str, Any]:
        """The keyword arguments of planner.search.timing.plan_time this request gives."""
        return {"expected_completion_length": self.expected_completion_length,
                "reward_seconds_per_completion": self.reward_seconds_per_completion}


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
    # False: TRL's use_vllm=False, transformers' generate in the trainer (one GPU; planner.memory.generate)
    use_vllm: bool = True


@dataclass(frozen=True)
class Pins:
    """GRPO settings the user fixed, under TRL's own names (``None``: the solver chooses).

    The solver then chooses only the rest: a pinned micro-batch is the only B tried, a pinned
    utilisation the only one on the grid, a pinned ``max_completion_length`` is exact (never cut),
    a pinned ``vllm_enable_sleep_mode`` the only sleep setting. The planner models
    ``steps_per_generation = gradient_accumulation_steps``, so the completions per optimizer step
    (``completions_per_step``, global) equal ``generation_batch_size``. ``max_prompt_length`` is the
    planner's prompt length (TRL 0.28 and later have no such field: it is not written back).

    A pin is held exactly (``Plan.pin_value(name) == value``) or the request fails: InvalidSetupError
    when the pins contradict each other or a rule (TRL's batch rules on every layout searched, a setting
    only colocated vLLM reads with ``layout="server"``, a batch or utilisation Unsloth would rewrite),
    naming it; InfeasibleError when they are consistent but do not fit. The vLLM settings
    (``vllm_gpu_memory_utilization``, ``vllm_enable_sleep_mode``, ``vllm_max_model_length``) keep vLLM
    colocated (planner.search.solver.colocate_only_settings)."""

    per_device_train_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    steps_per_generation: int | None = None
    generation_batch_size: int | None = None  # global: B x S x world
    completions_per_step: int | None = None  # the effective batch, global (= generation_batch_size here)
    num_generations: int | None = None
    max_prompt_length: int | None = None
    max_completion_length: int | None = None
    lora_r: int | None = None
    lora_target_modules: tuple[str, ...] | None = None
    optim: str | None = None
    vllm_gpu_memory_utilization: float | None = None
    vllm_enable_sleep_mode: bool | None = None
    vllm_max_model_length: int | None = None

    def items(self) -> list[tuple[str, Any]]:
        """The pinned (name, value) pairs, in field order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    @property
    def accumulation(self) -> int | None:
        """The pinned steps per generation (= gradient accumulation), from either name."""
        return self.gradient_accumulation_steps or self.steps_per_generation

    @property
    def completions(self) -> int | None:
        """The pinned completions per optimizer step (global), from either name."""
        return self.generation_batch_size or self.completions_per_step


@dataclass(frozen=True)
class UnslothOptions:
    """What only the Unsloth runtime (``runtime="unsloth"``: FastLanguageModel(fast_inference=True))
    reads; the rest of the request keeps its meaning there (planner.search.unsloth_solver)."""

    max_seq_length: int | None = None  # from_pretrained(max_seq_length=...); None: Unsloth's 2048
    standby: bool | None = None  # UNSLOTH_VLLM_STANDBY=1; None: off unless on does better
    unsloth_version: str | None = None  # the unsloth_zoo release; None: installed, else the newest modelled


PIN_NAMES = tuple(f.name for f in fields(Pins))
# TRL / trl.ModelConfig spellings accepted for a pin
PIN_ALIASES = {"lora_rank": "lora_r", "prompt_length": "max_prompt_length",
               "vllm_max_model_len": "vllm_max_model_length", "effective_batch_size": "completions_per_step"}


# what a request may name: a model id, a local folder or a ModelSpec; a card's name, "auto" (this
# machine's, through NVML) or a GpuSpec, or one of those per GPU; a calibration profile
ModelArg = str | ModelSpec
GpuArg = str | GpuSpec | tuple[str | GpuSpec, ...]
CalibrationArg = Literal["auto"] | Calibration | None


@dataclass(frozen=True)
class Resolved:
    """What a request names, resolved once (planner.api.complete_request): ``--gpu auto`` reads the
    card once, ``calibration="auto"`` looks the profile up once. The request keeps what was given."""

    model: ModelSpec
    card: GpuSpec  # the training card (the first, when the request names one per GPU)
    cards: tuple[GpuSpec, ...]  # the cards as planner.specs.topology.resolve_gpus gives them
    calibration: Calibration | None  # the profile the trainer's memory model uses (None: analytic)


@dataclass(frozen=True)
class PlanRequest:
    """Everything ``planner.plan`` takes."""

    model: ModelArg  # as given
    gpu: GpuArg = "auto"  # as given
    trainer: TrainerOptions = TrainerOptions()
    vllm: VllmOptions = VllmOptions()
    targets: Targets = Targets()
    topology: TopologyOptions = TopologyOptions()
    calibration: CalibrationArg = "auto"  # as given: "auto" looks one up, None is analytic only
    relax: bool = True  # when nothing fits, search for the closest plan that does
    pins: Pins = Pins()
    # TRL keys the planner does not model (read from a --config file): written to the plan's config untouched
    passthrough: tuple[tuple[str, Any], ...] = ()
    sources: tuple[tuple[str, str], ...] = ()  # pin name -> where it came from ("pinned", "config file")
    runtime: str = "trl"  # trl | unsloth (planner.api.plan's runtime=)
    unsloth: UnslothOptions = UnslothOptions()  # read with runtime="unsloth" only
    resolved: Resolved | None = None  # set by planner.api.complete_request; None before

    @property
    def pinned(self) -> tuple[str, ...]:
        """The TRL keys the user fixed."""
        return tuple(k for k, _ in self.pins.items())

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
        if {"calibration", "num_gpus", "num_nodes"} & set(changes):
            top["resolved"] = None  # what it names changed: resolve again
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
    **{f.name: "pins" for f in fields(Pins) if f.name not in ("num_generations", "max_completion_length",
                                                              "lora_target_modules", "optim")},
    **{f.name: "unsloth" for f in fields(UnslothOptions)},
    "calibration": "", "relax": "", "passthrough": "", "pins": "", "sources": "", "runtime": "",
}
# the Python API also takes TRL's spelling of the vLLM options
ALIASES = {"vllm_kv_cache_dtype": "kv_cache_dtype", "vllm_tensor_parallel_size": "tensor_parallel_size"}


def one_setting(problems: list[str], name: str, value: Any, alias: str, alias_value: Any, default: Any = None) -> Any:
    """The value of the setting ``name`` given under its own name or its older ``alias`` (the
    same thing; ``default`` when neither was given). Both given, and different: one line in
    ``problems`` (and ``value`` is kept)."""
    if alias_value is None:
        return value
    if value != default and value != alias_value:
        problems.append(f"{_flag(alias)} {alias_value!r} and {_flag(name)} {value!r} name one setting ({name}); "
                        f"give one")
        return value
    return alias_value


def _unknown(name: str, names: list[str] | None = None, what: str = "option") -> str:
    close = difflib.get_close_matches(name, names if names is not None else list(FIELDS) + list(ALIASES), n=1)
    return f"unknown {what} '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def make_pins(pin: dict[str, Any] | None, source: str = "pinned") -> tuple[Pins, dict[str, str], list[str]]:
    """:class:`Pins` from a ``{TRL name: value}`` dict, where each came from, and the unknown names."""
    if not pin:
        return Pins(), {}, []
    if not isinstance(pin, dict):
        return Pins(), {}, [f"pin must be a dict of TRL settings (e.g. {{'per_device_train_batch_size': 8}}), "
                            f"got {pin!r}"]
    problems, kw = [], {}
    for k, v in pin.items():
        name = PIN_ALIASES.get(k, k)
        if name not in PIN_NAMES:
            problems.append(_unknown(str(k), list(PIN_NAMES), "pin"))
            continue
        if name == "lora_target_modules":
            v = normalise_targets(v)  # PEFT's "all-linear" is every linear projection: None, nothing to hold
        if v is not None:
            kw[name] = v
    return Pins(**kw), {k: source for k in kw}, problems


def plan_request(model: Any, gpu: Any = "auto", pin: dict[str, Any] | None = None, **options: Any) -> PlanRequest:
    """A validated :class:`PlanRequest` from the request's own field names (:data:`FIELDS`; the
    lower-level form: ``planner.plan`` turns its TRL keywords into ``pin`` first, planner.api.request_of).

    ``pin``: TRL settings to hold fixed (:class:`Pins`); the TRL-named ones that are not also
    fields (``per_device_train_batch_size``, ``gradient_accumulation_steps``, ...) may be given
    as keyword arguments too. ``num_generations``, ``optim``, ``lora_rank``, ``lora_target_modules``
    and ``prompt_length`` here are the request's fields (not pinned); ``max_completion_length`` as a
    keyword is a target the solver may shorten, in ``pin`` it is exact."""
    problems = [_unknown(k) for k in options if k not in FIELDS and k not in ALIASES]
    pins, sources, pin_problems = make_pins(pin)
    problems += pin_problems
    if problems:
        raise InvalidSetupError("\n".join(problems))
    options = {ALIASES.get(k, k): v for k, v in options.items()}
    flat_pins = {k: options.pop(k) for k in list(options) if FIELDS.get(k) == "pins"}
    if flat_pins:
        pins = replace(pins, **{k: v for k, v in flat_pins.items() if v is not None})
        sources.update({k: "pinned" for k, v in flat_pins.items() if v is not None})
    if "sources" in options:
        sources.update(dict(options.pop("sources")))
    if isinstance(options.get("passthrough"), dict):
        options["passthrough"] = tuple(options["passthrough"].items())
    options["pins"] = pins
    options["sources"] = tuple(sources.items())
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

def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _time_problems(problems: list[str], g: Targets) -> None:
    """The step time's inputs: a positive expected length, a non-negative reward time."""
    _positive_int(problems, "expected_completion_length", g.expected_completion_length, optional=True)
    r = g.reward_seconds_per_completion
    if not _is_number(r) or not 0 <= r < 1e6:
        problems.append(f"{_flag('reward_seconds_per_completion')} must be a number of seconds >= 0, got {r!r}")


def _positive_int(problems: list[str], name: str, v: Any, upper: int | None = None, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not _is_int(v) or v < 1:
        problems.append(f"{_flag(name)} must be a positive integer, got {v!r}")
    elif upper is not None and v > upper:
        problems.append(f"{_flag(name)} must be at most {upper}, got {v}")


UNSLOTH_ONLY_WEIGHTS = "fp8"  # Unsloth's load_in_fp8 (planner.search.unsloth_solver); the TRL runtime refuses it


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
    _choice(p, "weights", t.weights, (*WEIGHT_FORMATS, UNSLOTH_ONLY_WEIGHTS))
    _choice(p, "finetune", t.finetune, FINETUNE_MODES)
    _positive_int(p, "lora_r", t.lora_rank, upper=65536)
    mods = t.lora_target_modules
    if mods is not None and (not isinstance(mods, tuple) or not mods
                             or not all(isinstance(m, str) and m.strip() for m in mods)):
        p.append(f"--lora-target-modules must be a list of module names (e.g. ['q_proj', 'v_proj']) or "
                 f"'{ALL_LINEAR}', got {mods!r}")
    _choice(p, "optim", t.optim, OPTIMIZERS, optional=True)
    _bool(p, "gradient_checkpointing", t.gradient_checkpointing)
    _choice(p, "logprob_head", t.logprob_head, LOGPROB_HEADS, optional=True)
    p += generation_problems(req)
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
        p.append(f"--max-prompt-length must be a non-negative integer, got {g.prompt_length!r}")
    _range(p, "utilization_range", g.utilization_range)
    if g.margin is not None and (not _is_number(g.margin) or not 0 <= g.margin < 0.5):
        p.append(f"--margin must be in [0, 0.5), got {g.margin!r}")
    _choice(p, "sleep_mode", g.sleep_mode, SLEEP_MODES)
    _positive_int(p, "max_batch", g.max_batch, upper=4096)
    _positive_int(p, "max_completions_per_step", g.max_completions_per_step, upper=1 << 20)
    _positive_int(p, "rollout_turns", g.rollout_turns, upper=256)
    _time_problems(p, g)
    _topology_problems(p, o, v)
    _pin_problems(p, req.pins)
    L, P = req.pins.vllm_max_model_length, req.pins.max_prompt_length
    P = P if P is not None else g.prompt_length
    if _is_int(L) and _is_int(P) and L <= P:
        p.append(f"--vllm-max-model-length {L} leaves no room for a completion after the {P}-token prompt")
    if not isinstance(req.relax, bool):
        p.append(f"relax must be True or False, got {req.relax!r}")
    _choice(p, "runtime", req.runtime, RUNTIMES)
    if req.runtime == "trl":
        p += [f"{_flag(k)} is an option of the Unsloth runtime (--runtime unsloth)"
              for k, v in vars(req.unsloth).items() if v is not None]
        if t.weights == UNSLOTH_ONLY_WEIGHTS:
            p.append("--weights fp8 is planned with --runtime unsloth only (from_pretrained(load_in_fp8=True): "
                     "vLLM's FP8 weights shared with the trainer)")
    if not (req.calibration is None or (isinstance(req.calibration, str) and req.calibration == "auto")
            or type(req.calibration).__name__ == "Calibration"):
        p.append(f"calibration must be 'auto', None or a Calibration (planner.memory.calibration), got {req.calibration!r}")
    if not (isinstance(req.model, (str, ModelSpec)) and (not isinstance(req.model, str) or req.model.strip())):
        p.append(f"--model must be a model id, a path or a ModelSpec, got {req.model!r}")
    gpus = req.gpu if isinstance(req.gpu, tuple) else (req.gpu,)
    if not gpus or not all(isinstance(x, GpuSpec) or (isinstance(x, str) and x.strip()) for x in gpus):
        p.append(f"--gpu must be a GPU name, 'auto' or a GpuSpec, got {req.gpu!r}")
    return p


def _topology_problems(p: list[str], o, v) -> None:
    """The layout's problems (GPUs, nodes, server, vLLM TP against the GPUs), appended to ``p``."""
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


def pin_problems(pins: Pins) -> list[str]:
    """The problems of ``pins`` alone, one line each (as a request's validation words them)."""
    p: list[str] = []
    _pin_problems(p, pins)
    return p


def _pin_problems(p: list[str], pins: Pins) -> None:
    """Every problem of the pins on their own (the relations with the layout are the solver's)."""
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
                 "generation_batch_size", "completions_per_step", "max_completion_length", "vllm_max_model_length"):
        _positive_int(p, name, getattr(pins, name), upper=1 << 20, optional=True)
    _positive_int(p, "lora_r", pins.lora_r, upper=65536, optional=True)
    if pins.max_prompt_length is not None and (not _is_int(pins.max_prompt_length) or pins.max_prompt_length < 0):
        p.append(f"--max-prompt-length must be a non-negative integer, got {pins.max_prompt_length!r}")
    G = pins.num_generations
    if G is not None and (not _is_int(G) or G < 2):
        p.append(f"--num-generations must be at least 2 (GRPO needs a group to compute advantages), got {G!r}")
    mods = pins.lora_target_modules
    if mods is not None and (not isinstance(mods, tuple) or not mods
                             or not all(isinstance(m, str) and m.strip() for m in mods)):
        p.append(f"--lora-target-modules must be a list of module names (e.g. ['q_proj', 'v_proj']), got {mods!r}")
    _choice(p, "optim", pins.optim, OPTIMIZERS, optional=True)
    u = pins.vllm_gpu_memory_utilization
    if u is not None and (not _is_number(u) or not 0 < u <= 1):
        p.append(f"--vllm-gpu-memory-utilization must be in (0, 1], got {u!r}")
    _bool(p, "vllm_enable_sleep_mode", pins.vllm_enable_sleep_mode, optional=True)
    ga, spg = pins.gradient_accumulation_steps, pins.steps_per_generation
    if _is_int(ga) and _is_int(spg) and ga != spg:
        p.append(f"--gradient-accumulation-steps {ga} and --steps-per-generation {spg} differ: the planner models "
                 f"one generation per optimizer step (steps_per_generation = gradient_accumulation_steps); pin one")
    gbs, cps = pins.generation_batch_size, pins.completions_per_step
    if _is_int(gbs) and _is_int(cps) and gbs != cps:
        p.append(f"--generation-batch-size {gbs} and --completions-per-step {cps} differ: with one generation per "
                 f"optimizer step they are the same number; pin one")
    n = gbs if _is_int(gbs) else cps if _is_int(cps) else None
    if n is not None and _is_int(G) and G >= 2 and n % G:
        p.append(f"{n} completions per step is not a multiple of num_generations {G} (TRL's rule: whole groups)")
    B, S = pins.per_device_train_batch_size, pins.accumulation
    if n is not None and _is_int(B) and _is_int(S) and B >= 1 and S >= 1 and n % (B * S):
        p.append(f"{n} completions per step is not a multiple of per_device_train_batch_size x "
                 f"gradient_accumulation_steps = {B} x {S} (one per training GPU)")
    L, C, P = pins.vllm_max_model_length, pins.max_completion_length, pins.max_prompt_length
    if _is_int(L) and _is_int(C) and L < (P if _is_int(P) else 0) + C:
        p.append(f"--vllm-max-model-length {L} is shorter than prompt + completion "
                 f"({P if _is_int(P) else 0} + {C})")


def apply_pins(req: PlanRequest) -> PlanRequest:
    """The request with its pins written into the sections the solver reads: the LoRA rank and
    targets, the optimizer, the group size, the prompt and completion lengths, a one-point
    utilisation range, the sleep setting. The pins stay on the request (the search reads the batch,
    accumulation and completions pins, and ``max_completion_length``'s exactness, from them)."""
    pins = req.pins
    if not pins.items():
        return req
    t, g = req.trainer, req.targets
    trainer = replace(t, lora_rank=pins.lora_r if pins.lora_r is not None else t.lora_rank,
                      lora_target_modules=(pins.lora_target_modules if pins.lora_target_modules is not None
                                           else t.lora_target_modules),
                      optim=pins.optim or t.optim)
    P = pins.max_prompt_length if pins.max_prompt_length is not None else g.prompt_length
    C = pins.max_completion_length
    if C is None and pins.vllm_max_model_length is not None:
        C = pins.vllm_max_model_length - P  # the longest completion the engine's length allows
    u = pins.vllm_gpu_memory_utilization
    sleep = {True: "on", False: "off", None: g.sleep_mode}[pins.vllm_enable_sleep_mode]
    targets = replace(g, num_generations=pins.num_generations or g.num_generations, prompt_length=P,
                      max_completion_length=C if C is not None else g.max_completion_length,
                      utilization_range=(u, u) if u is not None else g.utilization_range, sleep_mode=sleep)
    return replace(req, trainer=trainer, targets=targets)


def generation_problems(req: PlanRequest) -> list[str]:
    """The Liger head, the generation without vLLM and the typical prompt length, one line each."""
    p: list[str] = []
    t, g = req.trainer, req.targets
    _bool(p, "use_liger_kernel", t.use_liger_kernel)
    p += liger_problems(t, req.vllm.trl_version, req.runtime, req.pins.lora_target_modules)
    p += no_vllm_request_problems(req)
    return p + typical_prompt_problems(g.typical_prompt_length, req.pins.max_prompt_length or g.prompt_length)


def no_vllm_request_problems(req: PlanRequest) -> list[str]:
    """``use_vllm=False`` against what only a vLLM engine, or several GPUs, would read: one line each."""
    o, g, pins = req.topology, req.targets, req.pins
    if o.use_vllm is not False:
        if not isinstance(o.use_vllm, bool):
            return [f"use_vllm must be True or False, got {o.use_vllm!r}"]
        return []
    if req.runtime != "trl":
        return []  # the Unsloth runtime refuses it as an option it does not honour (unsloth_solver)
    p = []
    if _is_int(o.num_gpus) and _is_int(o.num_nodes) and o.num_gpus * o.num_nodes > 1 or o.layout != "auto":
        p.append("--no-vllm is planned on one GPU: drop --num-gpus, --num-nodes and --layout, or keep vLLM")
    vllm_only = [k for k in ("vllm_gpu_memory_utilization", "vllm_enable_sleep_mode", "vllm_max_model_length")
                 if getattr(pins, k) is not None] + (["vllm_tensor_parallel_size"]
                                                     if req.vllm.tensor_parallel_size is not None else [])
    if g.sleep_mode == "on":
        vllm_only.append("sleep_mode")
    if vllm_only:
        p.append(f"--no-vllm with {', '.join(vllm_only)}: {'it configures' if len(vllm_only) == 1 else 'they configure'}"
                 f" vLLM, and there is none; drop {'it' if len(vllm_only) == 1 else 'them'} or keep vLLM")
    if g.rollout_turns != 1:
        p.append("--no-vllm with --rollout-turns: a multi-turn rollout_func is modelled with vLLM generating each "
                 "turn; drop one of them")
    return p


def typical_prompt_problems(typical: Any, bound: Any) -> list[str]:
    """``typical_prompt_length``: a positive whole number of tokens, at most the longest prompt."""
    if typical is None:
        return []
    if not _is_int(typical) or typical < 1:
        return [f"--typical-prompt-length must be a positive integer, got {typical!r}"]
    if _is_int(bound) and typical > bound:
        return [f"--typical-prompt-length {typical} is longer than the longest prompt ({bound} tokens, "
                f"--max-prompt-length): a batch pads to its longest prompt, never beyond it"]
    return []


def liger_problems(t: TrainerOptions, trl_version: str | None, runtime: str = "trl",
                   pinned_targets: tuple[str, ...] | None = None) -> list[str]:
    """``use_liger_kernel`` against the TRL release planned for (planner.specs.versions
    ``TrlFacts.liger_head``), the log-prob head named and the LoRA targets (the option's or the
    pinned ``lora_target_modules``): one line each."""
    head = t.logprob_head
    if not t.use_liger_kernel:
        if head in LIGER_HEADS:
            return [f"--logprob-head {head} is TRL's head with use_liger_kernel: add --use-liger-kernel"]
        return []
    if runtime != "trl":
        return []  # the Unsloth runtime refuses it as an option it does not honour (unsloth_solver)
    try:
        facts = trl_facts(trl_version)
    except VersionError:
        return []  # the version's own problem is reported by _version
    if facts.liger_head is None:
        return [f"--use-liger-kernel: TRL {facts.release} has no Liger GRPO loss (use_liger_loss from TRL 0.17.0, "
                f"use_liger_kernel from 0.25.0); plan for --trl-version 0.17.0 or later"]
    p = []
    if head is not None and head != facts.liger_head and not (head == "liger-seq" and facts.liger_head == "liger"):
        also = " (or liger-seq for liger-kernel before 0.8.0)" if facts.liger_head == "liger" else ""
        p.append(f"--logprob-head {head} contradicts --use-liger-kernel: TRL {facts.release} with Liger uses the "
                 f"'{facts.liger_head}' head{also}")
    mods = tuple(m for given in (t.lora_target_modules, pinned_targets) if isinstance(given, tuple) for m in given)
    if facts.liger_head != "fused" and t.finetune == "lora" and "lm_head" in mods:
        why = ("TRL raises: the chunked projection reads lm_head.weight directly" if facts.liger_refuses_lm_head_adapter
               else "Liger reads lm_head.weight directly, so the adapter on the head is never trained")
        p.append(f"--use-liger-kernel with a LoRA adapter on lm_head: {why}; remove lm_head from "
                 f"--lora-target-modules")
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
        p.append(f"--lora-r {t.lora_rank} is larger than the hidden size ({spec.hidden_size}) of {spec.model_id}")
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
                         vllm_enforce_eager: Any = False, vllm_quantization: Any = None,
                         rollout_turns: Any = 1) -> list[str]:
    """What ``planner.estimate`` takes beyond the request's fields (one fixed setup), with the same
    rules and messages, named as the settings are (TRL's names: ``batch_size`` is
    ``--per-device-train-batch-size``); and the relations a fixed setup adds (vLLM's max_model_len
    vs the lengths)."""
    p: list[str] = []
    _positive_int(p, "per_device_train_batch_size", batch_size, upper=4096)
    _positive_int(p, "max_completion_length", completion_length)
    _positive_int(p, "steps_per_generation", steps_per_generation, upper=1 << 16)
    _positive_int(p, "gradient_accumulation_steps", gradient_accumulation_steps, upper=1 << 16)
    _choice(p, "completion_lengths", completion_lengths, COMPLETION_LENGTHS)
    _positive_int(p, "rollout_turns", rollout_turns, upper=256)
    _bool(p, "vllm_enable_sleep_mode", sleep_mode)
    u = vllm_gpu_memory_utilization
    if u is not None and (not _is_number(u) or not 0 < u <= 1):
        p.append(f"--vllm-gpu-memory-utilization must be a number in (0, 1], got {u!r}")
    _positive_int(p, "vllm_max_model_length", vllm_max_model_len, optional=True)
    _positive_int(p, "vllm_max_num_seqs", vllm_max_num_seqs, optional=True)
    _positive_int(p, "vllm_max_num_batched_tokens", vllm_max_num_batched_tokens, optional=True)
    _bool(p, "vllm_enforce_eager", vllm_enforce_eager)
    quantization = quantization_problem(vllm_quantization)  # vLLM's names; the modelled ones named
    if quantization:
        p.append(quantization)
    mml, P, C = vllm_max_model_len, prompt_length, completion_length
    if u is not None and _is_int(mml) and _is_int(P) and _is_int(C) and 0 < mml < P + C:
        p.append(f"--vllm-max-model-length {mml} is shorter than prompt + completion ({P} + {C} = {P + C}): vLLM "
                 f"rejects longer prompts and cuts completions")
    return p


def fixed_model_problems(spec: ModelSpec, vllm_max_model_len: int | None, colocated: bool) -> list[str]:
    """The fixed setup's relations that need the model: vLLM refuses a max_model_len beyond the
    context (unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)."""
    if colocated and vllm_max_model_len is not None and vllm_max_model_len > spec.max_position_embeddings:
        return [f"--vllm-max-model-length {vllm_max_model_len} exceeds {spec.model_id}'s context of "
                f"{spec.max_position_embeddings} tokens; vLLM refuses it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1"]
    return []
