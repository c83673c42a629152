"""`--runtime unsloth` for `plan`, `plan estimate` and `plan check`: Unsloth's fast_inference=True.

    plan --runtime unsloth --model meta-llama/Llama-3.1-8B-Instruct --gpu T4 --weights nf4 --lora-rank 32 \\
        --max-seq-length 1024
    plan estimate --runtime unsloth --model ... --gpu T4 --weights nf4 --gpu-memory-utilization 0.6 --json
    plan check --runtime unsloth --model ... --gpu L4 --standby

The commands call :func:`dispatch` first. `plan` and `plan check` build the same request as the TRL
runtime (planner.cli.plan.request_from_args, the same flags and pins) with ``runtime="unsloth"``
and Unsloth's own options (``--max-seq-length``, ``--standby``, ``--unsloth-version``;
``--gpu-memory-utilization`` is the ``vllm_gpu_memory_utilization`` pin, ``--float8-kv-cache`` is
``--vllm-kv-cache-dtype fp8``), and print the same Plan as ``planner.plan(..., runtime="unsloth")``.
Shared flags keep their meaning (``--weights nf4`` = ``load_in_4bit=True``, Unsloth's default here).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..checks.preflight import CheckReport
from ..errors import InvalidSetupError
from ..search.request import PlanRequest, validate_request
from ..search.results import Plan
from ._common import check_lines, gib_str, print_json, render_time, table
from ._topology import gpu_arg

RUNTIMES = ("trl", "unsloth")
DEFAULT_LORA_RANK = 16  # the request's (planner.search.request.TrainerOptions) and unsloth_estimate's


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


def dispatch(args, command: str, shared_request: Callable[[Any], PlanRequest] | None = None) -> int | None:
    """The command's first line: run ``--runtime unsloth`` here (its exit code), or None (the
    command goes on with the TRL runtime). The TRL runtime refuses the Unsloth flags.
    ``shared_request``: the TRL runtime's request builder (planner.cli.plan.request_from_args),
    which `plan` and `plan check` pass (this module cannot import it: plan imports this one)."""
    if getattr(args, "runtime", "trl") == "unsloth":
        if command == "estimate":
            return run_estimate(args)
        if shared_request is None:
            raise InvalidSetupError(f"`plan {command} --runtime unsloth` needs the shared request builder")
        return {"plan": run_plan, "check": run_check}[command](args, shared_request)
    given = [f for f in ("gpu_memory_utilization", "standby", "unsloth_version", "max_seq_length")
             if getattr(args, f, None) is not None] + (["float8_kv_cache"] if getattr(args, "float8_kv_cache", False)
                                                      else [])
    if given:
        raise InvalidSetupError("\n".join(f"--{f.replace('_', '-')} is an option of the Unsloth runtime "
                                          "(--runtime unsloth)" for f in given))
    return None


def _refuse_cli(args) -> None:
    """The CLI-only flags the Unsloth runtime does not read (the request refuses the rest)."""
    problems = []
    if getattr(args, "config", None):
        problems.append("--config is read for the TRL runtime; with --runtime unsloth give its settings as flags")
    for flag in ("plot", "output_dir"):
        if getattr(args, flag, None):
            problems.append(f"--{flag.replace('_', '-')} is not written for --runtime unsloth (--output writes "
                            "the Python script to run)")
    if problems:
        raise InvalidSetupError("\n".join(problems))


def request_from_args(args, shared_request: Callable[[Any], PlanRequest]) -> PlanRequest:
    """The TRL runtime's request from the same flags (``shared_request``), for ``runtime="unsloth"``
    with its options."""
    _refuse_cli(args)
    changes: dict = {"runtime": "unsloth"}
    if args.weights == "fp8":  # the TRL request the shared builder validates refuses it: set it afterwards
        changes["weights"] = args.weights
        args = argparse.Namespace(**{**vars(args), "weights": "bf16"})
    elif args.weights is None:
        from ..search.unsloth_solver import default_weights  # imported when the runtime is asked for

        changes["weights"] = default_weights(args.finetune)
    changes.update({k: getattr(args, k) for k in ("max_seq_length", "standby", "unsloth_version")
                    if getattr(args, k) is not None})
    if args.gpu_memory_utilization is not None:
        changes["vllm_gpu_memory_utilization"] = args.gpu_memory_utilization
    if args.float8_kv_cache:
        changes["kv_cache_dtype"] = "fp8"
    req = shared_request(args).with_options(**changes)
    validate_request(req)
    return req


def plan_from_args(args, shared_request: Callable[[Any], PlanRequest], for_training: bool | None = None) -> Plan:
    """The same Plan as ``planner.plan(..., runtime="unsloth")`` (planner.api.plan_from_request, the one
    entry of both runtimes)."""
    from ..api import plan_from_request

    return plan_from_request(request_from_args(args, shared_request), for_training=for_training,
                             top=getattr(args, "top", None) or 0)


def run_plan(args, shared_request: Callable[[Any], PlanRequest]) -> int:
    """The plan, printed; ``--output FILE`` writes its script (atomically, planner.report.files, ``--force``
    to replace), checked before planning and written only for a plan that fits and passes its checks."""
    from ..report.files import check_target, write_file
    from ..report.outputs import rating_errors, report_rating

    output, force = getattr(args, "output", None), bool(getattr(args, "force", False))
    if output is not None:
        check_target(output, force)
    p = plan_from_args(args, shared_request)
    errors = rating_errors(p)
    written = None
    if output is not None and not errors:
        written = write_file(output, p.runtime_details.snippet(p.config), force=force)
        p = replace(p, next_steps={**p.next_steps, "command": f"python {written}", "files": [str(written)]})
    if args.json:
        d = p.to_dict()
        if written is not None:
            d["written"] = {written.name: str(written)}
        print_json(d)
    else:
        print(render_plan(p))
        if written is not None:
            print(f"wrote {written}")
    return report_rating(errors, output is not None)


def _estimate_refusals(args) -> list[str]:
    problems = []
    if getattr(args, "finetune", None) not in (None, "lora"):
        problems.append("--runtime unsloth plans LoRA (fast_inference=True trains adapters on vLLM's weights)")
    if getattr(args, "optim", None) not in (None, "adamw_8bit"):
        problems.append("--runtime unsloth is modelled with adamw_8bit (Unsloth's RL default) only")
    if getattr(args, "weights", None) not in (None, "nf4", "bf16", "fp16", "fp8"):
        problems.append(f"--runtime unsloth takes --weights nf4, bf16, fp16 or fp8, got {args.weights}")
    if getattr(args, "num_gpus", 1) * getattr(args, "num_nodes", 1) > 1 or "," in str(getattr(args, "gpu", "")):
        problems.append("--runtime unsloth plans one GPU (vLLM runs inside the one training process): drop "
                        "--num-gpus, --num-nodes and the list of GPUs")
    from ..search.request import Pins, fixed_setup_problems, pin_problems
    from ..search.unsloth_solver import fp8_release_problem, not_honoured
    from ..specs.versions import unsloth_facts

    if getattr(args, "weights", None) == "fp8":
        problems += [p for p in [fp8_release_problem(unsloth_facts(args.unsloth_version))] if p]
    if getattr(args, "layout", None) not in (None, "auto"):
        problems.append(not_honoured("layout"))
    if getattr(args, "lora_target_modules", None):
        problems.append(not_honoured("lora_target_modules"))
    given = {k: v for k, v in (("batch_size", args.batch_size),
                               ("gradient_accumulation_steps", args.gradient_accumulation_steps)) if v is not None}
    problems += fixed_setup_problems(**given)
    problems += pin_problems(Pins(num_generations=args.num_generations))
    return problems


def estimate_request(args) -> PlanRequest:
    """The fixed setup of `plan estimate --runtime unsloth` as a request: what the flags give, pinned;
    Unsloth's defaults (planner.search.unsloth_solver.unsloth_fixed_plan) for the rest; no margin unless
    given (fits = the card holds it, as the TRL runtime's one-GPU estimate judges)."""
    from ..search.unsloth_solver import unsloth_request  # imported when the runtime is asked for

    util = args.gpu_memory_utilization
    if util is None:
        util = getattr(args, "vllm_gpu_memory_utilization", None)
    pin = {k: v for k, v in (("per_device_train_batch_size", args.batch_size),
                             ("gradient_accumulation_steps", args.gradient_accumulation_steps),
                             ("num_generations", args.num_generations),
                             ("max_completion_length", args.completion_length),
                             ("vllm_gpu_memory_utilization", util)) if v is not None}
    fp8_cache = args.float8_kv_cache or getattr(args, "vllm_kv_cache_dtype", None) == "fp8"
    return unsloth_request(
        args.model, gpu_arg(args.gpu), weights=args.weights or "nf4",
        lora_rank=DEFAULT_LORA_RANK if args.lora_rank is None else args.lora_rank,
        max_seq_length=args.max_seq_length or 2048, standby=bool(args.standby),
        prompt_length=args.prompt_length if args.prompt_length is not None else 256,
        unsloth_version=args.unsloth_version, vllm_version=args.vllm_version,
        kv_cache_dtype="fp8" if fp8_cache else "auto", pin=pin,
        expected_completion_length=getattr(args, "expected_completion_length", None),
        reward_seconds_per_completion=getattr(args, "reward_seconds_per_completion", None) or 0.0,
        margin=getattr(args, "margin", None) or 0.0)  # an estimate is judged against the card, as TRL's


def run_estimate(args) -> int:
    """One fixed Unsloth setup (no search), as the one Plan (``--json``: the same schema as `plan`): Unsloth's
    defaults for what is not given; exit 1 when it does not fit or a check fails."""
    _refuse_cli(args)
    problems = _estimate_refusals(args)
    if problems:
        raise InvalidSetupError("\n".join(problems))
    from ..api import describe
    from ..report.outputs import rating_errors, report_rating
    from ..search.unsloth_solver import unsloth_fixed_plan, with_unsloth_checks

    req = estimate_request(args)
    p = describe(req, req, with_unsloth_checks(unsloth_fixed_plan(req)))
    if args.json:
        print_json(p.to_dict())
    else:
        print(render_estimate(p.runtime_details.estimate))
    return report_rating(rating_errors(p), False)


def run_check(args, shared_request: Callable[[Any], PlanRequest]) -> int:
    p = plan_from_args(args, shared_request, for_training=True if args.for_training else None)
    report = CheckReport(checks=p.checks, for_training=bool(args.for_training))
    if args.json:
        print_json(report.to_dict())
    else:
        e = p.runtime_details.estimate
        out = [f"pre-flight checks for {p.model.model_id} on {p.gpu.name}, Unsloth {e.facts.release} "
               f"(fast_inference=True, vLLM {e.vllm_version})"]
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
           f"fast_inference=True, {'4-bit' if e.load_in_4bit else ('FP8' if e.load_in_fp8 else '16-bit')}, "
           f"LoRA r={e.lora_rank}, "
           f"standby {'on' if e.standby else 'off'}",
           table(_vllm_rows(e), "vLLM (inside its share: the one copy of the weights):"),
           table([(k, gib_str(v)) for k, v in e.trainer.items()], "trainer (outside vLLM's share):"),
           table([(k.replace("_bytes", ""), gib_str(v)) for k, v in e.phases.items()], "phases:")]
    if e.per_device_train_batch_size != e.requested_batch_size:
        out.append(f"note: Unsloth changes per_device_train_batch_size {e.requested_batch_size} -> "
                   f"{e.per_device_train_batch_size} (= num_generations)")
    out.append("fits" if e.fits else ("DOES NOT FIT" if e.fits is False else "fit unknown (vLLM not modelled)"))
    return "\n".join(out)


