"""`plan check`: the pre-flight checks of the configuration you will run.

With --config: the file as written (its keys, the flags over them, TRL's defaults for what it leaves
out: batch 8, 8 generations, sleep mode off, vllm_gpu_memory_utilization 0.3, vLLM's max_model_len
the model's context) is evaluated as one fixed setup, the same evaluation `plan estimate --config`
makes; nothing is re-chosen. A setup that does not fit the card (estimate's verdict) or whose vLLM
does not start is an error (exit 1); one that fits the card but not the margin is a warning.
Without --config: the solver's plan for the options (what `plan` would print) is checked.

    plan check --model Qwen/Qwen2.5-7B-Instruct --gpu auto             # on the training machine
    plan check --model Qwen/Qwen2.5-7B-Instruct --gpu L4 --json        # on a planning machine
    plan check --model ... --gpu L4 --for-training                     # missing packages are errors

Takes every option of `plan`. Exit code 1 when a check fails with severity error (then no file
asked for with --output/--output-dir/--plot is written), 0 otherwise (warnings do not fail); bad
input (unknown model, invalid setup) exits 2 and nothing fitting exits 3, like every command.
An architecture the planner does not model (an unknown ``model_type``) is an error here and a
warning in `plan` (``strict``, planner.checks.preflight).
A missing package is a warning on a machine that only plans; `--for-training`, or `--gpu auto`
(this machine is the training machine), makes it an error (planner/checks/preflight.py).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from ..api import plan_from_request
from ..checks.preflight import Check, CheckReport
from ..report import outputs
from ..search.results import Plan
from ..search.solver import TRL_RUNTIME
from ..specs.model import resolve_model
from ..specs.versions import trl_facts, trl_max_model_len
from . import _unsloth
from . import estimate as estimate_command
from . import plan as plan_command
from ._common import check_lines, print_json


def add_arguments(p) -> None:
    plan_command.add_arguments(p)
    p.add_argument("--for-training", action="store_true",
                   help="this machine will train: missing or unsupported packages are errors, not warnings")


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="pre-flight checks of the plan", description=__doc__)
    add_arguments(p)


def run(args) -> int:
    """One or many GPUs alike: the layout's checks and every pre-flight check; with --config, of the
    file as written (:func:`as_written`), else of the solver's plan."""
    if (rc := _unsloth.dispatch(args, "check", plan_command.request_from_args)) is not None:
        return rc
    plan_command.check_outputs(args)
    for_training = True if args.for_training else None
    if args.config and _uses_vllm(args):
        p, notes = as_written(args, for_training)
        errors = [f"{c.id}: {c.message}" for c in p.checks if c.severity == "error"]
        written = [] if errors else outputs.write_outputs(p, **plan_command._outputs(args))
    else:
        p, notes = plan_from_request(plan_command.request_from_args(args), for_training=for_training,
                                     strict=True), ()
        written, errors = outputs.write_if_ok(p, **plan_command._outputs(args))
    for line in notes:
        print(f"plan: warning: {line}", file=sys.stderr)
    report = CheckReport(checks=p.checks, for_training=bool(for_training) or p.gpu.free_bytes is not None)
    if args.json:
        print_json(report.to_dict())
    else:
        print(render(report, p))
        for path in written:
            print(f"wrote {path}")
    requested = any(v for k, v in plan_command._outputs(args).items() if k != "force")
    return outputs.report_rating(errors, requested)


# `plan` flags -> the `plan estimate` arguments of the same settings (planner.cli.estimate.with_config reads them)
_ESTIMATE_NAMES = {"batch_size": "per_device_train_batch_size", "prompt_length": "max_prompt_length",
                   "sleep_mode": "vllm_enable_sleep_mode", "vllm_max_model_len": "vllm_max_model_length"}
# what `plan estimate` has and `plan` does not: their defaults
_ESTIMATE_ONLY = dict(completion_lengths="varied", vllm_quantization=None, vllm_max_num_seqs=None,
                      vllm_max_num_batched_tokens=None, vllm_enforce_eager=False)


def estimate_args(args) -> argparse.Namespace:
    """`plan check`'s options as `plan estimate`'s (the same settings under that command's names)."""
    out = argparse.Namespace(**vars(args), **_ESTIMATE_ONLY)
    for name, plan_name in _ESTIMATE_NAMES.items():
        setattr(out, name, getattr(args, plan_name))
    out.completion_length = args.max_completion_length or args.target_completion_length
    out.rollout_turns = args.rollout_turns or 1
    out.vllm_kv_cache_dtype = args.vllm_kv_cache_dtype or "auto"
    return out


