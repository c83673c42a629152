"""What to run after a plan: the command that reproduces it, the command that trains, the Python call.

    steps = next_steps(plan, request=req)         # {"plan": ..., "command": ..., "python": ..., "files": [...]}
    steps = next_steps(plan, request=req, outputs={"output": "run.yaml"}, written={"grpo.yaml": "run.yaml"})

``plan``: the ``plan ...`` command line that makes this plan again and writes its files: every
option of the request it was made from (:func:`plan_argv`: the pins under TRL's names, the trainer,
vLLM, target, layout and runtime options, the releases), each value shell-quoted, with the output
flags given (``--output``, ``--output-dir``), else the ones the run needs. ``python``: the same
request as ``planner.plan(...)`` with its typed keywords (:func:`plan_call`; values as ``repr``).
``command``: what trains. One GPU: ``trl grpo --config <the grpo.yaml written>`` (TRL's own script
reads the model, LoRA and GRPOConfig keys from the file; ``--dataset_name`` and ``--reward_funcs``
are its script arguments). Several: ``launch.sh`` of ``--output-dir`` (``accelerate launch
--config_file accelerate.yaml ...``), with ``vllm_serve.sh`` first in server mode.
``write_first``: the ``plan`` command while the files the command reads are not written yet.
``unflagged``: the settings of a Python request that no flag carries (the Python call does).
Only the plan and its request are read; nothing is decided here.
"""

from __future__ import annotations

import shlex
from dataclasses import fields
from pathlib import PurePath
from typing import Any

from ..search.request import PlanRequest, Targets, TopologyOptions, TrainerOptions, VllmOptions
from ..specs.gpu import GpuSpec
from ..specs.model import ModelSpec
from .emit import ACCELERATE_YAML, DEEPSPEED_JSON, GRPO_YAML, LAUNCH_SH, VLLM_SERVE_SH

SCRIPT_ARGS = "--dataset_name YOUR_DATASET --reward_funcs YOUR_MODULE.reward_fn"
DEFAULT_OUTPUT_DIR = "run"
_DEFAULTS = {f.name: f.default for cls in (TrainerOptions, VllmOptions, Targets, TopologyOptions)
             for f in fields(cls)}
# request field -> (the `plan` flag, the planner.plan keyword); each set only when not the default
_OPTIONS = (
    ("trainer", "finetune", "--finetune", "finetune"),
    ("trainer", "lora_rank", "--lora-rank", "lora_r"),
    ("trainer", "lora_target_modules", "--lora-target-modules", "lora_target_modules"),
    ("trainer", "optim", "--optim", "optim"),
    ("trainer", "gradient_checkpointing", "--gradient-checkpointing", "gradient_checkpointing"),
    ("trainer", "logprob_head", "--logprob-head", "logprob_head"),
    ("trainer", "use_liger_kernel", "--use-liger-kernel", "use_liger_kernel"),
    ("targets", "typical_prompt_length", "--typical-prompt-length", "typical_prompt_length"),
    ("topology", "use_vllm", "--no-vllm", "use_vllm"),
    ("trainer", "expandable_segments", "--expandable-segments", "expandable_segments"),
    ("trainer", "transformers_version", "--transformers-version", "transformers_version"),
    ("vllm", "kv_cache_dtype", "--vllm-kv-cache-dtype", "vllm_kv_cache_dtype"),
    ("vllm", "tensor_parallel_size", "--vllm-tensor-parallel-size", "vllm_tensor_parallel_size"),
    ("vllm", "trl_version", "--trl-version", "trl_version"),
    ("vllm", "vllm_version", "--vllm-version", "vllm_version"),
    ("targets", "num_generations", "--num-generations", "num_generations"),
    ("targets", "max_completion_length", "--target-completion-length", "max_completion_length"),
    ("targets", "prompt_length", "--max-prompt-length", "max_prompt_length"),
    ("targets", "utilization_range", "--utilization-range", "utilization_range"),
    ("targets", "margin", "--margin", "margin"),
    ("targets", "sleep_mode", "--sleep-mode", "sleep_mode"),
    ("targets", "max_batch", "--max-batch", "max_batch"),
    ("targets", "max_completions_per_step", "--max-completions-per-step", "max_completions_per_step"),
    ("targets", "rollout_turns", "--rollout-turns", "rollout_turns"),
    ("topology", "num_gpus", "--num-gpus", "num_gpus"),
    ("topology", "num_nodes", "--num-nodes", "num_nodes"),
    ("topology", "layout", "--layout", "layout"),
    ("topology", "engine", "--engine", "engine"),
    ("topology", "server_gpus", "--server-gpus", "server_gpus"),
    ("topology", "server_host", "--server-host", "server_host"),
    ("topology", "server_port", "--server-port", "server_port"),
    ("topology", "server_utilization_range", "--server-utilization-range", "server_utilization_range"),
    ("unsloth", "max_seq_length", "--max-seq-length", "max_seq_length"),
    ("unsloth", "standby", "--standby", "standby"),
    ("unsloth", "unsloth_version", "--unsloth-version", "unsloth_version"),
)
# a request field that a pin of the same setting overrides (the pin is written instead)
_PINNED_BY = {"lora_rank": "lora_r", "lora_target_modules": "lora_target_modules", "optim": "optim",
              "num_generations": "num_generations", "prompt_length": "max_prompt_length"}
