"""The Python API: composes the request, the solver, the pre-flight checks and the hand-off.

    plan = planner.plan("Qwen/Qwen2.5-7B-Instruct", "H100-80GB")                 # one GPU
    plan = planner.plan("Qwen/Qwen2.5-32B-Instruct", "H100-80GB", num_gpus=8)    # a layout
    report = planner.preflight(plan)
    trainer = planner.train("Qwen/Qwen2.5-0.5B-Instruct", reward_funcs, dataset, gpu="auto")

This is the only module that reads the environment for defaults (the installed TRL's log-prob
head and default completion length, ``PYTORCH_CUDA_ALLOC_CONF``, the calibration profiles that decide
the default margin); the solver below it is pure.
Imports go one way: api -> solver -> (phases, sharding, estimation, results) and api -> checks,
handoff; checks and the hand-off take a plan and never import the solver.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, TypeVar, cast

from .checks.preflight import CheckReport
from .checks.preflight import preflight as preflight_plan
from .errors import InfeasibleError, InvalidSetupError, PlannerError, VersionError
from .memory.allocator import expandable_segments_from_env
from .memory.calibration import calibration_gap
from .memory.trainer import TrainerSetup
from .report.assumptions import assumptions, reserve_entry, unsloth_assumptions
from .report.changes import CHANGE_KEYS, plan_changes
from .report.hints import to_python
from .report.next_steps import next_steps, unsloth_steps
from .search.estimation import default_logprob_head, resolve_request, trl_steps_per_generation
from .search.loop import runners_up
from .search.margins import MEMORY_MODEL_MARGIN, coverage_margin
from .search.request import (
    PIN_ALIASES,
    PIN_NAMES,
    CompletionLengths,
    Engine,
    Finetune,
    KvCacheDtype,
    Layout,
    LogprobHead,
    Optim,
    PlanRequest,
    Runtime,
    SleepMode,
    Weights,
    apply_pins,
    fixed_setup_problems,
    one_setting,
    plan_request,
)
from .search.results import Plan
from .search.solver import DEFAULT_OPTIM, evaluate, runtime_of, solve
from .specs.gpu import GpuSpec, with_reserve
from .specs.model import ModelSpec
from .specs.topology import TRL_SERVE_DEFAULT_PORT, TRL_SERVE_DEFAULT_UTILIZATION, Topology
from .specs.versions import _transformers_version, installed_version, trl_facts

F = TypeVar("F", bound=Callable[..., Any])
# a GPU name, "auto", a GpuSpec, or one per GPU (GPUs of different sizes)
GpuArg = str | GpuSpec | Sequence[str | GpuSpec]
# LoRA targets: module names, or PEFT's "all-linear" (None: every linear projection)
LoraTargets = Sequence[str] | str | None


def for_this_machine(req: PlanRequest) -> bool:
    """Whether the plan is for this machine's card (``gpu="auto"`` or a live reading)."""
    gpus = req.gpu if isinstance(req.gpu, tuple) else (req.gpu,)
    return any(g == "auto" or (isinstance(g, GpuSpec) and g.free_bytes is not None) for g in gpus)


def choose_optim(req: PlanRequest) -> tuple[str, str, str]:
    """(optim, source, note): the user's, else ``adamw_8bit``; planning for this machine without
    bitsandbytes, ``adamw_torch`` (what the run can use here), saying what 8-bit would have bought."""
    if req.pins.optim or req.trainer.optim:
        return req.pins.optim or req.trainer.optim or DEFAULT_OPTIM, "option", ""
    if for_this_machine(req) and installed_version("bitsandbytes") is None:
        return "adamw_torch", "installed package", (
            "bitsandbytes is not installed here, so adamw_torch (8 B of optimizer state per fp32 trainable parameter, "
            "4 B per bf16 one); "
            "adamw_8bit (pip install bitsandbytes) would keep ~2 B")
    return DEFAULT_OPTIM, "default", ""


