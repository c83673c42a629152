"""`--runtime unsloth` for `plan`, `plan estimate` and `plan check`: Unsloth's fast_inference=True.

    plan --runtime unsloth --model meta-llama/Llama-3.1-8B-Instruct --gpu T4 --weights nf4 --lora-rank 32 \\
        --max-seq-length 1024
    plan estimate --runtime unsloth --model ... --gpu T4 --weights nf4 --gpu-memory-utilization 0.6 --json
    plan check --runtime unsloth --model ... --gpu L4 --standby

The commands call :func:`dispatch` first; everything Unsloth-specific lives here. Shared flags keep
their meaning (``--weights nf4`` = ``load_in_4bit=True``; ``--prompt-length`` = max_prompt_length).
A shared flag left at its default means Unsloth's own default here (4-bit weights, batch 4 x 2
accumulation x 8 generations, completion = max_seq_length - prompt): the defaults are marked.
"""

from __future__ import annotations

import argparse

from ..checks.preflight import CheckReport
from ..errors import InvalidSetupError
from ..runtimes.unsloth import unsloth_checks, unsloth_estimate
from ..search.unsloth_solver import UnslothPlan, unsloth_plan, with_unsloth_checks
from ._common import check_lines, gib_str, print_json, table
from ._topology import gpu_arg

RUNTIMES = ("trl", "unsloth")


class _DefaultInt(int):
    """An argparse default the Unsloth runtime can tell from the same value typed by the user."""


class _DefaultStr(str):
    pass


