"""planner: a VRAM budget planner and auto-tuner for GRPO with vLLM colocated on one GPU.

Public API (imports are lazy so `import planner` stays fast and torch-free):

    planner.plan(model, gpu, num_gpus=1, ...)      -> Plan          the solver's choice, 1..N GPUs
    planner.estimate(model, gpu, ...)              -> Estimate      one fixed setup on one GPU, no solving
    planner.estimate_layout(model, gpu, num_gpus)  -> Plan          one fixed multi-GPU setup, no solving
    planner.vllm_capacity(model=..., gpu=..., ...) -> VllmCapacity  what vLLM will have
    planner.preflight(plan_or_options)             -> CheckReport   pre-flight checks
    planner.train(model, reward_funcs, train_dataset, plan=None, **grpo_config_overrides)
    planner.plan_request(model, gpu, **options)    -> PlanRequest   the typed, validated request
    planner.plan(model, gpu, pin={...})            -> Plan          TRL settings held as given (Pins)
    planner.read_grpo_config("grpo.yaml")          -> TrlConfig     a TRL config: pins, options, pass-through
    planner.resolve_model(name) / planner.resolve_gpu(name)
    planner.plan(model, gpu, runtime="unsloth", ...) -> Plan   Unsloth's fast_inference=True (plan.runtime)
    planner.unsloth_estimate(model, gpu, ...)      -> UnslothEstimate one fixed Unsloth setup
    planner.MemoryCallback(plan)                   -> a transformers TrainerCallback: each moment of a
                                                      GRPO run measured against the plan, a record at the end
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type checkers see the typed signatures; at run time the imports stay lazy
    from .api import estimate_layout as estimate_layout
    from .api import plan as plan
    from .api import preflight as preflight
    from .api import train as train
    from .search.estimation import estimate as estimate

__version__ = "0.1.0"

_EXPORTS = {
    "estimate": "planner.search.estimation",
    "Estimate": "planner.search.results",
    "TrainerSetup": "planner.memory.trainer",
    "vllm_capacity": "planner.memory.vllm",
    "VllmCapacity": "planner.memory.vllm",
    "plan": "planner.api",
    "estimate_layout": "planner.api",
    "Plan": "planner.search.results",
    "PlanRequest": "planner.search.request",
    "plan_request": "planner.search.request",
    "Pins": "planner.search.request",
    "read_grpo_config": "planner.search.trl_config",
    "preflight": "planner.api",
    "CheckReport": "planner.checks.preflight",
    "train": "planner.api",
    "resolve_model": "planner.specs.model",
    "ModelSpec": "planner.specs.model",
    "resolve_gpu": "planner.specs.gpu",
    "GpuSpec": "planner.specs.gpu",
    "PlannerError": "planner.errors",
    "InfeasibleError": "planner.errors",
    "unsloth_plan": "planner.search.unsloth_solver",
    "unsloth_estimate": "planner.runtimes.unsloth",
    "UnslothEstimate": "planner.runtimes.unsloth",
    "MemoryCallback": "planner.profiler.callback",
    "PlanExceededWarning": "planner.profiler.callback",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")
