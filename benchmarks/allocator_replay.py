"""Does a replay of PyTorch's caching allocator reproduce the measured reserve? (issue 15)

The planner's ``allocator_reserve`` term is fitted (planner/memory/allocator.py). This checks
``planner.profiler.allocator_sim`` -- the default allocator's rules replayed on the allocation
stream of a traced step -- against the H100 calibration rows, which measured both the allocator's
peak allocated and peak reserved memory over one step (the cache emptied before it). The stream
comes from the trace profiler (meta tensors, planner/profiler/trace.py, ``TracedStep.replayed_reserve_bytes``):
the resident tensors (weights, adapters, buffers) first, in the model's order, then every storage the
step creates and frees. The 8-bit optimizer's state and step are not traced: a few MiB per step with LoRA, the whole
state inside the first step and the step's buffers with full fine-tuning (those rows are flagged).

    python benchmarks/allocator_replay.py      # writes benchmarks/results/allocator_replay.txt
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration_data import calibration_path  # noqa: E402

from planner.profiler.trace import Shape, trace_steps  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402

MIB = 1024**2
DATA = calibration_path()
OUT = Path(__file__).resolve().parent / "results" / "allocator_replay.txt"


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if r.get("stage") == "step" and r.get("ok")]
    groups: dict[tuple, list] = {}
    for r in steps:
        groups.setdefault((r["model"], r["weights"], r["mode"], r.get("rank")), []).append(r)
    lines = ["measured (H100, peak_reserved_step - peak_alloc_step) vs replayed (allocator_sim on the traced stream)",
             f"{'model':<34} {'mode':<5} {'gc':<3} {'shape':<14} {'meas MiB':>9} {'replay MiB':>10}"]
    pairs = []
    for (model, weights, mode, rank), rs in groups.items():
        spec = resolve_model(model)
        for r in rs:
            shape = Shape(r["batch"], r["prompt_len"], r["completion_len"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = trace_steps(spec, [shape], weights=weights, finetune=mode, lora_rank=rank or 16,
                                  gradient_checkpointing=bool(r["grad_ckpt"]))
            step = res.steps[0]
            meas = r["peak_reserved_step_mib"] - r["peak_alloc_step_mib"]
            rep = step.replayed_reserve_bytes / MIB
            # flagged: a model's first step (one-time buffers and, with full fine-tuning, the 8-bit
            # optimizer's state and step, which the trace does not hold)
            flag = "first" if r is rs[0] else ("opt" if mode == "full" else "")
            pairs.append((meas, rep, flag, r["peak_reserved_step_mib"]))
            lines.append(f"{model:<34} {mode:<5} {'on' if r['grad_ckpt'] else 'off':<3} {str(shape):<14} "
                         f"{meas:>9.0f} {rep:>10.0f}  {flag}")
            print(lines[-1], flush=True)
    lines += ["", summary(pairs)]
    print(lines[-1])
    OUT.write_text("\n".join(lines) + "\n")


def summary(pairs: list) -> str:
    """Errors of the replayed reserve, in MiB and as a share of the measured peak reserved."""
    import statistics

    out = []
    for label, keep in (("LoRA rows after a model's first step", lambda f: f == ""),
                        ("first steps", lambda f: f == "first"), ("full fine-tuning rows", lambda f: f == "opt")):
        sel = [(m, r, peak) for m, r, f, peak in pairs if keep(f)]
        if not sel:
            continue
        err = [r - m for m, r, _ in sel]
        share = [(r - m) / peak for m, r, peak in sel]
        out.append(f"{label}: {len(sel)} rows, replayed - measured reserve median {statistics.median(err):+.0f} MiB, "
                   f"range {min(err):+.0f} to {max(err):+.0f} MiB ({min(share):+.1%} to {max(share):+.1%} of the "
                   f"measured peak reserved)")
    return "\n".join(out)


if __name__ == "__main__":
    main()
