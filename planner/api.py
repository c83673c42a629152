"""The Python API: composes the request, the solver, the pre-flight checks and the hand-off.

    plan = planner.plan("Qwen/Qwen2.5-7B-Instruct", "H100-80GB")                 # one GPU
    plan = planner.plan("Qwen/Qwen2.5-32B-Instruct", "H100-80GB", num_gpus=8)    # a layout
    report = planner.preflight(plan)
    trainer = planner.train("Qwen/Qwen2.5-0.5B-Instruct", reward_funcs, dataset, gpu="auto")

This is the only module that reads the environment for defaults (the installed TRL's log-prob
head and default completion length, ``PYTORCH_CUDA_ALLOC_CONF``); the solver below it is pure.
Imports go one way: api -> solver -> (phases, sharding, estimation, results) and api -> checks,
handoff; checks and the hand-off take a plan and never import the solver.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, overload

from .checks import CheckReport, architecture_warnings, with_checks
from .checks import preflight as preflight_plan
from .distributed.topology import TRL_SERVE_DEFAULT_PORT, TRL_SERVE_DEFAULT_UTILIZATION, Topology
from .errors import InvalidSetupError, VersionError
from .estimation import default_logprob_head
from .memory.allocator import expandable_segments_from_env
from .request import PlanRequest, fixed_setup_problems, plan_request
from .results import Plan
from .solver import evaluate, solve
from .unsloth_solver import UnslothPlan
from .versions import trl_facts


def complete_request(req: PlanRequest) -> PlanRequest:
    """Fill what the user left to the environment: the TRL release's default completion length
    and log-prob head, and the allocator setting from ``PYTORCH_CUDA_ALLOC_CONF``."""
    t, g, v = req.trainer, req.targets, req.vllm
    trainer = t
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
    return replace(req, trainer=trainer, targets=targets)


@overload
def plan(model: Any, gpu: Any = ..., num_gpus: int = ..., num_nodes: int = ..., layout: str = ...,
         runtime: Literal["trl"] = ..., **options: Any) -> Plan: ...
@overload
def plan(model: Any, gpu: Any = ..., num_gpus: int = ..., num_nodes: int = ..., layout: str = ..., *,
         runtime: Literal["unsloth"], **options: Any) -> UnslothPlan: ...
def plan(model: Any, gpu: Any = "auto", num_gpus: int = 1, num_nodes: int = 1, layout: str = "auto",
         runtime: str = "trl", **options: Any) -> Plan | UnslothPlan:
    """Solve for the configuration that fits and makes the most of the GPUs, with its pre-flight
    checks (``plan.checks``). One GPU or many: the same search and the same :class:`Plan`.

    ``options``: any field of the request (planner.request: ``weights``, ``lora_rank``,
    ``num_generations``, ``max_completion_length``, ``prompt_length``, ``utilization_range``,
    ``margin``, ``sleep_mode``, ``engine``, ``server_gpus``, ...). When nothing fits, the
    InfeasibleError names what breaks and carries the closest plan that fits (``.closest``).

    ``runtime="unsloth"``: Unsloth's fast_inference=True (planner.unsloth_solver.unsloth_plan and its
    keyword arguments) -> :class:`UnslothPlan` with its runtime checks."""
    if runtime != "trl":
        return _unsloth_plan(model, gpu, num_gpus, num_nodes, layout, runtime, **options)
    req = plan_request(model, gpu, num_gpus=num_gpus, num_nodes=num_nodes, layout=layout, **options)
    return plan_from_request(req)


_plan = plan  # train() takes a parameter named plan


def _unsloth_plan(model: Any, gpu: Any, num_gpus: int, num_nodes: int, layout: str, runtime: str,
                  **options: Any) -> UnslothPlan:
    from .unsloth_solver import unsloth_plan, with_unsloth_checks

    if runtime != "unsloth":
        raise InvalidSetupError(f"runtime must be 'trl' or 'unsloth', got {runtime!r}")
    if num_gpus * num_nodes != 1 or layout != "auto":
        raise InvalidSetupError("runtime='unsloth' plans one GPU (no num_gpus, num_nodes or layout)")
    return with_unsloth_checks(unsloth_plan(model, gpu, **options))


def plan_from_request(req: PlanRequest, for_training: bool | None = None, strict: bool = False) -> Plan:
    """:func:`plan` for a request already built (the CLI builds one from its flags). The plan's
    checks are the layout's own and every pre-flight check (``for_training``, ``strict``: see
    planner.checks; a plan carries an unmodelled architecture as a warning, `plan check` as an error)."""
    result = solve(complete_request(req))
    checked = with_checks(result, for_training=for_training, strict=strict)
    warnings = tuple(w for w in architecture_warnings(result.model) if w not in result.warnings)
    return replace(checked, checks=tuple(result.checks) + tuple(checked.checks),
                   warnings=tuple(result.warnings) + warnings)


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
    req = plan_request(model, gpu, num_gpus=num_gpus, num_nodes=num_nodes, layout=layout, engine=engine,
                       num_generations=num_generations, max_completion_length=completion_length,
                       utilization_range=(vllm_gpu_memory_utilization,) * 2,
                       server_utilization_range=(server_gpu_memory_utilization,) * 2,
                       sleep_mode="on" if sleep_mode else "off",
                       server_port=server_port,
                       **({"tensor_parallel_size": vllm_tensor_parallel_size} if layout == "colocate" else {}),
                       **options)
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
    return preflight_plan(plan_or_options, **kwargs)


def train(model: Any, reward_funcs: Any, train_dataset: Any, plan: Plan | UnslothPlan | None = None, *,
          gpu: Any = "auto", checks: bool = True, dry_run: bool = False, processing_class: Any = None,
          plan_kwargs: dict[str, Any] | None = None, runtime: str = "trl", **overrides: Any) -> Any:
    """Build TRL's GRPOTrainer as planned, run the pre-flight checks, train, return the trainer
    (planner.handoff.train_with_plan). ``plan``: a Plan, or None to solve for ``gpu``
    (``plan_kwargs`` go to :func:`plan`). ``runtime="unsloth"`` (or an UnslothPlan): Unsloth's
    FastLanguageModel and GRPOTrainer (planner.unsloth_handoff; needs a GPU and unsloth)."""
    if runtime == "unsloth" or isinstance(plan, UnslothPlan):
        from .unsloth_handoff import train_unsloth

        return train_unsloth(model, reward_funcs, train_dataset, plan if isinstance(plan, UnslothPlan) else None,
                             gpu=gpu, checks=checks, dry_run=dry_run, plan_kwargs=plan_kwargs, **overrides)
    from .handoff import spec_of, train_with_plan

    if plan is None:
        plan = _plan(spec_of(model), gpu, **(plan_kwargs or {}))
    return train_with_plan(model, reward_funcs, train_dataset, plan, checks=checks, dry_run=dry_run,
                           processing_class=processing_class, **overrides)