def _uses_vllm(args) -> bool:
    """Whether the --config file (or a flag) starts a vLLM engine as TRL reads it (``use_vllm: true``, or a
    utilisation flag). Without one TRL generates with transformers: then the solver's plan is checked (without
    vLLM when the file says ``use_vllm: false``), as without --config, and stderr says so."""
    from ..search.trl_config import read_grpo_config

    cfg = read_grpo_config(args.config, trl_version=args.trl_version, unknown="error")
    if (cfg.use_vllm is True or args.vllm_gpu_memory_utilization is not None):
        return True
    if cfg.use_vllm is False:
        print(f"plan: warning: --config {args.config} sets use_vllm: false: checking the planner's plan without vLLM "
              f"(transformers' generate, its batch chosen by the planner), not the file's setup as written",
              file=sys.stderr)
        return False
    print(f"plan: warning: --config {args.config} does not set use_vllm: true (TRL would generate with "
          f"transformers, which plan check does not model): checking the planner's plan for it instead",
          file=sys.stderr)
    return False


def as_written(args, for_training: bool | None) -> tuple[Plan, tuple[str, ...]]:
    """The --config file's setup as TRL will run it (planner.cli.estimate.with_config: the file, the flags
    over it, TRL's defaults for the rest), evaluated with no search (planner.estimate_layout, on one GPU
    too) and checked: the layout's and every pre-flight check, and whether it fits (:func:`fit_check`)."""
    e, notes = estimate_command.with_config(estimate_args(args))
    if e.layout == "server" or e.num_gpus * e.num_nodes > 1:
        max_len = None
    else:  # TRL's own: the file's vllm_max_model_length, else the model's context (planner.specs.versions)
        max_len = trl_max_model_len(trl_facts(e.trl_version), resolve_model(e.model).max_position_embeddings,
                                    e.vllm_max_model_len)
    p = estimate_command.layout_estimate(e, vllm_max_model_length=max_len)
    p = TRL_RUNTIME.checked(p, for_training, True)
    return replace(p, checks=(fit_check(p, args.config), *p.checks)), notes


def fit_check(p: Plan, path: str) -> Check:
    """Whether the setup as written fits: an error when a GPU's peak is over the card (the verdict of
    `plan estimate`) or vLLM does not start, a warning when it fits the card but not the margin."""
    worst = max(p.roles.values(), key=lambda r: r.peak_bytes - r.budget_bytes)
    card = p.gpu.usable_bytes
    over = max(r.peak_bytes for r in p.roles.values()) - card
    engine = p.vllm
    phase = worst.binding_phase
    if engine is not None and not engine.startup_ok:
        return Check("fits", "error", f"{path} as written: vLLM does not start ({'; '.join(engine.errors)})",
                     "plan --config FILE re-chooses what you let it (--rechoose KEY)")
    if over > 0:
        return Check("fits", "error", f"{path} as written does not fit: peak {_gib(card + over)} in {phase}, "
                     f"{_gib(over)} over the card's {_gib(card)}",
                     "lower per_device_train_batch_size or vllm_gpu_memory_utilization, set vllm_enable_sleep_mode: "
                     "true, or let `plan --config FILE --rechoose KEY` choose")
    if not p.fits:
        return Check("fits", "warning", f"{path} as written fits the card but not the {p.margin:.0%} margin: peak "
                     f"{_gib(worst.peak_bytes)} in {phase}, budget {_gib(worst.budget_bytes)}",
                     "the memory model's error band may not hold; leave more room")
    return Check("fits", "info", f"{path} as written fits: peak {_gib(worst.peak_bytes)} in {phase}, "
                 f"{_gib(worst.headroom_bytes)} under the budget (card - {p.margin:.0%} margin)")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def render(report, p) -> str:
    cfg = p.config
    mode = "training machine" if report.for_training else "planning only: missing packages are warnings"
    gpus = f"{p.topology.total_gpus} x {p.gpu.name}" if p.multi_gpu else p.gpu.name
    vllm = (f"vLLM utilisation {cfg['vllm_gpu_memory_utilization']}" if "vllm_gpu_memory_utilization" in cfg
            else f"vLLM server on GPU(s) {p.topology.server_devices}")
    out = [f"pre-flight checks for {p.model.model_id} on {gpus} (batch {cfg['per_device_train_batch_size']} x "
           f"{p.option.steps_per_generation} steps, {cfg['num_generations']} generations, completion "
           f"{cfg['max_completion_length']}, {vllm}; {mode})"]
    out += check_lines(report)
    if not report.ok:
        out[-1] += ": fix the errors before training"
    return "\n".join(out)
