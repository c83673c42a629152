"""The input contract of config.json: every value the planner reads has a kind, checked once before
any arithmetic, every problem one line naming the key and the file.

    problems = config_problems(cfg, "/models/x/config.json")   # [] or one line per problem
    check_config(cfg, where)                                    # raises one ConfigError (one line each)
    cfg = read_config_json(path)                                # bytes -> dict, or ConfigError

What fails here used to fail as arithmetic deep in a memory term (a string ``num_experts``, a
``moe_layer_freq`` of 0 dividing, ``NaN`` in a size) or, worse, passed (``num_experts: -4`` gave
negative parameter counts; ``tie_word_embeddings: "false"`` read as true). Keys the planner does
not read are not checked. New architecture keys belong in :data:`FIELDS` with their kind.

Kinds: ``positive`` (an integer >= 1; an integral float like ``2048.0`` is accepted, as
transformers does), ``count`` (an integer >= 0), ``bool`` (true/false, not the string "false"),
``number`` (finite), ``string``, ``dict``, ``list`` (of strings), ``int_list`` (of integers >= 0).
``null`` is accepted for every key (transformers writes ``null`` for unset values) except the
required sizes, whose absence :func:`planner.specs.model.spec_from_config` reports.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# key -> kind, for the text decoder's config (``text_config`` of a multimodal one) and the top level
FIELDS: dict[str, str] = {
    "model_type": "string",
    "hidden_size": "positive", "num_hidden_layers": "positive", "num_attention_heads": "positive",
    "num_key_value_heads": "positive", "head_dim": "positive", "vocab_size": "positive",
    "intermediate_size": "positive", "max_position_embeddings": "positive",
    "tie_word_embeddings": "bool", "attention_bias": "bool", "use_sliding_window": "bool",
    "torch_dtype": "string", "dtype": "string",
    "layer_types": "list", "sliding_window": "count", "sliding_window_pattern": "positive",
    "final_logit_softcapping": "number",
    # mixture of experts
    "num_experts": "count", "n_routed_experts": "count", "num_local_experts": "count",
    "num_experts_per_tok": "count", "moe_intermediate_size": "count", "shared_expert_intermediate_size": "count",
    "n_shared_experts": "count", "first_k_dense_replace": "count", "moe_layer_freq": "positive",
    "decoder_sparse_step": "positive", "mlp_only_layers": "int_list",
    # multi-head latent attention
    "kv_lora_rank": "count", "q_lora_rank": "count", "qk_rope_head_dim": "count", "qk_nope_head_dim": "count",
    "v_head_dim": "count",
    # nested objects
    "text_config": "dict", "vision_config": "dict", "quantization_config": "dict",
}
# the vision tower's sizes (SigLIP, planner.specs.model._siglip_params)
VISION_FIELDS: dict[str, str] = {k: "positive" for k in (
    "hidden_size", "intermediate_size", "num_hidden_layers", "patch_size", "image_size", "num_channels")}
QUANTIZATION_FIELDS: dict[str, str] = {"quant_method": "string"}

_KIND_WORDS = {
    "positive": "a positive integer", "count": "a non-negative integer", "bool": "true or false",
    "number": "a finite number", "string": "a string", "dict": "a JSON object",
    "list": "a list of strings", "int_list": "a list of non-negative integers",
}
MAX_SHOWN = 60  # characters of an offending value shown in a message


def _integral(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or \
        (isinstance(v, float) and math.isfinite(v) and v.is_integer())


def _ok(kind: str, v: Any) -> bool:
    if kind == "positive":
        return _integral(v) and v >= 1
    if kind == "count":
        return _integral(v) and v >= 0
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind == "string":
        return isinstance(v, str)
    if kind == "dict":
        return isinstance(v, dict)
    if kind == "list":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if kind == "int_list":
        return isinstance(v, list) and all(_integral(x) and x >= 0 for x in v)
    raise ValueError(f"unknown kind {kind!r}")


def _shown(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else repr(v)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def _section_problems(cfg: dict, kinds: dict[str, str], where: str, prefix: str = "") -> list[str]:
    out = []
    for key, kind in kinds.items():
        if key not in cfg or cfg[key] is None:
            continue
        if not _ok(kind, cfg[key]):
            out.append(f"{where}: field '{prefix}{key}' must be {_KIND_WORDS[kind]}, got {_shown(cfg[key])}")
    types, layers = cfg.get("layer_types"), cfg.get("num_hidden_layers")
    if kinds is FIELDS and types and _ok("list", types) and _ok("positive", layers) and len(types) != layers:
        out.append(f"{where}: field '{prefix}layer_types' has {len(types)} entries for {layers} layers "
                   f"('{prefix}num_hidden_layers')")
    return out


def config_problems(cfg: Any, where: str) -> list[str]:
    """Every value of ``cfg`` (a parsed config.json) the planner reads that has the wrong kind, one
    line each, naming the key and ``where`` (the file)."""
    if not isinstance(cfg, dict):
        return [f"{where}: expected a JSON object, got {type(cfg).__name__}"]
    out = _section_problems(cfg, FIELDS, where)
    text = cfg.get("text_config")
    if isinstance(text, dict):
        out += _section_problems(text, FIELDS, where, "text_config.")
    vision = cfg.get("vision_config")
    if isinstance(vision, dict):
        out += _section_problems(vision, VISION_FIELDS, where, "vision_config.")
    quant = cfg.get("quantization_config")
    if isinstance(quant, dict):
        out += _section_problems(quant, QUANTIZATION_FIELDS, where, "quantization_config.")
    return out


def check_config(cfg: Any, where: str) -> None:
    """Raise one :class:`ConfigError` (one line per problem) when :func:`config_problems` finds any."""
    problems = config_problems(cfg, where)
    if problems:
        raise ConfigError("\n".join(problems))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_config_bytes(data: bytes, where: str) -> Any:
    """JSON text (UTF-8, an optional BOM) -> Python, strictly: no NaN/Infinity, bounded nesting."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"malformed config.json at {where}: {e.msg} (line {e.lineno})") from None
    except ValueError as e:  # NaN / Infinity
        raise ConfigError(f"malformed config.json at {where}: {e}") from None
    except RecursionError:
        raise ConfigError(f"malformed config.json at {where}: nested too deeply") from None


def read_config_json(path: Path) -> Any:
    """The parsed config.json at ``path``; a ConfigError naming the file when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    return parse_config_bytes(data, str(path))
