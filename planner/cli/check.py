"""`plan check`: solve like `plan`, then run the pre-flight checks on the result.

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

from ..api import plan_from_request
from ..checks.preflight import CheckReport
from ..report import outputs
from . import _unsloth
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
    """One or many GPUs alike: the layout's checks and every pre-flight check."""
    if (rc := _unsloth.dispatch(args, "check", plan_command.request_from_args)) is not None:
        return rc
    plan_command.check_outputs(args)
    for_training = True if args.for_training else None
    p = plan_from_request(plan_command.request_from_args(args), for_training=for_training, strict=True)
    report = CheckReport(checks=p.checks, for_training=bool(for_training) or p.gpu.free_bytes is not None)
    written, errors = outputs.write_if_ok(p, **plan_command._outputs(args))
    if args.json:
        print_json(report.to_dict())
    else:
        print(render(report, p))
        for path in written:
            print(f"wrote {path}")
    requested = any(v for k, v in plan_command._outputs(args).items() if k != "force")
    return outputs.report_rating(errors, requested)


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