def complete_request(req: PlanRequest) -> PlanRequest:
    """Fill what the user left to the environment: the TRL release's default completion length
    and log-prob head, the allocator setting from ``PYTORCH_CUDA_ALLOC_CONF``, the optimizer
    (from the installed packages when planning for this machine), and the margin (the band of the
    memory model the plan will use, planner.search.margins). The model, the GPUs and the calibration
    profile are resolved here, once (``--gpu auto`` reads the card once, ``calibration="auto"`` looks
    the profile up once): the completed request keeps what was given and holds what it resolved to
    (``completed.resolved``: the model's spec, the cards, the profile or None)."""
    t, g, v = req.trainer, req.targets, req.vllm
    trainer = t
    if t.optim is None and req.pins.optim is None:
        trainer = replace(trainer, optim=choose_optim(req)[0])
    if t.logprob_head is None:
        trainer = replace(trainer, logprob_head=default_logprob_head(v.trl_version, liger=t.use_liger_kernel))
    if t.expandable_segments is None:
        trainer = replace(trainer, expandable_segments=expandable_segments_from_env())
    targets = g
    if g.max_completion_length is None:  # TRL's own default for the release planned for
        try:
            targets = replace(g, max_completion_length=trl_facts(v.trl_version).max_completion_length_default)
        except VersionError:
            targets = replace(g, max_completion_length=512)
    completed = replace(req, trainer=trainer, targets=targets, resolved=resolve_request(req))
    if g.margin is None:
        margin = MEMORY_MODEL_MARGIN[memory_model_kind(completed)]
        completed = replace(completed, targets=replace(completed.targets, margin=margin))
    return completed


def trainer_setup(req: PlanRequest) -> TrainerSetup:
    """The trainer options of a completed request, pins applied (``--lora-r``, ``--optim`` from a
    flag or a --config file), as the setup the coverage and calibration rules read (no shape)."""
    t = apply_pins(req).trainer
    return TrainerSetup(weights=t.weights, finetune=t.finetune, lora_rank=t.lora_rank, optim=t.optim or DEFAULT_OPTIM,
                        gradient_checkpointing=t.gradient_checkpointing, logprob_head=t.logprob_head or "fused",
                        transformers_version=t.transformers_version)


def memory_model_kind(req: PlanRequest) -> str:
    """``"calibrated"`` when a calibration profile covers the request's trainer setup on its card
    (the solver then uses it: planner.memory.calibration.calibration_gap), else ``"analytic"``: whose
    measured band the default margin is."""
    calibration = resolve_request(req).calibration
    if calibration is not None and calibration_gap(calibration, trainer_setup(req)) is None:
        return "calibrated"
    return "analytic"


