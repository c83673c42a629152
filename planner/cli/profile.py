"""`plan profile`: trace a training step on the CPU, or measure it on this machine's GPU.

    plan profile --model Qwen/Qwen2.5-0.5B-Instruct --trace              # no GPU needed (~10 s)
    plan profile --model Qwen/Qwen3-4B --trace --weights nf4 --shapes 1:256:512,8:256:1792 --json
    plan profile --model Qwen/Qwen2.5-0.5B-Instruct --gpu auto           # measure, write a calibration profile

``--trace`` builds the model from its config on meta tensors and runs one GRPO step
(planner/profiler/trace.py): it reports the step's activation peak per shape and the trainer peak
with the analytic estimate's activation terms replaced by the traced one. ``--gpu auto`` runs the
same step on the GPU (planner/profiler/measure.py), records every memory figure of
data/calibration/README.md and writes a calibration profile that ``plan estimate`` then uses.
"""

from __future__ import annotations

import argparse

from ..errors import InvalidSetupError
from ..memory.logprob_head import LOGPROB_HEADS
from ..memory.trainer import FINETUNE_MODES
from ..specs.units import MIB
from ._common import HelpFormatter, print_json, progress

DEFAULT_TRACE_GPU = "H100-80GB"  # the card the analytic comparison is evaluated on, unless --gpu NAME


