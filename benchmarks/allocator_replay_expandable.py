"""The caching allocator replayed under both settings on the same traced streams (issue 23): does the
``expandable_segments`` replay reproduce the measured reserve, and how does that setting's reserve compare
with the default's, step kind by step kind?

A traced step's allocation stream (planner/profiler/trace.py on meta tensors; the residents first, the
cache empty before the step) is replayed by planner/profiler/allocator_sim.py with the default rules and
with ``expandable_segments`` (one segment per pool, mapped in 2 / 20 MiB pages, no 1 MiB unsplittable
remainder). Two sets, decided before the first run:

- scored: the held-out H100 steps measured with ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``
  (benchmarks/results/h100_heldout/expandable.json, Qwen2.5-1.5B LoRA, 10 steps): the expandable replay
  against the measured reserve (``peak_reserved_step - peak_alloc_step``); nothing is fitted on them.
- derivation: every calibration row's stream (data/calibration, measured with the default allocator; its
  measured reserve beside): the two replays side by side, and the expandable replay over the bytes the step
  model's reserve fraction multiplies, by kind (checkpointed LoRA/QLoRA, not checkpointed, checkpointed full
  fine-tuning). The expandable column is a replay, not a measurement: the expandable fractions of
  planner/memory/allocator.py are derived from these ratios, and scored on the measured steps above.

The 8-bit optimizer's state and step are not traced (a few MiB with LoRA; with full fine-tuning the
step's buffers: allocator_replay.py flags those rows the same way).

Needs torch and transformers (the trace). Run: python benchmarks/allocator_replay_expandable.py
(writes benchmarks/results/allocator_replay_expandable.txt)
"""

from __future__ import annotations

import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration_data import HELDOUT_DIR, load_heldout_rows, load_rows  # noqa: E402

import planner.memory.allocator as al  # noqa: E402
import planner.profiler.trace as trace  # noqa: E402
from planner.profiler.allocator_sim import replay  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402

MIB = 1024**2
OUT = Path(__file__).resolve().parent / "results" / "allocator_replay_expandable.txt"


def kind(r: dict) -> str:
    """The step model's reserve kind: full_gc (full fine-tuning, checkpointed), gc, none."""
    return ("full_gc" if r["mode"] == "full" else "gc") if r["grad_ckpt"] else "none"


def recycled_mib(r: dict) -> float:
    """The bytes the step model's reserve fraction multiplies (the backward moment's fitted reserve, with the
    default allocator, less its intercept, over its fraction)."""
    from calibration_data import measured_setup

    from planner.memory.trainer import trainer_memory

    m = trainer_memory(resolve_model(r["model"]), measured_setup({**r, "expandable_segments": False}))
    frac = {"full_gc": al.RESERVE_FRACTION_CHECKPOINTED_FULL, "gc": al.RESERVE_FRACTION_CHECKPOINTED,
            "none": al.RESERVE_FRACTION_NOT_CHECKPOINTED}[kind(r)]
    return (m.moment("backward")["allocator_reserve"] - al.RESERVE_BASE_BYTES) / frac / MIB


def replayed(row: dict) -> tuple[float, float]:
    """(default, expandable) replayed reserve of ``row``'s traced step, MiB."""
    captured = []
    original = trace._replayed_reserve

    def capture(events, n_resident):
        captured.append((list(events), n_resident))
        return 0

    trace._replayed_reserve = capture
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trace.trace_steps(resolve_model(row["model"]),
                              [trace.Shape(row["batch"], row["prompt_len"], row["completion_len"])],
                              weights=row["weights"], finetune=row["mode"], lora_rank=row["rank"] or 16,
                              gradient_checkpointing=bool(row["grad_ckpt"]))
    finally:
        trace._replayed_reserve = original
    events, n_resident = captured[0]
    out = []
    for expandable in (False, True):
        a = replay(events, n_resident, expandable_segments=expandable)
        out.append((a.peak_reserved - a.peak_allocated) / MIB)
    return out[0], out[1]


def line(r: dict, default: float, expandable: float) -> str:
    meas = r["peak_reserved_step_mib"] - r["peak_alloc_step_mib"]
    return (f"{r['model']:34s} {r['mode']:4s} {r['weights']:4s} {'on' if r['grad_ckpt'] else 'off':3s} "
            f"{r['batch']:2d}:{r['prompt_len']}:{r['completion_len']:<5d} {meas:9.0f} {default:9.0f} {expandable:9.0f}"
            + ("  first step" if r.get("first") else ""))


HEADER = f"{'model':34s} {'mode':4s} {'w':4s} {'gc':3s} {'shape':13s} {'measured':>9s} {'default':>9s} {'expand.':>9s}"


def main() -> None:
    lines = ["reserve (peak reserved - peak allocated, MiB): measured, and replayed with the default rules and with "
             "expandable_segments", "",
             f"scored: the expandable_segments steps ({HELDOUT_DIR.name}/expandable.json), measured with that setting:",
             HEADER]
    errs = []
    exp_rows = [r for r in load_heldout_rows() if r.get("expandable_segments") and r["ok"]]
    for r in exp_rows:
        d, e = replayed(r)
        meas = r["peak_reserved_step_mib"] - r["peak_alloc_step_mib"]
        lines.append(line({**r, "first": r["first_step"]}, d, e))
        print(lines[-1], flush=True)
        if not r["first_step"]:
            errs.append((e - meas, (e - meas) / r["peak_reserved_step_mib"]))
    lines += ["", f"expandable replay - measured, {len(errs)} steps after the first: median "
                  f"{statistics.median(x for x, _ in errs):+.0f} MiB, range {min(x for x, _ in errs):+.0f} to "
                  f"{max(x for x, _ in errs):+.0f} MiB ({min(s for _, s in errs):+.1%} to {max(s for _, s in errs):+.1%} "
                  f"of the measured peak reserved)", "",
              "every calibration row (measured with the default allocator; recycled = the bytes the step model's "
              "reserve fraction multiplies, MiB):", HEADER + f" {'recycled':>9s} {'(exp-64)/rec':>12s}"]
    rows = [r for r in load_rows() if r.get("ok")]
    seen: set = set()
    ratios: dict[str, list[float]] = {}
    for r in rows:
        fam = (r["model"], r["mode"])
        first = fam not in seen
        seen.add(fam)
        d, e = replayed(r)
        rec = recycled_mib(r)
        ratio = (e - al.RESERVE_BASE_BYTES_EXPANDABLE / MIB) / rec
        lines.append(line({**r, "first": first}, d, e) + f" {rec:9.0f} {ratio:12.3f}")
        print(lines[-1], flush=True)
        if not first:
            ratios.setdefault(kind(r), []).append(ratio)
    lines += ["", "(expandable replay - 64 MiB) / recycled, steps after each family's first, by kind "
                  "(full fine-tuning: the 8-bit optimizer's step is not traced):"]
    lines += [f"  {k:8s} n {len(v):2d}  min {min(v):.3f}  median {statistics.median(v):.3f}  max {max(v):.3f}"
              for k, v in sorted(ratios.items())]
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
