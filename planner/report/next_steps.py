"""What to run after a plan: the exact command for the user's setup and a short Python snippet.

    steps = next_steps(plan)                      # {"command": ..., "python": ..., "files": [...]}
    steps = next_steps(plan, written={"grpo.yaml": "/tmp/run/grpo.yaml"})

One GPU: ``trl grpo --config grpo.yaml`` (TRL's own script reads the model, LoRA and GRPOConfig
keys from the file; ``--dataset_name`` and ``--reward_funcs`` are its script arguments). Several:
``launch.sh`` of ``--output-dir`` (``accelerate launch --config_file accelerate.yaml ...``), with
``vllm_serve.sh`` first in server mode. The snippet solves the same plan in Python and trains with
``planner.train``. Only the plan is read; nothing is decided here.
"""

from __future__ import annotations

import shlex
from typing import Any

from .emit import ACCELERATE_YAML, DEEPSPEED_JSON, GRPO_YAML, LAUNCH_SH, VLLM_SERVE_SH

SCRIPT_ARGS = "--dataset_name YOUR_DATASET --reward_funcs YOUR_MODULE.reward_fn"


def _path(written: dict[str, str], name: str) -> str:
    return shlex.quote(str(written.get(name, name)))


def _python(plan: Any) -> str:
    gpu = plan.gpu.name if plan.gpu.free_bytes is None else "auto"
    args = [repr(plan.model.model_id), repr(gpu)]
    if plan.topology.total_gpus > 1:
        args += [f"num_gpus={plan.topology.num_gpus}"] + ([f"num_nodes={plan.topology.num_nodes}"]
                                                          if plan.topology.num_nodes > 1 else [])
    if getattr(plan, "rollout_turns", 1) > 1:
        args.append(f"rollout_turns={plan.rollout_turns}")
    pins = {k: plan.pin_value(k) for k in plan.pinned}
    if pins:
        args.append(f"pin={pins!r}")
    return "\n".join([
        "import planner",
        f"plan = planner.plan({', '.join(args)})",
        "# reward_fn(completions, **kwargs) -> list[float]; dataset: a datasets.Dataset with a 'prompt' column",
        f"trainer = planner.train({plan.model.model_id!r}, [reward_fn], dataset, plan=plan)",
    ])


def next_steps(plan: Any, written: dict[str, str] | None = None) -> dict[str, Any]:
    """The command to run, the files it reads, and the Python equivalent. ``written``: file name ->
    path of what this invocation wrote (``--output``/``--output-dir``)."""
    written = dict(written or {})
    t = plan.topology
    if t.total_gpus == 1:
        files = [GRPO_YAML]
        command = f"trl grpo --config {_path(written, GRPO_YAML)} {SCRIPT_ARGS}"
        write_first = "plan ... --output grpo.yaml" if GRPO_YAML not in written else ""
    else:
        files = [GRPO_YAML, ACCELERATE_YAML, LAUNCH_SH]
        if plan.deepspeed is not None and plan.accelerate.get("distributed_type") == "DEEPSPEED":
            files.insert(2, DEEPSPEED_JSON)
        if t.vllm_mode == "server":
            files.append(VLLM_SERVE_SH)
        launch = _path(written, LAUNCH_SH)
        command = f"bash {launch} {SCRIPT_ARGS}"
        if t.vllm_mode == "server":
            command = f"bash {_path(written, VLLM_SERVE_SH)} &  # on the server GPUs, then\n{command}"
        write_first = "plan ... --output-dir run/" if LAUNCH_SH not in written else ""
    return {"command": command, "files": files, "write_first": write_first, "python": _python(plan)}
