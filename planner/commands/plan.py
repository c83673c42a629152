"""`plan` (no subcommand): solve for the GRPO + colocated vLLM configuration that fits.

    plan --model Qwen/Qwen2.5-3B-Instruct --gpu L4 --max-completion-length 1024
    plan --model Qwen/Qwen2.5-7B-Instruct --gpu auto --num-generations 8 --json
    plan --model meta-llama/Llama-3.1-8B-Instruct --gpu A100-40GB --output grpo.yaml --plot memory.png
"""

from __future__ import annotations

from ..api import plan_from_request
from ..errors import InvalidSetupError
from ..request import PlanRequest, plan_request
from ..results import OBJECTIVE, Plan
from . import _unsloth
from ._common import add_model_gpu_args, add_trainer_args, gib_str, print_json, table, trainer_kwargs
from ._topology import add_topology_arguments, gpu_arg
from ._topology import render as render_layout


def _utilization_range(text: str) -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.replace(":", ",").split(",")]
    except ValueError:
        raise InvalidSetupError(f"--utilization-range must be LO,HI (e.g. 0.3,0.7), got '{text}'") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise InvalidSetupError(f"--utilization-range must be LO,HI (e.g. 0.3,0.7), got '{text}'")
    return parts[0], parts[1]


def add_arguments(p) -> None:
    """Every option of `plan` (shared with `plan check`)."""
    add_model_gpu_args(p, gpu_default="auto")
    add_trainer_args(p)
    g = p.add_argument_group("targets")
    g.add_argument("--num-generations", type=int, default=None,
                   help="completions per prompt (default: the solver picks, preferring TRL's 8)")
    g.add_argument("--max-completion-length", type=int, default=None,
                   help="target completion length in tokens (default: the installed TRL's default, 512 in 1.16)")
    g.add_argument("--prompt-length", type=int, default=256, help="longest prompt (tokens)")
    g.add_argument("--utilization-range", default="0.3,0.7", help="vllm_gpu_memory_utilization range LO,HI")
    g.add_argument("--margin", type=float, default=0.05, help="safety margin as a fraction of the card")
    g.add_argument("--sleep-mode", choices=("auto", "on", "off"), default="auto")
    g.add_argument("--vllm-kv-cache-dtype", choices=("auto", "fp8"), default="auto")
    g.add_argument("--vllm-version", default=None)
    g.add_argument("--trl-version", default=None)
    add_topology_arguments(p)  # --num-gpus, --num-nodes, --layout, --engine, --output-dir, ...
    o = p.add_argument_group("output")
    o.add_argument("--output", default=None, help="write the GRPOConfig as YAML TRL's parser reads")
    o.add_argument("--plot", default=None,
                   help="draw the per-phase memory picture to this .png, .pdf or .svg (no extension: .png)")
    o.add_argument("--force", action="store_true", help="replace files that exist (default: refuse)")
    _unsloth.add_arguments(p)  # --runtime and the Unsloth flags


def request_from_args(args) -> PlanRequest:
    """The one request the options describe (validated: every problem at once)."""
    return plan_request(
        args.model, gpu_arg(args.gpu), **trainer_kwargs(args), num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, prompt_length=args.prompt_length,
        utilization_range=_utilization_range(args.utilization_range), margin=args.margin,
        sleep_mode=args.sleep_mode, vllm_version=args.vllm_version, trl_version=args.trl_version,
        kv_cache_dtype=args.vllm_kv_cache_dtype, tensor_parallel_size=args.vllm_tensor_parallel_size,
        num_gpus=args.num_gpus, num_nodes=args.num_nodes, layout=args.layout, engine=args.engine,
        server_gpus=args.server_gpus, server_host=args.server_host, server_port=args.server_port)


def plan_from_args(args) -> Plan:
    """The `Plan` the options ask for (used by `plan` and `plan check`), for 1..N GPUs."""
    return plan_from_request(request_from_args(args))


def _outputs(args) -> dict:
    return dict(output=getattr(args, "output", None), plot=getattr(args, "plot", None),
                output_dir=getattr(args, "output_dir", None), force=bool(getattr(args, "force", False)))


def check_outputs(args) -> None:
    """Before any planning: the --plot format, the packages the writers need, existing targets."""
    from ..outputs import check_outputs as check

    check(**_outputs(args))


def write_outputs(args, p) -> list:
    """``--output grpo.yaml``, ``--plot memory.png`` and ``--output-dir``, all or none (planner.files);
    returns the paths written."""
    from ..outputs import write_outputs as write

    return write(p, **_outputs(args))


def write_if_ok(p, **outputs) -> tuple:
    """:func:`write_outputs` unless the plan is rated an error (planner.outputs.write_if_ok)."""
    from ..outputs import write_if_ok as write

    return write(p, **outputs)


def report_rating(errors: list, requested_files: bool) -> int:
    from ..outputs import report_rating as report

    return report(errors, requested_files)


def run(args) -> int:
    if (rc := _unsloth.dispatch(args, "plan")) is not None:
        return rc
    check_outputs(args)
    p = plan_from_args(args)
    written, errors = write_if_ok(p, **_outputs(args))
    if args.json:
        d = p.to_dict()
        if written:
            d["written"] = {path.name: str(path) for path in written}
        print_json(d)
    else:
        print(render(p))
        for path in written:
            print(f"wrote {path}")
    return report_rating(errors, any(v for k, v in _outputs(args).items() if k != "force"))


def render(p: Plan) -> str:
    if p.multi_gpu:
        return render_layout(p)
    cfg = p.config
    role = p.training_rank
    out = [f"{p.model.model_id} on {p.gpu.name} ({p.gpu.total_bytes / 2**30:.2f} GiB, margin {p.margin:.0%}); "
           f"memory model: {p.memory_model}",
           table([(k, str(v)) for k, v in cfg.items()], "GRPOConfig:")]
    phase_rows = [(ph.name, gib_str(ph.peak_bytes)) for ph in role.phases]
    phase_rows.append(("budget (card - margin)", gib_str(p.budget_bytes)))
    phase_rows.append(("headroom", gib_str(p.headroom_bytes)))
    out.append(table(phase_rows, "peak per phase:"))
    v = p.vllm
    if v is not None:
        out.append(table([("KV cache", gib_str(v.kv_cache_bytes)), ("KV tokens", f"{v.kv_cache_tokens:,}"),
                          ("max concurrency", f"{v.max_concurrency:.2f}x at {v.max_model_len} tokens"),
                          ("generation waves", str(p.waves))], "vLLM:"))
    out.append("objective: " + " > ".join(OBJECTIVE))
    out.append("why:\n" + "\n".join(f"  - {r}" for r in p.reasons))
    out += [f"warning: {w}" for w in p.warnings]
    flagged = [c for c in p.checks if c.severity != "info"]
    if flagged:
        out.append("pre-flight (`plan check` for all):")
        out += [f"  {c.severity}: {c.message}" + (f" (fix: {c.fix})" if c.fix else "") for c in flagged]
    return "\n".join(out)
