"""Traced vs measured activation peak for every step row of the H100 calibration data.

Measured (allocator level, data/calibration/README.md): ``peak_alloc_step_mib - before_mib``,
the most the caching allocator held over forward, backward and optimizer step, above what was
allocated before the step (weights, adapters and, after a model's first step, optimizer state).
Traced: ``planner.profiler.trace.trace_steps(...)`` on the CPU (meta tensors, no GPU), the peak of
live tensor bytes over forward + backward above the weights and adapters. Both include the
gradients alive at the peak. NF4 rows are traced as the bf16 graph with the NF4 matmul's
dequantisation transients (see planner/profiler/trace.py).

Two kinds of rows measure something the trace does not model, and are flagged:
- ``first``: the first step in the measuring process allocated one-time buffers (cuBLAS
  workspaces and the like, ~75 MiB here: ``before_mib`` of the next row grows by about 65 MiB
  more than the 8-bit optimizer state).
- ``opt``: the first step of every other model also creates the optimizer state inside the step
  (its ``before_mib`` lacks it); with full fine-tuning that (grads + state) is the step's peak.
The summary gives the errors with and without the flagged rows.

Run: python benchmarks/trace_vs_measured.py [--gc-only]
     (writes benchmarks/results/trace_vs_measured.txt; about 3 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration_data import load_rows  # noqa: E402

from planner.profiler.trace import Shape, trace_steps  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402

MIB = 1024**2
RESULTS = Path(__file__).resolve().parent / "results" / "trace_vs_measured.txt"


def family(r: dict) -> tuple:
    return (r["model"], r["weights"], r["mode"], r["rank"])


def _flags(rows: list[dict]) -> dict[int, str]:
    """Row index -> flag for the rows whose measurement includes one-time allocations."""
    flags = {}
    seen_models = set()
    for i, r in enumerate(rows):
        key = family(r)
        if key in seen_models:
            continue
        seen_models.add(key)
        flags[i] = "first" if i == 0 else "opt"
    return flags


def run(gc_only: bool = False, out=print) -> dict:
    rows = [r for r in load_rows() if r["stage"] == "step"]
    flags = _flags(rows)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if gc_only and not r["grad_ckpt"]:
            continue
        groups[(r["model"], r["weights"], r["mode"], r["rank"])].append(i)

    traced: dict[int, int] = {}
    t_all = time.perf_counter()
    seconds = {}
    notes = set()
    for (model, weights, mode, rank), idx in groups.items():
        t0 = time.perf_counter()
        spec = resolve_model(model)
        shapes = sorted({Shape(rows[i]["batch"], rows[i]["prompt_len"], rows[i]["completion_len"]) for i in idx},
                        key=lambda s: (s.tokens, s.batch_size))
        settings = tuple(sorted({rows[i]["grad_ckpt"] for i in idx}, reverse=True))
        result = trace_steps(spec, shapes, weights=weights, finetune=mode, lora_rank=rank or 16,
                             gradient_checkpointing=settings, logprob_head="fused")
        by_key = {(s.shape, s.gradient_checkpointing): s for s in result.steps}
        for i in idx:
            r = rows[i]
            step = by_key[(Shape(r["batch"], r["prompt_len"], r["completion_len"]), r["grad_ckpt"])]
            traced[i] = step.activation_peak_bytes
        notes.update(result.notes)
        seconds[model, weights, mode] = time.perf_counter() - t0

    header = (f"{'model':34} {'w':4} {'mode':4} {'gc':3} {'B':>3} {'P':>4} {'C':>5} "
              f"{'measured MiB':>12} {'traced MiB':>11} {'error':>7}  flag")
    out("Traced (CPU, meta tensors) vs measured (H100) activation peak, allocator level:")
    out("measured = peak_alloc_step_mib - before_mib; traced = live-tensor peak over forward+backward")
    out("minus weights/adapters. Source: data/calibration/h100-trl1.16-train.jsonl "
        "(torch 2.11, transformers 5.17, TRL 1.16).")
    import torch
    import transformers
    import trl
    out(f"Traced with torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}.")
    out("")
    out(header)
    errors = defaultdict(list)  # (model, weights, mode, gc) -> [error]
    errors_all = defaultdict(list)
    oom_lines = []
    for i in sorted(traced):
        r = rows[i]
        t = traced[i]
        gc = "on" if r["grad_ckpt"] else "off"
        shape = f"{r['batch']:>3} {r['prompt_len']:>4} {r['completion_len']:>5}"
        head = f"{r['model']:34} {r['weights']:4} {r['mode']:4} {gc:3} {shape}"
        if not r["ok"]:
            before = max(x["before_mib"] for x in rows if family(x) == family(r) and x.get("ok"))
            non_torch = r["device_used_mib_after_load"] - r["reserved_mib_after_load"]
            total = before + t / MIB + non_torch
            oom_lines.append(f"{head}  before {before:.0f} + traced {t / MIB:.0f} + non-PyTorch {non_torch:.0f} "
                             f"= {total:.0f} MiB {'>' if total > r['device_total_mib'] else '<='} "
                             f"card {r['device_total_mib']:.0f} MiB")
            out(f"{head} {'OOM':>12} {t / MIB:11.1f} {'':>7}")
            continue
        measured = (r["peak_alloc_step_mib"] - r["before_mib"]) * MIB
        err = (t - measured) / measured
        flag = flags.get(i, "")
        out(f"{head} {measured / MIB:12.1f} {t / MIB:11.1f} {err:+7.1%}  {flag}")
        key = (r["model"], r["weights"], r["mode"], gc)
        errors_all[key].append(err)
        if not flag:
            errors[key].append(err)

    out("")
    out("Summary per model (|error|; 'all' includes the flagged rows, 'clean' excludes them):")
    out(f"{'model':34} {'w':4} {'mode':4} {'gc':3} {'n':>2} {'median all':>10} {'max all':>8} "
        f"{'median clean':>12} {'max clean':>9}")
    summary = {}
    for key in sorted(errors_all):
        clean = [abs(e) for e in errors[key]]
        every = [abs(e) for e in errors_all[key]]
        med = statistics.median(clean) if clean else float("nan")
        mx = max(clean) if clean else float("nan")
        summary[key] = (statistics.median(every), max(every), med, mx)
        out(f"{key[0]:34} {key[1]:4} {key[2]:4} {key[3]:3} {len(every):>2} {statistics.median(every):10.2%} "
            f"{max(every):8.2%} {med:12.2%} {mx:9.2%}")
    gc_clean = [abs(e) for k, v in errors.items() if k[3] == "on" for e in v]
    gc_all = [abs(e) for k, v in errors_all.items() if k[3] == "on" for e in v]
    out("")
    out(f"Gradient checkpointing rows: median |error| {statistics.median(gc_all):.2%}, max {max(gc_all):.2%} "
        f"(all {len(gc_all)} rows); without the {len(gc_all) - len(gc_clean)} flagged rows: "
        f"median {statistics.median(gc_clean):.2%}, max {max(gc_clean):.2%}.")
    nogc = [abs(e) for k, v in errors.items() if k[3] == "off" for e in v]
    if nogc:
        out(f"No checkpointing rows (clean): median |error| {statistics.median(nogc):.2%}, max {max(nogc):.2%}.")
    if oom_lines:
        out("")
        out("Rows that ran out of memory on the H100: resident + traced + non-PyTorch (allocator reserve not counted):")
        for line in oom_lines:
            out(line)
    out("")
    out("Flags: first = first step of the measuring process (one-time cuBLAS workspaces and the like, "
        "~75 MiB here, land in its peak); opt = a model's first step, which also creates the optimizer "
        "state inside the step (its before_mib lacks it); with full fine-tuning that is the step's peak "
        "(not traced: the optimizer is the analytic term).")
    out("Trace notes: " + " | ".join(sorted(notes)))
    per_model = ", ".join(f"{m.split('/')[-1]} {w} {mo}: {s:.0f} s" for (m, w, mo), s in seconds.items())
    out(f"Trace time: {time.perf_counter() - t_all:.0f} s for {len(traced)} rows ({per_model}).")
    return {"summary": summary, "gc_clean": gc_clean, "gc_all": gc_all}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gc-only", action="store_true", help="trace only the gradient checkpointing rows")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the table")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    lines = []

    def out(line=""):
        print(line, flush=True)
        lines.append(line)

    run(args.gc_only, out)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