SCRIPT_MARKER = "# the script (plan.runtime_details.snippet(plan.config)):"


def render_plan(p: Plan) -> str:
    d = p.runtime_details
    e = d.estimate
    out = [f"{p.model.model_id} on {p.gpu.name} ({p.gpu.total_bytes / 2**30:.2f} GiB, margin {p.margin:.0%}); "
           f"runtime: Unsloth {e.facts.release} fast_inference=True, TRL {d.trl_version} ({d.trl_version_reason})",
           table([(k, repr(v)) for k, v in d.from_pretrained_kwargs().items()], "FastLanguageModel.from_pretrained:"),
           table([(k, repr(v)) for k, v in d.get_peft_model_kwargs().items()], "FastLanguageModel.get_peft_model:"),
           table([(k, repr(v)) for k, v in p.config.items()], "GRPOConfig:"),
           table([(k, v) for k, v in d.env().items()], "environment:"),
           table(_vllm_rows(e), "vLLM:"),
           table([(k.replace("_bytes", ""), gib_str(v)) for k, v in e.phases.items()]
                 + [("budget (card - margin)", gib_str(p.budget_bytes)), ("headroom", gib_str(p.headroom_bytes))],
                 "peak per phase:"),
           render_time(p.step_time()),
           "why:\n" + "\n".join(f"  - {r}" for r in p.reasons),
           "Unsloth will:\n" + "\n".join(f"  - {c}" for c in d.changes),
           "assumptions (--json for their sources):\n" + "\n".join(
               f"  {k}: {a['value']} ({a['source']})" for k, a in p.assumptions.items())]
    flagged = [c for c in p.checks if c.severity != "info"]
    if flagged:
        out.append("pre-flight (`plan check --runtime unsloth` for all):")
        out += [f"  {c.severity}: {c.message}" + (f" (fix: {c.fix})" if c.fix else "") for c in flagged]
    out += ["", SCRIPT_MARKER, d.snippet(p.config)]
    return "\n".join(out)
