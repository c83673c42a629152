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
from dataclasses import replace
from typing import Any

from .checks.preflight import CheckReport, architecture_warnings, with_checks
from .checks.preflight import preflight as preflight_plan
from .errors import InvalidSetupError, PlannerError, VersionError
from .memory.allocator import expandable_segments_from_env
from .memory.calibration import calibration_gap
from .memory.trainer import TrainerSetup
from .report.assumptions import assumptions
from .report.hints import to_python
from .report.next_steps import next_steps
from .search.estimation import default_logprob_head, resolve_calibration
from .search.margins import MEMORY_MODEL_MARGIN, coverage_margin
from .search.request import PlanRequest, apply_pins, fixed_setup_problems, plan_request
from .search.results import Plan
from .search.solver import DEFAULT_OPTIM, evaluate, solve
from .specs.gpu import GpuSpec
from .specs.model import ModelSpec, resolve_model
from .specs.topology import TRL_SERVE_DEFAULT_PORT, TRL_SERVE_DEFAULT_UTILIZATION, Topology, resolve_gpus
from .specs.versions import _transformers_version, installed_version, trl_facts


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
    the profile up once): the completed request holds their specs and the profile (or None)."""
    t, g, v = req.trainer, req.targets, req.vllm
    trainer = t
    if t.optim is None and req.pins.optim is None:
        trainer = replace(trainer, optim=choose_optim(req)[0])
    if t.logprob_head is None:
        trainer = replace(trainer, logprob_head=default_logprob_head(v.trl_version))
    if t.expandable_segments is None:
        trainer = replace(trainer, expandable_segments=expandable_segments_from_env())
    targets = g
    if g.max_completion_length is None:  # TRL's own default for the release planned for
        try:
            targets = replace(g, max_completion_length=trl_facts(v.trl_version).max_completion_length_default)
        except VersionError:
            targets = replace(g, max_completion_length=512)
    completed = replace(req, trainer=trainer, targets=targets)
    spec = resolve_model(req.model)
    o = req.topology
    card, cards = resolve_gpus(list(req.gpu) if isinstance(req.gpu, tuple) else req.gpu, o.num_gpus, o.num_nodes)
    completed = replace(completed, model=spec, gpu=cards if isinstance(req.gpu, tuple) else card,
                        calibration=resolve_calibration(spec, card, req.calibration))
    if g.margin is None:
        margin = MEMORY_MODEL_MARGIN[memory_model_kind(completed, spec, card)]
        completed = replace(completed, targets=replace(completed.targets, margin=margin))
    return completed


def trainer_setup(req: PlanRequest) -> TrainerSetup:
    """The trainer options of a completed request, pins applied (``--lora-r``, ``--optim`` from a
    flag or a --config file), as the setup the coverage and calibration rules read (no shape)."""
    t = apply_pins(req).trainer
    return TrainerSetup(weights=t.weights, finetune=t.finetune, lora_rank=t.lora_rank, optim=t.optim or DEFAULT_OPTIM,
                        gradient_checkpointing=t.gradient_checkpointing, logprob_head=t.logprob_head or "fused",
                        transformers_version=t.transformers_version)


def memory_model_kind(req: PlanRequest, spec: ModelSpec, card: GpuSpec) -> str:
    """``"calibrated"`` when a calibration profile covers the request's trainer setup on ``card``
    (the solver then uses it: planner.memory.calibration.calibration_gap), else ``"analytic"``: whose
    measured band the default margin is."""
    calibration = resolve_calibration(spec, card, req.calibration)
    if calibration is not None and calibration_gap(calibration, trainer_setup(req)) is None:
        return "calibrated"
    return "analytic"


def _speak_python(fn):
    """Run ``fn`` and give its errors' fix hints as keyword arguments (planner.report.hints), not flags."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PlannerError as e:
            e.args = tuple(to_python(a) if isinstance(a, str) else a for a in e.args)
            raise
    return wrapper


def python_checks(p: Plan) -> Plan:
    """The plan with its checks' messages and fixes in Python's words."""
    checks = tuple(replace(c, message=to_python(c.message), fix=to_python(c.fix)) for c in p.checks)
    return replace(p, checks=checks, reasons=tuple(to_python(r) for r in p.reasons))


