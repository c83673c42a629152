"""Flags shared by `plan`, `plan estimate` and `plan check`, and the table formatter."""

from __future__ import annotations

import argparse
import json

from ..errors import InvalidSetupError
from ..memory.logprob_head import LOGPROB_HEADS
from ..memory.lora import DEFAULT_TARGETS  # noqa: F401 - re-exported for help text
from ..memory.optimizer import OPTIMIZERS
from ..memory.trainer import FINETUNE_MODES
from ..memory.weights import WEIGHT_FORMATS
from ..search.request import KV_CACHE_DTYPES
from ..specs.units import GIB


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their line breaks; an option's default is shown when it has one (a None
    default means "chosen": its help says by whom)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        said = any(w in text for w in ("%(default)", "(default", "default:"))
        if not said and default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


def spellings(name: str) -> tuple[str, ...]:
    """A flag in both spellings: ``--per-device-train-batch-size`` and TRL's ``--per_device_train_batch_size``."""
    dashed, under = "--" + name.replace("_", "-"), "--" + name.replace("-", "_")
    return (dashed, under) if dashed != under else (dashed,)


def add_model_gpu_args(p: argparse.ArgumentParser, gpu_default: str | None = None, model_required: bool = True) -> None:
    p.formatter_class = HelpFormatter
    p.add_argument("--model", *(("--model_name_or_path",) if not model_required else ()), dest="model",
                   required=model_required, default=None,
                   help="Hugging Face id or alias of a shipped profile, a local directory or config.json, or a Hub "
                        "id AutoConfig can serve" + ("" if model_required else
                                                     " (default: model_name_or_path from --config)"))
    p.add_argument("--gpu", default=gpu_default, required=gpu_default is None,
                   help="GPU name from profiles/gpus.json (e.g. H100-80GB, A100-40GB, L4) or 'auto' (NVML)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--reserve", type=float, default=None, metavar="GIB",
                   help="GiB kept free on every card for a display or another process: the budget is the card "
                        "less the margin less this (default: 0)")


def gpu_with_reserve(args, gpu):
    """``gpu`` with ``--reserve`` taken off every card's usable memory (planner.specs.gpu.with_reserve)."""
    from ..specs.gpu import with_reserve

    return with_reserve(gpu, getattr(args, "reserve", None))


