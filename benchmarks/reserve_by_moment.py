"""The trainer model's error by allocator setting, model family and fine-tuning mode, and how much of it
is the allocator's reserve: the evidence for (or against) a change to the reserve model (issue 23).

Three sets of H100 steps (torch 2.11.0+cu130, TRL 1.16.0), each split by
``expandable_segments`` (the row's field; absent = the default allocator), family (Gemma, others) and
fine-tuning (full, QLoRA = LoRA on NF4 weights, LoRA on 16-bit weights):

- fit rows: data/calibration/h100-trl1.16-train.jsonl's 80 ok steps, the shipped constants (fitted on
  them: a fit-set error);
- fit rows, held out: the same rows' LoRA steps, each family predicted by the constants refitted without
  it (benchmarks/heldout_fits.py's leave-one-model-family-out, shipped grid);
- held-out steps: benchmarks/results/h100_heldout (77 steps that ran; heldout_accuracy.py's figure, the
  device-level peak after the step).

For every row the error is split into its parts (MiB, predicted - measured): the tensors
(``peak_alloc_step``: what live tensors held at their peak), the reserve (``peak_reserved_step -
peak_alloc_step``: what the caching allocator kept beyond them, the figure allocator.py models) and the
non-PyTorch memory (the device figure less ``peak_reserved_step``; only for the held-out steps, whose
measured peak is the device-level one). The predicted reserve is the binding moment's
``allocator_reserve``.

Run: python benchmarks/reserve_by_moment.py   (writes benchmarks/results/reserve_by_moment.txt)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration_data import MIB, evaluate_calibration, evaluate_heldout, load_rows, measured_setup  # noqa: E402

from planner.memory.trainer import trainer_memory  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "reserve_by_moment.txt"


def allocator(r: dict) -> str:
    return "expandable" if r.get("expandable_segments") else "default"


def family(r: dict) -> str:
    return "gemma" if r["model"].startswith("google/gemma-") else "others"


def finetune(r: dict) -> str:
    if r["mode"] == "full":
        return "full"
    return "qlora" if r["weights"] in ("nf4", "int8") else "lora"


def parts(r: dict, measured_peak_bytes: float) -> dict:
    """The prediction's binding moment and its error split into tensors, reserve and non-PyTorch (MiB)."""
    m = trainer_memory(resolve_model(r["model"]), measured_setup(r))
    c = m.components
    pred_reserve = c["allocator_reserve"] / MIB
    pred_non_torch = c["non_torch"] / MIB
    pred_tensors = m.peak_bytes / MIB - pred_reserve - pred_non_torch
    meas_reserve = r["peak_reserved_step_mib"] - r["peak_alloc_step_mib"]
    meas_non_torch = measured_peak_bytes / MIB - r["peak_reserved_step_mib"]
    return {"moment": m.binding_moment, "pred_reserve": pred_reserve, "meas_reserve": meas_reserve,
            "d_tensors": pred_tensors - r["peak_alloc_step_mib"], "d_reserve": pred_reserve - meas_reserve,
            "d_non_torch": pred_non_torch - meas_non_torch}


def row_line(r: dict, err: float, p: dict) -> str:
    return (f"{r['model']:34s} {r['weights']:4s} {finetune(r):5s} {allocator(r)[:3]:3s} "
            f"{'on' if r['grad_ckpt'] else 'off':3s} {r['batch']:2d} {r['prompt_len']:4d} {r['completion_len']:4d} "
            f"{err * 100:+6.2f}% {p['moment']:14s} {p['meas_reserve']:7.0f} {p['pred_reserve']:7.0f} "
            f"{p['d_tensors']:+7.0f} {p['d_reserve']:+7.0f} {p['d_non_torch']:+6.0f}"
            + ("  (first step)" if r.get("first_step") else ""))


HEADER = (f"{'model':34s} {'w':4s} {'ft':5s} {'al':3s} {'gc':3s} {'B':>2s} {'P':>4s} {'C':>4s} {'error':>7s} "
          f"{'binding':14s} {'res.meas':>7s} {'res.pred':>7s} {'d tens':>7s} {'d res':>7s} {'d nt':>6s}")


def summary(errs: list[float]) -> str:
    if not errs:
        return "n   0"
    return (f"n {len(errs):3d}  worst under {min(errs) * 100:+6.2f}%  worst over {max(errs) * 100:+6.2f}%  "
            f"median |error| {statistics.median(abs(e) for e in errs) * 100:5.2f}%")