@_speak_python
def plan(model: Any, gpu: Any = "auto", num_gpus: int = 1, num_nodes: int = 1, layout: str = "auto",
         runtime: str = "trl", **options: Any) -> Plan:
    """Solve for the configuration that fits and makes the most of the GPUs, with its pre-flight
    checks (``plan.checks``). One GPU or many: the same search and the same :class:`Plan`.

    ``options``: any field of the request (planner.search.request: ``weights``, ``lora_rank``,
    ``num_generations``, ``max_completion_length``, ``prompt_length``, ``utilization_range``,
    ``margin``, ``sleep_mode``, ``engine``, ``server_gpus``, ...). When nothing fits, the
    InfeasibleError names what breaks and carries the closest plan that fits (``.closest``).

    Pins: ``pin={"per_device_train_batch_size": 8, "max_completion_length": 2048, ...}`` (TRL's
    names, planner.search.request.Pins) holds those settings and the solver chooses only the rest; the
    TRL-named pins that are not also options may be keywords (``per_device_train_batch_size=8``).
    ``max_completion_length=`` as a keyword is a target (cut if it does not fit); pinned it is exact.
    Fix hints in errors and checks name keyword arguments.

    ``runtime="unsloth"``: Unsloth's fast_inference=True, the same request and the same :class:`Plan`
    (``plan.runtime == "unsloth"``; planner.search.unsloth_solver), with its runtime checks; its own
    options: ``max_seq_length``, ``standby``, ``unsloth_version``; what it cannot honour is refused."""
    if runtime != "trl":
        return _unsloth_plan(model, gpu, num_gpus, num_nodes, layout, runtime, **options)
    req = plan_request(model, gpu, num_gpus=num_gpus, num_nodes=num_nodes, layout=layout, **options)
    return python_checks(plan_from_request(req))


_plan = plan  # train() takes a parameter named plan


def _unsloth_plan(model: Any, gpu: Any, num_gpus: int, num_nodes: int, layout: str, runtime: str,
                  **options: Any) -> Plan:
    from .search.unsloth_solver import unsloth_request

    if runtime != "unsloth":
        raise InvalidSetupError(f"runtime must be 'trl' or 'unsloth', got {runtime!r}")
    req = unsloth_request(model, gpu, num_gpus=num_gpus, num_nodes=num_nodes, layout=layout, **options)
    return python_checks(unsloth_plan_from_request(req))


def unsloth_plan_from_request(req: PlanRequest, for_training: bool | None = None) -> Plan:
    """:func:`plan_from_request` for ``req.runtime == "unsloth"`` (the CLI's ``--runtime unsloth``
    too): the search, the runtime checks, the assumptions (installed releases read here) and the
    next steps."""
    from .report.assumptions import unsloth_assumptions
    from .search.unsloth_solver import solve_unsloth, unsloth_next_steps, with_unsloth_checks

    p = with_unsloth_checks(solve_unsloth(req), for_training=for_training)
    installed = {d: installed_version(d) for d in ("unsloth_zoo", "trl", "vllm")}
    p = replace(p, assumptions=unsloth_assumptions(req, p, installed))
    return replace(p, next_steps=unsloth_next_steps(p))