def add_parser(sub) -> None:
    from ..profiler.trace import DEFAULT_SHAPES

    p = sub.add_parser("profile", help="trace (CPU) or measure (GPU) one training step", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face id or alias, local directory or config.json")
    p.add_argument("--trace", action="store_true",
                   help="trace the step on the CPU with meta tensors (no GPU, no weights)")
    p.add_argument("--gpu", default=None,
                   help="'auto': measure on this machine's GPU; with --trace, the card for the analytic "
                        f"comparison (default {DEFAULT_TRACE_GPU})")
    p.add_argument("--weights", choices=("bf16", "nf4"), default="bf16", help="trainer weight format")
    p.add_argument("--finetune", choices=FINETUNE_MODES, default="lora")
    p.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (higher: more memory)")
    p.add_argument("--shapes", default=DEFAULT_SHAPES,
                   help=f"batch:prompt:completion triples, comma-separated (default {DEFAULT_SHAPES})")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute activations in backward (default: on for --trace; both on and off when "
                        "measuring)")
    p.add_argument("--logprob-head", choices=LOGPROB_HEADS, default="fused",
                   help="TRL's fused tiled head (TRL >= 1.16) or full logits (older TRL); --trace only")
    p.add_argument("--output", default=None, help="calibration profile path (--gpu auto; default "
                                                  "~/.cache/planner/calibration/ or $PLANNER_CALIBRATION_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    from ..profiler.trace import parse_shapes
    from ..specs.model import resolve_model

    spec = resolve_model(args.model)
    shapes = parse_shapes(args.shapes)
    if args.trace:
        return _run_trace(args, spec, shapes)
    if args.gpu is None or args.gpu.strip().lower() != "auto":
        raise InvalidSetupError("plan profile needs --trace (trace the step on the CPU) or --gpu auto "
                                "(measure it on this machine's GPU)")
    return _run_measure(args, spec, shapes)


# -- --trace --------------------------------------------------------------------------------------

def _analytic(spec, gpu: str, args, shape, gradient_checkpointing: bool):
    """The analytic estimate for one traced shape (its own calibration switched off)."""
    from ..search.estimation import estimate

    return estimate(model=spec, gpu=gpu, weights=args.weights, finetune=args.finetune, lora_rank=args.lora_rank,
                    optim="adamw_8bit", gradient_checkpointing=gradient_checkpointing,
                    batch_size=shape.batch_size, prompt_length=shape.prompt_length,
                    completion_length=shape.completion_length, logprob_head=args.logprob_head,
                    expandable_segments=None, calibration=None)


def trace_report(spec, args, shapes) -> dict:
    """Trace every shape and pair each with the analytic estimate: the JSON of ``--trace --json``.

    ``activation_peak_bytes``: traced peak over forward+backward above weights and adapters
    (includes the log-prob head and the gradients alive at the peak).
    ``analytic_activation_peak_bytes``: the estimate's activations + logprob_head + gradients,
    the same quantity. ``replayed_reserve_bytes``: the caching allocator replayed on the traced
    step's allocations (peak reserved less peak allocated of the step from an empty cache,
    planner/profiler/allocator_sim.py); ``analytic_reserve_bytes`` the estimate's allocator_reserve.
    ``trainer_peak_bytes``: the estimate's device-level peak with those three terms replaced by
    the traced figure (weights, adapters, optimizer state, allocator reserve and non-PyTorch memory
    stay the estimate's).
    """
    import time

    from ..profiler.trace import trace_steps

    settings = (True,) if args.gradient_checkpointing is None else (bool(args.gradient_checkpointing),)
    n = len(shapes) * len(settings)
    progress(f"tracing {n} step{'s' * (n != 1)} of {spec.model_id} on the CPU (meta tensors; about 5-15 s per "
             f"model) ...")
    t0 = time.perf_counter()
    result = trace_steps(spec, shapes, weights=args.weights, finetune=args.finetune, lora_rank=args.lora_rank,
                         gradient_checkpointing=settings, logprob_head=args.logprob_head)
    seconds = time.perf_counter() - t0
    progress(f"traced in {seconds:.1f} s")
    gpu = args.gpu or DEFAULT_TRACE_GPU
    notes = list(result.notes)
    rows = []
    for step in result.steps:
        analytic_act = trainer_peak = None
        try:
            e = _analytic(spec, gpu, args, step.shape, step.gradient_checkpointing)
        except ImportError:
            e = None
        if e is not None:
            c = e.trainer.components
            replaced = c.get("activations", 0) + c.get("logprob_head", 0) + c.get("gradients", 0)
            analytic_act = int(replaced)
            trainer_peak = int(e.trainer.peak_bytes - replaced + step.activation_peak_bytes)
        rows.append({"batch": step.shape.batch_size, "prompt_length": step.shape.prompt_length,
                     "completion_length": step.shape.completion_length,
                     "gradient_checkpointing": step.gradient_checkpointing,
                     "activation_peak_bytes": step.activation_peak_bytes,
                     "trainer_peak_bytes": trainer_peak,
                     "analytic_activation_peak_bytes": analytic_act,
                     "forward_peak_bytes": step.forward_peak_bytes,
                     "gradients_bytes": step.gradients_bytes,
                     "replayed_reserve_bytes": step.replayed_reserve_bytes,
                     "analytic_reserve_bytes": None if e is None else int(e.trainer.components["allocator_reserve"])})
    if any(r["trainer_peak_bytes"] is None for r in rows):
        notes.append("analytic estimate unavailable: trainer_peak_bytes not computed")
    else:
        notes.append(f"trainer_peak_bytes: the analytic estimate on {gpu} with its activations, logprob_head "
                     f"and gradients terms replaced by the traced activation peak")
    return {"model": spec.model_id, "mode": "trace", "weights": args.weights, "finetune": args.finetune,
            "lora_rank": args.lora_rank if args.finetune == "lora" else None,
            "logprob_head": args.logprob_head, "gpu": gpu, "seconds": round(seconds, 2),
            "shapes": rows, "notes": notes}


def _run_trace(args, spec, shapes) -> int:
    report = trace_report(spec, args, shapes)
    if args.json:
        print_json(report)
        return 0
    print(render_trace(report))
    return 0


def _mib(n) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


def render_trace(report: dict) -> str:
    mode = f"LoRA r{report['lora_rank']}" if report["finetune"] == "lora" else "full fine-tuning"
    out = [f"{report['model']}: one GRPO step traced on the CPU ({report['weights']}, {mode}, "
           f"{report['logprob_head']} log-prob head) in {report['seconds']:.1f} s",
           f"{'batch':>5} {'prompt':>6} {'compl.':>6} {'ckpt':>4}  {'traced act. MiB':>15} "
           f"{'analytic act. MiB':>17} {'trainer peak MiB':>16} {'replayed reserve MiB':>20}"]
    for r in report["shapes"]:
        out.append(f"{r['batch']:>5} {r['prompt_length']:>6} {r['completion_length']:>6} "
                   f"{'on' if r['gradient_checkpointing'] else 'off':>4}  {_mib(r['activation_peak_bytes']):>15} "
                   f"{_mib(r['analytic_activation_peak_bytes']):>17} {_mib(r['trainer_peak_bytes']):>16} "
                   f"{_mib(r.get('replayed_reserve_bytes')):>20}")
    out.append("activation = peak above weights and adapters over forward+backward (head and gradients "
               f"included); trainer peak = device level on {report['gpu']}; replayed reserve = the caching "
               f"allocator's rules replayed on the step's allocations (reserved less allocated, one step from an "
               f"empty cache)")
    out.append("notes:")
    out += [f"  - {n}" for n in report["notes"]]
    return "\n".join(out)


# -- --gpu auto -----------------------------------------------------------------------------------

def _run_measure(args, spec, shapes) -> int:
    from ..profiler.measure import measure

    settings = (True, False) if args.gradient_checkpointing is None else (bool(args.gradient_checkpointing),)
    result = measure(spec, shapes, weights=args.weights, finetune=args.finetune, lora_rank=args.lora_rank,
                     gradient_checkpointing=settings, output=args.output, progress=not args.json)
    steps = [r for r in result.rows if r.get("stage") == "step"]
    if args.json:
        print_json({"model": spec.model_id, "mode": "measure", "gpu": result.gpu_name, "output": result.output,
                    "versions": result.versions, "rows": result.rows,
                    "fits": [f.to_dict() for f in result.fits]})
        return 0
    print(f"{spec.model_id} on {result.gpu_name}: {len(steps)} steps measured "
          f"({sum(1 for r in steps if not r.get('ok'))} out of memory)")
    print(f"{'batch':>5} {'prompt':>6} {'compl.':>6} {'ckpt':>4} {'act. MiB':>9} {'peak reserved MiB':>17} "
          f"{'device used MiB':>15}")
    for r in steps:
        head = (f"{r['batch']:>5} {r['prompt_len']:>6} {r['completion_len']:>6} "
                f"{'on' if r['grad_ckpt'] else 'off':>4}")
        if not r.get("ok"):
            print(f"{head} {'OOM':>9}")
            continue
        print(f"{head} {r['peak_alloc_step_mib'] - r['before_mib']:9,.0f} {r['peak_reserved_step_mib']:17,.0f} "
              f"{r['device_used_mib_end']:15,.0f}")
    print(f"calibration profile written to {result.output}")
    return 0