def _speak_python(fn: F) -> F:
    """Run ``fn`` and give its errors' fix hints as keyword arguments (planner.report.hints), not flags."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PlannerError as e:
            e.args = tuple(to_python(a) if isinstance(a, str) else a for a in e.args)
            raise
    return cast(F, wrapper)


def python_checks(p: Plan) -> Plan:
    """The plan with its checks' messages and fixes in Python's words."""
    checks = tuple(replace(c, message=to_python(c.message), fix=to_python(c.fix)) for c in p.checks)
    return replace(p, checks=checks, reasons=tuple(to_python(r) for r in p.reasons))


@_speak_python
def plan(model: str | ModelSpec, gpu: GpuArg = "auto", num_gpus: int = 1, num_nodes: int = 1, layout: Layout = "auto",
         runtime: Runtime = "trl", *, pin: Mapping[str, Any] | None = None,
         per_device_train_batch_size: int | None = None, gradient_accumulation_steps: int | None = None,
         steps_per_generation: int | None = None, generation_batch_size: int | None = None,
         completions_per_step: int | None = None, num_generations: int | None = None,
         max_prompt_length: int | None = None, max_completion_length: int | None = None, lora_r: int | None = None,
         lora_target_modules: LoraTargets = None, optim: Optim | None = None,
         vllm_gpu_memory_utilization: float | None = None, vllm_enable_sleep_mode: bool | None = None,
         vllm_max_model_length: int | None = None, vllm_tensor_parallel_size: int | None = None,
         vllm_kv_cache_dtype: KvCacheDtype = "auto", weights: Weights | None = None, finetune: Finetune = "lora",
         gradient_checkpointing: bool = True, logprob_head: LogprobHead | None = None,
         expandable_segments: bool | None = None, utilization_range: tuple[float, float] = (0.3, 0.7),
         margin: float | None = None, sleep_mode: SleepMode = "auto", max_batch: int = 64,
         max_completions_per_step: int = 512, rollout_turns: int = 1, engine: Engine = "auto",
         server_gpus: int | None = None, server_host: str | None = None, server_port: int = TRL_SERVE_DEFAULT_PORT,
         server_utilization_range: tuple[float, float] = (0.5, 0.95), trl_version: str | None = None,
         vllm_version: str | None = None, transformers_version: str | None = None, calibration: Any = "auto",
         relax: bool = True, passthrough: Mapping[str, Any] | None = None, lora_rank: int | None = None,
         prompt_length: int | None = None, unsloth_version: str | None = None, standby: bool | None = None,
         max_seq_length: int | None = None, reserve_gib: float | None = None,
         use_liger_kernel: bool = False, typical_prompt_length: int | None = None, use_vllm: bool = True,
         expected_completion_length: int | None = None, reward_seconds_per_completion: float = 0.0) -> Plan:
    """Solve for the configuration that fits and makes the most of the GPUs, with its pre-flight
    checks (``plan.checks``). One GPU or many: the same search and the same :class:`Plan`. When
    nothing fits, the InfeasibleError names what breaks and carries the closest plan that fits (``.closest``).

    The keywords are the CLI's flags (``--per-device-train-batch-size 8`` is
    ``per_device_train_batch_size=8``) and a ``--config`` file's keys: TRL's names wherever TRL has one.
    A TRL setting given (``per_device_train_batch_size`` ... ``vllm_max_model_length``, as keywords or in
    ``pin={...}``, planner.search.request.Pins) is pinned: held as given, the solver chooses only the
    rest, and the plan records it in ``pinned`` and ``assumptions`` as the CLI and a --config file do.
    The LoRA rank is TRL's ``lora_r`` (trl.ModelConfig; ``lora_rank``, the CLI's ``--lora-rank``, is the
    same setting). ``max_completion_length=`` as a keyword is a target the solver may cut (the CLI's
    ``--target-completion-length``); ``pin={"max_completion_length": ...}`` holds it exactly.
    ``max_prompt_length`` (``prompt_length``) is the longest prompt, 256 tokens unless given.
    Planner options: ``weights``, ``finetune``, ``utilization_range`` (the vLLM shares searched),
    ``margin`` (None: the memory model's band), ``sleep_mode``, ``max_batch``, ``max_completions_per_step``,
    ``rollout_turns``, the layout (``num_gpus``, ``num_nodes``, ``layout``, ``engine``, ``server_*``) and
    the releases planned for. Fix hints in errors and checks name keyword arguments. ``weights``: None is
    the runtime's default (bf16 with TRL, 4-bit with Unsloth).

    ``runtime="unsloth"``: Unsloth's fast_inference=True, the same request, pins and :class:`Plan`
    (``plan.runtime == "unsloth"``; planner.search.unsloth_solver), with its runtime checks; its own
    options: ``max_seq_length``, ``standby``, ``unsloth_version``; what it cannot honour is refused.

    ``reserve_gib``: memory kept free on every card for a display or another process (the CLI's
    ``--reserve``): the budget is the card less the margin less the reserve (``assumptions["reserve"]``).

    ``use_liger_kernel=True``: TRL's Liger GRPO loss (``use_liger_loss`` before 0.25), no ``[B, C, V]``
    logits; the TRL release decides the head (planner.memory.logprob_head); the GRPOConfig sets it.
    ``typical_prompt_length``: the length a batch pads to (TRL pads to its longest prompt; ``max_prompt_length``
    is the bound vLLM keeps); None: the bound. ``assumptions["trained_prompt_length"]`` says which.
    ``use_vllm=False`` (``--no-vllm``): transformers' ``generate`` in the trainer, one GPU, its own phase
    (planner.memory.generate); no utilisation to choose.
    ``expected_completion_length`` (None: the cap) and ``reward_seconds_per_completion`` (0): the step
    time's inputs (``plan.step_time()``, the JSON's ``time``; planner.search.timing)."""
    gpu = with_reserve(gpu, reserve_gib)
    settings: dict[str, Any] = dict(
        pin=pin, per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, steps_per_generation=steps_per_generation,
        generation_batch_size=generation_batch_size, completions_per_step=completions_per_step,
        num_generations=num_generations, max_prompt_length=max_prompt_length,
        max_completion_length=max_completion_length, lora_r=lora_r, lora_target_modules=lora_target_modules,
        optim=optim, vllm_gpu_memory_utilization=vllm_gpu_memory_utilization,
        vllm_enable_sleep_mode=vllm_enable_sleep_mode, vllm_max_model_length=vllm_max_model_length,
        vllm_tensor_parallel_size=vllm_tensor_parallel_size, vllm_kv_cache_dtype=vllm_kv_cache_dtype,
        weights=weights, finetune=finetune, gradient_checkpointing=gradient_checkpointing,
        logprob_head=logprob_head, expandable_segments=expandable_segments, utilization_range=utilization_range,
        margin=margin, sleep_mode=sleep_mode, max_batch=max_batch, max_completions_per_step=max_completions_per_step,
        rollout_turns=rollout_turns, engine=engine, server_gpus=server_gpus, server_host=server_host,
        server_port=server_port, server_utilization_range=server_utilization_range, trl_version=trl_version,
        vllm_version=vllm_version, transformers_version=transformers_version, calibration=calibration,
        relax=relax, passthrough=passthrough, lora_rank=lora_rank, prompt_length=prompt_length,
        unsloth_version=unsloth_version, standby=standby, max_seq_length=max_seq_length,
        use_liger_kernel=use_liger_kernel, typical_prompt_length=typical_prompt_length, use_vllm=use_vllm,
        expected_completion_length=expected_completion_length,
        reward_seconds_per_completion=reward_seconds_per_completion)
    if runtime == "unsloth" and rollout_turns != 1:
        raise InvalidSetupError(ROLLOUT_TURNS_TRL_ONLY)
    return python_checks(plan_from_request(request_of(model, gpu, num_gpus, num_nodes, layout, runtime, settings)))


_plan = plan  # train() takes a parameter named plan
ROLLOUT_TURNS_TRL_ONLY = ("--rollout-turns is modelled with TRL only; drop it, or plan the concatenated length with "
                          "--max-prompt-length and --max-completion-length")


def request_of(model: Any, gpu: Any, num_gpus: int, num_nodes: int, layout: str, runtime: str,
               settings: dict[str, Any]) -> PlanRequest:
    """The request of ``plan(...)``, either runtime: the TRL settings given become pins (as from the
    CLI's flags or a --config file), aliases (``lora_rank``, ``prompt_length``) named once; the rest
    are the request's options (an Unsloth option given to the TRL runtime, or the reverse, is refused
    by the request's validation, one line each)."""
    options = dict(settings)
    problems: list[str] = []
    given = {name: options.pop(name) for name in PIN_NAMES if name != "max_completion_length"}
    given["max_prompt_length"] = one_setting(problems, "max_prompt_length", given["max_prompt_length"],
                                             "prompt_length", options.pop("prompt_length"))
    given["lora_r"] = one_setting(problems, "lora_r", given["lora_r"], "lora_rank", options.pop("lora_rank"))
    pins = trl_pins(problems, options.pop("pin"), given)
    if problems:
        raise InvalidSetupError("\n".join(problems))
    options["passthrough"] = dict(options["passthrough"] or {})
    if runtime == "unsloth":
        from .search.unsloth_solver import unsloth_request

        return unsloth_request(model, gpu, pin=pins, num_gpus=num_gpus, num_nodes=num_nodes, layout=layout,
                               **{k: v for k, v in options.items() if v is not None})
    if options["weights"] is None:
        options["weights"] = "bf16"
    return plan_request(model, gpu, pin=pins, num_gpus=num_gpus, num_nodes=num_nodes, layout=layout,
                        runtime=runtime, **options)


def trl_pins(problems: list[str], pin: Any, given: dict[str, Any]) -> Any:
    """The TRL settings to hold: ``pin``'s and the keywords given (the same setting in both with two
    values: one line in ``problems``)."""
    if pin is not None and not isinstance(pin, Mapping):
        return pin  # plan_request names the problem
    pins = {PIN_ALIASES.get(k, k): v for k, v in (pin or {}).items()}
    for name, value in given.items():
        if value is None:
            continue
        if pins.get(name) is not None and pins[name] != value:
            problems.append(f"{name} is given twice: {value!r} as a keyword and {pins[name]!r} in pin")
        pins[name] = value
    return pins


def plan_from_request(req: PlanRequest, for_training: bool | None = None, strict: bool = False,
                      top: int = 0) -> Plan:
    """:func:`plan` for a request already built (the CLI builds one from its flags), either runtime:
    the one solver (planner.search.solver.solve), then the runtime's checks, assumptions and next
    steps (its :class:`~planner.search.loop.SolverRuntime`). TRL: the request is completed from
    the environment first (:func:`complete_request`) and the margin grows where the memory model
    covers less than a real run may hold; the checks are the layout's own and every pre-flight check
    (``for_training``, ``strict``: see planner.checks.preflight; a plan carries an unmodelled
    architecture as a warning, `plan check` as an error). Unsloth: its runtime checks
    (planner.runtimes.unsloth.unsloth_checks, ``for_training``). ``top`` > 0: the JSON's
    ``runners_up`` lists the plan and the next ``top`` configurations (planner.search.loop.runners_up)."""
    runtime = runtime_of(req)
    why: tuple[str, ...] = ()
    completed = solving = req
    if runtime.reads_environment:
        completed = complete_request(req)
        extra, why = unmodelled_margin(completed)
        solving = completed
        if extra:  # the margin grows where the model covers less than a real run may hold (planner.search.margins)
            solving = completed.with_options(margin=round(min(0.45, (completed.targets.margin or 0.0) + extra), 4))
    try:
        result = solve(solving)
    except InfeasibleError as e:
        raise InfeasibleError(f"{e}{other_runtime_fits(req)}", closest=e.closest) from None
    checked = runtime.checked(result, for_training, strict)
    if top > 0:  # the runners-up (`plan --top N`): the plan's own search, every fitting candidate ranked
        checked = replace(checked, extra={**checked.extra, "runners_up": runners_up(runtime, solving, top)})
    if why:
        checked = replace(checked, warnings=tuple(checked.warnings) + why)
    return describe(req, completed, checked)


def other_runtime_fits(req: PlanRequest) -> str:
    """When one runtime cannot fit the request on one GPU, whether the other can, as the end of the
    error line: Unsloth's ``fast_inference`` shares one 4-bit copy of the weights between the trainer
    and vLLM, so it fits cards TRL cannot (an 8B model on a T4); TRL fits what Unsloth's rules refuse.
    Solved, not guessed: the suggestion is printed only when the other runtime's search finds a plan.
    Empty when it does not, or when the request is not one the other runtime plans (several GPUs, an
    option it refuses)."""
    from .search.request import UnslothOptions
    from .search.unsloth_solver import unsloth_problems

    if req.multi_gpu:
        return ""
    if req.runtime == "trl":
        other = replace(req, runtime="unsloth", resolved=None, trainer=replace(req.trainer, weights="nf4"))
        if unsloth_problems(other):
            return ""
        flag = "--runtime unsloth (4-bit weights shared by the trainer and vLLM)"
    else:
        other = complete_request(replace(req, runtime="trl", resolved=None, unsloth=UnslothOptions()))
        flag = "--runtime trl"
    try:
        p = solve(other)
    except PlannerError:
        return ""
    c = p.config
    return (f"; {flag} fits: per_device_train_batch_size {c['per_device_train_batch_size']}, "
            f"{c['num_generations']} generations, max_completion_length {c['max_completion_length']}, "
            f"peak {p.peak_bytes / 2**30:.1f} of {p.budget_bytes / 2**30:.1f} GiB")


def unmodelled_margin(req: PlanRequest) -> tuple[float, tuple[str, ...]]:
    """What planner.search.margins adds to the margin for this request (TRL release, optimizer, weights),
    and why, as warnings the plan carries; (0.0, ()) for what the model was measured on."""
    try:
        extra, reasons = coverage_margin(trainer_setup(req), req.vllm.trl_version)
    except VersionError:
        return 0.0, ()
    return extra, tuple(f"safety margin +{extra:.0%}: {r}" if i == 0 else r for i, r in enumerate(reasons))


def describe(req: PlanRequest, completed: PlanRequest, p: Plan) -> Plan:
    """The plan with its assumptions (values and sources, versions assumed vs installed, the margin
    and the memory model it follows) and the next steps (planner.report.next_steps, or the runtime's
    own: planner.search.loop.SolverRuntime.next_steps)."""
    runtime = runtime_of(req)
    installed = {d: installed_version(d) for d in runtime.installed}
    if p.runtime == "unsloth":
        p = replace(p, assumptions=unsloth_assumptions(req, p, installed))
    else:
        p = replace(p, assumptions=assumptions(req, completed, p, installed, _trl_notes(req, completed, p)))
    p = _with_reserve(p)
    if p.runtime == "trl":  # what the plan changed from what was given, or from TRL's defaults
        p = replace(p, changes=plan_changes(p, given_values(req), req.vllm.trl_version,
                                            req.trainer.transformers_version))
    trl = {"trl_version": req.vllm.trl_version} if p.runtime == "trl" else {}
    p = replace(p, timing_inputs={**req.targets.timing_inputs(), **trl})
    own = runtime.next_steps(p)  # the runtime's own (Unsloth's script), with the command that reproduces the plan
    return replace(p, next_steps=unsloth_steps(own, req) if own is not None else next_steps(p, request=req))


def given_values(req: PlanRequest, file_values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The modelled TRL keys the user gave, under TRL's names: the pins (a flag, a keyword, a --config
    key), then ``file_values`` (a --config file's keys, planner.search.trl_config.TrlConfig.trl_values)
    for those not pinned (what ``--rechoose`` released)."""
    given = {k: v for k, v in req.pins.items() if k in CHANGE_KEYS}
    if req.pins.accumulation is not None:
        given["gradient_accumulation_steps"] = req.pins.accumulation
    for key, value in (file_values or {}).items():
        given.setdefault(key, value)
    return given


def _trl_notes(req: PlanRequest, completed: PlanRequest, p: Plan) -> dict[str, Any]:
    """What the TRL plan's assumptions note: the optimizer's source, the memory model's kind, the
    TRL and transformers releases assumed."""
    _, optim_source, optim_note = choose_optim(req)
    notes = {"optim_source": optim_source, **({"optim": optim_note} if optim_note else {}),
             "memory_model_kind": memory_model_kind(completed)}
    for dist, facts in (("trl", trl_facts), ("transformers", None)):
        try:
            notes[f"{dist}_assumed"] = (facts(req.vllm.trl_version).release if facts is not None
                                        else _transformers_version(req.trainer.transformers_version))
        except VersionError:
            pass
    return notes


@_speak_python
def estimate_layout(model: str | ModelSpec, gpu: GpuArg = "H100-80GB", num_gpus: int = 1, num_nodes: int = 1, *,
                    layout: Literal["colocate", "server"] = "colocate",
                    engine: Literal["ddp", "zero1", "zero2", "zero3", "fsdp"] = "ddp",
                    vllm_tensor_parallel_size: int = 1, server_gpus: int = 1,
                    server_tensor_parallel_size: int | None = None, server_data_parallel_size: int = 1,
                    server_gpu_memory_utilization: float = TRL_SERVE_DEFAULT_UTILIZATION,
                    server_host: str | None = None, server_port: int = TRL_SERVE_DEFAULT_PORT,
                    per_device_train_batch_size: int = 1, steps_per_generation: int | None = None,
                    gradient_accumulation_steps: int | None = None, num_generations: int = 8,
                    max_prompt_length: int = 256, max_completion_length: int = 512,
                    vllm_gpu_memory_utilization: float = 0.3, vllm_enable_sleep_mode: bool = False,
                    vllm_kv_cache_dtype: KvCacheDtype = "auto", weights: Weights = "bf16", finetune: Finetune = "lora",
                    lora_r: int = 16, lora_target_modules: LoraTargets = None, optim: Optim | None = None,
                    gradient_checkpointing: bool = True, logprob_head: LogprobHead | None = None,
                    expandable_segments: bool | None = None, rollout_turns: int = 1, margin: float | None = None,
                    calibration: Any = "auto", trl_version: str | None = None, vllm_version: str | None = None,
                    transformers_version: str | None = None, vllm_max_model_length: int | None = None,
                    vllm_quantization: str | None = None, vllm_max_num_seqs: int | None = None,
                    vllm_max_num_batched_tokens: int | None = None, vllm_enforce_eager: bool = False,
                    completion_lengths: CompletionLengths = "varied", lora_rank: int | None = None,
                    batch_size: int | None = None, prompt_length: int | None = None,
                    completion_length: int | None = None, sleep_mode: bool | None = None,
                    reserve_gib: float | None = None, use_liger_kernel: bool = False) -> Plan:
    """Per-GPU memory of one fixed multi-GPU setup, no search (``plan estimate --num-gpus``): the layout
    (``colocate`` or ``server``, the engine, TP / server split), batch, steps per generation, lengths and
    utilisations are given; the :class:`Plan`'s ``fits`` says whether every GPU stays under the margin.
    The keywords are :func:`planner.estimate`'s, TRL's names (``batch_size``, ``prompt_length``,
    ``completion_length``, ``sleep_mode``, ``lora_rank``: older names). What a fixed layout does not model is refused, one line
    each, as from the CLI: ``vllm_max_model_length`` (vLLM's length is prompt + completion here),
    ``vllm_quantization``, ``vllm_max_num_seqs``, ``vllm_max_num_batched_tokens``,
    ``vllm_enforce_eager``, ``completion_lengths="fixed"``, and a ``gradient_accumulation_steps``
    other than ``steps_per_generation`` (one generation per optimizer step; either given alone sets the
    other, as in TRL). On one GPU (colocated) ``vllm_max_model_length`` is honoured (`plan check --config`).
    ``reserve_gib`` and ``use_liger_kernel``: as in :func:`plan`."""
    gpu = with_reserve(gpu, reserve_gib)
    steps_per_generation = trl_steps_per_generation(steps_per_generation, gradient_accumulation_steps)
    problems: list[str] = []
    B = one_setting(problems, "per_device_train_batch_size", per_device_train_batch_size, "batch_size", batch_size, 1)
    P = one_setting(problems, "max_prompt_length", max_prompt_length, "prompt_length", prompt_length, 256)
    C = one_setting(problems, "max_completion_length", max_completion_length, "completion_length",
                    completion_length, 512)
    sleep = one_setting(problems, "vllm_enable_sleep_mode", vllm_enable_sleep_mode, "sleep_mode", sleep_mode, False)
    rank = one_setting(problems, "lora_r", lora_r, "lora_rank", lora_rank, 16)
    problems += fixed_setup_problems(batch_size=B, steps_per_generation=steps_per_generation,
                                     completion_length=C, sleep_mode=sleep)
    one_gpu = num_gpus * num_nodes == 1 and layout == "colocate"  # vLLM's max_model_len is honoured there (a pin)
    problems += layout_refusals(dict(vllm_max_model_length=None if one_gpu else vllm_max_model_length,
                                     vllm_quantization=vllm_quantization,
                                     vllm_max_num_seqs=vllm_max_num_seqs, vllm_enforce_eager=vllm_enforce_eager,
                                     vllm_max_num_batched_tokens=vllm_max_num_batched_tokens,
                                     completion_lengths=completion_lengths),
                                gradient_accumulation_steps, steps_per_generation)
    if problems:
        raise InvalidSetupError("\n".join(problems))
    req = plan_request(model, gpu, num_gpus=num_gpus, num_nodes=num_nodes, layout=layout, engine=engine,
                       pin={"vllm_max_model_length": vllm_max_model_length} if one_gpu else None,
                       num_generations=num_generations, max_completion_length=C, prompt_length=P,
                       utilization_range=(vllm_gpu_memory_utilization,) * 2,
                       server_utilization_range=(server_gpu_memory_utilization,) * 2,
                       sleep_mode="on" if sleep else "off", server_port=server_port, server_gpus=server_gpus,
                       server_host=server_host, kv_cache_dtype=vllm_kv_cache_dtype, weights=weights,
                       finetune=finetune, lora_rank=rank, lora_target_modules=lora_target_modules, optim=optim,
                       gradient_checkpointing=gradient_checkpointing, logprob_head=logprob_head,
                       use_liger_kernel=use_liger_kernel,
                       expandable_segments=expandable_segments, rollout_turns=rollout_turns, margin=margin,
                       calibration=calibration, trl_version=trl_version, vllm_version=vllm_version,
                       transformers_version=transformers_version,
                       tensor_parallel_size=vllm_tensor_parallel_size if layout == "colocate" else None)
    req = complete_request(req)
    if layout == "colocate":
        topo = Topology(num_gpus, num_nodes, engine, "colocate", vllm_tensor_parallel_size=vllm_tensor_parallel_size)
    else:
        t = server_tensor_parallel_size or server_gpus // server_data_parallel_size
        topo = Topology(num_gpus, num_nodes, engine, "server", server_gpus=server_gpus,
                        server_tensor_parallel_size=t, server_data_parallel_size=server_data_parallel_size)
    u = vllm_gpu_memory_utilization if layout == "colocate" else server_gpu_memory_utilization
    return _with_reserve(evaluate(req, topology=topo, batch_size=B, steps_per_generation=steps_per_generation,
                                  completion_length=C, utilization=u, sleep_mode=sleep,
                                  num_generations=num_generations))


def _with_reserve(p: Plan) -> Plan:
    """The plan with its cards' reserve (``reserve_gib``) in its assumptions."""
    if (reserve := reserve_entry(p.gpu)) is not None:
        p = replace(p, assumptions={**p.assumptions, "reserve": reserve})
    return p


# what planner.estimate models on one GPU and a fixed multi-GPU layout does not: (the default, why)
LAYOUT_UNMODELLED = {
    "vllm_max_model_length": (None, "vLLM's max_model_len is prompt + completion in a layout"),
    "vllm_quantization": (None, "the layout's engine follows the trainer's weights"),
    "vllm_max_num_seqs": (None, "the layout's engine takes TRL's"),
    "vllm_max_num_batched_tokens": (None, "the layout's engine takes TRL's"),
    "vllm_enforce_eager": (False, "the layout's engine captures CUDA graphs, as TRL's does"),
    "completion_lengths": ("varied", "a layout is a run's peak (varied completion lengths)"),
}


def layout_refusals(given: dict[str, Any], gradient_accumulation_steps: int | None,
                    steps_per_generation: int) -> list[str]:
    """One line per setting a fixed multi-GPU layout cannot honour (``plan estimate --num-gpus``
    and :func:`estimate_layout` alike)."""
    out = [f"--{name.replace('_', '-')} is not modelled for a fixed multi-GPU setup ({why}); drop it or plan "
           f"one GPU" for name, (default, why) in LAYOUT_UNMODELLED.items() if given[name] != default]
    ga = gradient_accumulation_steps
    if ga is not None and ga != steps_per_generation:
        out.append(f"--gradient-accumulation-steps {ga} and --steps-per-generation {steps_per_generation} differ: "
                   f"a layout runs one generation per optimizer step (steps_per_generation = "
                   f"gradient_accumulation_steps); give one")
    return out


@_speak_python
def preflight(plan_or_options: Plan | Mapping[str, Any], *, live_gpu: bool | GpuSpec | None = None,
              for_training: bool | None = None, strict: bool = True) -> CheckReport:
    """Pre-flight checks of a :class:`Plan`, or of ``plan(**options)`` when given a dict of
    :func:`plan`'s keywords (``model``, ``gpu``, ...). ``live_gpu``, ``for_training``, ``strict``:
    planner.checks.preflight.preflight."""
    if isinstance(plan_or_options, Mapping):
        plan_or_options = plan(**plan_or_options)
    if not isinstance(plan_or_options, Plan):
        raise InvalidSetupError(f"preflight takes a Plan (planner.plan(...)) or a dict of its options, "
                                f"got {type(plan_or_options).__name__}")
    report = preflight_plan(plan_or_options, live_gpu=live_gpu, for_training=for_training, strict=strict)
    return replace(report, checks=tuple(replace(c, message=to_python(c.message), fix=to_python(c.fix))
                                        for c in report.checks))


@_speak_python
def train(model: Any, reward_funcs: Any, train_dataset: Any, plan: Plan | None = None, *,
          gpu: Any = "auto", checks: bool = True, dry_run: bool = False, processing_class: Any = None,
          plan_kwargs: dict[str, Any] | None = None, runtime: str = "trl", **overrides: Any) -> Any:
    """Build TRL's GRPOTrainer as planned, run the pre-flight checks, train, return the trainer
    (planner.runtimes.trl_handoff.train_with_plan). ``plan``: a Plan, or None to solve for ``gpu``
    (``plan_kwargs`` go to :func:`plan`). ``runtime="unsloth"`` (or a plan for it): Unsloth's
    FastLanguageModel and GRPOTrainer (planner.runtimes.unsloth_handoff; needs a GPU and unsloth)."""
    if runtime == "unsloth" or (plan is not None and plan.runtime == "unsloth"):
        from .runtimes.unsloth_handoff import train_unsloth
        from .search.unsloth_solver import with_unsloth_checks

        if not isinstance(model, str):
            raise InvalidSetupError("planner.train(runtime='unsloth') takes the model's Hub id or path "
                                    "(Unsloth loads it into vLLM and the trainer at once)")
        if plan is not None and plan.runtime != "unsloth":
            raise InvalidSetupError("planner.train(runtime='unsloth') needs a plan for that runtime "
                                    "(planner.plan(..., runtime='unsloth')), got a TRL plan")
        chosen = plan if plan is not None else _plan(model, gpu, runtime="unsloth", **(plan_kwargs or {}))
        if checks:  # every error-level runtime check (for training) raises before anything is loaded
            chosen = with_unsloth_checks(chosen, for_training=True)
            CheckReport(checks=chosen.checks, for_training=True).raise_for_errors()
        return train_unsloth(model, reward_funcs, train_dataset, chosen, dry_run=dry_run, **overrides)
    from .runtimes.trl_handoff import spec_of, train_with_plan

    if plan is None:
        plan = _plan(spec_of(model), gpu, **(plan_kwargs or {}))
    return train_with_plan(model, reward_funcs, train_dataset, plan, checks=checks, dry_run=dry_run,
                           processing_class=processing_class, **overrides)