def splits(rows: list[tuple[dict, float]]) -> list[str]:
    """Summaries by allocator setting, by family x fine-tuning within it, and overall."""
    out = [f"    all                         {summary([e for _, e in rows])}"]
    for al in ("default", "expandable"):
        sel = [(r, e) for r, e in rows if allocator(r) == al]
        out.append(f"    {al:27s} {summary([e for _, e in sel])}")
        for fam in ("others", "gemma"):
            for ft in ("full", "qlora", "lora"):
                g = [e for r, e in sel if family(r) == fam and finetune(r) == ft]
                if g:
                    out.append(f"      {fam:6s} {ft:5s} {'':13s} {summary(g)}")
    return out


def parts_by_model(rows: list[tuple[dict, float, dict]]) -> list[str]:
    """Where each model's over- or under-prediction sits: the median tensors and reserve parts (MiB) of its
    checkpointed steps after the first, and its median error (Gemma against the others, issue 23)."""
    out = ["  where the error sits, checkpointed steps after each model's first (medians; MiB):"]
    models: dict[tuple, list] = {}
    for r, e, p in rows:
        if r["grad_ckpt"] and not r.get("first_step"):
            models.setdefault((family(r), r["model"], finetune(r), allocator(r)), []).append((e, p))
    for (fam, model, ft, al), v in sorted(models.items()):
        out.append(f"    {fam:6s} {model:34s} {ft:5s} {al[:3]:3s} n {len(v)}  "
                   f"error {statistics.median(e for e, _ in v) * 100:+5.2f}%"
                   f"  d tensors {statistics.median(p['d_tensors'] for _, p in v):+5.0f}"
                   f"  d reserve {statistics.median(p['d_reserve'] for _, p in v):+5.0f}"
                   f"  (reserve measured {statistics.median(p['meas_reserve'] for _, p in v):5.0f},"
                   f" predicted {statistics.median(p['pred_reserve'] for _, p in v):5.0f})")
    return out


def fit_rows_section() -> tuple[list[str], list[tuple[dict, float]]]:
    res = evaluate_calibration([r for r in load_rows() if r["ok"]])
    lines = ["fit rows (data/calibration, shipped constants; fit-set error vs the README figure "
             "peak_reserved_step + non-PyTorch after load):", HEADER]
    rows, with_parts = [], []
    for i, (r, _, e) in enumerate(res["ran"]):
        p = parts(r, r["measured_peak_bytes"])
        lines.append(row_line(r, e, p))
        rows.append((r, e))
        first = i == 0 or (res["ran"][i - 1][0]["model"], res["ran"][i - 1][0]["mode"]) != (r["model"], r["mode"])
        with_parts.append(({**r, "first_step": first}, e, p))
    return lines + [""] + splits(rows) + parts_by_model(with_parts), rows


def lofo_section() -> list[str]:
    from heldout_fits import SHIPPED_GRID, lofo

    rows = [r for r in load_rows() if r["ok"]]
    pairs = [(r, float(e)) for f in lofo(rows, SHIPPED_GRID) for r, e in zip(f["held"], f["held_errors"])]
    return ["fit rows held out (LoRA rows, each family predicted by the constants refitted without it):"] + splits(pairs)


def heldout_section() -> list[str]:
    res = evaluate_heldout()
    lines = ["held-out steps (benchmarks/results/h100_heldout; error vs the device-level peak after the step):", HEADER]
    rows, with_parts = [], []
    for r, _, e, _ in res["ran"]:
        p = parts(r, r["device_used_mib_end"] * MIB)
        lines.append(row_line(r, e, p))
        rows.append((r, e))
        with_parts.append((r, e, p))
    steady = [(r, e) for r, e in rows if not r["first_step"]]
    return (lines + ["", "  every step:"] + splits(rows)
            + ["  without each model's first step (it creates the optimizer state after backward):"] + splits(steady)
            + parts_by_model(with_parts))


def coverage() -> list[str]:
    """Which (model, fine-tuning) pairs each allocator setting has rows for: what the splits can speak about."""
    from calibration_data import load_heldout_rows

    rows = [r for r in load_rows() + load_heldout_rows() if r.get("ok")]
    out = ["what the data holds (ok rows, fit and held-out together):"]
    for al in ("default", "expandable"):
        pairs = sorted({(r["model"], finetune(r)) for r in rows if allocator(r) == al})
        out.append(f"  {al}: " + ", ".join(f"{m} {ft}" for m, ft in pairs))
    return out


def main() -> None:
    fit_lines, _ = fit_rows_section()
    text = "\n".join(["columns: error = (predicted - measured) / measured; binding = the predicted peak's moment; "
                      "res.meas / res.pred = the reserve measured (peak reserved - peak allocated) and predicted, MiB; "
                      "d tens / d res / d nt = predicted - measured of the tensors, the reserve, the non-PyTorch memory, "
                      "MiB", ""] + coverage() + [""] + fit_lines + [""] + lofo_section() + [""] + heldout_section())
    print(text)
    OUT.write_text(text + "\n")


if __name__ == "__main__":
    main()