def plan_from_request(req: PlanRequest, for_training: bool | None = None, strict: bool = False) -> Plan:
    """:func:`plan` for a request already built (the CLI builds one from its flags). The plan's
    checks are the layout's own and every pre-flight check (``for_training``, ``strict``: see
    planner.checks.preflight; a plan carries an unmodelled architecture as a warning, `plan check` as an error)."""
    completed = complete_request(req)
    extra, why = unmodelled_margin(completed)
    solving = completed
    if extra:  # the margin grows where the model covers less than a real run may hold (planner.search.margins)
        solving = completed.with_options(margin=round(min(0.45, (completed.targets.margin or 0.0) + extra), 4))
    result = solve(solving)
    checked = with_checks(result, for_training=for_training, strict=strict)
    warnings = tuple(w for w in architecture_warnings(result.model) if w not in result.warnings)
    checked = replace(checked, checks=tuple(result.checks) + tuple(checked.checks),
                      warnings=tuple(result.warnings) + warnings + why)
    return describe(req, completed, checked)


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
    and the memory model it follows) and the next steps (planner.report.next_steps)."""
    _, optim_source, optim_note = choose_optim(req)
    notes = {"optim_source": optim_source, **({"optim": optim_note} if optim_note else {}),
             "memory_model_kind": memory_model_kind(completed, p.model, p.gpu)}
    for dist, facts in (("trl", trl_facts), ("transformers", None)):
        try:
            notes[f"{dist}_assumed"] = (facts(req.vllm.trl_version).release if facts is not None
                                        else _transformers_version(req.trainer.transformers_version))
        except VersionError:
            pass
    installed = {d: installed_version(d) for d in ("trl", "vllm", "transformers", "bitsandbytes")}
    p = replace(p, assumptions=assumptions(req, completed, p, installed, notes))
    return replace(p, next_steps=next_steps(p))


@_speak_python
def estimate_layout(model: Any, gpu: Any = "H100-80GB", num_gpus: int = 1, num_nodes: int = 1, *,
                    layout: str = "colocate", engine: str = "ddp", vllm_tensor_parallel_size: int = 1,
                    server_gpus: int = 1, server_tensor_parallel_size: int | None = None,
                    server_data_parallel_size: int = 1,
                    server_gpu_memory_utilization: float = TRL_SERVE_DEFAULT_UTILIZATION,
                    batch_size: int = 1, steps_per_generation: int = 1, num_generations: int = 8,
                    completion_length: int = 512, vllm_gpu_memory_utilization: float = 0.3,
                    sleep_mode: bool = False, server_port: int = TRL_SERVE_DEFAULT_PORT, **options: Any) -> Plan:
    """Per-GPU memory of one fixed multi-GPU setup, no search (``plan estimate --num-gpus``).

    The layout is given (``colocate`` or ``server``, the engine, TP / server split), so are batch,
    steps per generation, lengths and utilisations. The :class:`Plan`'s ``fits`` says whether every
    GPU stays under the margin. ``options``: trainer and vLLM options as for :func:`plan`."""
    if layout not in ("colocate", "server"):
        raise InvalidSetupError(f"--layout must be colocate or server for an estimate, got {layout!r}")
    problems = fixed_setup_problems(batch_size=batch_size, steps_per_generation=steps_per_generation,
                                    completion_length=completion_length, sleep_mode=sleep_mode)
    if problems:
        raise InvalidSetupError("\n".join(problems))
    u = vllm_gpu_memory_utilization if layout == "colocate" else server_gpu_memory_utilization
    tp: dict[str, Any] = {"tensor_parallel_size": vllm_tensor_parallel_size} if layout == "colocate" else {}
    req = plan_request(model, gpu, num_gpus=num_gpus, num_nodes=num_nodes, layout=layout, engine=engine,
                       num_generations=num_generations, max_completion_length=completion_length,
                       utilization_range=(vllm_gpu_memory_utilization,) * 2,
                       server_utilization_range=(server_gpu_memory_utilization,) * 2,
                       sleep_mode="on" if sleep_mode else "off",
                       server_port=server_port,
                       **options, **tp)
    req = complete_request(req)
    if layout == "colocate":
        topo = Topology(num_gpus, num_nodes, engine, "colocate", vllm_tensor_parallel_size=vllm_tensor_parallel_size)
    else:
        t = server_tensor_parallel_size or server_gpus // server_data_parallel_size
        topo = Topology(num_gpus, num_nodes, engine, "server", server_gpus=server_gpus,
                        server_tensor_parallel_size=t, server_data_parallel_size=server_data_parallel_size)
    return evaluate(req, topology=topo, batch_size=batch_size, steps_per_generation=steps_per_generation,
                    completion_length=completion_length, utilization=u, sleep_mode=sleep_mode,
                    num_generations=num_generations)


@_speak_python
def preflight(plan_or_options: Any, **kwargs: Any) -> CheckReport:
    """Pre-flight checks of a :class:`Plan`, or of ``plan(**options)`` when given a dict."""
    if isinstance(plan_or_options, dict):
        plan_or_options = plan(**plan_or_options)
    if not isinstance(plan_or_options, Plan):
        raise InvalidSetupError(f"preflight takes a Plan (planner.plan(...)) or a dict of its options, "
                                f"got {type(plan_or_options).__name__}")
    unknown = sorted(set(kwargs) - {"live_gpu", "for_training", "strict"})
    if unknown:
        raise InvalidSetupError(f"preflight takes live_gpu, for_training and strict, not {', '.join(unknown)}")
    report = preflight_plan(plan_or_options, **kwargs)
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
