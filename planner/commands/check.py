"""`plan check`: solve like `plan`, then run the pre-flight checks on the result.

    plan check --model Qwen/Qwen2.5-7B-Instruct --gpu auto             # on the training machine
    plan check --model Qwen/Qwen2.5-7B-Instruct --gpu L4 --json        # on a planning machine
    plan check --model ... --gpu L4 --for-training                     # missing packages are errors

Takes every option of `plan`. Exit code 1 when a check fails with severity error, 0 otherwise
(warnings do not fail); bad input (unknown model, infeasible setup) exits 2 like every command.
A missing package is a warning on a machine that only plans; `--for-training`, or `--gpu auto`
(this machine is the training machine), makes it an error (planner/checks.py).
"""

from __future__ import annotations

from ..checks import preflight
from . import plan as plan_command
from ._common import print_json


def add_arguments(p) -> None:
    plan_command.add_arguments(p)
    p.add_argument("--for-training", action="store_true",
                   help="this machine will train: missing or unsupported packages are errors, not warnings")


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="pre-flight checks of the plan", description=__doc__)
    add_arguments(p)


def run(args) -> int:
    plan_command.check_outputs(args)
    p = plan_command.plan_from_args(args)
    if plan_command.is_multi_gpu(args):
        return _run_distributed(args, p)
    report = preflight(p, for_training=True if args.for_training else None)
    plan_command.write_outputs(args, p)
    if args.json:
        print_json(report.to_dict())
    else:
        print(render(report, p))
    return 1 if report.errors else 0


def _run_distributed(args, p) -> int:
    """Multi-GPU: the topology checks of the distributed plan (GPU sizes, TP, world size, overlap, NCCL)."""
    checks = list(p.checks)
    if args.json:
        print_json({"checks": [c.to_dict() for c in checks], "ok": not any(c.severity == "error" for c in checks)})
    else:
        for c in checks:
            print(f"  {c.severity:<7}  {c.id}  {c.message}" + (f"\n           fix: {c.fix}" if c.fix and
                                                              c.severity != "info" else ""))
    return 1 if any(c.severity == "error" for c in checks) else 0


def render(report, p) -> str:
    cfg = p.config
    mode = "training machine" if report.for_training else "planning only: missing packages are warnings"
    out = [f"pre-flight checks for {p.model.model_id} on {p.gpu.name} (batch {cfg['per_device_train_batch_size']} x "
           f"{cfg['steps_per_generation']} steps, {cfg['num_generations']} generations, completion "
           f"{cfg['max_completion_length']}, vLLM utilisation {cfg['vllm_gpu_memory_utilization']}; {mode})"]
    width = max(len(c.id) for c in report.checks)
    for c in report.checks:
        out.append(f"  {c.severity:<7}  {c.id:<{width}}  {c.message}")
        if c.fix and c.severity != "info":
            out.append(f"  {'':<7}  {'':<{width}}  fix: {c.fix}")
    n_err, n_warn = len(report.errors), len(report.warnings)
    out.append(f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}"
               + ("" if report.ok else ": fix the errors before training"))
    return "\n".join(out)