def add_trainer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("trainer")
    g.add_argument("--weights", choices=(*WEIGHT_FORMATS, "fp8"), default=None,
                   help="trainer weight format (default: bf16; fp8: --runtime unsloth's load_in_fp8)")
    g.add_argument("--finetune", choices=FINETUNE_MODES, default=None, help="lora or full (default: lora)")
    g.add_argument("--lora-rank", *spellings("lora_r"), dest="lora_rank", type=int, default=None,
                   help="LoRA rank, trl.ModelConfig's lora_r (default: 16; higher: more memory)")
    g.add_argument(*spellings("lora_target_modules"), default=None,
                   help="comma-separated module names (default: all linear projections)")
    g.add_argument("--optim", choices=OPTIMIZERS, default=None,
                   help="optimizer (default: adamw_8bit; with --gpu auto and no bitsandbytes installed, adamw_torch)")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute activations in backward (default: on, TRL's default; reduces memory)")
    g.add_argument("--logprob-head", choices=LOGPROB_HEADS, default=None,
                   help="TRL's log-prob head (default: what the installed TRL does, else fused)")
    g.add_argument(*spellings("use_liger_kernel"), dest="use_liger_kernel", action="store_const", const=True,
                   default=None, help="TRL's Liger GRPO loss (use_liger_loss before TRL 0.25): no [B, C, V] logits; "
                                      "the TRL release decides the head (default: off, as in TRL)")
    g.add_argument("--expandable-segments", action=argparse.BooleanOptionalAction, default=None,
                   help="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (default: read from the environment)")


def add_vllm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("colocated vLLM")
    g.add_argument("--vllm-max-model-len", *spellings("vllm_max_model_length"), dest="vllm_max_model_len", type=int,
                   default=None,
                   help="vLLM max_model_len (TRL's vllm_max_model_length; default: the model's context)")
    g.add_argument("--vllm-tensor-parallel-size", type=int, default=1)
    g.add_argument("--vllm-kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto")
    g.add_argument("--vllm-quantization", default=None,
                   help="vLLM's quantization name: fp8, bitsandbytes, awq, awq_marlin, gptq, gptq_marlin, mxfp4 "
                        "(default: bitsandbytes for nf4, else the checkpoint's own)")
    g.add_argument("--vllm-max-num-seqs", type=int, default=None,
                   help="default: per-device batch x steps per generation x TP, as TRL passes it")
    g.add_argument("--vllm-max-num-batched-tokens", type=int, default=None)
    g.add_argument("--vllm-enforce-eager", action="store_true")
    g.add_argument("--vllm-version", default=None, help="vLLM release to model (default: installed, else newest)")
    g.add_argument("--trl-version", default=None, help="TRL release to model (default: installed, else newest)")


def target_modules(args) -> tuple | None:
    """The flag's comma-separated names, or a --config file's list (checked by the request)."""
    mods = getattr(args, "lora_target_modules", None)
    if not mods:
        return None
    if isinstance(mods, (list, tuple)):
        return tuple(mods)
    return tuple(m.strip() for m in str(mods).split(",") if m.strip())


def add_config_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--config GRPO_YAML``: a TRL GRPO config file (planner.search.trl_config reads it); flags win over it."""
    p.add_argument("--config", default=None, metavar="GRPO_YAML",
                   help=f"a TRL GRPO config (trl grpo --config): {what}; flags win over the file")


def read_config(args):
    """The ``--config`` file's :class:`~planner.search.trl_config.TrlConfig`, or None without one. Its
    warnings (removed keys, unknown keys) go to stderr; `plan check` refuses unknown keys instead."""
    import sys

    from ..search.trl_config import read_grpo_config

    if not getattr(args, "config", None):
        return None
    cfg = read_grpo_config(args.config, trl_version=getattr(args, "trl_version", None),
                           unknown="error" if getattr(args, "command", None) == "check" else "warn")
    for line in cfg.warnings:
        print(f"plan: warning: {line}", file=sys.stderr)
    return cfg


def model_arg(args, cfg) -> str:
    """``--model``, else the --config file's ``model_name_or_path`` (the file's value is checked as it
    is read: planner.search.trl_config)."""
    if args.model is not None and not args.model.strip():
        raise InvalidSetupError(f"--model {args.model!r} is not a model name or path: give a Hugging Face model id, "
                                f"a local folder or a config.json")
    model = args.model or (cfg.model if cfg else None)
    if not model:
        raise InvalidSetupError("--model is required (or model_name_or_path in the --config file)")
    return model


def trainer_kwargs(args) -> dict:
    """The trainer options the user gave, as the Python API's keywords (``--lora-rank`` is ``lora_r``;
    unset ones are left to the API's defaults)."""
    kw = dict(weights=args.weights, finetune=args.finetune, lora_r=args.lora_rank,
              lora_target_modules=target_modules(args), optim=args.optim,
              gradient_checkpointing=args.gradient_checkpointing, logprob_head=args.logprob_head,
              expandable_segments=args.expandable_segments, use_liger_kernel=args.use_liger_kernel)
    return {k: v for k, v in kw.items() if v is not None or k in ("logprob_head", "expandable_segments")}


def progress(message: str) -> None:
    """One progress line on stderr (stdout stays the result, JSON or table), for work that takes seconds."""
    import sys

    print(f"plan: {message}", file=sys.stderr, flush=True)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def gib_str(n: float) -> str:
    return f"{n / GIB:8.2f} GiB"


def table(rows: list[tuple[str, str]], title: str | None = None) -> str:
    """Two-column text table: name, value."""
    width = max((len(r[0]) for r in rows), default=10)
    out = [title] if title else []
    out += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(out)


def margin_text(p) -> str:
    """The margin a plan used and where it came from (its ``margin`` assumption), for the header:
    ``margin 3%, the calibrated model's error band`` or ``margin 7%: 4% the analytic model's error
    band + 3% unmodelled``."""
    a = p.assumptions.get("margin")
    if not a:
        return f"margin {p.margin:.0%}"
    why = "given (--margin)" if a["source"] == "option" else f"the {a['memory_model']} model's error band"
    if a.get("unmodelled"):
        return f"margin {p.margin:.0%}: {a['base']:.0%} {why} + {a['unmodelled']:.0%} unmodelled"
    return f"margin {p.margin:.0%}, {why}"


def check_lines(report) -> list[str]:
    """A CheckReport as aligned lines (severity, id, message, the fix under it) and the count line
    (planner.checks.preflight.CheckReport.lines: ``print(report)`` in Python prints the same)."""
    return report.lines()


def add_time_arguments(g) -> None:
    """The step time's two inputs (planner.search.timing), `plan` and `plan estimate` alike."""
    g.add_argument("--expected-completion-length", type=int, default=None,
                   help="the completions' expected length in tokens, for the step time (default: "
                        "max_completion_length, the slowest case)")
    g.add_argument("--reward-seconds-per-completion", type=float, default=None,
                   help="the reward functions' seconds per completion, for the step time (default: 0)")


def render_time(t) -> str:
    """The predicted step time and where it goes (planner.search.timing), one line each."""
    if t is None:
        return ""
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(t.phases.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    return (f"time: {t.step_seconds:.1f} s per optimizer step ({parts}); {t.completions_per_hour:,.0f} completions "
            f"per hour\n  ({t.assumptions[0]}; {t.efficiency.source})")