_WEIGHTS_DEFAULT = {"trl": "bf16"}  # the Unsloth runtime's default follows --finetune: always written


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _gpu(gpu: Any) -> str:
    """A card as its name (a live reading: ``auto``, the card it was read from)."""
    if isinstance(gpu, GpuSpec):
        return "auto" if gpu.free_bytes is not None else gpu.name
    return str(gpu)


def _reserve_gib(gpu: Any) -> float | None:
    """The ``--reserve`` (GiB) the request's cards carry, or None."""
    cards = gpu if isinstance(gpu, tuple) else (gpu,)
    reserve = max((c.reserve_bytes for c in cards if isinstance(c, GpuSpec)), default=0)
    return round(reserve / 2**30, 4) if reserve else None


def _model(model: Any) -> str:
    return model.model_id if isinstance(model, ModelSpec) else str(model)


def _settings(req: PlanRequest) -> list[tuple[str, str, Any]]:
    """(flag, keyword, value) of every setting the request holds that is not the default, in the
    order the flags are written: weights, the other options, then the pins (TRL's names)."""
    out: list[tuple[str, str, Any]] = []
    weights = req.trainer.weights
    if weights != _WEIGHTS_DEFAULT.get(req.runtime):
        out.append(("--weights", "weights", weights))
    pins = dict(req.pins.items())
    for section, name, flag, keyword in _OPTIONS:
        value = getattr(getattr(req, section), name)
        if name in _PINNED_BY and _PINNED_BY[name] in pins:
            continue
        default = _DEFAULTS.get(name)
        if value is not None and value != default:
            out.append((flag, keyword, value))
    for name, value in pins.items():  # a pinned max_completion_length is exact: pin={...} in Python
        out.append((_flag(name), "pin" if name == "max_completion_length" else name, value))
    return out


def _cli_words(flag: str, value: Any) -> list[str]:
    if flag == "--vllm-enable-sleep-mode":
        return [flag, "true" if value else "false"]
    if flag == "--no-vllm":
        return [flag] if value is False else []
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, (tuple, list)):
        return [flag, ",".join(str(x) for x in value)]
    return [flag, str(value)]


def plan_argv(req: PlanRequest, outputs: dict[str, Any] | None = None, config: str | None = None,
              command: str | None = None) -> tuple[list[str], list[str]]:
    """The words of the ``plan`` command line that builds ``req`` again (``command``: a subcommand,
    ``check``), with the output flags ``outputs`` (``output``, ``output_dir``, ``plot``) and a
    ``--config`` file when one was read; and the settings no flag carries (``name=value``)."""
    gpu = ",".join(_gpu(g) for g in req.gpu) if isinstance(req.gpu, tuple) else _gpu(req.gpu)
    words = ["plan"] + ([command] if command else []) + (["--config", config] if config else [])
    words += ["--model", _model(req.model), "--gpu", gpu]
    if req.runtime != "trl":
        words += ["--runtime", req.runtime]
    if (reserve := _reserve_gib(req.gpu)) is not None:
        words += ["--reserve", f"{reserve:g}"]
    for flag, _, value in _settings(req):
        words += _cli_words(flag, value)
    for name in ("output", "output_dir", "plot"):
        if (outputs or {}).get(name):
            words += [_flag(name), str(outputs[name])]  # type: ignore[index]
    unflagged = [f"{k}={v!r}" for k, v in _python_only(req).items()]
    if req.passthrough and not config:
        unflagged.append(f"passthrough={dict(req.passthrough)!r}")
    return words, unflagged


def _python_only(req: PlanRequest) -> dict[str, Any]:
    """What ``planner.plan`` takes and no flag of `plan` does."""
    out: dict[str, Any] = {}
    if req.calibration != "auto":
        out["calibration"] = req.calibration
    if req.relax is not True:
        out["relax"] = req.relax
    return out


def plan_call(req: PlanRequest) -> str:
    """``planner.plan(...)`` that builds ``req`` again: the typed keywords, values as ``repr``
    (``max_completion_length`` pinned goes in ``pin=``: as a keyword it is a target)."""
    gpu = [_gpu(g) for g in req.gpu] if isinstance(req.gpu, tuple) else _gpu(req.gpu)
    args = [repr(_model(req.model)), repr(gpu)]
    if req.runtime != "trl":
        args.append(f"runtime={req.runtime!r}")
    if (reserve := _reserve_gib(req.gpu)) is not None:
        args.append(f"reserve_gib={reserve:g}")
    for _, keyword, value in _settings(req):
        if keyword == "pin":
            args.append(f"pin={{'max_completion_length': {value!r}}}")
        else:
            args.append(f"{keyword}={list(value) if keyword == 'lora_target_modules' else value!r}")
    for k, v in _python_only(req).items():  # a Calibration object: the name the caller holds it by
        args.append(f"{k}={v!r}" if v is None or isinstance(v, bool) else f"{k}={k}")
    if req.passthrough:
        args.append(f"passthrough={dict(req.passthrough)!r}")
    return f"planner.plan({', '.join(args)})"


