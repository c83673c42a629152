"""Each memory model's default safety margin, recomputed from the committed measurements by the rule
planner/search/margins.py states (the worst under-prediction on data the model was not fitted on, times
(n+1)/n for the sample size, rounded up to a whole percent; for the analytic model plus its widest
disagreement with the trace on architectures nobody measured). The evaluation itself is ``calibration_data.margin_bands``
(tests/test_margin_bands.py recomputes each band from the held-out errors).

Run: python benchmarks/margin_bands.py   (writes benchmarks/results/margin_bands.txt)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration_data import MIB, evaluate_calibrated, margin_bands  # noqa: E402

from planner.search.margins import (  # noqa: E402
    FP32_AUTOCAST_MARGIN,
    MEMORY_MODEL_MARGIN,
    RUNTIME_MARGIN,
    UNMEASURED_OPTIMIZER_MARGIN,
)


def main() -> None:
    cal = evaluate_calibrated()
    lines = ["calibrated (shipped H100 profiles) on the held-out steps of a calibrated family "
             "(benchmarks/results/h100_heldout):",
             f"  {'model':32s} {'mode':4s} {'gc':3s} {'B':>2s} {'P':>4s} {'C':>4s} {'device MiB':>10s} "
             f"{'predicted':>9s} {'error':>7s}"]
    for r, pred, err in cal["steps"]:
        lines.append(f"  {r['model']:32s} {r['mode']:4s} {'on' if r['grad_ckpt'] else 'off':3s} {r['batch']:2d} "
                     f"{r['prompt_len']:4d} {r['completion_len']:4d} {r['device_used_mib_end']:10.0f} "
                     f"{pred / MIB:9.0f} {err * 100:+6.2f}%" + ("  (first step)" if r["first_step"] else ""))
    lines.append("  check, whole runs of calibrated models (benchmarks/results/h100_run_peak; their run-level "
                 "reserve floor was read off them):")
    for r, pred, err in cal["runs"]:
        lines.append(f"  {r['model']:32s} run peak {r['device_peak_mib']:.0f} MiB, predicted {pred / MIB:.0f} MiB, "
                     f"{err * 100:+.2f}%")
    lines.append("  check, the calibration rows each profile's fit left out (each family's first step; data/calibration):")
    card = cal["card_bytes"]  # the H100-80GB, the only card the shipped profiles apply to
    for r, pred, err in cal["left_out"]:
        lines.append(f"  {r['model']:32s} {r['mode']:4s} {'on' if r['grad_ckpt'] else 'off':3s} {r['batch']:2d} "
                     f"{r['prompt_len']:4d} {r['completion_len']:4d} {r['measured_peak_bytes'] / MIB:10.0f} "
                     f"{pred / MIB:9.0f} {err * 100:+6.2f}%  ({(pred - r['measured_peak_bytes']) / card * 100:+.2f}% "
                     f"of the card)")
    b = margin_bands()
    c, a, f = b["calibrated"], b["analytic"], b["fp32_autocast"]

    def rule(band: dict) -> str:
        s = f"worst under-prediction {band['worst_under'] * 100:+.2f}% of n = {band['n']}, x (n+1)/n = " \
            f"{band['widened'] * 100:.2f}%"
        if band["allowance"]:
            s += f" + {band['allowance'] * 100:.2f}% = {(band['widened'] + band['allowance']) * 100:.2f}%"
        return s + f" -> band {band['band']:.0%}"

    lines += ["",
              "rule (planner/search/margins.py): band = worst held-out under-prediction x (n+1)/n (+ the trace "
              "allowance for the analytic model), rounded up to a whole percent",
              f"calibrated: the {c['n']} held-out steps of a calibrated family above (Qwen2.5-0.5B, h100_heldout): {rule(c)} (planner/search/margins.py: "
              f"{MEMORY_MODEL_MARGIN['calibrated']:.0%}; runs checked: worst {c['runs_worst_under'] * 100:+.2f}%)",
              f"analytic: {a['heldout_steps']} held-out steps (worst {a['heldout_steps_worst_under'] * 100:+.2f}%, "
              f"heldout_accuracy.txt), held-out runs " + ", ".join(f"{e * 100:+.2f}%" for e in a["heldout_runs"])
              + f" (run_peak_accuracy.txt), {a['lofo_rows']} calibration rows left out by model family (worst "
              f"{a['lofo_worst_under'] * 100:+.2f}%, heldout_fits.txt); trace vs analytic on {a['trace_rows']} "
              f"shapes: max abs error {a['trace_max_abs_error'] * 100:.2f}% (the allowance): {rule(a)} "
              f"(planner/search/margins.py: {MEMORY_MODEL_MARGIN['analytic']:.0%})",
              f"fp32 weights under autocast: the {f['n']} fp32 runs replayed through the allocator (a simulation, "
              f"allocator_notebook.txt): {rule(f)} (planner/search/margins.py: {FP32_AUTOCAST_MARGIN:.0%})",
              f"unmeasured optimizer: {UNMEASURED_OPTIMIZER_MARGIN:.0%}, a stated allowance (no held-out error exists)",
              f"Unsloth runtime: {RUNTIME_MARGIN['unsloth']:.0%}, the runtime's shipped allowance, not derived (no "
              "Unsloth trainer peak is measured; vLLM's side: unsloth_reports.txt)"]
    text = "\n".join(lines)
    print(text)
    (Path(__file__).resolve().parent / "results" / "margin_bands.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