def _mark_defaults(p: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    marked = {}
    for name in names:
        v = p.get_default(name)
        if isinstance(v, bool) or v is None:
            continue
        marked[name] = _DefaultInt(v) if isinstance(v, int) else _DefaultStr(v) if isinstance(v, str) else v
    p.set_defaults(**marked)


def _given(args, name: str):
    """The flag's value, or None when it was left at its (marked) default."""
    v = getattr(args, name, None)
    return None if isinstance(v, (_DefaultInt, _DefaultStr)) else v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--runtime`` and the Unsloth flags (after the command's own flags)."""
    g = p.add_argument_group("runtime (--runtime unsloth: Unsloth's FastLanguageModel(fast_inference=True))")
    g.add_argument("--runtime", choices=RUNTIMES, default="trl",
                   help="trl: TRL GRPOTrainer with colocated vLLM (its own weight copy); unsloth: vLLM in the "
                        "training process sharing one copy of the weights")
    g.add_argument("--unsloth-version", default=None,
                   help="Unsloth (unsloth_zoo) release to model (default: installed, else the newest modelled)")
    g.add_argument("--standby", action=argparse.BooleanOptionalAction, default=None,
                   help="UNSLOTH_VLLM_STANDBY=1 (default: off for an estimate; plan: on only if it does better)")
    g.add_argument("--max-seq-length", type=int, default=None, help="from_pretrained(max_seq_length=...) "
                   "(default: 2048, Unsloth's)")
    g.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="what you pass to from_pretrained (default: estimate 0.5, Unsloth's; plan: searched)")
    g.add_argument("--float8-kv-cache", action="store_true", help="from_pretrained(float8_kv_cache=True)")
    _mark_defaults(p, ("weights", "batch_size", "gradient_accumulation_steps", "completion_length"))


def dispatch(args, command: str) -> int | None:
    """The command's first line: run ``--runtime unsloth`` here (its exit code), or give the TRL
    runtime its arguments back as plain values (None: the command goes on)."""
    if getattr(args, "runtime", "trl") == "unsloth":
        return {"plan": run_plan, "estimate": run_estimate, "check": run_check}[command](args)
    for name, v in vars(args).items():
        if isinstance(v, _DefaultInt):
            setattr(args, name, int(v))
        elif isinstance(v, _DefaultStr):
            setattr(args, name, str(v))
    return None


def _refuse(args, plan: bool) -> None:
    problems = []
    if getattr(args, "finetune", None) not in (None, "lora"):
        problems.append("--runtime unsloth plans LoRA (fast_inference=True trains adapters on vLLM's weights)")
    if getattr(args, "optim", None) not in (None, "adamw_8bit"):
        problems.append("--runtime unsloth is modelled with adamw_8bit (Unsloth's RL default) only")
    if getattr(args, "weights", None) == "int8" or getattr(args, "weights", None) == "fp32":
        problems.append(f"--runtime unsloth takes --weights nf4, bf16 or fp16, got {args.weights}")
    if getattr(args, "num_gpus", 1) * getattr(args, "num_nodes", 1) > 1 or "," in str(getattr(args, "gpu", "")):
        problems.append("--runtime unsloth plans one GPU")
    if getattr(args, "config", None):
        problems.append("--config is read for the TRL runtime; with --runtime unsloth give its settings as flags")
    for flag in ("output", "plot", "output_dir"):
        if getattr(args, flag, None):
            problems.append(f"--{flag.replace('_', '-')} is not written for --runtime unsloth (the plan prints "
                            "the Python script to run)")
    if problems:
        raise InvalidSetupError("\n".join(problems))


def _weights(args) -> dict:
    w = _given(args, "weights")
    return {"load_in_4bit": w in (None, "nf4")}


def plan_from_args(args, for_training: bool | None = None) -> UnslothPlan:
    _refuse(args, plan=True)
    p = unsloth_plan(
        args.model, gpu_arg(args.gpu), unsloth_version=args.unsloth_version, vllm_version=args.vllm_version,
        standby=args.standby, max_seq_length=args.max_seq_length, gpu_memory_utilization=args.gpu_memory_utilization,
        float8_kv_cache=args.float8_kv_cache, num_generations=args.num_generations,
        **{k: getattr(args, k) for k in ("lora_rank", "per_device_train_batch_size", "gradient_accumulation_steps")
           if getattr(args, k, None) is not None},
        max_prompt_length=args.max_prompt_length if args.max_prompt_length is not None else 256,
        max_completion_length=args.max_completion_length or args.target_completion_length,
        **({"margin": args.margin} if args.margin is not None else {}), **_weights(args))
    return with_unsloth_checks(p, for_training=for_training)


def run_plan(args) -> int:
    p = plan_from_args(args)
    if args.json:
        print_json(p.to_dict())
    else:
        print(render_plan(p))
    return 0


def run_estimate(args) -> int:
    _refuse(args, plan=False)
    seq = args.max_seq_length or 2048
    completion = _given(args, "completion_length")
    e = unsloth_estimate(
        args.model, args.gpu, max_seq_length=seq, gpu_memory_utilization=args.gpu_memory_utilization,
        standby=bool(args.standby), float8_kv_cache=args.float8_kv_cache, lora_rank=args.lora_rank,
        per_device_train_batch_size=_given(args, "batch_size"),
        gradient_accumulation_steps=_given(args, "gradient_accumulation_steps"),
        num_generations=args.num_generations,
        max_prompt_length=args.prompt_length if args.prompt_length is not None else 256,
        max_completion_length=completion, unsloth_version=args.unsloth_version, vllm_version=args.vllm_version,
        **_weights(args))
    if args.json:
        d = e.to_dict()
        d["checks"] = [c.to_dict() for c in unsloth_checks(e)]
        print_json(d)
    else:
        print(render_estimate(e))
    return 0


def run_check(args) -> int:
    p = plan_from_args(args, for_training=True if args.for_training else None)
    report = CheckReport(checks=p.checks, for_training=bool(args.for_training))
    if args.json:
        print_json(report.to_dict())
    else:
        out = [f"pre-flight checks for {p.model.model_id} on {p.gpu.name}, Unsloth {p.estimate.facts.release} "
               f"(fast_inference=True, vLLM {p.estimate.vllm_version})"]
        print("\n".join(out + check_lines(report)))
    return 1 if report.errors else 0


def _vllm_rows(e) -> list[tuple[str, str]]:
    rows = [("version", f"{e.vllm_version or 'not modelled'} ({e.vllm_version_reason})"),
            ("gpu_memory_utilization", f"{e.vllm_gpu_memory_utilization:.4f} received "
                                       f"({e.requested_gpu_memory_utilization} asked; {e.utilization_reason})"),
            ("max_lora_rank", str(e.max_lora_rank)),
            ("max_num_seqs / batched tokens", f"{e.max_num_seqs} / {e.max_num_batched_tokens}"),
            ("Unsloth's KV estimate", gib_str(e.unsloth_kv_estimate_bytes))]
    if e.capacity is not None:
        rows += [("weights (shared) + LoRA slots", gib_str(e.capacity.weights_bytes + e.lora_slot_bytes)),
                 ("KV cache", gib_str(e.kv_cache_bytes or 0)), ("KV tokens", f"{e.kv_cache_tokens or 0:,}")]
    else:
        rows.append(("not modelled", str(e.vllm_not_modelled)))
    return rows


def render_estimate(e) -> str:
    out = [f"{e.model.model_id} on {e.gpu.name} ({e.gpu.total_bytes / 2**30:.2f} GiB), Unsloth {e.facts.release} "
           f"fast_inference=True, {'4-bit' if e.load_in_4bit else '16-bit'}, LoRA r={e.lora_rank}, "
           f"standby {'on' if e.standby else 'off'}",
           table(_vllm_rows(e), "vLLM (inside its share: the one copy of the weights):"),
           table([(k, gib_str(v)) for k, v in e.trainer.items()], "trainer (outside vLLM's share):"),
           table([(k.replace("_bytes", ""), gib_str(v)) for k, v in e.phases.items()], "phases:")]
    if e.per_device_train_batch_size != e.requested_batch_size:
        out.append(f"note: Unsloth changes per_device_train_batch_size {e.requested_batch_size} -> "
                   f"{e.per_device_train_batch_size} (= num_generations)")
    out.append("fits" if e.fits else ("DOES NOT FIT" if e.fits is False else "fit unknown (vLLM not modelled)"))
    return "\n".join(out)


def render_plan(p: UnslothPlan) -> str:
    e = p.estimate
    out = [f"{p.model.model_id} on {p.gpu.name} ({p.gpu.total_bytes / 2**30:.2f} GiB, margin {p.margin:.0%}); "
           f"runtime: Unsloth {e.facts.release} fast_inference=True, TRL {p.trl_version} ({p.trl_version_reason})",
           table([(k, repr(v)) for k, v in p.from_pretrained_kwargs().items()], "FastLanguageModel.from_pretrained:"),
           table([(k, repr(v)) for k, v in p.get_peft_model_kwargs().items()], "FastLanguageModel.get_peft_model:"),
           table([(k, repr(v)) for k, v in p.config.items()], "GRPOConfig:"),
           table([(k, v) for k, v in p.env().items()], "environment:"),
           table(_vllm_rows(e), "vLLM:"),
           table([(k.replace("_bytes", ""), gib_str(v)) for k, v in e.phases.items()]
                 + [("budget (card - margin)", gib_str(p.budget_bytes)), ("headroom", gib_str(p.headroom_bytes))],
                 "peak per phase:"),
           "why:\n" + "\n".join(f"  - {r}" for r in p.reasons),
           "Unsloth will:\n" + "\n".join(f"  - {c}" for c in p.unsloth_changes)]
    flagged = [c for c in p.checks if c.severity != "info"]
    if flagged:
        out.append("pre-flight (`plan check --runtime unsloth` for all):")
        out += [f"  {c.severity}: {c.message}" + (f" (fix: {c.fix})" if c.fix else "") for c in flagged]
    out += ["", "# the script (planner.unsloth_plan(...).snippet()):", p.snippet()]
    return "\n".join(out)