def _quoted(path: Any) -> str:
    return shlex.quote(str(path))


def _run_command(plan: Any, folder: str | None, grpo: str) -> tuple[list[str], str]:
    """The files the run reads and the command that trains (one GPU: ``grpo`` through TRL's script;
    several: ``folder``'s launch.sh)."""
    t = plan.topology
    if t.total_gpus == 1:
        return [GRPO_YAML], f"trl grpo --config {_quoted(grpo)} {SCRIPT_ARGS}"
    files = [GRPO_YAML, ACCELERATE_YAML, LAUNCH_SH]
    if plan.deepspeed is not None and plan.accelerate.get("distributed_type") == "DEEPSPEED":
        files.insert(2, DEEPSPEED_JSON)
    if t.vllm_mode == "server":
        files.append(VLLM_SERVE_SH)
    command = f"bash {_quoted(PurePath(folder or DEFAULT_OUTPUT_DIR) / LAUNCH_SH)} {SCRIPT_ARGS}"
    if t.vllm_mode == "server":
        serve = _quoted(PurePath(folder or DEFAULT_OUTPUT_DIR) / VLLM_SERVE_SH)
        command = f"bash {serve} &  # on the server GPUs, then\n{command}"
    return files, command


def _fallback_call(plan: Any) -> str:
    """The call from the plan alone (a plan made without its request: its layout and pins)."""
    gpu = plan.gpu.name if plan.gpu.free_bytes is None else "auto"
    args = [repr(plan.model.model_id), repr(gpu)]
    if plan.topology.total_gpus > 1:
        args.append(f"num_gpus={plan.topology.num_gpus}")
        if plan.topology.num_nodes > 1:
            args.append(f"num_nodes={plan.topology.num_nodes}")
    pins = {k: plan.pin_value(k) for k in plan.pinned}
    if pins:
        args.append(f"pin={pins!r}")
    return f"planner.plan({', '.join(args)})"


def python_snippet(call: str, model_id: str) -> str:
    """The call and the training line after it."""
    given = ["# calibration: the planner.memory.calibration.Calibration the plan was made with"
             ] if "calibration=calibration" in call else []
    return "\n".join([
        "import planner", *given,
        f"plan = {call}",
        "# reward_fn(completions, **kwargs) -> list[float]; dataset: a datasets.Dataset with a 'prompt' column",
        f"trainer = planner.train({model_id!r}, [reward_fn], dataset, plan=plan)",
    ])


def next_steps(plan: Any, written: dict[str, str] | None = None, *, request: PlanRequest | None = None,
               outputs: dict[str, Any] | None = None, config: str | None = None) -> dict[str, Any]:
    """The command that reproduces the plan and writes its files (``plan``), the command to run and
    the files it reads, the Python equivalent. ``request``: what the plan was made from (without
    it, only the model, card, layout and pins are known); ``outputs``: the output flags given
    (``output``, ``output_dir``, ``plot``); ``written``: what this invocation wrote, by the file's
    role (``grpo.yaml``, ``launch.sh``, ... -> its path: the command's files exist, no
    ``write_first``); ``config``: the ``--config`` file read."""
    outputs = {k: v for k, v in (outputs or {}).items() if k in ("output", "output_dir", "plot") and v}
    needed = dict(outputs)
    if plan.topology.total_gpus == 1 and not needed.get("output") and not needed.get("output_dir"):
        needed["output"] = GRPO_YAML
    if plan.topology.total_gpus > 1 and not needed.get("output_dir"):
        needed["output_dir"] = DEFAULT_OUTPUT_DIR + "/"
    folder = needed.get("output_dir")
    grpo = needed.get("output") or str(PurePath(folder or ".") / GRPO_YAML)
    files, command = _run_command(plan, folder, grpo)
    words: list[str] = []
    unflagged: list[str] = []
    if request is None:
        call = _fallback_call(plan)
    else:
        words, unflagged = plan_argv(request, needed, config)
        call = plan_call(request)
    plan_cmd = shlex.join(words) if words else "plan ... " + " ".join(
        f"{_flag(k)} {_quoted(v)}" for k, v in needed.items() if k != "plot")
    done = (GRPO_YAML if plan.topology.total_gpus == 1 else LAUNCH_SH) in (written or {})
    return {"plan": plan_cmd, "command": command, "files": files, "write_first": "" if done else plan_cmd,
            "python": python_snippet(call, plan.model.model_id), "unflagged": unflagged}


def unsloth_steps(steps: dict[str, Any], request: PlanRequest) -> dict[str, Any]:
    """An Unsloth plan's next steps (planner.search.unsloth_solver.unsloth_next_steps) with the
    ``plan`` and ``plan check`` commands and the Python call that build its request again."""
    words, unflagged = plan_argv(request)
    check, _ = plan_argv(request, command="check")
    return {**steps, "plan": shlex.join(words), "check": shlex.join(check + ["--for-training"]),
            "python": python_snippet(plan_call(request), _model(request.model)), "unflagged": unflagged}
