"""What a plan changed: every modelled TRL key whose planned value differs from the value given (a flag,
a ``--config`` file's key) or, for a key left out, from TRL's own default (the TRL release planned for).

    plan_changes(plan, given={"per_device_train_batch_size": 4}, trl_version="1.16.0")
    # ({"key": "vllm_enable_sleep_mode", "from": False, "to": True, "why": "..."}, ...)

A key given and held (a pin) is no change; one re-chosen (``plan --rechoose KEY``) or left to the planner
is, with why: the solver's reason for it where it gives one, else the planner's default.
"""

from __future__ import annotations

from typing import Any

from ..errors import VersionError
from ..search.trl_config import TRL_BATCH_DEFAULT, TRL_NUM_GENERATIONS_DEFAULT
from ..specs.versions import default_optimizer, trl_facts

# the modelled keys a plan's changes are read for (TRL's names), and the words its reasons use for them
CHANGE_KEYS = {
    "per_device_train_batch_size": ("per_device_train_batch_size", "micro-batch"),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", "steps per generation"),
    "num_generations": ("num_generations", "generations"),
    "max_completion_length": ("max_completion_length", "completion length"),
    "use_vllm": ("use_vllm",),
    "vllm_mode": ("vllm_mode", "layout"),
    "vllm_gpu_memory_utilization": ("vllm_gpu_memory_utilization",),
    "vllm_enable_sleep_mode": ("sleep mode",),
    "vllm_max_model_length": ("vllm_max_model_length",),
    "vllm_tensor_parallel_size": ("vllm_tensor_parallel_size", "tensor parallel"),
    "gradient_checkpointing": ("gradient_checkpointing",),
    "optim": ("optim",),
    "use_peft": ("use_peft",),
    "lora_r": ("lora_r",),
}
_PLANNER_WHY = {
    "use_vllm": "the planner plans vLLM generation (TRL's default generates with transformers)",
    "vllm_max_model_length": "prompt + completion: vLLM's KV cache sized for the sequences the run sends "
                             "(TRL's default: the model's whole context)",
    "use_peft": "the planner's default is LoRA (--finetune full for full fine-tuning)",
    "optim": "the planner's default optimizer (--optim to choose)",
}


def trl_defaults(trl_version: str | None, transformers_version: str | None = None) -> dict[str, Any]:
    """TRL's GRPOConfig / TrainingArguments / ModelConfig default of each modelled key, for the release
    planned for (the newest known when it is not in the table)."""
    try:
        facts = trl_facts(trl_version)
    except VersionError:
        facts = trl_facts(None)
    return {"per_device_train_batch_size": TRL_BATCH_DEFAULT, "gradient_accumulation_steps": 1,
            "num_generations": TRL_NUM_GENERATIONS_DEFAULT,
            "max_completion_length": facts.max_completion_length_default, "use_vllm": False,
            "vllm_mode": facts.vllm_mode_default,
            "vllm_gpu_memory_utilization": facts.vllm_gpu_memory_utilization_default,
            "vllm_enable_sleep_mode": False, "vllm_max_model_length": None, "vllm_tensor_parallel_size": 1,
            "gradient_checkpointing": True, "optim": default_optimizer(transformers_version), "use_peft": False,
            "lora_r": 16}


def planned_value(plan: Any, key: str) -> Any:
    """The plan's value of a modelled key (None: the plan does not set it, e.g. LoRA's rank in full fine-tuning)."""
    if key == "use_peft":
        return plan.setup.finetune == "lora"
    if key == "lora_r":
        return plan.setup.lora_rank if plan.setup.finetune == "lora" else None
    return plan.config.get(key)


def _why(plan: Any, key: str, given: bool) -> str:
    words = CHANGE_KEYS[key]
    reason = next((r for r in plan.reasons if any(r.startswith(w) or f" {w}" in r for w in words)), None)
    head = "re-chosen (--rechoose)" if given else "left to the planner"
    return f"{head}: {reason or _PLANNER_WHY.get(key, 'the planner chose it')}"


def plan_changes(plan: Any, given: dict[str, Any], trl_version: str | None = None,
                 transformers_version: str | None = None) -> tuple[dict[str, Any], ...]:
    """(key, from, to, why) for every modelled key whose planned value differs from ``given``'s (the file's
    or a flag's value) or, for a key not in ``given``, from TRL's default."""
    defaults = trl_defaults(trl_version, transformers_version)
    out = []
    for key in CHANGE_KEYS:
        to = planned_value(plan, key)
        if to is None:
            continue
        before = given[key] if key in given else defaults[key]
        if before != to:
            out.append({"key": key, "from": before, "to": to, "why": _why(plan, key, key in given)})
    return tuple(out)


def render_changes(changes: tuple[dict[str, Any], ...]) -> str:
    """The changes as an aligned table (key, from, to, why); empty when nothing changed."""
    if not changes:
        return "changes: none (every key as given, or as TRL's default)"
    rows = [(c["key"], str(c["from"]), str(c["to"]), c["why"]) for c in changes]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    out = ["changes (from what was given, else TRL's default):"]
    out += [f"  {k:<{w[0]}}  {a:<{w[1]}} -> {b:<{w[2]}}  {why}" for k, a, b, why in rows]
    return "\n".join(out)
