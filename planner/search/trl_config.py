"""Read a TRL GRPO config file (``trl grpo --config grpo.yaml``): the keys the planner models become
pins or options, the rest pass through untouched to the plan's ``config`` and its grpo.yaml.

    cfg = read_grpo_config("grpo.yaml")
    planner.plan(cfg.model or "Qwen/Qwen2.5-7B-Instruct", "H100-80GB", pin=cfg.pins, **cfg.options,
                 passthrough=cfg.passthrough)

Keys are TRL's own (GRPOConfig, trl.ModelConfig, the grpo script's). Pins: every
:class:`planner.search.request.Pins` field (``lora_r``, ``per_device_train_batch_size``, ...). Options:
``use_peft`` (false: full fine-tuning), ``load_in_4bit``/``load_in_8bit`` (the weight format),
``dtype``/``torch_dtype``, ``gradient_checkpointing``/``activation_checkpointing``,
``vllm_tensor_parallel_size``, ``vllm_mode``. ``model_name_or_path`` is the model. Keys the plan
writes itself (``use_vllm``, ``bf16``, ``lora_alpha`` and the like follow the plan) are consumed;
everything else (``learning_rate``, ``beta``, ``dataset_name``, ``reward_funcs``, ...) passes through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .request import PIN_ALIASES, PIN_NAMES

_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "float32": "fp32", "fp32": "fp32"}
# written by the plan itself: a value in the file is replaced by the plan's
CONSUMED = ("use_vllm", "bf16", "fp16", "model_name_or_path", "use_peft", "load_in_4bit", "load_in_8bit", "dtype",
            "torch_dtype", "gradient_checkpointing", "activation_checkpointing", "vllm_tensor_parallel_size",
            "vllm_mode", "bnb_4bit_quant_type")


@dataclass(frozen=True)
class TrlConfig:
    """What a TRL config file says, sorted for the planner."""

    path: str
    model: str | None = None
    pins: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    passthrough: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()  # every key the file sets, as written
    use_vllm: Any = None  # the file's use_vllm (TRL's default is False: no vLLM engine)


def parse_grpo_config(data: Any, path: str = "<config>") -> TrlConfig:
    """Sort a loaded TRL config mapping into pins, options and pass-through keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a TRL config must be a YAML mapping of GRPOConfig keys, got "
                          f"{type(data).__name__}")
    pins: dict[str, Any] = {}
    options: dict[str, Any] = {}
    passthrough: dict[str, Any] = {}
    for key, value in data.items():
        name = PIN_ALIASES.get(key, key)
        if name in PIN_NAMES:
            if name == "lora_target_modules" and isinstance(value, str):
                value = None if value == "all-linear" else tuple(v.strip() for v in value.split(",") if v.strip())
            if value is not None:
                pins[name] = value
        elif key not in CONSUMED:
            passthrough[key] = value
    if data.get("use_peft") is False:
        options["finetune"] = "full"
    dtype = data.get("dtype") or data.get("torch_dtype")
    if data.get("load_in_4bit"):
        options["weights"] = "nf4"
    elif data.get("load_in_8bit"):
        options["weights"] = "int8"
    elif isinstance(dtype, str) and dtype in _DTYPES:
        options["weights"] = _DTYPES[dtype]
    for key in ("activation_checkpointing", "gradient_checkpointing"):
        if isinstance(data.get(key), bool):
            options["gradient_checkpointing"] = data[key]
    if data.get("vllm_tensor_parallel_size") is not None:
        options["tensor_parallel_size"] = data["vllm_tensor_parallel_size"]
    if data.get("vllm_mode") in ("colocate", "server"):
        options["layout"] = data["vllm_mode"]
    model = data.get("model_name_or_path")
    return TrlConfig(path=path, model=model if isinstance(model, str) else None, pins=pins, options=options,
                     passthrough=passthrough, keys=tuple(str(k) for k in data), use_vllm=data.get("use_vllm"))


def read_grpo_config(path: str | Path) -> TrlConfig:
    """:func:`parse_grpo_config` of a YAML file (PyYAML; a missing file or bad YAML: ConfigError)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML ships with transformers' dependencies
        raise ConfigError("--config needs PyYAML: pip install pyyaml") from None
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read --config {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_grpo_config(data or {}, str(path))
