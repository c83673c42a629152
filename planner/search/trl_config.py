"""Read a TRL GRPO config file (``trl grpo --config grpo.yaml``) as TRL reads it: the keys the planner
models become pins or options, the rest pass through untouched to the plan's ``config`` and its grpo.yaml.

    cfg = read_grpo_config("grpo.yaml")                       # unknown keys: warnings (cfg.warnings)
    cfg = read_grpo_config("grpo.yaml", unknown="error")      # `plan check`: unknown keys are errors
    planner.plan(cfg.model or "Qwen/Qwen2.5-7B-Instruct", "H100-80GB", pin=cfg.pins, **cfg.options,
                 passthrough=cfg.passthrough)

Keys are TRL's own (GRPOConfig, trl.ModelConfig, the grpo script's). Pins: every
:class:`planner.search.request.Pins` field (``lora_r``, ``per_device_train_batch_size``, ...). Options:
``use_peft`` (false: full fine-tuning), ``load_in_4bit``/``load_in_8bit`` (the weight format),
``dtype``/``torch_dtype``, ``gradient_checkpointing``/``activation_checkpointing``,
``vllm_tensor_parallel_size``, ``vllm_mode``, and the ``env:`` block's ``PYTORCH_CUDA_ALLOC_CONF`` /
``PYTORCH_ALLOC_CONF`` (``expandable_segments``, as the environment variable sets it).
``model_name_or_path`` is the model. Keys the plan writes itself (``use_vllm``, ``lora_alpha`` and the
like follow the plan) are consumed; ``bf16`` / ``fp16`` pass through and are held as written (the solver
refuses ``bf16: true`` on a card without it); everything else (``learning_rate``, ``beta``, ``dataset_name``,
``reward_funcs``, ``env``, ...) passes through.

As TRL 1.16 reads it (trl/scripts/utils.py ``TrlParser.parse_args_and_config``): ``yaml.safe_load``, the
``env:`` mapping exported to ``os.environ`` (``str(value)``; not a mapping: TRL's error), then every key
becomes an argparse default, and argparse converts a *string* default as if typed on the command line:
``use_peft: "false"`` is False (``string_to_bool``: yes/no, true/false, t/f, y/n, 1/0, any case; anything
else is refused), ``lora_r: "32"`` is 32, ``max_completion_length: "none"`` is None. The modelled keys are
converted the same way here; a value TRL refuses is an error naming the key and the file.

Keys are checked against those ``trl grpo --config`` accepts: the init fields of the script's dataclasses
(GRPOScriptArguments, GRPOConfig with TrainingArguments, ModelConfig, DatasetMixtureConfig) and
``accelerate launch``'s options (TRL hands the leftover keys to it). With TRL installed and planned for,
the fields are read from its installed source (``ast``: no import, so no torch); otherwise from the table
in planner.specs.versions (TRL 1.16.0). A key removed in the TRL release planned for
(``max_prompt_length``: gone from GRPOConfig in 0.28.0) is a warning that says so; it is still read as the
prompt length to plan for and not written back. An unknown key (a misspelling) is a warning with a
did-you-mean, left out of the written config; with ``unknown="error"`` (``plan check``) it is an error.

Safe loading: at most :data:`MAX_CONFIG_BYTES` read; UTF-8 only (a byte-order mark allowed; UTF-16 and
other encodings refused); at most :data:`MAX_DEPTH` nested collections, :data:`MAX_ALIASES` aliases and
:data:`MAX_NODES` nodes once aliases are expanded (a "billion laughs" file stops there, before PyYAML
builds it); string keys at the top level; a mapping at the top. Every refusal is one ConfigError line.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import ConfigError, VersionError
from ..memory.allocator import expandable_segments_from_env
from ..specs.versions import (
    ACCELERATE_LAUNCH_KEYS,
    TRL_MAX_PROMPT_LENGTH_UNTIL,
    TRL_SCRIPT_KEYS,
    TRL_SCRIPT_KEYS_RELEASE,
    TRL_USE_LIGER_LOSS_UNTIL,
    _fmt,
    _installed,
    parse_version,
    trl_facts,
)
from .request import PIN_ALIASES, PIN_NAMES

MAX_CONFIG_BYTES = 1 << 20  # a GRPO config is a few KiB
MAX_DEPTH = 32  # nested mappings and lists
MAX_ALIASES = 1000  # *alias references
MAX_NODES = 100_000  # scalars and collections, every alias expanded

_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "float32": "fp32", "fp32": "fp32"}
# written by the plan itself: a value in the file is replaced by the plan's
CONSUMED = ("use_vllm", "model_name_or_path", "use_peft", "load_in_4bit", "load_in_8bit", "dtype",
            "torch_dtype", "gradient_checkpointing", "activation_checkpointing", "vllm_tensor_parallel_size",
            "vllm_mode", "bnb_4bit_quant_type", "use_liger_kernel", "use_liger_loss")
# how TRL 1.16's parser converts a string given for a modelled key (HfArgumentParser._parse_dataclass_field):
# bool and `bool | None` -> string_to_bool; int -> int(); `int | None` -> "none"/"null" or int(); float -> float()
_KINDS = {
    **dict.fromkeys(("use_peft", "load_in_4bit", "load_in_8bit", "gradient_checkpointing", "activation_checkpointing",
                     "use_vllm", "vllm_enable_sleep_mode", "bf16", "fp16", "use_liger_kernel", "use_liger_loss",
                     "use_transformers_continuous_batching", "use_transformers_paged"), "bool"),
    **dict.fromkeys(("per_device_train_batch_size", "gradient_accumulation_steps", "lora_r",
                     "vllm_tensor_parallel_size"), "int"),
    **dict.fromkeys(("steps_per_generation", "generation_batch_size", "num_generations", "max_completion_length",
                     "vllm_max_model_length", "max_prompt_length", "completions_per_step"), "int?"),
    "vllm_gpu_memory_utilization": "float",
}
_TRUE, _FALSE = ("yes", "true", "t", "y", "1"), ("no", "false", "f", "n", "0")  # string_to_bool
# keys removed from TRL's script in a release: the first release without them
REMOVED = {"max_prompt_length": TRL_MAX_PROMPT_LENGTH_UNTIL, "use_liger_loss": TRL_USE_LIGER_LOSS_UNTIL}
# the planner's own spellings (PIN_ALIASES) and their TRL names
_TRL_NAME = {"lora_rank": "lora_r", "prompt_length": "max_prompt_length", "vllm_max_model_len": "vllm_max_model_length",
             "effective_batch_size": "generation_batch_size", "completions_per_step": "generation_batch_size",
             "torch_dtype": "dtype"}
_ALLOCATOR_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


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
    env: dict[str, str] = field(default_factory=dict)  # the env: block as TRL exports it (str values)
    warnings: tuple[str, ...] = ()  # removed keys; unknown keys unless they are errors

    def trl_values(self) -> dict[str, Any]:
        """The modelled keys the file sets, under TRL's names (planner.report.changes reads them)."""
        out = {k: v for k, v in self.pins.items()}
        o = self.options
        if "use_peft" in self.keys:
            out["use_peft"] = o.get("finetune") != "full"
        for key, name in (("gradient_checkpointing", "gradient_checkpointing"), ("layout", "vllm_mode"),
                          ("tensor_parallel_size", "vllm_tensor_parallel_size")):
            if key in o:
                out[name] = o[key]
        if self.use_vllm is not None:
            out["use_vllm"] = self.use_vllm
        return out


