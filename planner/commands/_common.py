"""Flags shared by `plan`, `plan estimate` and `plan check`, and the table formatter."""

from __future__ import annotations

import argparse
import json

from ..memory.logprob_head import LOGPROB_HEADS
from ..memory.lora import DEFAULT_TARGETS  # noqa: F401 - re-exported for help text
from ..memory.optimizer import OPTIMIZERS
from ..memory.trainer import FINETUNE_MODES
from ..memory.weights import WEIGHT_FORMATS
from ..units import GIB


def add_model_gpu_args(p: argparse.ArgumentParser, gpu_default: str | None = None) -> None:
    p.add_argument("--model", required=True, help="Hugging Face id or alias of a shipped profile, a local "
                                                   "directory or config.json, or a Hub id AutoConfig can serve")
    p.add_argument("--gpu", default=gpu_default, required=gpu_default is None,
                   help="GPU name from profiles/gpus.json (e.g. H100-80GB, A100-40GB, L4) or 'auto' (NVML)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def add_trainer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("trainer")
    g.add_argument("--weights", choices=WEIGHT_FORMATS, default="bf16", help="trainer weight format")
    g.add_argument("--finetune", choices=FINETUNE_MODES, default="lora")
    g.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (higher: more memory)")
    g.add_argument("--lora-target-modules", default=None,
                   help="comma-separated module names (default: all linear projections)")
    g.add_argument("--optim", choices=OPTIMIZERS, default="adamw_8bit")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                   help="recompute activations in backward (TRL default: on; reduces memory)")
    g.add_argument("--logprob-head", choices=LOGPROB_HEADS, default=None,
                   help="TRL's log-prob head (default: what the installed TRL does, else fused)")
    g.add_argument("--expandable-segments", action=argparse.BooleanOptionalAction, default=None,
                   help="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (default: read from the environment)")


def add_vllm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("colocated vLLM")
    g.add_argument("--vllm-max-model-len", type=int, default=None,
                   help="vLLM max_model_len (TRL's vllm_max_model_length; default: the model's context)")
    g.add_argument("--vllm-tensor-parallel-size", type=int, default=1)
    g.add_argument("--vllm-kv-cache-dtype", choices=("auto", "fp8"), default="auto")
    g.add_argument("--vllm-quantization", default=None, help="vLLM quantization (default: bitsandbytes for nf4)")
    g.add_argument("--vllm-max-num-seqs", type=int, default=None,
                   help="default: per-device batch x steps per generation x TP, as TRL passes it")
    g.add_argument("--vllm-max-num-batched-tokens", type=int, default=None)
    g.add_argument("--vllm-enforce-eager", action="store_true")
    g.add_argument("--vllm-version", default=None, help="vLLM release to model (default: installed, else newest)")
    g.add_argument("--trl-version", default=None, help="TRL release to model (default: installed, else newest)")


def target_modules(args) -> tuple | None:
    if not getattr(args, "lora_target_modules", None):
        return None
    return tuple(m.strip() for m in args.lora_target_modules.split(",") if m.strip())


def trainer_kwargs(args) -> dict:
    return dict(weights=args.weights, finetune=args.finetune, lora_rank=args.lora_rank,
                lora_target_modules=target_modules(args), optim=args.optim,
                gradient_checkpointing=args.gradient_checkpointing, logprob_head=args.logprob_head,
                expandable_segments=args.expandable_segments)


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