# -- loading ----------------------------------------------------------------------------------------

def _read_bytes(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read --config {path}: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--config {path} is over {MAX_CONFIG_BYTES >> 20} MiB: not a GRPO config")
    return raw


def _decode(raw: bytes, path: str) -> str:
    """UTF-8 text (TRL opens the file with the locale's encoding, UTF-8 on Linux); a UTF-8 byte-order mark
    is dropped as PyYAML drops it."""
    if raw[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff") or raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ConfigError(f"--config {path} is UTF-16 or UTF-32 (it starts with a byte-order mark): save it as "
                          f"UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): "
                          f"save it as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(f"--config {path} holds NUL bytes (UTF-16 without a byte-order mark, or a binary "
                          f"file): save it as UTF-8 text")
    return text.removeprefix("\ufeff")


def _check_structure(yaml, text: str, path: str) -> None:
    """Depth, aliases and the expanded size from PyYAML's event stream (iterative: a deep file cannot
    exhaust the stack here, as it would in PyYAML's recursive composer)."""
    stack: list[list] = []  # [anchor, expanded nodes so far] per open collection
    sizes: dict[str, int] = {}  # anchor -> expanded nodes of its node
    aliases = total = 0

    def add(n: int) -> None:
        nonlocal total
        total += n
        if total > MAX_NODES:
            raise ConfigError(f"--config {path} expands to over {MAX_NODES} YAML nodes (aliases included): "
                              f"not a GRPO config")
        if stack:
            stack[-1][1] += n

    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([ev.anchor, 0])
            if len(stack) > MAX_DEPTH:
                raise ConfigError(f"--config {path} nests over {MAX_DEPTH} levels deep: not a GRPO config")
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, n = stack.pop()
            if anchor is not None:
                sizes[anchor] = n + 1
            add(n + 1)
        elif isinstance(ev, yaml.ScalarEvent):
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
            add(1)
        elif isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ConfigError(f"--config {path} uses over {MAX_ALIASES} YAML aliases: not a GRPO config")
            if any(a == ev.anchor for a, _ in stack):
                raise ConfigError(f"--config {path}: alias *{ev.anchor} refers to a collection that holds it "
                                  f"(a recursive structure TRL cannot pass on)")
            add(sizes.get(ev.anchor, 1))  # an undefined alias: PyYAML's own error follows


def _yaml_problem(e: Exception) -> str:
    """PyYAML's error on one line: its context, the problem and where (line and column from 1)."""
    problem, mark, context = (getattr(e, name, None) for name in ("problem", "problem_mark", "context"))
    if not problem:
        return (str(e).splitlines() or [type(e).__name__])[0]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{context}: {problem}{where}" if context else f"{problem}{where}"


def load_yaml_text(text: str, path: str) -> Any:
    """``yaml.safe_load`` of a config's text within the limits above (any refusal: one ConfigError line)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - a core dependency (pyproject.toml)
        raise ConfigError("--config needs PyYAML: pip install pyyaml") from None
    try:
        _check_structure(yaml, text, path)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path} is not valid YAML: {_yaml_problem(e)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a timestamp or number PyYAML cannot build
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"--config {path}: a value YAML cannot convert: {first}") from None


# -- TRL's conversions --------------------------------------------------------------------------------

def trl_value(key: str, value: Any) -> Any:
    """``value`` as TRL's parser leaves it for a modelled key: a string converted as argparse converts a
    string default (ValueError with the reason when TRL refuses it); any other value untouched."""
    kind = _KINDS.get(PIN_ALIASES.get(key, key))
    if kind is None or not isinstance(value, str):
        return value
    if kind == "bool":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"'{value}' is not a boolean TRL reads (yes/no, true/false, t/f, y/n, 1/0, any case)")
    if kind == "int?" and value.lower() in ("none", "null"):
        return None
    convert = float if kind == "float" else int
    try:
        return convert(value)
    except ValueError:
        raise ValueError(f"'{value}' is not {'a number' if kind == 'float' else 'an integer'} (TRL converts the "
                         f"string with {convert.__name__}(), which refuses it)") from None


def _env_block(env: Any, path: str, problems: list[str]) -> dict[str, str]:
    """The ``env:`` mapping as TRL exports it (``os.environ[key] = str(value)``)."""
    if not isinstance(env, dict):
        problems.append(f"{path}: env: must be a mapping of environment variables (TRL: \"`env` field should be "
                        f"a dict in the YAML file\"), got {type(env).__name__}")
        return {}
    out = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            problems.append(f"{path}: env: {key!r} is not an environment variable name")
        elif "\x00" in str(value):
            problems.append(f"{path}: env: {key} holds a NUL character")
        else:
            out[key] = str(value)
    return out


# -- the keys TRL's grpo script accepts -------------------------------------------------------------------

# the dataclasses trl/scripts/grpo.py make_parser parses (TRL 1.16.0)
_SCRIPT_CLASSES = (("trl.scripts.grpo", "GRPOScriptArguments"), ("trl.trainer.grpo_config", "GRPOConfig"),
                   ("trl.trainer.model_config", "ModelConfig"), ("trl.scripts.utils", "DatasetMixtureConfig"))
# classes the modules import from a package's lazy __init__: the module that defines them
_DEFINED_IN = {"ScriptArguments": "trl.scripts.utils", "TrainingArguments": "transformers.training_args"}


def _module_file(module: str) -> Path:
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name is located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(module)
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise LookupError(module)


@cache
def _module_tree(module: str) -> ast.Module:
    return ast.parse(_module_file(module).read_text(encoding="utf-8"))


def _base_module(tree: ast.Module, module: str, name: str) -> str:
    """Where the class ``name`` that ``module`` uses is defined."""
    if any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
        return module
    if name in _DEFINED_IN:
        return _DEFINED_IN[name]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == name and a.asname is None for a in node.names):
            if not node.level:
                return node.module or ""
            package = module.rsplit(".", node.level)[0]
            return f"{package}.{node.module}" if node.module else package
    raise LookupError(f"{module}.{name}")


def _is_init_field(node: ast.AnnAssign) -> bool:
    ann = ast.unparse(node.annotation)
    if any(word in ann for word in ("ClassVar", "InitVar", "KW_ONLY")):
        return False
    value = node.value
    return not (isinstance(value, ast.Call) and any(k.arg == "init" and isinstance(k.value, ast.Constant)
                                                    and k.value.value is False for k in value.keywords))


def _class_fields(module: str, name: str) -> set[str]:
    """The init fields of a dataclass and its bases, read from the source."""
    tree = _module_tree(module)
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        raise LookupError(f"{module}.{name}")
    names: set[str] = set()
    for base in cls.bases:
        base_name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
        if base_name not in (None, "object"):
            names |= _class_fields(_base_module(tree, module, base_name), base_name)
    names |= {n.target.id for n in cls.body
              if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and _is_init_field(n)}
    return names


@cache
def installed_script_keys() -> frozenset[str] | None:
    """The init fields of the installed TRL's grpo script dataclasses, read from its source (no import:
    ``import trl`` costs seconds and imports torch); None when the source is not where TRL 1.16 keeps it."""
    try:
        return frozenset().union(*(_class_fields(m, c) for m, c in _SCRIPT_CLASSES))
    except (OSError, SyntaxError, LookupError, ValueError, ImportError):
        return None


def _installed_trl() -> str | None:
    return _installed("trl")


def script_keys(planned: str | None) -> tuple[frozenset[str], str]:
    """(the keys ``trl grpo --config`` accepts, the TRL release they were read from): the installed TRL's
    when it is the release planned for, else the shipped table's (planner.specs.versions)."""
    installed = _installed_trl()
    if installed and (planned is None or parse_version(installed, "TRL") == parse_version(planned, "TRL")):
        keys = installed_script_keys()
        if keys is not None:
            return keys | ACCELERATE_LAUNCH_KEYS, _fmt(parse_version(installed, "TRL"))
    return TRL_SCRIPT_KEYS | ACCELERATE_LAUNCH_KEYS, TRL_SCRIPT_KEYS_RELEASE


def _key_notes(keys, path: str, trl_version: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(removed keys, unknown keys): key -> one line naming the file."""
    try:
        planned: str | None = trl_facts(trl_version).release
    except VersionError:
        planned = None  # the planner says so later, once
    known, release = script_keys(planned)
    removed: dict[str, str] = {}
    unknown: dict[str, str] = {}
    for key in keys:
        if key == "env" or key in known:
            continue
        until = REMOVED.get(key)
        if until is not None and planned is not None:
            if parse_version(planned, "TRL") < until:
                continue
            removed[key] = (f"{path}: {key} was removed from TRL in {_fmt(until)} (planning for TRL {planned}): "
                            f"read as the planner's {key}, not written to the output")
            continue
        trl_name = _TRL_NAME.get(key)
        guess = [trl_name] if trl_name in known else difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        hint = f", did you mean '{guess[0]}'?" if guess else ":"
        unknown[key] = f"{path}: unknown key '{key}'{hint} TRL {release}'s `trl grpo --config` does not accept it"
    return removed, unknown


# -- sorting ----------------------------------------------------------------------------------------

def _options(data: dict, env: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if data.get("use_peft") is False:  # TRL: get_peft_config returns None only for `is False`
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
    if data.get("use_liger_kernel") is True or data.get("use_liger_loss") is True:
        options["use_liger_kernel"] = True
    if any(name in env for name in _ALLOCATOR_VARS):  # TRL exports env: before training starts
        options["expandable_segments"] = expandable_segments_from_env({**os.environ, **env})
    return options


def _fate(key: str) -> str:
    """What the planner does with an unknown key."""
    if key in PIN_ALIASES or key in CONSUMED:
        return f"read as {PIN_ALIASES.get(key, _TRL_NAME.get(key, key))}, not written to the output"
    return "left out of the written config"


def _checked(data: Any, path: str, problems: list[str]) -> dict:
    """The mapping with TRL's conversions applied to the modelled keys; problems appended."""
    if data is None:
        raise ConfigError(f"{path}: a TRL config must be a YAML mapping of GRPOConfig keys, got an empty file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a TRL config must be a YAML mapping of GRPOConfig keys, got "
                          f"{type(data).__name__}")
    out = {}
    for key, value in data.items():
        if not isinstance(key, str):
            problems.append(f"{path}: key {key!r} ({type(key).__name__}) is not a name: TRL's keys are field names")
            continue
        try:
            out[key] = trl_value(key, value)
        except ValueError as e:
            problems.append(f"{path}: {key}: {e}")
    return out


def _model_problem(model: Any, path: str) -> str | None:
    """One line when ``model_name_or_path`` is given but is not a model name or path: TRL leaves a
    non-string YAML value as it is (argparse converts string defaults only), and ``from_pretrained``
    then fails on it. None (absent, or ``null``: the model comes from ``--model``) is no problem."""
    if model is None or (isinstance(model, str) and model.strip()):
        return None
    if isinstance(model, str):
        return f"{path}: model_name_or_path is empty: give a Hugging Face model id or a local folder"
    quoted = f' (a folder named {model!r}: quote it, model_name_or_path: "{model}")' if isinstance(
        model, (int, float)) and not isinstance(model, bool) else ""
    return (f"{path}: model_name_or_path: {model!r} ({type(model).__name__}) is not a model name or path: give a "
            f"Hugging Face model id or a local folder{quoted}")


def parse_grpo_config(data: Any, path: str = "<config>", *, trl_version: str | None = None,
                      unknown: str = "warn") -> TrlConfig:
    """Sort a loaded TRL config mapping into pins, options and pass-through keys, as TRL converts them.
    ``unknown``: "warn" (unknown keys are warnings, left out of the pass-through) or "error". Every
    problem at once, one line each, as a ConfigError."""
    problems: list[str] = []
    data = _checked(data, path, problems)
    model_problem = _model_problem(data.get("model_name_or_path"), path)
    if model_problem:
        problems.append(model_problem)
    env = _env_block(data["env"], path, problems) if "env" in data else {}
    problems += liger_config_problems(data, path, trl_version)
    if data.get("use_vllm") is False and (line := continuous_batching_problem(data, path)):
        problems.append(line)
    removed, strays = _key_notes(data, path, trl_version)
    if unknown == "error":
        problems += [f"{s} (plan check refuses unknown keys)" for s in strays.values()]
    if problems:
        raise ConfigError("\n".join(problems))
    dropped = set(strays) | set(removed)
    pins: dict[str, Any] = {}
    passthrough: dict[str, Any] = {}
    for key, value in data.items():
        name = PIN_ALIASES.get(key, key)
        if name in PIN_NAMES:
            if name == "lora_target_modules" and isinstance(value, str):
                value = None if value == "all-linear" else tuple(v.strip() for v in value.split(",") if v.strip())
            if value is not None:
                pins[name] = value
        elif key not in CONSUMED and key not in dropped:
            passthrough[key] = value
    model = data.get("model_name_or_path")
    warnings = [*removed.values(), *(f"{line}; {_fate(key)}" for key, line in strays.items())]
    return TrlConfig(path=path, model=model if isinstance(model, str) else None, pins=pins,
                     options=_options(data, env), passthrough=passthrough, keys=tuple(data),
                     use_vllm=data.get("use_vllm"), env=env, warnings=tuple(warnings))


def read_grpo_config(path: str | Path, *, trl_version: str | None = None, unknown: str = "warn") -> TrlConfig:
    """:func:`parse_grpo_config` of a YAML file, loaded within the limits above (a missing file, bad
    encoding or bad YAML: one ConfigError line). ``trl_version``: the release planned for (None: the
    installed one, else the newest known)."""
    text = _decode(_read_bytes(path), str(path))
    return parse_grpo_config(load_yaml_text(text, str(path)), str(path), trl_version=trl_version, unknown=unknown)


# -- TRL's own refusals (GRPOConfig.__post_init__) -------------------------------------------------------

def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def continuous_batching_problem(data: dict[str, Any], path: str) -> str | None:
    """One line when the file asks TRL to generate with transformers' continuous batching
    (``use_transformers_continuous_batching``, or its deprecated ``use_transformers_paged``; TRL 1.16
    grpo_trainer.py:1783-1810 ``generate_batch``) where vLLM does not generate: its paged cache is not modelled."""
    key = next((k for k in ("use_transformers_continuous_batching", "use_transformers_paged") if data.get(k) is True),
               None)
    if key is None:
        return None
    return (f"--config {path}: {key}: transformers' continuous batching (a paged KV cache of its own) is not "
            f"modelled; drop it to plan transformers' generate, or set use_vllm: true")


def liger_config_problems(data: dict[str, Any], path: str, trl_version: str | None = None) -> list[str]:
    """What ``GRPOTrainer.__init__`` refuses next to ``use_liger_kernel: true`` (``use_liger_loss`` before
    TRL 0.25) while the Liger head is liger-kernel's loss (TRL 0.17-1.13; planner.specs.versions
    ``TrlFacts.liger_head``): ``top_entropy_quantile`` below 1 (0.24.0 grpo_trainer.py:365, 1.13.0 :827),
    an ``importance_sampling_level`` other than token (sequence too from 1.0.0, 1.0.0 :549),
    ``off_policy_mask_threshold`` (1.0.0 :541, 1.13.0 :798) and an entropy bonus (1.13.0 :848). One line each."""
    if data.get("use_liger_kernel") is not True and data.get("use_liger_loss") is not True:
        return []
    try:
        facts = trl_facts(trl_version)
    except VersionError:
        return []
    if facts.liger_head != "liger":
        return []
    head = f"--config {path}: use_liger_kernel with"
    out = []
    quantile = _number(data.get("top_entropy_quantile", 1.0))
    if quantile is not None and quantile < 1.0:
        out.append(f"{head} top_entropy_quantile {data['top_entropy_quantile']}: TRL {facts.release} raises (Liger "
                   f"kernels don't support masking token positions by entropy); use 1.0 or drop use_liger_kernel")
    levels = ("token", "sequence") if parse_version(facts.release, "TRL") >= (1, 0, 0) else ("token",)
    level = data.get("importance_sampling_level", "token")
    if level not in levels:
        out.append(f"{head} importance_sampling_level {level!r}: TRL {facts.release}'s Liger loss takes "
                   f"{' or '.join(levels)}")
    if data.get("off_policy_mask_threshold") is not None:
        out.append(f"{head} off_policy_mask_threshold: TRL {facts.release} raises (the Liger loss has no off-policy "
                   f"mask); drop one of them")
    coef = _number(data.get("entropy_coef", 0.0))
    if (coef is not None and coef != 0.0) or data.get("use_adaptive_entropy") is True:
        out.append(f"{head} an entropy bonus (entropy_coef / use_adaptive_entropy): TRL {facts.release} raises (the "
                   f"Liger loss has no entropy term); drop one of them")
    return out


TRL_BATCH_DEFAULT = 8  # TrainingArguments.per_device_train_batch_size
TRL_NUM_GENERATIONS_DEFAULT = 8  # GRPOConfig.num_generations


def trl_rule_problems(values: dict[str, Any], path: str, world: int = 1, fill_defaults: bool = True) -> list[str]:
    """What TRL 1.16's ``GRPOConfig.__post_init__`` refuses in a config's settings (``values``: TRL's names,
    the file's and the flags'), one line each naming the rule: ``generation_batch_size`` and
    ``steps_per_generation`` both set; a generation batch not divisible by the global batch
    (``per_device_train_batch_size x`` ``world`` training processes) or by ``num_generations``;
    ``num_generations`` < 2. ``fill_defaults``: what the file leaves out takes TRL's default (the
    setup as written: `plan estimate`, `plan check`); False: only the rules the given values decide
    (`plan`, whose solver chooses the rest)."""
    def get(name: str, default: Any) -> Any:
        v = values.get(name)
        return v if v is not None else (default if fill_defaults else None)

    def whole(*xs: Any) -> bool:
        return all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in xs)

    out: list[str] = []
    n = values.get("generation_batch_size") or values.get("completions_per_step")
    S = values.get("steps_per_generation")
    if n is not None and S is not None:
        out.append(f"--config {path}: generation_batch_size {n} and steps_per_generation {S} are both set: TRL "
                   f"refuses that ('generation_batch_size' and 'steps_per_generation' can not be both configured at "
                   f"the same time, GRPOConfig); keep one")
    B, G = get("per_device_train_batch_size", TRL_BATCH_DEFAULT), get("num_generations", TRL_NUM_GENERATIONS_DEFAULT)
    if isinstance(G, int) and not isinstance(G, bool) and G < 2:
        out.append(f"--config {path}: num_generations {G}: TRL requires at least 2 generations per prompt to "
                   f"compute the advantages (GRPOConfig)")
    if out:
        return out
    if n is not None and whole(n, B, world) and n % (B * world):
        return [f"--config {path}: generation_batch_size {n} is not divisible by the global batch "
                f"per_device_train_batch_size {B} x {world} process(es) = {B * world} (TRL's rule, GRPOConfig)"]
    if n is None:
        S = S if S is not None else get("gradient_accumulation_steps", 1)
        n = B * world * S if whole(B, world, S) else None
    if n is not None and whole(n, G) and n % G:
        out.append(f"--config {path}: the generation batch of {n} completions is not divisible by num_generations "
                   f"{G} (TRL's rule, GRPOConfig: every prompt's group of {G} completions in one generation batch)")
    return out
